"""TIP3P water through OpenMM: the box has the molecules and density asked for, forces are minus
the gradient of the energy, the energy is OpenMM's in ASE units, and a short sampled run writes
physical frames (rigid molecules, unwrapped positions, T near the thermostat's)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.io import read

from ase_mlmd.data.openmm_water import (
    TIP3P_HOH,
    TIP3P_OH,
    TIP3PWaterCalculator,
    water_box,
    water_density,
    water_reference_trajectory,
)
from ase_mlmd.data.reference import reference_calculator
from ase_mlmd.errors import InvalidStructureError, UnsupportedSpeciesError

#: CODATA 2018: 1 eV = 96.485 332 12 kJ/mol (independent of ASE's constants)
EV_IN_KJ_PER_MOL = 96.48533212
#: 1 g/cm³ of water molecules (18.015 amu) in molecules per Å³ (independent formula)
AVOGADRO = 6.02214076e23


@pytest.fixture(scope="module")
def box():
    return water_box(40, density=0.9965, seed=1)


def test_box_has_the_molecules_density_and_geometry_asked_for(box):
    assert len(box) == 120 and box.get_chemical_formula() == "H80O40"
    assert (box.numbers.reshape(-1, 3) == [8, 1, 1]).all()
    mass_g = box.get_masses().sum() / AVOGADRO
    volume_cm3 = box.get_volume() * 1e-24
    assert mass_g / volume_cm3 == pytest.approx(0.9965, rel=1e-10)
    assert water_density(box) == pytest.approx(0.9965, rel=1e-10)
    o, h1, h2 = box.positions[0], box.positions[1], box.positions[2]
    assert np.linalg.norm(h1 - o) == pytest.approx(TIP3P_OH, abs=1e-12)
    cos = np.dot(h1 - o, h2 - o) / np.linalg.norm(h1 - o) / np.linalg.norm(h2 - o)
    assert np.degrees(np.arccos(cos)) == pytest.approx(TIP3P_HOH, abs=1e-9)
    # molecules on separate lattice sites: no two oxygens closer than 1.5 Å
    oxygens = box[box.numbers == 8]
    distances = oxygens.get_all_distances(mic=True)[np.triu_indices(len(oxygens), 1)]
    assert distances.min() > 1.5


def test_energy_is_openmm_in_ase_units_and_forces_are_its_gradient(box):
    import openmm
    from openmm import unit

    from ase_mlmd.data.openmm_water import build_water_system

    atoms = box.copy()
    atoms.rattle(0.05, rng=np.random.default_rng(0))  # distorted molecules: still evaluated
    calc = TIP3PWaterCalculator(cutoff=5.0, platform="Reference", ewald_tolerance=1e-6)
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    _, system = build_water_system(atoms, cutoff=5.0, ewald_tolerance=1e-6)
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(atoms.positions / 10.0 * unit.nanometer)
    direct = context.getState(getEnergy=True).getPotentialEnergy()
    assert energy == pytest.approx(direct.value_in_unit(unit.kilojoule_per_mole) / 96.48533212)
    # forces = −∇E by central differences on a few coordinates (O and H atoms)
    step = 1e-4
    for index, axis in [(0, 0), (1, 2), (59, 1), (118, 0)]:
        shifted = []
        for sign in (1, -1):
            probe = atoms.copy()
            probe.positions[index, axis] += sign * step
            probe.calc = calc
            shifted.append(probe.get_potential_energy())
        numeric = -(shifted[0] - shifted[1]) / (2 * step)
        assert forces[index, axis] == pytest.approx(numeric, rel=1e-4, abs=1e-5)
    # only intermolecular forces, which cancel in sum (up to the PME grid error)
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-4)


def test_reference_registry_builds_it_and_refuses_other_structures(box):
    calc = reference_calculator("tip3p-water", cutoff=5.0)
    assert isinstance(calc, TIP3PWaterCalculator)
    assert calc.reference_name == "tip3p-water(cutoff=5.0)"
    shuffled = box.copy()
    shuffled.numbers = np.roll(shuffled.numbers, 1)
    with pytest.raises(UnsupportedSpeciesError, match="O, H, H"):
        calc.check_atoms(shuffled)
    open_box = box.copy()
    open_box.pbc = False
    with pytest.raises(InvalidStructureError, match="periodic"):
        calc.check_atoms(open_box)
    with pytest.raises(InvalidStructureError, match="cutoff"):
        TIP3PWaterCalculator(cutoff=9.0).get_potential_energy(box)


def test_short_trajectory_is_physical(box, tmp_path):
    out = tmp_path / "water.extxyz"
    frames = water_reference_trajectory(
        box, steps=400, every=100, cutoff=5.0, threads=1, progress=False, output=out, seed=3
    )
    back = read(out, ":")
    assert len(back) == len(frames) == 5
    last = back[-1]
    assert last.info["reference"] == "tip3p-water" and last.info["step"] == 400
    np.testing.assert_allclose(last.cell.array, box.cell.array)
    # rigid molecules: O–H distances stay TIP3P's (OpenMM's SETTLE), positions unwrapped
    oh = np.linalg.norm(last.positions[1::3] - last.positions[0::3], axis=1)
    np.testing.assert_allclose(oh, TIP3P_OH, atol=1e-4)
    # kinetic temperature over 6 degrees of freedom per molecule (minus 3): near 300 K
    temperatures = [f.info["temperature_K"] for f in back[1:]]
    assert 200 < np.mean(temperatures) < 400
    velocities = last.get_momenta() / last.get_masses()[:, None]
    kinetic = 0.5 * (last.get_masses()[:, None] * velocities**2).sum()
    dof = 6 * 40 - 3
    assert 2 * kinetic / (dof * units.kB) == pytest.approx(last.info["temperature_K"], rel=1e-3)
    # liquid water cohesive energy: about −0.4 to −0.5 eV per molecule for TIP3P
    assert -0.55 < last.get_potential_energy() / 40 < -0.3
    # the stored forces are the calculator's at the stored positions
    calc = TIP3PWaterCalculator(cutoff=5.0, platform="Reference")
    np.testing.assert_allclose(calc.get_forces(last), last.get_forces(), atol=2e-3)


def test_cli_sample_runs_tip3p_water(box, tmp_path, capsys):
    from ase.io import write

    from ase_mlmd.cli import main as cli_main

    start = tmp_path / "box.extxyz"
    write(start, box)
    out = tmp_path / "water.extxyz"
    args = ["sample", str(start), "--reference", "tip3p-water", "-p", "cutoff=5.0"]
    cli_main.main([*args, "--steps", "40", "--every", "20", "-o", str(out), "--no-progress"])
    frames = read(out, ":")
    assert [f.info["step"] for f in frames] == [0, 20, 40]
    assert frames[1].info["time_fs"] == pytest.approx(40.0)  # 2 fs default
    assert "3 frames" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # no silent overwrite: tip3p-water runs do not resume
        cli_main.main([*args, "--steps", "40", "-o", str(out), "--no-progress"])
    assert "--no-resume" in capsys.readouterr().err
