"""CGnet's Lipschitz regularisation of the CGnet-style network (``lipschitz=λ``): the spectral
norm of every dense layer as used stays ≤ λ after training steps that push the raw weights past
it (checked with numpy's SVD), the network's gradient over its standardised features is bounded
by λ^L, forces stay finite differences of the energy, and λ survives the card and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ase_mlmd.batch import batch_from_atoms
from ase_mlmd.beads import make_cg_atoms
from ase_mlmd.calculators.ml_calculator import MLCalculator
from ase_mlmd.calculators.registry import load_calculator
from ase_mlmd.cg.topology import CGTopology
from ase_mlmd.models.cg_features import CGnetNetwork
from ase_mlmd.models.cg_model import CGForceField, export_cg_card
from ase_mlmd.testing import check_forces

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ala2_cg"
CHAIN = CGTopology.chain(["A", "B", "C", "B", "A"])
BASE = np.array([[0, 0, 0], [1.4, 0.3, 0], [2.2, 1.5, 0.2], [3.5, 1.6, 1.0], [4.3, 2.8, 0.7]])


def structures(rng, n):
    return [
        make_cg_atoms(
            BASE + rng.normal(scale=0.2, size=(5, 3)),
            CHAIN.bead_types,
            ["A", "B", "C"],
            [12, 14, 13, 12, 14],
        )  # fmt: skip
        for _ in range(n)
    ]


def network(lipschitz, seed=2):
    net = CGnetNetwork(5, CHAIN.angles, CHAIN.dihedrals, hidden=(16, 16), cutoff=6.0,
                       species=(1, 2, 3), seed=seed, lipschitz=lipschitz)  # fmt: skip
    net.set_normalisation(batch_from_atoms(structures(np.random.default_rng(1), 30), 6.0))
    return net


def spectral_norms(weights):
    return [float(np.linalg.norm(w.detach().numpy(), 2)) for w in weights]


def test_bound_holds_after_training_steps_that_push_the_weights_past_it():
    lam = 0.8
    net = network(lam)
    raw0 = spectral_norms(layer.weight for layer in net.mlp if isinstance(layer, torch.nn.Linear))
    assert max(raw0) > lam  # the initialisation is already above the bound: it is active
    batch = batch_from_atoms(structures(np.random.default_rng(2), 16), 6.0)
    target = torch.linspace(-50.0, 50.0, 16, dtype=torch.float64)  # needs a steep network
    optimizer = torch.optim.Adam(net.parameters(), lr=0.5)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = ((net(batch)["energy"] - target) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        used = spectral_norms(net.effective_weights())
        assert max(used) <= lam * (1 + 1e-9)
    assert losses[-1] < losses[0]  # the weights did train (not frozen by the projection)
    raw = spectral_norms(layer.weight for layer in net.mlp if isinstance(layer, torch.nn.Linear))
    assert max(raw) > 2 * lam  # the raw weights went far past λ; the layers as used did not
    # the forward pass uses the projected weights: the same energy from an explicit MLP
    x = (net.features(batch)[0] - net.feature_mean) / net.feature_std
    ws, layers = net.effective_weights(), [m for m in net.mlp if isinstance(m, torch.nn.Linear)]
    for k, (w, layer) in enumerate(zip(ws, layers, strict=True)):
        x = x @ w.T + layer.bias
        x = torch.tanh(x) if k < len(ws) - 1 else x
    torch.testing.assert_close(net(batch)["energy"], x.squeeze(-1))


def test_gradient_over_standardised_features_is_bounded_by_lambda_to_the_depth():
    lam = 0.5
    net = network(lam, seed=4)
    with torch.no_grad():  # raw weights far above the bound
        for layer in net.mlp:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(20.0)
    z = torch.randn(200, net.n_features, dtype=torch.float64, requires_grad=True)
    energy = net._dense(z).sum()
    (grad,) = torch.autograd.grad(energy, z)
    bound = lam ** len(net.effective_weights())  # tanh is 1-Lipschitz
    assert float(grad.norm(dim=1).max()) <= bound * (1 + 1e-9)
    free = network(None, seed=4)
    with torch.no_grad():
        for layer in free.mlp:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(20.0)
    z2 = z.detach().clone().requires_grad_(True)
    (grad_free,) = torch.autograd.grad(free._dense(z2).sum(), z2)
    assert float(grad_free.norm(dim=1).max()) > 10 * bound  # without λ nothing bounds it


def test_forces_are_finite_differences_and_lambda_survives_the_card(tmp_path):
    rng = np.random.default_rng(6)
    net = network(0.7)
    atoms = structures(rng, 1)[0]
    assert check_forces(MLCalculator(net), atoms, step=1e-5, atol=1e-6) < 1e-6
    model = CGForceField(None, net, ["A", "B", "C"], CHAIN.to_dict())
    card = export_cg_card(model, tmp_path, "cgnet-lipschitz", card_file="card.toml")
    assert "lipschitz = 0.7" in card.read_text()
    loaded = load_calculator(card).model.network
    assert loaded.lipschitz == pytest.approx(0.7)
    more = structures(rng, 4)
    torch.testing.assert_close(
        loaded(batch_from_atoms(more, 6.0))["energy"], net(batch_from_atoms(more, 6.0))["energy"]
    )


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_a_bound_that_is_not_positive_is_refused(bad):
    with pytest.raises(ValueError, match="lipschitz must be a positive bound"):
        network(bad)


def test_cli_cg_fit_hyper_lipschitz(tmp_path, monkeypatch):
    from ase_mlmd.cli import main as cli_main

    if ("cg", "ase_mlmd.cli.cg") not in cli_main.COMMANDS:
        monkeypatch.setattr(cli_main, "COMMANDS", [*cli_main.COMMANDS, ("cg", "ase_mlmd.cli.cg")])
    out = tmp_path / "cgnet"
    cli_main.main(["cg", "fit", str(DATA), "--units", "kcal/mol", "--model", "cgnet",
                   "--priors", "bonds,angles,repulsion", "--hyper",
                   "width=8,depth=2,lipschitz=0.3", "--stride", "10", "--max-epochs", "2",
                   "--lr", "0.05", "-o", str(out)])  # fmt: skip
    net = load_calculator(out / "card.toml").model.network
    assert isinstance(net, CGnetNetwork) and net.lipschitz == pytest.approx(0.3)
    assert max(spectral_norms(net.effective_weights())) <= 0.3 * (1 + 1e-6)  # float32 card


@pytest.mark.parametrize("bad", ["0", "-2", "big"])
def test_cli_refuses_a_lipschitz_bound_that_is_not_positive(tmp_path, monkeypatch, capsys, bad):
    from ase_mlmd.cli import main as cli_main

    if ("cg", "ase_mlmd.cli.cg") not in cli_main.COMMANDS:
        monkeypatch.setattr(cli_main, "COMMANDS", [*cli_main.COMMANDS, ("cg", "ase_mlmd.cli.cg")])
    with pytest.raises(SystemExit) as stop:
        cli_main.main(["cg", "fit", str(DATA), "--units", "kcal/mol", "--model", "cgnet", "--hyper",
                       f"width=8,lipschitz={bad}", "-o", str(tmp_path / "x")])  # fmt: skip
    assert stop.value.code == 2
    message = f"--hyper lipschitz={bad}: the Lipschitz bound must be a positive"
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x" / "card.toml").exists()
