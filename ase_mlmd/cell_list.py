"""Compiled cell list: the half neighbor list of a large periodic cell in one pass.

For a fully periodic cell whose perpendicular widths w_d hold at least three bins of width ≥
the cutoff r_c, atoms are binned by their wrapped fractional coordinates (n_d = ⌊w_d / r_c⌋
bins along lattice vector d). An atom within r_c of another differs from it by at most
r_c / w_d ≤ 1 / n_d in fractional coordinate d, so it lies in one of the 27 bins around it
(distinct bins because n_d ≥ 3, each with one periodic image). Each pair is kept once: each atom
looks at its own bin (partners of higher index) and at the 13 bins "after" it, so every pair of
bins is visited from one side only (an atom never sees its own image here: images are ≥ 3 r_c
apart). Pairs come out ordered by centre atom. This is the classic linked-cell construction of
MD codes; vesin handles every other cell (small, open, mixed periodicity).
"""

from __future__ import annotations

import math

import numba
import numpy as np


def cell_bins(cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> np.ndarray | None:
    """(3,) bins per lattice vector for :func:`half_cell_list`, or None when the cell is not
    fully periodic or narrower than three cutoffs along some direction."""
    if not bool(np.all(pbc)) or cutoff <= 0:
        return None
    volume = abs(float(np.linalg.det(cell)))
    if volume == 0.0:
        return None
    widths = [
        volume / float(np.linalg.norm(np.cross(cell[(d + 1) % 3], cell[(d + 2) % 3])))
        for d in range(3)
    ]
    bins = np.array([math.floor(w / cutoff) for w in widths], dtype=np.int64)
    return bins if bool(np.all(bins >= 3)) else None


def half_cell_list(
    positions: np.ndarray, cell: np.ndarray, cutoff: float, bins: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair within ``cutoff`` once, by cell list.

    Args:
        positions: (n, 3) Å, anywhere (wrapped internally; shifts refer to these positions).
        cell: (3, 3) lattice vectors as rows, Å.
        cutoff: Å.
        bins: :func:`cell_bins` of this cell and cutoff (not None).

    Returns:
        centres (E,) int32, neighbors (E,) int32 and shifts (E, 3) int64
        with r_ij = x_j − x_i + shifts @ cell, ordered by centre.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    n = positions.shape[0]
    density = n / abs(float(np.linalg.det(cell)))
    capacity = int(n * (0.75 * 4.19 * cutoff**3 * density + 4)) + 64
    while True:
        centres = np.empty(capacity, dtype=np.int32)
        neighbors = np.empty(capacity, dtype=np.int32)
        shifts = np.empty((capacity, 3), dtype=np.int64)
        count = _fill(
            positions, cell, np.linalg.inv(cell), cutoff, bins, centres, neighbors, shifts
        )
        if count >= 0:
            return centres[:count], neighbors[:count], shifts[:count]
        capacity *= 2


@numba.njit(cache=True)
def _fill(positions, cell, inverse, cutoff, bins, centres, neighbors, shifts):  # fmt: skip
    """Write the pairs into the arrays; their number, or -1 when they do not fit."""
    n = positions.shape[0]
    nx, ny, nz = bins[0], bins[1], bins[2]
    wrapped = np.empty((n, 3))
    image = np.empty((n, 3), dtype=np.int64)
    home = np.empty(n, dtype=np.int64)
    for a in range(n):
        cell_index = 0
        for d in range(3):
            f = (
                positions[a, 0] * inverse[0, d]
                + positions[a, 1] * inverse[1, d]
                + positions[a, 2] * inverse[2, d]
            )
            k = math.floor(f)
            f -= k
            if f >= 1.0:  # rounding of a value just below an integer
                f -= 1.0
                k += 1
            image[a, d] = k
            b = min(int(f * bins[d]), bins[d] - 1)
            cell_index = cell_index * bins[d] + b
        home[a] = cell_index
        for c in range(3):
            wrapped[a, c] = positions[a, c] - (
                image[a, 0] * cell[0, c] + image[a, 1] * cell[1, c] + image[a, 2] * cell[2, c]
            )
    # atoms sorted by bin (counting sort)
    n_bins = nx * ny * nz
    start = np.zeros(n_bins + 1, dtype=np.int64)
    for a in range(n):
        start[home[a] + 1] += 1
    for b in range(n_bins):
        start[b + 1] += start[b]
    order = np.empty(n, dtype=np.int64)
    fill = start[:-1].copy()
    for a in range(n):
        order[fill[home[a]]] = a
        fill[home[a]] += 1
    binned = np.empty((n, 3))  # wrapped positions in bin order: each bin's atoms contiguous
    for slot in range(n):
        binned[slot] = wrapped[order[slot]]
    cut2 = cutoff * cutoff
    count = 0
    capacity = centres.shape[0]
    for i in range(n):
        bx = home[i] // (ny * nz)
        by = (home[i] // nz) % ny
        bz = home[i] % nz
        # the own bin and the 13 bins "after" it: each pair of bins is visited once
        for offset in range(13, 27):
            dx, dy, dz = offset // 9 - 1, (offset // 3) % 3 - 1, offset % 3 - 1
            cx, sx = bx + dx, 0
            if cx < 0:
                cx, sx = cx + nx, -1
            elif cx >= nx:
                cx, sx = cx - nx, 1
            cy, sy = by + dy, 0
            if cy < 0:
                cy, sy = cy + ny, -1
            elif cy >= ny:
                cy, sy = cy - ny, 1
            cz, sz = bz + dz, 0
            if cz < 0:
                cz, sz = cz + nz, -1
            elif cz >= nz:
                cz, sz = cz - nz, 1
            ox = sx * cell[0, 0] + sy * cell[1, 0] + sz * cell[2, 0] - wrapped[i, 0]
            oy = sx * cell[0, 1] + sy * cell[1, 1] + sz * cell[2, 1] - wrapped[i, 1]
            oz = sx * cell[0, 2] + sy * cell[1, 2] + sz * cell[2, 2] - wrapped[i, 2]
            b = (cx * ny + cy) * nz + cz
            for slot in range(start[b], start[b + 1]):
                j = order[slot]
                if offset == 13 and j <= i:  # the own bin: each pair from its lower index
                    continue
                rx = binned[slot, 0] + ox
                ry = binned[slot, 1] + oy
                rz = binned[slot, 2] + oz
                if rx * rx + ry * ry + rz * rz >= cut2:
                    continue
                if count >= capacity:
                    return -1
                centres[count] = i
                neighbors[count] = j
                shifts[count, 0] = sx - image[j, 0] + image[i, 0]
                shifts[count, 1] = sy - image[j, 1] + image[i, 1]
                shifts[count, 2] = sz - image[j, 2] + image[i, 2]
                count += 1
    return count
