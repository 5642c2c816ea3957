"""Gradient method (b): reweighting of stored states (DiffTRe; Thaler & Zavadlav 2021).

A reference simulation with parameters θ̂ stores n frames: for each, its RDF g_i (no graph) and
the coefficients B_i that make its potential energy linear in the spline table of the potential,
U_θ(x_i) = B_i · table(θ) (:func:`ase_mlmd.models.spline_pair.hermite_energy_basis`). For nearby
θ the ensemble average is the thermodynamic-perturbation estimate

    ⟨g⟩_θ ≈ Σ_i w_i g_i,  w_i = softmax_i(−β [U_θ(x_i) − U_θ̂(x_i)]),

whose gradient is exactly −β (⟨g ∂U/∂θ⟩ − ⟨g⟩⟨∂U/∂θ⟩) at θ = θ̂. Several optimizer steps reuse the
same frames until the effective sample size N_eff = exp(−Σ w_i ln w_i) falls below
``ess_threshold`` × n; then the engine re-simulates with the current θ (continuing from the last
state). Nothing is backpropagated through the dynamics, so memory depends on the number of
stored frames, not on the length of the trajectory. The fit ends on its best iterate by a
held-out production RDF error and backs off when it diverges (:mod:`ase_mlmd.diffsim.selection`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ase_mlmd.diffsim.config import FitConfig, FitResult
from ase_mlmd.diffsim.engine import Engine
from ase_mlmd.diffsim.losses import rdf_mse
from ase_mlmd.diffsim.recovery import finite_gradients, start_gradient_fit
from ase_mlmd.diffsim.selection import IterateKeeper
from ase_mlmd.diffsim.systems import ThermoState
from ase_mlmd.diffsim.tabulate import TABLE_R_MIN, PairTable, SpeciesPairTable, make_table
from ase_mlmd.md.state import MDState
from ase_mlmd.models.pair import PairPotential
from ase_mlmd.models.species_pair import SpeciesPairPotential
from ase_mlmd.models.spline_pair import hermite_energy_basis


def reweighted_average(
    observables: torch.Tensor,
    energies: torch.Tensor,
    reference_energies: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Thermodynamic-perturbation average of per-frame observables and its weights' N_eff.

    Args:
        observables: (n, ...) O(x_i), no graph needed.
        energies: (n,) U_θ(x_i), eV, with the graph to θ.
        reference_energies: (n,) U_θ̂(x_i) of the simulation that produced the frames, eV.
        beta: 1 / k_B T, 1/eV.

    Returns:
        (⟨O⟩_θ with the graph, effective sample size exp(−Σ w ln w) as a 0-d tensor).
    """
    log_w = -beta * (energies - reference_energies)
    weights = torch.softmax(log_w, dim=0)
    average = torch.tensordot(weights, observables, dims=([0], [0]))
    with torch.no_grad():
        entropy = -(weights * torch.log(weights.clamp_min(1e-300))).sum()
    return average, torch.exp(entropy)


class StoredFrames:
    """Frames of one state from a reference run: RDFs (n, bins) — the state's channels side by
    side (each partial RDF of a mixture) — energy bases (n, Σ 2K) over the tables of all
    potential terms, and the reference energies (n,)."""

    def __init__(self, rdfs: torch.Tensor, bases: torch.Tensor, reference: torch.Tensor) -> None:
        self.rdfs = rdfs
        self.bases = bases
        self.reference = reference

    def energies(self, table: torch.Tensor) -> torch.Tensor:
        """(n,) U_θ of the frames for the table (Σ 2K,): concat(values, derivatives) of each
        term (one for a single pair potential, one per species pair of a mixture)."""
        return self.bases @ table


def table_terms(table: PairTable | SpeciesPairTable) -> list[PairTable]:
    """The tables of the potential terms (one, or one per species pair)."""
    return list(table.tables) if isinstance(table, SpeciesPairTable) else [table]


def table_vector(table: PairTable | SpeciesPairTable) -> torch.Tensor:
    """θ: concat(values, derivatives) of every term's table (with their graph, if any)."""
    return torch.cat([torch.cat([t.values, t.derivatives]) for t in table_terms(table)])


def sample_frames(
    engine: Engine,
    table: PairTable | SpeciesPairTable,
    state: MDState,
    n_frames: int,
    every: int,
    chunk: int = 10,
) -> tuple[MDState, list[StoredFrames]]:
    """Run ``n_frames × every`` steps without a graph and store each state's frames.

    Frames are reduced to (RDF, energy basis) in groups of ``chunk`` as the run goes, so memory
    does not depend on the number of steps (and only weakly on ``n_frames``). A mixture's
    states need the partial RDF of every species pair of their box (each frame's energy is
    summed from the channels' pairs).
    """
    tables = table_terms(table)
    pairs = table.potential.pairs if isinstance(table, SpeciesPairTable) else None
    terms = engine.channel_terms(pairs, complete=True)
    sizes = [2 * t.n_knots for t in tables]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    parts: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in engine.states]
    theta = table_vector(table).detach()

    def reduce(n: int, data) -> None:
        for part, (rdfs, channels) in zip(parts, engine.by_state(data), strict=True):
            bases = theta.new_zeros(n, offsets[-1])
            for k, d, frame in channels:
                term = terms[k]
                t = tables[term]
                bases[:, offsets[term] : offsets[term + 1]] += hermite_energy_basis(
                    d, t.r_min, t.spline.spacing, t.n_knots, frame, n
                )
            part.append((rdfs, bases))

    cutoff = table.potential.cutoff
    state, _ = engine.sample_frame_data(state, n_frames, every, cutoff, reduce, chunk)
    stored = []
    for chunks in parts:
        rdfs = torch.cat([c[0] for c in chunks])
        bases = torch.cat([c[1] for c in chunks])
        stored.append(StoredFrames(rdfs, bases, bases @ theta))
    return state, stored


def fit_reweighting(
    potential: PairPotential | SpeciesPairPotential,
    states: Sequence[ThermoState],
    config: FitConfig,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> FitResult:
    """Fit ``potential`` (in place) to the states' target RDFs by reweighting stored frames.

    A :class:`SpeciesPairPotential` fits the partial RDFs of mixture states: each frame's
    energy sums every species pair's table, so the weights of a state couple all its partial
    RDFs to all pair potentials.

    Raises:
        SimulationUnstableError: the initial potential explodes, or the fit exploded
            ``config.max_failures`` times in a row.
    """
    from ase_mlmd.progress import progress_bar

    table = make_table(potential, TABLE_R_MIN, config.table_spacing)
    engine = Engine(table.spline, states, config.engine)
    rows = engine.channel_rows
    betas = [1.0 / s.temperature for s in states]
    start = start_gradient_fit(potential, table, engine, config, log)
    optimizer, guard, state = start.optimizer, start.guard, start.state
    keeper = IterateKeeper(potential, optimizer, states, config, start.note)
    keeper.start(state)
    history: list[dict[str, float]] = []
    epoch, simulations = 0, 0
    bar = progress_bar(total=config.epochs, desc="reweighting", disable=not progress, leave=False)
    done = False
    while not done:
        table.refresh(with_graph=False)
        state = engine.reinit(state)
        state = engine.run(state, config.rw_equilibration)
        state, stored = sample_frames(engine, table, state, config.rw_frames, config.sample_every)
        simulations += 1
        reason = engine.instability(state)
        if reason is not None:
            state = guard.recover(reason, epoch)
            continue
        guard.succeeded()
        guard.save(state)
        inner = 0
        while True:
            table.refresh(with_graph=True)
            theta = table_vector(table)
            loss = theta.new_zeros(())
            ess_min = float("inf")
            averages = []
            for frames, beta in zip(stored, betas, strict=True):
                g, ess = reweighted_average(
                    frames.rdfs, frames.energies(theta), frames.reference, beta
                )
                averages.append(g)
                ess_min = min(ess_min, float(ess) / frames.rdfs.shape[0])
            parts = []
            for c, bins in zip(engine.channels, rows, strict=True):
                part = rdf_mse(averages[c.system][bins], c.target.g_tensor())
                parts.append(float(part.detach()))
                loss = loss + config.weights.rdf * part
            if inner > 0 and ess_min < config.ess_threshold:
                break  # the stored frames no longer represent θ: re-simulate
            optimizer.zero_grad()
            loss.backward()
            table.push_gradients()
            if not (finite_gradients(potential) and bool(torch.isfinite(loss))):
                state = guard.recover("the reweighted loss or gradient is not finite", epoch)
                break
            optimizer.step()
            epoch += 1
            inner += 1
            if config.callback is not None:
                config.callback(epoch, potential)
            value = float(loss.detach())
            lr, elapsed, done = start.after_step(value, epoch, config)
            row = {
                "epoch": epoch,
                "loss": value,
                "lr": lr,
                "time": elapsed,
                "ess": ess_min,
                "simulations": simulations,
            }
            for c, part in zip(engine.channels, parts, strict=True):
                row[f"rdf_mse[{c.name}]"] = part
            verdict = keeper.after_step(epoch, done, state)
            row.update(verdict.columns)
            history.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.2e}", ess=f"{ess_min:.2f}", lr=f"{lr:.1e}")
            if verdict.backed_off:  # best parameters restored: re-simulate from their state
                state = verdict.state
                guard.save(state)
                done = done or verdict.stop
                break
            if done:
                break
    bar.close()
    start.note(
        f"{simulations} reference simulations of {config.rw_frames} frames for {epoch} steps"
    )
    state, selection = keeper.finish(state)
    result = FitResult.of_channels(
        "reweighting", potential, history, engine.channels, start.started, start.messages, state
    )
    result.selection = selection
    return result
