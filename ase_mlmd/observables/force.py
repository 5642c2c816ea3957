"""Force error of a model against reference labels (METRICS.md §1)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ase_mlmd.errors import IncompatibleTrajectoriesError


def force_mae(
    predicted: np.ndarray | Sequence[np.ndarray], reference: np.ndarray | Sequence[np.ndarray]
) -> float:
    """Mean absolute error over all Cartesian force components, meV/Å.

    Args:
        predicted, reference: forces in eV/Å, as arrays of one shape (e.g. (T, N, 3)) or as
            matching lists of per-frame (Nₖ, 3) arrays (frames of different sizes).

    Returns:
        mean |F_pred − F_ref| × 1000, meV/Å.

    Raises:
        IncompatibleTrajectoriesError: the shapes differ (other frames or atoms).
    """
    if not isinstance(predicted, np.ndarray) and not isinstance(reference, np.ndarray):
        if len(predicted) != len(reference):
            raise IncompatibleTrajectoriesError(
                f"{len(predicted)} predicted frames but {len(reference)} reference frames"
            )
        pairs = [
            (np.asarray(p, float), np.asarray(r, float))
            for p, r in zip(predicted, reference, strict=True)
        ]
    else:
        pairs = [(np.asarray(predicted, float), np.asarray(reference, float))]
    total, count = 0.0, 0
    for k, (p, r) in enumerate(pairs):
        if p.shape != r.shape:
            raise IncompatibleTrajectoriesError(
                f"predicted forces {p.shape} and reference forces {r.shape} differ"
                + (f" in frame {k}" if len(pairs) > 1 else "")
                + "; compare forces on the same frames and atoms"
            )
        total += float(np.abs(p - r).sum())
        count += p.size
    if count == 0:
        raise ValueError("no force components to compare")
    return total / count * 1000.0
