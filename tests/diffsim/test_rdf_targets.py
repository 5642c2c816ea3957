"""DiffSim targets and state points: reading the shared files, bad input, LJ units and boxes."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from conftest import shared_file

from ase_mlmd.diffsim.fit import check_states
from ase_mlmd.diffsim.systems import (
    ThermoState,
    fcc_box,
    initial_atoms,
    temperature_kelvin,
    timestep_fs,
)
from ase_mlmd.diffsim.targets import (
    rdf_from_frames,
    read_rdf_csv,
    read_vacf_csv,
    state_from_name,
)
from ase_mlmd.errors import DataFormatError, InvalidStructureError

TARGET = "lj_rdf/rdf_rho0.845_T1.0_dt0.01.csv"


def test_shared_target_is_read_with_its_state():
    target = read_rdf_csv(shared_file(TARGET))
    assert target.r.shape == target.g.shape == (100,)
    assert (target.density, target.temperature) == (0.845, 1.0)
    assert target.grid.start == pytest.approx(0.75) and target.grid.end == pytest.approx(3.3)
    assert target.r[np.argmax(target.g)] == pytest.approx(1.085, abs=0.03)  # LJ first peak
    assert state_from_name("rdf_rho0.3_T1.2_dt0.01.csv") == (0.3, 1.2)
    assert state_from_name("my_target.csv") == (None, None)


def test_vacf_target_drops_nan_padding_and_starts_at_kT():
    vacf = read_vacf_csv(shared_file("lj_rdf/vacf_rho0.845_T1.0_dt0.01.csv"))
    assert vacf.max_lag == 50 and np.isfinite(vacf.values).all()
    assert vacf.values[0] == pytest.approx(1.0, abs=0.05)  # per-component <v²> = k_B T / m


def test_csv_in_the_transposed_layout_gets_a_specific_error(tmp_path):
    r, g = np.loadtxt(shared_file(TARGET), delimiter=",")
    path = tmp_path / "rdf_rho0.845_T1.0.csv"
    np.savetxt(path, np.stack([r, g], axis=1), delimiter=",")
    with pytest.raises(DataFormatError, match="transposed layout"):
        read_rdf_csv(path)
    target = read_rdf_csv(path, layout="columns")
    np.testing.assert_array_equal(target.g, g)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("1,2,3\n", "2 rows"),
        ("1,2,3\n1,1,1\n1,1,1\n", "2 rows"),
        ("0.1,0.2,0.4,0.5\n0,1,1,1\n", "equal steps"),
        ("0.1,0.2,0.3\n0,nan,1\n", "NaN"),
        ("0.1,0.2,0.3\n0,-1,1\n", "negative"),
        ("r,g\n1,2\n", "numbers"),
        ("0.1,0.2\n1,1\n", "at least 3"),
    ],
)
def test_bad_csv_layouts_are_rejected(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=match):
        read_rdf_csv(path)


def test_missing_target_file(tmp_path):
    with pytest.raises(DataFormatError, match="does not exist"):
        read_rdf_csv(tmp_path / "nope.csv")


def test_r_grid_that_does_not_reach_the_cutoff_is_rejected(tmp_path):
    r = np.linspace(0.75, 2.0, 50)
    path = tmp_path / "short.csv"
    np.savetxt(path, np.stack([r, np.ones_like(r)]), delimiter=",")
    state = ThermoState(0.845, 1.0, read_rdf_csv(path))
    with pytest.raises(DataFormatError, match="inside the potential's cutoff 2.5"):
        check_states([state], cutoff=2.5)


def test_box_smaller_than_twice_the_cutoff_is_rejected():
    target = read_rdf_csv(shared_file(TARGET))
    small = ThermoState(0.845, 1.0, target, n_cells=2)  # 32 atoms: 3.36 Å box
    with pytest.raises(InvalidStructureError, match="--cells 3"):
        check_states([small], cutoff=2.5)
    check_states([ThermoState(0.845, 1.0, target, n_cells=3)], cutoff=2.5)  # 5.04 Å: fine


def test_reduced_units_and_the_fcc_start():
    assert timestep_fs(0.01) * units.fs == pytest.approx(0.01)  # one ASE time unit = τ_LJ
    assert units.kB * temperature_kelvin(1.2) == pytest.approx(1.2)
    box = fcc_box(0.845, 4)
    assert len(box) == 256 and len(box) / box.get_volume() == pytest.approx(0.845)
    state = ThermoState(0.845, 1.5, n_cells=4)
    atoms = initial_atoms(state, seed=1)
    assert np.allclose(atoms.get_momenta().sum(axis=0), 0.0, atol=1e-10)
    kinetic = atoms.get_kinetic_energy()
    assert kinetic / (1.5 * len(atoms)) == pytest.approx(1.5)  # E_kin = 3/2 N k_B T
    with pytest.raises(InvalidStructureError, match="density"):
        ThermoState(-1.0, 1.0)


def test_target_from_a_reference_trajectory_matches_its_density():
    frames = [fcc_box(0.5, 3) for _ in range(2)]
    for k, atoms in enumerate(frames):
        atoms.rattle(0.05, seed=k)
    target = rdf_from_frames(frames)
    assert target.density == pytest.approx(0.5)
    lattice = (4 / 0.5) ** (1 / 3)
    assert target.r[np.argmax(target.g)] == pytest.approx(lattice / np.sqrt(2), abs=0.03)
    with pytest.raises(DataFormatError, match="periodic"):
        frames[0].pbc = False
        rdf_from_frames(frames)
