"""Batched neighbor lists: the all-pairs path for small open systems gives vesin's pairs.

The reference is one vesin call per system (:func:`system_neighbors`). Lists are compared as
sets of (i, j, shift) so that the order within a system does not matter; the order of the
systems does (edges are grouped by system in batch order, which ForceField relies on).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from conftest import make_ar_cluster, make_ar_crystal

import ase_mlmd.neighbors as nb
from ase_mlmd.md.state import MDState


def pair_set(edge_index: torch.Tensor, shifts: torch.Tensor) -> set[tuple[int, ...]]:
    return {(i, j, *s) for (i, j), s in zip(edge_index.T.tolist(), shifts.tolist(), strict=True)}


def reference(state: MDState, cutoff: float) -> set[tuple[int, ...]]:
    """Pairs from one vesin call per system, with batch atom indices."""
    pairs, start = set(), 0
    for b, n in enumerate(state.n_atoms.tolist()):
        e, s = nb.system_neighbors(
            state.positions[start : start + n].numpy(),
            state.cell[b].numpy(),
            state.pbc[b].numpy(),
            cutoff,
        )
        pairs |= pair_set(torch.from_numpy(e) + start, torch.from_numpy(s))
        start += n
    return pairs


def random_cloud(n: int, box: float, seed: int) -> Atoms:
    return Atoms(f"Ar{n}", positions=np.random.default_rng(seed).random((n, 3)) * box)


def check(state: MDState, cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    edges, shifts = nb.batch_neighbors(
        state.positions, state.cell, state.pbc, state.system_idx, cutoff
    )
    assert edges.dtype == shifts.dtype == torch.int64
    assert edges.shape[1] == shifts.shape[0] == len(pair_set(edges, shifts))  # no duplicates
    assert pair_set(edges, shifts) == reference(state, cutoff)
    edge_system = state.system_idx[edges[0]]
    assert bool((edge_system == state.system_idx[edges[1]]).all())
    assert bool((edge_system[1:] >= edge_system[:-1]).all()), "edges not grouped by system"
    return edges, shifts


def test_many_small_molecules_take_the_all_pairs_path(monkeypatch):
    structures = [molecule("CH3CH2OH"), molecule("C6H6"), molecule("H2O")] * 20
    state = MDState.from_atoms(structures)
    calls = []
    monkeypatch.setattr(nb, "system_neighbors", lambda *a: calls.append(a))  # must not be used
    edges, shifts = nb.batch_neighbors(
        state.positions, state.cell, state.pbc, state.system_idx, 3.0
    )
    monkeypatch.undo()
    assert not calls
    assert not shifts.any()
    check(state, 3.0)


@pytest.mark.parametrize("chunk", [1, 100, 1 << 22])
def test_all_pairs_in_chunks(monkeypatch, chunk):
    # chunk=1: every system is a chunk of its own
    monkeypatch.setattr(nb, "ALL_PAIRS_CHUNK", chunk)
    state = MDState.from_atoms([random_cloud(n, 6.0, n) for n in (1, 2, 7, 30, 64, 5)])
    check(state, 2.5)


def test_mixed_batch_of_periodic_small_open_and_large_open_systems():
    large = random_cloud(nb.ALL_PAIRS_MAX_ATOMS + 50, 14.0, 3)  # vesin, though open
    structures = [
        molecule("CH3CH2OH"),
        make_ar_crystal(seed=1),  # periodic, cell smaller than twice the cutoff
        make_ar_cluster(seed=2),
        large,
        molecule("CH3CH2OH"),
    ]
    edges, shifts = check(MDState.from_atoms(structures), 8.5)
    assert shifts.any()  # periodic images are there


def test_cutoff_is_strict_as_in_vesin():
    atoms = Atoms("Ar3", positions=[[0, 0, 0], [3.0, 0, 0], [0, 2.999999, 0]])
    state = MDState.from_atoms([atoms])
    edges, _ = nb.batch_neighbors(state.positions, state.cell, state.pbc, state.system_idx, 3.0)
    assert sorted(map(tuple, edges.T.tolist())) == [(0, 2), (2, 0)]
