"""CGVAE training clips the gradient norm before each Adam step (``grad_clip``), and a run
checkpointed with one setting resumes under another (the clip is not part of the run's
identity); a non-positive clip is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ase.io import read

from ase_mlmd.backmap.cgvae import CGVAEHyper
from ase_mlmd.backmap.train import BackmapTrainConfig, train_backmapper
from ase_mlmd.cg.builders import girvan_newman

DATA = Path(__file__).parents[2] / "benchmarks" / "cg_data" / "ala2_aa_200.extxyz"


def _config(epochs: int, grad_clip: float | None) -> BackmapTrainConfig:
    hyper = CGVAEHyper(features=8, latent=2, encoder_layers=1, prior_layers=1, decoder_layers=1,
                       delta=1.0, sample_terms=True)  # fmt: skip
    return BackmapTrainConfig(hyper=hyper, split=(12, 4, 4), max_epochs=epochs, batch_size=4,
                              seed=3, grad_clip=grad_clip)  # fmt: skip


@pytest.fixture
def norms_at_step(monkeypatch):
    """The total gradient norm each Adam step sees."""
    seen: list[float] = []
    step = torch.optim.Adam.step

    def recording(self, *args, **kwargs):
        grads = [p.grad.flatten() for g in self.param_groups for p in g["params"]
                 if p.grad is not None]  # fmt: skip
        seen.append(float(torch.cat(grads).norm()))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording)
    return seen


def test_gradient_norm_is_clipped_before_each_step(tmp_path, norms_at_step):
    torch.set_num_threads(1)
    frames = read(DATA, ":20")
    mapping = girvan_newman(frames[0], 4)
    train_backmapper(frames, mapping, tmp_path / "free", _config(1, None), progress=False)
    free = list(norms_at_step)
    assert len(free) == 3 and min(free) > 1e-3  # 12 frames / batch 4; raw norms are larger
    norms_at_step.clear()
    train_backmapper(frames, mapping, tmp_path / "clip", _config(2, 1e-3), progress=False)
    assert len(norms_at_step) == 6
    assert max(norms_at_step) <= 1e-3 * (1 + 1e-4)
    # resumed from that checkpoint with another clip: accepted, trains on to 3 epochs
    more = train_backmapper(frames, mapping, tmp_path / "clip", _config(3, 10.0), progress=False)
    assert more.epochs == 3


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_clip_refused(bad):
    with pytest.raises(ValueError, match="grad_clip"):
        BackmapTrainConfig(grad_clip=bad)
