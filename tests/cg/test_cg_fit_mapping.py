"""``ase-mlmd cg fit/eval --mapping``: a mapping whose beads are not a chain (the learned 6-bead
alanine dipeptide mapping is a star around one bead) gives the prior and the evaluation its
own topology, through the whole ``ase-mlmd`` command."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from conftest import cli_fails

from ase_mlmd import load_calculator
from ase_mlmd.cg.mapping import CGMapping
from ase_mlmd.cli.main import main

DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "cg_data"
LEARNED = DATA / "ala2_map_learned6.json"


@pytest.fixture
def mapped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["cg", "map", "--mapping", str(LEARNED), "--apply", str(DATA / "ala2_aa_200.extxyz"),
          "--output-cg", "cg.extxyz", "-o", "map.json"])  # fmt: skip
    return tmp_path


def test_fit_takes_the_topology_of_the_mapping(mapped, capsys):
    main(["cg", "fit", "cg.extxyz", "--mapping", str(LEARNED), "--no-network",
          "--priors", "bonds,dihedrals", "--no-progress", "-o", "prior"])  # fmt: skip
    card = tomllib.loads((mapped / "prior" / "card.toml").read_text())
    bonds = CGMapping.from_json(LEARNED).topology().bonds.tolist()
    assert bonds != [[k, k + 1] for k in range(5)]  # not a chain: the test means something
    assert card["parameters"]["topology"]["bonds"] == bonds
    topology = CGMapping.from_json(LEARNED).topology()
    prior = load_calculator(mapped / "prior" / "card.toml").model.prior
    assert prior.dihedrals.tolist() == topology.dihedrals.tolist()  # the star's 3, not a chain's
    # 200 frames are too few to Boltzmann-invert every angle: the error names the term
    err = cli_fails(["cg", "fit", "cg.extxyz", "--mapping", str(LEARNED), "--no-network",
                     "--priors", "bonds,angles", "-o", "p2"], capsys)  # fmt: skip
    assert "angle prior of beads (0, 2, 3)" in err


def test_a_mapping_of_another_bead_count_and_a_bad_dihedral_pair_are_refused(mapped, capsys):
    main(["cg", "map", str(DATA / "ala2_aa_200.extxyz"), "--scheme", "girvan-newman",
          "--beads", "4", "-o", "gn4.json"])  # fmt: skip
    err = cli_fails(["cg", "fit", "cg.extxyz", "--mapping", "gn4.json", "--no-network",
                     "-o", "p"], capsys)  # fmt: skip
    assert "--mapping gn4.json has 4 beads but the CG frames have 6" in err
    args = ["--mapping", str(LEARNED), "--dihedral-pair", "0,7", "-o", "r"]
    err = cli_fails(["cg", "eval", "--reference", "cg.extxyz", "--simulated", "x", *args], capsys)
    assert "--dihedral-pair '0,7'" in err and "into the topology's dihedrals" in err
