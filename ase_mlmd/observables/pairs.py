"""Histograms of pair distances over many frames: the kernel under RDF, h(r) and the RDF
stability window.

Frames are processed in chunks and, within a chunk, all pairs between two groups of atoms at
once by numpy broadcasting; histograms are one ``np.bincount`` per block. No Python loop runs
over frames or pairs, and working memory stays bounded (:data:`BLOCK_ELEMENTS` distances at
a time). Arithmetic is float32 (distances to ~1e-6 Å, far below any bin width used here).

Minimum image, any triclinic cell: positions go to fractional coordinates s = x · h⁻¹ and a
pair's fractional difference is wrapped to [-½, ½). For every pair whose minimum-image
distance d is below half the smallest perpendicular cell width w, this wrapped vector *is* the
minimum image: each fractional component of a vector v is |v · n̂ₖ| / wₖ ≤ |v| / w < ½. So when
r_max ≤ w / 2 (checked by the callers) the wrap alone gives exactly what a search over all 27
neighbouring images gives, for every distance that lands in the histogram; squared lengths use
the metric G = h hᵀ, d² = Δsᵀ G Δs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

#: pair distances evaluated at once per block: about 20 bytes each (32 for triclinic cells), so
#: that a block's work arrays stay in the CPU cache (measured: 2^18 is ~1.7x faster than 2^22)
BLOCK_ELEMENTS = 1 << 18


@dataclass(frozen=True)
class PairGroup:
    """The pairs of one histogram: atoms ``a`` × atoms ``b``.

    ``same=True`` means ``a`` and ``b`` are the same atoms: every unordered pair i ≠ j is counted
    once (n (n − 1) / 2 pairs). Otherwise a and b must not share atoms (na · nb pairs).
    """

    a: np.ndarray
    b: np.ndarray
    same: bool

    @property
    def n_pairs(self) -> int:
        na = len(self.a)
        return na * (na - 1) // 2 if self.same else na * len(self.b)


class _Buffers:
    """Work arrays reused across blocks (fresh allocations would page-fault every block)."""

    def __init__(self, size: int, triclinic: bool) -> None:
        self.size = size
        self.d = np.empty(size, np.float32)
        self.tmp = np.empty(size, np.float32)
        self.acc = np.empty(size, np.float32)
        self.idx = np.empty(size, np.intp)
        self.comps = [np.empty(size, np.float32) for _ in range(3)] if triclinic else []

    def view(self, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return array[: int(np.prod(shape))].reshape(shape)


class CellGeometry:
    """What a chunk needs to know about the cells: kind ('open', 'cubic', 'orthorhombic',
    'triclinic'), and the metric per frame."""

    def __init__(self, cells: np.ndarray | None) -> None:
        self.cells = cells
        if cells is None:
            self.kind, self.constant = "open", True
            return
        self.constant = bool(np.all(cells == cells[0]))
        metric = cells @ cells.transpose(0, 2, 1)  # (T, 3, 3), G = h hᵀ
        diagonal = np.diagonal(metric, axis1=1, axis2=2)  # (T, 3)
        off = np.abs(metric - diagonal[:, :, None] * np.eye(3)).max()
        if off > 1e-12 * diagonal.max():
            self.kind = "triclinic"
        elif self.constant and np.ptp(diagonal[0]) <= 1e-12 * diagonal[0].max():
            self.kind = "cubic"
        else:
            self.kind = "orthorhombic"
        self.metric = metric.astype(np.float32)
        self.inverse = np.linalg.inv(cells[0]) if self.constant else None

    def coordinates(self, positions: np.ndarray, start: int) -> np.ndarray:
        """(3, C, N) float32: wrapped fractional coordinates (periodic) or Cartesian positions
        relative to each frame's centroid (open)."""
        if self.kind == "open":
            local = positions - positions.mean(axis=1, keepdims=True)
        else:
            if self.constant:
                local = positions @ self.inverse
            else:
                cells = self.cells[start : start + len(positions)]
                local = np.einsum("tnj,tjk->tnk", positions, np.linalg.inv(cells))
            local -= np.floor(local)
        return np.ascontiguousarray(local.transpose(2, 0, 1), dtype=np.float32)

    def metric_of(self, start: int, stop: int) -> np.ndarray:
        """(C, 3, 3) or (1, 3, 3) float32 metric; broadcastable over (C, na, nb) blocks."""
        return self.metric[:1] if self.constant else self.metric[start:stop]


def _block_counts(
    left: list[np.ndarray],
    right: list[np.ndarray],
    shape: tuple[int, int, int],
    geometry: CellGeometry,
    metric: np.ndarray | None,
    scale: float,
    cap: int,
    per_frame: bool,
    buffers: _Buffers,
) -> np.ndarray:
    """Histogram of the distances left[k] − right[k] (each broadcastable to ``shape`` =
    (C, rows, cols), k = x, y, z). Returns (C, cap + 1) per frame or (1, cap + 1) summed, int64;
    bin ``cap`` collects everything beyond it (open boundaries only)."""
    n_frames = shape[0]
    acc = buffers.view(buffers.acc, shape)
    tmp = buffers.view(buffers.tmp, shape)
    periodic = geometry.kind != "open"
    if geometry.kind == "triclinic":
        comps = [buffers.view(c, shape) for c in buffers.comps]
        for k in range(3):
            np.subtract(left[k], right[k], out=comps[k])
            np.rint(comps[k], out=tmp)
            comps[k] -= tmp
        np.multiply(comps[0], comps[0], out=acc)
        acc *= metric[:, 0, 0][:, None, None]
        for k, l, factor in ((1, 1, 1), (2, 2, 1), (0, 1, 2), (0, 2, 2), (1, 2, 2)):
            np.multiply(comps[k], comps[l], out=tmp)
            tmp *= factor * metric[:, k, l][:, None, None]
            acc += tmp
        np.maximum(acc, 0.0, out=acc)  # float32 round-off of ΔsᵀGΔs near d = 0
    else:
        d = buffers.view(buffers.d, shape)
        weighted = geometry.kind == "orthorhombic"
        for k in range(3):
            np.subtract(left[k], right[k], out=d)
            if periodic:
                np.rint(d, out=tmp)
                d -= tmp
            target = acc if k == 0 else tmp
            np.multiply(d, d, out=target)
            if weighted:
                target *= metric[:, k, k][:, None, None]
            if k:
                acc += tmp
    np.sqrt(acc, out=acc)
    acc *= np.float32(scale)
    if not periodic:  # unbounded distances: clip (periodic ones are bounded by the cell)
        np.minimum(acc, np.float32(cap), out=acc)
    idx = buffers.view(buffers.idx, shape)
    np.copyto(idx, acc, casting="unsafe")  # floor, as all values are >= 0
    width = cap + 1
    rows = n_frames if per_frame else 1
    if per_frame:
        idx += (np.arange(n_frames, dtype=np.intp) * width)[:, None, None]
    counts = np.bincount(idx.ravel(), minlength=rows * width)
    return counts.reshape(rows, width)


def _group_blocks(
    coords: np.ndarray, group: PairGroup, budget: int
) -> Iterator[tuple[list[np.ndarray], list[np.ndarray], tuple[int, int, int]]]:
    """Blocks (left, right, shape) covering every pair of ``group`` once, each with at most
    about ``budget`` elements. coords: (3, C, N).

    Two different groups: a tile of a-atoms × all b-atoms by broadcasting. One group of n atoms:
    the pairs (i, i + s mod n) for shifts s = 1 … ⌊(n − 1)/2⌋ over all i, read as sliding
    windows of the doubled coordinate array (no gather, no double counting), plus, for even n,
    the pairs (i, i + n/2) for i < n/2.
    """
    n_frames = coords.shape[1]
    if not group.same:
        fa, fb = coords[:, :, group.a], coords[:, :, group.b]
        tile = max(1, budget // (n_frames * len(group.b)))
        for a0 in range(0, len(group.a), tile):
            part = fa[:, :, a0 : a0 + tile]
            shape = (n_frames, part.shape[2], len(group.b))
            yield [p[:, :, None] for p in part], [q[:, None, :] for q in fb], shape
        return
    f = coords[:, :, group.a]
    n = f.shape[2]
    doubled = np.concatenate([f, f], axis=2)  # (3, C, 2n)
    windows = sliding_window_view(doubled, n, axis=2)  # (3, C, n + 1, n): [.., s, i] = f[i + s]
    shifts = (n - 1) // 2
    tile = max(1, budget // (n_frames * n))
    for s0 in range(1, shifts + 1, tile):
        s1 = min(s0 + tile, shifts + 1)
        shape = (n_frames, s1 - s0, n)
        yield [fk[:, None, :] for fk in f], [w[:, s0:s1, :] for w in windows], shape
    if n % 2 == 0:
        half = n // 2
        yield (
            [fk[:, None, :half] for fk in f],
            [fk[:, None, half:] for fk in f],
            (n_frames, 1, half),
        )


def chunk_frames_for(groups: Sequence[PairGroup], n_frames: int) -> int:
    """Frames per chunk so that the largest block holds about :data:`BLOCK_ELEMENTS` pairs."""
    largest = max(len(g.a) * len(g.b) for g in groups)
    return int(np.clip(BLOCK_ELEMENTS // max(largest, 1), 1, max(n_frames, 1)))


def iter_pair_counts(
    positions: np.ndarray,
    cells: np.ndarray | None,
    groups: Sequence[PairGroup],
    r_max: float,
    n_bins: int,
    *,
    per_frame: bool = False,
    chunk_frames: int | None = None,
    progress: bool = False,
) -> Iterator[tuple[int, np.ndarray]]:
    """Pair-distance histograms, chunk by chunk.

    Bins are [k Δ, (k + 1) Δ) with Δ = r_max / n_bins; distances ≥ r_max are dropped. The
    caller checks r_max against the cell (see module doc) and that positions are finite.

    Args:
        positions: (T, N, 3) Å. cells: (T, 3, 3) Å, or None for open boundaries.
        groups: the P pair groups. per_frame: histograms per frame instead of summed.
        chunk_frames: frames per chunk (default :func:`chunk_frames_for`).

    Yields:
        (first frame of the chunk, counts): counts (C, P, n_bins) int64 per frame, or
        (P, n_bins) summed over the chunk's frames.
    """
    geometry = CellGeometry(cells)
    n_frames = len(positions)
    chunk = chunk_frames or chunk_frames_for(groups, n_frames)
    size = BLOCK_ELEMENTS
    for g in groups:
        size = max(size, min(chunk, n_frames) * len(g.b))
    buffers = _Buffers(size, geometry.kind == "triclinic")
    scale = n_bins / r_max
    if geometry.kind == "open":
        cap = 4 * n_bins
    else:  # |Δs · h| ≤ ½ Σ|a_i| for a wrapped fractional difference Δs
        reach = 0.5 * np.linalg.norm(cells, axis=2).sum(axis=1).max()
        cap = max(n_bins, int(reach * scale) + 2)
    if geometry.kind == "cubic":
        scale *= float(np.sqrt(geometry.metric[0, 0, 0]))  # fractional → Å folded into the scale
    starts = range(0, n_frames, chunk)
    if progress:
        from ase_mlmd.progress import progress_bar

        starts = progress_bar(starts, desc="pair histograms", unit="chunk")
    for start in starts:
        stop = min(start + chunk, n_frames)
        coords = geometry.coordinates(positions[start:stop], start)
        metric = None if geometry.kind in ("open", "cubic") else geometry.metric_of(start, stop)
        rows = stop - start if per_frame else 1
        out = np.zeros((rows, len(groups), n_bins), np.int64)
        for p, group in enumerate(groups):
            for left, right, shape in _group_blocks(coords, group, size):
                counts = _block_counts(
                    left, right, shape, geometry, metric, scale, cap, per_frame, buffers
                )
                out[:, p] += counts[:, :n_bins]
        yield start, (out if per_frame else out[0])


def pair_counts(
    positions: np.ndarray,
    cells: np.ndarray | None,
    groups: Sequence[PairGroup],
    r_max: float,
    n_bins: int,
    *,
    chunk_frames: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """(P, n_bins) int64 pair-distance histograms summed over all frames; arguments as
    :func:`iter_pair_counts`."""
    total = np.zeros((len(groups), n_bins), np.int64)
    for _, counts in iter_pair_counts(
        positions, cells, groups, r_max, n_bins, chunk_frames=chunk_frames, progress=progress
    ):
        total += counts
    return total
