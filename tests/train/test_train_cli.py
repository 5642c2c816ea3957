"""``ase-mlmd train`` in-process: train, then use the card with ``ase-mlmd run``; bad flags
are clean command-line errors."""

from __future__ import annotations

import tomllib

import pytest
from ase.io import read, write
from training_frames import lj_clusters

from ase_mlmd import load_calculator
from ase_mlmd.cli.main import COMMANDS
from ase_mlmd.cli.main import main as mlmd_main


def train_cli(args: list[str]) -> None:
    """``ase-mlmd ARGS`` with the train command (whether or not main.py lists it yet)."""
    from ase.cli.main import main as ase_main

    commands = [c for c in COMMANDS if c[0] != "train"] + [("train", "ase_mlmd.cli.train")]
    ase_main(prog="ase-mlmd", commands=commands, args=args)


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "argon.extxyz", lj_clusters(12, seed=11))
    write(tmp_path / "cluster.xyz", lj_clusters(1, seed=12)[0])
    return tmp_path


def test_train_then_run_the_card(files, capsys, clean_ase_registry):
    args = ["train", "--data", "argon.extxyz", "--model", "schnet", "--split", "8,2,2"]
    args += ["--max-epochs", "2", "--cutoff", "5", "--hyper", "n_atom_basis=8,n_interactions=1"]
    args += ["--max-time", "10m", "--no-progress", "-o", "models/argon-schnet"]
    train_cli(args)
    out = capsys.readouterr().out
    assert "test MAE" in out and "meV/Å" in out and "models/argon-schnet/card.toml" in out
    card_path = files / "models" / "argon-schnet" / "card.toml"
    card = tomllib.loads(card_path.read_text())
    assert card["name"] == "argon-schnet"
    prov = card["provenance"]
    assert prov["command"].startswith("ase-mlmd train --data argon.extxyz --model schnet")
    assert "--max-time 10m" in prov["command"] and "-o models/argon-schnet" in prov["command"]
    assert prov["data_format"] == "extxyz" and prov["split"]["train"] == 8
    assert f"{prov['test_force_mae_meV_per_A']:.2f} meV/Å" in out

    mlmd_main(["run", "models/argon-schnet/card.toml", "cluster.xyz", "-o", "result.xyz"])
    atoms = read(files / "cluster.xyz")
    atoms.calc = load_calculator(card_path)
    assert read(files / "result.xyz").get_potential_energy() == pytest.approx(
        atoms.get_potential_energy(), abs=1e-6
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max-time", "soon"], "duration"),
        (["--split", "0.8,0.2"], "split"),
        (["--lr", "-1"], "lr must be > 0"),
    ],
)
def test_bad_flags_are_clean_errors(files, capsys, flags, message):
    with pytest.raises(SystemExit) as info:
        train_cli(["train", "--data", "argon.extxyz", "-o", "out", *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (files / "out").exists()
