"""Parts of the training loop checked against independent computations: the weight average
against its formula, collated batches against ``batch_from_atoms``, the error metrics against
numpy on ASE calculator results, and the checkpoint compatibility check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from training_frames import labelled, lj_clusters, lj_reference

from ase_mlmd.batch import batch_from_atoms
from ase_mlmd.errors import CheckpointMismatchError, MissingLabelsError
from ase_mlmd.models.pair import LennardJones as PairLJ
from ase_mlmd.train.batches import GraphDataset
from ase_mlmd.train.checkpoint import (
    check_compatible,
    data_digest,
    load_train_checkpoint,
    run_fingerprint,
)
from ase_mlmd.train.config import TrainConfig
from ase_mlmd.train.ema import ExponentialMovingAverage
from ase_mlmd.train.loss import compute_errors


def test_ema_follows_its_formula_with_warmup():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = ExponentialMovingAverage(model, decay=0.9)
    expected = [p.detach().clone().numpy() for p in model.parameters()]
    for n in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n))
        expected = [
            d * e + (1 - d) * p.detach().numpy()
            for e, p in zip(expected, model.parameters(), strict=True)
        ]
    for e, p in zip(expected, ema.model.parameters(), strict=True):
        np.testing.assert_allclose(p.detach().numpy(), e, rtol=1e-5, atol=1e-6)
    assert not any(p.requires_grad for p in ema.model.parameters())
    # decay 0 is a plain copy
    copy = ExponentialMovingAverage(model, decay=0.0)
    with torch.no_grad():
        model.weight.mul_(3.0)
    copy.update(model)
    assert torch.equal(copy.model.weight, model.weight)


def test_collated_batches_equal_batch_from_atoms():
    crystal = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(2)
    crystal.rattle(0.05, seed=2)
    frames = [*lj_clusters(2, seed=3), labelled(crystal, lj_reference())]
    dataset = GraphDataset(frames, cutoff=6.0)
    order = [2, 0, 1]
    data = dataset.collate(order)
    reference = batch_from_atoms([frames[i] for i in order], 6.0)
    for name in ("positions", "numbers", "cell", "pbc", "system_idx"):
        assert torch.equal(getattr(data.batch, name), getattr(reference, name)), name
    pairs = {
        tuple(e) + tuple(s)
        for e, s in zip(
            data.batch.edge_index.T.tolist(), data.batch.cell_shifts.tolist(), strict=True
        )
    }
    ref_pairs = {
        tuple(e) + tuple(s)
        for e, s in zip(
            reference.edge_index.T.tolist(), reference.cell_shifts.tolist(), strict=True
        )
    }
    assert pairs == ref_pairs
    np.testing.assert_allclose(
        data.energy.numpy(), [frames[i].get_potential_energy() for i in order]
    )
    np.testing.assert_allclose(
        data.forces.numpy(), np.concatenate([frames[i].get_forces() for i in order])
    )
    assert data.n_atoms.tolist() == [32, 13, 13]


def test_unlabelled_frames_are_refused_by_name():
    frames = lj_clusters(2)
    frames[1].calc = None
    with pytest.raises(MissingLabelsError, match="frame 1"):
        GraphDataset(frames, cutoff=5.0)


def test_error_metrics_match_numpy_on_calculator_results():
    frames = lj_clusters(5, seed=4)
    # a different LJ (sigma 3.3) as the "model": nonzero errors, computed two ways
    model = PairLJ(epsilon=0.0104, sigma=3.3, cutoff=8.0)
    errors = compute_errors(model, GraphDataset(frames, cutoff=8.0), batch_size=2)
    from ase_mlmd import MLCalculator

    de, de_atom, df = [], [], []
    for atoms in frames:
        probe = atoms.copy()
        probe.calc = MLCalculator(model)
        de.append(abs(probe.get_potential_energy() - atoms.get_potential_energy()))
        de_atom.append(de[-1] / len(atoms))
        df.append(np.abs(probe.get_forces() - atoms.get_forces()).ravel())
    assert errors.energy_mae == pytest.approx(np.mean(de), rel=1e-9)
    assert errors.energy_mae_per_atom == pytest.approx(np.mean(de_atom), rel=1e-9)
    assert errors.force_mae == pytest.approx(np.mean(np.concatenate(df)), rel=1e-9)
    assert errors.force_mae > 1e-4 and errors.energy_mae > 1e-4


def test_fingerprint_names_each_differing_field(tmp_path):
    frames = lj_clusters(4)
    split = {"train": [0, 1], "val": [2], "test": [3]}
    stored = {"fingerprint": run_fingerprint(TrainConfig(), frames, split)}
    # settings that only say how long to train or where may change
    same = run_fingerprint(TrainConfig(max_epochs=3, max_time="1h", device="cpu"), frames, split)
    check_compatible(stored, same, tmp_path / "checkpoint.pt")
    other = run_fingerprint(TrainConfig(model="schnet", lr=1e-3), frames, split)
    with pytest.raises(CheckpointMismatchError, match="checkpoint.pt") as info:
        check_compatible(stored, other, tmp_path / "checkpoint.pt")
    assert "model" in str(info.value) and "lr" in str(info.value)
    moved = [a.copy() for a in frames]
    moved[0].positions[0, 0] += 1e-6
    for a, b in zip(moved, frames, strict=True):
        a.calc = SinglePointCalculator(a, energy=b.get_potential_energy(), forces=b.get_forces())
    assert data_digest(moved) != data_digest(frames)
    with pytest.raises(CheckpointMismatchError, match="data_sha256"):
        check_compatible(stored, run_fingerprint(TrainConfig(), moved, split), tmp_path / "c.pt")


def test_a_foreign_file_is_not_taken_for_a_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointMismatchError, match="not an ase_mlmd training checkpoint"):
        load_train_checkpoint(path)
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointMismatchError, match="cannot read"):
        load_train_checkpoint(path)
