"""Reference driver: layout, interrupted runs resume molecule by molecule, bad input."""

from __future__ import annotations

import pytest

import ase_mlmd.conformers.reference as reference
from ase_mlmd.conformers.molecules import molecule_record, split_molecules
from ase_mlmd.conformers.reference import (
    generate_reference,
    read_index,
    reference_ensembles,
)
from ase_mlmd.errors import CheckpointMismatchError, DataFormatError, UnsupportedSpeciesError

FAST = {"max_gradients": 25, "patience": 1, "md_steps": 2, "polish_steps": 10}


def _records():
    pairs = [("CO", "methanol"), ("CS", "methanethiol"), ("C=O", "formaldehyde")]
    recs = [molecule_record(s, i, f"test line {k}") for k, (s, i) in enumerate(pairs, 1)]
    split = {"methanol": "test", "methanethiol": "train", "formaldehyde": "val"}
    return recs, split


def test_interrupted_run_resumes_without_losing_or_redoing_molecules(tmp_path, monkeypatch):
    recs, split = _records()
    folder = tmp_path / "ref"
    real = reference.conformer_search
    calls = []

    def interrupted(mol, calc, **kw):
        calls.append(mol.GetNumAtoms())
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(mol, calc, **kw)

    monkeypatch.setattr(reference, "conformer_search", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_reference(recs, split, folder, **FAST)
    rows = read_index(folder)
    assert [r["id"] for r in rows] == ["methanol"]  # test split first
    first = (folder / "test" / "methanol.extxyz").read_bytes()
    assert not (folder / ".ase-mlmd.lock").exists()
    monkeypatch.setattr(reference, "conformer_search", real)
    rows = generate_reference(recs, split, folder, **FAST)
    assert [r["id"] for r in rows] == ["methanol", "methanethiol", "formaldehyde"]
    assert (folder / "test" / "methanol.extxyz").read_bytes() == first
    ens = reference_ensembles(folder / "train")["methanethiol"]
    assert ens[0].info["mol_id"] == "methanethiol" and ens[0].info["method"] == "gfn2-xtb"
    assert ens[0].info["energy"] == ens[0].get_potential_energy() < 0
    assert [r["status"] for r in rows] == ["ok"] * 3
    # other ensemble-defining settings: refused; another budget: allowed
    with pytest.raises(CheckpointMismatchError, match="another folder"):
        generate_reference(recs, split, folder, **{**FAST, "rmsd": 0.5})
    generate_reference(recs, split, folder, **{**FAST, "max_gradients": 10})


def test_unsupported_elements_are_refused_before_anything_runs(tmp_path):
    recs = [molecule_record("CCl", "chloromethane", "mols.smi line 1")]
    with pytest.raises(UnsupportedSpeciesError, match=r"chloromethane.*Cl"):
        generate_reference(recs, {"chloromethane": "test"}, tmp_path / "r", method="emt")
    assert not (tmp_path / "r").exists()


def test_empty_reference_folder_is_an_error(tmp_path):
    (tmp_path / "test").mkdir()
    with pytest.raises(DataFormatError, match="no reference ensembles"):
        reference_ensembles(tmp_path / "test")


def test_split_covers_every_record():
    recs, _ = _records()
    assert set(split_molecules(recs, test_fraction=0.34, val_fraction=0.33).values()) == {
        "test",
        "val",
        "train",
    }
