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
  and, where a sampled knot would move by more than ``newton_max_step`` k_B T, shrunk to that (a
  trust region: the linearization holds for small changes, and a Jacobian from few frames is
  noisy);
* the iterate with the lowest sampled RDF error is kept; a run that explodes restores the last
  good knots and halves the damping.

Mixtures (states whose targets are partial RDFs g_ab) get one correction per species pair: U₀ is
a :class:`~ase_mlmd.models.species_pair.SpeciesPairPotential`, c stacks the knots of all pairs,
A_f has one block per pair (the pairs of that species pair in frame f), and each state's rows of
J are all its partial RDFs, so every g_ab is coupled to every ΔU_cd (a state must give the
partial RDF of every species pair of its box). The trust region is measured on the knots at or
beyond the first r where a target of that pair has g ≥ 10⁻³; knots inside the core (no pair
there) only follow the smoothness penalty.

The result is a Hermite :class:`~ase_mlmd.models.spline_pair.SplinePair` (card backend
``spline-pair``), for mixtures a species-pair potential of them (backend ``species-pair``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ase_mlmd.diffsim.config import FitConfig, FitResult
from ase_mlmd.diffsim.engine import Engine
from ase_mlmd.diffsim.ibi import G_MIN, boltzmann_inverted_potential
from ase_mlmd.diffsim.losses import channel_errors
from ase_mlmd.diffsim.selection import BestIterate, selection_reason
from ase_mlmd.diffsim.systems import ThermoState
from ase_mlmd.diffsim.tabulate import TABLE_R_MIN
from ase_mlmd.diffsim.targets import RDFTarget
from ase_mlmd.errors import SimulationUnstableError
from ase_mlmd.models.pair import PairPotential
from ase_mlmd.models.species_pair import PairKey, SpeciesPairPotential, pair_label
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


def _normal_equations(
    jacobians: Sequence[torch.Tensor],
    residuals: Sequence[torch.Tensor],
    smoothness: torch.Tensor,
    regularization: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_s J_sᵀ J_s + λ DᵀD + 1e-10 I, Σ_s J_sᵀ r_s)."""
    n = jacobians[0].shape[1]
    lhs = regularization * (smoothness.T @ smoothness) + 1e-10 * torch.eye(n, dtype=torch.float64)
    rhs = torch.zeros(n, dtype=torch.float64)
    for jac, res in zip(jacobians, residuals, strict=True):
        lhs = lhs + jac.T @ jac
        rhs = rhs + jac.T @ res
    return lhs, rhs


def newton_step(
    jacobians: Sequence[torch.Tensor],
    residuals: Sequence[torch.Tensor],
    smoothness: torch.Tensor,
    regularization: float,
) -> torch.Tensor:
    """argmin_Δ Σ_s |J_s Δ − r_s|² + λ |D Δ|² (a tiny ridge keeps it well posed)."""
    lhs, rhs = _normal_equations(jacobians, residuals, smoothness, regularization)
    return torch.linalg.solve(lhs, rhs)


def trust_region_step(
    jacobians: Sequence[torch.Tensor],
    residuals: Sequence[torch.Tensor],
    smoothness: torch.Tensor,
    regularization: float,
    max_step: float,
    mask: torch.Tensor,
) -> torch.Tensor:
    """The regularized Gauss–Newton step if no knot in ``mask`` moves by more than
    ``max_step``; otherwise the Levenberg–Marquardt step argmin Σ|J Δ − r|² + λ|DΔ|² + μ|Δ|²
    with μ found (bisection in log μ) so that the largest masked move is ``max_step``.

    Unlike scaling the Gauss–Newton step down as a whole, the ridge μ shrinks the directions
    the RDFs barely determine (a knot deep in the wall where g ≈ 0 that the step would move by
    tens of k_B T) far more than the well-determined ones, so one badly determined knot does not
    stall the fit.
    """
    lhs, rhs = _normal_equations(jacobians, residuals, smoothness, regularization)
    w, v = torch.linalg.eigh(lhs)
    projected = v.T @ rhs

    def step(mu: float) -> torch.Tensor:
        return v @ (projected / (w + mu))

    delta = step(0.0)
    if float(delta[mask].abs().max()) <= max_step:
        return delta
    scale = float(torch.diagonal(lhs).mean())
    lo, hi = -12.0, 12.0  # log10(μ / mean diagonal)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if float(step(scale * 10.0**mid)[mask].abs().max()) > max_step:
            lo = mid
        else:
            hi = mid
    delta = step(scale * 10.0**hi)
    size = float(delta[mask].abs().max())
    return delta * min(1.0, max_step / size) if size > 0 else delta


class CorrectedTable:
    """U₀ + ΔU of one species pair (or of all pairs): the fine Hermite table the engine runs,
    U₀'s exact table, and the correction ΔU.

    Args:
        base: U₀. target: an RDF of this pair (its first r is ΔU's first knot).
        knot_bins: ΔU's knot spacing in target bins.
    """

    def __init__(self, base: PairPotential, target: RDFTarget, knot_bins: int) -> None:
        self.table = spline_from_potential(base, TABLE_R_MIN, TABLE_KNOTS)
        self.base_values = self.table.values.clone()
        self.base_derivatives = self.table.derivatives.clone()
        self.correction = Correction(
            float(target.r[0]), float(base.cutoff), knot_bins * float(target.r[1] - target.r[0])
        )

    def apply(self, values: torch.Tensor) -> None:
        """Make ``values`` the correction's knots and U₀ + ΔU the table."""
        self.correction.values = values
        with torch.enable_grad():
            r = self.table.knots.clone().requires_grad_(True)
            du = self.correction(r, values)
            (ddu,) = torch.autograd.grad(du.sum(), r)
        with torch.no_grad():
            self.table.values.copy_(self.base_values + du.detach())
            self.table.derivatives.copy_(self.base_derivatives + ddu)

    def result(self) -> SplinePair:
        """A detached copy of the current table."""
        t = self.table
        return SplinePair(
            TABLE_R_MIN,
            float(t.cutoff),
            TABLE_KNOTS,
            t.values.detach().clone(),
            t.derivatives.detach().clone(),
            species=t.species,
        )


class Corrections:
    """The corrections of all species pairs as one parameter vector (each pair's free knots in
    the order of the pairs) and the map from the engine's RDF channels to them.

    Args:
        base: U₀: one pair potential for all pairs, or a :class:`SpeciesPairPotential`.
        states: the fit's states (for the default U₀ and the channels' targets).
        knot_bins: knot spacing of each ΔU in target bins.

    Attributes:
        pairs: the (Z_a, Z_b) key of each term, or None for one potential for all pairs.
        terms: one :class:`CorrectedTable` per pair (one in all for a single potential).
        model: what the engine runs (the table, or a species-pair potential of the tables).
    """

    def __init__(
        self,
        base: PairPotential | SpeciesPairPotential,
        states: Sequence[ThermoState],
        knot_bins: int,
    ) -> None:
        targets = [t for s in states for t in s.rdf_targets]
        if isinstance(base, SpeciesPairPotential):
            self.pairs: list[PairKey] | None = list(base.pairs)
            bases = list(base.potentials)
            mine = [[t for t in targets if t.species == pair] or targets for pair in base.pairs]
        else:
            self.pairs, bases, mine = None, [base], [targets]
        self.terms = [
            CorrectedTable(b, ts[0], knot_bins) for b, ts in zip(bases, mine, strict=True)
        ]
        # knots that sampled pairs reach: from one spacing below the first r where a target
        # of the pair has g ≥ G_MIN (the trust region is measured there)
        sampled = []
        for term, ts in zip(self.terms, mine, strict=True):
            r_w = min(float(t.r[np.argmax(t.g >= G_MIN)]) for t in ts)
            c = term.correction
            knots = c.r_min + c.spacing * np.arange(c.n_free)
            sampled.append(torch.as_tensor(knots >= r_w - c.spacing))
        self.sampled = torch.cat(sampled)
        self.model = self._assemble([t.table for t in self.terms])
        sizes = [t.correction.n_free for t in self.terms]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        self.values = torch.zeros(self.offsets[-1], dtype=torch.float64)

    @property
    def n_free(self) -> int:
        return self.offsets[-1]

    def block(self, k: int) -> slice:
        """The slice of term ``k`` in the parameter vector."""
        return slice(self.offsets[k], self.offsets[k + 1])

    def apply(self, values: torch.Tensor) -> None:
        """Set all corrections from the parameter vector (last knot of each fixed at 0)."""
        self.values = values.clone()
        for k, term in enumerate(self.terms):
            free = values[self.block(k)]
            term.apply(torch.cat([free, free.new_zeros(1)]))

    def smoothness(self) -> torch.Tensor:
        """Block-diagonal second differences of every term's knot values."""
        return torch.block_diag(*(t.correction.smoothness() for t in self.terms))

    def channel_terms(self, engine: Engine) -> list[int]:
        """The term that acts on each channel's atom pairs (every species pair of each box
        needs its channel: a frame's energy derivative comes from the channels' pairs)."""
        return engine.channel_terms(self.pairs, complete=True)

    def frame_gradients(self, data, engine: Engine, terms: Sequence[int], n: int):
        """Per state, (⟨g⟩ rows (n, bins of its channels), A (n, n_free) = ∂U_frame/∂c) from
        the engine's :meth:`~Engine.frame_data` of ``n`` frames."""
        out = []
        for g, channels in engine.by_state(data):
            a = torch.zeros(n, self.n_free, dtype=torch.float64)
            for k, d, frame in channels:
                term = terms[k]
                a[:, self.block(term)] += self.terms[term].correction.frame_gradients(d, frame, n)
            out.append((g, a))
        return out

    def result(self) -> SplinePair | SpeciesPairPotential:
        """The fitted potential: a SplinePair, or a species-pair potential of them."""
        return self._assemble([t.result() for t in self.terms])

    def _assemble(self, tables: list[SplinePair]) -> SplinePair | SpeciesPairPotential:
        """One table per term as the potential: itself, or a species-pair potential."""
        if self.pairs is None:
            return tables[0]
        return SpeciesPairPotential(
            {pair_label(p): t for p, t in zip(self.pairs, tables, strict=True)}
        )


def fit_newton(
    states: Sequence[ThermoState],
    config: FitConfig,
    potential: PairPotential | SpeciesPairPotential | None = None,
    cutoff: float = 2.5,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> FitResult:
    """Fit U = U₀ + ΔU to the states' target RDFs by regularized Gauss–Newton steps.

    Mixtures (states with partial RDFs) fit one ΔU per species pair: U₀ is then a
    :class:`SpeciesPairPotential`, and the Jacobian couples every partial RDF to every ΔU.

    Args:
        states: state points with targets (one shared potential).
        potential: U₀ (e.g. a fitted potential to refine); None: −k_B T ln g* with a wall
            (per species pair for partial RDFs).
        config: ``newton_iterations``, ``newton_frames`` (frames per iteration, one every
            ``sample_every`` steps), ``newton_knot_bins``, ``newton_regularization``,
            ``newton_damping``, ``newton_max_step``, ``rw_equilibration`` (steps after each
            update), ``engine``.
        cutoff: cutoff of the default U₀, Å (a given potential keeps its own).

    Returns:
        :class:`FitResult` whose potential is a Hermite :class:`SplinePair` (a
        :class:`SpeciesPairPotential` of them for mixtures; the best iterate).
    """
    from ase_mlmd.progress import progress_bar

    base = (
        potential
        if potential is not None
        else boltzmann_inverted_potential(states, cutoff, TABLE_R_MIN)[0]
    )
    cutoff = float(base.cutoff)
    corrections = Corrections(base, states, config.newton_knot_bins)
    engine = Engine(corrections.model, states, config.engine)
    terms = corrections.channel_terms(engine)
    targets = engine.state_targets()
    rows = engine.channel_rows
    betas = [1.0 / s.temperature for s in states]
    kt_mean = float(np.mean([s.temperature for s in states]))
    smoothness = corrections.smoothness()
    started = time.perf_counter()
    messages: list[str] = []

    def note(message: str) -> None:
        messages.append(message)
        log(message)

    state = engine.run(engine.initial_state(), config.engine.equilibration)
    reason = engine.instability(state)
    if reason is not None:
        raise SimulationUnstableError(f"the starting potential is unstable: {reason}")
    good = (corrections.values.clone(), state)
    start_values = corrections.values.clone()
    best = BestIterate("sampled RDF error (Σ MSE over channels)")
    damping = config.newton_damping
    max_step = config.newton_max_step * kt_mean  # trust region per iteration, eV
    history: list[dict[str, float]] = []

    def reduce(n: int, data) -> None:
        frames = corrections.frame_gradients(data, engine, terms, n)
        for (g, a), m in zip(frames, moments, strict=True):
            m.add(g, a)

    bar = progress_bar(range(1, config.newton_iterations + 1), desc="newton", disable=not progress)
    for iteration in bar:
        moments = [Moments(len(t), corrections.n_free) for t in targets]
        state, ok = engine.sample_frame_data(
            state,
            config.newton_frames,
            config.sample_every,
            cutoff,
            reduce,
            CHUNK,
            stop_when_unstable=True,
        )
        if not ok:
            damping *= 0.5
            note(
                f"iteration {iteration}: the simulation exploded; restored the last good "
                f"potential and halved the step to {damping:g}"
            )
            corrections.apply(good[0])
            state = engine.reinit(good[1])
            continue
        good = (corrections.values.clone(), state)
        stats = [m.mean_and_jacobian(beta) for m, beta in zip(moments, betas, strict=True)]
        residuals = [t - g for t, (g, _) in zip(targets, stats, strict=True)]
        gs = [stats[c.system][0][bins] for c, bins in zip(engine.channels, rows, strict=True)]
        mse, devs = channel_errors(engine.channels, gs)
        row = {"epoch": iteration, "time": time.perf_counter() - started, **devs}
        row["loss"] = 0.95 * mse
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.2e}")
        best.offer(iteration, mse, corrections.values.clone)
        if iteration == config.newton_iterations:
            break
        jacobians = [j for _, j in stats]
        # trust region: no knot that pairs reach moves by more than newton_max_step k_B T in
        # one iteration (the core knots only follow the smoothness penalty)
        delta = damping * trust_region_step(
            jacobians,
            residuals,
            smoothness,
            config.newton_regularization,
            max_step,
            corrections.sampled,
        )
        row["step_max"] = float(delta[corrections.sampled].abs().max())
        corrections.apply(corrections.values + delta)
        state = engine.run(engine.reinit(state), config.rw_equilibration)
        if config.time_limit is not None and row["time"] > config.time_limit:
            messages.append(f"stopped at iteration {iteration}: time limit {config.time_limit} s")
            break
    corrections.apply(start_values if best.payload is None else best.payload)
    selection = best.summary()
    selection["reason"] = selection_reason(selection, unit="iteration")
    messages.append(
        f"kept {selection['reason']} ({config.newton_frames} frames each, "
        f"λ = {config.newton_regularization:g})"
    )
    result = FitResult.of_channels(
        "newton", corrections.result(), history, engine.channels, started, messages, good[1]
    )
    result.selection = selection
    return result
