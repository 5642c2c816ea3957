"""Neighbor lists for batches of systems.

Every pair within the cutoff is listed in both directions (a *full* list) so that models may
treat edges as directed. Periodic images are handled for any cell, including cells smaller than
twice the cutoff (several images of the same neighbor are then separate edges).

Periodic systems and large open ones go through vesin, one call per system. Small open systems
(molecules, clusters: up to :data:`ALL_PAIRS_MAX_ATOMS` atoms) are handled together by one
vectorized all-pairs test in torch, on the batch's device: for a batch of many small molecules
this replaces one vesin call per molecule by a few tensor operations. Both give the same pairs
(``d < cutoff``, no self pairs), ordered by centre atom then neighbor.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
import vesin

from ase_mlmd.cell_list import cell_bins, half_cell_list

_cache = threading.local()

#: open (non-periodic) systems with at most this many atoms get the batched all-pairs test
ALL_PAIRS_MAX_ATOMS = 128
#: candidate pairs tested at once by the all-pairs path (bounds its memory)
ALL_PAIRS_CHUNK = 1 << 22


def _vesin(cutoff: float, full_list: bool = True) -> vesin.NeighborList:
    """A vesin neighbor-list object for ``cutoff`` (full or half), reused within a thread.

    Single-threaded: the lists here are per system and small, and vesin's OpenMP threads would
    compete with torch's for the same cores.
    """
    lists = _cache.__dict__.setdefault("lists", {})
    key = (float(cutoff), bool(full_list))
    if key not in lists:
        if len(lists) > 16:
            lists.clear()
        lists[key] = vesin.NeighborList(cutoff=key[0], full_list=key[1], n_threads=1)
    return lists[key]


def system_neighbors(
    positions: np.ndarray | torch.Tensor,
    cell: np.ndarray | torch.Tensor,
    pbc: np.ndarray | torch.Tensor,
    cutoff: float,
    full_list: bool = True,
) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
    """Full (or half) neighbor list of one system.

    Args:
        positions: (n, 3) Cartesian positions, Å.
        cell: (3, 3) cell, rows are lattice vectors, Å (ignored along non-periodic axes).
        pbc: (3,) periodic flags.
        cutoff: pair cutoff, Å.
        full_list: every pair both ways; False: each pair once (for NumPy input and a large
            periodic cell the compiled cell list of :mod:`ase_mlmd.cell_list`, else vesin's
            half list).

    Returns:
        ``edge_index`` (2, E) int64 with rows (centre i, neighbor j) and ``cell_shifts`` (E, 3)
        integer image shifts such that ``r_ij = x_j - x_i + shifts @ cell``. numpy in, numpy
        out; torch in, torch out on the same device.
    """
    if isinstance(positions, torch.Tensor):
        nl = _vesin(cutoff, full_list)
        pos = positions.detach().to(torch.float64)
        box = torch.as_tensor(cell).detach().to(device=pos.device, dtype=torch.float64)
        periodic = torch.as_tensor(pbc, dtype=torch.bool, device=pos.device)
        i, j, shifts = nl.compute(pos, box, periodic, "ijS")
        edge_index = torch.stack([i.to(torch.int64), j.to(torch.int64)])
        return edge_index, shifts.to(torch.int64)
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    box = np.ascontiguousarray(cell, dtype=np.float64)
    periodic = np.asarray(pbc, dtype=bool)
    bins = None if full_list else cell_bins(box, periodic, cutoff)
    if bins is not None:  # a half list of a large periodic cell: the compiled cell list
        i, j, shifts = half_cell_list(pos, box, cutoff, bins)
    else:
        i, j, shifts = _vesin(cutoff, full_list).compute(pos, box, periodic, "ijS")
    edge_index = np.empty((2, len(i)), dtype=np.int64)
    edge_index[0], edge_index[1] = i, j
    return edge_index, shifts.astype(np.int64, copy=False)


def _all_pairs_neighbors(
    positions: torch.Tensor,
    starts: torch.Tensor,
    counts: torch.Tensor,
    cutoff: float,
    full_list: bool = True,
) -> torch.Tensor:
    """All pairs i != j (i < j if not ``full_list``) with |x_j - x_i| < cutoff inside each of
    several open systems.

    Args:
        positions: (N, 3) positions of the whole batch.
        starts: (S,) index of each system's first atom.
        counts: (S,) atoms per system.
        cutoff: pair cutoff, Å.

    Returns:
        (2, E) int64 global indices, grouped by system in the given order, then by i, then j.
    """
    device = positions.device
    sizes = counts * counts
    bounds = torch.cumsum(sizes, 0).tolist()
    edges = []
    lo, first = 0, 0
    # chunks of whole systems, each with at most ALL_PAIRS_CHUNK candidate pairs (or one system)
    while first < len(bounds):
        last = first
        while last + 1 < len(bounds) and bounds[last + 1] - lo <= ALL_PAIRS_CHUNK:
            last += 1
        part = slice(first, last + 1)
        n, start, size = counts[part], starts[part], sizes[part]
        system = torch.repeat_interleave(torch.arange(len(n), device=device), size)
        offset = torch.cumsum(size, 0) - size
        local = torch.arange(int(bounds[last]) - lo, device=device) - offset[system]
        width = n[system]
        i = start[system] + torch.div(local, width, rounding_mode="floor")
        j = start[system] + local % width
        d2 = (positions.index_select(0, j) - positions.index_select(0, i)).square().sum(dim=1)
        keep = (d2 < cutoff * cutoff) & ((i != j) if full_list else (i < j))
        edges.append(torch.stack([i[keep], j[keep]]))
        lo, first = int(bounds[last]), last + 1
    return torch.cat(edges, dim=1)


def batch_neighbors(
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    system_idx: torch.Tensor,
    cutoff: float,
    full_list: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full (or half) neighbor lists of every system in a batch, with global atom indices.

    Small open systems are handled together by a vectorized all-pairs test, the others by
    vesin (see the module docstring); the pairs are the same either way.

    Args:
        positions: (N, 3) positions of all atoms, Å.
        cell: (B, 3, 3) cells.
        pbc: (B, 3) periodic flags.
        system_idx: (N,) system of each atom; atoms of one system are contiguous.
        cutoff: pair cutoff, Å.
        full_list: every pair both ways; False: each pair once (a half list; an atom's pairs
            with its own periodic images once per image pair ±S).

    Returns:
        ``edge_index`` (2, E) int64 and ``cell_shifts`` (E, 3) int64 on the input's device,
        grouped by system in batch order.
    """
    device = positions.device
    counts = torch.bincount(system_idx, minlength=cell.shape[0])
    small_open = ~pbc.detach().to(device).any(dim=1) & (counts <= ALL_PAIRS_MAX_ATOMS)
    small_open &= counts > 0
    if bool(small_open.all()):
        starts = torch.cumsum(counts, 0) - counts
        pos = positions.detach().to(torch.float64)
        edge_index = _all_pairs_neighbors(pos, starts, counts, cutoff, full_list)
        shifts = torch.zeros((edge_index.shape[1], 3), dtype=torch.int64, device=device)
        return edge_index, shifts
    if bool(small_open.any()):
        return _mixed_batch_neighbors(
            positions, cell, pbc, system_idx, cutoff, small_open, full_list
        )
    return _vesin_batch_neighbors(positions, cell, pbc, system_idx, cutoff, full_list)


def _mixed_batch_neighbors(
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    system_idx: torch.Tensor,
    cutoff: float,
    small_open: torch.Tensor,
    full_list: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both paths in one batch: all-pairs for ``small_open`` systems, vesin for the others."""
    device = positions.device
    counts = torch.bincount(system_idx, minlength=cell.shape[0])
    starts = torch.cumsum(counts, 0) - counts
    chosen = small_open.nonzero().reshape(-1)
    pos = positions.detach().to(torch.float64)
    pairs = _all_pairs_neighbors(pos, starts[chosen], counts[chosen], cutoff, full_list)
    others = (~small_open).nonzero().reshape(-1)
    atoms = (~small_open)[system_idx]
    sub_edges, sub_shifts = _vesin_batch_neighbors(
        pos[atoms],
        cell[others],
        pbc[others],
        torch.repeat_interleave(torch.arange(len(others), device=device), counts[others]),
        cutoff,
        full_list,
    )
    global_index = atoms.nonzero().reshape(-1)  # position in the subset -> batch atom index
    edge_index = torch.cat([pairs, global_index[sub_edges]], dim=1)
    shifts = torch.cat(
        [torch.zeros((pairs.shape[1], 3), dtype=torch.int64, device=device), sub_shifts]
    )
    order = torch.sort(system_idx[edge_index[0]], stable=True).indices  # batch order
    return edge_index[:, order], shifts[order]


def _vesin_batch_neighbors(
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    system_idx: torch.Tensor,
    cutoff: float,
    full_list: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One vesin call per system."""
    n_per_system = torch.bincount(system_idx, minlength=cell.shape[0]).tolist()
    device = positions.device
    on_cpu = device.type == "cpu"
    pos_all = positions.detach().to(torch.float64)
    if on_cpu:
        pos_np = pos_all.numpy()
        cell_np = cell.detach().to(torch.float64).numpy()
        pbc_np = pbc.detach().numpy()
    edges, shifts = [], []
    start = 0
    for b, n in enumerate(n_per_system):
        if on_cpu:
            e, s = system_neighbors(
                pos_np[start : start + n], cell_np[b], pbc_np[b], cutoff, full_list
            )
            e, s = torch.from_numpy(e), torch.from_numpy(s)
        else:
            e, s = system_neighbors(pos_all[start : start + n], cell[b], pbc[b], cutoff, full_list)
        edges.append(e + start if start else e)
        shifts.append(s)
        start += n
    if not edges:
        empty = torch.zeros((2, 0), dtype=torch.int64, device=device)
        return empty, torch.zeros((0, 3), dtype=torch.int64, device=device)
    if len(edges) == 1:
        return edges[0].to(device), shifts[0].to(device)
    return torch.cat(edges, dim=1).to(device), torch.cat(shifts).to(device)
