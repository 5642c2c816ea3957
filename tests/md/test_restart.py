"""Restart: a run killed at any moment and run again ends with exactly the frames and log rows
of an uninterrupted run (same seed, same device), bit for bit; a checkpoint from another run is
refused with a specific error."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read
from conftest import make_ar_cluster

from ase_mlmd import load_calculator
from ase_mlmd.md import CheckpointError, CheckpointMismatchError, MaxForce, read_log, simulate
from ase_mlmd.md.checkpoint import FORMAT

REPO = Path(__file__).resolve().parents[2]

# A run script used both as a subprocess (to be killed) and, imported, in this process. The
# SlowDown monitor only sleeps, so that the run lasts long enough to be killed mid-way on any
# machine; it never stops a replica and has the same description whatever its delay.
SCRIPT = textwrap.dedent(
    """
    import sys
    import time

    import torch

    from ase_mlmd.cli.demo import liquid_argon
    from ase_mlmd.md import Monitor, simulate


    class SlowDown(Monitor):
        name = "SlowDown"

        def __init__(self, delay):
            self.delay = delay

        def __call__(self, state):
            time.sleep(self.delay)
            return torch.zeros(state.n_systems, dtype=torch.bool, device=state.device)


    def run(out, delay=0.0, steps=240):
        return simulate(
            liquid_argon(n_cells=2), "lj-argon", replicas=2, ensemble="nvt-langevin",
            temperature=[90.0, 120.0], timestep=5.0, friction=0.02, steps=steps,
            save_every=10, log_every=4, seed=11, trajectory=out + "/run_{i}.traj",
            logfile=out + "/md.csv", monitors=[SlowDown(delay)], progress=False,
        )


    if __name__ == "__main__":
        torch.set_num_threads(int(sys.argv[2]))
        run(sys.argv[1], delay=float(sys.argv[3]))
    """
)


def load_script(tmp_path: Path):
    path = tmp_path / "md_run_script.py"
    path.write_text(SCRIPT)
    namespace: dict = {"__name__": "md_run_script"}
    exec(compile(SCRIPT, str(path), "exec"), namespace)
    return path, namespace


def checkpoint_step(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["step"])
    except (FileNotFoundError, RuntimeError, EOFError):
        return -1


def assert_same_frames(dir_a: Path, dir_b: Path, replicas: list[int], n_frames: int) -> None:
    for i in replicas:
        a, b = read(dir_a / f"run_{i}.traj", ":"), read(dir_b / f"run_{i}.traj", ":")
        assert len(a) == len(b) == n_frames
        for fa, fb in zip(a, b, strict=True):
            np.testing.assert_array_equal(fa.positions, fb.positions)
            np.testing.assert_array_equal(fa.get_momenta(), fb.get_momenta())
            np.testing.assert_array_equal(fa.get_forces(), fb.get_forces())
            assert fa.get_potential_energy() == fb.get_potential_energy()


def test_a_killed_run_resumes_to_the_frames_of_an_uninterrupted_run(tmp_path):
    """SIGKILL a Langevin run mid-way, run it again: same frames and log as one clean run."""
    script, namespace = load_script(tmp_path)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    killed.mkdir()
    threads = str(torch.get_num_threads())
    proc = subprocess.Popen(
        [sys.executable, str(script), str(killed), threads, "0.01"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    checkpoint = killed / "run.checkpoint.pt"
    deadline = time.monotonic() + 120
    try:
        while checkpoint_step(checkpoint) < 80:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the run did not reach step 80 in 120 s"
            time.sleep(0.02)
        time.sleep(0.05)  # let it write a few frames / log rows past the checkpoint
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    stopped_at = checkpoint_step(checkpoint)
    assert 80 <= stopped_at < 240

    resumed = namespace["run"](str(killed))
    assert resumed.resumed_from == stopped_at
    assert resumed.steps == 240 and resumed.steps_run == 240 - stopped_at
    reference = namespace["run"](str(clean))
    assert reference.resumed_from is None
    assert_same_frames(killed, clean, [0, 1], n_frames=25)
    assert (killed / "md.csv").read_text() == (clean / "md.csv").read_text()
    for a, b in zip(resumed.atoms, reference.atoms, strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)


def test_frames_written_after_the_last_checkpoint_are_cut_and_collapses_kept(tmp_path):
    """Outputs that run ahead of the checkpoint (a kill between frames and checkpoint) are cut
    back to it; a replica that collapsed before the checkpoint stays collapsed, as recorded."""
    lj = load_calculator("lj-argon").model
    squeezed = make_ar_cluster()
    squeezed.positions *= 0.8  # MaxForce stops it at step 1
    structures = [make_ar_cluster(seed=1), squeezed, make_ar_cluster(seed=2)]

    def run(folder: Path, steps: int):
        return simulate(
            structures,
            lj,
            ensemble="nvt-langevin",
            temperature=50.0,
            timestep=5.0,
            steps=steps,
            save_every=10,
            log_every=5,
            seed=5,
            trajectory=str(folder / "run_{i}.traj"),
            logfile=folder / "md.csv",
            monitors=[MaxForce(1.0)],
            progress=False,
        )

    work, clean = tmp_path / "work", tmp_path / "clean"
    first = run(work, 40)
    assert first.collapsed == [1]
    shutil.copy(work / "run.checkpoint.pt", tmp_path / "at_40.pt")
    run(work, 80)  # continues to 80
    assert len(read(work / "run_0.traj", ":")) == 9
    shutil.copy(tmp_path / "at_40.pt", work / "run.checkpoint.pt")  # as if killed after 40

    resumed = run(work, 80)
    assert resumed.resumed_from == 40 and resumed.steps_run == 40
    reference = run(clean, 80)
    assert_same_frames(work, clean, [0, 2], n_frames=9)
    assert len(read(work / "run_1.traj", ":")) == 1  # frame 0 only
    log = read_log(work / "md.csv")
    assert log["step"].tolist() == [0, 0, 0] + [s for s in range(5, 81, 5) for _ in (0, 2)]
    assert (work / "md.csv").read_text() == (clean / "md.csv").read_text()
    for a, b in zip(resumed.replicas, reference.replicas, strict=True):
        assert (a.status, a.monitor, a.collapse_step, a.frames) == (
            b.status,
            b.monitor,
            b.collapse_step,
            b.frames,
        )
        np.testing.assert_array_equal(a.atoms.positions, b.atoms.positions)
    assert resumed.replicas[1].monitor == "MaxForce" and resumed.replicas[1].collapse_step == 1


def test_a_finished_run_is_not_run_again_and_the_checkpoint_holds_only_plain_data(tmp_path):
    lj = load_calculator("lj-argon").model
    kwargs = dict(
        replicas=2,
        ensemble="nvt-bussi",
        temperature=50.0,
        timestep=5.0,
        steps=30,
        save_every=10,
        trajectory=str(tmp_path / "r_{i}.traj"),
        progress=False,
    )
    first = simulate(make_ar_cluster(), lj, **kwargs)
    data = torch.load(tmp_path / "r.checkpoint.pt", weights_only=True)
    assert data["format"] == FORMAT and data["step"] == 30 and data["active"] == [0, 1]
    assert data["generator"].dtype == torch.uint8
    assert set(data["state"]["thermostat"]) >= {"temperature"}
    again = simulate(make_ar_cluster(), lj, **kwargs)
    assert again.steps_run == 0 and again.resumed_from == 30
    assert len(read(tmp_path / "r_0.traj", ":")) == 4
    for a, b in zip(first.atoms, again.atoms, strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)
    with pytest.raises(CheckpointError, match="beyond the 20 steps"):
        simulate(make_ar_cluster(), lj, **{**kwargs, "steps": 20})


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (dict(ensemble="nvt-langevin"), "ensemble"),
        (dict(replicas=3), "replicas"),
        (dict(structures="other"), "structures"),
        (dict(model="morse-argon"), "model"),
        (dict(timestep=2.0), "timestep_fs"),
    ],
)
def test_a_checkpoint_of_another_run_is_refused_until_restart_is_off(tmp_path, change, named):
    kwargs = dict(
        structures=make_ar_cluster(),
        model="lj-argon",
        replicas=2,
        ensemble="nve",
        temperature=30.0,
        timestep=5.0,
        steps=10,
        save_every=5,
        trajectory=str(tmp_path / "r_{i}.traj"),
        progress=False,
    )
    simulate(kwargs.pop("structures"), kwargs.pop("model"), **kwargs)
    other = {**kwargs, **change}
    structures = make_ar_cluster(seed=9) if other.pop("structures", None) else make_ar_cluster()
    model = other.pop("model", "lj-argon")
    with pytest.raises(CheckpointMismatchError, match=named) as info:
        simulate(structures, model, **other)
    assert "restart=False" in str(info.value)
    assert len(read(tmp_path / "r_0.traj", ":")) == 3  # untouched
    fresh = simulate(structures, model, restart=False, **other)
    assert fresh.resumed_from is None and fresh.steps_run == 10
