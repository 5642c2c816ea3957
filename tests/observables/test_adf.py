"""compute_adf against angles from ase.geometry.get_angles over neighbours from ASE's
neighbour list (all periodic images)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.geometry import get_angles
from ase.neighborlist import neighbor_list

from ase_mlmd.errors import IncompatibleTrajectoriesError
from ase_mlmd.observables import compute_adf


def ase_angles(frames, centre: int, arm_a: int, arm_c: int, r_a: float, r_c: float):
    """All angles A–B–C (degrees) from ASE: neighbour vectors by neighbor_list, angles by
    get_angles; each unordered neighbour pair once."""
    angles = []
    for atoms in frames:
        i, j, vectors = neighbor_list("ijD", atoms, max(r_a, r_c))
        lengths = np.linalg.norm(vectors, axis=1)
        z = atoms.numbers
        for b in np.flatnonzero(z == centre):
            mine = i == b
            a_vec = vectors[mine & (z[j] == arm_a) & (lengths < r_a)]
            c_vec = vectors[mine & (z[j] == arm_c) & (lengths < r_c)]
            if arm_a == arm_c:
                k, l = np.triu_indices(len(a_vec), 1)
            else:
                k, l = (
                    g.ravel() for g in np.meshgrid(np.arange(len(a_vec)), np.arange(len(c_vec)))
                )
            if len(k):
                angles.append(get_angles(a_vec[k], c_vec[l]))
    return np.concatenate(angles)


def random_frames(cell, n_o=30, n_h=60, n_frames=3, seed=0):
    rng = np.random.default_rng(seed)
    numbers = np.array([8] * n_o + [1] * n_h)
    return [
        Atoms(numbers=numbers, positions=rng.random((len(numbers), 3)) @ cell, cell=cell, pbc=True)
        for _ in range(n_frames)
    ]


@pytest.mark.parametrize(
    "cell",
    [np.eye(3) * 7.5, np.array([[7.5, 0.0, 0.0], [2.0, 7.0, 0.0], [-1.5, 1.2, 7.8]])],
    ids=["cubic", "triclinic"],
)
def test_adf_matches_ase_angles(cell):
    frames = random_frames(cell)
    theta, density = compute_adf(frames, triplet=("H", "O", "H"), r_cut=2.0, n_bins=36)
    expected = ase_angles(frames, 8, 1, 1, 2.0, 2.0)
    reference, _ = np.histogram(expected, bins=36, range=(0.0, 180.0), density=True)
    assert len(expected) > 100
    np.testing.assert_allclose(theta, np.arange(2.5, 180, 5.0))
    np.testing.assert_allclose(density, reference, atol=1e-12)


def test_adf_of_different_arms_matches_ase_angles():
    frames = random_frames(np.array([[7.5, 0.0, 0.0], [2.0, 7.0, 0.0], [-1.5, 1.2, 7.8]]), seed=4)
    _, density = compute_adf(frames, triplet=("O", "O", "H"), r_cut=(3.0, 2.2), n_bins=30)
    expected = ase_angles(frames, 8, 8, 1, 3.0, 2.2)
    reference, _ = np.histogram(expected, bins=30, range=(0.0, 180.0), density=True)
    np.testing.assert_allclose(density, reference, atol=1e-12)


def test_adf_of_a_water_molecule_peaks_at_its_bond_angle():
    water = molecule("H2O")
    angle = get_angles(
        water.positions[[1]] - water.positions[0], water.positions[[2]] - water.positions[0]
    )
    theta, density = compute_adf(water, r_cut=1.2)
    assert theta[np.argmax(density)] == pytest.approx(angle[0], abs=0.5)
    assert density.sum() * (180 / 180) == pytest.approx(1.0)


def test_adf_errors():
    water = molecule("H2O")
    with pytest.raises(IncompatibleTrajectoriesError, match="needs N atoms"):
        compute_adf(water, triplet=("H", "N", "H"))
    with pytest.raises(ValueError, match="no H-O-H angle"):
        compute_adf(water, r_cut=0.5)
