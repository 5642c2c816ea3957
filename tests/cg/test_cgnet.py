"""CGnet-style CG network (internal-coordinate features → MLP): forces = finite differences,
rigid-motion invariance, sensitivity to mirror images (the sine features), card round trip, and
force matching on the real alanine dipeptide CG data (../shared/data/ala2_cg)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ase_mlmd.batch import batch_from_atoms
from ase_mlmd.beads import make_cg_atoms
from ase_mlmd.calculators.ml_calculator import MLCalculator
from ase_mlmd.calculators.registry import load_calculator
from ase_mlmd.cg.data import read_cg_data
from ase_mlmd.cg.forcefield import fit_cg_forcefield, force_matching_loss
from ase_mlmd.cg.priors import PriorSettings
from ase_mlmd.cg.topology import CGTopology
from ase_mlmd.errors import CardError, InvalidStructureError
from ase_mlmd.models.bonded import dihedral_angle
from ase_mlmd.models.cg_features import CGnetNetwork
from ase_mlmd.models.cg_model import CGForceField, export_cg_card
from ase_mlmd.testing import check_batch_consistency, check_forces
from ase_mlmd.train.config import TrainConfig

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ala2_cg"
CHAIN = CGTopology.chain(["A", "B", "C", "B", "A"])


def chain_positions(rng, n=1, noise=0.15):
    """(n, 5, 3) zig-zag chains with random distortions, Å."""
    base = np.array([[0, 0, 0], [1.4, 0.3, 0], [2.2, 1.5, 0.2], [3.5, 1.6, 1.0], [4.3, 2.8, 0.7]])
    return base + rng.normal(scale=noise, size=(n, 5, 3))


def cg(positions, cell=None, pbc=False):
    return make_cg_atoms(positions, CHAIN.bead_types, ["A", "B", "C"], [12, 14, 13, 12, 14],
                         cell=cell, pbc=pbc)  # fmt: skip


def network(dtype=torch.float64, seed=3) -> CGnetNetwork:
    net = CGnetNetwork(5, CHAIN.angles, CHAIN.dihedrals, hidden=(16, 16), cutoff=6.0,
                       species=(1, 2, 3), dtype=dtype, seed=seed)  # fmt: skip
    rng = np.random.default_rng(11)
    net.set_normalisation(batch_from_atoms([cg(p) for p in chain_positions(rng, 20)], 6.0))
    return net


def test_features_are_distances_angles_and_cos_sin_of_dihedrals():
    net = network()
    assert net.n_features == 10 + 3 + 2 * 2
    pos = chain_positions(np.random.default_rng(0))[0]
    feats = net.features(batch_from_atoms([cg(pos)], 6.0))[0][0].numpy()
    i, j = np.triu_indices(5, 1)
    np.testing.assert_allclose(feats[:10], np.linalg.norm(pos[j] - pos[i], axis=1), rtol=1e-12)
    u, v = pos[0] - pos[1], pos[2] - pos[1]
    cos_angle = u @ v / np.linalg.norm(u) / np.linalg.norm(v)
    assert feats[10] == pytest.approx(np.arccos(cos_angle), rel=1e-10)
    t = torch.as_tensor(pos)
    phi = float(dihedral_angle(t[1] - t[0], t[2] - t[1], t[3] - t[2]))
    assert feats[13] == pytest.approx(np.cos(phi), abs=1e-12)  # (0,1,2,3), then (1,2,3,4)
    assert feats[15] == pytest.approx(np.sin(phi), abs=1e-12)
    # normalisation from the structures given: mean 0, std 1 over them
    rng = np.random.default_rng(11)
    raw = net.features(batch_from_atoms([cg(p) for p in chain_positions(rng, 20)], 6.0))[0]
    z = (raw - net.feature_mean) / net.feature_std
    np.testing.assert_allclose(z.mean(0).numpy(), 0.0, atol=1e-10)
    np.testing.assert_allclose(z.std(0, unbiased=False).numpy(), 1.0, atol=1e-8)


def test_forces_are_finite_differences_and_batches_agree():
    rng = np.random.default_rng(0)
    calc = MLCalculator(network())
    atoms = cg(chain_positions(rng)[0])
    assert check_forces(calc, atoms, step=1e-5, atol=1e-6) < 1e-6
    two = make_cg_atoms(np.concatenate(chain_positions(rng, 2)), list(CHAIN.bead_types) * 2,
                        ["A", "B", "C"], [12.0] * 10)  # fmt: skip
    check_batch_consistency(calc, [atoms, two, cg(chain_positions(rng)[0])])
    # two molecules in one system: the sum of each alone
    each = sum(calc.get_potential_energy(cg(p)) for p in two.positions.reshape(2, 5, 3))
    assert calc.get_potential_energy(two) == pytest.approx(each, rel=1e-12)
    # float32 gives the float64 energy to single precision
    net32 = network()
    net32.float()
    e32 = MLCalculator(net32).get_potential_energy(atoms.copy())
    assert e32 == pytest.approx(calc.get_potential_energy(atoms), abs=1e-4)


def test_rotation_translation_invariant_but_not_mirror_invariant():
    rng = np.random.default_rng(3)
    calc = MLCalculator(network())
    pos = chain_positions(rng)[0]
    e0 = calc.get_potential_energy(cg(pos))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))  # proper rotation
    assert calc.get_potential_energy(cg(pos @ q.T + [3.0, -1.0, 2.0])) == pytest.approx(
        e0, abs=1e-10
    )
    box = cg(pos + [8.0, 0, 0], cell=np.diag([10.0, 10.0, 10.0]), pbc=True)
    box.wrap()  # split across the boundary: minimum image keeps the energy
    assert calc.get_potential_energy(box) == pytest.approx(e0, abs=1e-10)
    # the mirror image: distances and angles equal, sin φ flips, so the energy differs
    mirror = pos * [1, 1, -1]
    net = calc.model
    f0, fm = (net.features(batch_from_atoms([cg(p)], 6.0))[0][0] for p in (pos, mirror))
    torch.testing.assert_close(fm[:15], f0[:15])
    torch.testing.assert_close(fm[15:], -f0[15:])
    assert abs(f0[15:]).min() > 0.05  # a generic (non-planar) geometry
    assert abs(calc.get_potential_energy(cg(mirror)) - e0) > 1e-6


def test_card_round_trip_and_bad_input(tmp_path):
    rng = np.random.default_rng(5)
    model = CGForceField(None, network(), ["A", "B", "C"], CHAIN.to_dict())
    card = export_cg_card(model, tmp_path, "cgnet-test", card_file="card.toml")
    text = card.read_text()
    assert 'backend = "cgnet"' in text and "hidden" in text
    calc = load_calculator(card)  # safetensors: loads without trust_remote_code
    assert isinstance(calc.model.network, CGnetNetwork)
    structures = [cg(p) for p in chain_positions(rng, 4)]
    direct = model(batch_from_atoms(structures, 6.0))["energy"].detach().numpy()
    for atoms, expected in zip(structures, direct, strict=True):
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(float(expected), abs=1e-12)
    # a system that is not whole molecules
    with pytest.raises(InvalidStructureError, match="not a multiple of the 5 beads"):
        calc.get_potential_energy(make_cg_atoms(rng.normal(size=(4, 3)), ["A", "B", "C", "B"],
                                                ["A", "B", "C"], [12.0] * 4))  # fmt: skip
    # parameters that do not fit the weights: CardError naming the card
    edited, count = re.subn(r"hidden = \[[^\]]*\]", "hidden = [8, 16]", text)
    assert count == 1
    card.write_text(edited)
    with pytest.raises(CardError, match="cgnet network's parameters and weights"):
        load_calculator(card)


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/ala2_cg not present")
def test_short_fit_on_ala2_cg_beats_prior_only_on_held_out_frames(tmp_path):
    frames = read_cg_data(DATA, "kcal/mol", stride=5)  # 2000 frames, time order kept
    torch.manual_seed(0)
    config = TrainConfig(model="cgnet", cutoff=6.0, dtype="float64", split=(0.7, 0.1, 0.2),
                         ordered_split=True, max_epochs=8, batch_size=32, lr=2e-3, seed=1,
                         hyperparameters={"hidden": [32, 32]})  # fmt: skip
    fit = fit_cg_forcefield(frames, tmp_path / "fit", config, PriorSettings(), progress=False)
    assert fit.n_test == 400
    assert fit.test_loss < fit.test_loss_prior
    calc = load_calculator(fit.card_path)
    assert isinstance(calc.model.network, CGnetNetwork)
    assert force_matching_loss(calc.model, frames[1600:]) == pytest.approx(fit.test_loss, rel=1e-9)
    with pytest.raises(ValueError, match="cg fit"):  # not a model for ase-mlmd train
        from ase_mlmd.train.models import build_model

        build_model(config, None)


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/ala2_cg not present")
def test_cli_cg_fit_model_cgnet(tmp_path, monkeypatch):
    from ase_mlmd.cli import main as cli_main

    if ("cg", "ase_mlmd.cli.cg") not in cli_main.COMMANDS:
        monkeypatch.setattr(cli_main, "COMMANDS", [*cli_main.COMMANDS, ("cg", "ase_mlmd.cli.cg")])
    out = tmp_path / "cgnet"
    cli_main.main(["cg", "fit", str(DATA), "--units", "kcal/mol", "--model", "cgnet",
                   "--hyper", "width=8,depth=3", "--stride", "10", "--max-epochs", "1",
                   "-o", str(out)])  # fmt: skip
    net = load_calculator(out / "card.toml").model.network
    assert isinstance(net, CGnetNetwork) and net.hidden == [8, 8, 8]
