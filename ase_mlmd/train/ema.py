"""Exponential moving average of a model's weights.

After every optimisation step the averaged copy moves towards the trained weights::

    shadow <- d * shadow + (1 - d) * weights,    d = min(decay, (1 + n) / (10 + n))

where ``n`` counts the updates so far; the warm-up ``(1 + n) / (10 + n)`` (as in torch-ema and
TensorFlow's ExponentialMovingAverage) keeps the random initial weights from lingering in the
average during the first steps. Buffers (fixed energy shifts, ...) are copied as they are.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


class ExponentialMovingAverage:
    """An averaged copy of ``model`` (a separate module, in eval mode, without gradients).

    Args:
        model: the module being trained; its parameters are averaged.
        decay: the target decay ``d`` in [0, 1); 0 copies the weights.

    Attributes:
        model: the averaged module, usable like the original (same class and architecture).
        num_updates: number of :meth:`update` calls so far.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.num_updates = 0

    def current_decay(self) -> float:
        """The decay the next :meth:`update` uses (warm-up included)."""
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards ``model``'s current parameters; copy its buffers."""
        weight = 1.0 - self.current_decay()
        for shadow, param in zip(self.model.parameters(), model.parameters(), strict=True):
            shadow.lerp_(param.detach(), weight)
        for shadow, buffer in zip(self.model.buffers(), model.buffers(), strict=True):
            shadow.copy_(buffer)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
