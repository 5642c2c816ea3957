"""Internal coordinates against ASE's own geometry, Kabsch RMSD against SciPy and analytic cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from scipy.spatial.transform import Rotation

from ase_mlmd.diffsim.geometry import (
    bond_angles,
    bond_lengths,
    dihedral_angles,
    kabsch_align,
    kabsch_rmsd,
    pair_distances,
)


def random_chain(n: int = 9, seed: int = 0) -> np.ndarray:
    return np.cumsum(np.random.default_rng(seed).normal(size=(n, 3)), axis=0)


def test_internal_coordinates_match_ase():
    x = random_chain()
    atoms = Atoms(f"C{len(x)}", positions=x)
    t = torch.from_numpy(x)
    n = len(x)
    expected_bonds = [atoms.get_distance(i, i + 1) for i in range(n - 1)]
    expected_angles = [atoms.get_angle(i, i + 1, i + 2) for i in range(n - 2)]
    expected_dihedrals = [atoms.get_dihedral(i, i + 1, i + 2, i + 3) for i in range(n - 3)]
    np.testing.assert_allclose(bond_lengths(t).numpy(), expected_bonds, rtol=1e-12)
    np.testing.assert_allclose(np.degrees(bond_angles(t).numpy()), expected_angles, atol=1e-8)
    # ASE gives dihedrals in [0, 360); ours are in (-180, 180]
    ours = np.degrees(dihedral_angles(t).numpy()) % 360.0
    np.testing.assert_allclose(ours, expected_dihedrals, atol=1e-8)
    pairs = pair_distances(t, 2).numpy()
    expected_pairs = [atoms.get_distance(i, j) for i in range(n) for j in range(i + 2, n)]
    np.testing.assert_allclose(pairs, expected_pairs, rtol=1e-12)
    # batch dimensions are kept
    assert dihedral_angles(torch.stack([t, t])).shape == (2, n - 3)


def test_dihedral_sign_convention():
    """IUPAC: looking along the central bond, a clockwise turn of the far bond is positive."""
    cis = torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 0, 1], [1, 0, 1]], dtype=torch.float64)
    trans = cis.clone()
    trans[3, 0] = -1.0
    gauche_plus = cis.clone()
    gauche_plus[3] = torch.tensor([0.0, 1.0, 1.0])  # +90° (ASE agrees: see the test above)
    assert abs(float(dihedral_angles(cis))) < 1e-12
    assert abs(abs(float(dihedral_angles(trans))) - np.pi) < 1e-12
    expected = Atoms("C4", positions=gauche_plus.numpy()).get_dihedral(0, 1, 2, 3)
    assert abs(np.degrees(float(dihedral_angles(gauche_plus))) % 360 - expected) < 1e-9


def test_kabsch_rmsd_of_rotated_copy_is_zero_and_matches_scipy():
    rng = np.random.default_rng(1)
    a = random_chain(12, seed=2)
    rotation = Rotation.random(random_state=3)
    b = rotation.apply(a) + rng.normal(size=3) * 5.0
    assert kabsch_rmsd(a, b) < 1e-10
    np.testing.assert_allclose(kabsch_align(a, b), b, atol=1e-10)

    noisy = b + rng.normal(scale=0.3, size=b.shape)
    # SciPy: the rotation minimizing the root-sum-squared distance of centred point sets
    centred_a = a - a.mean(axis=0)
    centred_b = noisy - noisy.mean(axis=0)
    _, rssd = Rotation.align_vectors(centred_b, centred_a)
    assert abs(kabsch_rmsd(a, noisy) - rssd / np.sqrt(len(a))) < 1e-10


@pytest.mark.parametrize("scale", [0.5, 1.3])
def test_kabsch_rmsd_of_a_scaled_copy_is_analytic(scale):
    """b = R s a + t: no rotation can undo the scaling, the best one is R itself, and the RMSD
    is |1 − s| times the radius of gyration of a."""
    a = random_chain(10, seed=4)
    centred = a - a.mean(axis=0)
    b = Rotation.random(random_state=5).apply(scale * centred) + np.array([3.0, -1.0, 2.0])
    gyration = np.sqrt((centred**2).sum(axis=1).mean())
    assert abs(kabsch_rmsd(a, b) - abs(1 - scale) * gyration) < 1e-10


def test_kabsch_does_not_superpose_a_mirror_image():
    """Only proper rotations: a chiral chain and its mirror image keep a positive RMSD, equal
    to the one SciPy's proper-rotation fit leaves."""
    a = random_chain(10, seed=6)
    mirror = a * np.array([1.0, 1.0, -1.0])
    rmsd = kabsch_rmsd(a, mirror)
    assert rmsd > 0.1
    _, rssd = Rotation.align_vectors(mirror - mirror.mean(0), a - a.mean(0))
    assert abs(rmsd - rssd / np.sqrt(len(a))) < 1e-10


def test_kabsch_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        kabsch_rmsd(np.zeros((4, 3)), np.zeros((5, 3)))
