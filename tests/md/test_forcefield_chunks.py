"""ForceField performance paths give the results of the plain path.

* Chunks: a batch evaluated in groups of systems (``chunk_edges``) gives the energies, per-atom
  energies and forces of one call, with and without a graph through the forces.
* Shell filter: between builds only pairs near the cutoff are measured, and the previous list
  is reused while none crossed it; the pairs are still exactly those of a fresh list.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from conftest import make_ar_cluster, make_ar_crystal

from ase_mlmd.md.forcefield import ForceField
from ase_mlmd.md.state import MDState
from ase_mlmd.models.pair import LennardJones, Morse
from ase_mlmd.neighbors import batch_neighbors


def mixed_state() -> MDState:
    structures = [make_ar_crystal(seed=1), make_ar_cluster(seed=2), make_ar_crystal(seed=3)]
    structures += [make_ar_cluster(seed=s) for s in range(4, 10)]
    return MDState.from_atoms(structures)


@pytest.mark.parametrize("chunk_edges", [1, 300, 2000, 10**9])
def test_chunks_give_the_results_of_one_call(chunk_edges):
    model = LennardJones(epsilon=0.0104, sigma=3.4, cutoff=6.0, cutoff_mode="smooth")
    state = mixed_state()
    one = ForceField(model, skin=0.5, chunk_edges=None)(state)
    forcefield = ForceField(model, skin=0.5, chunk_edges=chunk_edges)
    chunked = forcefield(state)
    chunks = forcefield._chunks(state, *forcefield.neighbors(state))
    if chunk_edges == 1:
        assert len(chunks) == state.n_systems  # a system is never split
    if chunk_edges == 10**9:
        assert chunks is None
    for name in ("energy", "energies", "forces"):
        np.testing.assert_allclose(
            getattr(chunked, name).numpy(), getattr(one, name).numpy(), rtol=1e-12, atol=1e-13
        )


def test_chunks_keep_the_graph_through_the_forces():
    model = Morse(epsilon=0.01, r0=3.8, rho0=6.0, trainable=True)
    state = mixed_state()
    grads = []
    for chunk_edges in (None, 200):
        forces = ForceField(model, skin=0.5, chunk_edges=chunk_edges)(state, create_graph=True)
        loss = forces.forces.square().sum() + forces.energy.sum()
        grads.append(torch.autograd.grad(loss, [model.epsilon, model.r0]))
    for a, b in zip(*grads, strict=True):
        assert float(a) == pytest.approx(float(b), rel=1e-10)


def test_auto_chunks_on_cpu_only_and_bad_values():
    model = LennardJones(sigma=3.4, cutoff=6.0)
    assert ForceField(model)._chunk_limit(mixed_state()) is not None
    assert ForceField(model, chunk_edges=None)._chunk_limit(mixed_state()) is None
    for bad in (0, -5, "big"):
        with pytest.raises(ValueError, match="chunk_edges"):
            ForceField(model, chunk_edges=bad)


def test_shell_filter_reuses_the_list_and_stays_exact():
    # ethanol replicas: every pair is far inside 5 Å + skin, so the list never changes
    model = LennardJones(sigma=1.0, cutoff=5.0)
    state = MDState.from_atoms([molecule("CH3CH2OH")] * 4)
    forcefield = ForceField(model, skin=1.0)
    first = forcefield.neighbors(state)
    moved = state.replace(positions=state.positions + 0.1)
    again = forcefield.neighbors(moved)
    assert again[0] is first[0] and forcefield.n_builds == 1
    # argon crystal: small random moves below skin/2; pairs enter and leave the cutoff
    model = LennardJones(epsilon=0.0104, sigma=3.4, cutoff=6.0)
    state = MDState.from_atoms([make_ar_crystal(seed=0), make_ar_crystal(seed=1)])
    forcefield = ForceField(model, skin=1.0)
    rng = np.random.default_rng(0)
    reference = state.positions.clone()
    forcefield.neighbors(state)  # built here: later moves are measured from these positions
    for _ in range(20):
        step = torch.from_numpy(rng.normal(size=reference.shape)) * 0.1
        positions = reference + step.clamp(-0.28, 0.28)  # |move| < 0.5 Å: no rebuild
        edges, shifts = forcefield.neighbors(state.replace(positions=positions))
        fresh = batch_neighbors(positions, state.cell, state.pbc, state.system_idx, 6.0)
        assert set(map(tuple, torch.cat([edges, shifts.T]).T.tolist())) == set(
            map(tuple, torch.cat([fresh[0], fresh[1].T]).T.tolist())
        )
    assert forcefield.n_builds == 1
