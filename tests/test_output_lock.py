"""Output locks (:mod:`ase_mlmd.outdir`): one run per output folder or file.

A lock held by another live process is refused with a message naming it; a lock left by a dead
process is taken over; locks are released on exceptions and Ctrl-C; every command that writes
an output refuses a locked output (exit code 2, the owner's PID named) before writing there;
two concurrent ``ase-mlmd md --engine torch`` runs into one folder: one succeeds, the other
stops, and the survivor's trajectories read back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ase.io import read, write

from ase_mlmd.errors import OutputLockedError
from ase_mlmd.outdir import (
    FOLDER_LOCK_NAME,
    StaleLockWarning,
    _process_start,
    lock_file,
    lock_file_for,
    lock_folder,
)

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from ase_mlmd.cli.main import main; main()"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def write_lock(lock: Path, pid: int, host: str | None = None, start: str | None = None) -> None:
    """A lock file as another process would have written it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "pid": pid,
        "host": host or socket.gethostname(),
        "command": "ase-mlmd md other.xyz",
        "started": "2026-01-01T00:00:00+00:00",
        "process_start": start if start is not None else _process_start(pid),
        "token": "other",
    }
    lock.write_text(json.dumps(record) + "\n")


@pytest.fixture
def other_process():
    """A live process (not this one) to name as a lock's owner."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    yield proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------------- the lock itself
def test_a_lock_held_by_another_live_process_is_refused_naming_it(tmp_path, other_process):
    out = tmp_path / "runs"
    write_lock(out / FOLDER_LOCK_NAME, other_process.pid)
    with pytest.raises(OutputLockedError) as info, lock_folder(out):
        pass
    message = str(info.value)
    assert f"PID {other_process.pid}" in message and socket.gethostname() in message
    assert "ase-mlmd md other.xyz" in message and "2026-01-01" in message
    assert "Wait for it to finish" in message and "-o" in message
    assert str(out / FOLDER_LOCK_NAME) in message  # what to remove if that run is gone
    assert json.loads((out / FOLDER_LOCK_NAME).read_text())["pid"] == other_process.pid


def test_a_second_process_cannot_take_a_held_lock(tmp_path):
    out = tmp_path / "runs"
    code = f"from ase_mlmd.outdir import lock_folder\nlock_folder({str(out)!r}).acquire()"
    with lock_folder(out):
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=_env()
        )
    assert proc.returncode != 0
    assert "OutputLockedError" in proc.stderr and f"PID {os.getpid()}" in proc.stderr
    assert not (out / FOLDER_LOCK_NAME).exists()  # released by the with block


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "runs"
    out.mkdir()
    pid = dead_pid()
    write_lock(out / FOLDER_LOCK_NAME, pid, start="1")
    with pytest.warns(StaleLockWarning, match=f"PID {pid}.*no longer runs"), lock_folder(out):
        owner = json.loads((out / FOLDER_LOCK_NAME).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    assert not (out / FOLDER_LOCK_NAME).exists()
    assert not list(out.iterdir())  # no stale-lock leftovers


def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path):
    """The PID is alive but belongs to a process started at another time than the owner."""
    assert _process_start(os.getpid()) is not None, "process start times come from /proc"
    lock = lock_file_for(tmp_path / "run.traj", folder=False)
    write_lock(lock, os.getpid(), start="1")  # our PID, another start time
    with pytest.warns(StaleLockWarning), lock_file(tmp_path / "run.traj"):
        assert json.loads(lock.read_text())["process_start"] == _process_start(os.getpid())


def test_a_lock_from_another_host_is_not_taken_over(tmp_path):
    out = tmp_path / "runs"
    write_lock(out / FOLDER_LOCK_NAME, dead_pid(), host="elsewhere.example", start="1")
    with pytest.raises(OutputLockedError, match="elsewhere.example.*has ended, remove"):
        lock_folder(out).acquire()


def test_an_unreadable_lock_file_is_reported_not_taken(tmp_path):
    out = tmp_path / "runs"
    out.mkdir()
    lock = out / FOLDER_LOCK_NAME
    lock.write_text("")
    old = time.time() - 60
    os.utime(lock, (old, old))
    with pytest.raises(OutputLockedError, match="cannot be read.*delete that file"):
        lock_folder(out).acquire()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_the_lock_is_released_when_the_run_fails(tmp_path, error):
    out = tmp_path / "runs"
    with pytest.raises(error), lock_folder(out):
        (out / "partial.txt").write_text("x")
        raise error()
    assert not (out / FOLDER_LOCK_NAME).exists()
    assert (out / "partial.txt").exists()  # the run's own files stay
    with lock_folder(out):  # and the next run gets the lock
        pass


def test_a_folder_created_by_the_lock_is_removed_if_left_empty(tmp_path):
    out = tmp_path / "new" / "runs"
    with pytest.raises(ValueError), lock_folder(out):
        assert out.is_dir()
        raise ValueError("bad input found after locking")
    assert not out.exists()


def test_locks_are_reentrant_within_a_process(tmp_path):
    out = tmp_path / "runs"
    with lock_folder(out, "output folder (-o)"):
        with lock_folder(out):  # e.g. the CLI, then simulate(), on the same folder
            assert (out / FOLDER_LOCK_NAME).exists()
        assert (out / FOLDER_LOCK_NAME).exists()  # still held by the outer block
    assert not (out / FOLDER_LOCK_NAME).exists()


# ---------------------------------------------------------------------- every command
def mlmd(args: list[str]) -> None:
    from ase_mlmd.cli.main import main

    main(args)


def refused(args: list[str], capsys, pid: int) -> str:
    with pytest.raises(SystemExit) as info:
        mlmd(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"PID {pid}" in err and "in use by another run" in err, err
    return err


@pytest.fixture
def work(tmp_path, monkeypatch):
    from ase_mlmd.cli.demo import liquid_argon

    monkeypatch.chdir(tmp_path)
    write(tmp_path / "argon.xyz", liquid_argon(2))
    return tmp_path


@pytest.mark.parametrize(
    "args, output, folder",
    [
        (["md", "argon.xyz", "--calc", "lj-argon", "--engine", "torch"], "runs", True),
        (["md", "argon.xyz", "--calc", "lj-argon", "--steps", "10"], "run.traj", False),
        (["train", "--data", "argon.xyz", "--max-epochs", "1"], "model", True),
        (["sample", "argon.xyz", "--reference", "lj", "--steps", "10"], "s.extxyz", False),
        (["label", "argon.xyz", "--reference", "lj"], "l.extxyz", False),
        (["bench", "--system", "ethanol", "--models", "lj-argon", "--reference", "x"], "b", True),
        (["demo", "--system", "argon", "--melt-steps", "10"], "demo", True),
    ],
)
def test_every_command_refuses_a_locked_output(work, capsys, other_process, args, output, folder):
    lock = lock_file_for(work / output, folder)
    write_lock(lock, other_process.pid)
    refused([*args, "-o", output], capsys, other_process.pid)
    left = sorted(p.name for p in lock.parent.iterdir())
    expected = [FOLDER_LOCK_NAME] if folder else sorted(["argon.xyz", lock.name])
    assert left == expected  # nothing written beside the other run's files
    assert json.loads(lock.read_text())["pid"] == other_process.pid  # its lock untouched


def test_diffsim_refuses_a_locked_output(work, capsys, other_process):
    from conftest import shared_file

    target = str(shared_file("lj_rdf/rdf_rho0.845_T1.0_dt0.01.csv"))
    write_lock(work / "fit" / FOLDER_LOCK_NAME, other_process.pid)
    args = ["diffsim", "fit", "--target", target, "--units", "lj", "--epochs", "1"]
    args += ["--init", "prior", "--cells", "3", "--no-progress", "-o", "fit"]
    refused(args, capsys, other_process.pid)
    assert sorted(p.name for p in (work / "fit").iterdir()) == [FOLDER_LOCK_NAME]


# ---------------------------------------------------------------------- two real runs
def test_two_md_runs_into_one_folder_one_stops_the_other_completes(tmp_path):
    """The issue's scenario, made deterministic: run A holds the folder (paused with SIGSTOP,
    so it is alive but writes nothing) while run B starts; then A continues."""
    from ase_mlmd.cli.demo import liquid_argon

    write(tmp_path / "argon.xyz", liquid_argon(2))
    args = ["md", "argon.xyz", "--calc", "lj-argon", "--engine", "torch", "--replicas", "3"]
    args += ["--steps", "60", "--save-every", "10", "--no-progress", "-o", "same"]
    first = subprocess.Popen(
        [*CLI, *args], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    lock = tmp_path / "same" / FOLDER_LOCK_NAME
    deadline = time.monotonic() + 300
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock.exists(), first.communicate()
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = subprocess.run(
            [*CLI, *args], cwd=tmp_path, env=_env(), capture_output=True, text=True
        )
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2
    assert "in use by another run" in second.stderr and f"PID {first.pid}" in second.stderr
    for i in range(3):
        frames = read(tmp_path / "same" / f"replica_{i}.traj", index=":")
        assert len(frames) == 7  # steps 0, 10, ..., 60, each once
    assert not lock.exists()


def test_a_file_given_as_output_folder_is_a_clear_error(tmp_path):
    (tmp_path / "run.traj").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        lock_folder(tmp_path / "run.traj", "output folder (-o)").acquire()


def test_the_new_folder_of_a_failed_single_file_output_is_removed(tmp_path):
    with pytest.raises(ValueError), lock_file(tmp_path / "new" / "run.traj"):
        raise ValueError("failed before the first frame")
    assert not (tmp_path / "new").exists()
