"""Differentiable distance geometry: coordinates from target distances on a sparse graph.

The inner problem of ConfVAE's bilevel program: given target distances ``t_e`` on the edges
``e = (i, j)`` of a molecule's extended graph, find coordinates ``X`` (N, 3) minimising the
weighted distance-error objective (a weighted stress)::

    E(X) = sum_e w_e (|x_i - x_j| - t_e)^2                                           (Å^2)

with per-pair weights ``w_e`` (default 1; ConfVAE weighs bonds and 1-3 pairs far above longer
pairs, :func:`hop_weights`, so that inconsistent long-range targets bend torsions and angles,
not bonds). It is solved by Jacobi-preconditioned gradient descent::

    x_i <- x_i - alpha / (2 deg_i) * dE/dx_i,      deg_i = sum_{j ~ i} w_ij
         = (1 - alpha) x_i + alpha / deg_i * sum_{j ~ i} w_ij [x_j + t_ij (x_i - x_j) / d_ij]

(with ``alpha = 1`` the localised stress-majorisation update of the weighted stress;
``alpha < 1`` damps it because all atoms move at once). ``E`` depends on distances only, so it
is invariant to rotations, translations and reflections of ``X``; the solution is defined up
to these.

Start (:func:`embed`): the targets are completed to a full distance matrix by shortest paths
over the edge graph (an upper bound of every distance), embedded in 4D by classical
multidimensional scaling, and perturbed by seeded Gaussian noise; the descent runs first in 4D
(the extra dimension lets atoms pass each other, which removes most local minima such as a
hydrogen on the wrong side of its carbon), then the coordinates are projected onto their three
principal axes and the descent continues in 3D. (:func:`random_start` gives a plain seeded random
start instead.) With per-pair ``weights``, the 4D steps and the first half of the 3D steps use
the plain (unweighted) stress, which settles the global shape fast, and the second half of the
3D steps (with the unrolled ones) the weighted stress: strongly weighted bonds make the Jacobi
descent slow at moving whole fragments, so weighting from the start leaves the long-range shape
unconverged (measured on FreeSolv molecules with exact targets: all-atom RMSD 0.09 Å median
weighted throughout vs 0.003 Å with this schedule, 100 + 100 steps).

The outer gradient (of a loss on the final coordinates with respect to the targets, hence to
the network that predicted them) flows through the last ``unrolled`` steps only: the first
``steps - unrolled`` steps run without a graph and their result enters the unrolled steps as a
constant (truncated back-propagation through the inner optimisation, the approximation used
here for the bilevel program's hypergradient; ``unrolled = steps`` differentiates the whole
solver).

Several molecules are solved at once: their atoms are concatenated and the edges index the
concatenation (edges never join two molecules).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.sparse.csgraph import shortest_path

#: default damping of the Jacobi-preconditioned step
DEFAULT_ALPHA = 0.6
#: standard deviation (Å) of the seeded noise added to the MDS start
DEFAULT_NOISE = 0.3
#: distances below this (Å) are clamped when dividing, so coincident atoms do not give NaN
_EPS = 1e-6


def edge_lengths(positions: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Lengths |x_i - x_j| (E,) in Å of ``edges`` (2, E) for ``positions`` (N, 3)."""
    delta = positions[edges[0]] - positions[edges[1]]
    return torch.sqrt((delta * delta).sum(-1) + _EPS**2)


def hop_weights(hops: torch.Tensor, table: Sequence[float], dtype: torch.dtype) -> torch.Tensor:
    """Per-edge weights (E,) from each edge's bond count ``hops`` (E,): ``table[h - 1]``, the
    last entry for every longer pair (``table = (1,)``: all pairs alike)."""
    if not len(table) or min(table) <= 0:
        raise ValueError(f"DG weights must be a non-empty list of positive numbers, got {table}")
    values = torch.as_tensor(list(table), dtype=dtype)
    return values[(hops.long() - 1).clamp(0, len(table) - 1)]


def distance_error(
    positions: torch.Tensor,
    edges: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The inner objective ``sum_e w_e (|x_i - x_j| - t_e)^2`` (scalar, Å^2; w = 1 if None)."""
    error = (edge_lengths(positions, edges) - targets) ** 2
    return (error if weights is None else weights * error).sum()


def node_degrees(
    edges: torch.Tensor, n_atoms: int, dtype: torch.dtype, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Summed edge weight at each atom (N,) (the number of edges when ``weights`` is None),
    at least 1e-12 (an isolated atom does not move)."""
    if weights is None:
        weights = torch.ones(edges.shape[1], dtype=dtype, device=edges.device)
    weights = weights.to(dtype)
    degree = torch.zeros(n_atoms, dtype=dtype, device=edges.device)
    degree.index_add_(0, edges[0], weights).index_add_(0, edges[1], weights)
    return degree.clamp(min=1e-12)


def dg_step(
    positions: torch.Tensor,
    edges: torch.Tensor,
    targets: torch.Tensor,
    degree: torch.Tensor,
    alpha: float = DEFAULT_ALPHA,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """One preconditioned gradient step (see the module docstring); returns new (N, 3) Å.
    ``degree`` must be :func:`node_degrees` of the same ``weights``."""
    delta = positions[edges[0]] - positions[edges[1]]
    length = torch.sqrt((delta * delta).sum(-1, keepdim=True) + _EPS**2)
    force = (length - targets[:, None]) / length * delta  # half dE/dx_i from this edge
    if weights is not None:
        force = force * weights[:, None]
    grad = torch.zeros_like(positions)
    grad = grad.index_add(0, edges[0], force).index_add(0, edges[1], -force)
    return positions - alpha * grad / degree[:, None]


def random_start(
    n_atoms: int,
    generator: torch.Generator | None = None,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Seeded random start (N, 3), Å: Gaussian with standard deviation ``scale * N^(1/3)``."""
    noise = torch.randn(n_atoms, 3, generator=generator, dtype=dtype)
    return noise * (scale * max(n_atoms, 1) ** (1.0 / 3.0))


def solve_distance_geometry(
    targets: torch.Tensor,
    edges: torch.Tensor,
    start: torch.Tensor,
    steps: int = 200,
    unrolled: int = 10,
    alpha: float = DEFAULT_ALPHA,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Coordinates that fit ``targets`` on ``edges``, from ``start``.

    Args:
        targets: target distances (E,), Å; may require grad.
        edges: atom index pairs (2, E) into ``start``.
        start: initial coordinates (N, 3), Å (treated as a constant).
        steps: inner steps in all.
        unrolled: the last this many steps are recorded for autograd (gradient w.r.t.
            ``targets`` flows through them only); clipped to ``steps``.
        alpha: damping of the preconditioned step (0 < alpha <= 1).
        weights: per-edge weights (E,) of the stress (None: all 1); constants.

    Returns:
        coordinates (N, 3), Å, differentiable w.r.t. ``targets`` through the last ``unrolled``
        steps.
    """
    if steps < 0 or unrolled < 0:
        raise ValueError(f"steps and unrolled must be >= 0, got {steps} and {unrolled}")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    unrolled = min(unrolled, steps)
    if weights is not None:
        weights = weights.detach().to(start.dtype)
    degree = node_degrees(edges, start.shape[0], start.dtype, weights)
    positions = start.detach()
    with torch.no_grad():
        fixed = targets.detach()
        for _ in range(steps - unrolled):
            positions = dg_step(positions, edges, fixed, degree, alpha, weights)
    for _ in range(unrolled):
        positions = dg_step(positions, edges, targets, degree, alpha, weights)
    return positions


def aligned_msd(
    x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, reflection: bool = True
) -> torch.Tensor:
    """Mean squared deviation after optimal superposition, per molecule (B,), Å^2.

    ``min_{R, t} (1/n) sum_i |R x_i + t - y_i|^2`` over the atoms where ``mask`` is True, with
    ``R`` any orthogonal matrix (``reflection=True``) or a proper rotation. Computed without
    building ``R``: ``(|Xc|^2 + |Yc|^2 - 2 sum_k s_k sigma_k) / n`` with ``sigma_k`` the singular
    values of ``Xc^T Yc`` and ``s = (1, 1, sign det)`` for proper rotations (Kabsch), which is
    differentiable in ``x`` and ``y``.

    Args:
        x, y: padded coordinates (B, N, 3), Å.
        mask: (B, N) bool, the real atoms.
        reflection: allow improper superposition (mirror images count as equal).
    """
    weight = mask.to(x.dtype)[..., None]
    count = weight.sum(1).clamp(min=1.0)  # (B, 1)
    xc = (x - (x * weight).sum(1, keepdim=True) / count[:, None]) * weight
    yc = (y - (y * weight).sum(1, keepdim=True) / count[:, None]) * weight
    cross = xc.transpose(1, 2) @ yc  # (B, 3, 3)
    sigma = torch.linalg.svdvals(cross)
    if not reflection:
        sign = torch.sign(torch.linalg.det(cross)).detach()
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        sigma = torch.cat([sigma[:, :2], sigma[:, 2:] * sign[:, None]], dim=1)
    total = (xc * xc).sum((1, 2)) + (yc * yc).sum((1, 2)) - 2 * sigma.sum(1)
    return total.clamp(min=0.0) / count[:, 0]


def mds_start(targets: np.ndarray, edges: np.ndarray, n_atoms: int, dim: int = 4) -> np.ndarray:
    """Classical MDS embedding (N, dim), Å, of the shortest-path completion of ``targets``.

    Args:
        targets: (E,) distances of ``edges`` (2, E) of one connected molecule, Å.
    """
    weights = np.zeros((n_atoms, n_atoms))
    weights[edges[0], edges[1]] = np.maximum(targets, 1e-3)
    full = shortest_path(weights, directed=False)
    full[~np.isfinite(full)] = float(np.max(targets, initial=1.0)) * n_atoms  # disconnected
    centre = np.eye(n_atoms) - 1.0 / n_atoms
    gram = -0.5 * centre @ (full**2) @ centre
    values, vectors = np.linalg.eigh(gram)
    top = np.argsort(values)[::-1][:dim]
    coords = vectors[:, top] * np.sqrt(np.clip(values[top], 1e-6, None))
    if coords.shape[1] < dim:  # fewer atoms than dimensions
        coords = np.pad(coords, ((0, 0), (0, dim - coords.shape[1])))
    return coords


def principal_axes(positions: torch.Tensor, dim: int = 3) -> torch.Tensor:
    """Centred coordinates (N, D) projected onto their ``dim`` principal axes (N, dim)."""
    centred = positions - positions.mean(0)
    _, _, vt = torch.linalg.svd(centred, full_matrices=False)
    projected = centred @ vt[:dim].T
    if projected.shape[1] < dim:
        projected = torch.nn.functional.pad(projected, (0, dim - projected.shape[1]))
    return projected


def embed(
    targets: torch.Tensor,
    edges: torch.Tensor,
    counts: torch.Tensor,
    generator: torch.Generator | None = None,
    steps_4d: int = 150,
    steps: int = 150,
    unrolled: int = 10,
    noise: float = DEFAULT_NOISE,
    alpha: float = DEFAULT_ALPHA,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """3D coordinates (N_tot, 3), Å, fitting ``targets`` for several concatenated molecules.

    MDS start in 4D + seeded noise, ``steps_4d`` steps in 4D, projection to 3D per molecule,
    then ``steps`` steps in 3D of which the last ``unrolled`` carry the gradient w.r.t.
    ``targets``; with ``weights``, the second half of the 3D steps minimises the weighted
    stress (see the module docstring).

    Args:
        targets: (E,) target distances, Å (may require grad).
        edges: (2, E) pairs into the concatenated atoms; never across molecules.
        counts: (B,) atoms per molecule, in concatenation order.
        generator: seeds the start noise (None: torch's global generator).
        weights: per-edge stress weights (E,) (None: all 1), used in the last
            ``steps - steps // 2`` 3D steps (``unrolled`` is clipped to these).
    """
    dtype = targets.dtype
    fixed = targets.detach().cpu().numpy().astype(np.float64)
    edges_np = edges.cpu().numpy()
    starts = np.concatenate([[0], np.cumsum(counts.cpu().numpy())])
    parts = []
    for b in range(len(starts) - 1):
        lo, hi = int(starts[b]), int(starts[b + 1])
        inside = (edges_np[0] >= lo) & (edges_np[0] < hi)
        parts.append(mds_start(fixed[inside], edges_np[:, inside] - lo, hi - lo, dim=4))
    start = torch.from_numpy(np.concatenate(parts)).to(dtype)
    start = start + noise * torch.randn(start.shape, generator=generator, dtype=dtype)
    with torch.no_grad():
        start = solve_distance_geometry(targets.detach(), edges, start, steps_4d, 0, alpha)
        start = torch.cat(
            [principal_axes(start[int(starts[b]) : int(starts[b + 1])]) for b in range(len(parts))]
        )
        if weights is not None:
            start = solve_distance_geometry(targets.detach(), edges, start, steps // 2, 0, alpha)
            steps -= steps // 2
    return solve_distance_geometry(targets, edges, start, steps, unrolled, alpha, weights)
