"""``ase-mlmd diffsim fit|ibi`` end to end on a tiny box, and its errors for bad input.

The command module is run through ASE's CLI machinery exactly as ``ase-mlmd`` runs it; the
learned card is then used by ``ase-mlmd run`` as an ordinary calculator.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.io import read, write
from conftest import shared_file

from ase_mlmd import load_calculator
from ase_mlmd.diffsim.systems import ThermoState, initial_atoms

TARGET = "lj_rdf/rdf_rho0.845_T1.0_dt0.01.csv"
TINY = [
    "--cells", "3",
    "--equilibration", "20",
    "--production-steps", "20",
    "--no-progress",
]  # fmt: skip


def diffsim(args: list[str]) -> None:
    from ase.cli.main import main

    main(prog="ase-mlmd", commands=[("diffsim", "ase_mlmd.cli.diffsim")], args=["diffsim", *args])


def diffsim_fails(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        diffsim(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_fit_writes_a_card_that_runs_as_a_calculator(tmp_path, capsys):
    out = tmp_path / "fit"
    target = str(shared_file(TARGET))
    diffsim(
        ["fit", "--target", target, "--density", "0.845", "--temperature", "1.0", "--units", "lj"]
        + ["--potential", "neural-pair", "--method", "bptt", "--epochs", "2", "--window", "10"]
        + ["--true-potential", "lj", "-o", str(out), *TINY]
    )
    printed = capsys.readouterr().out
    assert "rdf_dev rho0.845_T1" in printed
    for name in ("card.toml", "weights.safetensors", "loss.png", "potential.png", "report.md"):
        assert (out / name).is_file(), name
    assert (out / "rdf_rho0.845_T1.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "bptt" and summary["epochs"] == 2
    assert np.isfinite(summary["u_error_max"])
    # the learned potential is an ordinary calculator, also through `ase-mlmd run`
    atoms = initial_atoms(ThermoState(0.845, 1.0, n_cells=3))
    atoms.rattle(0.05, seed=1)
    write(tmp_path / "liquid.xyz", atoms)
    atoms.calc = load_calculator(out / "card.toml")
    expected = atoms.get_potential_energy()
    from ase_mlmd.cli.main import main as ase_mlmd

    ase_mlmd(
        ["run", str(out / "card.toml"), str(tmp_path / "liquid.xyz"), "-o", str(tmp_path / "r.xyz")]
    )
    assert read(tmp_path / "r.xyz").get_potential_energy() == pytest.approx(expected, rel=1e-8)


def test_ibi_writes_a_spline_card(tmp_path):
    out = tmp_path / "ibi"
    diffsim(
        ["ibi", "--target", str(shared_file(TARGET)), "--iterations", "2", "--steps", "20"]
        + ["-o", str(out), *TINY]
    )
    card = (out / "card.toml").read_text()
    assert 'backend = "spline-pair"' in card
    assert load_calculator(out / "card.toml").model.n_knots > 10


def test_transposed_csv_is_a_clean_error(tmp_path, capsys):
    r, g = np.loadtxt(shared_file(TARGET), delimiter=",")
    path = tmp_path / "rdf_rho0.845_T1.0.csv"
    np.savetxt(path, np.stack([r, g], axis=1), delimiter=",")
    err = diffsim_fails(["fit", "--target", str(path), "-o", str(tmp_path / "x")], capsys)
    assert "transposed layout" in err and "--target-layout columns" in err


def test_small_box_and_missing_state_are_clean_errors(tmp_path, capsys):
    target = str(shared_file(TARGET))
    err = diffsim_fails(["fit", "--target", target, "--cells", "2", "-o", str(tmp_path)], capsys)
    assert "shorter than twice the cutoff" in err and "--cells 3" in err
    r, g = np.loadtxt(target, delimiter=",")
    unnamed = tmp_path / "target.csv"
    np.savetxt(unnamed, np.stack([r, g]), delimiter=",")
    err = diffsim_fails(["ibi", "--target", str(unnamed), "-o", str(tmp_path)], capsys)
    assert "--density and --temperature" in err
