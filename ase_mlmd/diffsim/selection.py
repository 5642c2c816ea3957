"""Which iterate a fit ends on: the best one by a held-out production RDF error, with back-off
when the fit diverges.

A gradient fit (BPTT, reweighting) can lower its training loss while the structure it produces
drifts away from the target: one window's loss is noisy, and on a target it does not suit the
fit may wander into a solid-like g(r) (issue 18: loss 0.147 → 0.033 by epoch 61, then 0.23 at
the end, and the card held the end). So the fit is scored on something it does not train on:

* :func:`heldout_error` runs a short production simulation of the current parameters — a fresh
  FCC start with its own seed, ``heldout_equilibration`` steps, then ``heldout_steps`` steps
  sampled every ``sample_every`` — and returns the mean ``rdf_dev`` over the RDF channels. It is
  a deterministic function of the parameters (on CPU), so the kept card reproduces its recorded
  error exactly, and every iterate is scored from the same start (common random numbers);
* :class:`BestIterate` keeps the iterate with the lowest error and what it takes to restore it
  (Newton keeps its best knot values with it too);
* :class:`DivergenceRule` says when the fit has diverged: the held-out run exploded, or its
  error stayed above ``divergence_factor`` × the best for ``divergence_patience`` evaluations
  in a row;
* :class:`IterateKeeper` puts them together for an Adam fit: it scores the start, every
  ``heldout_every`` optimizer steps and the last step; on divergence it restores the best
  parameters, optimizer state and MD state (:class:`~ase_mlmd.diffsim.recovery.Snapshot`) and
  multiplies the learning rate by ``lr_factor``, stopping when that falls below ``min_lr``; at
  the end it restores the best iterate, which is what the card holds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ase_mlmd.diffsim.config import FitConfig
from ase_mlmd.diffsim.engine import Engine
from ase_mlmd.diffsim.losses import rdf_dev
from ase_mlmd.diffsim.recovery import Snapshot
from ase_mlmd.diffsim.systems import ThermoState
from ase_mlmd.diffsim.tabulate import spline_table
from ase_mlmd.md.state import MDState

#: the held-out runs start from the FCC lattice with velocities of seed ``engine.seed`` + this
HELDOUT_SEED_OFFSET = 1000
#: steps between explosion checks of a held-out run
CHECK_EVERY = 50
#: the criterion of the gradient fits, as reports name it
HELDOUT_CRITERION = "held-out production rdf_dev (mean over RDF channels)"


def heldout_error(
    potential: torch.nn.Module, states: Sequence[ThermoState], config: FitConfig
) -> tuple[float, list[float]]:
    """Held-out production RDF error of ``potential`` at ``states``.

    A fresh FCC start (seed ``config.engine.seed + HELDOUT_SEED_OFFSET``), then
    ``config.heldout_equilibration`` steps and ``config.heldout_steps`` sampled steps (a frame
    every ``config.sample_every``) of the potential's spline table.

    Returns:
        (mean rdf_dev over the RDF channels, rdf_dev per channel); (inf, [inf, ...]) when the
        run explodes (NaN, runaway temperature).
    """
    with torch.no_grad():
        model = spline_table(potential, config.table_spacing)
    engine_config = dataclasses.replace(
        config.engine, seed=config.engine.seed + HELDOUT_SEED_OFFSET
    )
    engine = Engine(model, states, engine_config)
    exploded = (math.inf, [math.inf] * len(engine.channels))
    state = engine.initial_state()
    left = config.heldout_equilibration
    while left > 0:
        state = engine.run(state, min(CHECK_EVERY, left))
        left -= CHECK_EVERY
        if engine.instability(state) is not None:
            return exploded
    state, gs, _ = engine.sample_rdf(state, config.heldout_steps, config.sample_every)
    if engine.instability(state) is not None:
        return exploded
    devs = [rdf_dev(g, c.target.g) for g, c in zip(gs, engine.channels, strict=True)]
    if not all(math.isfinite(d) for d in devs):
        return exploded
    return float(np.mean(devs)), devs


class BestIterate:
    """The iterate with the lowest error so far, and what it takes to restore it.

    Args:
        criterion: what the error is (for reports).
    """

    def __init__(self, criterion: str) -> None:
        self.criterion = criterion
        self.epoch: int | None = None
        self.error = math.inf
        self.payload: Any = None
        #: (epoch, error) of every evaluation, in order
        self.evaluations: list[tuple[int, float]] = []

    def offer(self, epoch: int, error: float, take: Callable[[], Any]) -> bool:
        """Record the error of iterate ``epoch``; if it is the lowest (finite) so far, keep
        ``take()`` (a copy of what restores it). Returns whether it is the new best."""
        self.evaluations.append((int(epoch), float(error)))
        if math.isfinite(error) and error < self.error:
            self.epoch, self.error, self.payload = int(epoch), float(error), take()
            return True
        return False

    def summary(self) -> dict[str, Any]:
        """Which iterate is kept and why: criterion, kept epoch and its error, the number of
        evaluations, every (epoch, error), and the last evaluated epoch and its error."""
        last_epoch, last_error = self.evaluations[-1] if self.evaluations else (None, None)
        return {
            "criterion": self.criterion,
            "kept_epoch": self.epoch,
            "kept_error": _finite_or_none(self.error),
            "evaluations": len(self.evaluations),
            "errors": [[epoch, _finite_or_none(error)] for epoch, error in self.evaluations],
            "last_epoch": last_epoch,
            "last_error": _finite_or_none(last_error),
        }


def _finite_or_none(value: float | None) -> float | None:
    """``value``, or None for a missing or non-finite one (an exploded run; strict JSON)."""
    return value if value is not None and math.isfinite(value) else None


class DivergenceRule:
    """When a fit has diverged from its best iterate.

    Args:
        factor: an evaluation counts against the fit when its error exceeds factor × the best.
        patience: that many such evaluations in a row mean divergence.
    """

    def __init__(self, factor: float, patience: int) -> None:
        self.factor = float(factor)
        self.patience = int(patience)
        self.count = 0

    def reset(self) -> None:
        """Forget the evaluations against the fit (after a new best, or after a back-off)."""
        self.count = 0

    def __call__(self, error: float, best: float) -> str | None:
        """Why the fit has diverged after an evaluation with ``error`` (best so far ``best``),
        or None. A non-finite error (the held-out run exploded) diverges at once."""
        if not math.isfinite(error):
            self.reset()
            return "the held-out run exploded"
        self.count = self.count + 1 if error > self.factor * best else 0
        if self.count >= self.patience:
            self.reset()
            return (
                f"held-out error above {self.factor:g}× the best ({best:.4g}) for "
                f"{self.patience} evaluation{'s' if self.patience > 1 else ''} in a row"
            )
        return None


@dataclasses.dataclass
class Verdict:
    """What an evaluation means for the fit loop.

    Attributes:
        columns: history columns of this step (the held-out error when evaluated, back-offs).
        backed_off: the parameters were restored to the best iterate: continue from ``state``.
        stop: the learning rate fell below ``min_lr`` after a back-off.
        state: the MD state to continue from after a back-off (None: keep the current one).
    """

    columns: dict[str, float] = dataclasses.field(default_factory=dict)
    backed_off: bool = False
    stop: bool = False
    state: MDState | None = None


class IterateKeeper:
    """Keeps the best iterate of an Adam fit by :func:`heldout_error` and backs off when the
    fit diverges (see the module docstring).

    Args:
        potential: the potential being fitted (its parameters are what is restored).
        optimizer: its optimizer (state restored, learning rate lowered on back-off).
        states: the fit's states (the held-out runs simulate them).
        config: ``heldout_*``, ``divergence_*``, ``lr_factor``, ``min_lr``.
        note: where messages go (the fit's log).
        evaluate: the error of the current parameters, ``f(potential, states, config) ->
            (error, per-channel errors)`` (default :func:`heldout_error`).
    """

    def __init__(
        self,
        potential: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        states: Sequence[ThermoState],
        config: FitConfig,
        note: Callable[[str], None],
        evaluate: Callable[..., tuple[float, list[float]]] = heldout_error,
    ) -> None:
        self.potential = potential
        self.optimizer = optimizer
        self.states = list(states)
        self.config = config
        self.note = note
        self.evaluate = evaluate
        self.best = BestIterate(HELDOUT_CRITERION)
        self.rule = DivergenceRule(config.divergence_factor, config.divergence_patience)
        self.backoffs = 0
        self.enabled = config.heldout_every > 0

    def start(self, state: MDState | None) -> None:
        """Score the starting parameters (epoch 0; in :attr:`BestIterate.evaluations`, not in
        the fit's history)."""
        self.after_step(0, False, state)

    def after_step(self, epoch: int, last: bool, state: MDState | None) -> Verdict:
        """After optimizer step ``epoch`` (``last``: the fit stops after it; ``state``: the
        fit's MD state now): evaluate when due, keep a new best, back off on divergence."""
        every = self.config.heldout_every
        if not self.enabled or (epoch % every != 0 and not last):
            return Verdict()
        error, _ = self.evaluate(self.potential, self.states, self.config)
        verdict = Verdict({"heldout_rdf_dev": error, "backoffs": float(self.backoffs)})
        take = lambda: Snapshot.take(self.potential, self.optimizer, state)  # noqa: E731
        if self.best.offer(epoch, error, take):
            self.rule.reset()
            return verdict
        reason = self.rule(error, self.best.error)
        if reason is None or last or self.best.payload is None:
            return verdict
        return self.back_off(epoch, reason, verdict)

    def back_off(self, epoch: int, reason: str, verdict: Verdict) -> Verdict:
        """Restore the best iterate (parameters, optimizer state, MD state), lower the learning
        rate by ``lr_factor``; stop when it falls below ``min_lr``."""
        snapshot: Snapshot = self.best.payload
        lr = snapshot.restore(self.potential, self.optimizer, self.config.lr_factor)[0]
        self.backoffs += 1
        verdict.columns["backoffs"] = float(self.backoffs)
        verdict.backed_off = True
        verdict.state = None if snapshot.state is None else snapshot.state.clone()
        verdict.stop = lr < self.config.min_lr
        then = "stopped" if verdict.stop else "continues"
        self.note(
            f"epoch {epoch}: the fit diverged ({reason}); back-off {self.backoffs}: restored "
            f"epoch {self.best.epoch} and lowered the learning rate to {lr:.3g}; the fit {then}"
        )
        return verdict

    def finish(self, state: MDState | None) -> tuple[MDState | None, dict[str, Any]]:
        """Put the best iterate back into the potential (and optimizer). Returns (the MD state
        to continue from: the one saved with the best iterate, else ``state``; the selection
        summary for :attr:`FitResult.selection`, empty when disabled)."""
        if not self.enabled or self.best.payload is None:
            return state, {}
        snapshot: Snapshot = self.best.payload
        snapshot.restore(self.potential, self.optimizer)
        summary = self.best.summary()
        summary.update(
            backoffs=self.backoffs,
            heldout_every=self.config.heldout_every,
            heldout_steps=self.config.heldout_steps,
        )
        summary["reason"] = selection_reason(summary)
        self.note(f"kept {summary['reason']}")
        kept = snapshot.state.clone() if snapshot.state is not None else state
        return kept, summary


def selection_reason(summary: dict[str, Any], unit: str = "epoch") -> str:
    """One line on which iterate a fit kept and why, from a :meth:`BestIterate.summary`
    (plus ``backoffs``, ``heldout_every``, ``heldout_steps`` when present)."""
    text = (
        f"{unit} {summary['kept_epoch']}: the lowest {summary['criterion']} "
        f"({_number(summary['kept_error'])}) of {summary['evaluations']} evaluations"
    )
    if "heldout_every" in summary:
        every, steps = summary["heldout_every"], summary["heldout_steps"]
        text += f" (every {every} epochs, {steps} steps each)"
    if summary["last_epoch"] is not None and summary["last_epoch"] != summary["kept_epoch"]:
        last = _number(summary["last_error"])
        text += f"; the last evaluated, {unit} {summary['last_epoch']}, had {last}"
    if summary.get("backoffs"):
        text += f"; {summary['backoffs']} back-off(s) after divergence"
    return text


def _number(value: float | None) -> str:
    return "an exploded run" if value is None else f"{value:.4g}"
