"""The compiled pair loop (CPU) equals the torch form of the analytic pair path.

On CPU tensors ``direct_evaluate`` and the MD engine run analytic pair potentials through the
compiled loop of :mod:`ase_mlmd.models.pair_kernel`; the torch form
(:func:`~ase_mlmd.models.pair_direct.pair_forces_and_stress`) is what runs on a GPU. Both must
give the same energies, per-atom energies, forces and stress on full and half lists, and the
engine the same trajectory either way. (``test_pair_analytic.py`` compares the direct path with
autograd.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_ar_cluster, make_ar_crystal

from ase_mlmd.batch import batch_from_atoms
from ase_mlmd.cell_list import cell_bins, half_cell_list
from ase_mlmd.md.forcefield import ForceField
from ase_mlmd.md.integrators import velocity_verlet
from ase_mlmd.md.state import MDState
from ase_mlmd.models.interface import evaluate
from ase_mlmd.models.pair import LennardJones, Morse, SoftSphere, Yukawa
from ase_mlmd.models.pair_direct import pair_forces_and_stress
from ase_mlmd.models.pair_kernel import kernel_forces_and_stress
from ase_mlmd.models.species_pair import SpeciesPairPotential
from ase_mlmd.neighbors import batch_neighbors

ALL = ("energy", "energies", "forces", "stress")
POTENTIALS = {
    "lj-shift": lambda: LennardJones(0.0104, 3.4, cutoff=8.5),
    "lj-smooth": lambda: LennardJones(0.0104, 3.4, cutoff=8.5, cutoff_mode="smooth"),
    "mie-9-6-none": lambda: LennardJones(0.0104, 3.4, cutoff=8.5, n=9.0, m=6.0, cutoff_mode="none"),
    "morse-smooth": lambda: Morse(0.0104, 3.8, 6.0, cutoff=8.5),
    "morse-shift": lambda: Morse(0.0104, 3.8, 6.0, cutoff=8.5, cutoff_mode="shift"),
    "yukawa": lambda: Yukawa(2.0, 0.5, cutoff=8.5),
    "soft-sphere": lambda: SoftSphere(0.0104, 3.4, n=10.0, cutoff=8.5, cutoff_mode="shift"),
}


def _rattled(atoms, scale: float, seed: int):
    atoms = atoms.copy()
    atoms.positions += np.random.default_rng(seed).normal(scale=scale, size=atoms.positions.shape)
    return atoms


def _half(batch):
    """The batch with each pair of its full list once (i < j, or the positive image)."""
    i, j = batch.edge_index
    s = batch.cell_shifts
    positive = (s[:, 0] > 0) | ((s[:, 0] == 0) & ((s[:, 1] > 0) | ((s[:, 1] == 0) & (s[:, 2] > 0))))
    keep = (i < j) | ((i == j) & positive)
    return batch.replace(edge_index=batch.edge_index[:, keep], cell_shifts=s[keep])


def _close(a: dict, b: dict, keys, rtol: float) -> None:
    for key in keys:
        scale = max(float(b[key].abs().max()), 1e-3)
        error = float((a[key] - b[key]).abs().max())
        assert error <= rtol * scale, (key, error, scale)


@pytest.mark.parametrize("name", list(POTENTIALS))
@pytest.mark.parametrize("half", [False, True])
def test_compiled_loop_equals_the_torch_form(name, half):
    model = POTENTIALS[name]()
    table = model.kernel_table()
    assert table is not None
    crystal = _rattled(make_ar_crystal(), 0.15, 0)  # cell 10.5 Å < 2 r_c: self-images
    strained = _rattled(make_ar_crystal(), 0.15, 1)
    strained.set_cell(strained.cell * 1.03, scale_atoms=True)
    batch = batch_from_atoms([crystal, strained], model.cutoff + 1.0)  # a skin list
    if half:
        batch = _half(batch)
    compiled = kernel_forces_and_stress(table, batch, stress=True, half_list=half)
    torch_form = pair_forces_and_stress(model.pair_terms, batch, stress=True, half_list=half)
    _close(compiled, torch_form, ALL, 1e-12)
    # the public entry point takes the compiled loop on CPU and agrees with autograd
    graph = evaluate(model, batch_from_atoms([crystal, strained], model.cutoff), ALL, True)
    _close(
        evaluate(model, batch_from_atoms([crystal, strained], model.cutoff), ALL), graph, ALL, 1e-10
    )


def test_species_pair_mixture_and_float32():
    mix = SpeciesPairPotential(
        {
            "Ar-Ar": LennardJones(0.0104, 3.3, cutoff=8.5),
            "Ar-Kr": Morse(0.012, 3.9, 6.0, cutoff=8.0, cutoff_mode="shift"),
            "Kr-Kr": LennardJones(0.014, 3.6, cutoff=8.5, cutoff_mode="smooth"),
        }
    )
    atoms = _rattled(make_ar_crystal(), 0.1, 2)
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[::3] = "Kr"
    atoms.set_chemical_symbols(symbols)
    cluster = _rattled(make_ar_cluster(), 0.1, 3)
    cluster.set_chemical_symbols(["Kr"] * 5 + ["Ar"] * 8)
    batch = batch_from_atoms([atoms, cluster], mix.cutoff)
    table = mix.kernel_table()
    assert table is not None and table.rows.shape[0] == 3
    compiled = kernel_forces_and_stress(table, batch)
    graph = evaluate(mix, batch, ("energy", "energies", "forces"), create_graph=True)
    graph = {k: v.detach() for k, v in graph.items()}
    _close(compiled, graph, ("energy", "energies", "forces"), 1e-10)
    # float32 positions: the same loop, within float32 rounding
    single = kernel_forces_and_stress(table, batch.to(dtype=torch.float32))
    assert single["forces"].dtype == torch.float32
    _close({k: v.double() for k, v in single.items()}, compiled, ("energy", "forces"), 1e-5)


def test_a_subclass_that_changes_phi_stays_off_the_compiled_loop():
    class Stiffer(Morse):
        def pair_energy(self, r):
            return 2.0 * super().pair_energy(r)

        def pair_derivative(self, r):
            return 2.0 * super().pair_derivative(r)

    model = Stiffer(0.0104, 3.8, 6.0, cutoff=8.5)
    assert model.direct_forces and model.kernel_row() is None
    batch = batch_from_atoms([_rattled(make_ar_crystal(), 0.1, 4)], model.cutoff)
    direct = evaluate(model, batch, ("energy", "forces"))
    graph = evaluate(model, batch, ("energy", "forces"), create_graph=True)
    graph = {k: v.detach() for k, v in graph.items()}
    _close(direct, graph, ("energy", "forces"), 1e-10)
    parent = evaluate(Morse(0.0104, 3.8, 6.0, cutoff=8.5), batch, ("energy",))
    torch.testing.assert_close(direct["energy"], 2.0 * parent["energy"])


def test_half_neighbor_lists_hold_each_pair_of_the_full_list_once():
    """vesin's half list (periodic, self-images), the all-pairs test (small open systems) and
    a batch mixing both: every unordered pair (with its image) exactly once."""
    crystal = _rattled(make_ar_crystal(repeat=1), 0.05, 5)  # 5.3 Å cell, cutoff 8.5 Å
    cluster = _rattled(make_ar_cluster(), 0.1, 6)
    for systems in ([crystal], [cluster], [cluster, crystal, cluster]):
        batch = batch_from_atoms(systems, 8.5)
        args = (batch.positions, batch.cell, batch.pbc, batch.system_idx, 8.5)
        full_edges, full_shifts = batch_neighbors(*args)
        half_edges, half_shifts = batch_neighbors(*args, full_list=False)
        assert 2 * half_edges.shape[1] == full_edges.shape[1]

        def pairs(edges, shifts):
            out = set()
            for (i, j), s in zip(edges.t().tolist(), shifts.tolist(), strict=True):
                key = (i, j, *s)
                out.add(min(key, (j, i, *(-x for x in s))))
            return out

        assert pairs(half_edges, half_shifts) == pairs(full_edges, full_shifts)


def test_engine_trajectory_is_the_same_with_and_without_the_compiled_loop(monkeypatch):
    model = LennardJones(0.0104, 3.4, cutoff=8.5)
    atoms = _rattled(make_ar_crystal(), 0.1, 7)
    atoms.set_velocities(np.random.default_rng(8).normal(scale=5e-3, size=(len(atoms), 3)))
    small = _rattled(make_ar_crystal(repeat=1), 0.05, 9)
    small.set_velocities(np.random.default_rng(10).normal(scale=5e-3, size=(len(small), 3)))
    states = []
    for compiled in (True, False):
        forcefield = ForceField(model, skin=0.5)
        if not compiled:
            monkeypatch.setattr(forcefield, "_kernel_table", lambda state: None)
        integrator = velocity_verlet(forcefield, 5.0)
        state = integrator.init(MDState.from_atoms([atoms, small]))
        for _ in range(30):
            state = integrator.step(state)
        assert forcefield.n_builds >= 2
        assert forcefield._half.compiled is compiled
        states.append(state)
    fast, reference = states
    torch.testing.assert_close(fast.positions, reference.positions, rtol=0, atol=1e-10)
    torch.testing.assert_close(fast.forces, reference.forces, rtol=0, atol=1e-10)
    torch.testing.assert_close(fast.energies, reference.energies, rtol=0, atol=1e-10)


def test_cell_list_finds_the_pairs_of_a_full_list_in_a_skewed_cell():
    """The compiled cell list (large periodic cells) against vesin's full list: a triclinic
    cell, atoms outside the cell, a cutoff at exactly three bins along one direction."""
    atoms = _rattled(make_ar_crystal(repeat=3), 0.2, 11)
    cell = np.array(atoms.cell)
    cell[1] += 0.3 * cell[0]
    cell[2] += 0.2 * cell[0] - 0.1 * cell[1]
    atoms.set_cell(cell, scale_atoms=True)
    atoms.positions[:4] += 2 * cell[0] - cell[2]  # unwrapped atoms
    cutoff = 4.5
    bins = cell_bins(cell, atoms.pbc, cutoff)
    assert bins is not None and bins.min() == 3
    assert cell_bins(cell, atoms.pbc, 6.0) is None  # narrower than three cutoffs: vesin
    assert cell_bins(cell, np.array([True, True, False]), cutoff) is None
    centres, neighbors, shifts = half_cell_list(atoms.positions, cell, cutoff, bins)
    assert np.all(np.diff(centres) >= 0)  # ordered by centre
    vectors = atoms.positions[neighbors] - atoms.positions[centres] + shifts @ cell
    assert np.linalg.norm(vectors, axis=1).max() < cutoff
    batch = batch_from_atoms([atoms], cutoff)
    full = set(zip(*batch.edge_index.tolist(), *batch.cell_shifts.t().tolist(), strict=True))
    rows = zip(centres.tolist(), neighbors.tolist(), shifts.tolist(), strict=True)
    half = {(i, j, *s) for i, j, s in rows}
    mirrored = {(j, i, -a, -b, -c) for i, j, a, b, c in half}
    assert len(half) * 2 == len(full) and half | mirrored == full
