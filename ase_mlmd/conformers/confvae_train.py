"""Training ConfVAE on reference conformer ensembles, with the package's training conventions.

``train_confvae(reference, output_dir, config)``:

1. reads the ensembles and splits them *by molecule* (:mod:`.confvae_data`: a reference folder
   with ``train/``, ``val/``, ``test/`` subfolders keeps that split; a flat one is split with
   ``config.split`` and ``config.seed``); val/test molecules with elements no training molecule
   has are left out (recorded in ``split.json`` and the card);
2. optimises the ConfVAE objective (:mod:`.confvae`) over (molecule, conformer) pairs with
   Adam, the EMA of the weights, ReduceLROnPlateau and early stopping on the validation loss of
   the averaged weights — the state, EMA and schedule of :class:`ase_mlmd.train.loop.TrainingState`
   and the checkpoint format of :mod:`ase_mlmd.train.checkpoint` (atomic, ``weights_only``,
   fingerprinted; rerunning resumes, also after SIGKILL, identically to an uninterrupted run);
   ``train_log.csv`` one row per epoch; ``max_time`` for the whole run;
3. exports the best-validation averaged weights as ``output_dir/card.toml``.

The batch loop (optimizer step, EMA update, checkpoints within an epoch, time budget) is
:class:`ase_mlmd.train.loop.EpochLoop`'s; ConfVAE supplies the loss of a batch, the
validation (loss and aligned RMSD with z = posterior mean, seeded DG starts) and the log
columns.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_mlmd.conformers.confvae import (
    DG_WEIGHTS,
    ConfVAE,
    ConfVAESettings,
    export_confvae_card,
)
from ase_mlmd.conformers.confvae_data import ConformerSet, read_reference, split_reference
from ase_mlmd.conformers.confvae_features import mol_graph
from ase_mlmd.data.splits import parse_split
from ase_mlmd.fileio import atomic_write_text
from ase_mlmd.outdir import lock_folder
from ase_mlmd.progress import progress_bar
from ase_mlmd.train.checkpoint import check_compatible, load_train_checkpoint
from ase_mlmd.train.config import parse_duration, require_positive
from ase_mlmd.train.loop import EpochLoop, TrainingState, _epoch_order

CARD_FILE, CHECKPOINT_FILE, LOG_FILE, SPLIT_FILE = (
    "card.toml",
    "checkpoint.pt",
    "train_log.csv",
    "split.json",
)
LOG_COLUMNS = ("epoch", "wall_time_s", "lr", "train_loss", "val_loss", "val_rmsd_A")
#: settings that may change when a run is resumed
RESUMABLE_FIELDS = ("max_epochs", "max_time", "early_stop_patience", "checkpoint_every_batches")
IMPROVEMENT = 1e-4


@dataclass
class ConfVAETrainConfig:
    """A ConfVAE training run (architecture, objective, optimiser, stopping, split).

    Attributes:
        hidden, layers, latent, latent_layers, max_hops, n_rbf, steps_4d, steps, unrolled,
            noise, dg_weights: see :class:`~ase_mlmd.conformers.confvae.ConfVAESettings`.
        beta: KL weight, reached linearly over the first ``kl_warmup_epochs`` epochs (KL
            annealing against posterior collapse; validation always uses ``beta``);
            distance_weight: weight of the direct distance term (Å²); distance_loss: its mean
            over the pairs ``weighted`` by the DG pair weights or ``plain``.
        lr, batch_size: Adam learning rate, conformers per step.
        max_epochs, max_time (s or "20m"), early_stop_patience: stopping rules.
        lr_patience, lr_factor, min_lr: ReduceLROnPlateau on the validation loss.
        ema_decay: weight average used for validation and export.
        seed: weights, batch order, noise and (flat folders) the split.
        split: train,val,test fractions for a flat reference folder.
        max_conformers: at most this many lowest-energy conformers per molecule (None: all).
        checkpoint_every_batches: also checkpoint within an epoch.
    """

    hidden: int = 64
    layers: int = 3
    latent: int = 4
    latent_layers: int = 2
    max_hops: int = 6
    n_rbf: int = 16
    steps_4d: int = 100
    steps: int = 100
    unrolled: int = 10
    noise: float = 0.3
    dg_weights: list[float] = dataclasses.field(default_factory=lambda: list(DG_WEIGHTS))
    beta: float = 0.001
    kl_warmup_epochs: float = 3.0
    distance_weight: float = 1.0
    distance_loss: str = "plain"
    lr: float = 1e-3
    batch_size: int = 16
    max_epochs: int = 200
    max_time: float | str | None = None
    early_stop_patience: int = 15
    lr_patience: int = 5
    lr_factor: float = 0.5
    min_lr: float = 1e-5
    ema_decay: float = 0.99
    seed: int = 123
    split: tuple[float | int, ...] | str = (0.8, 0.1, 0.1)
    max_conformers: int | None = None
    checkpoint_every_batches: int = 20

    def __post_init__(self) -> None:
        self.max_time = parse_duration(self.max_time)
        if isinstance(self.split, str):
            self.split = parse_split(self.split)
        require_positive(
            self,
            ("hidden", "layers", "latent", "max_hops", "batch_size",
             "max_epochs", "early_stop_patience", "checkpoint_every_batches"),
        )  # fmt: skip
        self.dg_weights = [float(w) for w in self.dg_weights]
        if not self.dg_weights or min(self.dg_weights) <= 0:
            raise ValueError(f"DG weights must be positive numbers, got {self.dg_weights}")
        if self.distance_loss not in ("weighted", "plain"):
            raise ValueError(f"distance_loss must be weighted or plain, got {self.distance_loss!r}")
        if self.lr <= 0 or min(self.beta, self.distance_weight, self.kl_warmup_epochs) < 0:
            raise ValueError("lr must be > 0; beta, kl_warmup_epochs, distance_weight >= 0")

    def settings(self, vocabulary: list[str]) -> ConfVAESettings:
        names = {f.name for f in dataclasses.fields(ConfVAESettings)} - {"vocabulary"}
        return ConfVAESettings(vocabulary, **{k: getattr(self, k) for k in names})

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["split"] = list(self.split)
        return {k: v for k, v in out.items() if v is not None}


def evaluate_loss(model: ConfVAE, data: ConformerSet, config: ConfVAETrainConfig) -> dict:
    """Mean loss and aligned RMSD (Å, from the mean MSD) over ``data`` with z = posterior mean
    and the DG starts seeded by ``config.seed`` (deterministic)."""
    generator = torch.Generator().manual_seed(config.seed)
    totals, count = {"loss": 0.0, "msd": 0.0}, 0
    with torch.no_grad():
        for start in range(0, len(data), config.batch_size):
            chosen = list(range(start, min(start + config.batch_size, len(data))))
            graphs, positions = data.batch(chosen)
            out = model.loss(
                graphs,
                positions,
                config.beta,
                config.distance_weight,
                generator,
                sample=False,
                weighted_distances=config.distance_loss == "weighted",
            )
            for key in totals:
                totals[key] += float(out[key]) * len(chosen)
            count += len(chosen)
    return {"loss": totals["loss"] / count, "rmsd_A": float(np.sqrt(totals["msd"] / count))}


def _digest(molecules: list, parts: dict[str, list[int]]) -> str:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True).encode())
    for m in molecules:
        h.update(m.mol_id.encode() + m.smiles.encode())
        h.update(np.ascontiguousarray(m.conformers).tobytes())
    return h.hexdigest()


def _write_log(path: Path, history: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue())


@dataclass
class ConfVAETrainResult:
    """What a run produced: card, epochs, best epoch, stop reason, validation/test losses and
    aligned RMSDs (Å, z = posterior mean), molecules per part, wall time, the model."""

    card_path: Path
    epochs: int
    best_epoch: int
    stop_reason: str
    val: dict
    test: dict | None
    n_molecules: dict
    wall_time_s: float
    model: ConfVAE | None = dataclasses.field(default=None, repr=False)


def train_confvae(
    reference: str | os.PathLike,
    output_dir: str | os.PathLike,
    config: ConfVAETrainConfig | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    command: str | None = None,
    name: str | None = None,
) -> ConfVAETrainResult:
    """Train ConfVAE on the ensembles under ``reference``; write ``output_dir/card.toml``.

    Raises:
        StructureFileError, DataFormatError: missing or empty reference folder.
        DatasetSplitError: no training or validation molecule.
        CheckpointMismatchError: a checkpoint of another run in ``output_dir`` (resume=False /
            --no-resume starts afresh).
        OutputLockedError: another run writes to ``output_dir`` now.
    """
    started = time.monotonic()
    config = config or ConfVAETrainConfig()
    output_dir = Path(output_dir)
    molecules = read_reference(reference, config.max_conformers)
    parts = split_reference(molecules, tuple(config.split), config.seed)
    vocabulary = sorted(
        {a.GetSymbol() for k in parts["train"] for a in molecules[k].mol.GetAtoms()}
    )
    dropped = {}
    for part in ("val", "test"):
        keep = [
            k
            for k in parts[part]
            if {a.GetSymbol() for a in molecules[k].mol.GetAtoms()} <= set(vocabulary)
        ]
        dropped[part] = [molecules[k].mol_id for k in parts[part] if k not in keep]
        parts[part] = keep
    graphs = {
        k: mol_graph(molecules[k].mol, vocabulary, config.max_hops)
        for ks in parts.values()
        for k in ks
    }
    sets = {p: ConformerSet(molecules, parts[p], graphs) for p in ("train", "val", "test")}
    torch.manual_seed(config.seed)
    model = ConfVAE(config.settings(vocabulary))
    fingerprint = {
        k: json.dumps(v, sort_keys=True)
        for k, v in config.as_dict().items()
        if k not in RESUMABLE_FIELDS
    }
    fingerprint["data_sha256"] = _digest(molecules, parts)
    with lock_folder(output_dir, "training output folder"):
        checkpoint = output_dir / CHECKPOINT_FILE
        run = TrainingState(model, config)
        if resume and checkpoint.is_file():
            stored = load_train_checkpoint(checkpoint)
            check_compatible(stored, fingerprint, checkpoint)
            run.restore(stored)
            if progress:
                print(
                    f"conformers train: resumed from epoch {run.epoch}, batch {run.batch} "
                    f"({checkpoint}; --no-resume starts afresh)",
                    file=sys.stderr,
                )
        split_record = {p: [molecules[k].mol_id for k in parts[p]] for p in parts}
        atomic_write_text(
            output_dir / SPLIT_FILE, json.dumps({**split_record, "dropped": dropped}) + "\n"
        )
        loop = _Loop(run, config, sets, fingerprint, checkpoint, started, progress)
        reason = loop.fit()
        run.ema.model.load_state_dict(run.best["ema"])
        best_model = run.ema.model
        val = {"loss": run.best["val_loss"], "rmsd_A": run.best["val_rmsd_A"]}
        test = evaluate_loss(best_model, sets["test"], config) if len(sets["test"]) else None
        counts = {p: len(parts[p]) for p in parts}
        provenance = {
            "reference": str(Path(reference).resolve()),
            "molecules": counts,
            "conformers": {p: len(sets[p]) for p in sets},
            "dropped_unknown_elements": dropped,
            "val_loss": val["loss"],
            "val_rmsd_A": val["rmsd_A"],
            **({"test_loss": test["loss"], "test_rmsd_A": test["rmsd_A"]} if test else {}),
            "epochs": run.epoch,
            "best_epoch": int(run.best["epoch"]),
            "stop_reason": reason,
            "wall_time_s": round(loop.elapsed(), 1),
            "command": command or "ase_mlmd.conformers.confvae_train.train_confvae(...)",
            "training": config.as_dict(),
        }
        card = export_confvae_card(
            best_model,
            output_dir,
            name or output_dir.resolve().name or "confvae",
            provenance=provenance,
            card_file=CARD_FILE,
        )
    return ConfVAETrainResult(
        card,
        run.epoch,
        int(run.best["epoch"]),
        reason,
        val,
        test,
        counts,
        loop.elapsed(),
        best_model,
    )


class _Loop(EpochLoop):
    """:class:`ase_mlmd.train.loop.EpochLoop` over (molecule, conformer) batches: its batch
    loop (optimizer, EMA, checkpoints within the epoch, time budget) and checkpointing; the
    loss (:meth:`backward`), the validation and the log columns are ConfVAE's."""

    def __init__(self, run, config, sets, fingerprint, checkpoint, started, progress) -> None:
        super().__init__(run, config, sets, fingerprint, checkpoint, started, progress)
        self.n_chunks = 1

    def fit(self) -> str:
        run, config = self.run, self.config
        bar = progress_bar(
            total=config.max_epochs, initial=run.epoch, desc="epochs", disable=not self.progress
        )
        while (reason := self.stop_reason()) is None:
            if run.order is None:
                run.order = _epoch_order(len(self.sets["train"]), config.seed, run.epoch)
            size = config.batch_size
            chunks = [run.order[k : k + size] for k in range(0, len(run.order), size)]
            self.n_chunks = len(chunks)
            timed_out = self.train_epoch(chunks)
            if run.loss_count:
                self.end_epoch()
                bar.update(1)
                bar.set_postfix(val_rmsd=f"{run.history[-1]['val_rmsd_A']:.3f}")
            if timed_out:
                reason = "max_time"
                break
        bar.close()
        if run.best is None:
            self.end_epoch(force=True)
        return reason

    def backward(self, chunk: list[int]) -> float:
        """The ConfVAE loss of one batch (KL weight warmed up), back-propagated and clipped."""
        config, model = self.config, self.run.model
        graphs, positions = self.sets["train"].batch(chunk)
        warm = (self.run.steps + 1) / max(config.kl_warmup_epochs * self.n_chunks, 1e-9)
        beta = config.beta * min(1.0, warm)
        weighted = config.distance_loss == "weighted"
        out = model.loss(
            graphs, positions, beta, config.distance_weight, weighted_distances=weighted
        )
        loss = out["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        return float(loss.detach())

    def end_epoch(self, force: bool = False) -> None:
        run = self.run
        tick = time.monotonic()
        val = evaluate_loss(run.ema.model, self.sets["val"], self.config)
        self.eval_time_per_frame = (time.monotonic() - tick) / max(len(self.sets["val"]), 1)
        if run.loss_count and not force:
            run.scheduler.step(val["loss"])
            run.epoch += 1
            best = None if run.best is None else run.best["val_loss"]
            if best is None or val["loss"] < best - IMPROVEMENT * abs(best):
                state = {k: v.detach().clone() for k, v in run.ema.model.state_dict().items()}
                run.best = {
                    "val_loss": val["loss"],
                    "val_rmsd_A": val["rmsd_A"],
                    "epoch": run.epoch,
                    "ema": state,
                }
                run.bad_epochs = 0
            else:
                run.bad_epochs += 1
            run.history.append(
                {
                    "epoch": run.epoch,
                    "wall_time_s": round(self.elapsed(), 3),
                    "lr": run.optimizer.param_groups[0]["lr"],
                    "train_loss": run.loss_sum / run.loss_count,
                    "val_loss": val["loss"],
                    "val_rmsd_A": val["rmsd_A"],
                }
            )
            _write_log(self.log, run.history)
        elif run.best is None:
            state = {k: v.detach().clone() for k, v in run.ema.model.state_dict().items()}
            run.best = {
                "val_loss": val["loss"],
                "val_rmsd_A": val["rmsd_A"],
                "epoch": run.epoch,
                "ema": state,
            }
        run.batch, run.order = 0, None
        run.loss_sum, run.loss_count = 0.0, 0
        self.save()
