"""Training checkpoints: resume an interrupted run exactly where it was saved.

A checkpoint (``output_dir/checkpoint.pt``) is one ``torch.save`` file of tensors, numbers,
strings, lists and dicts only, so it loads with ``torch.load(weights_only=True)``:

* ``format``: :data:`FORMAT`; ``fingerprint``: what defines the run (see
  :func:`run_fingerprint`); a run with another fingerprint refuses to resume from it;
* ``model``, ``ema``, ``optimizer``, ``scheduler``: state dicts;
* ``epoch`` (0-based epoch in progress), ``batch`` (next batch of that epoch), ``order`` (the
  epoch's shuffled training indices), ``epoch_loss`` (sum and count of the epoch's batch losses
  so far);
* ``torch_rng``, ``numpy_rng``: global RNG states;
* ``best`` (best validation force MAE, its epoch, its averaged weights), ``bad_epochs``,
  ``history`` (the CSV rows), ``elapsed`` (seconds of all processes so far), ``stop_reason``.

It is written with :func:`ase_mlmd.md.checkpoint.save_checkpoint` (temporary file +
``os.replace``), so a kill at any moment leaves the previous or the new checkpoint, never half
of one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms

from ase_mlmd.errors import CheckpointMismatchError
from ase_mlmd.md.checkpoint import save_checkpoint
from ase_mlmd.train.batches import frame_labels
from ase_mlmd.train.config import PROCESS_FIELDS, RESUMABLE_FIELDS, TrainConfig

FORMAT = "ase_mlmd.train.checkpoint/1"
_FRESH = "pass resume=False (CLI: --no-resume) to start afresh, or use another output folder"


def data_digest(frames: Sequence[Atoms]) -> str:
    """sha256 over numbers, positions, cell, pbc, energy and forces of every frame, in order."""
    h = hashlib.sha256(str(len(frames)).encode())
    for k, atoms in enumerate(frames):
        energy, forces = frame_labels(atoms, f"frame {k}", require_energy=False)
        for array in (atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc, forces):
            h.update(np.ascontiguousarray(array).tobytes())
        h.update(np.float64(energy).tobytes())
    return h.hexdigest()


def run_fingerprint(
    config: TrainConfig, frames: Sequence[Atoms], split: dict[str, Any]
) -> dict[str, str]:
    """The settings and data that define a run, as strings (compared field by field).

    The data enter by content (:func:`data_digest`), not by path: a dataset that was moved
    still resumes, an edited one does not.

    Args:
        config: the run's configuration; :data:`RESUMABLE_FIELDS` are left out, and so are
            :data:`PROCESS_FIELDS` (the world size is checked on its own).
        frames: all frames of the dataset.
        split: the split's indices per part (``{"train": [...], ...}``).
    """
    settings = config.as_dict()
    fingerprint = {
        key: json.dumps(value, sort_keys=True)
        for key, value in settings.items()
        if key not in RESUMABLE_FIELDS + PROCESS_FIELDS and key != "name"
    }
    fingerprint["data_sha256"] = data_digest(frames)
    fingerprint["split_indices"] = hashlib.sha256(
        json.dumps(split, sort_keys=True).encode()
    ).hexdigest()
    return fingerprint


def numpy_rng_state() -> dict[str, Any]:
    """numpy's global RNG state as tensors and numbers (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def set_numpy_rng_state(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["name"], keys, state["pos"], state["has_gauss"], state["cached"]))


def save_train_checkpoint(path: Path, data: dict[str, Any]) -> None:
    """Write a training checkpoint atomically."""
    save_checkpoint(Path(path), {**data, "format": FORMAT})


def load_train_checkpoint(path: Path) -> dict[str, Any]:
    """Read a training checkpoint (``weights_only=True``).

    Raises:
        CheckpointMismatchError: the file is not a readable ase_mlmd training checkpoint.
    """
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, foreign pickle, ...
        raise CheckpointMismatchError(
            f"cannot read the training checkpoint {path} ({type(err).__name__}: {err}); {_FRESH}"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointMismatchError(
            f"{path} is not an ase_mlmd training checkpoint ({FORMAT}; found {found!r}); {_FRESH}"
        )
    return data


def check_compatible(data: dict[str, Any], fingerprint: dict[str, str], path: Path) -> None:
    """Raise :class:`CheckpointMismatchError` naming the file and every field that differs."""
    stored = data.get("fingerprint", {})
    differ = sorted(
        k for k in set(stored) | set(fingerprint) if stored.get(k) != fingerprint.get(k)
    )
    if differ:
        details = "; ".join(
            f"{k} (checkpoint: {_short(stored.get(k))}, now: {_short(fingerprint.get(k))})"
            for k in differ
        )
        raise CheckpointMismatchError(
            f"the checkpoint {path} belongs to a different training run; it differs in "
            f"{details}. To resume it, train with the same data, split and settings (only "
            f"{', '.join(RESUMABLE_FIELDS)} may change); otherwise {_FRESH}"
        )


def _short(value: str | None, width: int = 48) -> str:
    if value is None:
        return "(none)"
    return value if len(value) <= width else value[: width - 3] + "..."
