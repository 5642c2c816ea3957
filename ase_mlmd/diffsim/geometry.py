"""Internal coordinates of a chain and RMSD after optimal superposition (Kabsch).

The internal coordinates are torch functions (differentiable, for losses through MD) over
chains of shape (..., n, 3): any leading batch dimensions are kept. Angles are in radians.
The Kabsch functions work on numpy arrays (analysis, reports).
"""

from __future__ import annotations

import numpy as np
import torch


def bond_lengths(positions: torch.Tensor) -> torch.Tensor:
    """(..., n - 1) distances between consecutive beads, Å."""
    return torch.linalg.norm(positions[..., 1:, :] - positions[..., :-1, :], dim=-1)


def bond_angles(positions: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(..., n - 2) angles θ_i at bead i + 1 between bonds to beads i and i + 2, in [0, π].

    Computed as atan2(|u × v|, u · v), accurate over the whole range; ``eps`` keeps the
    gradient finite for exactly collinear triples (θ = 0 or π).
    """
    u = positions[..., :-2, :] - positions[..., 1:-1, :]
    v = positions[..., 2:, :] - positions[..., 1:-1, :]
    cross = torch.linalg.cross(u, v, dim=-1)
    sine = torch.sqrt(cross.square().sum(dim=-1) + eps)
    return torch.atan2(sine, (u * v).sum(dim=-1))


def dihedral_angles(positions: torch.Tensor) -> torch.Tensor:
    """(..., n - 3) dihedral angles φ_i of beads i..i+3, in (−π, π] (IUPAC sign: trans = ±π).

    φ = atan2(|b₂| b₁ · (b₂ × b₃), (b₁ × b₂) · (b₂ × b₃)) with bᵢ the bond vectors; undefined
    (and not differentiable) when three consecutive beads are collinear.
    """
    b = positions[..., 1:, :] - positions[..., :-1, :]
    b1, b2, b3 = b[..., :-2, :], b[..., 1:-1, :], b[..., 2:, :]
    n1 = torch.linalg.cross(b1, b2, dim=-1)
    n2 = torch.linalg.cross(b2, b3, dim=-1)
    y = torch.linalg.norm(b2, dim=-1) * (b1 * n2).sum(dim=-1)
    x = (n1 * n2).sum(dim=-1)
    return torch.atan2(y, x)


def pair_indices(n: int, min_separation: int = 1, device=None) -> torch.Tensor:
    """(2, P) indices (i, j) with j − i ≥ ``min_separation``, in row-major order of i < j."""
    i, j = torch.triu_indices(n, n, offset=min_separation, device=device)
    return torch.stack([i, j])


def pair_distances(positions: torch.Tensor, min_separation: int = 1) -> torch.Tensor:
    """(..., P) distances of all bead pairs with j − i ≥ ``min_separation``, Å (order of
    :func:`pair_indices`)."""
    i, j = pair_indices(positions.shape[-2], min_separation, positions.device)
    return torch.linalg.norm(positions[..., j, :] - positions[..., i, :], dim=-1)


# ---------------------------------------------------------------------------- Kabsch
def kabsch_rotation(mobile: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The proper rotation R (3, 3) minimizing Σ |R (mᵢ − m̄) − (rᵢ − r̄)|² (no reflection).

    Args:
        mobile, reference: (n, 3) coordinates of the same n points.

    Returns:
        R such that ``(mobile - mobile.mean(0)) @ R.T`` is best superposed on the centred
        reference.
    """
    mobile = np.asarray(mobile, dtype=float)
    reference = np.asarray(reference, dtype=float)
    if mobile.shape != reference.shape or mobile.ndim != 2 or mobile.shape[1] != 3:
        raise ValueError(
            f"Kabsch needs two (n, 3) arrays of the same shape, got {mobile.shape} "
            f"and {reference.shape}"
        )
    p = mobile - mobile.mean(axis=0)
    q = reference - reference.mean(axis=0)
    covariance = p.T @ q  # H = Σ pᵢ qᵢᵀ
    u, _, vt = np.linalg.svd(covariance)
    sign = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0  # −1: the best orthogonal map reflects
    correction = np.diag([1.0, 1.0, sign])
    return vt.T @ correction @ u.T


def kabsch_align(mobile: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``mobile`` (n, 3) rotated and translated onto ``reference`` (n, 3) by Kabsch."""
    mobile = np.asarray(mobile, dtype=float)
    reference = np.asarray(reference, dtype=float)
    rotation = kabsch_rotation(mobile, reference)
    return (mobile - mobile.mean(axis=0)) @ rotation.T + reference.mean(axis=0)


def kabsch_rmsd(mobile: np.ndarray, reference: np.ndarray) -> float:
    """RMSD after optimal rigid superposition (translation + proper rotation), Å.

    sqrt(1/n Σ |R (mᵢ − m̄) − (rᵢ − r̄)|²) with R from :func:`kabsch_rotation`; a mirror image
    is not superposed (reflections are excluded), so it keeps a non-zero RMSD.
    """
    aligned = kabsch_align(mobile, reference)
    return float(np.sqrt(np.mean(np.sum((aligned - np.asarray(reference)) ** 2, axis=1))))
