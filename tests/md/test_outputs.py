"""MD outputs are trustworthy: unique temporary names for checkpoints, corrupt outputs named
on resume (not ``ValueError: invalid literal for int()``), a run never reports success when
what it wrote does not read back, a failed run leaves no empty files, and progress written to
a file or pipe is plain lines."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from ase.calculators.lj import LennardJones
from ase.io import read

from ase_mlmd.cli.demo import liquid_argon
from ase_mlmd.errors import CorruptOutputError
from ase_mlmd.md import Monitor, simulate
from ase_mlmd.md import checkpoint as ckpt
from ase_mlmd.md.ase_md import AseMDConfig, run_ase_md
from ase_mlmd.progress import PlainProgress, progress_bar


def run(out, steps=20, monitors=(), restart=True, progress=False):
    return simulate(
        liquid_argon(n_cells=2),
        "lj-argon",
        replicas=2,
        ensemble="nvt-langevin",
        temperature=90.0,
        timestep=5.0,
        steps=steps,
        save_every=10,
        log_every=5,
        seed=3,
        trajectory=str(out / "replica_{i}.traj"),
        logfile=out / "md.log",
        checkpoint=out / "checkpoint.pt",
        monitors=list(monitors),
        restart=restart,
        progress=progress,
    )


# ---------------------------------------------------------------------- temporary names
def test_two_writers_of_one_checkpoint_do_not_share_a_temporary_file(tmp_path, monkeypatch):
    """While one checkpoint is being written, another writer saves the same file (as a second
    run into the same folder did). With a fixed ``checkpoint.pt.tmp`` the inner writer moved
    the shared temporary file away and the outer one failed with FileNotFoundError."""
    path = tmp_path / "checkpoint.pt"
    real_save = torch.save
    nested = []

    def save_with_interruption(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        if not nested:
            nested.append(True)
            ckpt.save_checkpoint(path, {"step": 2})  # the other writer, mid-way

    monkeypatch.setattr(torch, "save", save_with_interruption)
    ckpt.save_checkpoint(path, {"step": 1})
    assert ckpt.load_checkpoint(path)["step"] == 1  # the outer (last) replace wins, whole
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporaries left


# ---------------------------------------------------------------------- corrupt outputs on resume
def test_a_corrupt_log_is_named_on_resume(tmp_path):
    out = tmp_path / "run"
    run(out, steps=20)
    lines = (out / "md.log").read_text().splitlines(keepends=True)
    lines.insert(3, ",0.005,0,-1.0,0.1,-0.9,90\n")  # a row whose step is empty
    (out / "md.log").write_text("".join(lines))
    with pytest.raises(CorruptOutputError) as info:
        run(out, steps=30)
    message = str(info.value)
    assert str(out / "md.log") in message and "line 4" in message
    assert "--no-restart" in message and "restart=False" in message


def test_a_corrupt_trajectory_is_named_on_resume(tmp_path):
    out = tmp_path / "run"
    run(out, steps=20)
    data = (out / "replica_1.traj").read_bytes()
    third = len(data) // 3
    (out / "replica_1.traj").write_bytes(data[:third] + b"x" * third + data[2 * third :])
    with pytest.raises(CorruptOutputError, match="replica_1.traj is corrupt.*--no-restart"):
        run(out, steps=30)
    result = run(out, steps=30, restart=False)  # what the message says to do works
    assert [r.frames for r in result.replicas] == [4, 4]


# ---------------------------------------------------------------------- read back at the end
class OtherWriter(Monitor):
    """Plays a second run starting afresh in the same folder at step ``at``: it overwrites
    the log or a trajectory (as ``open(..., "w")`` and ``Trajectory(..., "w")`` do) while
    this run keeps writing through its own open files."""

    name = "OtherWriter"

    def __init__(self, out, at, what):
        self.out, self.at, self.what, self.calls = out, at, what, 0

    def __call__(self, state):
        from ase.io.trajectory import Trajectory

        self.calls += 1
        if self.calls == self.at:
            if self.what == "log":
                with open(self.out / "md.log", "w") as f:
                    f.write("step,time_ps,replica,E_pot,E_kin,E_tot,T\n0,0,0,-1,0.1,-0.9,90\n")
            else:
                with Trajectory(str(self.out / "replica_1.traj"), "w") as traj:
                    traj.write(liquid_argon(n_cells=1))
        return torch.zeros(state.n_systems, dtype=torch.bool, device=state.device)


@pytest.mark.parametrize("what", ["log", "trajectory"])
def test_a_run_whose_outputs_do_not_read_back_does_not_report_success(tmp_path, what):
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(CorruptOutputError) as info:
        run(out, steps=20, monitors=[OtherWriter(out, 7, what)])
    message = str(info.value)
    assert "does not read back" in message and "new folder" in message
    assert ("md.log" if what == "log" else "replica_1.traj") in message


def test_an_intact_run_reads_back(tmp_path):
    result = run(tmp_path / "run", steps=20)
    assert [r.frames for r in result.replicas] == [3, 3]
    assert len(read(tmp_path / "run" / "replica_0.traj", index=":")) == 3


# ---------------------------------------------------------------------- failed runs
class FailingLJ(LennardJones):
    """LJ that fails on its first evaluation (as a model that cannot handle the input)."""

    def calculate(self, *args, **kwargs):
        raise RuntimeError("the calculator failed")


def test_a_failed_ase_md_leaves_no_empty_files(tmp_path):
    atoms = liquid_argon(n_cells=1)
    config = AseMDConfig("nvt-langevin", 90.0, timestep_fs=5.0, steps=10)
    traj, log = tmp_path / "run.traj", tmp_path / "run.log"
    with pytest.raises(RuntimeError, match="the calculator failed"):
        run_ase_md(atoms, FailingLJ(), config, trajectory=traj, logfile=log, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no traj, log or lock files


def test_ase_md_reads_its_outputs_back(tmp_path):
    atoms = liquid_argon(n_cells=1)
    config = AseMDConfig("nvt-langevin", 90.0, timestep_fs=5.0, steps=20, save_every=5)
    calc = LennardJones(sigma=3.4, epsilon=0.0104, rc=8.0)
    run_ase_md(atoms, calc, config, tmp_path / "run.traj", tmp_path / "run.log", progress=False)
    assert len(read(tmp_path / "run.traj", index=":")) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.log", "run.traj"]


# ---------------------------------------------------------------------- progress in logs
def test_progress_to_a_file_is_plain_lines():
    stream = io.StringIO()
    bar = progress_bar(total=1000, desc="MD", unit="step", file=stream, interval=0.0)
    assert isinstance(bar, PlainProgress)
    for _ in range(100):
        bar.set_postfix_str("running 8/8 replicas")
        bar.update(10)
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0].startswith("MD: 10/1000 step (1%)") and lines[-1].startswith("MD: 1000/1000")
    assert all("running 8/8 replicas" in line for line in lines)


def test_plain_progress_writes_a_line_per_tenth_or_per_interval():
    stream = io.StringIO()
    bar = PlainProgress(total=100, desc="x", file=stream, interval=1e9)
    bar._last_time -= 10.0  # the minimum time between lines has passed
    for _ in range(100):
        bar.update(1)
        bar._last_time -= 10.0
    bar.close()
    percents = [line.split("(")[1].split("%")[0] for line in stream.getvalue().splitlines()]
    assert percents == [str(p) for p in range(10, 101, 10)]  # every 10 %, no end duplicate
    quiet = io.StringIO()
    inner = PlainProgress(total=100, file=quiet, leave=False, interval=1e9)
    for _ in range(100):
        inner.update(1)
    inner.close()
    assert quiet.getvalue() == ""  # bars that do not stay write only timed lines


def test_md_progress_in_a_captured_stderr_has_no_escape_codes(tmp_path, capsys):
    run(tmp_path / "run", steps=20, progress=True)
    err = capsys.readouterr().err
    assert "MD: 20/20 step (100%)" in err
    assert "\r" not in err and "\x1b" not in err
    atoms = liquid_argon(n_cells=1)
    config = AseMDConfig("nve", 90.0, timestep_fs=5.0, steps=10)
    run_ase_md(atoms, LennardJones(sigma=3.4, epsilon=0.0104, rc=8.0), config, progress=True)
    err = capsys.readouterr().err
    assert "MD: 10/10 step (100%)" in err and "\r" not in err
    assert np.isfinite(atoms.get_potential_energy())


def test_a_failed_fresh_torch_run_leaves_no_empty_files(tmp_path, monkeypatch):
    """The trajectories are open and the log has its header when writing step 0 fails."""
    from ase_mlmd.md.reporters import EnergyLog

    def fail(self, *args):
        raise OSError("disk full")

    monkeypatch.setattr(EnergyLog, "write", fail)
    with pytest.raises(OSError, match="disk full"):
        run(tmp_path / "run", steps=20)
    assert not (tmp_path / "run").exists()  # no empty files, no lock; the folder was new
