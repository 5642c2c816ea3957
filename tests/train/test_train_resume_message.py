"""``ase-mlmd train`` says that it resumed (from which epoch, of which folder), and its
progress written to a captured stderr is plain lines."""

from __future__ import annotations

import pytest
from ase.io import write
from training_frames import lj_clusters

from ase_mlmd.cli.main import main as mlmd_main


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "argon.extxyz", lj_clusters(12, seed=11))
    return tmp_path


def test_a_resumed_training_says_so(files, capsys):
    args = ["train", "--data", "argon.extxyz", "--model", "schnet", "--split", "8,2,2"]
    args += ["--cutoff", "5", "--hyper", "n_atom_basis=8,n_interactions=1", "-o", "models/ar"]
    mlmd_main([*args, "--max-epochs", "1"])
    first = capsys.readouterr()
    assert "resumed" not in first.out + first.err
    mlmd_main([*args, "--max-epochs", "2"])  # the same run, one epoch more
    second = capsys.readouterr()
    assert "train: resumed from epoch 1 of models/ar" in second.err
    assert "2 epochs" in second.out and "resumed from epoch 1 of models/ar" in second.out
    assert "\r" not in second.err and "\x1b" not in second.err  # not a terminal: plain lines
    assert "epochs: 2/" in second.err
