"""Gradient method (a): backpropagation through windows of the MD trajectory (truncated BPTT).

Each epoch runs one window of τ = ``window`` steps of the batched Nosé–Hoover-chain engine with
the autograd graph (through :func:`ase_mlmd.md.differentiable.bptt_windows`: the state is carried
across windows and the graph cut between them), computes each state's RDF over a frame every
``rdf_every`` steps of the window, the loss against the targets, backpropagates it into the
potential's parameters and takes one Adam step — as Wang et al. (2023). Full-trajectory
gradients explode chaotically with length (BENCHMARKS.md, gradient memory), windows do not.
``checkpoint_every`` recomputes the window's graph in chunks during backward (memory
O(τ/k + k) instead of O(τ)).

The engine runs a spline table of the potential (:mod:`ase_mlmd.diffsim.tabulate`); table
gradients are pushed into the potential's parameters once per window.

The fit ends on its best iterate by a held-out production RDF error, and backs off (restores it,
lowers the learning rate) when it diverges: :mod:`ase_mlmd.diffsim.selection`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ase_mlmd.diffsim.config import FitConfig, FitResult
from ase_mlmd.diffsim.engine import Engine
from ase_mlmd.diffsim.losses import rdf_mse, vacf_mse
from ase_mlmd.diffsim.recovery import finite_gradients, start_gradient_fit
from ase_mlmd.diffsim.selection import IterateKeeper
from ase_mlmd.diffsim.systems import ThermoState
from ase_mlmd.diffsim.tabulate import TABLE_R_MIN, make_table
from ase_mlmd.md.differentiable import bptt_windows
from ase_mlmd.md.state import MDState
from ase_mlmd.models.pair import PairPotential
from ase_mlmd.observables.differentiable import compute_vacf_torch


def _positions_and_velocities(state: MDState) -> torch.Tensor:
    return torch.cat([state.positions, state.velocities], dim=1)


class WindowLoss:
    """The loss of one window: Σ_channels w_rdf MSE(g) + Σ_states w_vacf MSE(VACF) (a channel
    is a state's RDF, or one partial RDF of a mixture state)."""

    def __init__(self, engine: Engine, states: Sequence[ThermoState], config: FitConfig) -> None:
        self.engine = engine
        self.states = list(states)
        self.config = config
        self.g_targets = [c.target.g_tensor() for c in engine.channels]
        self.use_vacf = config.weights.vacf > 0 and any(s.vacf is not None for s in self.states)
        self.vacf_targets = [
            None if s.vacf is None else torch.as_tensor(s.vacf.values[: config.window])
            for s in self.states
        ]

    @property
    def observable(self) -> Callable[[MDState], torch.Tensor]:
        if self.use_vacf:
            return _positions_and_velocities
        return lambda state: state.positions

    def __call__(self, values: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, list]:
        """Loss of the window values (τ, N, 3 or 6) and the per-channel RDFs (detached)."""
        every = self.config.rdf_every
        frames = values[every - 1 :: every, :, :3]
        gs = self.engine.rdf(frames, cell)
        loss = values.new_zeros(())
        for g, target in zip(gs, self.g_targets, strict=True):
            loss = loss + self.config.weights.rdf * rdf_mse(g, target)
        if self.use_vacf:
            for sl, target in zip(self.engine.slices, self.vacf_targets, strict=True):
                if target is None:
                    continue
                vacf = compute_vacf_torch(values[:, sl, 3:], len(target))
                loss = loss + self.config.weights.vacf * vacf_mse(vacf, target)
        return loss, [g.detach() for g in gs]


def fit_bptt(
    potential: PairPotential,
    states: Sequence[ThermoState],
    config: FitConfig,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> FitResult:
    """Fit ``potential`` (in place) to the states' target RDFs by truncated BPTT.

    Returns:
        :class:`FitResult` without the production run (:func:`ase_mlmd.diffsim.fit.fit` adds
        it); ``final_state`` is where the MD stopped.

    Raises:
        SimulationUnstableError: the initial potential explodes during equilibration, or the
            fit exploded ``config.max_failures`` times in a row.
    """
    from ase_mlmd.progress import progress_bar

    table = make_table(potential, TABLE_R_MIN, config.table_spacing)
    engine = Engine(table.spline, states, config.engine, differentiable=True)
    window_loss = WindowLoss(engine, states, config)
    start = start_gradient_fit(potential, table, engine, config, log)
    optimizer, guard, state = start.optimizer, start.guard, start.state
    keeper = IterateKeeper(potential, optimizer, states, config, start.note)
    keeper.start(state)
    history: list[dict[str, float]] = []
    epoch = 0
    bar = progress_bar(total=config.epochs, desc="bptt", disable=not progress, leave=False)
    done = False
    while not done and epoch < config.epochs:
        table.refresh(with_graph=True)
        windows = bptt_windows(
            engine.integrator,
            state,
            config.window,
            config.epochs - epoch,
            window_loss.observable,
            forcefield=engine.forcefield,
            checkpoint_every=config.checkpoint_every,
            parameters=table.leaves,
        )
        for window in windows:
            end = window.rollout.state
            reason = engine.instability(end)
            loss = None
            if reason is None:
                loss, gs = window_loss(window.rollout.values, end.cell)
                if not bool(torch.isfinite(loss)):
                    reason = "the loss is not finite"
            if reason is None:
                optimizer.zero_grad()
                loss.backward()
                table.push_gradients()
                if not finite_gradients(potential):
                    reason = "the gradient is not finite"
            if reason is not None:
                state = guard.recover(reason, epoch)
                break
            guard.succeeded()
            guard.save(end)
            optimizer.step()
            epoch += 1
            if config.callback is not None:
                config.callback(epoch, potential)
            table.refresh(with_graph=True)
            value = float(loss.detach())
            lr, elapsed, done = start.after_step(value, epoch, config)
            row = {"epoch": epoch, "loss": value, "lr": lr, "time": elapsed}
            for c, g, target in zip(engine.channels, gs, window_loss.g_targets, strict=True):
                row[f"rdf_mse[{c.name}]"] = float(rdf_mse(g, target))
            verdict = keeper.after_step(epoch, done, end)
            row.update(verdict.columns)
            history.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.2e}", lr=f"{lr:.1e}")
            if verdict.backed_off:  # best parameters restored: continue from their MD state
                state = verdict.state
                guard.save(state)
                done = done or verdict.stop
                break
            if done:
                state = end.detach()
                break
        else:
            state = guard.state
    bar.close()
    state, selection = keeper.finish(state)
    result = FitResult.of_channels(
        "bptt", potential, history, engine.channels, start.started, start.messages, state
    )
    result.selection = selection
    return result
