"""Data-parallel training on 2 gloo processes (CPU): the same loss curve and weights as one
process with the same global batch; a run killed mid-epoch (SIGKILL of the launcher, which
takes both ranks with it) resumes through ``ase-mlmd train --devices 2 --strategy ddp`` and
ends where the uninterrupted run ends; resuming with another number of processes is refused
naming ``--devices``.

Tolerance: relative 1e-9 in float64. The two runs differ only in the order of floating-point
sums (a batch's loss and gradient are summed over two shards, then over the ranks, instead of
over the whole batch at once): ~1e-16 relative per step, amplified only mildly by the ~10 Adam
steps here (measured: the CSV logs agree to the last printed digit). An error in the
distributed arithmetic is far larger: a gradient averaged instead of summed over the ranks, or
a shard left out, changes the loss by O(1e-2) relative or more.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from ase.io import write
from training_frames import lj_clusters

from ase_mlmd.calculators.cards import load_state_dict, read_card
from ase_mlmd.errors import WorldSizeMismatchError
from ase_mlmd.train import TrainConfig, train
from ase_mlmd.train.checkpoint import load_train_checkpoint
from ase_mlmd.train.distributed import ProcessGroup
from ase_mlmd.train.loss import Errors
from ase_mlmd.train.trainer import _train

#: 7 training frames in batches of 3: batches of 3, 3 and 1 frames, so the last batch leaves
#: rank 1 without a frame (its share contributes a zero gradient)
CONFIG = {
    "model": "nequip",
    "cutoff": 5.0,
    "max_epochs": 3,
    "batch_size": 3,
    "split": (7, 2, 2),
    "dtype": "float64",
    "checkpoint_every_batches": 1,
    "hyperparameters": {"num_features": 8, "num_layers": 1},
}
CLI_FLAGS = (
    "--model nequip --cutoff 5.0 --max-epochs 3 --batch-size 3 --split 7,2,2 --dtype float64 "
    "--hyper num_features=8,num_layers=1"
).split()
RTOL = 1e-9
#: rank 0 SIGKILLs the launcher right after this many checkpoints (batches 1, 2 and the end of
#: epoch 1, batches 1 and 2 of epoch 2) and waits: the ranks die only because the launcher did
KILL_AFTER = 5

#: a script file (not ``-c``): spawned ranks re-import it, so the patch applies in them too
KILLED_RUN = """
import os, signal, sys, time
import torch
import ase_mlmd.train.loop as loop
from ase_mlmd.train import TrainConfig, train

saved = loop.save_train_checkpoint
count = 0

def save_then_kill_launcher(path, data):
    global count
    saved(path, data)
    count += 1
    if count == {kill_after}:
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(600)  # rank 1 waits in the next all-reduce meanwhile

loop.save_train_checkpoint = save_then_kill_launcher

if __name__ == "__main__":
    torch.set_num_threads(1)
    train(sys.argv[1], TrainConfig(**{config!r}, devices=2), sys.argv[2], progress=False)
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "argon.extxyz"
    write(path, lj_clusters(12, seed=7))
    return path


@pytest.fixture(scope="module")
def single(dataset, tmp_path_factory):
    """The uninterrupted single-process run."""
    folder = tmp_path_factory.mktemp("single")
    return train(dataset, TrainConfig(**CONFIG), folder, progress=False)


@pytest.fixture(scope="module")
def killed(dataset, tmp_path_factory):
    """A 2-process run killed (SIGKILL of the launcher; the ranks get SIGKILL from the kernel
    when it dies) in the middle of epoch 2. ``subprocess.run`` returns only once every process
    holding its output pipes, the ranks included, has ended."""
    folder = tmp_path_factory.mktemp("ddp") / "run"
    script = folder.parent / "killed_run.py"
    script.write_text(textwrap.dedent(KILLED_RUN.format(kill_after=KILL_AFTER, config=CONFIG)))
    proc = subprocess.run(
        [sys.executable, str(script), str(dataset), str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    return folder


def test_killed_run_left_a_rank0_checkpoint_and_no_card(killed):
    state = load_train_checkpoint(killed / "checkpoint.pt")
    assert (state["epoch"], state["batch"], state["world_size"]) == (1, 2, 2)
    assert not (killed / "card.toml").exists()
    assert len((killed / "train_log.csv").read_text().splitlines()) == 1 + 1


def test_resume_with_another_number_of_processes_is_refused(dataset, killed):
    for devices in (1, 3):
        with pytest.raises(WorldSizeMismatchError) as info:
            train(dataset, TrainConfig(**CONFIG, devices=devices), killed, progress=False)
        message = str(info.value)
        assert "--devices 2" in message and f"--devices {devices}" in message
        assert str(killed / "checkpoint.pt") in message
    # refused before anything changed: the checkpoint is still the killed run's
    assert load_train_checkpoint(killed / "checkpoint.pt")["batch"] == 2


def test_killed_ddp_run_resumed_by_the_cli_equals_the_single_process_run(dataset, killed, single):
    """``ase-mlmd train --devices 2 --strategy ddp`` resumes the killed run; its loss curve,
    validation errors and final weights are the single-process run's (to RTOL)."""
    cli = [sys.executable, "-m", "ase_mlmd.cli.main", "train", "--data", str(dataset)]
    done = subprocess.run(
        [*cli, *CLI_FLAGS, "--devices", "2", "--strategy", "ddp", "--no-progress", "-o",
         str(killed)],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from epoch 1 of" in done.stdout and "card:" in done.stdout

    ddp_log = _log(killed / "train_log.csv")
    one_log = _log(single.output_dir / "train_log.csv")
    assert ddp_log.shape == one_log.shape == (3, 6)
    np.testing.assert_allclose(ddp_log[:, 2:], one_log[:, 2:], rtol=RTOL, atol=0)
    # the loss is not flat: a wrong gradient would show
    assert abs(one_log[-1, 3] - one_log[0, 3]) > 1e3 * RTOL * one_log[0, 3]

    card = read_card(killed / "card.toml")
    assert card.provenance["command"].endswith(f"--devices 2 --strategy ddp -o {killed}")
    weights = load_state_dict(card)
    reference = load_state_dict(read_card(single.card_path))
    assert weights.keys() == reference.keys()
    for key, value in reference.items():
        np.testing.assert_allclose(weights[key].numpy(), value.numpy(), rtol=RTOL, atol=1e-12)


def test_bad_process_settings_are_refused_naming_the_setting(dataset, tmp_path):
    with pytest.raises(ValueError, match="devices must be a whole number >= 1"):
        TrainConfig(devices=0)
    with pytest.raises(ValueError, match="strategy must be one of"):
        TrainConfig(devices=2, strategy="fsdp")
    with pytest.raises(ValueError, match="trains in one process"):  # nothing spawned
        train(dataset, TrainConfig(devices=2), tmp_path, model=torch.nn.Linear(1, 1))


class FollowerRank(ProcessGroup):
    """Rank 1 of 2 without a real process group: "rank 0" (this stub) says stop after
    ``epochs`` epochs and answers validation with fixed errors; gradients stay as they are."""

    rank, size = 1, 2

    def __init__(self, epochs: int) -> None:
        self.epochs, self.decisions, self.steps = epochs, 0, 0

    def reduce_gradients(self, model, loss: float) -> float:
        self.steps += 1
        return loss

    def from_main(self, compute):
        if compute.__name__ == "stop_reason":
            self.decisions += 1
            return "early_stopping" if self.decisions > self.epochs else None
        return Errors(1e-3, 1e-2, 5e-2, 2)  # rank 0's validation


def test_other_ranks_follow_rank0_and_write_nothing(dataset, tmp_path):
    """A non-zero rank trains its shard, stops when rank 0 says so (not by its own rules:
    max_epochs is 3), validates nothing itself (it holds no validation frames) and writes no
    file: checkpoint, log, split and card are rank 0's."""
    follower = FollowerRank(epochs=1)
    config = TrainConfig(**CONFIG)
    out = tmp_path / "rank1"
    options = {"data_format": None, "energy_unit": None, "resume": True, "progress": False,
               "command": None, "model": None, "export": None}  # fmt: skip
    result = _train(dataset, config, out, torch.device("cpu"), time.monotonic(), **options,
                    group=follower)  # fmt: skip
    assert result is None
    assert follower.decisions == 2 and follower.steps == 3  # 1 epoch of 3 batches
    assert not out.exists() or not any(out.iterdir())


def _log(path) -> np.ndarray:
    """The CSV log as numbers, (epochs, columns), wall time (column 1) included."""
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
