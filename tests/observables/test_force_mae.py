"""force_mae: meV/Å over all Cartesian components."""

from __future__ import annotations

import numpy as np
import pytest

from ase_mlmd.errors import IncompatibleTrajectoriesError
from ase_mlmd.observables import force_mae


def test_force_mae_in_mev_per_angstrom():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(4, 9, 3))
    assert force_mae(reference + 0.012, reference) == pytest.approx(12.0)
    error = rng.normal(scale=0.05, size=reference.shape)
    assert force_mae(reference + error, reference) == pytest.approx(1000 * np.mean(np.abs(error)))


def test_force_mae_over_frames_of_different_sizes():
    predicted = [np.full((3, 3), 0.001), np.full((5, 3), 0.003)]
    reference = [np.zeros((3, 3)), np.zeros((5, 3))]
    # (9 × 1 + 15 × 3) / 24 components
    assert force_mae(predicted, reference) == pytest.approx((9 * 1 + 15 * 3) / 24)


def test_force_mae_rejects_mismatched_shapes():
    with pytest.raises(IncompatibleTrajectoriesError, match="differ"):
        force_mae(np.zeros((2, 9, 3)), np.zeros((2, 8, 3)))
    with pytest.raises(IncompatibleTrajectoriesError, match="frame 1"):
        force_mae([np.zeros((3, 3)), np.zeros((4, 3))], [np.zeros((3, 3)), np.zeros((5, 3))])
