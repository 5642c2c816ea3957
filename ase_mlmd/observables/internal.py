"""Internal coordinates of molecules along a trajectory (bond lengths, bond angles, dihedrals)
and comparisons of their distributions (histograms, Jensen–Shannon divergence).

Open boundaries (molecules whole); positions (T, N, 3) in Å, angles in radians. Dihedrals use
the IUPAC sign in (−π, π], the same as :func:`ase_mlmd.observables.dihedrals.compute_dihedrals`
(mdtraj), computed here in numpy without a topology.
"""

from __future__ import annotations

import numpy as np


def _vectors(positions: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(T, K, 3) x_b − x_a."""
    return positions[:, b] - positions[:, a]


def _check(positions: np.ndarray, index: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim == 2:
        positions = positions[None]
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise ValueError(f"positions must be (T, N, 3), got {positions.shape}")
    index = np.asarray(index, dtype=np.int64).reshape(-1, width)
    if index.size and (index.min() < 0 or index.max() >= positions.shape[1]):
        raise ValueError(f"indices refer to atoms outside 0 … {positions.shape[1] - 1}")
    return positions, index


def compute_bond_lengths(positions: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """(T, n_bonds) distances of atom pairs ``bonds`` (n_bonds, 2), Å."""
    positions, bonds = _check(positions, bonds, 2)
    return np.linalg.norm(_vectors(positions, bonds[:, 0], bonds[:, 1]), axis=-1)


def compute_bond_angles(positions: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """(T, n_angles) angles i-j-k at the apex j of triples ``angles`` (n_angles, 3), radians."""
    positions, angles = _check(positions, angles, 3)
    u = _vectors(positions, angles[:, 1], angles[:, 0])
    v = _vectors(positions, angles[:, 1], angles[:, 2])
    return np.arctan2(np.linalg.norm(np.cross(u, v), axis=-1), (u * v).sum(-1))


def compute_dihedral_angles(positions: np.ndarray, quartets: np.ndarray) -> np.ndarray:
    """(T, n_dihedrals) dihedrals of quartets (i, j, k, l) (n_dihedrals, 4), radians,
    (−π, π], IUPAC sign."""
    positions, quartets = _check(positions, quartets, 4)
    b0 = _vectors(positions, quartets[:, 0], quartets[:, 1])
    b1 = _vectors(positions, quartets[:, 1], quartets[:, 2])
    b2 = _vectors(positions, quartets[:, 2], quartets[:, 3])
    n1, n2 = np.cross(b0, b1), np.cross(b1, b2)
    m = np.cross(n1, b1 / np.linalg.norm(b1, axis=-1, keepdims=True))
    return np.arctan2(-(m * n2).sum(-1), (n1 * n2).sum(-1))


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Probabilities (len(edges) − 1,) of ``values`` in the bins ``edges`` (values outside the
    range are counted in no bin; the probabilities are normalised by all values, so they sum to
    the fraction inside)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("no values to histogram")
    counts, _ = np.histogram(values, bins=edges)
    return counts / values.size


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence of two histograms (any shape, same shape), natural log.

    Each histogram is normalised to sum 1; JS = ½ KL(p‖m) + ½ KL(q‖m), m = (p + q)/2, with
    0 ln 0 = 0. Bounds: 0 (identical) … ln 2 (disjoint supports).

    Raises:
        ValueError: different shapes, negative entries, or an empty histogram.
    """
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms have different shapes {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any() or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("histograms must be non-negative with a positive sum")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log(a[mask] / m[mask])))

    return 0.5 * kl(p) + 0.5 * kl(q)
