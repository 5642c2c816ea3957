"""Training a CGVAE backmapper: ``train_backmapper(frames, mapping, output_dir, config)``.

The package's training conventions, with the CGVAE loss (:meth:`CGVAE.loss`) in place of
force matching: a seeded split (``ordered=True``: time-ordered blocks train | val | test,
:mod:`ase_mlmd.data.splits`), Adam with ReduceLROnPlateau, an exponential moving average of
the weights (:mod:`ase_mlmd.train.ema`) that is validated, early-stopped on and exported,
``max_epochs`` and ``max_time`` (all resumptions together; rerunning a finished run with a
larger limit trains on from its checkpoint). The output folder (locked while a
run writes to it) holds

* ``checkpoint.pt``: the whole state (:mod:`ase_mlmd.train.checkpoint`, atomic, loads with
  ``weights_only``), every ``checkpoint_every_batches`` batches and at every epoch end; running
  the same call again resumes from it, also after SIGKILL, repeating what an uninterrupted run
  does (same batches, same noise: the state is :class:`ase_mlmd.train.loop.TrainingState`'s);
* ``train_log.csv``: one row per epoch (:data:`LOG_COLUMNS`); ``split.json``: frame indices;
* after the run only: ``NAME.safetensors`` then ``card.toml`` (both atomic; the card names the
  weights' sha256, so a card is never half-written nor pointing at other weights unnoticed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms

from ase_mlmd.backmap.card import save_cgvae_card
from ase_mlmd.backmap.cgvae import CGVAEBackmapper, CGVAEHyper
from ase_mlmd.backmap.pairs import BackmapPairs
from ase_mlmd.cg.mapping import CGMapping
from ase_mlmd.data.splits import parse_split, split_indices
from ase_mlmd.fileio import atomic_write_text
from ase_mlmd.outdir import lock_folder
from ase_mlmd.progress import progress_bar
from ase_mlmd.train.checkpoint import (
    check_compatible,
    load_train_checkpoint,
    save_train_checkpoint,
)
from ase_mlmd.train.config import parse_duration, require_non_negative, require_positive
from ase_mlmd.train.loop import TrainingState

CARD_FILE = "card.toml"
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "train_log.csv"
SPLIT_FILE = "split.json"
LOG_COLUMNS = ("epoch", "wall_time_s", "lr", "train_loss", "val_loss", "val_mse_A2", "val_kl",
               "val_bond_A2", "val_angle_A2", "val_clash_A2")  # fmt: skip
#: settings that may change between a run and its resumption
RESUMABLE = (
    "max_epochs", "max_time", "early_stop_patience", "checkpoint_every_batches", "grad_clip",
)  # fmt: skip


@dataclasses.dataclass
class BackmapTrainConfig:
    """Settings of a CGVAE training run.

    Attributes:
        hyper: architecture and loss weights (:class:`CGVAEHyper`).
        centre: bead positions from the mapping's weights (``"mapping"``) or at the centre of
            geometry of each bead's atoms (``"geometry"``).
        split: (train, val, test) fractions or counts; ordered: time-ordered split.
        lr, batch_size, max_epochs, early_stop_patience, lr_patience, lr_factor, min_lr,
        ema_decay, seed: as in :class:`ase_mlmd.train.config.TrainConfig`.
        max_time: seconds (or "10m") for the whole run, all resumptions together, or None.
        checkpoint_every_batches: checkpoint also within an epoch.
        grad_clip: the gradient norm is clipped to this before each Adam step (None: not
            clipped); a rare wild prior draw under ``sample_terms`` otherwise can wreck a run.
    """

    hyper: CGVAEHyper = dataclasses.field(default_factory=CGVAEHyper)
    centre: str = "mapping"
    split: tuple[float | int, ...] | str = (0.8, 0.1, 0.1)
    ordered: bool = True
    lr: float = 2e-3
    batch_size: int = 32
    max_epochs: int = 200
    max_time: float | str | None = None
    early_stop_patience: int = 15
    lr_patience: int = 4
    lr_factor: float = 0.5
    min_lr: float = 1e-5
    ema_decay: float = 0.99
    seed: int = 0
    checkpoint_every_batches: int = 50
    grad_clip: float | None = 10.0

    def __post_init__(self) -> None:
        self.max_time = parse_duration(self.max_time)
        if isinstance(self.split, str):
            self.split = parse_split(self.split)
        require_positive(
            self,
            ("lr", "batch_size", "max_epochs", "early_stop_patience", "checkpoint_every_batches"),
        )
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        require_non_negative(self, ("lr_patience",))
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["split"] = list(self.split)
        return {k: v for k, v in out.items() if v is not None}


@dataclasses.dataclass
class BackmapTrainResult:
    """What a run produced: the card, test errors (Å), epochs, wall time and the model."""

    card_path: Path
    test_rmsd_autoencode: float
    test_rmsd_prior_mean: float
    epochs: int
    best_epoch: int
    wall_time_s: float
    stop_reason: str
    n_train: int
    n_val: int
    n_test: int
    backmapper: CGVAEBackmapper = dataclasses.field(repr=False)


def _fingerprint(config: BackmapTrainConfig, pairs: BackmapPairs, split: dict) -> dict[str, str]:
    settings = {k: v for k, v in config.as_dict().items() if k not in RESUMABLE}
    hyper = settings["hyper"]
    defaults = CGVAEHyper()
    new = {k: getattr(defaults, k) for k in ("delta", "clash_factor", "sample_terms",
                                             "gamma_angle")}  # fmt: skip
    if all(hyper.get(k) == v for k, v in new.items()):
        for key in new:  # checkpoints from before these settings resume
            del hyper[key]
    digest = hashlib.sha256(np.ascontiguousarray(pairs.aa).tobytes())
    digest.update(np.ascontiguousarray(pairs.cg).tobytes())
    fingerprint = {k: json.dumps(v, sort_keys=True) for k, v in settings.items()}
    fingerprint["data_sha256"] = digest.hexdigest()
    fingerprint["mapping"] = hashlib.sha256(
        json.dumps(pairs.mapping.to_dict(), sort_keys=True).encode()
    ).hexdigest()
    fingerprint["split_indices"] = hashlib.sha256(json.dumps(split).encode()).hexdigest()
    return fingerprint


def _tensors(pairs: BackmapPairs, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    idx = np.asarray(indices, dtype=int)
    return (torch.as_tensor(pairs.cg[idx], dtype=torch.float32),
            torch.as_tensor(pairs.aa[idx], dtype=torch.float32))  # fmt: skip


@torch.no_grad()
def evaluate_loss(model, cg: torch.Tensor, aa: torch.Tensor, batch: int = 256) -> dict[str, float]:
    """Loss parts over a set with the posterior mean as latent (deterministic): ``loss``,
    ``mse`` (Å² per atom), ``kl`` (nats per bead), ``bond`` (Å²), ``angle`` (Å², 1–3
    distances) and ``clash`` (Å² per structure), 0 for terms the model does not have."""
    totals = {"loss": 0.0, "mse": 0.0, "kl": 0.0, "bond": 0.0, "angle": 0.0, "clash": 0.0}
    for start in range(0, len(cg), batch):
        part = slice(start, start + batch)
        loss, parts = model.loss(cg[part], aa[part], deterministic=True)
        share = len(cg[part]) / len(cg)
        totals["loss"] += float(loss) * share
        for key, value in parts.items():
            totals[key] += value * share
    return totals


def train_backmapper(
    frames: Sequence[Atoms],
    mapping: CGMapping,
    output_dir: str | os.PathLike,
    config: BackmapTrainConfig | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    command: str | None = None,
    data_info: dict[str, Any] | None = None,
) -> BackmapTrainResult:
    """Train a CGVAE on all-atom ``frames`` (time order) mapped by ``mapping``; write
    ``output_dir/card.toml`` (module docstring).

    Raises:
        MappingError, InvalidStructureError: frames that do not fit the mapping, NaN positions.
        DatasetSplitError: a split that leaves a part empty.
        CheckpointMismatchError: the folder's checkpoint belongs to another run.
        OutputLockedError: another process writes to ``output_dir``.
    """
    config = config or BackmapTrainConfig()
    output_dir = Path(output_dir)
    started = time.monotonic()
    with lock_folder(output_dir, "training output folder (-o)"):
        pairs = BackmapPairs.from_frames(frames, mapping, centre=config.centre)
        split = split_indices(len(pairs), config.split, seed=config.seed, ordered=config.ordered)
        indices = {part: split.indices(part) for part in ("train", "val", "test")}
        fingerprint = _fingerprint(config, pairs, indices)
        checkpoint = output_dir / CHECKPOINT_FILE
        backmapper = CGVAEBackmapper.new(pairs.mapping, config.hyper, seed=config.seed)
        run = TrainingState(backmapper.model.train(), config)  # duck-typed: lr, ema_decay, ...
        run.stop_reason = None
        if resume and checkpoint.is_file():
            stored = load_train_checkpoint(checkpoint)
            check_compatible(stored, fingerprint, checkpoint)
            run.restore(stored)
            reason, limits = stored.get("stop_reason") or None, stored.get("limits")
            run.stop_reason = _still_stopped(reason, limits, run, config)
            if progress:
                print(f"backmap train: resuming {checkpoint} at epoch {run.epoch + 1}, batch "
                      f"{run.batch}", file=sys.stderr, flush=True)  # fmt: skip
        split_record = {"seed": split.seed, "ordered": split.ordered, **indices}
        atomic_write_text(output_dir / SPLIT_FILE, json.dumps(split_record) + "\n")
        sets = {part: _tensors(pairs, idx) for part, idx in indices.items()}
        loop = _Loop(run, config, sets, fingerprint, checkpoint, started, progress)
        if run.stop_reason is None:
            run.stop_reason = loop.fit()
            loop.save()
        return _export(run, backmapper, pairs, indices["test"], config, output_dir, loop, command,
                       data_info, {part: len(idx) for part, idx in indices.items()})  # fmt: skip


def _still_stopped(
    reason: str | None, limits: dict | None, run, config: BackmapTrainConfig
) -> str | None:
    """The stored stop reason of a finished run if it still holds under ``config``; ``None``
    (train on) when the limit that stopped it was raised on the rerun (``max_time``,
    ``max_epochs`` or ``early_stop_patience`` above the ``limits`` stored with the checkpoint;
    ``None`` = no limit). The same command again therefore finishes without training.
    Checkpoints written before limits were stored: ``max_time`` counts as raised when it is
    more than 10 % above the time already spent, the others when the run is below them."""
    key = {"max_time": "max_time", "max_epochs": "max_epochs",
           "early_stopping": "early_stop_patience"}.get(reason or "")  # fmt: skip
    if key is None:
        return reason
    now = getattr(config, key)
    if limits is not None:
        before = limits.get(key)
        raised = before is not None and (now is None or now > before)
    elif key == "max_time":
        raised = now is None or now > 1.1 * run.elapsed_before
    elif key == "max_epochs":
        raised = run.epoch < now
    else:
        raised = run.bad_epochs < now
    return None if raised else reason


class _Loop:
    def __init__(self, run, config, sets, fingerprint, checkpoint, started, progress):
        self.run, self.config, self.sets = run, config, sets
        self.fingerprint, self.checkpoint = fingerprint, checkpoint
        self.started, self.progress = started, progress
        self.step_time: float | None = None

    def elapsed(self) -> float:
        return self.run.elapsed_before + time.monotonic() - self.started

    def save(self) -> None:
        state = self.run.state(self.fingerprint, self.elapsed())
        limits = {k: getattr(self.config, k) for k in ("max_time", "max_epochs",
                                                       "early_stop_patience")}  # fmt: skip
        save_train_checkpoint(self.checkpoint, {**state, "stop_reason": self.run.stop_reason or "",
                                                "limits": limits})  # fmt: skip

    def out_of_time(self) -> bool:
        if self.config.max_time is None or self.step_time is None:
            return False
        n_batches = 1 + (len(self.sets["val"][0]) + len(self.sets["test"][0])) // 64
        return self.elapsed() + 1.5 * n_batches * self.step_time + 2.0 > self.config.max_time

    def fit(self) -> str:
        run, config = self.run, self.config
        n_train = len(self.sets["train"][0])
        bar = progress_bar(total=config.max_epochs, initial=run.epoch, desc="epochs",
                           disable=not self.progress)  # fmt: skip
        reason = "max_epochs"
        while run.epoch < config.max_epochs:
            if run.best is not None and run.bad_epochs >= config.early_stop_patience:
                reason = "early_stopping"
                break
            generator = torch.Generator().manual_seed(config.seed * 100_003 + run.epoch)
            order = torch.randperm(n_train, generator=generator)
            chunks = order.split(config.batch_size)
            if self._epoch(chunks):
                reason = "max_time"
                break
            self._end_epoch()
            bar.update(1)
            bar.set_postfix(val_mse=f"{run.history[-1]['val_mse_A2']:.4f}")
        bar.close()
        if run.best is None:  # cut short before the first validation
            self._end_epoch()
        return reason

    def _epoch(self, chunks) -> bool:
        run = self.run
        run.model.train()
        cg, aa = self.sets["train"]
        while run.batch < len(chunks):
            if self.out_of_time():
                return True
            tick = time.monotonic()
            idx = chunks[run.batch]
            loss, _ = run.model.loss(cg[idx], aa[idx])  # noise: the global RNG (checkpointed)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(run.model.parameters(), self.config.grad_clip)
            run.optimizer.step()
            run.ema.update(run.model)
            run.loss_sum += float(loss.detach())
            run.loss_count += 1
            run.batch += 1
            run.steps += 1
            took = time.monotonic() - tick
            self.step_time = took if self.step_time is None else 0.9 * self.step_time + 0.1 * took
            if run.batch % self.config.checkpoint_every_batches == 0 and run.batch < len(chunks):
                self.save()
        return False

    def _end_epoch(self) -> None:
        run = self.run
        val = evaluate_loss(run.ema.model, *self.sets["val"])
        if run.loss_count > 0:
            lr = run.optimizer.param_groups[0]["lr"]
            run.scheduler.step(val["loss"])
            run.epoch += 1
            if run.best is None or val["loss"] < run.best["val_loss"] - 1e-4 * abs(
                run.best["val_loss"]
            ):
                state = {k: v.detach().clone() for k, v in run.ema.model.state_dict().items()}
                run.best = {"val_loss": val["loss"], "epoch": run.epoch, "ema": state}
                run.bad_epochs = 0
            else:
                run.bad_epochs += 1
            run.history.append({
                "epoch": run.epoch, "wall_time_s": round(self.elapsed(), 3), "lr": lr,
                "train_loss": run.loss_sum / run.loss_count, "val_loss": val["loss"],
                "val_mse_A2": val["mse"], "val_kl": val["kl"], "val_bond_A2": val["bond"],
                "val_angle_A2": val["angle"], "val_clash_A2": val["clash"],
            })  # fmt: skip
            _write_log(self.checkpoint.parent / LOG_FILE, run.history)
        elif run.best is None:
            state = {k: v.detach().clone() for k, v in run.ema.model.state_dict().items()}
            run.best = {"val_loss": val["loss"], "epoch": run.epoch, "ema": state}
        run.batch, run.loss_sum, run.loss_count = 0, 0.0, 0
        self.save()


def _write_log(path: Path, history: list[dict[str, float]]) -> None:
    rows = [",".join(str(row.get(c, "")) for c in LOG_COLUMNS) for row in history]
    atomic_write_text(path, "\n".join([",".join(LOG_COLUMNS), *rows]) + "\n")


def _export(run, backmapper, pairs, test, config, output_dir, loop, command, data_info, n):
    from ase_mlmd.train.trainer import verify_card

    backmapper.model.load_state_dict(run.best["ema"])
    backmapper.model.eval()
    aa = pairs.aa[test]
    auto = backmapper.autoencode(pairs.cg[test], aa)
    prior = np.stack([a.positions for a in backmapper.reconstruct(
        [pairs.cg_atoms(i) for i in test])])  # fmt: skip
    rmsd_auto = float(np.sqrt(((auto - aa) ** 2).sum(-1).mean()))
    rmsd_prior = float(np.sqrt(((prior - aa) ** 2).sum(-1).mean()))
    name = output_dir.resolve().name or "backmap"
    provenance = {
        **(data_info or {}),
        "command": command or "train_backmapper(...)",
        "config": config.as_dict(),
        "n_frames": len(pairs),
        "epochs": run.epoch,
        "best_epoch": run.best["epoch"],
        "stop_reason": run.stop_reason,
        "test_rmsd_autoencode_A": rmsd_auto,
        "test_rmsd_prior_mean_A": rmsd_prior,
    }
    card = save_cgvae_card(backmapper, output_dir, name, provenance=provenance, card_file=CARD_FILE)
    verify_card(card)
    return BackmapTrainResult(card, rmsd_auto, rmsd_prior, run.epoch, run.best["epoch"],
                              loop.elapsed(), run.stop_reason, n["train"], n["val"], n["test"],
                              backmapper)  # fmt: skip
