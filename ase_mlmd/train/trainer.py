"""One training loop for every backend model: NequIP, SchNet, PaiNN.

``train(data, config, output_dir)`` reads and splits the data, builds the model from the
training-set statistics, and optimises ``energy_weight * MSE(ΔE/n) + force_weight * MSE(ΔF)``
with Adam, an exponential moving average (EMA) of the weights, ReduceLROnPlateau and early
stopping on the validation force MAE of the averaged weights, within ``max_epochs`` and
``max_time``. The output folder holds

* ``checkpoint.pt``: the full training state, written atomically every
  ``checkpoint_every_batches`` batches and at every epoch end; running the same call again
  resumes from it (bit-identical to an uninterrupted run on the same device and thread count);
* ``train_log.csv``: one row per epoch (:data:`LOG_COLUMNS`); ``split.json``: the frame indices;
* after success only: ``NAME.safetensors`` and ``card.toml`` (the best-validation EMA weights,
  with the data, split, seed, command and test errors in ``[provenance]``), loadable with
  ``load_calculator("output_dir/card.toml")`` without trust.

``config.devices = N`` (``strategy="ddp"``) trains on N data-parallel processes with the same
global batches (:mod:`ase_mlmd.train.distributed`); the files are written by rank 0 and a
checkpoint resumes only with the same N.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ase import Atoms

from ase_mlmd.calculators.ml_calculator import resolve_device
from ase_mlmd.data.splits import DatasetSplit, check_species_coverage, parse_split, split_indices
from ase_mlmd.data.statistics import DatasetStatistics, dataset_statistics
from ase_mlmd.errors import CorruptOutputError, DataFormatError
from ase_mlmd.fileio import atomic_write_text
from ase_mlmd.models.interface import EnergyModel
from ase_mlmd.outdir import lock_folder
from ase_mlmd.train.batches import GraphDataset
from ase_mlmd.train.checkpoint import check_compatible, load_train_checkpoint, run_fingerprint
from ase_mlmd.train.config import TrainConfig, TrainResult
from ase_mlmd.train.distributed import ProcessGroup, check_world_size, launch, uses_processes
from ase_mlmd.train.loop import LOG_COLUMNS, LOG_FILE, EpochLoop, TrainingState
from ase_mlmd.train.loss import Errors, compute_errors
from ase_mlmd.train.models import CARD_FILE, build_model, export_card

CHECKPOINT_FILE = "checkpoint.pt"
SPLIT_FILE = "split.json"
__all__ = ["CHECKPOINT_FILE", "LOG_COLUMNS", "LOG_FILE", "SPLIT_FILE", "load_frames",
           "make_split", "train"]  # fmt: skip


def load_frames(
    frames_or_path: Sequence[Atoms] | str | os.PathLike,
    data_format: str | None = None,
    energy_unit: str | None = None,
    require_energy: bool = True,
) -> tuple[list[Atoms], dict[str, Any]]:
    """The labelled frames and a description of their source (for the card's provenance).

    Every frame needs forces, and an energy unless ``require_energy`` is False (a fit with
    ``energy_weight=0``); a frame without them is a ``MissingLabelsError`` that says how to
    label the data."""
    if isinstance(frames_or_path, str | os.PathLike):
        from ase_mlmd.data.readers import infer_format, read_frames
        from ase_mlmd.errors import MissingLabelsError

        path = Path(frames_or_path)
        fmt = data_format or infer_format(path)
        require = ("energy", "forces") if require_energy else ("forces",)
        try:
            frames = read_frames(path, fmt, energy_unit=energy_unit, require=require)
        except MissingLabelsError as err:
            what = str(err).split("; pass require=")[0]
            raise MissingLabelsError(
                f"{what}: training fits forces (and energies unless energy_weight=0); label "
                f"the frames first, e.g. ase-mlmd label {path} --reference gfn2-xtb -o "
                "labelled.extxyz"
            ) from err
        info: dict[str, Any] = {"data": str(path.resolve()), "data_format": fmt}
        if energy_unit:
            info["energy_unit"] = energy_unit
    else:
        frames = list(frames_or_path)
        info = {"data": "in-memory frames (Python)"}
    if not frames:
        raise DataFormatError(f"no frames in {info['data']}; training needs labelled frames")
    info["n_frames"] = len(frames)
    return frames, info


def make_split(frames: Sequence[Atoms], config: TrainConfig) -> DatasetSplit:
    """The configured split of ``frames``, checked for species coverage."""
    sizes = parse_split(config.split) if isinstance(config.split, str) else config.split
    split = split_indices(
        len(frames), tuple(sizes), seed=config.effective_split_seed, ordered=config.ordered_split
    )
    check_species_coverage(frames, split)
    return split


def train(
    frames_or_path: Sequence[Atoms] | str | os.PathLike,
    config: TrainConfig | None = None,
    output_dir: str | os.PathLike = "trained_model",
    *,
    data_format: str | None = None,
    energy_unit: str | None = None,
    resume: bool = True,
    progress: bool = True,
    command: str | None = None,
    model: EnergyModel | None = None,
    export: Callable[[EnergyModel, Path, str, dict[str, Any]], Path] | None = None,
) -> TrainResult:
    """Train a model on labelled frames and export it as ``output_dir/card.toml``.

    Args:
        frames_or_path: ASE frames with energies and forces (``SinglePointCalculator``), or a
            dataset path read with :func:`ase_mlmd.data.readers.read_frames`.
        config: the run's settings (default :class:`TrainConfig()`: NequIP). With
            ``devices=N > 1`` (or ``strategy="ddp"``) N processes are spawned; they re-import
            the calling script, so call ``train`` under ``if __name__ == "__main__":`` there.
        output_dir: folder for checkpoint, log, split, weights and card (created if needed).
        data_format, energy_unit: passed to ``read_frames`` for a path.
        resume: continue from ``output_dir/checkpoint.pt`` when it exists (False: start afresh
            and overwrite it).
        progress: show progress bars.
        command: the command line to record in the card (default: the Python call).
        model: a ready model to train instead of one built from ``config.model`` and the data
            statistics (e.g. a CG prior + network sum, :mod:`ase_mlmd.models.cg_model`); its
            initial weights enter the checkpoint fingerprint. With ``energy_weight=0`` frames
            need forces only.
        export: writes the card instead of :func:`export_card`:
            ``export(model, output_dir, name, provenance) -> card path``.

    Returns:
        the test errors (best-validation EMA weights), epochs, wall time and card path.

    Raises:
        CheckpointMismatchError: ``resume`` and the checkpoint belongs to another run (names
            the file and the differing settings).
        DataFormatError, MissingLabelsError, DatasetSplitError: unusable data or split.
        WorldSizeMismatchError: the checkpoint was written with another ``devices``.
        DeviceNotAvailableError: CUDA requested without a GPU.
        DistributedTrainingError: ``devices`` > visible GPUs; a training process died or
            the run was interrupted (all processes are stopped; running again resumes).
        OutputLockedError: another run is writing to ``output_dir`` now (it is locked while
            this one runs, see :mod:`ase_mlmd.outdir`).
        CorruptOutputError: the card or weights written do not read back.
    """
    started = time.monotonic()
    config = config or TrainConfig()
    config.validate()
    device = resolve_device(config.device)
    output_dir = Path(output_dir)
    if uses_processes(config.devices, config.strategy):
        if model is not None or export is not None:
            raise ValueError(
                "devices > 1 / strategy='ddp' trains the models ase-mlmd train builds; a "
                "ready model or a custom export trains in one process (devices=1)"
            )
        options = {"data_format": data_format, "energy_unit": energy_unit, "resume": resume,
                   "progress": progress, "command": command}  # fmt: skip
        with lock_folder(output_dir, "training output folder"):
            return _launch(frames_or_path, config, output_dir, device, started, options)
    with lock_folder(output_dir, "training output folder"):
        return _train(
            frames_or_path,
            config,
            output_dir,
            device,
            started,
            data_format=data_format,
            energy_unit=energy_unit,
            resume=resume,
            progress=progress,
            command=command,
            model=model,
            export=export,
        )


def _launch(
    frames_or_path: Sequence[Atoms] | str | os.PathLike,
    config: TrainConfig,
    output_dir: Path,
    device: Any,
    started: float,
    options: dict[str, Any],
) -> TrainResult:
    """:func:`train` on ``config.devices`` spawned processes (output folder locked by the
    caller); rank 0's result, with the exported model read back from its card."""
    from ase_mlmd.calculators.cards import read_card
    from ase_mlmd.calculators.registry import model_from_card

    checkpoint = output_dir / CHECKPOINT_FILE
    if options["resume"] and checkpoint.is_file():  # refuse another world size before spawning
        check_world_size(load_train_checkpoint(checkpoint), config.devices, checkpoint)
    args = (frames_or_path, config, output_dir, started, options)
    result: TrainResult = launch(_train_rank, args, config.devices, device)
    result.model = model_from_card(read_card(result.card_path)).to(device)
    return result


def _train_rank(
    group: ProcessGroup,
    device: Any,
    frames_or_path: Sequence[Atoms] | str | os.PathLike,
    config: TrainConfig,
    output_dir: Path,
    started: float,
    options: dict[str, Any],
) -> TrainResult | None:
    """One rank of a data-parallel run (in a spawned process): rank 0's result without the
    in-memory model (it does not cross processes), None on the other ranks."""
    result = _train(frames_or_path, config, output_dir, device, started, **options,
                    model=None, export=None, group=group)  # fmt: skip
    if result is not None:
        result.model = None
    return result


def _train(
    frames_or_path: Sequence[Atoms] | str | os.PathLike,
    config: TrainConfig,
    output_dir: Path,
    device: Any,
    started: float,
    *,
    data_format: str | None,
    energy_unit: str | None,
    resume: bool,
    progress: bool,
    command: str | None,
    model: EnergyModel | None,
    export: Callable[[EnergyModel, Path, str, dict[str, Any]], Path] | None,
    group: ProcessGroup | None = None,
) -> TrainResult | None:
    """:func:`train` once its output folder is locked (None on ranks other than 0)."""
    group = group or ProcessGroup()
    progress = progress and group.is_main
    checkpoint = output_dir / CHECKPOINT_FILE
    frames, data_info = load_frames(
        frames_or_path, data_format, energy_unit, require_energy=config.energy_weight > 0
    )
    split = make_split(frames, config)
    indices = {part: split.indices(part) for part in ("train", "val", "test")}
    fingerprint = run_fingerprint(config, frames, indices)
    if model is not None:
        fingerprint["initial_model"] = _state_digest(model)
    stored = None
    if resume and checkpoint.is_file():
        stored = load_train_checkpoint(checkpoint)
        check_compatible(stored, fingerprint, checkpoint)
        check_world_size(stored, group.size, checkpoint)
        if progress:
            print(f"train: {resumed_from(stored, output_dir)}", file=sys.stderr, flush=True)
    if group.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            checkpoint.unlink(missing_ok=True)
        split_record = {"seed": split.seed, "ordered": split.ordered, **indices}
        atomic_write_text(output_dir / SPLIT_FILE, json.dumps(split_record) + "\n")

    train_frames = split.frames(frames, "train")
    needs_energy = config.energy_weight > 0
    stats = dataset_statistics(train_frames, config.cutoff) if model is None else None
    sets = {
        part: GraphDataset(
            split.frames(frames, part),
            config.cutoff,
            device,
            names=[f"frame {i}" for i in indices[part]],
            progress=progress,
            require_energy=needs_energy,
        )
        for part in (("train", "val", "test") if group.is_main else ("train",))
    }
    network = group.broadcast_module((model or build_model(config, stats)).to(device))
    run = TrainingState(network, config)
    if stored is not None:
        run.restore(stored)
    loop = EpochLoop(run, config, sets, fingerprint, checkpoint, started, progress, group)
    stop_reason = loop.fit()
    if not group.is_main:
        return None

    best = run.best
    run.ema.model.load_state_dict(best["ema"])
    test = compute_errors(run.ema.model, sets["test"], config.batch_size)
    elapsed = loop.elapsed()
    result = TrainResult(
        card_path=output_dir / CARD_FILE,
        output_dir=output_dir,
        test_energy_mae_mev_per_atom=1e3 * test.energy_mae_per_atom,
        test_energy_mae_mev=1e3 * test.energy_mae,
        test_force_mae_mev_per_angstrom=1e3 * test.force_mae,
        val_force_mae_mev_per_angstrom=float(best["val_force_mae_meV_per_A"]),
        epochs=run.epoch,
        best_epoch=int(best["epoch"]),
        wall_time_s=elapsed,
        stop_reason=stop_reason,
        n_train=len(indices["train"]),
        n_val=len(indices["val"]),
        n_test=len(indices["test"]),
        model=run.ema.model,
        resumed_from_epoch=None if stored is None else int(stored["epoch"]),
    )
    provenance = _provenance(data_info, split, config, stats, test, result, command)
    name = config.name or _default_name(output_dir)
    if export is not None:
        export(run.ema.model, output_dir, name, provenance)
    else:
        export_card(run.ema.model, config, output_dir, name, provenance)
        verify_card(result.card_path)
    return result


def resumed_from(stored: dict[str, Any], output_dir: Path) -> str:
    """One line saying where a resumed run picks up: epochs done, batch within the next."""
    epoch, batch = int(stored["epoch"]), int(stored.get("batch", 0))
    within = f", batch {batch} of epoch {epoch + 1}" if batch else ""
    return (
        f"resumed from epoch {epoch}{within} of {output_dir} (its {CHECKPOINT_FILE}; "
        "--no-resume / resume=False starts afresh)"
    )


def verify_card(card_path: Path) -> None:
    """Read the exported card and its weights back (sha256 and safetensors decoding).

    Raises:
        CorruptOutputError: they do not read back.
    """
    from ase_mlmd.calculators.cards import load_state_dict, read_card

    try:
        tensors = load_state_dict(read_card(card_path))
        if not tensors:
            raise ValueError("the weights file holds no tensors")
    except Exception as err:
        raise CorruptOutputError(
            f"training finished but its card {card_path} or the weights it names do not read "
            f"back ({type(err).__name__}: {err}); another process may have written to the "
            "folder at the same time. Train again into a new folder"
        ) from None


def _state_digest(model: EnergyModel) -> str:
    """sha256 over a model's state_dict (names, shapes and values), for the fingerprint."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _default_name(output_dir: Path) -> str:
    return output_dir.resolve().name or "model"


def _provenance(
    data_info: dict[str, Any],
    split: DatasetSplit,
    config: TrainConfig,
    stats: DatasetStatistics | None,
    test: Errors,
    result: TrainResult,
    command: str | None,
) -> dict[str, Any]:
    from ase_mlmd import __version__

    split_info = {k: v for k, v in split.as_dict().items() if v is not None}
    stat_info = (
        {} if stats is None else {k: v for k, v in stats.as_dict().items() if k != "n_frames"}
    )
    mev = test.in_mev()
    return {
        **data_info,
        "split": split_info,
        "seed": config.seed,
        "command": command or f"ase_mlmd.train.train(..., config=TrainConfig({config.model!r}))",
        "test_energy_mae_meV_per_atom": mev["energy_mae_meV_per_atom"],
        "test_energy_mae_meV": mev["energy_mae_meV"],
        "test_force_mae_meV_per_A": mev["force_mae_meV_per_A"],
        "val_force_mae_meV_per_A": result.val_force_mae_mev_per_angstrom,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "wall_time_s": round(result.wall_time_s, 1),
        "stop_reason": result.stop_reason,
        "trained": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "ase_mlmd_version": __version__,
        "statistics": stat_info,
        "training": config.as_dict(),
    }
