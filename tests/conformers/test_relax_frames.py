"""Labelled frames along ETKDG + relax relaxations (training data for an ML card); SMILES files
with triple bonds."""

from __future__ import annotations

import numpy as np
import pytest
from ase.io import read

from ase_mlmd.cli import main as cli_main
from ase_mlmd.conformers.generate import embed_etkdg, relax_conformers
from ase_mlmd.conformers.molecules import mol_from_smiles, read_smiles_file
from ase_mlmd.data.reference import reference_calculator
from ase_mlmd.errors import ConformerRequestError


def test_frames_follow_each_relaxation_with_the_calculators_labels():
    mol = mol_from_smiles("CCO")
    starts = embed_etkdg(mol, 2, seed=3)
    calc = reference_calculator("gfn2-xtb")
    frames = []
    positions, energies, kept = relax_conformers(
        mol, starts, calc, on_frame=frames.append, frame_every=3
    )
    assert kept.tolist() == [0, 1]
    for k in (0, 1):
        path = [f for f in frames if f.info["relax_start"] == k]
        steps = [f.info["relax_step"] for f in path]
        assert steps[0] == 0 and steps == sorted(set(steps))
        assert all(s % 3 == 0 for s in steps[:-1])
        assert [f.info["relax_last"] for f in path] == [False] * (len(path) - 1) + [True]
        np.testing.assert_allclose(path[0].positions, starts[k])  # the ETKDG embedding
        np.testing.assert_allclose(path[-1].positions, positions[k])  # the relaxed structure
        assert path[-1].get_potential_energy() == pytest.approx(energies[k], abs=1e-8)
        assert path[0].get_potential_energy() > energies[k]  # downhill
    for frame in (frames[0], frames[len(frames) // 2]):  # labels = a fresh xTB evaluation
        probe = frame.copy()
        probe.calc = reference_calculator("gfn2-xtb")
        np.testing.assert_allclose(frame.get_forces(), probe.get_forces(), atol=2e-5)  # SCF tol.
        assert frame.get_potential_energy() == pytest.approx(probe.get_potential_energy(), abs=1e-6)


def test_frame_interval_must_be_positive():
    mol = mol_from_smiles("CCO")
    with pytest.raises(ConformerRequestError, match="--relax-every"):
        relax_conformers(mol, embed_etkdg(mol, 1), "gfn2-xtb", on_frame=print, frame_every=0)


def test_cli_writes_relaxation_frames_per_molecule(tmp_path):
    smi = tmp_path / "mols.smi"
    smi.write_text("# nitriles\nCC#N acetonitrile  # a comment\nCCO ethanol\n")
    cli_main.main(["conformers", str(smi), "-n", "2", "--relax-frames", str(tmp_path / "fr"),
                   "--relax-every", "4", "-o", str(tmp_path / "gen")])  # fmt: skip
    for ident in ("acetonitrile", "ethanol"):
        path = read(tmp_path / "fr" / f"{ident}.extxyz", ":")
        confs = read(tmp_path / "gen" / f"{ident}.extxyz", ":")
        assert path[0].info["mol_id"] == ident and path[0].info["source"] == "etkdg+relax"
        assert path[0].get_forces().shape == (len(confs[0]), 3)
        assert sum(f.info["relax_last"] for f in path) == 2  # two relaxations
        lowest = min(f.get_potential_energy() for f in path)
        assert lowest == pytest.approx(confs[0].get_potential_energy(), abs=1e-6)


def test_cli_refuses_relaxation_frames_without_relaxation(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main.main(["conformers", "CCO", "--method", "etkdg", "--relax-frames",
                       str(tmp_path / "fr"), "-o", str(tmp_path / "x.extxyz")])  # fmt: skip
    assert info.value.code == 2
    assert "--relax-frames needs --method etkdg+relax" in capsys.readouterr().err


def test_smiles_file_keeps_triple_bonds_and_skips_comments(tmp_path):
    smi = tmp_path / "mols.smi"
    smi.write_text("# header\nCOC(CC#N)(OC)OC nitrile\nC#C ethyne # trailing\n\n")
    records = read_smiles_file(smi)
    assert [(r.smiles, r.id) for r in records] == [
        ("COC(CC#N)(OC)OC", "nitrile"),
        ("C#C", "ethyne"),
    ]
