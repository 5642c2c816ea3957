"""ASE frames -> arrays, and the compatibility checks between trajectories."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.io import Trajectory

from ase_mlmd.errors import IncompatibleTrajectoriesError, TrajectoryTooShortError
from ase_mlmd.observables import check_same_atoms, trajectory_arrays


def test_trajectory_arrays_from_an_ase_trajectory_file(tmp_path):
    water = molecule("H2O", vacuum=3.0)
    water.pbc = True
    path = tmp_path / "run.traj"
    with Trajectory(path, "w") as traj:
        for k in range(4):
            frame = water.copy()
            frame.positions += 0.1 * k
            frame.set_velocities(np.full((3, 3), 0.01 * k))
            traj.write(frame)
    arrays = trajectory_arrays(Trajectory(path), velocities=True)
    assert arrays.positions.shape == (4, 3, 3) and arrays.cells.shape == (4, 3, 3)
    np.testing.assert_allclose(arrays.positions[3] - arrays.positions[0], 0.3)
    np.testing.assert_allclose(arrays.velocities[2], 0.02)
    assert arrays.numbers.tolist() == [8, 1, 1] and arrays.pbc.all()


def test_frames_with_other_atoms_are_rejected():
    water = molecule("H2O")
    other = water.copy()
    other.numbers = [1, 8, 1]
    with pytest.raises(IncompatibleTrajectoriesError, match="frame 1"):
        trajectory_arrays([water, other])
    with pytest.raises(TrajectoryTooShortError, match="no frames"):
        trajectory_arrays([])


def test_check_same_atoms_tells_composition_from_order():
    water = np.array([8, 1, 1])
    with pytest.raises(
        IncompatibleTrajectoriesError,
        match=r"\(H2 O1\) and the simulation \(H1 O2\) hold different atoms",
    ):
        check_same_atoms(water, np.array([8, 8, 1]))
    with pytest.raises(IncompatibleTrajectoriesError, match="different order.*atom 0 is O"):
        check_same_atoms(water, np.array([1, 8, 1]))
    check_same_atoms(water, water.copy())
