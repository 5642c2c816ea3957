"""Interrupted training: a run killed mid-epoch (SIGKILL, in a subprocess) leaves no card, and
resuming it gives bit-identical weights and metrics to an uninterrupted run (same device, one
thread); a checkpoint of another run is refused with the differing settings named."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import tomllib

import pytest
import torch
from ase.io import write
from training_frames import lj_clusters

from ase_mlmd import load_calculator
from ase_mlmd.errors import CheckpointMismatchError, ModelFileError
from ase_mlmd.train import TrainConfig, train
from ase_mlmd.train.checkpoint import load_train_checkpoint

CONFIG = {
    "model": "nequip",
    "cutoff": 5.0,
    "max_epochs": 3,
    "batch_size": 2,
    "split": (8, 2, 2),
    "checkpoint_every_batches": 1,
    "hyperparameters": {"num_features": 8, "num_layers": 1},
}
#: the subprocess kills itself right after this many checkpoints: batch 3 of epoch 2
KILL_AFTER = 7

SCRIPT = """
import os, signal, sys
import torch
torch.set_num_threads(1)
import ase_mlmd.train.loop as loop
from ase_mlmd.train import TrainConfig, train

saved = loop.save_train_checkpoint
count = 0

def save_then_maybe_die(path, data):
    global count
    saved(path, data)
    count += 1
    if count == {kill_after}:
        os.kill(os.getpid(), signal.SIGKILL)

loop.save_train_checkpoint = save_then_maybe_die
train(sys.argv[1], TrainConfig(**{config!r}), sys.argv[2], progress=False)
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "argon.extxyz"
    write(path, lj_clusters(12, seed=7))
    return path


def test_killed_run_resumes_bit_identically(dataset, tmp_path):
    killed = tmp_path / "killed"
    script = SCRIPT.format(kill_after=KILL_AFTER, config=CONFIG)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(dataset), str(killed)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    # killed mid-epoch: a checkpoint, no card, no weights
    state = load_train_checkpoint(killed / "checkpoint.pt")
    assert (state["epoch"], state["batch"]) == (1, 3)  # 4 batches per epoch
    assert not (killed / "card.toml").exists()
    assert not list(killed.glob("*.safetensors"))
    with pytest.raises(ModelFileError):
        load_calculator(killed / "card.toml")

    resumed = train(dataset, TrainConfig(**CONFIG), killed, progress=False)
    straight = train(dataset, TrainConfig(**CONFIG), tmp_path / "straight", progress=False)
    assert resumed.epochs == straight.epochs == 3
    a, b = resumed.model.state_dict(), straight.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.test_force_mae_mev_per_angstrom == straight.test_force_mae_mev_per_angstrom
    assert resumed.test_energy_mae_mev == straight.test_energy_mae_mev
    log_a = (killed / "train_log.csv").read_text().splitlines()
    log_b = (tmp_path / "straight" / "train_log.csv").read_text().splitlines()
    assert _without_wall_time(log_a) == _without_wall_time(log_b)
    card = tomllib.loads((killed / "card.toml").read_text())
    assert card["provenance"]["epochs"] == 3
    load_calculator(killed / "card.toml")

    # the same folder with other settings: refused, naming the file and the setting
    with pytest.raises(CheckpointMismatchError) as info:
        train(dataset, TrainConfig(**{**CONFIG, "lr": 1e-3}), killed, progress=False)
    message = str(info.value)
    assert str(killed / "checkpoint.pt") in message and "lr" in message
    with pytest.raises(CheckpointMismatchError, match="model"):
        train(dataset, TrainConfig(**{**CONFIG, "model": "schnet"}), killed, progress=False)
    # a longer run continues the finished one (max_epochs may change on resumption)
    longer = train(dataset, TrainConfig(**{**CONFIG, "max_epochs": 4}), killed, progress=False)
    assert longer.epochs == 4
    assert len((killed / "train_log.csv").read_text().splitlines()) == 1 + 4
    # resume=False starts afresh with any settings
    fresh = train(
        dataset, TrainConfig(**{**CONFIG, "max_epochs": 1}), killed, resume=False, progress=False
    )
    assert fresh.epochs == 1
    assert tomllib.loads((killed / "card.toml").read_text())["provenance"]["epochs"] == 1


def _without_wall_time(rows: list[str]) -> list[str]:
    """CSV rows with the second column (wall time) removed."""
    return [",".join(r.split(",")[:1] + r.split(",")[2:]) for r in rows]
