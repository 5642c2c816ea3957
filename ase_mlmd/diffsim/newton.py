"""Gradient method (b′): regularized Gauss–Newton steps with the reweighting Jacobian (inverse
Monte Carlo, Lyubartsev & Laaksonen 1995).

The reweighting method (:mod:`ase_mlmd.diffsim.reweighting`) follows the fluctuation formula of
the ensemble-average gradient with Adam. For the RDF of a dense liquid that gradient is badly
conditioned: the well depth and the shape of the attractive tail change g(r) only a little, so
first-order steps stop (the learning-rate schedule runs out) while U(r) is still ≈ 0.3 ε off.
This method uses the same formula for the whole Jacobian and solves for the step:

* the fitted potential is U(r) = U₀(r) + ΔU(r): U₀ is the starting potential (any pair
  potential, e.g. a BPTT result; by default −k_B T ln g* with a repulsive wall, as IBI starts),
  tabulated exactly; ΔU is a natural cubic spline with knots c_k from the first r of the target
  grid to the cutoff (spacing ``newton_knot_bins`` target bins; last knot 0, constant below the
  first knot), so U stays continuous at r_c;
* each iteration samples U's canonical ensemble with the engine (all states in one batched run)
  and accumulates, frame by frame, g_f and A_f = ∂U(x_f)/∂c (U is linear in c), giving
  ⟨g⟩ and J = ∂⟨g⟩/∂c = −β (⟨g A⟩ − ⟨g⟩⟨A⟩) without storing frames;
* the step solves min |J Δc − (g* − ⟨g⟩)|² + λ |D₂ Δc|² over all states stacked (D₂: second
  differences of the knot values, λ = ``newton_regularization``), scaled by ``newton_damping``
  and, where a knot would move by more than ``newton_max_step`` k_B T, shrunk to that (a trust
  region: the linearization holds for small changes, and a Jacobian from few frames is noisy);
* the iterate with the lowest sampled RDF error is kept; a run that explodes restores the last
  good knots and halves the damping.

The result is a Hermite :class:`~ase_mlmd.models.spline_pair.SplinePair` (card backend
``spline-pair``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ase_mlmd.diffsim.config import FitConfig, FitResult
from ase_mlmd.diffsim.engine import Engine
from ase_mlmd.diffsim.ibi import boltzmann_inverted_spline
from ase_mlmd.diffsim.losses import rdf_dev, rdf_mse
from ase_mlmd.diffsim.systems import ThermoState
from ase_mlmd.diffsim.tabulate import TABLE_R_MIN
from ase_mlmd.errors import SimulationUnstableError
from ase_mlmd.models.pair import PairPotential
from ase_mlmd.models.spline_pair import (
    SplinePair,
    hermite_energy_basis,
    hermite_spline,
    natural_spline_derivative_map,
    spline_from_potential,
)

#: knots of the fine table the engine runs (from tabulate.TABLE_R_MIN to the cutoff)
TABLE_KNOTS = 1001
#: frames reduced at once while sampling
CHUNK = 10


class Correction:
    """ΔU(r): natural cubic spline on K knots (last fixed at 0), constant below the first.

    Args:
        r_min: first knot, Å. cutoff: last knot, Å. spacing: approximate knot spacing, Å.
    """

    def __init__(self, r_min: float, cutoff: float, spacing: float) -> None:
        self.n_knots = max(3, int(round((cutoff - r_min) / spacing)) + 1)
        self.r_min = float(r_min)
        self.spacing = (cutoff - r_min) / (self.n_knots - 1)
        self.derivative_map = natural_spline_derivative_map(self.n_knots, self.spacing)
        self.values = torch.zeros(self.n_knots, dtype=torch.float64)

    @property
    def n_free(self) -> int:
        """Number of free knot values (all but the last)."""
        return self.n_knots - 1

    def __call__(self, r: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """ΔU at distances ``r`` (any shape), eV."""
        c = self.values if values is None else values
        inside = hermite_spline(
            r.clamp(min=self.r_min), self.r_min, self.spacing, c, self.derivative_map @ c
        )
        return torch.where(r < self.r_min, c[0].expand_as(r), inside)

    def frame_gradients(self, distances: torch.Tensor, frame: torch.Tensor, n: int) -> torch.Tensor:
        """(n, K−1) ∂U_frame/∂c of ``n`` frames from their pair distances (P,) and frame
        index (P,) (distances below the first knot count for c_0)."""
        r = distances.clamp(min=self.r_min)
        basis = hermite_energy_basis(r, self.r_min, self.spacing, self.n_knots, frame, n)
        k = self.n_knots
        full = basis[:, :k] + basis[:, k:] @ self.derivative_map
        return full[:, :-1]

    def smoothness(self) -> torch.Tensor:
        """(K−3, K−1) second differences of the free knot values."""
        return torch.diff(torch.eye(self.n_free, dtype=torch.float64), n=2, dim=0)


class Moments:
    """Running sums for ⟨g⟩, ⟨A⟩ and ⟨g Aᵀ⟩ of one state."""

    def __init__(self, n_bins: int, n_params: int) -> None:
        self.n = 0
        self.g = torch.zeros(n_bins, dtype=torch.float64)
        self.a = torch.zeros(n_params, dtype=torch.float64)
        self.ga = torch.zeros(n_bins, n_params, dtype=torch.float64)

    def add(self, g: torch.Tensor, a: torch.Tensor) -> None:
        """Add frames: g (F, bins), a (F, params)."""
        self.n += g.shape[0]
        self.g += g.sum(0)
        self.a += a.sum(0)
        self.ga += g.T @ a

    def mean_and_jacobian(self, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(⟨g⟩ (bins,), J = −β Cov(g, A) (bins, params))."""
        g, a = self.g / self.n, self.a / self.n
        return g, -beta * (self.ga / self.n - torch.outer(g, a))


def newton_step(
    jacobians: Sequence[torch.Tensor],
    residuals: Sequence[torch.Tensor],
    smoothness: torch.Tensor,
    regularization: float,
) -> torch.Tensor:
    """argmin_Δ Σ_s |J_s Δ − r_s|² + λ |D Δ|² (a tiny ridge keeps it well posed)."""
    n = jacobians[0].shape[1]
    lhs = regularization * (smoothness.T @ smoothness) + 1e-10 * torch.eye(n, dtype=torch.float64)
    rhs = torch.zeros(n, dtype=torch.float64)
    for jac, res in zip(jacobians, residuals, strict=True):
        lhs = lhs + jac.T @ jac
        rhs = rhs + jac.T @ res
    return torch.linalg.solve(lhs, rhs)


def fit_newton(
    states: Sequence[ThermoState],
    config: FitConfig,
    potential: PairPotential | None = None,
    cutoff: float = 2.5,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> FitResult:
    """Fit U = U₀ + ΔU to the states' target RDFs by regularized Gauss–Newton steps.

    Args:
        states: state points with targets (one shared potential).
        potential: U₀ (e.g. a fitted potential to refine); None: −k_B T ln g* with a wall.
        config: ``newton_iterations``, ``newton_frames`` (frames per iteration, one every
            ``sample_every`` steps), ``newton_knot_bins``, ``newton_regularization``,
            ``newton_damping``, ``newton_max_step``, ``rw_equilibration`` (steps after each
            update), ``engine``.
        cutoff: cutoff of the default U₀, Å (a given potential keeps its own).

    Returns:
        :class:`FitResult` whose potential is a Hermite :class:`SplinePair` (the best iterate).
    """
    from tqdm.auto import tqdm

    base = (
        potential
        if potential is not None
        else boltzmann_inverted_spline(states, cutoff, TABLE_R_MIN)[0]
    )
    cutoff = float(base.cutoff)
    table = spline_from_potential(base, TABLE_R_MIN, TABLE_KNOTS)
    base_values, base_derivatives = table.values.clone(), table.derivatives.clone()
    first = states[0].target
    correction = Correction(
        float(first.r[0]), cutoff, config.newton_knot_bins * float(first.r[1] - first.r[0])
    )
    fine_r = table.knots

    def apply(values: torch.Tensor) -> None:
        """Make ``values`` the correction's knots and U₀ + ΔU the engine's table."""
        correction.values = values
        with torch.enable_grad():
            r = fine_r.clone().requires_grad_(True)
            du = correction(r, values)
            (ddu,) = torch.autograd.grad(du.sum(), r)
        with torch.no_grad():
            table.values.copy_(base_values + du.detach())
            table.derivatives.copy_(base_derivatives + ddu)

    engine = Engine(table, states, config.engine)
    targets = [s.target.g_tensor() for s in states]
    betas = [1.0 / s.temperature for s in states]
    kt_mean = float(np.mean([s.temperature for s in states]))
    smoothness = correction.smoothness()
    started = time.perf_counter()
    messages: list[str] = []

    def note(message: str) -> None:
        messages.append(message)
        log(message)

    state = engine.run(engine.initial_state(), config.engine.equilibration)
    reason = engine.instability(state)
    if reason is not None:
        raise SimulationUnstableError(f"the starting potential is unstable: {reason}")
    good = (correction.values.clone(), state)
    best = (float("inf"), correction.values.clone())
    damping = config.newton_damping
    max_step = config.newton_max_step * kt_mean  # trust region per iteration, eV
    history: list[dict[str, float]] = []
    bar = tqdm(range(1, config.newton_iterations + 1), desc="newton", disable=not progress)
    for iteration in bar:
        moments = [Moments(len(t), correction.n_free) for t in targets]
        state, ok = _sample(engine, state, config, correction, cutoff, moments)
        if not ok:
            damping *= 0.5
            note(
                f"iteration {iteration}: the simulation exploded; restored the last good "
                f"potential and halved the step to {damping:g}"
            )
            apply(good[0].clone())
            state = engine.reinit(good[1])
            continue
        good = (correction.values.clone(), state)
        stats = [m.mean_and_jacobian(beta) for m, beta in zip(moments, betas, strict=True)]
        residuals = [t - g for t, (g, _) in zip(targets, stats, strict=True)]
        mse = float(sum(rdf_mse(g, t) for (g, _), t in zip(stats, targets, strict=True)))
        row = {"epoch": iteration, "loss": 0.95 * mse, "time": time.perf_counter() - started}
        for s, (g, _) in zip(states, stats, strict=True):
            row[f"rdf_dev[{s.name}]"] = rdf_dev(g, s.target.g)
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.2e}")
        if mse < best[0]:
            best = (mse, correction.values.clone())
        if iteration == config.newton_iterations:
            break
        jacobians = [j for _, j in stats]
        delta = newton_step(jacobians, residuals, smoothness, config.newton_regularization)
        # trust region: no knot moves by more than newton_max_step k_B T in one iteration
        size = float(delta.abs().max())
        scale = damping * min(1.0, max_step / size) if size > 0 else 0.0
        row["step_max"] = scale * size
        apply(correction.values + scale * torch.cat([delta, delta.new_zeros(1)]))
        state = engine.run(engine.reinit(state), config.rw_equilibration)
        if config.time_limit is not None and row["time"] > config.time_limit:
            messages.append(f"stopped at iteration {iteration}: time limit {config.time_limit} s")
            break
    apply(best[1])
    messages.append(
        f"kept the iterate with the lowest sampled RDF error ({len(history)} iterations, "
        f"{config.newton_frames} frames each, λ = {config.newton_regularization:g})"
    )
    final = SplinePair(
        TABLE_R_MIN,
        cutoff,
        TABLE_KNOTS,
        table.values.detach().clone(),
        table.derivatives.detach().clone(),
        species=base.species,
    )
    return FitResult.of_channels(
        "newton", final, history, engine.channels, started, messages, good[1]
    )


def _sample(
    engine: Engine,
    state,
    config: FitConfig,
    correction: Correction,
    cutoff: float,
    moments: Sequence[Moments],
):
    """Run ``newton_frames × sample_every`` steps, adding each state's frames to its moments;
    returns (state, False) as soon as the run explodes."""

    def reduce(n: int, data) -> None:
        for (g, d, frame), m in zip(data, moments, strict=True):
            m.add(g, correction.frame_gradients(d, frame, n))

    return engine.sample_frame_data(
        state,
        config.newton_frames,
        config.sample_every,
        cutoff,
        reduce,
        CHUNK,
        stop_when_unstable=True,
    )
