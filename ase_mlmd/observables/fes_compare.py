"""Comparing two free-energy surfaces on the same grid (e.g. a CG simulation against mapped
reference data, METRICS.md §3).

Surfaces are F = −kT ln p in units of kT (pass ``kT=1`` to
:func:`ase_mlmd.observables.fes.compute_fes`), ``inf`` where no sample fell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FESComparison:
    """MAE of a surface against a reference over the bins the reference populates.

    Attributes:
        mae_kT: mean |F − F_ref − c| over the compared bins, kT; c is the constant that
            minimises the squared difference there (free energies are defined up to one).
        n_compared: bins with F_ref < threshold that the surface also visits.
        n_missing: bins with F_ref < threshold that the surface never visits.
        missing_population: reference probability in the missing bins.
        extra_population: probability of the surface in bins the reference never visits.
        threshold_kT: the reference cut, kT.
    """

    mae_kT: float
    n_compared: int
    n_missing: int
    missing_population: float
    extra_population: float
    threshold_kT: float


def compare_fes(free: np.ndarray, reference: np.ndarray, threshold: float = 4.0) -> FESComparison:
    """Compare ``free`` with ``reference`` (same grid, kT units, minimum 0, inf = empty).

    Args:
        free, reference: F grids (any shape, same shape), kT.
        threshold: compare the bins where the reference is below this, kT.

    Raises:
        ValueError: different shapes, or no reference bin below the threshold.
    """
    f, ref = np.asarray(free, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if f.shape != ref.shape:
        raise ValueError(f"surfaces on different grids: {f.shape} vs {ref.shape}")
    populated = ref < threshold
    if not populated.any():
        raise ValueError(f"the reference has no bin below {threshold} kT")
    visited = np.isfinite(f)
    compared = populated & visited
    missing = populated & ~visited
    p_ref = _probabilities(ref)
    p_f = _probabilities(f)
    if compared.any():
        delta = f[compared] - ref[compared]
        mae = float(np.mean(np.abs(delta - delta.mean())))
    else:
        mae = float("inf")
    return FESComparison(
        mae_kT=mae,
        n_compared=int(compared.sum()),
        n_missing=int(missing.sum()),
        missing_population=float(p_ref[missing].sum()),
        extra_population=float(p_f[~np.isfinite(ref)].sum()),
        threshold_kT=float(threshold),
    )


def _probabilities(free: np.ndarray) -> np.ndarray:
    """p = exp(−F) normalised (F in kT; inf → 0)."""
    with np.errstate(over="ignore"):
        weights = np.exp(-(free - free[np.isfinite(free)].min()))
    return weights / weights.sum()
