"""Settings and results shared by the DiffSim gradient methods (plain dataclasses)."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ase_mlmd.diffsim.engine import EngineConfig
from ase_mlmd.diffsim.losses import LossWeights

METHODS = ("bptt", "reweighting", "newton", "ibi")


@dataclasses.dataclass
class FitConfig:
    """Settings of a fit. Units: reduced LJ units (= ASE units with σ = 1 Å, ε = 1 eV, m = 1 amu);
    lengths of runs in MD steps.

    Optimization (``bptt`` and ``reweighting``): Adam with learning rate ``lr``;
    ReduceLROnPlateau(``lr_factor``, ``patience``) on the loss; stop after ``epochs`` optimizer
    steps, when the learning rate falls to ``min_lr``, or after ``time_limit`` seconds.
    Deliberate difference from the paper: the scheduler sees the mean loss of the last
    ``plateau_window`` steps (default 10), not each window's loss. A single window's loss is
    noisy, so the paper's scheduler halves the rate every ~2 patience periods whether or not the
    fit still improves (measured: 2e-3 → 1e-5 within 300 epochs while the loss kept falling);
    ``plateau_window=1`` restores the original behaviour.

    Attributes:
        window: steps per BPTT window τ (the state is carried across windows).
        rdf_every: a frame for the RDF every this many steps (BPTT window and production).
        checkpoint_every: gradient checkpointing inside a BPTT window (None: keep the graph).
        weights: loss weights (RDF, VACF).
        max_failures: explosions in a row before the fit gives up (each one restores the last
            good parameters and halves the learning rate).
        sample_every: a frame every this many steps in sampling runs (reweighting reference
            runs, IBI iterations, production).
        rw_frames: reweighting: frames stored per reference simulation.
        rw_equilibration: steps run before a new reference simulation is sampled.
        ess_threshold: re-simulate when the effective sample size (entropy form) falls below
            this fraction of the stored frames.
        ibi_alpha, ibi_iterations, ibi_steps: IBI mixing factor, iterations, sampling steps per
            iteration.
        newton_iterations, newton_frames: Gauss–Newton (inverse Monte Carlo) iterations and
            frames sampled per iteration (one every ``sample_every`` steps).
        newton_knot_bins: knot spacing of the Gauss–Newton correction, in target RDF bins.
        newton_regularization: weight λ of the second-difference penalty on each step.
        newton_damping: fraction of the solved step that is taken.
        newton_max_step: trust region: largest change of a knot value per iteration, in k_B T.
        heldout_every: BPTT and reweighting keep their best iterate (:mod:`ase_mlmd.diffsim.
            selection`): a held-out production run scores the parameters at the start, every
            this many optimizer steps and at the last; 0 keeps the last iterate instead.
        heldout_steps: sampled steps of each held-out run (a frame every ``sample_every``).
        heldout_equilibration: steps from the FCC start before a held-out run is sampled.
        divergence_factor, divergence_patience: the fit has diverged when the held-out error
            exceeds ``divergence_factor`` × the best for ``divergence_patience`` evaluations in
            a row (or the held-out run explodes); it then backs off: restores the best
            parameters and optimizer state and multiplies the learning rate by ``lr_factor``,
            and stops when that falls below ``min_lr``.
        production_steps: steps of the final (evaluation) run; its RDF gives ``rdf_dev``.
        table_spacing: knot spacing of the spline the engine runs (see
            :mod:`ase_mlmd.diffsim.tabulate`), Å.
        callback: ``f(epoch, potential)`` after each optimizer step (monitoring, tests).
    """

    method: str = "bptt"
    epochs: int = 300
    lr: float = 2e-3
    lr_factor: float = 0.5
    patience: int = 20
    min_lr: float = 1e-5
    plateau_window: int = 10
    time_limit: float | None = None
    window: int = 120
    rdf_every: int = 5
    checkpoint_every: int | None = None
    weights: LossWeights = dataclasses.field(default_factory=LossWeights)
    max_failures: int = 5
    rw_frames: int = 100
    sample_every: int = 10
    rw_equilibration: int = 200
    ess_threshold: float = 0.9
    ibi_alpha: float = 0.2
    ibi_iterations: int = 20
    ibi_steps: int = 2000
    newton_iterations: int = 8
    newton_frames: int = 1000
    newton_knot_bins: int = 2
    newton_regularization: float = 1e-4
    newton_damping: float = 1.0
    newton_max_step: float = 0.3
    heldout_every: int = 10
    heldout_steps: int = 1000
    heldout_equilibration: int = 300
    divergence_factor: float = 2.0
    divergence_patience: int = 2
    production_steps: int = 5000
    table_spacing: float = 0.002
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)
    callback: Callable[[int, Any], None] | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        positive = {
            "epochs": self.epochs,
            "window": self.window,
            "rdf_every": self.rdf_every,
            "rw_frames": self.rw_frames,
            "sample_every": self.sample_every,
            "plateau_window": self.plateau_window,
            "ibi_steps": self.ibi_steps,
            "ibi_iterations": self.ibi_iterations,
            "newton_iterations": self.newton_iterations,
            "newton_frames": self.newton_frames,
            "newton_knot_bins": self.newton_knot_bins,
        }
        bad = {k: v for k, v in positive.items() if not (isinstance(v, int) and v >= 1)}
        if bad:
            raise ValueError(f"these settings must be integers >= 1: {bad}")
        for name, ok, rule in (
            ("lr", self.lr > 0, "> 0"),
            ("lr_factor", 0 < self.lr_factor < 1, "in (0, 1)"),
            ("ess_threshold", 0 < self.ess_threshold <= 1, "in (0, 1]"),
        ):
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)!r}")
        if not (
            self.newton_regularization >= 0
            and 0 < self.newton_damping <= 1
            and self.newton_max_step > 0
        ):
            raise ValueError(
                "need newton_regularization >= 0, 0 < newton_damping <= 1, newton_max_step > 0"
            )
        if not (
            isinstance(self.heldout_every, int)
            and self.heldout_every >= 0
            and isinstance(self.heldout_equilibration, int)
            and self.heldout_equilibration >= 0
            and isinstance(self.heldout_steps, int)
            and self.heldout_steps >= self.sample_every
            and isinstance(self.divergence_patience, int)
            and self.divergence_patience >= 1
            and self.divergence_factor > 1
        ):
            raise ValueError(
                "need integers heldout_every >= 0, heldout_equilibration >= 0, heldout_steps >= "
                f"sample_every ({self.sample_every}), divergence_patience >= 1 and "
                f"divergence_factor > 1; got {self.heldout_every}, {self.heldout_equilibration}, "
                f"{self.heldout_steps}, {self.divergence_patience}, {self.divergence_factor}"
            )
        if self.rdf_every > self.window:
            raise ValueError(f"rdf_every ({self.rdf_every}) exceeds the window ({self.window})")


class PlateauLoss:
    """The value a fit's LR scheduler sees: the mean of the last ``window`` losses."""

    def __init__(self, window: int) -> None:
        self.window = int(window)
        self.values: list[float] = []

    def __call__(self, loss: float) -> float:
        self.values = [*self.values[-(self.window - 1) :], loss] if self.window > 1 else [loss]
        return sum(self.values) / len(self.values)


@dataclasses.dataclass
class FitResult:
    """What a fit returns.

    Attributes:
        method: "bptt", "reweighting", "newton" or "ibi".
        potential: the fitted pair potential (last good parameters).
        history: one dict per optimizer step / IBI iteration (epoch, loss, lr, wall time, ...).
        states: names of the RDF channels: the state points, or ``state[A-B]`` for each
            partial RDF of a mixture state.
        r: per channel, the RDF grid, Å. g_target: per channel, the target.
        g_final: per channel, the production RDF of the fitted potential.
        rdf_dev: per channel, mean |g_final − g_target|.
        wall_time: seconds spent fitting (production run excluded).
        messages: what happened besides the optimization (recoveries, re-simulations).
        final_state: the MD state at the end of the fit (a production run continues from it;
            with a kept best iterate, the MD state saved with it).
        selection: which iterate the potential is and why
            (:meth:`~ase_mlmd.diffsim.selection.BestIterate.summary`; empty when the last
            iterate is kept).
    """

    method: str
    potential: Any
    history: list[dict[str, float]]
    states: list[str]
    r: list[np.ndarray]
    g_target: list[np.ndarray]
    g_final: list[np.ndarray] = dataclasses.field(default_factory=list)
    rdf_dev: list[float] = dataclasses.field(default_factory=list)
    wall_time: float = math.nan
    messages: list[str] = dataclasses.field(default_factory=list)
    final_state: Any = None
    selection: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def of_channels(
        cls,
        method: str,
        potential: Any,
        history: list,
        channels: Sequence[Any],
        started: float,
        messages: list[str],
        final_state: Any,
    ) -> FitResult:
        """The result of a fit to the RDF ``channels`` (:class:`~ase_mlmd.diffsim.engine.
        RDFChannel`) that started at ``started`` (``time.perf_counter()``); ``final_state`` is
        detached here."""
        return cls(
            method=method,
            potential=potential,
            history=history,
            states=[c.name for c in channels],
            r=[c.target.r for c in channels],
            g_target=[c.target.g for c in channels],
            wall_time=time.perf_counter() - started,
            messages=messages,
            final_state=None if final_state is None else final_state.detach(),
        )
