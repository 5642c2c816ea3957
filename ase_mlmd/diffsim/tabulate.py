"""Run any pair potential in the MD engine as a spline table, and push table gradients back.

A neural pair potential costs a small MLP per pair and per step; in a DiffSim window of ~100
steps with second derivatives (forces inside the graph) that dominates everything. The potential
is a function of r only, so the engine runs a Hermite :class:`SplinePair` tabulated from it
(values and exact derivatives on a fine grid; interpolation error ~1e-7 ε for the defaults)
whose table tensors are *leaves* that require grad. A window's loss then backpropagates into
the table (cheap, per step), and :meth:`PairTable.push_gradients` turns the table gradient into
parameter gradients with one vector–Jacobian product through the potential (once per window).
The chain rule is exact: d loss/dθ = Σ_k (∂ loss/∂u_k ∂u_k/∂θ + ∂ loss/∂u'_k ∂u'_k/∂θ).

The table tensors stay the same objects for the whole fit (refreshed in place), so rollouts with
gradient checkpointing can keep them as their parameters.
"""

from __future__ import annotations

import torch

from ase_mlmd.models.pair import PairPotential
from ase_mlmd.models.species_pair import SpeciesPairPotential
from ase_mlmd.models.spline_pair import SplinePair, spline_from_potential, tabulate

#: default first knot (reduced units: far inside the repulsive wall) and knot spacing, Å
TABLE_R_MIN = 0.5
TABLE_SPACING = 0.002


def table_knots(cutoff: float, r_min: float, spacing: float) -> int:
    """Knots of a table from ``r_min`` to ``cutoff`` at about ``spacing`` Å (at least 2)."""
    return max(2, int(round((cutoff - r_min) / spacing)) + 1)


def spline_table(
    potential: PairPotential | SpeciesPairPotential,
    spacing: float = TABLE_SPACING,
    r_min: float = TABLE_R_MIN,
) -> SplinePair | SpeciesPairPotential:
    """A fixed (no-graph) spline table of ``potential`` for the engine, one per species pair of
    a species-pair model: the evaluation runs of a fit."""
    if isinstance(potential, SpeciesPairPotential):
        return SpeciesPairPotential(
            {label: spline_table(p, spacing, r_min) for label, p in potential.items()}
        )
    return spline_from_potential(potential, r_min, table_knots(potential.cutoff, r_min, spacing))


class PairTable:
    """A spline stand-in for ``potential`` whose table gradients flow back to its parameters.

    Args:
        potential: the pair potential being fitted (its parameters require grad).
        r_min: first knot, Å (the last is the potential's cutoff).
        spacing: approximate knot spacing, Å.

    Attributes:
        spline: the :class:`SplinePair` to give the engine.
        values, derivatives: the (K,) leaf tensors of the table.
    """

    def __init__(
        self, potential: PairPotential, r_min: float = TABLE_R_MIN, spacing: float = TABLE_SPACING
    ) -> None:
        if not 0 < r_min < potential.cutoff:
            raise ValueError(f"r_min must lie in (0, cutoff), got {r_min}")
        self.potential = potential
        self.r_min = float(r_min)
        self.n_knots = table_knots(potential.cutoff, r_min, spacing)
        dtype, device = potential.dtype, potential.device
        self.values = torch.zeros(self.n_knots, dtype=dtype, device=device, requires_grad=True)
        self.derivatives = torch.zeros_like(self.values, requires_grad=True)
        self.spline = SplinePair(
            self.r_min,
            potential.cutoff,
            self.n_knots,
            natural=False,
            species=potential.species,
            dtype=dtype,
        ).to(device)
        self.spline.set_table(self.values, self.derivatives)
        self._graph: tuple[torch.Tensor, torch.Tensor] | None = None
        self.refresh()

    def refresh(self, with_graph: bool = True) -> None:
        """Re-tabulate the potential at its current parameters (in place); with ``with_graph``
        keep the graph for :meth:`push_gradients`. Clears the table's gradients."""
        values, derivatives = tabulate(self.potential, self.r_min, self.n_knots, with_graph)
        with torch.no_grad():
            self.values.copy_(values)
            self.derivatives.copy_(derivatives)
        self.values.grad = None
        self.derivatives.grad = None
        self._graph = (values, derivatives) if with_graph and values.requires_grad else None

    @property
    def leaves(self) -> list[torch.Tensor]:
        """The table tensors the engine's graph ends in."""
        return [self.values, self.derivatives]

    def push_gradients(self) -> None:
        """Add the table's accumulated gradients to the potential's parameter gradients."""
        if self._graph is None:
            raise RuntimeError("call refresh(with_graph=True) before pushing gradients")
        grads = [
            torch.zeros_like(t) if t.grad is None else t.grad
            for t in (self.values, self.derivatives)
        ]
        torch.autograd.backward(list(self._graph), grads)
        self._graph = None


class SpeciesPairTable:
    """:class:`PairTable` for a :class:`SpeciesPairPotential`: one table per species pair, run
    by the engine as a species-pair potential of splines. Same interface as PairTable."""

    def __init__(
        self,
        potential: SpeciesPairPotential,
        r_min: float = TABLE_R_MIN,
        spacing: float = TABLE_SPACING,
    ) -> None:
        self.potential = potential
        self.r_min = float(r_min)
        self.tables = [PairTable(p, r_min, spacing) for p in potential.potentials]
        self.spline = SpeciesPairPotential(
            {label: t.spline for label, t in zip(potential.pair_labels, self.tables, strict=True)}
        )

    @property
    def leaves(self) -> list[torch.Tensor]:
        return [leaf for t in self.tables for leaf in t.leaves]

    def refresh(self, with_graph: bool = True) -> None:
        for t in self.tables:
            t.refresh(with_graph)

    def push_gradients(self) -> None:
        for t in self.tables:
            t.push_gradients()


def make_table(
    potential: PairPotential | SpeciesPairPotential,
    r_min: float = TABLE_R_MIN,
    spacing: float = TABLE_SPACING,
) -> PairTable | SpeciesPairTable:
    """The engine's table of ``potential`` (one per species pair for a species-pair model)."""
    if isinstance(potential, SpeciesPairPotential):
        return SpeciesPairTable(potential, r_min, spacing)
    return PairTable(potential, r_min, spacing)
