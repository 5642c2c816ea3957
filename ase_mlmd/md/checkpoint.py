"""Checkpoints of the batched MD engine: resume a killed run exactly where it was saved.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings, lists and dicts,
so that it loads with ``torch.load(weights_only=True)`` (no pickled objects, no code):

* ``format``: :data:`FORMAT`;
* ``step``: the MD step the state belongs to; ``time_ps``;
* ``state``: the :class:`~ase_mlmd.md.state.MDState` tensors of the running replicas (on CPU),
  the thermostat dict included; ``active``: their replica indices, in batch order;
* ``generator``: ``torch.Generator.get_state()`` of a stochastic integrator (uint8 tensor) or
  None (nothing else is random once the initial velocities are drawn);
* ``replicas``: per replica, the collapse record (status, monitor, step, ...) and the number of
  trajectory frames written; ``last_good``: the last good state of each collapsed replica;
* ``log_step``: the last step with rows in the energy log;
* ``fingerprint``: dict of the settings that define the run (structures, model, ensemble, ...);
  a run with other settings refuses to resume from it.

The file is written to a uniquely named temporary file beside it and moved over the old one
with ``os.replace``, so a kill at any moment leaves either the previous or the new checkpoint,
never a broken one, and two writers never share a temporary file.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms

from ase_mlmd.errors import MLMDError
from ase_mlmd.fileio import atomic_output
from ase_mlmd.md.state import MDState

FORMAT = "ase_mlmd.md.checkpoint/1"


class CheckpointError(MLMDError, RuntimeError):
    """A checkpoint cannot be used to resume this run (unreadable, or outputs changed)."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """The checkpoint belongs to a different simulation (structures, model, ensemble, ...)."""


def _sha256(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def structures_digest(structures: Sequence[Atoms], with_momenta: bool) -> str:
    """sha256 of numbers, positions, cell, pbc, masses (and momenta) of the starting
    structures, in order."""
    chunks = [str(len(structures)).encode()]
    for atoms in structures:
        arrays = [atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc, atoms.get_masses()]
        if with_momenta:
            arrays.append(atoms.get_momenta())
        chunks += [np.ascontiguousarray(a).tobytes() for a in arrays]
    return _sha256(*chunks)


def model_identity(model: torch.nn.Module) -> str:
    """Card name (if any), class and a sha256 over the module's description and tensors."""
    chunks = [type(model).__qualname__.encode(), repr(model).encode()]
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        chunks += [name.encode(), str(t.dtype).encode(), str(tuple(t.shape)).encode()]
        if t.numel():  # an empty tensor may have stride 0, which view() refuses
            chunks.append(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    card = getattr(model, "card", None)
    name = getattr(card, "name", None) or type(model).__name__
    return f"{name} sha256:{_sha256(*chunks)[:16]}"


def state_to_dict(state: MDState) -> dict[str, Any]:
    """The state's tensors (detached, on CPU) as a plain dict; None fields are left out."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(state):
        value = getattr(state, field.name)
        if value is None:
            continue
        if isinstance(value, dict):
            out[field.name] = {k: v.detach().cpu() for k, v in value.items()}
        else:
            out[field.name] = value.detach().cpu()
    return out


def state_from_dict(data: dict[str, Any], device: torch.device | str = "cpu") -> MDState:
    """Inverse of :func:`state_to_dict`, on ``device``."""
    fields = {}
    for key, value in data.items():
        if isinstance(value, dict):
            fields[key] = {k: v.to(device) for k, v in value.items()}
        else:
            fields[key] = value.to(device)
    return MDState(**fields)


def save_checkpoint(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, then ``os.replace``).

    Safe against the process being killed at any moment; not fsync'ed (a power cut may lose
    the newest checkpoint, as it may lose the newest frames)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **data}, f)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: the file is not a readable checkpoint of this format.
    """
    fresh = "delete it or pass restart=False (CLI: --no-restart) to start fresh"
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, foreign pickle, ...
        raise CheckpointError(f"cannot read the checkpoint {path} ({err}); {fresh}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an ase_mlmd MD checkpoint ({FORMAT}); {fresh}")
    return data


def check_compatible(data: dict[str, Any], fingerprint: dict[str, str], path: Path) -> None:
    """Raise :class:`CheckpointMismatchError` naming every setting in which the checkpoint's
    run differs from this one."""
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
            f"the checkpoint {path} was written by a different simulation; it differs in "
            f"{details}. To start fresh, delete it (and the old outputs beside it) or pass "
            "restart=False (CLI: --no-restart); to resume it, run with the same structures, "
            "model and settings"
        )


def _short(value: str | None, width: int = 60) -> str:
    if value is None:
        return "(none)"
    return value if len(value) <= width else value[: width - 3] + "..."
