"""Neighbor lists for batches of systems, computed with vesin.

Every pair within the cutoff is listed in both directions (a *full* list) so that models may
treat edges as directed. Periodic images are handled for any cell, including cells smaller than
twice the cutoff (several images of the same neighbor are then separate edges).
"""

from __future__ import annotations

import threading

import numpy as np
import torch
import vesin

_cache = threading.local()


def _vesin(cutoff: float) -> vesin.NeighborList:
    """A vesin neighbor-list object for ``cutoff``, reused within a thread.

    Single-threaded: the lists here are per system and small, and vesin's OpenMP threads would
    compete with torch's for the same cores.
    """
    lists = _cache.__dict__.setdefault("lists", {})
    cutoff = float(cutoff)
    if cutoff not in lists:
        if len(lists) > 16:
            lists.clear()
        lists[cutoff] = vesin.NeighborList(cutoff=cutoff, full_list=True, n_threads=1)
    return lists[cutoff]


def system_neighbors(
    positions: np.ndarray | torch.Tensor,
    cell: np.ndarray | torch.Tensor,
    pbc: np.ndarray | torch.Tensor,
    cutoff: float,
) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
    """Full neighbor list of one system.

    Args:
        positions: (n, 3) Cartesian positions, Å.
        cell: (3, 3) cell, rows are lattice vectors, Å (ignored along non-periodic axes).
        pbc: (3,) periodic flags.
        cutoff: pair cutoff, Å.

    Returns:
        ``edge_index`` (2, E) int64 with rows (centre i, neighbor j) and ``cell_shifts`` (E, 3)
        integer image shifts such that ``r_ij = x_j - x_i + shifts @ cell``. numpy in, numpy
        out; torch in, torch out on the same device.
    """
    nl = _vesin(cutoff)
    if isinstance(positions, torch.Tensor):
        pos = positions.detach().to(torch.float64)
        box = torch.as_tensor(cell).detach().to(device=pos.device, dtype=torch.float64)
        periodic = torch.as_tensor(pbc, dtype=torch.bool, device=pos.device)
        i, j, shifts = nl.compute(pos, box, periodic, "ijS")
        edge_index = torch.stack([i.to(torch.int64), j.to(torch.int64)])
        return edge_index, shifts.to(torch.int64)
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    box = np.ascontiguousarray(cell, dtype=np.float64)
    i, j, shifts = nl.compute(pos, box, np.asarray(pbc, dtype=bool), "ijS")
    return np.stack([i.astype(np.int64), j.astype(np.int64)]), shifts.astype(np.int64)


def batch_neighbors(
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    system_idx: torch.Tensor,
    cutoff: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full neighbor lists of every system in a batch, concatenated with global atom indices.

    Args:
        positions: (N, 3) positions of all atoms, Å.
        cell: (B, 3, 3) cells.
        pbc: (B, 3) periodic flags.
        system_idx: (N,) system of each atom; atoms of one system are contiguous.
        cutoff: pair cutoff, Å.

    Returns:
        ``edge_index`` (2, E) int64 and ``cell_shifts`` (E, 3) int64 on the input's device.
    """
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
            e, s = system_neighbors(pos_np[start : start + n], cell_np[b], pbc_np[b], cutoff)
            e, s = torch.from_numpy(e), torch.from_numpy(s)
        else:
            e, s = system_neighbors(pos_all[start : start + n], cell[b], pbc[b], cutoff)
        edges.append(e + start)
        shifts.append(s)
        start += n
    if not edges:
        empty = torch.zeros((2, 0), dtype=torch.int64, device=device)
        return empty, torch.zeros((0, 3), dtype=torch.int64, device=device)
    return torch.cat(edges, dim=1).to(device), torch.cat(shifts).to(device)
