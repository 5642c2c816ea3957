"""One error path for every ``ase-mlmd`` subcommand (issue 18 items 3 and 7).

Bad input gives ``ase-mlmd CMD: error: ...`` on stderr with what to do, exit code 2 and no
traceback; ``--debug`` (anywhere) or ASE's ``-T`` re-raises; an unexpected exception exits 1
and says how to get the traceback. Hints name the command's flags, not Python keywords.
``ase-mlmd run`` prints a one-line summary and the files it wrote.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from ase.io import read, write
from conftest import cli_fails, make_ar_cluster, make_ar_crystal

from ase_mlmd import load_calculator
from ase_mlmd.cli.main import cli_message, main
from ase_mlmd.errors import UnknownCalculatorError


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "ar.xyz", make_ar_crystal())
    write(tmp_path / "cluster.xyz", make_ar_cluster())
    return tmp_path


def _card(path, weights_format: str) -> None:
    path.write_text(
        'name = "x"\nbackend = "lennard-jones"\nspecies = ["Ar"]\ncutoff = 8.0\n'
        "[parameters]\nepsilon = 0.01\nsigma = 3.4\n"
        f'[weights]\nfile = "w.bin"\nsha256 = "00"\nformat = "{weights_format}"\n'
    )


# --- clean failures -------------------------------------------------------------------------


def test_unknown_name_lists_the_known_ones_with_a_did_you_mean(files, capsys):
    err = cli_fails(["run", "lj-argn", "ar.xyz"], capsys)
    assert err.startswith("ase-mlmd run: error: UnknownCalculatorError: no calculator named")
    assert "Did you mean 'lj-argon'?" in err and "Known cards:" in err and "emt" in err
    assert "ModuleNotFoundError" not in err and "ase.calculators.lj-argn" not in err


def test_missing_card_path_is_reported_without_traceback(files, capsys):
    err = cli_fails(["run", "models/nope.toml", "ar.xyz"], capsys)
    assert "models/nope.toml does not exist" in err and "ase-mlmd calculators" in err


def test_unknown_weights_format_is_reported_without_traceback(files, capsys):
    _card(files / "odd.toml", "hdf5")
    err = cli_fails(["run", "odd.toml", "ar.xyz"], capsys)
    assert "CardError" in err and "weights format 'hdf5' unknown" in err and "safetensors" in err


def test_md_and_run_report_the_same_card_error_the_same_way(files, capsys):
    _card(files / "odd.toml", "hdf5")
    run_err = cli_fails(["run", "odd.toml", "ar.xyz"], capsys)
    md_err = cli_fails(["md", "ar.xyz", "--calc", "odd.toml", "--steps", "2"], capsys)
    message = run_err.split("error: ", 1)[1]
    assert md_err.split("error: ", 1)[1] == message


def test_missing_structure_file(files, capsys):
    err = cli_fails(["run", "lj-argon", "nothere.xyz"], capsys)
    assert "nothere.xyz does not exist" in err


@pytest.mark.parametrize("value", ["5", "x,2", "2,1.0", "5,-1"])
def test_bad_equation_of_state_value_names_the_flag(files, capsys, value):
    err = cli_fails(["run", "lj-argon", "ar.xyz", "-E", value], capsys)
    assert "-E/--equation-of-state" in err and "5,2.0" in err


@pytest.mark.parametrize(
    "args",
    [
        ["run", "lj-argn", "ar.xyz", "--debug"],
        ["--debug", "run", "lj-argn", "ar.xyz"],
        ["-T", "run", "lj-argn", "ar.xyz"],
    ],
)
def test_debug_or_traceback_flag_reraises(files, args):
    with pytest.raises(UnknownCalculatorError):
        main(args)


def test_unexpected_error_exits_1_and_says_how_to_see_the_traceback(files, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "lj-argon", "ar.xyz", "-q", "--after", "1/0"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "--debug" in err and "Traceback" not in err


def test_hints_name_the_commands_flags_not_python_keywords(files, capsys):
    # an MD17-layout file without a unit: the reader's hint names energy_unit=...
    n = 4
    np.savez(
        files / "md17_x.npz",
        R=np.random.default_rng(0).random((n, 3, 3)) * 2,
        z=np.array([8, 1, 1]),
        E=np.zeros((n, 1)),
        F=np.zeros((n, 3, 3)),
    )
    err = cli_fails(["train", "--data", "md17_x.npz", "-o", "out"], capsys)
    assert "--energy-unit kcal/mol" in err
    assert "energy_unit" not in err


def test_keyword_rewriting_keeps_hints_that_already_give_the_flag():
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--no-restart", action="store_true")
    parser.add_argument("--trust-model", action="store_true")
    parser.add_argument("--energy-unit")
    kept = "delete it or pass restart=False (CLI: --no-restart) to start fresh"
    assert cli_message(kept, parser) == kept
    kept = "pass trust=True (Python) or --trust-model / -p trust=True (command line)"
    assert cli_message(kept, parser) == kept
    assert cli_message("pass restart=False to start fresh", parser) == (
        "pass --no-restart to start fresh"
    )
    assert cli_message("use energy_unit='meV'", parser) == "use --energy-unit meV"
    kept = "with `run`, -p trust=True"  # already a command-line spelling
    assert cli_message(kept, parser) == kept
    # a command without the flag keeps the keyword (there is nothing better to say)
    assert cli_message("pass length_unit='nm'", parser) == "pass length_unit='nm'"


# --- what a successful run prints -----------------------------------------------------------


def test_single_point_prints_a_summary_with_the_cards_energy(files, capsys):
    main(["run", "lj-argon", "ar.xyz"])
    out = capsys.readouterr().out
    atoms = read(files / "ar.xyz")
    atoms.calc = load_calculator("lj-argon")
    energy = float(re.search(r"energy (-?[\d.]+) eV", out).group(1))
    assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
    fmax = float(re.search(r"max force ([\d.e+-]+) eV/Å", out).group(1))
    assert fmax == pytest.approx(np.linalg.norm(atoms.get_forces(), axis=1).max(), rel=1e-3)
    assert "stress [" in out  # periodic: stress is reported


def test_non_periodic_summary_has_no_stress_and_quiet_prints_nothing(files, capsys):
    main(["run", "lj-argon", "cluster.xyz"])
    out = capsys.readouterr().out
    assert "energy" in out and "stress" not in out
    main(["run", "lj-argon", "cluster.xyz", "-q"])
    assert capsys.readouterr().out == ""


def test_relaxation_says_where_results_went_and_when_a_log_was_appended(files, capsys):
    main(["run", "lj-argon", "cluster.xyz", "-f", "0.05", "-o", "relaxed.xyz"])
    out = capsys.readouterr().out
    assert "trajectory: cluster.traj" in out and "optimizer log: cluster.log" in out
    assert "final structure written to: relaxed.xyz" in out
    assert "appended" not in out
    main(["run", "lj-argon", "cluster.xyz", "-f", "0.05", "-o", "relaxed.xyz"])
    out = capsys.readouterr().out
    assert "appended to the existing log: cluster.log" in out
    assert "final structure appended to: relaxed.xyz" in out
    assert len(read(files / "relaxed.xyz", index=":")) == 2  # what ASE's -o does: append


def test_equation_of_state_prints_no_future_warning(files, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        main(["run", "lj-argon", "ar.xyz", "-E", "5,2.0"])
    out = capsys.readouterr().out
    assert "eos type: sj" in out and "trajectory: ar.traj" in out


@pytest.mark.parametrize("command", ["run", "md"])
def test_unknown_calculator_parameter_is_refused_not_ignored(files, capsys, command):
    args = ["run", "lj-argon", "cluster.xyz", "-p", "epsilon=1.0"]
    if command == "md":
        args = ["md", "cluster.xyz", "--calc", "lj-argon", "-p", "epsilon=1.0", "--steps", "1"]
    err = cli_fails(args, capsys)
    assert "UnknownParameterError" in err and "no parameter 'epsilon'" in err
    assert "dtype" in err and "set in the card" in err


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["-f", "0"], "-f/--maximum-force"),
        (["-f", "-1"], "-f/--maximum-force"),
        (["-s", "0"], "-s/--maximum-stress"),
        (["--properties", "ez"], "unknown letters z"),
        (["-E", "5,2", "--eos-type", "cubic"], "--eos-type 'cubic'"),
    ],
)
def test_run_flags_that_ase_would_take_silently_or_hang_on(files, capsys, flags, match):
    assert match in cli_fails(["run", "lj-argon", "cluster.xyz", *flags], capsys)


def test_unreadable_structure_file_is_an_input_error(files, capsys):
    (files / "garbage.xyz").write_text("this is not\na structure\n")
    (files / "notes.txt").write_text("hello\n")
    err = cli_fails(["run", "lj-argon", "garbage.xyz"], capsys)
    assert "cannot read a structure from garbage.xyz" in err and "XYZError" in err
    err = cli_fails(["run", "lj-argon", "notes.txt"], capsys)
    assert "cannot read a structure from notes.txt" in err and "extension" in err


def test_cell_relaxation_of_a_molecule_points_to_f(files, capsys):
    err = cli_fails(["run", "lj-argon", "cluster.xyz", "-s", "0.01"], capsys)
    assert "-s/--maximum-stress relaxes the cell" in err and "-f/--maximum-force" in err
