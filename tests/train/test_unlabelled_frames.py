"""Frames without labels: ``ase-mlmd train`` says how to label them (the tally's unclear case
named the reader's Python keyword ``require=``), and a forces-only fit accepts frames that
have forces but no energy."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from conftest import cli_fails

from ase_mlmd.errors import MissingLabelsError
from ase_mlmd.train.trainer import load_frames


def test_train_on_unlabelled_frames_says_how_to_label_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write("u.xyz", [molecule("H2O")] * 3)
    err = cli_fails(["train", "--data", "u.xyz", "-o", "out"], capsys)
    assert "u.xyz#0 has no energy" in err and "ase-mlmd label u.xyz --reference" in err
    assert "--energy-weight 0" in err and "require=" not in err
    assert not (tmp_path / "out").exists()


def test_forces_only_frames_load_when_energies_are_not_fitted(tmp_path):
    frames = []
    for k in range(3):
        atoms = molecule("H2O")
        atoms.rattle(0.01, seed=k)
        atoms.calc = SinglePointCalculator(atoms, forces=np.full((3, 3), 0.1 * k))
        frames.append(atoms)
    write(tmp_path / "f.extxyz", frames)
    loaded, info = load_frames(tmp_path / "f.extxyz", require_energy=False)
    assert len(loaded) == 3 and info["n_frames"] == 3
    np.testing.assert_allclose(loaded[2].get_forces(), 0.2)
    with pytest.raises(MissingLabelsError, match="has no energy"):
        load_frames(tmp_path / "f.extxyz")
