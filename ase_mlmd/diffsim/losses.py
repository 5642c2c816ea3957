"""DiffSim losses and the evaluation metric (METRICS.md §2).

* loss of one state = ``rdf_weight`` · MSE(g_sim − g_target) + ``vacf_weight`` · MSE(c_sim −
  c_target) (defaults 0.95 and 0, as the paper's LJ fits); a multi-state loss sums the states;
* ``rdf_dev`` = mean |g_sim − g_target| over the grid, with g_sim averaged over production
  frames (the number reported against the noise floor).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


@dataclasses.dataclass
class LossWeights:
    """Weights of the loss terms."""

    rdf: float = 0.95
    vacf: float = 0.0


def rdf_mse(g_sim: torch.Tensor, g_target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of two RDFs on the same grid."""
    if g_sim.shape != g_target.shape:
        raise ValueError(f"RDF shapes differ: {tuple(g_sim.shape)} vs {tuple(g_target.shape)}")
    return (g_sim - g_target).square().mean()


def vacf_mse(c_sim: torch.Tensor, c_target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of two VACFs over their common lags."""
    n = min(len(c_sim), len(c_target))
    return (c_sim[:n] - c_target[:n]).square().mean()


def rdf_dev(g_sim: np.ndarray | torch.Tensor, g_target: np.ndarray | torch.Tensor) -> float:
    """Mean |g_sim − g_target| over the grid (METRICS.md §2 ``rdf_dev``)."""
    a = g_sim.detach().cpu().numpy() if isinstance(g_sim, torch.Tensor) else np.asarray(g_sim)
    b = (
        g_target.detach().cpu().numpy()
        if isinstance(g_target, torch.Tensor)
        else np.asarray(g_target)
    )
    return float(np.abs(a - b).mean())


def channel_errors(channels: Sequence[Any], gs: Sequence[torch.Tensor]) -> tuple[float, dict]:
    """Σ MSE(g − g*) over RDF channels (objects with ``name`` and ``target``, e.g.
    :class:`~ase_mlmd.diffsim.engine.RDFChannel`) and their ``rdf_dev`` as history columns
    ``rdf_dev[name]``; ``gs``: the sampled g of each channel."""
    mse, devs = 0.0, {}
    for c, g in zip(channels, gs, strict=True):
        mse += float(rdf_mse(g, c.target.g_tensor()))
        devs[f"rdf_dev[{c.name}]"] = rdf_dev(g, c.target.g)
    return mse, devs
