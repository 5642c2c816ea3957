"""CGVAE's optional loss terms beyond the paper's: the steric penalty (``delta``) uses the same
pairs and onsets as the clash metric (a structure is penalised exactly when it clashes under
the metric's rule at the same factor), its gradient against finite differences, training with
it removes clashes that training without it leaves; the 1-3 distance term (``gamma_angle``)
and ``sample_terms`` (the terms also on a prior draw) against direct computation; cards
written without these settings still load; the CLI records them."""

import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read

from ase_mlmd.backmap.card import load_backmapper, save_cgvae_card
from ase_mlmd.backmap.cgvae import (
    CGVAEBackmapper,
    CGVAEHyper,
    bond_lengths,
    steric_pairs,
    steric_penalty,
)
from ase_mlmd.backmap.metrics import angle_triples, bond_separation, clash_mask
from ase_mlmd.backmap.pairs import BackmapPairs
from ase_mlmd.cg.builders import girvan_newman

DATA = Path(__file__).parents[2] / "benchmarks" / "cg_data" / "ala2_aa_200.extxyz"
SMALL = dict(features=8, latent=4, encoder_layers=1, prior_layers=1, decoder_layers=2)


@pytest.fixture(scope="module")
def frames():
    return read(DATA, ":200")


@pytest.fixture(scope="module")
def mapping(frames):
    return girvan_newman(frames[0], 4)


def test_penalty_is_positive_exactly_for_clashing_structures(frames, mapping):
    numbers, bonds = mapping.numbers, mapping.bonds
    pairs, limits = steric_pairs(len(numbers), bonds, numbers, CGVAEHyper(delta=1.0))
    separation = bond_separation(len(numbers), bonds)
    assert (separation[pairs[:, 0], pairs[:, 1]] > 3).all()
    assert len(pairs) == int(np.triu(separation > 3, 1).sum())
    rng = np.random.default_rng(0)
    # MD frames (7 % clash at 300 K: H-bonds, 1-5 H···H) and the same squeezed by 10-25 %
    x = np.stack([a.positions for a in frames])
    squeezed = x * rng.uniform(0.75, 0.9, size=(len(x), 1, 1))
    both = np.concatenate([x, squeezed])
    penalty = steric_penalty(torch.as_tensor(both), pairs, limits.double()).numpy()
    clashes = clash_mask(both, numbers, bonds)[:, 0]
    assert 0 < clashes.sum() < len(both)  # both kinds present
    np.testing.assert_array_equal(penalty > 0, clashes)
    # no steric pairs, no penalty, when delta is 0 (the CGVAE loss)
    none, _ = steric_pairs(len(numbers), bonds, numbers, CGVAEHyper())
    assert len(none) == 0


def test_penalty_gradient_matches_finite_differences(frames, mapping):
    numbers, bonds = mapping.numbers, mapping.bonds
    pairs, limits = steric_pairs(len(numbers), bonds, numbers, CGVAEHyper(delta=1.0))
    x = torch.as_tensor(frames[3].positions * 0.8)[None].requires_grad_(True)
    steric_penalty(x, pairs, limits.double()).sum().backward()
    assert x.grad.abs().max() > 0
    h = 1e-6
    for atom, axis in [(0, 0), (5, 1), (13, 2), (20, 0)]:
        shifted = []
        for sign in (1, -1):
            y = x.detach().clone()
            y[0, atom, axis] += sign * h
            shifted.append(float(steric_penalty(y, pairs, limits.double())))
        assert x.grad[0, atom, axis] == pytest.approx((shifted[0] - shifted[1]) / (2 * h),
                                                      rel=1e-5, abs=1e-8)  # fmt: skip


def test_training_with_the_penalty_removes_clashes(frames, mapping):
    """Two identical short trainings on squeezed frames (nearly every one clashes): the decoder with
    delta > 0 reconstructs structures with a fraction of the overlap and fewer clashing
    structures than the one without."""
    torch.set_num_threads(1)
    squeezed = [a.copy() for a in frames[:24]]
    for a in squeezed:
        a.positions = a.positions.mean(0) + 0.8 * (a.positions - a.positions.mean(0))
    pairs = BackmapPairs.from_frames(squeezed, mapping)
    assert clash_mask(pairs.aa, pairs.numbers, pairs.bonds).mean() > 0.9
    cg = torch.as_tensor(pairs.cg, dtype=torch.float32)
    aa = torch.as_tensor(pairs.aa, dtype=torch.float32)
    ratios, penalties, parts_seen = {}, {}, {}
    for delta in (0.0, 5.0):
        bm = CGVAEBackmapper.new(pairs.mapping, CGVAEHyper(**SMALL, delta=delta), seed=0)
        optimizer = torch.optim.Adam(bm.model.parameters(), lr=5e-3)
        generator = torch.Generator().manual_seed(0)
        for _ in range(60):
            loss, parts = bm.model.train().loss(cg, aa, generator=generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        parts_seen[delta] = set(parts)
        x = bm.model.eval().decode(cg, bm.model.encode(cg, aa)[0]).detach().numpy()
        ratios[delta] = clash_mask(x, pairs.numbers, pairs.bonds).mean()
        p, lim = steric_pairs(len(pairs.numbers), pairs.bonds, pairs.numbers, CGVAEHyper(delta=1))
        penalties[delta] = float(steric_penalty(torch.as_tensor(x), p, lim).mean())
    assert parts_seen[0.0] == {"mse", "kl", "bond"}
    assert "clash" in parts_seen[5.0]
    assert penalties[5.0] < 0.2 * penalties[0.0], penalties
    assert ratios[5.0] < ratios[0.0], ratios


def test_settings_are_checked():
    with pytest.raises(ValueError, match="delta"):
        CGVAEHyper.from_dict({"delta": -1.0})
    with pytest.raises(ValueError, match="gamma_angle"):
        CGVAEHyper.from_dict({"gamma_angle": -0.1})
    with pytest.raises(ValueError, match="clash_factor"):
        CGVAEHyper.from_dict({"clash_factor": 0.0})
    with pytest.raises(ValueError, match="atomic numbers"):
        steric_pairs(3, np.array([[0, 1], [1, 2]]), None, CGVAEHyper(delta=1.0))


def test_card_without_the_setting_loads_as_no_penalty(tmp_path, mapping):
    """A card written before the steric term (no delta / clash_factor in its
    hyperparameters) loads with delta 0; a card with delta keeps it."""
    import tomllib

    for delta in (0.0, 2.0):
        bm = CGVAEBackmapper.new(mapping, CGVAEHyper(**SMALL, delta=delta), seed=1)
        card = save_cgvae_card(bm, tmp_path / f"d{delta}", "ala2")
        if delta == 0.0:  # strip the new keys as an old card would lack them
            text = card.read_text()
            new = ("delta", "clash_factor", "sample_terms", "gamma_angle")
            kept = [line for line in text.splitlines() if not line.startswith(new)]
            card.write_text("\n".join(kept) + "\n")
            hyper = tomllib.loads(card.read_text())["parameters"]["hyperparameters"]
            assert not {"delta", "clash_factor", "sample_terms", "gamma_angle"} & set(hyper)
        loaded = load_backmapper(card)
        assert loaded.model.hyper.delta == delta
        for key, value in bm.model.state_dict().items():
            torch.testing.assert_close(loaded.model.state_dict()[key], value)


def test_sample_terms_judge_a_prior_draw_too(frames, mapping):
    """With ``sample_terms`` the bond term (deterministic: the prior mean) averages the
    reconstruction's and the prior-decoded structure's bond MSE; the steric term likewise."""
    torch.set_num_threads(1)
    pairs = BackmapPairs.from_frames(frames[:8], mapping)
    cg = torch.as_tensor(pairs.cg, dtype=torch.float32)
    aa = torch.as_tensor(pairs.aa, dtype=torch.float32)
    hyper = CGVAEHyper(**SMALL, delta=1.0, clash_factor=1.0, sample_terms=True, gamma_angle=1.0)
    model = CGVAEBackmapper.new(pairs.mapping, hyper, seed=2).model.eval()
    _, parts = model.loss(cg, aa, deterministic=True)
    with torch.no_grad():
        recon = model.decode(cg, model.encode(cg, aa)[0])
        prior = model.decode(cg, model.prior_of(cg)[0])
    ref = bond_lengths(aa, model.bonds)
    expected = [float(((bond_lengths(y, model.bonds) - ref) ** 2).mean()) for y in (recon, prior)]
    assert parts["bond"] == pytest.approx(np.mean(expected), rel=1e-5)
    assert expected[0] != pytest.approx(expected[1], rel=1e-3)  # two different structures
    penalty = steric_penalty(torch.cat([recon, prior]), model.steric_pairs, model.steric_limits)
    assert parts["clash"] == pytest.approx(float(penalty.mean()), rel=1e-5)
    assert parts["clash"] > 0  # at 1.0 × the vdW sum untrained structures overlap
    # 1-3 distances: the ends of every bond angle (alanine dipeptide: 36 angles)
    ends = angle_triples(pairs.bonds)[:, [0, 2]]
    assert len(ends) == 36 and model.angle_ends.tolist() == ends.tolist()
    d = [np.linalg.norm(y.numpy()[:, ends[:, 0]] - y.numpy()[:, ends[:, 1]], axis=-1)
         for y in (recon, prior, aa)]  # fmt: skip
    angle = np.mean([((d[k] - d[2]) ** 2).mean() for k in (0, 1)])
    assert parts["angle"] == pytest.approx(angle, rel=1e-4)


def test_cli_train_records_the_steric_settings(tmp_path, frames, mapping):
    from ase.io import write

    from ase_mlmd.cli.main import main

    write(tmp_path / "aa.extxyz", frames[:24])
    mapping.to_json(tmp_path / "map.json")
    base = ["backmap", "train", "--data", str(tmp_path / "aa.extxyz"), "--mapping",
            str(tmp_path / "map.json"), "--split", "time:16,4,4", "--max-epochs", "1",
            "--features", "8", "--latent", "2", "--batch-size", "8", "--no-progress"]  # fmt: skip
    main([*base, "--delta", "2", "--clash-factor", "0.9", "--sample-terms", "--gamma-angle",
          "0.5", "-o", str(tmp_path / "m")])  # fmt: skip
    hyper = load_backmapper(tmp_path / "m" / "card.toml").model.hyper
    assert (hyper.delta, hyper.clash_factor, hyper.sample_terms) == (2.0, 0.9, True)
    assert hyper.gamma_angle == 0.5
    log = (tmp_path / "m" / "train_log.csv").read_text().splitlines()
    assert log[0].endswith("val_clash_A2") and float(log[1].split(",")[-1]) >= 0
    # --lr-patience reaches the run's configuration (the schedule the shared loop builds)
    main([*base, "--lr-patience", "0", "-o", str(tmp_path / "p")])
    card = tomllib.loads((tmp_path / "p" / "card.toml").read_text())
    assert card["provenance"]["config"]["lr_patience"] == 0
    with pytest.raises(SystemExit):
        main([*base, "--lr-patience", "-1", "-o", str(tmp_path / "bad_lr")])
    with pytest.raises(SystemExit):
        main([*base, "--delta", "-1", "-o", str(tmp_path / "bad")])
