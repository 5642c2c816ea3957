"""One interface for the three DiffSim methods, single- or multi-state, plus the evaluation run.

>>> from ase_mlmd.diffsim.fit import fit, make_potential
>>> from ase_mlmd.diffsim.systems import ThermoState
>>> from ase_mlmd.diffsim.targets import read_rdf_csv
>>> target = read_rdf_csv("../shared/data/lj_rdf/rdf_rho0.845_T1.0_dt0.01.csv")  # doctest: +SKIP
>>> state = ThermoState(target.density, target.temperature, target)              # doctest: +SKIP
>>> result = fit(make_potential("neural-pair"), [state], FitConfig(method="bptt"))  # doctest: +SKIP

Multi-state fitting: pass several states (different ρ, T, or compositions of a mixture); they
run as one batch with one shared potential, and the loss sums over them. A mixture state
(``ThermoState(composition=..., partials=[g_AA, g_AB, g_BB])``) is fitted through its partial
RDFs by a :class:`~ase_mlmd.models.species_pair.SpeciesPairPotential` (one φ per species pair,
:func:`make_mixture_potential`) with any of the methods.
BPTT and reweighting end on their best iterate by a held-out production RDF error, and back off
when they diverge (:mod:`ase_mlmd.diffsim.selection`; ``result.selection`` says which iterate).
After the fit, a production run of ``config.production_steps`` steps (continuing from the MD
state of the kept iterate) gives each state's g(r) (each partial of a mixture) and ``rdf_dev``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_mlmd.diffsim.config import FitConfig, FitResult
from ase_mlmd.diffsim.engine import production_rdf
from ase_mlmd.diffsim.losses import rdf_dev
from ase_mlmd.diffsim.systems import ThermoState
from ase_mlmd.diffsim.tabulate import spline_table
from ase_mlmd.errors import DataFormatError
from ase_mlmd.models.pair import LennardJones, Morse, PairPotential, SoftSphere, Yukawa
from ase_mlmd.models.species_pair import SpeciesPairPotential, pair_label, parse_species

#: potentials a fit can start from (the CLI's --potential)
POTENTIALS = ("neural-pair", "lennard-jones", "morse", "yukawa", "soft-sphere")


def make_potential(kind: str = "neural-pair", cutoff: float = 2.5, seed: int = 0, **kw: Any):
    """A trainable pair potential to start a fit from.

    ``neural-pair``: :class:`~ase_mlmd.models.neural_pair.NeuralPair` (keyword arguments go to
    it); the analytic ones start from their defaults (or ``kw``) with ``trainable=True`` and a
    smooth cutoff.
    """
    if kind == "neural-pair":
        from ase_mlmd.models.neural_pair import NeuralPair

        return NeuralPair(cutoff=cutoff, seed=seed, **kw)
    classes = {
        "lennard-jones": LennardJones,
        "morse": Morse,
        "yukawa": Yukawa,
        "soft-sphere": SoftSphere,
    }
    if kind not in classes:
        raise ValueError(f"potential must be one of {POTENTIALS}, got {kind!r}")
    kw.setdefault("cutoff_mode", "smooth")
    return classes[kind](cutoff=cutoff, trainable=True, **kw)


def make_mixture_potential(
    species: Sequence[str], kind: str = "neural-pair", cutoff: float = 2.5, seed: int = 0, **kw
) -> SpeciesPairPotential:
    """A trainable :class:`SpeciesPairPotential` with one :func:`make_potential` per unordered
    pair of ``species`` (element symbols), each seeded differently."""
    numbers = sorted({parse_species(s) for s in species})
    pairs = itertools.combinations_with_replacement(numbers, 2)
    return SpeciesPairPotential(
        {
            pair_label(pair): make_potential(kind, cutoff, seed + k, **kw)
            for k, pair in enumerate(pairs)
        }
    )


def check_states(
    states: Sequence[ThermoState], cutoff: float, method: str = "bptt", potential: Any = None
) -> None:
    """Every state needs a target whose grid covers the cutoff and a box ≥ 2 cutoff; partial
    RDFs of mixtures need a species-pair potential with every pair of the mixture (Newton and
    IBI build one when ``potential`` is None)."""
    if not states:
        raise ValueError("a fit needs at least one state with a target")
    for state in states:
        if not state.rdf_targets:
            raise DataFormatError(f"state {state.name} has no target RDF to fit")
        for target in state.rdf_targets:
            target.check_cutoff(cutoff)
        state.check_box(cutoff)
    mixed = [s.name for s in states if s.partials or s.is_mixture]
    if not mixed:
        return
    if potential is None and method in ("newton", "ibi"):
        return  # they start from the Boltzmann inversion of each partial RDF
    if not isinstance(potential, SpeciesPairPotential):
        raise DataFormatError(
            f"states {mixed} are mixtures: fit a SpeciesPairPotential (one potential per "
            "species pair; make_mixture_potential builds one)"
        )
    elements = {parse_species(e) for s in states for e in s.elements}
    missing = sorted(elements - set(potential.species))
    if missing:
        raise DataFormatError(
            f"the species-pair potential has no pairs for elements {missing} of the mixtures"
        )


def evaluate(
    potential: PairPotential,
    states: Sequence[ThermoState],
    config: FitConfig,
    start: Any = None,
) -> tuple[list[torch.Tensor], list[float]]:
    """Production run of ``potential`` at ``states``: (g per channel, rdf_dev per channel); a
    channel is a state's RDF or one partial RDF of a mixture state."""
    with torch.no_grad():
        model = spline_table(potential, config.table_spacing)
    gs, _ = production_rdf(
        model,
        states,
        config.engine,
        config.production_steps,
        config.sample_every,
        start=start,
        equilibration=None if start is None else config.window,
    )
    targets = [t for s in states for t in s.rdf_targets]
    return gs, [rdf_dev(g, t.g) for g, t in zip(gs, targets, strict=True)]


def fit(
    potential: PairPotential | None,
    states: Sequence[ThermoState],
    config: FitConfig | None = None,
    out_dir: str | Path | None = None,
    true_potential: PairPotential | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    name: str = "diffsim-fit",
    cutoff: float | None = None,
) -> FitResult:
    """Fit a pair potential to target RDFs with ``config.method`` and evaluate it.

    Args:
        potential: the trainable potential to start from (ignored by IBI, which builds a
            spline; ``None`` for IBI; for ``newton`` the U₀ it corrects, ``None`` =
            −k_B T ln g*).
        states: state points with targets; several = a multi-state fit.
        config: settings (method, optimizer, windows, MD).
        out_dir: write the card, weights, loss curve, plots and ``report.md`` here.
        true_potential: the potential that made the targets, when known (for the U(r) plot and
            ``u_error``).
        log: where progress messages go. progress: show progress bars.
        name: card name of the result.
        cutoff: cutoff of IBI and of Newton's default start, Å (default 2.5; otherwise the
            potential's).

    Returns:
        :class:`FitResult` with ``g_final`` and ``rdf_dev`` from the production run.
    """
    config = config or FitConfig()
    if potential is None and config.method not in ("ibi", "newton"):
        raise ValueError(f"method {config.method!r} needs a potential to start from")
    if potential is not None:
        cutoff = potential.cutoff
    cutoff = 2.5 if cutoff is None else float(cutoff)
    check_states(states, cutoff, config.method, potential)
    if config.method == "bptt":
        from ase_mlmd.diffsim.bptt import fit_bptt

        result = fit_bptt(potential, states, config, log, progress)
    elif config.method == "reweighting":
        from ase_mlmd.diffsim.reweighting import fit_reweighting

        result = fit_reweighting(potential, states, config, log, progress)
    elif config.method == "newton":
        from ase_mlmd.diffsim.newton import fit_newton

        result = fit_newton(states, config, potential, cutoff, log=log, progress=progress)
    else:
        from ase_mlmd.diffsim.ibi import fit_ibi

        result = fit_ibi(states, config, cutoff=cutoff, log=log, progress=progress)
    gs, devs = evaluate(result.potential, states, config, start=result.final_state)
    result.g_final = [g.numpy() for g in gs]
    result.rdf_dev = devs
    for channel, dev in zip(result.states, devs, strict=True):
        log(f"{config.method}: rdf_dev at {channel} = {dev:.4g}")
    if out_dir is not None:
        from ase_mlmd.diffsim.report import write_report

        write_report(result, out_dir, true_potential=true_potential, name=name, config=config)
    return result


def pretrain_to_pmf(
    potential: PairPotential,
    states: Sequence[ThermoState],
    steps: int = 600,
    lr: float = 1e-2,
    g_min: float = 1e-3,
) -> float:
    """Start a fit from the potential of mean force: regress φ(r) on −k_B T ln g*(r).

    The Boltzmann inversion of the target (IBI's U₀) is a cheap first guess that puts the
    repulsive wall and the first well roughly in place, so that the gradient method only has to
    correct the many-body part (the original paper starts from the prior alone, which takes
    many more epochs). Fitted on the target grid where g* ≥ ``g_min`` (averaged over states);
    below that, the target continues the prior's shape from the first such point, so the wall
    stays repulsive. A :class:`SpeciesPairPotential` regresses each φ_ab on the Boltzmann
    inversion of the partial g_ab of the states. Returns the final RMS error of the regression
    (the largest over species pairs), eV.
    """
    if isinstance(potential, SpeciesPairPotential):
        errors = []
        for pair, phi in zip(potential.pairs, potential.potentials, strict=True):
            targets = [
                (t, s.temperature) for s in states for t in s.rdf_targets if t.species == pair
            ]
            if targets:
                errors.append(_regress_on_pmf(phi, targets, steps, lr, g_min))
        return max(errors)
    return _regress_on_pmf(potential, [(s.target, s.temperature) for s in states], steps, lr, g_min)


def _regress_on_pmf(
    potential: PairPotential,
    targets: Sequence[tuple[Any, float]],
    steps: int,
    lr: float,
    g_min: float,
) -> float:
    """:func:`pretrain_to_pmf` for one φ and its (target, k_B T) pairs."""
    r_lo, curves = [], []
    first = targets[0][0]
    r = torch.as_tensor(first.r[first.r <= potential.cutoff], dtype=potential.dtype)
    for target, kt in targets:
        g = torch.as_tensor(np.interp(r.numpy(), target.r, target.g), dtype=potential.dtype)
        inside = g >= g_min
        r_lo.append(float(r[inside][0]))
        curves.append(-kt * torch.log(g.clamp_min(g_min)))
    pmf = torch.stack(curves).mean(dim=0)
    rw = max(r_lo)
    core = torch.linspace(0.6, rw, 20, dtype=potential.dtype)
    with torch.no_grad():
        pmf_w = float(pmf[r >= rw][0])
        prior = getattr(potential, "prior_energy", None)
        shape = prior if prior is not None else (lambda x: (rw / x) ** 12)
        wall = pmf_w + shape(core) - shape(torch.tensor(rw, dtype=potential.dtype))
    x = torch.cat([core, r[r >= rw]])
    y = torch.cat([wall, pmf[r >= rw]])
    # the switch multiplies φ near the cutoff: fit the switched curve to the switched target
    switch = torch.ones_like(x)
    if potential.cutoff_mode == "smooth":
        from ase_mlmd.models.pair import smoothstep_switch

        switch = smoothstep_switch(x, potential.r_on, potential.cutoff)
    optimizer = torch.optim.Adam(potential.parameters(), lr=lr)
    loss = torch.zeros(())
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ((potential.cut_pair_energy(x) - y * switch) ** 2).mean()
        loss.backward()
        optimizer.step()
    return float(loss.detach().sqrt())
