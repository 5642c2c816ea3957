"""Bond-angle distributions (ADF): the distribution of angles A–B–C at central atoms B.

Vectorized over chunks of frames: minimum-image vectors from each central atom to the
candidate neighbours, neighbours within the cutoff gathered into padded per-centre lists
(the longest list sets the padding), then every neighbour pair of every centre at once.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from ase_mlmd.errors import IncompatibleTrajectoriesError
from ase_mlmd.observables.pairs import BLOCK_ELEMENTS, CellGeometry
from ase_mlmd.observables.trajectory import check_minimum_image, resolve_trajectory


def _neighbours(
    coords: np.ndarray,
    metric: np.ndarray | None,
    cells: np.ndarray | None,
    centres: np.ndarray,
    others: np.ndarray,
    r_cut: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (centre, other) pair closer than r_cut in a chunk of frames.

    coords: (3, C, N) from ``CellGeometry.coordinates``; metric: (C or 1, 3, 3) h hᵀ and cells:
    the chunk's (C, 3, 3) cells, both None for open boundaries. The
    candidate test runs in float32 on wrapped fractional differences and the metric (see
    pairs.py; exact below half the cell width); only the pairs found are turned into Cartesian
    vectors, float64.

    Returns:
        row (M,) = frame · n_centres + centre position, other (M,) atom indices, vectors
        (M, 3) centre → other, Å; grouped by row.
    """
    fb, fx = coords[:, :, centres], coords[:, :, others]
    comps = [fx[k][:, None, :] - fb[k][:, :, None] for k in range(3)]  # (C, nB, nX) each
    if metric is None:
        squared = comps[0] * comps[0] + comps[1] * comps[1] + comps[2] * comps[2]
    else:
        for d in comps:
            d -= np.rint(d)
        g = metric[:, :, :, None, None]
        squared = g[:, 0, 0] * comps[0] * comps[0]
        for k, l, factor in ((1, 1, 1), (2, 2, 1), (0, 1, 2), (0, 2, 2), (1, 2, 2)):
            squared += (factor * g[:, k, l]) * comps[k] * comps[l]
    within = squared < np.float32(r_cut * r_cut)
    within &= centres[None, :, None] != others[None, None, :]
    frame, centre, other = np.nonzero(within)
    delta = np.stack([d[frame, centre, other] for d in comps], axis=1).astype(np.float64)
    if cells is not None:
        delta = np.einsum("mk,mkj->mj", delta, cells[frame])
    return frame * len(centres) + centre, others[other], delta


def _padded(
    row: np.ndarray, other: np.ndarray, vectors: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row neighbour lists padded to the longest: (n_rows, K, 3) vectors, (n_rows, K) atom
    indices (−1 = padding), (n_rows, K) validity."""
    counts = np.bincount(row, minlength=n_rows)
    width = max(int(counts.max()) if len(counts) else 0, 1)
    rank = np.arange(len(row)) - (np.cumsum(counts) - counts)[row]
    padded = np.zeros((n_rows, width, 3))
    index = np.full((n_rows, width), -1)
    padded[row, rank] = vectors
    index[row, rank] = other
    return padded, index, index >= 0


def compute_adf(
    trajectory: np.ndarray | Atoms | Iterable[Atoms],
    cells: np.ndarray | None = None,
    numbers: np.ndarray | None = None,
    *,
    triplet: tuple[str, str, str] = ("H", "O", "H"),
    r_cut: float | tuple[float, float] = 1.2,
    n_bins: int = 180,
    chunk_frames: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Distribution of the angle A–B–C over all centres B and neighbour pairs.

    A neighbour A (C) of a centre B is an atom of that element closer than the cutoff (minimum
    image in any triclinic cell when cells are given; open boundaries otherwise). Every
    unordered neighbour pair of every centre in every frame contributes one angle.

    Args:
        trajectory: positions (T, N, 3) Å, or ASE frames.
        cells: (3, 3) or (T, 3, 3) Å, or None for molecules.
        numbers: (N,) atomic numbers.
        triplet: element symbols (A, B, C), B the centre; default H–O–H.
        r_cut: cutoff B–A and B–C, Å (one value for both, or a pair when A ≠ C); at most half
            the smallest perpendicular cell width.
        n_bins: bins on [0°, 180°].

    Returns:
        θ (n_bins,) bin centres, degrees; density (n_bins,) per degree (Σ density Δθ = 1).

    Raises:
        IncompatibleTrajectoriesError: an element of the triplet is not in the trajectory.
        ValueError: no angle found (no centre has two neighbours within the cutoff).
    """
    positions, cells, numbers = resolve_trajectory(trajectory, cells, numbers)
    if numbers is None:
        raise ValueError("compute_adf needs the atomic numbers (numbers=...) of the atoms")
    r_ba, r_bc = (r_cut, r_cut) if np.isscalar(r_cut) else (float(r_cut[0]), float(r_cut[1]))
    symmetric = triplet[0] == triplet[2]
    if symmetric and r_ba != r_bc:
        raise ValueError("for A–B–A angles give one cutoff (both arms are the same element)")
    if cells is not None:
        check_minimum_image(cells, max(r_ba, r_bc), "compute_adf")
    index = {}
    for symbol in set(triplet):
        if symbol not in atomic_numbers:
            raise ValueError(f"unknown element {symbol!r} in the triplet {triplet}")
        index[symbol] = np.flatnonzero(numbers == atomic_numbers[symbol])
        if len(index[symbol]) == 0:
            raise IncompatibleTrajectoriesError(
                f"the ADF {'-'.join(triplet)} needs {symbol} atoms, the trajectory has none"
            )
    centres, arm_a, arm_c = index[triplet[1]], index[triplet[0]], index[triplet[2]]
    n_frames = len(positions)
    per_frame = len(centres) * max(len(arm_a), len(arm_c))
    chunk = chunk_frames or int(np.clip(BLOCK_ELEMENTS // per_frame, 1, n_frames))
    geometry = CellGeometry(cells)
    counts = np.zeros(n_bins, np.int64)
    scale = n_bins / 180.0
    for start in range(0, n_frames, chunk):
        stop = min(start + chunk, n_frames)
        coords = geometry.coordinates(positions[start:stop], start)
        metric = None if cells is None else geometry.metric_of(start, stop)
        h = None if cells is None else cells[start:stop]
        n_rows = (stop - start) * len(centres)
        va, ia, ka = _padded(*_neighbours(coords, metric, h, centres, arm_a, r_ba), n_rows)
        if symmetric:
            vc, ic, kc = va, ia, ka
            k, l = np.triu_indices(va.shape[1], 1)
        else:
            vc, ic, kc = _padded(*_neighbours(coords, metric, h, centres, arm_c, r_bc), n_rows)
            k, l = (g.ravel() for g in np.meshgrid(np.arange(va.shape[1]), np.arange(vc.shape[1])))
        keep = ka[:, k] & kc[:, l] & (ia[:, k] != ic[:, l])
        u, w = va[:, k][keep], vc[:, l][keep]  # (pairs, 3)
        cosine = np.einsum("pj,pj->p", u, w) / np.sqrt(
            np.einsum("pj,pj->p", u, u) * np.einsum("pj,pj->p", w, w)
        )
        theta = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
        bins = np.minimum((theta * scale).astype(np.intp), n_bins - 1)
        counts += np.bincount(bins, minlength=n_bins)
    total = counts.sum()
    if total == 0:
        raise ValueError(
            f"no {'-'.join(triplet)} angle within r_cut = {r_cut} Å in any frame; check the "
            "triplet and the cutoff"
        )
    width = 180.0 / n_bins
    return (np.arange(n_bins) + 0.5) * width, counts / (total * width)
