"""CGVAE: rotation/translation equivariance, exact CG reproduction, the KL term against
torch.distributions, and a tiny overfit on alanine dipeptide frames."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read
from scipy.spatial.transform import Rotation

from ase_mlmd.backmap.cgvae import CGVAEBackmapper, CGVAEHyper
from ase_mlmd.backmap.cgvae_layers import gaussian_kl
from ase_mlmd.backmap.pairs import BackmapPairs
from ase_mlmd.cg.builders import girvan_newman, heavy_atom

DATA = Path(__file__).parents[2] / "benchmarks" / "cg_data" / "ala2_aa_200.extxyz"
SMALL = CGVAEHyper(features=8, latent=4, encoder_layers=1, prior_layers=1, decoder_layers=2)


@pytest.fixture(scope="module")
def frames():
    return read(DATA, ":40")


@pytest.fixture(scope="module")
def backmapper(frames):
    """An untrained float64 CGVAE for a 5-bead Girvan–Newman mapping (random weights: the
    symmetries hold for any weights)."""
    torch.set_num_threads(1)
    bm = CGVAEBackmapper.new(girvan_newman(frames[0], 5), SMALL, seed=3)
    bm.model.double()
    return bm


def _positions(structures):
    return np.stack([a.positions for a in structures])


def test_rotation_and_translation_equivariance(frames, backmapper):
    cg = backmapper.mapping.apply_positions(frames[:3])
    samples = np.stack([_positions(s) for s in backmapper.sample(cg, 2, seed=5)])
    rotation = Rotation.random(random_state=1).as_matrix()
    shift = np.array([3.0, -7.5, 11.0])
    moved = []
    for atoms in cg:
        other = atoms.copy()
        other.positions = atoms.positions @ rotation.T + shift
        moved.append(other)
    moved_samples = np.stack([_positions(s) for s in backmapper.sample(moved, 2, seed=5)])
    np.testing.assert_allclose(moved_samples, samples @ rotation.T + shift, atol=1e-8)
    # the same for the deterministic reconstruction and the autoencoder path
    recon = _positions(backmapper.reconstruct(cg))
    np.testing.assert_allclose(_positions(backmapper.reconstruct(moved)),
                               recon @ rotation.T + shift, atol=1e-8)  # fmt: skip
    aa = np.stack([a.positions for a in frames[:3]])
    cg_xyz = np.stack([a.positions for a in cg])
    auto = backmapper.autoencode(cg_xyz, aa)
    auto_moved = backmapper.autoencode(cg_xyz @ rotation.T + shift, aa @ rotation.T + shift)
    np.testing.assert_allclose(auto_moved, auto @ rotation.T + shift, atol=1e-8)
    # and samples do depend on the seed (the latent matters)
    other_seed = np.stack([_positions(s) for s in backmapper.sample(cg, 2, seed=6)])
    assert np.abs(other_seed - samples).max() > 1e-4


def test_remapping_a_sample_gives_the_input_cg(frames):
    torch.set_num_threads(1)
    mapping = heavy_atom(frames[0])  # centre-of-mass weights: the re-centring uses W itself
    bm = CGVAEBackmapper.new(mapping, SMALL, seed=0)  # float32 as trained
    cg = mapping.apply_positions(frames[:4])
    for per_frame, atoms in zip(bm.sample(cg, 3, seed=0), cg, strict=True):
        for sample in per_frame:
            assert sample.get_chemical_symbols() == frames[0].get_chemical_symbols()
            remapped = mapping.apply_positions(sample)
            np.testing.assert_allclose(remapped.positions, atoms.positions, rtol=0, atol=1e-6)
            assert np.abs(sample.positions - frames[0].positions).max() > 0.01  # not a copy


def test_kl_against_closed_form():
    generator = torch.Generator().manual_seed(0)
    mu_q, lv_q, mu_p, lv_p = (torch.randn(5, 7, 4, generator=generator, dtype=torch.float64)
                              for _ in range(4))  # fmt: skip
    kl = gaussian_kl(mu_q, lv_q, mu_p, lv_p)
    q = torch.distributions.Normal(mu_q, torch.exp(0.5 * lv_q))
    p = torch.distributions.Normal(mu_p, torch.exp(0.5 * lv_p))
    reference = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(kl, reference)
    assert (kl >= 0).all()
    torch.testing.assert_close(
        gaussian_kl(mu_q, lv_q, mu_q, lv_q), torch.zeros(5, 7, dtype=torch.float64)
    )
    # one dimension by hand: q = N(1, 1), p = N(0, 4): ½ (log 4 + (1 + 1)/4 − 1)
    one = gaussian_kl(
        torch.ones(1), torch.zeros(1), torch.zeros(1), torch.log(torch.full((1,), 4.0))
    )
    assert float(one) == pytest.approx(0.5 * (np.log(4.0) + 0.5 - 1.0), rel=1e-6)


def test_tiny_overfit_reduces_rmsd(frames):
    torch.set_num_threads(1)
    mapping = girvan_newman(frames[0], 6)
    pairs = BackmapPairs.from_frames(frames[:16], mapping)
    hyper = CGVAEHyper(features=16, latent=4, encoder_layers=1, prior_layers=1,
                       decoder_layers=2)  # fmt: skip
    bm = CGVAEBackmapper.new(pairs.mapping, hyper, seed=0)
    cg = torch.as_tensor(pairs.cg, dtype=torch.float32)
    aa = torch.as_tensor(pairs.aa, dtype=torch.float32)

    def rmsd() -> float:
        x = bm.autoencode(pairs.cg, pairs.aa)
        return float(np.sqrt(((x - pairs.aa) ** 2).sum(-1).mean()))

    before = rmsd()
    model = bm.model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(80):
        loss, parts = model.loss(cg, aa, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    after = rmsd()
    assert after < 0.5 * before, (before, after)
    assert parts["bond"] >= 0 and parts["kl"] >= 0
