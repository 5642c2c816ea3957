"""CG data, force matching with the package's training loop, the prior + network card, and CG
MD with the batched engine, on the real alanine dipeptide CG data (../shared/data/ala2_cg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from ase_mlmd.beads import make_cg_atoms
from ase_mlmd.calculators.registry import load_calculator
from ase_mlmd.cg.data import ALA2_BACKBONE, read_cg_data, require_forces
from ase_mlmd.cg.forcefield import fit_cg_forcefield, force_matching_loss
from ase_mlmd.cg.priors import PriorSettings
from ase_mlmd.errors import (
    DataFormatError,
    InvalidStructureError,
    MissingLabelsError,
    UnsupportedSpeciesError,
)
from ase_mlmd.testing import check_batch_consistency, check_forces
from ase_mlmd.train.config import TrainConfig

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ala2_cg"
KCAL_MOL_IN_EV = 4.184 / 96.4853321  # kJ per kcal / (kJ/mol per eV)

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/ala2_cg not present")


@pytest.fixture(scope="module")
def frames():
    return read_cg_data(DATA, "kcal/mol", stride=10)  # 1000 frames, time order kept


@pytest.fixture(scope="module")
def fitted(frames, tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("cgfit")
    config = TrainConfig(model="schnet", cutoff=8.0, dtype="float64", split=(0.7, 0.1, 0.2),
                         ordered_split=True, max_epochs=3, batch_size=32, lr=2e-3,
                         hyperparameters={"n_atom_basis": 16, "n_interactions": 2})  # fmt: skip
    priors = PriorSettings(terms=("bonds", "angles", "dihedrals", "repulsion"))
    return fit_cg_forcefield(frames, out, config, priors, progress=False)


def test_reads_ala2_cg_with_explicit_units(frames):
    raw_x = np.load(DATA / "ala2_coordinates.npy", mmap_mode="r")
    raw_f = np.load(DATA / "ala2_forces.npy", mmap_mode="r")
    assert len(frames) == 1000
    atoms = frames[3]
    np.testing.assert_allclose(atoms.positions, raw_x[30], rtol=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), raw_f[30] * KCAL_MOL_IN_EV, rtol=1e-6)
    assert list(atoms.arrays["bead_type"]) == ["C", "N", "CA", "C", "N"]
    assert atoms.info["bead_types"] == "C N CA"
    assert list(atoms.numbers) == [1, 2, 3, 1, 2]
    assert atoms.get_masses().sum() == pytest.approx(144.17, abs=0.01)  # ala2's mass
    assert atoms.get_masses() == pytest.approx(ALA2_BACKBONE.masses)


def test_bad_cg_data(tmp_path, frames):
    with pytest.raises(DataFormatError, match="--units"):
        read_cg_data(DATA)
    with pytest.raises(DataFormatError, match="unknown unit"):
        read_cg_data(DATA, "kcal")
    with pytest.raises(DataFormatError, match="does not exist"):
        read_cg_data(tmp_path / "nothing")
    # CG frames written without forces are read, then refused for force matching by name
    bare = [a.copy() for a in frames[:3]]
    write(tmp_path / "bare.extxyz", bare)
    read_back = read_cg_data(tmp_path / "bare.extxyz")
    with pytest.raises(MissingLabelsError, match=r"bare.extxyz\[0\] has no forces"):
        require_forces(read_back)
    with pytest.raises(MissingLabelsError, match="no forces"):
        fit_cg_forcefield(read_back, tmp_path / "out", network=False)
    # all-atom frames are not CG data
    write(tmp_path / "aa.extxyz", molecule("CH3CH2OH"))
    with pytest.raises(DataFormatError, match="no bead types"):
        read_cg_data(tmp_path / "aa.extxyz")


def test_extxyz_cg_frames_with_forces_round_trip(tmp_path, frames):
    out = []
    for a in frames[:4]:
        b = make_cg_atoms(a.positions, ALA2_BACKBONE.bead_types, ["C", "N", "CA"],
                          ALA2_BACKBONE.masses)  # fmt: skip
        b.calc = SinglePointCalculator(b, forces=a.get_forces())
        out.append(b)
    write(tmp_path / "mapped.extxyz", out)
    back = read_cg_data(tmp_path / "mapped.extxyz")
    np.testing.assert_allclose(require_forces(back), require_forces(frames[:4]), atol=1e-7)
    assert list(back[0].arrays["bead_type"]) == ["C", "N", "CA", "C", "N"]
    with pytest.raises(DataFormatError, match="ASE units"):
        read_cg_data(tmp_path / "mapped.extxyz", "kcal/mol")


def test_force_matching_beats_prior_only_on_held_out_frames(fitted, frames):
    # time-ordered split: the test frames are the last 20 %, never seen by priors or network
    assert fitted.n_test == 200
    assert fitted.test_loss < fitted.test_loss_prior
    assert fitted.train.stop_reason == "max_epochs"
    log = (fitted.card_path.parent / "train_log.csv").read_text().splitlines()
    assert len(log) == 4  # header + 3 epochs
    # the loss reported equals an independent evaluation of the loaded card
    calc = load_calculator(fitted.card_path)
    test = frames[800:]
    assert force_matching_loss(calc.model, test) == pytest.approx(fitted.test_loss, rel=1e-9)


def test_card_round_trip_and_conformance(fitted, frames):
    calc = load_calculator(fitted.card_path)
    assert calc.card.backend == "cg-prior-network"
    model = fitted.model
    for atoms in frames[:3]:
        a = atoms.copy()
        a.calc = calc
        expected = model(__import__("ase_mlmd.batch").batch.batch_from_atoms([atoms], 8.0))
        assert a.get_potential_energy() == pytest.approx(float(expected["energy"][0]), abs=1e-9)
    probe = frames[5].copy()
    probe.calc = None
    assert check_forces(calc, probe, step=1e-4, atol=1e-5) < 1e-5
    check_batch_consistency(calc, [frames[0].copy(), frames[1].copy()], atol=1e-9)


def test_card_refuses_all_atom_structures(fitted):
    calc = load_calculator(fitted.card_path)
    ethanol = molecule("CH3CH2OH")
    ethanol.calc = calc
    with pytest.raises(UnsupportedSpeciesError, match="looks all-atom"):
        ethanol.get_potential_energy()
    hydrogen = molecule("H2")  # numbers fit a bead type, but no bead types: refused too
    hydrogen.calc = calc
    with pytest.raises(InvalidStructureError, match="no bead types"):
        hydrogen.get_potential_energy()


def test_cg_md_batched_engine_and_explosion_monitor(fitted, frames, tmp_path):
    from ase_mlmd.md import simulate

    starts = [frames[k].copy() for k in (0, 100, 200)]
    for a in starts:
        a.calc = None
    starts[1].positions[4] = starts[1].positions[0] + [0.02, 0.0, 0.0]  # beads 0, 4 overlap
    result = simulate(starts, str(fitted.card_path), timestep=2.0, steps=40, save_every=10,
                      friction=0.002, trajectory=str(tmp_path / "r_{i}.traj"),
                      progress=False, seed=3)  # fmt: skip
    status = [r.status for r in result.replicas]
    assert status == ["completed", "collapsed", "completed"]
    assert result.replicas[0].frames == 5


def cli(args, monkeypatch):
    """``ase-mlmd ARGS`` with the cg command registered (until cli/main.py lists it)."""
    from ase_mlmd.cli import main as cli_main

    if ("cg", "ase_mlmd.cli.cg") not in cli_main.COMMANDS:
        monkeypatch.setattr(cli_main, "COMMANDS", [*cli_main.COMMANDS, ("cg", "ase_mlmd.cli.cg")])
    cli_main.main(args)


def test_cli_cg_fit_prior_only_and_units_flag(tmp_path, monkeypatch, capsys):
    out = tmp_path / "prior"
    cli(["cg", "fit", str(DATA), "--units", "kcal/mol", "--no-network", "--stride", "20",
         "--priors", "bonds,angles,repulsion", "-o", str(out)], monkeypatch)  # fmt: skip
    text = capsys.readouterr().out
    assert "prior only" in text and "card:" in text
    calc = load_calculator(out / "card.toml")
    assert calc.model.network is None and len(calc.model.prior.dihedrals) == 0
    assert calc.card.provenance["units"] == "kcal/mol"
    with pytest.raises(SystemExit):
        cli(["cg", "fit", str(DATA), "-o", str(tmp_path / "x")], monkeypatch)
    assert "no units" in capsys.readouterr().err.replace("\n", " ")
    with pytest.raises(DataFormatError, match="--units kcal/mol"):
        cli(["-T", "cg", "fit", str(DATA), "-o", str(tmp_path / "x")], monkeypatch)
    with pytest.raises(SystemExit):
        cli(["cg", "fit", str(DATA), "--units", "kcal/mol", "--priors", "bends",
             "-o", str(tmp_path / "y")], monkeypatch)  # fmt: skip
    assert "--priors 'bends'" in capsys.readouterr().err


def test_cli_md_both_engines_and_run_with_a_cg_card(fitted, frames, tmp_path, monkeypatch, capsys):
    from ase.io import read

    start = frames[0].copy()
    start.calc = None
    write(tmp_path / "start.extxyz", start)
    card = str(fitted.card_path)
    common = ["--temperature", "300", "--timestep", "2", "--steps", "20", "--save-every", "10"]
    cli(["md", str(tmp_path / "start.extxyz"), "--calc", card, "--ensemble", "nvt-langevin",
         *common, "-o", str(tmp_path / "ase.traj"), "--no-progress"], monkeypatch)  # fmt: skip
    assert len(read(tmp_path / "ase.traj", ":")) == 3
    cli(["md", str(tmp_path / "start.extxyz"), "--calc", card, "--engine", "torch",
         "--replicas", "3", "--ensemble", "nvt-langevin", *common, "-o", str(tmp_path / "runs"),
         "--no-progress"], monkeypatch)  # fmt: skip
    assert len(list((tmp_path / "runs").glob("replica_*.traj"))) == 3
    cli(["run", card, str(tmp_path / "start.extxyz")], monkeypatch)
    # an all-atom structure is refused by the ASE engine with the CG model's message
    write(tmp_path / "ethanol.xyz", molecule("CH3CH2OH"))
    with pytest.raises(SystemExit):
        cli(["md", str(tmp_path / "ethanol.xyz"), "--calc", card, *common,
             "-o", str(tmp_path / "aa.traj"), "--no-progress"], monkeypatch)  # fmt: skip
    assert "all-atom" in capsys.readouterr().err
