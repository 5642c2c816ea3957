"""ConfVAE's distance geometry and network: recovery, invariances, gradients through the inner
solver (ETKDG conformers of small molecules as test geometries)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import minimize_rotation_and_translation
from rdkit.Chem import AllChem
from scipy.spatial.transform import Rotation

from ase_mlmd.conformers.confvae import ConfVAE, ConfVAESettings
from ase_mlmd.conformers.confvae_features import collate, mol_graph
from ase_mlmd.conformers.distance_geometry import (
    aligned_msd,
    distance_error,
    edge_lengths,
    embed,
    solve_distance_geometry,
)
from ase_mlmd.conformers.molecules import mol_from_smiles

VOCAB = ["C", "H", "N", "O"]


def etkdg(smiles: str, seed: int = 7):
    mol = mol_from_smiles(smiles)
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    return mol, torch.tensor(mol.GetConformer().GetPositions(), dtype=torch.float64)


def ase_rmsd(x: np.ndarray, y: np.ndarray) -> float:
    """RMSD after ASE's optimal proper superposition (an independent implementation)."""
    a, b = Atoms("X" * len(x), positions=x), Atoms("X" * len(y), positions=y)
    minimize_rotation_and_translation(b, a)
    return float(np.sqrt(((a.positions - b.positions) ** 2).sum(1).mean()))


def test_dg_recovers_geometry_from_exact_distances():
    mol, ref = etkdg("NCCC(=O)O")
    n = len(ref)
    graph = mol_graph(mol, VOCAB, max_hops=n)  # all pairs: the geometry is determined
    targets = edge_lengths(ref, graph.edges)
    batch = collate([graph])
    x = embed(targets, batch.edges, batch.counts, torch.Generator().manual_seed(3), 200, 400, 0)
    assert float(distance_error(x, batch.edges, targets)) < 1e-8
    xn, rn = x.numpy(), ref.numpy()
    best = min(ase_rmsd(xn, rn), ase_rmsd(xn * [-1, 1, 1], rn))  # up to a mirror image
    assert best < 1e-4


def test_dg_objective_and_alignment_invariant_to_rigid_motions():
    mol, ref = etkdg("CCOC(=O)N")
    graph = mol_graph(mol, VOCAB)
    rng = np.random.default_rng(0)
    x = ref + 0.3 * torch.from_numpy(rng.normal(size=ref.shape))
    rot = torch.from_numpy(Rotation.random(random_state=1).as_matrix())
    moved = x @ rot.T + torch.tensor([1.0, -2.0, 3.5], dtype=torch.float64)
    targets = edge_lengths(ref, graph.edges)
    e0 = distance_error(x, graph.edges, targets)
    assert float(e0) > 0.1
    assert torch.allclose(e0, distance_error(moved, graph.edges, targets), rtol=1e-10)
    mask = torch.ones(1, len(x), dtype=torch.bool)
    msd = aligned_msd(x[None], ref[None], mask, reflection=False)
    assert torch.allclose(msd, aligned_msd(moved[None], ref[None], mask, reflection=False))
    # the SVD formula equals ASE's explicit Kabsch superposition
    assert float(msd.sqrt()) == pytest.approx(ase_rmsd(x.numpy(), ref.numpy()), rel=1e-8)
    # with reflection allowed, a mirror image is at distance zero
    mirrored = ref * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert float(aligned_msd(mirrored[None], ref[None], mask, reflection=True)) < 1e-12
    assert float(aligned_msd(mirrored[None], ref[None], mask, reflection=False)) > 0.01


def test_gradient_through_inner_steps_matches_finite_differences():
    mol, ref = etkdg("CCO")
    graph = mol_graph(mol, VOCAB)
    targets = (edge_lengths(ref, graph.edges) * 1.05).detach().requires_grad_(True)
    start = ref + 0.2 * torch.from_numpy(np.random.default_rng(2).normal(size=ref.shape))
    mask = torch.ones(1, len(ref), dtype=torch.bool)

    def outer(t: torch.Tensor) -> torch.Tensor:  # fully unrolled: the gradient is exact
        x = solve_distance_geometry(t, graph.edges, start, steps=6, unrolled=6)
        return aligned_msd(x[None], ref[None], mask)[0]

    assert torch.autograd.gradcheck(outer, (targets,), eps=1e-6, atol=1e-6, rtol=1e-4)

    # truncated: the gradient flows through the last 4 steps only, i.e. it is the exact
    # gradient of those 4 steps started from the (constant) result of the first 6
    x6 = solve_distance_geometry(targets.detach(), graph.edges, start, steps=6, unrolled=0)
    x10 = solve_distance_geometry(targets, graph.edges, start, steps=10, unrolled=4)
    (g_trunc,) = torch.autograd.grad(aligned_msd(x10[None], ref[None], mask)[0], targets)
    x4 = solve_distance_geometry(targets, graph.edges, x6, steps=4, unrolled=4)
    (g_last,) = torch.autograd.grad(aligned_msd(x4[None], ref[None], mask)[0], targets)
    assert torch.allclose(g_trunc, g_last, rtol=1e-10, atol=1e-14)
    assert float(g_trunc.abs().max()) > 1e-4


def test_encoder_and_decoder_invariant_to_rigid_motions_of_the_conformer():
    torch.manual_seed(0)
    settings = ConfVAESettings(VOCAB, hidden=16, layers=2, latent=4, steps_4d=5, steps=5)
    model = ConfVAE(settings).eval()
    mol, ref = etkdg("NCC(=O)O")
    batch = collate([mol_graph(mol, VOCAB, settings.max_hops)])
    pos = ref.float()
    rot = torch.from_numpy(Rotation.random(random_state=4).as_matrix()).float()
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    with torch.no_grad():
        mean, log_var = model.encode(batch, pos)
        d0 = model.decode(batch, mean)
        for moved in (pos @ rot.T + torch.tensor([3.0, 1.0, -2.0]), pos @ mirror):
            m2, v2 = model.encode(batch, moved)
            assert torch.allclose(mean, m2, atol=1e-5) and torch.allclose(log_var, v2, atol=1e-5)
            assert torch.allclose(d0, model.decode(batch, m2), atol=1e-5)
        other = model.encode(batch, pos * 1.1)[0]  # a different conformation is seen
    assert not torch.allclose(mean, other, atol=1e-4)
