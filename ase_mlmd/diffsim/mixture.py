"""The binary Lennard-Jones mixture of METRICS.md §2 and partial-RDF targets simulated from it.

φ_ab(r) = 4 ε [(σ_ab/r)^12 − (σ_ab/r)^6] with ε = 1 and σ_AA = 0.9, σ_AB = 1.0, σ_BB = 1.1
(reduced units), shifted at the cutoff like the single-component LJ targets. The fits over
compositions (x_B = 0.25 / 0.5 / 0.75) learn one φ per species pair from the partial RDFs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ase_mlmd.diffsim.engine import EngineConfig, production_rdf
from ase_mlmd.diffsim.systems import ThermoState
from ase_mlmd.diffsim.targets import RDFTarget
from ase_mlmd.models.pair import LennardJones
from ase_mlmd.models.species_pair import SpeciesPairPotential, pair_label, parse_pair
from ase_mlmd.observables.differentiable import RDFGrid

#: σ of the pairs AA, AB, BB (A the first element), METRICS.md §2
MIXTURE_SIGMAS = (0.9, 1.0, 1.1)


def binary_lj_mixture(
    a: str = "Ar",
    b: str = "Kr",
    sigmas: Sequence[float] = MIXTURE_SIGMAS,
    epsilon: float = 1.0,
    cutoff: float = 2.5,
    cutoff_mode: str = "shift",
) -> SpeciesPairPotential:
    """The binary LJ mixture: σ_aa, σ_ab, σ_bb = ``sigmas``, one ε, one cutoff (Å = σ)."""
    labels = [pair_label(parse_pair((x, y))) for x, y in ((a, a), (a, b), (b, b))]
    return SpeciesPairPotential(
        {
            label: LennardJones(epsilon, sigma, cutoff=cutoff, cutoff_mode=cutoff_mode)
            for label, sigma in zip(labels, sigmas, strict=True)
        }
    )


def mixture_states(
    density: float,
    temperature: float,
    fractions: Sequence[float],
    a: str = "Ar",
    b: str = "Kr",
    n_cells: int = 4,
) -> list[ThermoState]:
    """One state per mole fraction x_b of ``b`` (no targets yet)."""
    return [
        ThermoState(density, temperature, n_cells=n_cells, composition={a: 1.0 - x, b: x})
        for x in fractions
    ]


def simulate_partial_targets(
    potential: SpeciesPairPotential,
    states: Sequence[ThermoState],
    config: EngineConfig,
    steps: int,
    every: int = 10,
    grid: RDFGrid | None = None,
) -> list[list[RDFTarget]]:
    """Partial RDFs g_ab of ``potential`` at ``states`` (one batched run of ``steps`` steps
    after ``config.equilibration``, a frame every ``every``), one target per species pair of
    the potential; they are also set as each state's ``partials``.

    Returns:
        per state, its targets (in the order of ``potential.pair_labels``).
    """
    grid = RDFGrid(0.7, 3.3, 100) if grid is None else grid
    r = grid.centres().numpy()
    for state in states:
        state.partials = [RDFTarget(r, np.ones_like(r), pair=p) for p in potential.pair_labels]
    gs, _ = production_rdf(potential, states, config, steps=steps, every=every)
    out = []
    n_pairs = len(potential.pairs)
    for k, state in enumerate(states):
        state.partials = [
            RDFTarget(
                r,
                g.numpy(),
                state.density,
                state.temperature,
                f"simulated {state.name}",
                pair=label,
            )
            for label, g in zip(
                potential.pair_labels, gs[k * n_pairs : (k + 1) * n_pairs], strict=True
            )
        ]
        out.append(state.partials)
    return out
