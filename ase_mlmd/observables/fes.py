"""Free-energy surfaces over two periodic angles (alanine dipeptide φ, ψ) and their 1-D
potentials of mean force (Fu et al., MDsim; METRICS.md §1).

Grid: n × n points at −π + k · 2π/n, k = 0 … n − 1, on both axes (PLUMED's ``sum_hills`` grid,
so a surface from :func:`compute_fes` lines up with ``fes.dat``); F[i, j] is the free energy at
(φᵢ, ψⱼ) in kJ/mol, minimum shifted to 0. kT = 2.49 kJ/mol (300 K).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ase_mlmd.errors import IncompatibleTrajectoriesError

#: kT at 300 K, kJ/mol (METRICS.md)
KT_300K = 2.49
#: FES grid of the benchmark
FES_BINS = 60


def angle_grid(n_bins: int = FES_BINS) -> np.ndarray:
    """(n_bins,) grid angles −π + k · 2π/n_bins, radians."""
    return -np.pi + np.arange(n_bins) * (2 * np.pi / n_bins)


def _grid_index(angles: np.ndarray, n_bins: int) -> np.ndarray:
    """Index of the grid point nearest to each angle (periodic): bin k is centred on grid
    point k and spans ± π/n_bins."""
    a = np.asarray(angles, dtype=np.float64)
    return np.floor((a + np.pi) * (n_bins / (2 * np.pi)) + 0.5).astype(np.int64) % n_bins


def compute_fes(
    phi: np.ndarray,
    psi: np.ndarray,
    *,
    n_bins: int = FES_BINS,
    kT: float = KT_300K,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Free-energy surface F = −kT ln p(φ, ψ) from samples, on the periodic grid.

    Args:
        phi, psi: (T,) angles, radians (any branch; wrapped periodically).
        n_bins: grid points per axis. kT: kJ/mol.
        weights: (T,) sample weights (e.g. metadynamics reweighting); default equal.

    Returns:
        φ grid (n_bins,), ψ grid (n_bins,), radians; F (n_bins, n_bins), kJ/mol, F[i, j] at
        (φᵢ, ψⱼ), minimum 0, ``inf`` where no sample fell.
    """
    phi, psi = np.asarray(phi, dtype=np.float64), np.asarray(psi, dtype=np.float64)
    if phi.shape != psi.shape or phi.ndim != 1 or len(phi) == 0:
        raise ValueError(
            f"phi and psi must be equal-length 1-D arrays, got {phi.shape}, {psi.shape}"
        )
    if not (np.isfinite(phi).all() and np.isfinite(psi).all()):
        raise ValueError("phi and psi contain NaN or inf")
    cell = _grid_index(phi, n_bins) * n_bins + _grid_index(psi, n_bins)
    counts = np.bincount(cell, weights=weights, minlength=n_bins * n_bins)
    with np.errstate(divide="ignore"):
        free = -kT * np.log(counts.reshape(n_bins, n_bins) / counts.sum())
    free -= free[np.isfinite(free)].min()
    grid = angle_grid(n_bins)
    return grid, grid.copy(), free


def _pmf(free: np.ndarray, axis: int, kT: float) -> np.ndarray:
    """−kT ln Σ exp(−F/kT) over ``axis`` (stable log-sum-exp), minimum shifted to 0."""
    low = np.min(free)
    with np.errstate(over="ignore"):
        summed = np.exp(-(free - low) / kT).sum(axis=axis)
    with np.errstate(divide="ignore"):
        pmf = -kT * np.log(summed)
    return pmf - pmf[np.isfinite(pmf)].min()


def compute_pmf(free: np.ndarray, kT: float = KT_300K) -> tuple[np.ndarray, np.ndarray]:
    """1-D potentials of mean force of a surface F[i, j] (φᵢ, ψⱼ), kJ/mol.

    PMF_φ(i) = −kT ln Σⱼ exp(−F[i, j]/kT) and PMF_ψ(j) likewise over i, each minimum shifted to
    0 (the normalisation of p = exp(−F/kT) drops out with the shift).

    Returns:
        PMF_φ (n_φ,), PMF_ψ (n_ψ,), kJ/mol; ``inf`` where the surface is ``inf`` throughout.
    """
    free = np.asarray(free, dtype=np.float64)
    if free.ndim != 2 or not np.isfinite(free).any():
        raise ValueError(f"F must be a 2-D grid with finite values, got shape {free.shape}")
    return _pmf(free, 1, kT), _pmf(free, 0, kT)


def pmf_mae(pmf_a: np.ndarray, pmf_b: np.ndarray, clip: float | None = None) -> float:
    """PMF MAE = mean |PMF_a − PMF_b| × 2π, kJ/mol (range-scaled over the 2π of the angle).

    Without ``clip``: ``inf`` when one PMF is infinite where the other is not (a region one
    side never visits) — the metric of a metadynamics FES. With ``clip`` (kJ/mol) both PMFs are
    first capped at that value, so bins above it on both sides (or never visited) agree, and
    a region that one side reaches below the cap but the other never visits costs
    ``clip − PMF`` there: the finite form for plain (unbiased) runs, whose sampling cannot
    resolve free energies above ≈ kT ln(number of frames).

    Raises:
        IncompatibleTrajectoriesError: the PMFs are on different grids.
        ValueError: a non-positive ``clip``.
    """
    a, b = np.asarray(pmf_a, dtype=np.float64), np.asarray(pmf_b, dtype=np.float64)
    if a.shape != b.shape:
        raise IncompatibleTrajectoriesError(
            f"the PMFs are on different grids ({a.shape} vs {b.shape}); compute both with the "
            "same n_bins"
        )
    if clip is not None:
        if not clip > 0:
            raise ValueError(f"clip must be a positive free energy (kJ/mol), got {clip}")
        a, b = np.minimum(a, clip), np.minimum(b, clip)
    with np.errstate(invalid="ignore"):
        diff = np.where(a == b, 0.0, np.abs(a - b))  # inf − inf counts as equal
    return float(np.mean(diff) * 2 * np.pi)


@dataclass(frozen=True)
class Basin:
    """A local minimum of a free-energy surface: angles in radians, energy in kJ/mol above
    the global minimum, grid indices (i, j)."""

    phi: float
    psi: float
    energy: float
    index: tuple[int, int]

    @property
    def degrees(self) -> tuple[float, float]:
        """(φ, ψ) in degrees."""
        return float(np.degrees(self.phi)), float(np.degrees(self.psi))


def find_basins(
    free: np.ndarray,
    phi: np.ndarray | None = None,
    psi: np.ndarray | None = None,
    *,
    max_energy: float | None = None,
) -> list[Basin]:
    """Local minima of a periodic surface F[i, j], lowest first.

    A grid point is a basin when it is lower than all 8 neighbours (periodic wrap). A noisy
    sampled surface has spurious minima; ``max_energy`` (kJ/mol) keeps only the low ones.

    Args:
        free: (n_φ, n_ψ) kJ/mol. phi, psi: grid angles, radians (default :func:`angle_grid`).
        max_energy: keep basins at most this far above the global minimum.
    """
    free = np.asarray(free, dtype=np.float64)
    phi = angle_grid(free.shape[0]) if phi is None else np.asarray(phi)
    psi = angle_grid(free.shape[1]) if psi is None else np.asarray(psi)
    lowest = np.full(free.shape, np.inf)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                lowest = np.minimum(lowest, np.roll(free, (di, dj), axis=(0, 1)))
    reference = free[np.isfinite(free)].min()
    basins = [
        Basin(float(phi[i]), float(psi[j]), float(free[i, j] - reference), (int(i), int(j)))
        for i, j in zip(*np.nonzero((free < lowest) & np.isfinite(free)), strict=True)
    ]
    if max_energy is not None:
        basins = [b for b in basins if b.energy <= max_energy]
    return sorted(basins, key=lambda b: b.energy)
