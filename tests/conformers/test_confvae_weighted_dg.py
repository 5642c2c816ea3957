"""ConfVAE's weighted distance geometry (bonds and 1-3 pairs weighted above longer pairs) and
relaxed ConfVAE samples (``generate_conformers(method="confvae", relax=True)``, ``--relax``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import minimize_rotation_and_translation
from rdkit.Chem import AllChem

from ase_mlmd.cli import main as cli_main
from ase_mlmd.conformers.confvae import DG_WEIGHTS, load_confvae, sample_conformers
from ase_mlmd.conformers.confvae_features import collate, mol_graph
from ase_mlmd.conformers.confvae_train import ConfVAETrainConfig
from ase_mlmd.conformers.distance_geometry import (
    distance_error,
    edge_lengths,
    embed,
    hop_weights,
    solve_distance_geometry,
)
from ase_mlmd.conformers.generate import generate_conformers, relax_conformers
from ase_mlmd.conformers.metrics import BOND_TOLERANCE, bond_deviation
from ase_mlmd.conformers.molecules import mol_from_smiles
from ase_mlmd.conformers.rmsd import heavy_indices, prune_conformers, symmetry_matches
from ase_mlmd.conformers.search import KCAL
from ase_mlmd.data.reference import reference_calculator
from ase_mlmd.errors import ConformerRequestError

VOCAB = ["C", "H", "N", "O"]
#: the shipped ConfVAE card (trained on GFN2-xTB FreeSolv conformers, weighted DG)
RUNS = Path(__file__).resolve().parents[2] / "benchmarks/confvae_runs"
CARD = RUNS / "confvae-freesolv/card.toml"
#: the first FreeSolv card (trained with the plain stress; its card has no dg_weights)
CARD_V1 = RUNS / "confvae-freesolv-v1/card.toml"


def etkdg(smiles: str, seed: int = 7):
    mol = mol_from_smiles(smiles)
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    AllChem.MMFFOptimizeMolecule(mol)
    return mol, torch.tensor(mol.GetConformer().GetPositions(), dtype=torch.float64)


def ase_rmsd(x: np.ndarray, y: np.ndarray) -> float:
    """RMSD after ASE's optimal proper superposition (an independent implementation)."""
    a, b = Atoms("X" * len(x), positions=x), Atoms("X" * len(y), positions=y)
    minimize_rotation_and_translation(b, a)
    return float(np.sqrt(((a.positions - b.positions) ** 2).sum(1).mean()))


def test_hop_weights_by_bond_count_and_bad_tables():
    hops = torch.tensor([1, 2, 3, 4, 6, 1])
    w = hop_weights(hops, (100.0, 30.0, 1.0), torch.float64)
    assert w.tolist() == [100.0, 30.0, 1.0, 1.0, 1.0, 100.0]
    assert hop_weights(hops, (1.0,), torch.float64).tolist() == [1.0] * 6
    for bad in ((), (1.0, 0.0), (-1.0,)):
        with pytest.raises(ValueError, match="positive"):
            hop_weights(hops, bad, torch.float64)
    with pytest.raises(ValueError, match="DG weights"):
        ConfVAETrainConfig(dg_weights=[100.0, -1.0])


def test_weighted_dg_recovers_geometry_from_exact_distances():
    # consistent targets: the weighted stress is zero at the true geometry whatever the
    # weights, so the solver must find it (up to a rigid motion and a mirror image)
    mol, ref = etkdg("CCOC(=O)CN")
    graph = mol_graph(mol, VOCAB, max_hops=len(ref))  # all pairs: the geometry is determined
    batch = collate([graph])
    targets = edge_lengths(ref, batch.edges)
    weights = hop_weights(batch.hops, DG_WEIGHTS, torch.float64)
    gen = torch.Generator().manual_seed(3)
    x = embed(targets, batch.edges, batch.counts, gen, 200, 600, 0, weights=weights)
    assert float(distance_error(x, batch.edges, targets, weights)) < 1e-8
    xn, rn = x.numpy(), ref.numpy()
    assert min(ase_rmsd(xn, rn), ase_rmsd(xn * [-1, 1, 1], rn)) < 1e-4


def _noisy_long_range(smiles: str, noise: float, table, seed: int = 0) -> float:
    """Worst bond error (Å) of weighted DG when the targets of pairs >= 3 bonds apart carry
    Gaussian noise of ``noise`` Å (bonds and 1-3 pairs exact)."""
    mol, ref = etkdg(smiles)
    batch = collate([mol_graph(mol, VOCAB, max_hops=6)])
    gen = torch.Generator().manual_seed(seed)
    targets = edge_lengths(ref, batch.edges)
    far = (batch.hops >= 3).to(targets.dtype)
    targets = targets + noise * far * torch.randn(targets.shape, generator=gen, dtype=torch.float64)
    weights = hop_weights(batch.hops, table, torch.float64)
    x = embed(targets.clamp(min=0.5), batch.edges, batch.counts, gen, 100, 400, 0, weights=weights)
    return float(bond_deviation(mol, x.numpy()[None], ref.numpy())[0])


@pytest.mark.parametrize("smiles", ["CCCCCCO", "CC(C)OC(=O)CCN"])
def test_noisy_long_range_targets_bend_torsions_not_bonds(smiles):
    uniform = _noisy_long_range(smiles, 0.4, (1.0,))
    weak = _noisy_long_range(smiles, 0.4, (10.0, 10.0, 1.0))
    strong = _noisy_long_range(smiles, 0.4, (100.0, 100.0, 1.0))
    # the noise does reach the bonds when all pairs weigh alike
    assert uniform > BOND_TOLERANCE / 2
    # weighted least squares: the stiffer the bonds and angles relative to the long-range
    # pairs, the smaller their share of the misfit (converged solutions: ~4x smaller bond
    # error for 10x the weight here, not 10x, as the soft torsions take up part of it)
    assert weak < uniform / 2
    assert strong < weak / 2
    assert strong < BOND_TOLERANCE / 4


def test_gradient_through_weighted_inner_steps_matches_finite_differences():
    mol, ref = etkdg("CCO")
    graph = mol_graph(mol, VOCAB)
    targets = (edge_lengths(ref, graph.edges) * 1.05).detach().requires_grad_(True)
    weights = hop_weights(graph.hops, DG_WEIGHTS, torch.float64)
    start = ref + 0.2 * torch.from_numpy(np.random.default_rng(2).normal(size=ref.shape))

    def outer(t: torch.Tensor) -> torch.Tensor:  # fully unrolled: the gradient is exact
        x = solve_distance_geometry(t, graph.edges, start, 6, 6, weights=weights)
        return ((x - ref) ** 2).sum()

    assert torch.autograd.gradcheck(outer, (targets,), eps=1e-6, atol=1e-6, rtol=1e-4)
    # weights matter: the same steps unweighted end elsewhere
    plain = solve_distance_geometry(targets.detach(), graph.edges, start, 6, 0)
    weighted = solve_distance_geometry(targets.detach(), graph.edges, start, 6, 0, weights=weights)
    assert float((plain - weighted).abs().max()) > 1e-3


def test_card_without_weights_loads_unweighted_and_new_default_is_weighted():
    from ase_mlmd.calculators.cards import read_card

    assert "dg_weights" not in read_card(CARD_V1).parameters
    assert load_confvae(CARD_V1).settings.dg_weights == [1.0]
    assert load_confvae(CARD).settings.dg_weights == read_card(CARD).parameters["dg_weights"]
    assert ConfVAETrainConfig().dg_weights == list(DG_WEIGHTS)


def test_relaxed_confvae_samples_are_etkdg_relax_applied_to_the_samples():
    calc = reference_calculator("gfn2-xtb")
    confs = generate_conformers("CCCO", 4, "confvae", model=CARD, relax=True, calc=calc, seed=2)
    assert confs and all(c.info["method"] == "confvae+relax(gfn2-xtb)" for c in confs)
    # the same relaxation and pruning done by hand on the raw samples
    mol = mol_from_smiles("CCCO")
    raw = np.array([a.positions for a in sample_conformers(CARD, mol, 4, seed=2)])
    pos, ene, _ = relax_conformers(mol, raw, calc, fmax=0.05)
    keep = prune_conformers(
        pos[:, heavy_indices(mol)], ene, symmetry_matches(mol), 0.25, 6.0 * KCAL
    )
    got = np.array([c.get_potential_energy() for c in confs])
    np.testing.assert_allclose(got, ene[keep], atol=1e-6)
    for c in confs:  # minima of the calculator, bonds as in an xTB-relaxed ETKDG structure
        probe = c.copy()
        probe.calc = calc
        assert np.abs(probe.get_forces()).max() < 0.06
    ref = generate_conformers("CCCO", 1, "etkdg+relax", calc=calc, seed=0)[0].positions
    assert bond_deviation(mol, np.array([c.positions for c in confs]), ref).max() < 0.02


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "etkdg", "relax": True}, "etkdg\\+relax"),
        ({"method": "etkdg+relax", "relax": False}, "always relaxes"),
        ({"method": "confvae", "relax": True}, "--model"),
    ],
)
def test_relax_requests_that_do_not_apply(kwargs, match):
    with pytest.raises(ConformerRequestError, match=match):
        generate_conformers("CCO", 2, **kwargs)


def test_cli_relax_flag(tmp_path, capsys):
    from ase.io import read

    out = tmp_path / "c.extxyz"
    cli_main.main(["conformers", "CCO", "-n", "2", "--method", "confvae", "--model", str(CARD),
                   "--relax", "-o", str(out)])  # fmt: skip
    frames = read(out, ":")
    assert frames and all(f.info["method"] == "confvae+relax(gfn2-xtb)" for f in frames)
    assert all("energy" in f.calc.results for f in frames)
    with pytest.raises(SystemExit) as info:
        cli_main.main(["conformers", "CCO", "--method", "etkdg", "--relax", "-o", str(out)])
    assert info.value.code == 2
    assert "--relax does not apply" in capsys.readouterr().err


def test_msd_gradient_reaches_long_range_distances_only():
    # bonds and 1-3 pairs are taught by the distance term alone: the bilevel MSD term (through
    # the DG) must not move them (it shrank them towards an average structure)
    from ase_mlmd.conformers.confvae import ConfVAE, ConfVAESettings

    torch.manual_seed(0)
    model = ConfVAE(ConfVAESettings(VOCAB, hidden=16, layers=1, steps_4d=5, steps=6, unrolled=3))
    mol, ref = etkdg("CCCCO")
    batch = collate([mol_graph(mol, VOCAB, 6)])
    leaf = {}

    def decode(b, z):
        leaf["d"] = (edge_lengths(ref, b.edges).float() * 1.1).requires_grad_(True)
        return leaf["d"]

    model.decode = decode
    out = model.loss(batch, ref.float(), beta=0.0, distance_weight=0.0, sample=False)
    out["loss"].backward()
    grad = leaf["d"].grad
    assert float(grad[batch.hops <= 2].abs().max()) == 0.0
    assert float(grad[batch.hops >= 3].abs().max()) > 1e-4
    # the distance term does reach them (weighted option: bonds above longer pairs)
    leaf.clear()
    out = model.loss(
        batch, ref.float(), beta=0.0, distance_weight=1.0, sample=False, weighted_distances=True
    )
    (out["loss"] - out["msd"]).backward()
    grad = leaf["d"].grad.abs() / edge_lengths(ref, batch.edges).float()  # per unit of error
    assert float(grad[batch.hops == 1].min()) > 10 * float(grad[batch.hops >= 3].max())
