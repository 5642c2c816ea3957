"""AMBER alanine dipeptide through OpenMM: unit conversion against OpenMM called directly,
forces against finite differences, and a short reference trajectory that is physical."""

from __future__ import annotations

import mdtraj
import numpy as np
import openmm
import pytest
from ase import Atoms, units
from ase.io import read
from openmm import app
from openmm import unit as u

from ase_mlmd.data.openmm_reference import (
    OpenMMCalculator,
    ala2_reference_trajectory,
    topology_atoms,
)
from ase_mlmd.data.reference import reference_calculator
from ase_mlmd.errors import InvalidStructureError, ModelFileError, UnsupportedSpeciesError

#: CODATA 2018: 1 eV = 96.485 332 12 kJ/mol (independent of ASE's constants)
EV_IN_KJ_PER_MOL = 96.48533212
PRMTOP = "ala2/alanine-dipeptide-implicit.prmtop"
PDB = "ala2/alanine-dipeptide-implicit.pdb"


@pytest.fixture
def ala2(shared_file):
    prmtop, pdb = shared_file(PRMTOP), shared_file(PDB)
    return prmtop, pdb, topology_atoms(prmtop, pdb)


def test_energy_and_forces_are_openmm_in_ase_units(ala2):
    prmtop, pdb, atoms = ala2
    atoms.calc = OpenMMCalculator(prmtop, platform="Reference")
    system = app.AmberPrmtopFile(str(prmtop)).createSystem(
        nonbondedMethod=app.NoCutoff, constraints=None, implicitSolvent=app.OBC2
    )
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(app.PDBFile(str(pdb)).getPositions())
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
    assert atoms.get_potential_energy() == pytest.approx(energy / EV_IN_KJ_PER_MOL, rel=1e-7)
    np.testing.assert_allclose(
        atoms.get_forces(), forces / EV_IN_KJ_PER_MOL / 10.0, rtol=1e-7, atol=1e-9
    )
    # the OBC2 implicit solvent is on: vacuum gives another energy
    vacuum = OpenMMCalculator(prmtop, platform="Reference", implicit_solvent=None)
    assert abs(vacuum.get_potential_energy(atoms) - atoms.get_potential_energy()) > 0.1


def test_forces_are_minus_the_energy_gradient(ala2):
    prmtop, _, atoms = ala2
    atoms.rattle(0.02, rng=np.random.default_rng(0))
    calc = OpenMMCalculator(prmtop, platform="Reference")
    forces = calc.get_forces(atoms)
    h = 1e-4
    rng = np.random.default_rng(1)
    for atom, axis in zip(
        rng.choice(len(atoms), 6, replace=False), rng.integers(0, 3, 6), strict=True
    ):
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * h
            energies.append(calc.get_potential_energy(moved))
        numeric = -(energies[0] - energies[1]) / (2 * h)
        assert forces[atom, axis] == pytest.approx(numeric, rel=1e-5, abs=1e-6)


def test_wrong_atoms_are_refused(ala2, shared_file):
    prmtop, pdb, atoms = ala2
    calc = reference_calculator("amber-implicit", prmtop=prmtop)
    assert calc.reference_name == "amber-implicit(prmtop=alanine-dipeptide-implicit.prmtop)"
    with pytest.raises(UnsupportedSpeciesError, match="topology_atoms"):
        calc.get_potential_energy(read(pdb))  # ASE reads the CA atom name as calcium
    with pytest.raises(UnsupportedSpeciesError, match="16 atoms differ"):
        calc.get_potential_energy(atoms[::-1])
    with pytest.raises(InvalidStructureError, match="21 atoms"):
        calc.get_potential_energy(atoms[:-1])
    with pytest.raises(ModelFileError, match="missing.prmtop"):
        OpenMMCalculator(pdb.parent / "missing.prmtop")


def test_short_reference_trajectory_is_physical(ala2, tmp_path):
    prmtop, pdb, _ = ala2
    out = tmp_path / "ala2.extxyz"
    frames = ala2_reference_trajectory(
        prmtop, pdb, steps=400, every=20, seed=7, output=out, progress=False
    )
    assert len(frames) == 21 and len(read(out, ":")) == 21
    assert [f.info["step"] for f in frames] == list(range(0, 401, 20))
    assert frames[-1].info["time_fs"] == pytest.approx(800.0)
    reference = mdtraj.load_pdb(str(pdb))
    symbols = [a.element.symbol for a in reference.topology.atoms]
    start = reference.xyz[0] * 10.0  # nm -> Å
    calc = OpenMMCalculator(prmtop, platform="Reference")
    pairs = np.array([[b[0].index, b[1].index] for b in reference.topology.bonds])
    i, j = pairs.T
    bonds = np.array([np.linalg.norm(f.positions[j] - f.positions[i], axis=1) for f in frames])
    assert len(i) == 21  # the 21 covalent bonds of the 22-atom dipeptide
    assert np.abs(bonds - bonds.mean(axis=0)).max() < 0.5  # MDsim's collapse criterion
    assert bonds.max() < 1.7
    h_bonds = (frames[0].numbers[i] == 1) | (frames[0].numbers[j] == 1)
    assert bonds[:, h_bonds].std(axis=0).max() < 1e-3  # HBonds constraints hold
    assert np.sqrt(((frames[0].positions - start) ** 2).sum(axis=1).mean()) < 0.5
    for frame in read(out, ":"):
        assert frame.get_chemical_symbols() == symbols and not frame.pbc.any()
        fresh = Atoms(frame.numbers, frame.positions)
        assert frame.get_potential_energy() == pytest.approx(
            calc.get_potential_energy(fresh), abs=2e-3
        )  # CPU platform: mixed precision
        np.testing.assert_allclose(frame.get_forces(), calc.get_forces(fresh), atol=2e-3)
        # temperature from the stored momenta (3N - 12 constraints - 3 dof) = OpenMM's
        p, m = frame.get_momenta(), frame.get_masses()
        t = (p**2 / m[:, None]).sum() / ((3 * 22 - 12 - 3) * units.kB)
        assert t == pytest.approx(frame.info["temperature_K"], rel=1e-6)
    mean_t = np.mean([f.info["temperature_K"] for f in frames])
    assert 180.0 < mean_t < 450.0  # 0.8 ps of a 22-atom Langevin run at 300 K


def test_cli_sample_runs_openmm(ala2, tmp_path, monkeypatch, capsys):
    from ase_mlmd.cli import main as cli_main

    prmtop, pdb, _ = ala2
    names = {name for name, _ in cli_main.COMMANDS}
    if "sample" not in names:
        monkeypatch.setattr(
            cli_main, "COMMANDS", [*cli_main.COMMANDS, ("sample", "ase_mlmd.cli.sample")]
        )
    out = tmp_path / "ala2.extxyz"
    cli_main.main(
        [
            "sample",
            str(pdb),
            "--reference",
            "amber-implicit",
            "-p",
            f"prmtop={prmtop}",
            "--steps",
            "100",
            "--every",
            "50",
            "-o",
            str(out),
            "--no-progress",
        ]
    )
    frames = read(out, ":")
    assert [f.info["step"] for f in frames] == [0, 50, 100]
    assert frames[1].info["time_fs"] == pytest.approx(100.0)  # 2 fs default
    assert "3 frames" in capsys.readouterr().out
