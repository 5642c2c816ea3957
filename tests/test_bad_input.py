"""Bad structures and settings fail early with specific errors that say how to fix them."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from conftest import make_ar_crystal

from ase_mlmd import MLCalculator
from ase_mlmd.batch import batch_from_atoms
from ase_mlmd.errors import InvalidStructureError, UnsupportedSpeciesError
from ase_mlmd.md.ase_md import AseMDConfig, run_ase_md
from ase_mlmd.models.pair import LennardJones


def _lj(**kwargs) -> LennardJones:
    return LennardJones(0.0104, 3.40, 8.5, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("periodic", [False, True])
def test_non_finite_positions(bad, periodic, ar_cluster):
    atoms = make_ar_crystal() if periodic else ar_cluster
    atoms.positions[4, 1] = bad
    with pytest.raises(InvalidStructureError, match=r"atoms \[4\] are NaN or infinite"):
        batch_from_atoms([atoms], 8.5)
    atoms.calc = MLCalculator(_lj())
    with pytest.raises(InvalidStructureError, match="NaN or infinite"):
        atoms.get_potential_energy()


def test_the_bad_structure_of_a_batch_is_named(ar_cluster):
    bad = ar_cluster.copy()
    bad.positions[0, 0] = np.nan
    with pytest.raises(InvalidStructureError, match="structure 2"):
        batch_from_atoms([ar_cluster, ar_cluster, bad], 8.5)


def test_nan_in_a_periodic_cell(ar_crystal):
    cell = ar_crystal.cell.array.copy()
    cell[1, 2] = np.nan
    ar_crystal.cell = cell
    with pytest.raises(InvalidStructureError, match="cell contains NaN"):
        batch_from_atoms([ar_crystal], 8.5)
    ar_crystal.calc = MLCalculator(_lj())
    with pytest.raises(InvalidStructureError, match="atoms.cell"):
        ar_crystal.get_forces()


def test_nan_in_the_cell_of_a_non_periodic_system_is_ignored(ar_cluster):
    """Without pbc the cell plays no role, so an undefined cell must not matter."""
    reference = ar_cluster.copy()
    reference.calc = MLCalculator(_lj())
    ar_cluster.cell = np.full((3, 3), np.nan)
    ar_cluster.calc = MLCalculator(_lj())
    assert ar_cluster.get_potential_energy() == reference.get_potential_energy()


@pytest.mark.parametrize(
    "cell",
    [np.zeros((3, 3)), [[5.0, 0, 0], [0, 5.0, 0], [5.0, 5.0, 0]]],  # none / flat
    ids=["zero", "coplanar"],
)
def test_zero_volume_periodic_cell_says_how_to_fix(cell):
    atoms = Atoms("Ar2", positions=[[0, 0, 0], [3.8, 0, 0]], cell=cell, pbc=True)
    atoms.calc = MLCalculator(_lj())
    with pytest.raises(InvalidStructureError) as err:
        atoms.get_potential_energy()
    message = str(err.value)
    assert "zero volume" in message
    assert "set_cell" in message and "pbc = False" in message


def test_slab_with_zero_third_vector_is_accepted():
    slab = make_ar_crystal(repeat=2, seed=2)
    slab.pbc = [True, True, False]
    vacuum = slab.copy()
    vacuum.cell[2] = [0.0, 0.0, 50.0]
    slab.cell[2] = [0.0, 0.0, 0.0]
    slab.calc, vacuum.calc = MLCalculator(_lj()), MLCalculator(_lj())
    # the third vector is irrelevant without periodicity along it
    assert slab.get_potential_energy() == pytest.approx(vacuum.get_potential_energy(), rel=1e-13)
    np.testing.assert_allclose(slab.get_forces(), vacuum.get_forces(), rtol=1e-12, atol=1e-16)
    undefined = slab.copy()
    undefined.cell[2] = [np.nan, np.nan, np.nan]
    undefined.calc = MLCalculator(_lj())
    assert undefined.get_potential_energy() == pytest.approx(slab.get_potential_energy(), 1e-13)
    # but a slab whose two periodic vectors are parallel is degenerate
    slab.cell[1] = 2 * slab.cell[0]
    with pytest.raises(InvalidStructureError, match="zero area"):
        slab.get_potential_energy()


def test_element_restricted_model_names_the_unsupported_elements(ethanol):
    ethanol.calc = MLCalculator(_lj(species=[18]))
    with pytest.raises(UnsupportedSpeciesError) as err:
        ethanol.get_potential_energy()
    message = str(err.value)
    assert "trained on Ar only" in message
    assert "also contains H, C, O" in message
    ar = Atoms("Ar2", positions=[[0, 0, 0], [3.8, 0, 0]])
    ar.calc = MLCalculator(_lj(species=[18]))
    assert ar.get_potential_energy() < 0  # the supported element works


def test_empty_atoms():
    with pytest.raises(InvalidStructureError, match="no atoms"):
        batch_from_atoms([Atoms()], 8.5)
    empty = Atoms()
    empty.calc = MLCalculator(_lj())
    with pytest.raises(InvalidStructureError, match="no atoms"):
        empty.get_potential_energy()
    with pytest.raises(InvalidStructureError, match="at least one"):
        batch_from_atoms([], 8.5)


def test_not_a_structure():
    with pytest.raises(TypeError, match="ase.io.read"):
        batch_from_atoms(["ar.xyz"], 8.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timestep_fs": 0.0}, "timestep"),
        ({"timestep_fs": -1.0}, "timestep"),
        ({"timestep_fs": float("nan")}, "timestep"),
        ({"ensemble": "npt-magic"}, "ensemble"),
        ({"steps": -5}, "steps"),
        ({"temperature_K": -1.0}, "temperature"),
        ({"save_every": 0}, "save_every"),
    ],
)
def test_md_config_rejects_bad_settings_before_any_step(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AseMDConfig(**kwargs)


@pytest.mark.parametrize("periodic", [False, True])
def test_md_run_with_a_nan_structure_fails_before_any_step(tmp_path, ar_cluster, periodic):
    atoms = make_ar_crystal() if periodic else ar_cluster
    atoms.positions[2] = np.nan
    trajectory = tmp_path / "md.traj"
    with pytest.raises(InvalidStructureError, match="MD start structure"):
        run_ase_md(
            atoms,
            MLCalculator(_lj()),
            AseMDConfig("nve", steps=5),
            trajectory=trajectory,
            progress=False,
        )
    assert not trajectory.exists()
