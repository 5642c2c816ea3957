"""Gradient method (c), the classical baseline: Iterative Boltzmann Inversion (no gradients).

U₀(r) = −k_B T ln g*(r), then U_{k+1}(r) = U_k(r) + α k_B T ln(g_k(r) / g*(r)) with g_k the RDF of
a simulation with U_k (METRICS.md §2). Details that make it work on a 256-atom box:

* U is a natural cubic spline (:class:`SplinePair`) on knots of spacing ≈ the target's, from
  ``r_min`` to the cutoff, multiplied by the smooth switch S(r) from 0.9 r_c to r_c;
* the update uses ln((g_k + g_min) / (g* + g_min)) with g_min = 1e-3, so it stays finite where
  one of the RDFs vanishes;
* below r_w, the first knot where g* ≥ g_min (the core no simulation visits), U is a repulsive
  wall U(r_w) + c [(r_w/r)^12 − 1] matched to the slope at r_w (c ≥ k_B T), rebuilt after every
  update;
* several states (one shared U) average their updates, each weighted by its own k_B T.

The result is a spline potential (card backend ``spline-pair``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ase_mlmd.diffsim.config import FitConfig, FitResult
from ase_mlmd.diffsim.engine import Engine
from ase_mlmd.diffsim.losses import channel_errors
from ase_mlmd.diffsim.systems import ThermoState
from ase_mlmd.errors import DataFormatError, SimulationUnstableError
from ase_mlmd.models.species_pair import PairKey, SpeciesPairPotential, pair_label
from ase_mlmd.models.spline_pair import SplinePair

G_MIN = 1e-3
WALL_POWER = 12.0


def _wall(values: np.ndarray, knots: np.ndarray, wall_index: int, kt: float) -> np.ndarray:
    """Replace the values below knot ``wall_index`` by a repulsive power wall matched there."""
    out = values.copy()
    if wall_index <= 0:
        return out
    rw = knots[wall_index]
    slope = (values[wall_index + 1] - values[wall_index]) / (knots[wall_index + 1] - rw)
    c = max(-slope * rw / WALL_POWER, kt)
    below = knots[:wall_index]
    out[:wall_index] = values[wall_index] + c * ((rw / below) ** WALL_POWER - 1.0)
    return out


def ibi_initial_guess(
    r: np.ndarray, g: np.ndarray, knots: np.ndarray, kt: float
) -> tuple[np.ndarray, int]:
    """U₀ = −k_B T ln g* on the knots (with the wall below r_w); returns (values, wall index)."""
    g_knots = np.interp(knots, r, g, left=0.0, right=g[-1])
    wall_index = int(np.argmax(g_knots >= G_MIN))
    values = -kt * np.log(np.maximum(g_knots, G_MIN))
    return _wall(values, knots, wall_index, kt), wall_index


def boltzmann_inverted_spline(
    states: Sequence[ThermoState], cutoff: float, r_min: float, pair: PairKey | None = None
) -> tuple[SplinePair, np.ndarray, int]:
    """U₀ = −k_B T ln g* averaged over the states, with the repulsive wall below r_w, as a
    natural spline on knots of the targets' spacing from ``r_min`` to ``cutoff`` (smooth switch
    from 0.9 r_c). ``pair``: use the partial RDFs of this species pair (a mixture) instead of the
    states' RDFs. Returns (spline, knots, wall index)."""
    targets = [(t, s.temperature) for s in states for t in s.rdf_targets if t.species == pair]
    if not targets:
        raise DataFormatError(f"no target RDF for the species pair {pair}")
    first = targets[0][0]
    spacing = float(first.r[1] - first.r[0])
    n_knots = int(round((cutoff - r_min) / spacing)) + 1
    knots = np.linspace(r_min, cutoff, n_knots)
    guesses = [ibi_initial_guess(t.r, t.g, knots, kt) for t, kt in targets]
    wall_index = max(w for _, w in guesses)
    values = np.mean([v for v, _ in guesses], axis=0)
    values = _wall(values, knots, wall_index, float(np.mean([kt for _, kt in targets])))
    spline = SplinePair(
        r_min, cutoff, n_knots, values=values, cutoff_mode="smooth", r_on=0.9 * cutoff
    )
    return spline, knots, wall_index


def ibi_update(
    values: np.ndarray,
    knots: np.ndarray,
    wall_index: int,
    states: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, float]],
    alpha: float,
) -> np.ndarray:
    """One IBI step: U + α Σ_s k_B T_s ln((g_s + g_min) / (g*_s + g_min)) / n_states on the knots
    from r_w on, then the wall rebuilt.

    Args:
        values: (K,) current U at the knots, eV.
        knots: (K,) knot positions, Å.
        wall_index: first knot outside the wall.
        states: per state (r grid, simulated g, target g, k_B T).
        alpha: mixing factor α.
    """
    delta = np.zeros_like(values)
    for r, g_sim, g_target, kt in states:
        gs = np.interp(knots, r, g_sim, left=0.0, right=g_sim[-1])
        gt = np.interp(knots, r, g_target, left=0.0, right=g_target[-1])
        delta += kt * np.log((gs + G_MIN) / (gt + G_MIN))
    delta /= len(states)
    new = values.copy()
    new[wall_index:] += alpha * delta[wall_index:]
    kt_mean = float(np.mean([s[3] for s in states]))
    return _wall(new, knots, wall_index, kt_mean)


def partial_pairs(states: Sequence[ThermoState]) -> list[PairKey] | None:
    """The sorted species pairs of the states' partial RDFs (a mixture fit: one potential
    term per pair), or None when every state has one RDF of all pairs."""
    if not any(s.partials for s in states):
        return None
    return sorted({t.species for s in states for t in s.partials})


def boltzmann_inverted_potential(
    states: Sequence[ThermoState], cutoff: float, r_min: float
) -> tuple[SplinePair | SpeciesPairPotential, list[tuple[SplinePair, np.ndarray, int]]]:
    """U₀ = −k_B T ln g* of the states' RDFs, or of each species pair's partial RDFs (a
    :class:`SpeciesPairPotential` of splines). Returns (potential, per term (spline, knots,
    wall index) as :func:`boltzmann_inverted_spline`)."""
    pairs = partial_pairs(states)
    if pairs is None:
        terms = [boltzmann_inverted_spline(states, cutoff, r_min)]
        return terms[0][0], terms
    terms = [boltzmann_inverted_spline(states, cutoff, r_min, p) for p in pairs]
    potential = SpeciesPairPotential(
        {pair_label(p): t[0] for p, t in zip(pairs, terms, strict=True)}
    )
    return potential, terms


def fit_ibi(
    states: Sequence[ThermoState],
    config: FitConfig,
    cutoff: float = 2.5,
    r_min: float = 0.5,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> FitResult:
    """Iterative Boltzmann Inversion against the states' target RDFs.

    A mixture (states with partial RDFs) gets one spline per species pair, each updated from
    its partial RDFs g_ab (the classical multi-component IBI).

    Args:
        states: state points with targets (one shared potential).
        config: ``ibi_alpha``, ``ibi_iterations``, ``ibi_steps``, ``sample_every``,
            ``rw_equilibration`` (steps discarded after each update) and ``engine``.
        cutoff: potential cutoff, Å. r_min: first knot, Å.

    Returns:
        :class:`FitResult` whose potential is a :class:`SplinePair` (for mixtures a
        :class:`SpeciesPairPotential` of them).
    """
    from ase_mlmd.progress import progress_bar

    potential, splines = boltzmann_inverted_potential(states, cutoff, r_min)
    values = [spline.values.numpy().copy() for spline, _, _ in splines]
    engine = Engine(potential, states, config.engine)
    terms = engine.channel_terms(partial_pairs(states))
    started = time.perf_counter()
    messages: list[str] = []
    state = engine.run(engine.initial_state(), config.engine.equilibration)
    good_state = state
    history: list[dict[str, float]] = []
    best = (np.inf, [v.copy() for v in values])

    def set_values(new: list[np.ndarray]) -> None:
        with torch.no_grad():
            for (spline, _, _), v in zip(splines, new, strict=True):
                spline.values.copy_(torch.as_tensor(v))

    for iteration in progress_bar(
        range(1, config.ibi_iterations + 1), desc="ibi", disable=not progress
    ):
        state, gs, _ = engine.sample_rdf(state, config.ibi_steps, config.sample_every)
        reason = engine.instability(state)
        if reason is not None:
            message = f"IBI iteration {iteration}: simulation exploded ({reason})"
            if not history:
                raise SimulationUnstableError(message + "; try a smaller ibi_alpha")
            messages.append(message + "; stopped and kept the best earlier iterate")
            log(messages[-1])
            break
        good_state = state
        mse, devs = channel_errors(engine.channels, gs)
        row = {"epoch": iteration, "time": time.perf_counter() - started, **devs}
        row["loss"] = 0.95 * mse
        history.append(row)
        if mse < best[0]:
            best = (mse, [v.copy() for v in values])
        for k, (_, knots, wall_index) in enumerate(splines):
            mine = [
                (c.target.r, g.numpy(), c.target.g, engine.states[c.system].temperature)
                for c, g, term in zip(engine.channels, gs, terms, strict=True)
                if term == k
            ]
            if mine:
                values[k] = ibi_update(values[k], knots, wall_index, mine, config.ibi_alpha)
        set_values(values)
        state = engine.run(engine.reinit(state), config.rw_equilibration)
        if config.time_limit is not None and row["time"] > config.time_limit:
            messages.append(f"stopped at iteration {iteration}: time limit {config.time_limit} s")
            break
    set_values(best[1])
    messages.append(
        f"kept the iterate with the lowest RDF error ({len(history)} iterations, "
        f"alpha = {config.ibi_alpha})"
    )
    return FitResult.of_channels(
        "ibi", potential, history, engine.channels, started, messages, good_state
    )
