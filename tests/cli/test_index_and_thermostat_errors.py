"""Bad frame indices and thermostat constants are input errors that name the flag (the
unclear cases of the bad-input tally: ``md --index 99`` gave a bare StopIteration, ``label
--index a:b`` ASE's TypeError, ``md --friction -1`` an explosion blamed on the positions)."""

from __future__ import annotations

import pytest
from ase.io import write
from conftest import cli_fails, make_ar_crystal

from ase_mlmd.diffsim.config import FitConfig
from ase_mlmd.md.ase_md import AseMDConfig
from ase_mlmd.md.integrators import check_thermostat_constants


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "ar.xyz", [make_ar_crystal()] * 2)
    return tmp_path


@pytest.mark.parametrize("engine", ["ase", "torch"])
def test_md_index_past_the_end_names_the_flag(files, capsys, engine):
    err = cli_fails(["md", "ar.xyz", "--calc", "lj-argon", "--engine", engine,
                     "--index", "99", "--steps", "2"], capsys)  # fmt: skip
    assert "--index 99 selects no frame of ar.xyz" in err
    assert "StopIteration" not in err and "Traceback" not in err
    assert not (files / "md.traj").exists() and not (files / "md_runs").exists()


def test_label_index_that_is_not_an_index_names_the_flag(files, capsys):
    err = cli_fails(["label", "ar.xyz", "--reference", "emt", "--index", "a:b",
                     "-o", "out.extxyz"], capsys)  # fmt: skip
    assert "--index 'a:b' is not a frame index" in err and "TypeError" not in err


@pytest.mark.parametrize("engine", ["ase", "torch"])
def test_negative_friction_is_refused_before_the_run(files, capsys, engine):
    err = cli_fails(["md", "ar.xyz", "--calc", "lj-argon", "--engine", engine,
                     "--friction", "-1", "--steps", "2"], capsys)  # fmt: skip
    assert "friction must be >= 0 per fs (--friction)" in err
    assert not (files / "md.traj").exists() and not (files / "md_runs").exists()


def test_thermostat_constants_are_checked_per_replica():
    check_thermostat_constants([0.01, 0.0], [50.0])  # zero friction = no coupling: valid
    with pytest.raises(ValueError, match="--friction"):
        check_thermostat_constants([0.01, float("nan")], None)
    with pytest.raises(ValueError, match="--tdamp"):
        check_thermostat_constants(0.01, 0.0)
    with pytest.raises(ValueError, match="--tdamp"):
        AseMDConfig(ensemble="nvt-nose-hoover", tdamp_fs=-5.0)


def test_diffsim_settings_name_the_one_that_is_wrong():
    with pytest.raises(ValueError, match=r"^lr must be > 0, got 0"):
        FitConfig(lr=0.0)
    with pytest.raises(ValueError, match="ibi_iterations"):
        FitConfig(method="bptt", ibi_iterations=0)


def test_diffsim_flags_out_of_range_are_named(files, capsys):
    target = files.parent / "rdf_rho0.8_T1.0_dt0.01.csv"
    r = [0.75 + 0.0255 * k for k in range(100)]
    target.write_text(",".join(map(str, r)) + "\n" + ",".join("1.0" for _ in r) + "\n")
    err = cli_fails(["diffsim", "fit", "--target", str(target), "--lr", "0", "-o", "f"], capsys)
    assert "--lr (the Adam learning rate) must be > 0, got 0.0" in err
    err = cli_fails(["diffsim", "ibi", "--target", str(target), "--iterations", "0",
                     "-o", "i"], capsys)  # fmt: skip
    assert "--iterations must be a whole number >= 1, got 0" in err
    assert not (files / "f").exists() and not (files / "i").exists()
