"""Force matching of a pair potential (multiscale coarse-graining, MS-CG) by linear least squares.

A pair potential tabulated as a natural cubic spline (:class:`~ase_mlmd.models.spline_pair.
SplinePair`) is linear in its knot values θ: φ(r) = Σ_k θ_k b_k(r). So is the force it puts on a
bead, F_i = Σ_j φ'(r_ij) (x_j − x_i) / r_ij = A_i θ. Force matching — minimize
⟨|F_CG(x_CG) − M_F F_atom|²⟩ over the mapped frames (METRICS.md §3) — is then the linear least
squares problem

    min_θ  Σ_frames |A θ − F_mapped|² + λ (tr AᵀA / K) |D₂ θ|²

solved exactly from its normal equations (no stochastic optimizer), with a small penalty λ on the
second differences D₂ θ (smoothness; it also fixes knots that no pair reaches, which continue the
sampled curve linearly). The last knot value is fixed at 0 (φ(r_c) = 0); with ``r_on`` set, φ is
multiplied by the smooth switch S(r) from ``r_on`` to the cutoff (the potential then goes to zero
with its derivatives, as the IBI and DiffSim splines do). Below the first knot the spline continues
linearly with its slope there (a repulsive wall when the slope is negative): place ``r_min`` at
the shortest distance the frames sample.

The mapped forces of rigid molecules (e.g. TIP3P water) may come without constraint forces: the
sum over a molecule is the same (see :mod:`ase_mlmd.data.openmm_water`).

Units: Å, eV, eV/Å.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import torch

from ase_mlmd.errors import DataFormatError, MissingLabelsError
from ase_mlmd.models.pair import smoothstep_switch
from ase_mlmd.models.spline_pair import SplinePair, natural_spline_derivative_map
from ase_mlmd.neighbors import system_neighbors


@dataclasses.dataclass(frozen=True)
class SplineGrid:
    """Knots of the fitted spline: ``n_knots`` from ``r_min`` to ``cutoff`` (Å); ``r_on``: start
    of the smooth switch to zero (None: no switch)."""

    r_min: float
    cutoff: float
    n_knots: int
    r_on: float | None = None

    def __post_init__(self) -> None:
        if not (0 < self.r_min < self.cutoff and self.n_knots >= 3):
            raise ValueError(
                f"need 0 < r_min < cutoff and n_knots >= 3, got r_min={self.r_min}, "
                f"cutoff={self.cutoff}, n_knots={self.n_knots}"
            )
        if self.r_on is not None and not self.r_min <= self.r_on < self.cutoff:
            raise ValueError(f"r_on must lie in [r_min, cutoff), got {self.r_on}")

    @property
    def spacing(self) -> float:
        return (self.cutoff - self.r_min) / (self.n_knots - 1)

    @property
    def knots(self) -> np.ndarray:
        return np.linspace(self.r_min, self.cutoff, self.n_knots)

    def spline(self, values: np.ndarray) -> SplinePair:
        """The :class:`SplinePair` with these knot values (eV)."""
        mode = "none" if self.r_on is None else "smooth"
        return SplinePair(
            self.r_min, self.cutoff, self.n_knots, values=values, cutoff_mode=mode, r_on=self.r_on
        )


def spline_basis(r: np.ndarray, grid: SplineGrid) -> tuple[np.ndarray, np.ndarray]:
    """Values and r-derivatives of the basis functions of the natural spline (with the switch).

    φ(r) = B(r) θ and φ'(r) = G(r) θ for knot values θ (K,), exactly as :class:`SplinePair`
    evaluates them (Hermite segments whose knot derivatives are the natural spline's, linear
    continuation below ``r_min``, zero at and beyond the cutoff).

    Args:
        r: (M,) distances, Å.
        grid: the knots.

    Returns:
        B (M, K) (dimensionless) and G (M, K) in 1/Å.
    """
    k_n, h = grid.n_knots, grid.spacing
    r = np.asarray(r, dtype=float)
    t = (r - grid.r_min) / h
    k = np.clip(np.floor(t), 0, k_n - 2).astype(int)
    s = np.clip(t - k, 0.0, 1.0)
    below = t < 0
    s2, s3 = s * s, s * s * s
    # Hermite weights on (u_k, u'_k, u_k+1, u'_k+1) and their derivatives d/dr
    w = np.stack([2 * s3 - 3 * s2 + 1, (s3 - 2 * s2 + s) * h, -2 * s3 + 3 * s2, (s3 - s2) * h], 1)
    dw = np.stack(
        [(6 * s2 - 6 * s) / h, 3 * s2 - 4 * s + 1, (-6 * s2 + 6 * s) / h, 3 * s2 - 2 * s], 1
    )
    dr = r - grid.r_min
    w[below] = np.stack([np.ones_like(dr), dr, 0 * dr, 0 * dr], 1)[below]
    dw[below] = np.array([0.0, 1.0, 0.0, 0.0])
    derivative_map = natural_spline_derivative_map(k_n, h).numpy()  # u' = M u
    rows = np.arange(len(r))
    values = np.zeros((len(r), k_n))
    slopes = np.zeros((len(r), k_n))
    for weight, out in ((w, values), (dw, slopes)):
        np.add.at(out, (rows, k), weight[:, 0])
        np.add.at(out, (rows, k + 1), weight[:, 2])
        out += weight[:, 1:2] * derivative_map[k] + weight[:, 3:4] * derivative_map[k + 1]
    if grid.r_on is not None:
        rt = torch.as_tensor(r, dtype=torch.float64).requires_grad_(True)
        switch = smoothstep_switch(rt, grid.r_on, grid.cutoff)
        (dswitch,) = torch.autograd.grad(switch.sum(), rt)
        switch, dswitch = switch.detach().numpy(), dswitch.numpy()
        slopes = switch[:, None] * slopes + dswitch[:, None] * values
        values = switch[:, None] * values
    outside = r >= grid.cutoff
    values[outside] = 0.0
    slopes[outside] = 0.0
    return values, slopes


def force_design(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, grid: SplineGrid
) -> tuple[np.ndarray, np.ndarray]:
    """The matrix A (3n, K) with F = A θ: the pair forces on the n beads of one frame as a linear
    function of the knot values; and the frame's pair distances (one per pair, Å).

    Args:
        positions: (n, 3) bead positions, Å. cell: (3, 3) rows, Å. pbc: (3,) flags.
        grid: the knots.
    """
    edges, shifts = system_neighbors(positions, cell, pbc, grid.cutoff)
    i, j = edges
    d = positions[j] - positions[i] + shifts @ np.asarray(cell, dtype=float)
    r = np.linalg.norm(d, axis=1)
    _, slopes = spline_basis(r, grid)
    from scipy.sparse import csr_matrix

    n = len(positions)
    unit = d / r[:, None]
    # F_i = Σ_j φ'(r_ij) (x_j − x_i)/r_ij over the full (directed) list: a sum over edges by centre
    centre = csr_matrix((np.ones(len(i)), (i, np.arange(len(i)))), shape=(n, len(i)))
    design = np.stack([centre @ (slopes * unit[:, a : a + 1]) for a in range(3)], axis=1)
    return design.reshape(3 * n, grid.n_knots), r[i < j]


@dataclasses.dataclass
class PairMatchingResult:
    """A force-matched pair potential.

    Attributes:
        potential: the fitted :class:`SplinePair` (card backend ``spline-pair``).
        grid: its knots. values: (K,) knot values θ, eV.
        force_rmse: RMS of F_CG − F_mapped over all components of the fitted frames, eV/Å.
        force_rms: RMS of the mapped forces themselves, eV/Å (1 − rmse²/rms² is the share of
            the mapped force the pair potential explains).
        n_frames: frames used. pair_counts: (K − 1,) pairs per knot interval (coverage).
    """

    potential: SplinePair
    grid: SplineGrid
    values: np.ndarray
    force_rmse: float
    force_rms: float
    n_frames: int
    pair_counts: np.ndarray


def fit_pair_forces(
    frames: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    grid: SplineGrid,
    regularization: float = 1e-3,
) -> PairMatchingResult:
    """Force-match one pair potential for all bead pairs (see the module docstring).

    Args:
        frames: per frame ``(positions (n, 3) Å, forces (n, 3) eV/Å, cell (3, 3) Å, pbc (3,))``:
            the mapped CG positions and mapped forces.
        grid: the spline knots.
        regularization: λ of the second-difference penalty, relative to the mean diagonal of
            AᵀA (so it does not depend on the number of frames).

    Raises:
        MissingLabelsError: a frame without finite forces.
        DataFormatError: no frames, or no pair within the cutoff.
    """
    k_n = grid.n_knots
    normal = np.zeros((k_n, k_n))
    rhs = np.zeros(k_n)
    sum_f2, n_rows, n_frames = 0.0, 0, 0
    counts = np.zeros(k_n - 1)
    for index, (positions, forces, cell, pbc) in enumerate(frames):
        forces = np.asarray(forces, dtype=float)
        positions = np.asarray(positions, dtype=float)
        if forces.shape != positions.shape or not np.isfinite(forces).all():
            raise MissingLabelsError(
                f"frame {index}: force matching needs finite forces (n, 3) on every bead; "
                f"got shape {forces.shape}"
            )
        design, r = force_design(positions, np.asarray(cell, float), np.asarray(pbc), grid)
        target = forces.reshape(-1)
        normal += design.T @ design
        rhs += design.T @ target
        sum_f2 += float(target @ target)
        n_rows += target.size
        n_frames += 1
        counts += np.histogram(r, bins=grid.knots)[0]
    if n_frames == 0:
        raise DataFormatError("force matching got no frames")
    if counts.sum() == 0:
        raise DataFormatError(
            f"no bead pair lies within the cutoff ({grid.cutoff} Å): nothing to fit"
        )
    second = np.diff(np.eye(k_n), n=2, axis=0)
    scale = np.trace(normal) / k_n
    lhs = normal + regularization * scale * (second.T @ second)
    free = np.arange(k_n - 1)  # the last knot is fixed at φ(r_c) = 0
    values = np.zeros(k_n)
    values[free] = np.linalg.solve(lhs[np.ix_(free, free)], rhs[free])
    residual2 = values @ normal @ values - 2 * values @ rhs + sum_f2
    return PairMatchingResult(
        potential=grid.spline(values),
        grid=grid,
        values=values,
        force_rmse=float(np.sqrt(max(residual2, 0.0) / n_rows)),
        force_rms=float(np.sqrt(sum_f2 / n_rows)),
        n_frames=n_frames,
        pair_counts=counts,
    )


def frames_from_atoms(atoms_frames: Iterable) -> Iterable[tuple[np.ndarray, ...]]:
    """``(positions, forces, cell, pbc)`` of CG ``Atoms`` frames with forces (for
    :func:`fit_pair_forces`).

    Raises:
        MissingLabelsError: a frame without forces.
    """
    for index, atoms in enumerate(atoms_frames):
        try:
            forces = atoms.get_forces(apply_constraint=False)
        except Exception:
            raise MissingLabelsError(
                f"CG frame {index} has no forces; force matching needs mapped forces"
            ) from None
        yield atoms.positions, forces, atoms.cell.array, atoms.pbc
