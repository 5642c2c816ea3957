"""The fast SchNet forward (``schnet_fast``) against schnetpack's own forward.

Reference 1: the same adapter with ``fast=False`` (schnetpack's ``PairwiseDistances`` and
``SchNet.forward`` on the same neighbor list). Reference 2: the model run entirely by schnetpack
(its own neighbor list, ``Strain`` and ``Forces`` modules). Plus finite-difference forces and
stress, the pairing of a full list, and the fallback for what the fast path does not cover.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from ase_mlmd import MLCalculator, evaluate
from ase_mlmd.batch import batch_from_atoms
from ase_mlmd.models.backends.schnet_fast import fast_schnet_supported, symmetric_pairs
from ase_mlmd.models.backends.schnetpack import (
    SchNetPackModel,
    build_schnet_model,
    import_schnetpack,
)
from ase_mlmd.testing import check_forces, check_stress

spk = import_schnetpack()
CUTOFF = 4.0
RTOL = 1e-10


def schnet(seed: int = 0, **kw) -> torch.nn.Module:
    kw.setdefault("stress", True)
    kw.setdefault("representation", "schnet")
    return build_schnet_model(
        cutoff=CUTOFF, n_atom_basis=24, n_interactions=3, n_rbf=12, seed=seed, **kw
    )


def ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    return atoms


def water_box() -> Atoms:
    """8 water molecules in a periodic, slightly sheared 6.2 Å box (cell > cutoff)."""
    rng = np.random.default_rng(3)
    water = molecule("H2O")
    atoms = Atoms(cell=[[6.2, 0.0, 0.0], [0.3, 6.2, 0.0], [0.0, -0.2, 6.2]], pbc=True)
    for corner in np.ndindex(2, 2, 2):
        copy = water.copy()
        copy.rotate(rng.uniform(0, 360), rng.normal(size=3), center="COP")
        copy.translate(np.array(corner) @ atoms.cell.array / 2 + rng.uniform(0.5, 1.0, 3))
        atoms += copy
    atoms.rattle(0.03, seed=4)
    return atoms


def small_cell() -> Atoms:
    """Rattled NaCl primitive cell (2 atoms): edges to images of the atom itself."""
    atoms = bulk("NaCl", "rocksalt", a=4.6)
    atoms.rattle(0.08, seed=2)
    return atoms


STRUCTURES = {"ethanol": ethanol, "water-box": water_box, "nacl-primitive": small_cell}


def spk_reference(nnp: torch.nn.Module, atoms: Atoms) -> dict[str, np.ndarray]:
    from schnetpack.interfaces import AtomsConverter

    converter = AtomsConverter(spk.transform.ASENeighborList(cutoff=CUTOFF), dtype=torch.float64)
    out = nnp(converter(atoms))
    return {k: v.detach().numpy() for k, v in out.items()}


def relative_error(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_fast_forward_equals_schnetpack_forward(structure):
    nnp = schnet(seed=1)
    atoms = STRUCTURES[structure]()
    fast, plain = SchNetPackModel(nnp), SchNetPackModel(nnp, fast=False)
    assert fast.fast_representation and not plain.fast_representation
    periodic = bool(atoms.pbc.all())
    props = ["energy", "energies", "forces"] + (["stress"] if periodic else [])
    batch = batch_from_atoms([atoms], CUTOFF)
    assert symmetric_pairs(*batch.edge_index, batch.cell_shifts, len(atoms)) is not None
    ours = evaluate(fast, batch, props)
    theirs = evaluate(plain, batch, props)
    reference = spk_reference(nnp, atoms)
    assert np.abs(reference["forces"]).max() > 1e-3  # a nontrivial model
    for key in props:
        assert relative_error(ours[key], theirs[key]) <= RTOL, key
        assert relative_error(ours[key], reference[key].reshape(ours[key].shape)) <= RTOL, key


def test_fast_forward_on_a_batch_of_different_systems():
    nnp = schnet(seed=2, add_offsets=True)
    structures = [ethanol(), water_box(), molecule("H2O"), small_cell()]
    batch = batch_from_atoms(structures, CUTOFF)
    ours = evaluate(SchNetPackModel(nnp), batch, ["energy", "energies", "forces"])
    theirs = evaluate(SchNetPackModel(nnp, fast=False), batch, ["energy", "energies", "forces"])
    for key in ours:
        assert relative_error(ours[key], theirs[key]) <= RTOL, key


def test_finite_difference_forces_and_stress():
    calc = MLCalculator(SchNetPackModel(schnet(seed=3)))
    assert calc.model.fast_representation
    assert check_forces(calc, ethanol()) < 1e-6
    assert check_forces(calc, water_box(), max_atoms=6) < 1e-6
    assert check_stress(calc, water_box()) < 1e-7


def test_float32_fast_forward_close_to_schnetpack_forward():
    nnp = schnet(seed=4, dtype=torch.float32)
    batch = batch_from_atoms([ethanol(), water_box()], CUTOFF)
    ours = evaluate(SchNetPackModel(nnp), batch, ["energy", "forces"])
    theirs = evaluate(SchNetPackModel(nnp, fast=False), batch, ["energy", "forces"])
    for key in ours:
        assert relative_error(ours[key], theirs[key]) <= 1e-5, key


def test_forces_differentiable_in_the_weights():
    model = SchNetPackModel(schnet(seed=5))
    batch = batch_from_atoms([ethanol()], CUTOFF)
    evaluate(model, batch, ["forces"], create_graph=True)["forces"].square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    plain = SchNetPackModel(model.nnp, fast=False)
    evaluate(plain, batch, ["forces"], create_graph=True)["forces"].square().sum().backward()
    for name, p in plain.named_parameters():
        if p.grad is not None:
            assert relative_error(grads[name], p.grad) <= 1e-9, name


# ----------------------------------------------------------------------------- pairing
def test_symmetric_pairs_of_full_and_other_lists():
    batch = batch_from_atoms([water_box(), small_cell()], CUTOFF)
    i, j = batch.edge_index
    n = len(batch.numbers)
    pairs = symmetric_pairs(i, j, batch.cell_shifts, n)
    assert pairs is not None and 2 * len(pairs) == len(i)
    # every pair once: the chosen edges and their reverses cover the list
    chosen = {
        (a, b, tuple(s))
        for a, b, s in zip(
            i[pairs].tolist(), j[pairs].tolist(), batch.cell_shifts[pairs].tolist(), strict=True
        )
    }
    reverses = {(b, a, tuple(-x for x in s)) for a, b, s in chosen}
    everything = set(
        zip(i.tolist(), j.tolist(), map(tuple, batch.cell_shifts.tolist()), strict=True)
    )
    assert chosen | reverses == everything and not chosen & reverses
    # a half list, a list with one edge dropped, an odd list: not full lists
    assert symmetric_pairs(i[pairs], j[pairs], batch.cell_shifts[pairs], n) is None
    keep = torch.arange(len(i)) != 5
    assert symmetric_pairs(i[keep], j[keep], batch.cell_shifts[keep], n) is None
    flipped = batch.cell_shifts.clone()
    flipped[0] = -flipped[0] + torch.tensor([1, 0, 0])
    assert symmetric_pairs(i, j, flipped, n) is None


def test_model_falls_back_to_a_plain_edge_loop_on_a_half_list():
    """A list that is not a full list: the fast forward computes one filter per edge."""
    nnp = schnet(seed=6, stress=False)
    batch = batch_from_atoms([ethanol()], CUTOFF)
    i, j = batch.edge_index
    half = batch.replace(
        edge_index=batch.edge_index[:, i < j], cell_shifts=batch.cell_shifts[i < j]
    )
    ours = evaluate(SchNetPackModel(nnp), half, ["energy", "forces"])
    theirs = evaluate(SchNetPackModel(nnp, fast=False), half, ["energy", "forces"])
    for key in ours:
        assert relative_error(ours[key], theirs[key]) <= RTOL, key


# ----------------------------------------------------------------------------- fallback
def test_unsupported_architectures_run_schnetpacks_forward(monkeypatch):
    painn = SchNetPackModel(build_schnet_model(representation="painn", cutoff=CUTOFF))
    assert not painn.fast_representation
    calls = []
    rep = painn.nnp.representation
    original = type(rep).forward
    monkeypatch.setattr(type(rep), "forward", lambda self, x: calls.append(1) or original(self, x))
    evaluate(painn, batch_from_atoms([ethanol()], CUTOFF), ["energy", "forces"])
    assert calls == [1]

    class CustomSchNet(spk.representation.SchNet):
        pass

    nnp = schnet(seed=7)
    custom = CustomSchNet(8, 1, spk.nn.GaussianRBF(4, CUTOFF), spk.nn.CosineCutoff(CUTOFF))
    assert fast_schnet_supported(nnp.representation)
    assert not fast_schnet_supported(custom)
    charged = spk.representation.SchNet(
        8,
        1,
        spk.nn.GaussianRBF(4, CUTOFF),
        spk.nn.CosineCutoff(CUTOFF),
        electronic_embeddings=[
            spk.nn.embedding.ElectronicEmbedding("total_charge", 8, is_charged=True)
        ],
    )
    assert not fast_schnet_supported(charged)
