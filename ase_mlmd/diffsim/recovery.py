"""Recovery from a simulation that explodes in the middle of a fit.

Before every optimizer step the fit hands the guard the parameters that just gave a stable
window (and the optimizer state and MD state that go with them). When a later window explodes
(NaN, runaway temperature) or its loss or gradient is not finite, :meth:`ParameterGuard.recover`
puts those parameters back, halves the learning rate and says so in the log; after
``max_failures`` explosions in a row it gives up with :class:`SimulationUnstableError`, leaving
the last good parameters in the model, so no NaN weights are ever written.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable

import torch

from ase_mlmd.errors import SimulationUnstableError
from ase_mlmd.md.state import MDState


class ParameterGuard:
    """Keeps the last good (parameters, optimizer state, MD state) of a fit.

    Args:
        model: the potential being fitted.
        optimizer: its optimizer (the learning rate of every group is halved on recovery).
        max_failures: explosions in a row before giving up.
        log: where messages go (e.g. ``print`` or a list's ``append``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        max_failures: int,
        log: Callable[[str], None],
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.max_failures = int(max_failures)
        self.log = log
        self.failures = 0
        self.recoveries = 0
        self._good = Snapshot.take(model, optimizer)

    @property
    def state(self) -> MDState | None:
        """The MD state saved with the last good parameters."""
        return self._good.state

    def save(self, state: MDState | None = None) -> None:
        """Remember the current parameters and optimizer state (and ``state``) as good."""
        self._good = Snapshot.take(
            self.model, self.optimizer, self._good.state if state is None else state
        )

    def succeeded(self) -> None:
        """A window went fine: reset the count of explosions in a row."""
        self.failures = 0

    def recover(self, reason: str, epoch: int) -> MDState | None:
        """Restore the last good parameters and state, halve the learning rate; return the
        state to continue from.

        Raises:
            SimulationUnstableError: after ``max_failures`` explosions in a row (the last good
                parameters are in the model).
        """
        self.failures += 1
        self.recoveries += 1
        new_lr = self._good.restore(self.model, self.optimizer, lr_factor=0.5)
        if self.failures > self.max_failures:
            message = (
                f"epoch {epoch}: {reason}; gave up after {self.max_failures} explosions in a row "
                "(the model holds the last good parameters). Try a smaller learning rate, a "
                "smaller time step or a stronger repulsive prior"
            )
            self.log(message)
            raise SimulationUnstableError(message)
        self.log(
            f"epoch {epoch}: simulation exploded ({reason}); restored the last good parameters "
            f"and halved the learning rate to {new_lr[0]:.3g}"
        )
        return None if self.state is None else self.state.clone()


@dataclasses.dataclass
class Snapshot:
    """Parameters, optimizer state and MD state of a fit at one moment (deep copies): what the
    guard restores after an explosion and what a fit keeps of its best iterate
    (:mod:`ase_mlmd.diffsim.selection`)."""

    params: dict
    optim: dict
    state: MDState | None = None

    @classmethod
    def take(
        cls,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        state: MDState | None = None,
    ) -> Snapshot:
        """Copy the current parameters and optimizer state, and ``state`` (detached)."""
        return cls(
            copy.deepcopy(model.state_dict()),
            copy.deepcopy(optimizer.state_dict()),
            None if state is None else state.detach().clone(),
        )

    def restore(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, lr_factor: float = 1.0
    ) -> list[float]:
        """Put the parameters and the optimizer state back; the learning rate of every group
        becomes ``lr_factor`` × the one it had just before (not the saved one, which may be
        higher). Returns the new learning rates."""
        lr = [group["lr"] for group in optimizer.param_groups]
        model.load_state_dict(self.params)
        # a copy: the optimizer keeps the loaded tensors and updates them in place, which would
        # change this snapshot for the next restore
        optimizer.load_state_dict(copy.deepcopy(self.optim))
        new_lr = [lr_factor * x for x in lr]
        for group, value in zip(optimizer.param_groups, new_lr, strict=True):
            group["lr"] = value
        return new_lr


def finite_gradients(model: torch.nn.Module) -> bool:
    """True when no parameter gradient of ``model`` holds NaN or inf."""
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters())


@dataclasses.dataclass
class GradientFitStart:
    """What a gradient-based fit (BPTT, reweighting) starts from: Adam with ReduceLROnPlateau
    on a smoothed loss, the log of messages, the guard, and the equilibrated MD state."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    plateau: Callable[[float], float]
    messages: list[str]
    note: Callable[[str], None]
    guard: ParameterGuard
    state: MDState
    started: float

    def after_step(self, loss: float, epoch: int, config) -> tuple[float, float, bool]:
        """Feed the scheduler the smoothed loss after optimizer step ``epoch``; return
        (learning rate, seconds since the start, whether the fit stops here: time limit,
        learning rate down to ``config.min_lr`` — both noted in the log — or ``config.epochs``
        steps done)."""
        self.scheduler.step(self.plateau(loss))
        lr = self.optimizer.param_groups[0]["lr"]
        elapsed = time.perf_counter() - self.started
        limit = config.time_limit is not None and elapsed > config.time_limit
        converged = lr <= config.min_lr * (1 + 1e-9)
        if limit:
            self.note(f"stopped at epoch {epoch}: time limit of {config.time_limit:g} s")
        elif converged:
            self.note(f"converged at epoch {epoch}: learning rate {lr:.2g} <= {config.min_lr}")
        return lr, elapsed, limit or converged or epoch >= config.epochs


def start_gradient_fit(potential, table, engine, config, log: Callable[[str], None]):
    """Set up the optimizer, scheduler, message log and guard of a fit and equilibrate the
    engine with the initial potential (table without graph).

    Raises:
        SimulationUnstableError: the initial potential is unstable during equilibration.
    """
    from ase_mlmd.diffsim.config import PlateauLoss

    optimizer = torch.optim.Adam(potential.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=config.lr_factor, patience=config.patience
    )
    messages: list[str] = []

    def note(message: str) -> None:
        messages.append(message)
        log(message)

    guard = ParameterGuard(potential, optimizer, config.max_failures, note)
    started = time.perf_counter()
    table.refresh(with_graph=False)
    state = engine.run(engine.initial_state(), config.engine.equilibration)
    reason = engine.instability(state)
    if reason is not None:
        raise SimulationUnstableError(
            f"the initial potential is unstable during equilibration ({reason}); start from a "
            "potential with a stronger repulsive prior or use a smaller time step"
        )
    guard.save(state)
    return GradientFitStart(
        optimizer,
        scheduler,
        PlateauLoss(config.plateau_window),
        messages,
        note,
        guard,
        state,
        started,
    )
