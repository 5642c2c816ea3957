"""The training loop end to end: it learns an analytic target, every backend trains and exports
a card that loads without trust, the LR schedule and early stopping follow their rules, and the
exported weights are the weight average."""

from __future__ import annotations

import csv
import json
import tomllib

import numpy as np
import pytest
import torch
from conftest import shared_file
from safetensors.torch import load_file
from training_frames import lj_clusters

from ase_mlmd import evaluate, load_calculator
from ase_mlmd.batch import batch_from_atoms
from ase_mlmd.data.readers import read_frames
from ase_mlmd.train import TrainConfig, train
from ase_mlmd.train.checkpoint import load_train_checkpoint


def _log(path):
    with open(path / "train_log.csv") as handle:
        return list(csv.DictReader(handle))


def test_schnet_learns_lennard_jones_forces(tmp_path):
    """Fit LJ-labelled argon clusters; the exported calculator must reproduce ASE's LJ forces on
    clusters it never saw, to a small fraction of their size."""
    frames = lj_clusters(40, seed=0)
    config = TrainConfig(model="schnet", cutoff=6.0, max_epochs=15, split=(32, 4, 4), seed=5)
    result = train(frames, config, tmp_path / "lj-schnet", progress=False)
    assert result.stop_reason == "max_epochs" and result.epochs == 15

    rows = _log(tmp_path / "lj-schnet")
    assert len(rows) == 15
    first = float(rows[0]["val_force_mae_meV_per_A"])
    best = min(float(r["val_force_mae_meV_per_A"]) for r in rows)
    assert best < 0.4 * first

    calc = load_calculator(result.card_path)
    errors, sizes = [], []
    for atoms in lj_clusters(6, seed=99):
        reference = atoms.get_forces()
        probe = atoms.copy()
        probe.calc = calc
        errors.append(np.abs(probe.get_forces() - reference))
        sizes.append(np.abs(reference))
    relative = np.mean(errors) / np.mean(sizes)
    assert relative < 0.15, f"force MAE is {relative:.1%} of the mean |F|"


@pytest.fixture(scope="module")
def ethanol_frames():
    return read_frames(shared_file("ethanol/test_ethanol.db"), energy_unit="kcal/mol")


@pytest.mark.parametrize("model", ["nequip", "schnet", "painn"])
def test_each_backend_trains_and_exports_a_loadable_card(tmp_path, ethanol_frames, model):
    tiny = {
        "nequip": {"num_features": 8, "num_layers": 1},
        "schnet": {"n_atom_basis": 8, "n_interactions": 1},
        "painn": {"n_atom_basis": 8, "n_interactions": 1},
    }[model]
    config = TrainConfig(
        model=model, cutoff=4.0, max_epochs=1, batch_size=4, split=(12, 4, 4), hyperparameters=tiny
    )
    out = tmp_path / f"ethanol-{model}"
    result = train(ethanol_frames, config, out, progress=False, command="pytest")
    assert result.card_path == out / "card.toml" and result.epochs == 1

    card = tomllib.loads(result.card_path.read_text())
    assert card["name"] == f"ethanol-{model}"
    prov = card["provenance"]
    assert prov["command"] == "pytest" and prov["seed"] == 123
    assert prov["split"] == {"train": 12, "val": 4, "test": 4, "seed": 123, "ordered": False,
                             "n_frames": 20}  # fmt: skip

    # the card loads without trust and computes what the in-memory (EMA) model computes
    calc = load_calculator(result.card_path)
    test_idx = json.loads((out / "split.json").read_text())["test"]
    test_frames = [ethanol_frames[i] for i in test_idx]
    batch = batch_from_atoms(test_frames, config.cutoff)
    expected = evaluate(result.model.cpu(), batch)
    forces, energies, abs_force_errors, energy_errors = [], [], [], []
    for atoms in test_frames:
        probe = atoms.copy()
        probe.calc = calc
        energies.append(probe.get_potential_energy())
        forces.append(probe.get_forces())
        abs_force_errors.append(np.abs(forces[-1] - atoms.get_forces()))
        energy_errors.append(abs(energies[-1] - atoms.get_potential_energy()) / len(atoms))
    np.testing.assert_allclose(energies, expected["energy"].numpy(), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(np.concatenate(forces), expected["forces"].numpy(), atol=1e-5)
    # the test errors on the card are those of the card's model on the test frames
    force_mae = 1e3 * np.mean(np.concatenate(abs_force_errors))
    assert prov["test_force_mae_meV_per_A"] == pytest.approx(force_mae, rel=1e-4)
    assert prov["test_energy_mae_meV_per_atom"] == pytest.approx(
        1e3 * np.mean(energy_errors), rel=1e-3, abs=1e-3
    )
    assert result.test_force_mae_mev_per_angstrom == pytest.approx(force_mae, rel=1e-4)


def test_plateau_halves_the_lr_and_early_stopping_stops(tmp_path):
    """With a learning rate too small to change float32 weights, the validation error never
    improves: ReduceLROnPlateau (patience 0) halves the LR after every epoch but the first, and
    early stopping (patience 3) ends the run after 1 + 3 epochs."""
    config = TrainConfig(
        model="schnet",
        cutoff=5.0,
        lr=1e-12,
        lr_patience=0,
        lr_factor=0.5,
        min_lr=0.0,
        early_stop_patience=3,
        max_epochs=50,
        split=(4, 2, 2),
        hyperparameters={"n_atom_basis": 8, "n_interactions": 1},
    )
    result = train(lj_clusters(8), config, tmp_path / "flat", progress=False)
    assert result.stop_reason == "early_stopping"
    assert result.epochs == 4 and result.best_epoch == 1
    lrs = [float(r["lr"]) for r in _log(tmp_path / "flat")]
    np.testing.assert_allclose(lrs, [1e-12, 1e-12, 5e-13, 2.5e-13], rtol=1e-12)


def test_validation_and_export_use_the_weight_average(tmp_path):
    config = TrainConfig(
        model="schnet",
        cutoff=5.0,
        max_epochs=3,
        ema_decay=0.9,
        split=(8, 2, 2),
        hyperparameters={"n_atom_basis": 8, "n_interactions": 1},
    )
    out = tmp_path / "ema"
    result = train(lj_clusters(12), config, out, progress=False)
    state = load_train_checkpoint(out / "checkpoint.pt")
    best = state["best"]
    assert best["epoch"] == result.best_epoch
    exported = load_file(str(out / "ema.safetensors"))
    raw = {k: v for k, v in state["model"].items() if k.startswith("nnp.")}
    assert exported.keys() == {k.removeprefix("nnp.") for k in raw}
    for key, value in exported.items():
        assert torch.equal(value, best["ema"]["nnp." + key]), key
    # the average is not the raw weights
    differs = [not torch.equal(exported[k.removeprefix("nnp.")], v) for k, v in raw.items()]
    assert any(differs)
    # one average update per optimisation step: 8 frames / batch 4 = 2 steps per epoch
    assert state["ema"]["num_updates"] == 3 * 2


def test_max_time_cuts_the_run_short_and_still_exports_a_validated_card(tmp_path):
    """A budget already spent after the first optimisation step: the partial epoch is
    validated, logged and exported."""
    config = TrainConfig(
        model="schnet",
        cutoff=5.0,
        max_time=1e-3,
        max_epochs=100,
        split=(8, 2, 2),
        hyperparameters={"n_atom_basis": 8, "n_interactions": 1},
    )
    out = tmp_path / "short"
    result = train(lj_clusters(12), config, out, progress=False)
    assert result.stop_reason == "max_time" and result.epochs == 1
    assert load_train_checkpoint(out / "checkpoint.pt")["steps"] == 1
    assert len(_log(out)) == 1
    assert load_calculator(result.card_path).card.provenance["stop_reason"] == "max_time"


def test_unlabelled_frames_fail_before_training(tmp_path):
    frames = lj_clusters(6)
    frames[2].calc = None
    from ase_mlmd.errors import MissingLabelsError

    with pytest.raises(MissingLabelsError, match="frame 2"):
        train(frames, TrainConfig(model="schnet", split=(4, 1, 1)), tmp_path / "x")
    assert not (tmp_path / "x" / "card.toml").exists()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("model", ["nequip", "schnet"])
def test_training_on_cuda_exports_a_cpu_loadable_card(tmp_path, ethanol_frames, model):
    config = TrainConfig(model=model, cutoff=4.0, max_epochs=2, split=(12, 4, 4), device="cuda")
    result = train(ethanol_frames, config, tmp_path / model, progress=False)
    assert next(result.model.parameters()).device.type == "cuda"
    assert result.test_force_mae_mev_per_angstrom > 0
    frames = ethanol_frames[:3]
    expected = evaluate(result.model, batch_from_atoms(frames, 4.0, device="cuda"))
    calc = load_calculator(result.card_path, device="cpu")
    for k, atoms in enumerate(frames):
        probe = atoms.copy()
        probe.calc = calc
        assert probe.get_potential_energy() == pytest.approx(
            float(expected["energy"][k]), rel=1e-6, abs=1e-4
        )
