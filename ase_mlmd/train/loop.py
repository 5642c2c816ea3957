"""The epoch loop of :func:`ase_mlmd.train.train`: the training state, batches, validation,
LR schedule, stopping rules, checkpoints and the CSV log.

An epoch visits the training frames in an order that depends only on (seed, epoch); after every
optimisation step the weight average (EMA) is updated; at the epoch's end the averaged weights
are validated, ReduceLROnPlateau steps on the validation force MAE, the best averaged weights
are kept, a row goes to ``train_log.csv`` and a checkpoint is written (also every
``checkpoint_every_batches`` batches within the epoch). Everything a resumed run needs is in
:meth:`TrainingState.state`, so resuming repeats exactly what an uninterrupted run would do.

In a data-parallel run every rank runs this loop on its share of each batch; the few places
where ranks differ go through its :class:`~ase_mlmd.train.distributed.ProcessGroup`
(sharding, gradient sum, rank 0's decisions and files).
"""

from __future__ import annotations

import copy
import csv
import io
import time
from pathlib import Path
from typing import Any

import torch

from ase_mlmd.fileio import atomic_write_text
from ase_mlmd.progress import progress_bar
from ase_mlmd.train.batches import GraphDataset
from ase_mlmd.train.checkpoint import numpy_rng_state, save_train_checkpoint, set_numpy_rng_state
from ase_mlmd.train.config import TrainConfig
from ase_mlmd.train.distributed import ProcessGroup
from ase_mlmd.train.ema import ExponentialMovingAverage
from ase_mlmd.train.loss import Errors, batch_loss, compute_errors

LOG_FILE = "train_log.csv"
LOG_COLUMNS = (
    "epoch",
    "wall_time_s",
    "lr",
    "train_loss",
    "val_energy_mae_meV_per_atom",
    "val_force_mae_meV_per_A",
)
#: seconds kept free at the end of ``max_time`` beyond the estimated final evaluation
EXPORT_RESERVE_S = 2.0
#: the estimated time of the work still due after a batch (that batch, the epoch's validation,
#: the test evaluation) is multiplied by this, so that a machine slowing down under load late in
#: the run does not push the final evaluation past ``max_time``
TIME_SAFETY_FACTOR = 1.5
#: a validation force MAE counts as better only below (1 - this) x the best so far (the same
#: relative threshold drives ReduceLROnPlateau)
IMPROVEMENT = 1e-4


class TrainingState:
    """The mutable training state (what a checkpoint holds)."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig) -> None:
        self.model = model
        self.ema = ExponentialMovingAverage(model, config.ema_decay)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            mode="min",
            factor=config.lr_factor,
            patience=config.lr_patience,
            min_lr=config.min_lr,
            threshold=IMPROVEMENT,
            threshold_mode="rel",
            eps=0.0,  # every reduction happens; min_lr is the only floor
        )
        self.epoch, self.batch, self.steps = 0, 0, 0
        self.order: list[int] | None = None
        self.loss_sum, self.loss_count = 0.0, 0
        self.best: dict[str, Any] | None = None
        self.bad_epochs = 0
        self.history: list[dict[str, float]] = []
        self.elapsed_before = 0.0

    def state(self, fingerprint: dict[str, str], elapsed: float) -> dict[str, Any]:
        cuda = list(torch.cuda.get_rng_state_all()) if torch.cuda.is_initialized() else []
        return {
            "fingerprint": fingerprint,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "batch": self.batch,
            "steps": self.steps,
            "order": None if self.order is None else torch.tensor(self.order),
            "epoch_loss": [self.loss_sum, self.loss_count],
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": cuda,
            "numpy_rng": numpy_rng_state(),
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "elapsed": elapsed,
        }

    def restore(self, data: dict[str, Any]) -> None:
        self.model.load_state_dict(data["model"])
        self.ema.load_state_dict(data["ema"])
        self.optimizer.load_state_dict(data["optimizer"])
        self.scheduler.load_state_dict(data["scheduler"])
        self.epoch, self.batch, self.steps = data["epoch"], data["batch"], data["steps"]
        self.order = None if data["order"] is None else data["order"].tolist()
        self.loss_sum, self.loss_count = data["epoch_loss"]
        torch.set_rng_state(data["torch_rng"])
        if data["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(data["cuda_rng"])
        set_numpy_rng_state(data["numpy_rng"])
        self.best, self.bad_epochs = data["best"], data["bad_epochs"]
        self.history, self.elapsed_before = data["history"], data["elapsed"]


def _write_log(path: Path, history: list[dict[str, float]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue())


def _epoch_order(n_train: int, seed: int, epoch: int) -> list[int]:
    """The shuffled training order of ``epoch``: a function of (seed, epoch) only."""
    generator = torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))
    return torch.randperm(n_train, generator=generator).tolist()


class EpochLoop:
    """Epochs and batches, with checkpoints, validation, LR schedule and stopping rules."""

    def __init__(
        self,
        run: TrainingState,
        config: TrainConfig,
        sets: dict[str, GraphDataset],
        fingerprint: dict[str, str],
        checkpoint: Path,
        started: float,
        progress: bool,
        group: ProcessGroup | None = None,
    ) -> None:
        self.run, self.config, self.sets = run, config, sets
        self.fingerprint, self.checkpoint = fingerprint, Path(checkpoint)
        self.group = group or ProcessGroup()
        self.started, self.progress = started, progress and self.group.is_main
        self.log = self.checkpoint.parent / LOG_FILE
        self.step_time_per_frame: float | None = None  # running mean over recent batches
        self.eval_time_per_frame: float | None = None  # the latest validation

    def elapsed(self) -> float:
        return self.run.elapsed_before + (time.monotonic() - self.started)

    def save(self) -> None:
        """Write the checkpoint (rank 0; it records the number of processes)."""
        if self.group.is_main:
            state = self.run.state(self.fingerprint, self.elapsed())
            save_train_checkpoint(self.checkpoint, {**state, "world_size": self.group.size})

    def out_of_time(self) -> bool:
        """True when the time left would not cover one more batch, the epoch's validation, the
        final test evaluation and the export (recent per-frame times, with a
        safety factor)."""
        max_time = self.config.max_time
        if max_time is None or self.run.steps == 0:
            return False
        step = self.step_time_per_frame or 0.0
        per_frame = self.eval_time_per_frame
        if per_frame is None:
            per_frame = 0.5 * step
        n_eval = len(self.sets["val"]) + len(self.sets["test"])
        due = step * self.config.batch_size + per_frame * n_eval
        reserve = TIME_SAFETY_FACTOR * due + EXPORT_RESERVE_S
        return self.elapsed() + reserve > max_time

    def stop_reason(self) -> str | None:
        run, config = self.run, self.config
        if run.epoch >= config.max_epochs:
            return "max_epochs"
        if run.best is not None and run.bad_epochs >= config.early_stop_patience:
            return "early_stopping"
        if self.out_of_time():
            return "max_time"
        return None

    def fit(self) -> str:
        """Train until a stopping rule holds; return its name."""
        run, config = self.run, self.config
        n_train = len(self.sets["train"])
        bar = progress_bar(
            total=config.max_epochs, initial=run.epoch, desc="epochs", disable=not self.progress
        )
        while (reason := self.group.from_main(self.stop_reason)) is None:
            if run.order is None:
                run.order = _epoch_order(n_train, config.seed, run.epoch)
            chunks = self.sets["train"].batches(run.order, config.batch_size)
            timed_out = self.train_epoch(chunks)
            if run.loss_count > 0:
                self.end_epoch()
                bar.update(1)
                bar.set_postfix(val_force_mae=f"{run.history[-1]['val_force_mae_meV_per_A']:.1f}")
            if timed_out:
                reason = "max_time"
                break
        bar.close()
        if run.best is None:  # cut short before the first validation
            self.end_epoch()
        return reason

    def train_epoch(self, chunks: list[list[int]]) -> bool:
        """Run the remaining batches of the epoch; True if ``max_time`` cut it short."""
        run, config = self.run, self.config
        run.model.train()
        bar = progress_bar(
            total=len(chunks),
            initial=run.batch,
            desc=f"epoch {run.epoch + 1}",
            leave=False,
            disable=not self.progress,
        )
        try:
            while run.batch < len(chunks):
                if config.max_time is not None and self.group.from_main(self.out_of_time):
                    return True  # (no max_time: every rank knows, nothing to broadcast)
                tick = time.monotonic()
                run.optimizer.zero_grad(set_to_none=True)
                loss = self.group.reduce_gradients(run.model, self.backward(chunks[run.batch]))
                run.optimizer.step()
                run.ema.update(run.model)
                run.loss_sum += loss
                run.loss_count += 1
                run.batch += 1
                run.steps += 1
                per_frame = (time.monotonic() - tick) / len(chunks[run.batch - 1])
                previous = self.step_time_per_frame
                self.step_time_per_frame = (
                    per_frame if previous is None else 0.9 * previous + 0.1 * per_frame
                )
                bar.update(1)
                bar.set_postfix(loss=f"{run.loss_sum / run.loss_count:.4g}")
                if run.batch % config.checkpoint_every_batches == 0 and run.batch < len(chunks):
                    self.save()
        finally:
            bar.close()
        return False

    def backward(self, chunk: list[int]) -> float:
        """Back-propagate this rank's share of the batch ``chunk``; return its loss term (the
        shares' losses add up to the loss of the whole batch)."""
        dataset, config = self.sets["train"], self.config
        mine = self.group.shard(chunk)
        if not mine:  # a short last batch with fewer frames than processes
            return 0.0
        totals = (len(chunk), 3 * int(dataset.n_atoms[chunk].sum()))
        data = dataset.collate(mine)
        weights = (config.energy_weight, config.force_weight)
        loss = batch_loss(self.run.model, data, *weights, totals=totals)
        loss.backward()
        return float(loss.detach())

    def validate(self) -> Errors:
        """The EMA weights' errors on the validation frames (rank 0's, on every rank)."""

        def on_main() -> Errors:
            tick = time.monotonic()
            val = compute_errors(self.run.ema.model, self.sets["val"], self.config.batch_size)
            self.eval_time_per_frame = (time.monotonic() - tick) / max(len(self.sets["val"]), 1)
            return val

        return self.group.from_main(on_main)

    def end_epoch(self) -> None:
        """Validate the EMA weights, step the schedule, keep the best, log and checkpoint."""
        run = self.run
        val = self.validate()
        val_force = 1e3 * val.force_mae
        lr = run.optimizer.param_groups[0]["lr"]
        if run.loss_count > 0:
            run.scheduler.step(val_force)
            run.epoch += 1
            best = None if run.best is None else run.best["val_force_mae_meV_per_A"]
            if best is None or val_force < best * (1 - IMPROVEMENT):
                run.best = {
                    "val_force_mae_meV_per_A": val_force,
                    "epoch": run.epoch,
                    "ema": {k: v.detach().clone() for k, v in run.ema.model.state_dict().items()},
                }
                run.bad_epochs = 0
            else:
                run.bad_epochs += 1
            run.history.append(
                {
                    "epoch": run.epoch,
                    "wall_time_s": round(self.elapsed(), 3),
                    "lr": lr,
                    "train_loss": run.loss_sum / run.loss_count,
                    "val_energy_mae_meV_per_atom": 1e3 * val.energy_mae_per_atom,
                    "val_force_mae_meV_per_A": val_force,
                }
            )
            if self.group.is_main:
                _write_log(self.log, run.history)
        elif run.best is None:  # no batch trained in this process's last epoch
            run.best = {
                "val_force_mae_meV_per_A": val_force,
                "epoch": run.epoch,
                "ema": copy.deepcopy(run.ema.model.state_dict()),
            }
        run.batch, run.order = 0, None
        run.loss_sum, run.loss_count = 0.0, 0
        self.save()
