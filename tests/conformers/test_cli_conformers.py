"""``ase-mlmd conformers``: generation, reference, eval through the command line."""

from __future__ import annotations

import pytest
from ase.io import read

from ase_mlmd.cli import main as cli_main


def _run(*argv):
    cli_main.main(["conformers", *map(str, argv)])


def test_generate_reference_and_eval(tmp_path, capsys):
    _run("CCCO", "-n", "3", "--method", "etkdg", "-o", tmp_path / "one.extxyz")
    frames = read(tmp_path / "one.extxyz", ":")
    assert len(frames) == 3 and frames[0].info["smiles"] == "CCCO"
    smi = tmp_path / "mols.smi"
    smi.write_text("CO methanol\nCCO ethanol\n")
    _run("reference", smi, "--test-fraction", "1.0", "--val-fraction", "0",
         "--max-gradients", "20", "--patience", "1", "-o", tmp_path / "ref")  # fmt: skip
    assert "2 of 2 molecules done" in capsys.readouterr().out
    _run(smi, "-n", "4", "--method", "etkdg", "-o", tmp_path / "gen")
    _run("eval", "--reference", tmp_path / "ref" / "test", "--generated", tmp_path / "gen",
         "-o", tmp_path / "report")  # fmt: skip
    assert "2 molecules: COV-R" in capsys.readouterr().out
    assert (tmp_path / "report" / "report.md").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["C1CC", "-n", "2", "-o", "x.extxyz"], "invalid SMILES 'C1CC'"),
        (["CCO", "-n", "0", "-o", "x.extxyz"], "-n"),
        (["CCCl", "--method", "etkdg+relax", "--calc", "emt", "-o", "x.extxyz"], "Cl"),
        (["eval", "--reference", "EMPTY", "--generated", "EMPTY", "-o", "r"], "no reference"),
        (["reference", "-o", "r"], "SMILES file or --freesolv"),
    ],
)
def test_bad_input_exits_with_message(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "EMPTY").mkdir()
    with pytest.raises(SystemExit) as info:
        _run(*argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_invalid_smiles_in_file_names_line(tmp_path, capsys):
    smi = tmp_path / "mols.smi"
    smi.write_text("CCO\nCC(C\n")
    with pytest.raises(SystemExit):
        _run(smi, "-n", "2", "-o", tmp_path / "x.extxyz")
    assert "mols.smi line 2" in capsys.readouterr().err


def test_train_action_is_delegated_to_the_confvae_trainer(capsys):
    with pytest.raises(SystemExit) as info:
        _run("train", "--help")
    assert info.value.code == 0
    assert "ase-mlmd conformers train" in capsys.readouterr().out
