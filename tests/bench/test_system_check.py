"""The benchmark refuses a reference of another system before any MD (issue 18 item 2).

``--system ethanol`` with an aspirin or water reference used to run and report a force MAE of
2541 meV/Å for "ethanol". The reference must now be the protocol's molecule (its formula) or a
whole multiple of a condensed phase's repeat unit, and a peptide topology must list the
reference's atoms in its order; the error names both sides and the system that would fit.
Real files from ../shared/data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.io import read
from conftest import cli_fails

from ase_mlmd.bench import SYSTEMS, benchmark
from ase_mlmd.bench.protocol import check_system, check_topology
from ase_mlmd.errors import IncompatibleTrajectoriesError

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
ASPIRIN = DATA / "aspirin" / "aspirin.xyz"
WATER = DATA / "water_dft"
ALA2_PDB = DATA / "ala2" / "ala2.pdb"
ALA2_IMPLICIT = DATA / "ala2" / "alanine-dipeptide-implicit.pdb"


@pytest.fixture(scope="module")
def aspirin_frames():
    return read(ASPIRIN, ":")


def test_ethanol_benchmark_refuses_an_aspirin_reference_before_any_md(aspirin_frames, tmp_path):
    with pytest.raises(IncompatibleTrajectoriesError) as err:
        benchmark(
            ["ethanol-nequip"],
            aspirin_frames,
            tmp_path / "report",
            system="ethanol",
            progress=False,
            log=lambda *_: None,
        )
    message = str(err.value)
    assert "C9H8O4 (21 atoms)" in message and "'ethanol' benchmark needs C2H6O (9 atoms)" in message
    assert "--system aspirin" in message
    assert not (tmp_path / "report").exists()  # nothing simulated, nothing written


def test_cli_bench_refuses_a_water_reference_for_ethanol(tmp_path, capsys):
    err = cli_fails(
        ["bench", "--system", "ethanol", "--models", "ethanol-nequip", "--reference", str(WATER),
         "--short", "--replicas", "1", "--no-progress", "-o", str(tmp_path / "r")],
        capsys,
    )  # fmt: skip
    assert "H128O64 (192 atoms)" in err and "needs C2H6O" in err and "--system water" in err
    assert not (tmp_path / "r" / "trajectories").exists()


def test_cli_bench_reads_an_xyz_reference_for_water_by_its_own_format(tmp_path, capsys):
    # the water protocol's default format (deepmd) is for folders; a file is read as what it
    # is, and then refused as the wrong system (not as "no deepmd system")
    err = cli_fails(
        ["bench", "--system", "water", "--models", "ethanol-nequip", "--reference", str(ASPIRIN),
         "--short", "--replicas", "1", "--no-progress", "-o", str(tmp_path / "r")],
        capsys,
    )  # fmt: skip
    assert "needs a whole multiple of H2O" in err and "deepmd" not in err


@pytest.mark.parametrize(
    ("system", "atoms", "fits"),
    [
        ("ethanol", molecule("CH3CH2OH"), True),
        ("ethanol", molecule("CH3OCH3"), True),  # same formula: composition cannot tell
        ("aspirin", molecule("CH3CH2OH"), False),
        ("water", molecule("H2O").repeat((1, 1, 1)), True),
        ("water", molecule("H2O") + molecule("H2O"), True),  # any whole multiple
        ("water", molecule("H2O") + molecule("H2"), False),  # H6O2 is not (H2O)n
        ("water", molecule("CH4"), False),
        ("lj", bulk("Ar", "fcc", a=5.26, cubic=True).repeat(2), True),
        ("lj", bulk("Cu", "fcc", a=3.6), False),
        ("md17", molecule("C6H6"), True),  # the generic protocol takes any molecule
    ],
)
def test_composition_rule(system, atoms, fits):
    if fits:
        check_system(atoms, SYSTEMS[system], "x")
    else:
        with pytest.raises(IncompatibleTrajectoriesError, match=f"'{system}' benchmark needs"):
            check_system(atoms, SYSTEMS[system], "x")


def test_a_molecule_benchmark_refuses_two_molecules():
    two = molecule("CH3CH2OH") + molecule("CH3CH2OH")
    with pytest.raises(IncompatibleTrajectoriesError, match="C4H12O2 \\(18 atoms\\)"):
        check_system(two, SYSTEMS["ethanol"], "x")


def test_peptide_topology_must_list_the_reference_atoms_in_order():
    pdb = read(ALA2_PDB)
    # MDsim's ala2.pdb gives the alpha carbon the element "CA" (calcium); the atom is a carbon
    numbers = [6 if atom.symbol == "Ca" else atom.number for atom in pdb]
    reference = Atoms(numbers, positions=pdb.positions)
    check_system(reference, SYSTEMS["ala2"], "ala2.pdb")
    check_topology(reference, ALA2_PDB, "ala2.pdb")  # its own topology fits
    check_topology(reference, ALA2_IMPLICIT, "ala2.pdb")  # another PDB, same atom order
    other = int(np.flatnonzero(reference.numbers != reference.numbers[0])[0])
    order = list(range(len(reference)))
    order[0], order[other] = other, 0  # swap the first atom with the first of another element
    shuffled = reference[order]
    assert shuffled.get_chemical_formula() == reference.get_chemical_formula()
    with pytest.raises(IncompatibleTrajectoriesError, match="same order \\(first difference at"):
        check_topology(shuffled, ALA2_PDB, "shuffled")


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"replicas": 0}, "replicas \\(--replicas\\) must be a whole number >= 1, got 0"),
        ({"length_ps": -1.0}, "--length"),
        ({"system": "benzene"}, "unknown benchmark system 'benzene'"),
    ],
)
def test_bench_config_refuses_settings_that_cannot_run(settings, match):
    from ase_mlmd.bench import BenchConfig

    with pytest.raises(ValueError, match=match):
        BenchConfig(**settings)
