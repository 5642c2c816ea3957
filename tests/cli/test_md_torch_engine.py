"""``ase-mlmd md --engine torch``: many replicas, an output folder, restart, and clean errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.io import read, write
from conftest import cli_fails, make_ar_cluster

import ase_mlmd.calculators.ml_calculator as ml_calculator
from ase_mlmd.cli.main import main
from ase_mlmd.md import read_log


@pytest.fixture
def cluster_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "cluster.xyz", make_ar_cluster())
    return tmp_path / "cluster.xyz"


RUN = [
    "md", "cluster.xyz", "--calc", "lj-argon", "--engine", "torch", "--replicas", "3",
    "--ensemble", "nvt-langevin", "--temperature", "60", "--timestep", "5", "--steps", "30",
    "--save-every", "10", "--log-every", "5", "-o", "runs", "--no-progress",
]  # fmt: skip


def test_torch_engine_writes_a_folder_per_run_and_prints_a_table(cluster_file, capsys):
    main(RUN)
    out = capsys.readouterr().out
    runs = cluster_file.parent / "runs"
    assert {p.name for p in runs.iterdir()} == {
        "replica_0.traj", "replica_1.traj", "replica_2.traj", "md.log", "checkpoint.pt",
        "summary.json",
    }  # fmt: skip
    for i in range(3):
        frames = read(runs / f"replica_{i}.traj", ":")
        assert len(frames) == 4 and len(frames[0]) == 13
        assert np.isfinite(frames[-1].get_forces()).all()
    log = read_log(runs / "md.log")
    assert sorted(set(log["step"].tolist())) == list(range(0, 31, 5))
    summary = json.loads((runs / "summary.json").read_text())
    assert summary["steps"] == 30 and summary["n_completed"] == 3
    assert [r["status"] for r in summary["replicas"]] == ["completed"] * 3
    final_T = [r["final_temperature_K"] for r in summary["replicas"]]
    np.testing.assert_allclose(
        final_T, [f.get_temperature() for f in (read(runs / f"replica_{i}.traj") for i in range(3))]
    )
    assert "3 completed, 0 collapsed" in out
    assert out.count("completed") >= 4  # the headline and one table row per replica


def test_running_the_command_again_resumes_and_no_restart_starts_afresh(cluster_file, capsys):
    main(RUN)
    capsys.readouterr()
    main(RUN + ["--steps", "40"])  # the same run, 10 steps longer (the last --steps counts)
    assert "resumed from step 30" in capsys.readouterr().out
    assert len(read("runs/replica_0.traj", ":")) == 5
    main(RUN + ["--no-restart"])
    assert "resumed" not in capsys.readouterr().out
    assert len(read("runs/replica_0.traj", ":")) == 4
    err = cli_fails(RUN + ["--steps", "40", "--ensemble", "nve"], capsys)
    assert "CheckpointMismatchError" in err and "--no-restart" in err


def test_monitors_from_the_command_line_stop_replicas(cluster_file, capsys):
    main(RUN + ["--max-force", "1e-6"])
    summary = json.loads((cluster_file.parent / "runs" / "summary.json").read_text())
    assert summary["n_collapsed"] == 3
    assert {(r["monitor"], r["collapse_step"]) for r in summary["replicas"]} == {("MaxForce", 1)}
    out = capsys.readouterr().out
    assert "0 completed, 3 collapsed" in out and out.count("max force") == 3
    assert [len(read(f"runs/replica_{i}.traj", ":")) for i in range(3)] == [1, 1, 1]


def test_torch_engine_errors_are_clean(cluster_file, capsys, monkeypatch):
    err = cli_fails(["md", "cluster.xyz", "--calc", "emt", "--engine", "torch"], capsys)
    assert "cannot run in the torch engine" in err and "--engine ase" in err
    err = cli_fails(["md", "cluster.xyz", "--calc", "lj-argon", "--replicas", "4"], capsys)
    assert "--replicas needs --engine torch" in err
    monkeypatch.setattr(ml_calculator.torch.cuda, "is_available", lambda: False)
    err = cli_fails(RUN + ["--device", "cuda"], capsys)
    assert "DeviceNotAvailableError" in err
    err = cli_fails(RUN + ["--timestep", "0"], capsys)
    assert "timestep" in err
    assert not (cluster_file.parent / "runs").exists()  # nothing written
