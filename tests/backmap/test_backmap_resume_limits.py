"""CGVAE training after it finished: the same call again trains no further; a larger
``max_epochs`` (or ``max_time``) trains on from the checkpoint and continues exactly the
uninterrupted run's trajectory; checkpoints written without stored limits keep their stop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.io import read

from ase_mlmd.backmap.cgvae import CGVAEHyper
from ase_mlmd.backmap.train import BackmapTrainConfig, train_backmapper
from ase_mlmd.cg.builders import girvan_newman
from ase_mlmd.train.checkpoint import load_train_checkpoint, save_train_checkpoint

DATA = Path(__file__).parents[2] / "benchmarks" / "cg_data" / "ala2_aa_200.extxyz"


def _config(epochs: int) -> BackmapTrainConfig:
    hyper = CGVAEHyper(features=8, latent=2, encoder_layers=1, prior_layers=1, decoder_layers=1)
    return BackmapTrainConfig(hyper=hyper, split=(12, 4, 4), max_epochs=epochs, batch_size=4,
                              seed=3)  # fmt: skip


def _weights(result) -> np.ndarray:
    return torch.cat([p.detach().flatten() for p in result.backmapper.model.parameters()]).numpy()


def test_raised_limit_trains_on_same_limit_does_not(tmp_path):
    torch.set_num_threads(1)
    frames = read(DATA, ":20")
    mapping = girvan_newman(frames[0], 4)
    run = lambda folder, epochs: train_backmapper(frames, mapping, folder, _config(epochs),  # noqa: E731
                                                  progress=False)  # fmt: skip
    first = run(tmp_path / "a", 2)
    assert (first.epochs, first.stop_reason) == (2, "max_epochs")
    again = run(tmp_path / "a", 2)  # the same call: finished, no further training
    assert again.epochs == 2 and np.array_equal(_weights(again), _weights(first))
    longer = run(tmp_path / "a", 4)  # a raised limit: trains on to 4 epochs
    straight = run(tmp_path / "b", 4)  # one uninterrupted 4-epoch run
    assert longer.epochs == straight.epochs == 4
    assert np.allclose(_weights(longer), _weights(straight), atol=1e-6)
    # a checkpoint from before limits were stored: the stop holds unless the run is below it
    checkpoint = tmp_path / "b" / "checkpoint.pt"
    data = load_train_checkpoint(checkpoint)
    data.pop("limits")
    save_train_checkpoint(checkpoint, {k: v for k, v in data.items() if k != "format"})
    assert run(tmp_path / "b", 4).epochs == 4
    assert run(tmp_path / "b", 5).epochs == 5
