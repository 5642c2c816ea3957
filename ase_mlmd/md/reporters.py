"""Reporters of the batched MD engine: per-replica ASE trajectories and an energy log (CSV).

Both can be cut back to the last checkpoint: frames or log rows written after it (by a run that
was killed before its next checkpoint) are removed, so that a resumed run ends with exactly one
frame per save and one log row per replica and log step.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from ase_mlmd.md.checkpoint import CheckpointError


class OutputMismatchError(CheckpointError):
    """An output file does not hold what the checkpoint says was written before it."""


def replica_paths(pattern: str | os.PathLike, n_replicas: int) -> list[Path]:
    """The file of each replica from a pattern with ``{i}`` (the replica index, e.g.
    ``"run_{i}.traj"`` or ``"run_{i:03d}.traj"``). Without ``{i}`` only one replica is allowed.

    Raises:
        ValueError: the pattern does not give one distinct file per replica.
    """
    text = str(pattern)
    try:
        paths = [Path(text.format(i=i)) for i in range(n_replicas)]
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(
            f"trajectory pattern {text!r} is not a valid pattern ({err}); use {{i}} for the "
            "replica index, e.g. 'run_{i}.traj'"
        ) from None
    if len(set(paths)) != n_replicas:
        raise ValueError(
            f"trajectory pattern {text!r} gives the same file to several of the {n_replicas} "
            "replicas; put {i} (the replica index) in it, e.g. 'run_{i}.traj'"
        )
    return paths


def checkpoint_path_for(pattern: str | os.PathLike) -> Path:
    """Default checkpoint file beside the outputs: ``runs/run_{i}.traj`` →
    ``runs/run.checkpoint.pt`` (``md.checkpoint.pt`` when nothing of the name is left; in the
    deepest folder without ``{i}`` when the replica index is in a folder name)."""
    path = Path(str(pattern))
    parent = path.parent
    while "{" in str(parent):
        parent = parent.parent
    stem = Path(re.sub(r"[_\-.]*\{i[^}]*\}", "", path.name)).stem
    if not stem or stem.startswith(".") or "{" in stem:
        stem = "md"
    return parent / f"{stem}.checkpoint.pt"


def count_frames(path: Path) -> int:
    """Number of frames in an ASE ``.traj`` file (0 if it does not exist or is empty)."""
    from ase.io.trajectory import Trajectory

    if not path.is_file() or path.stat().st_size == 0:
        return 0
    with Trajectory(str(path), "r") as traj:
        return len(traj)


def truncate_trajectory(path: Path, n_frames: int) -> None:
    """Keep the first ``n_frames`` frames of ``path``; rewrite it atomically if it has more.

    Raises:
        OutputMismatchError: it has fewer frames (the file was changed or lost).
    """
    from ase.io.trajectory import Trajectory

    have = count_frames(path)
    if have < n_frames:
        raise OutputMismatchError(
            f"{path} has {have} frames but the checkpoint was written after {n_frames}; the "
            "outputs were changed after the checkpoint. Start fresh: delete the checkpoint or "
            "pass restart=False (--no-restart)"
        )
    if have == n_frames:
        return
    tmp = path.with_name(path.name + ".tmp")
    with Trajectory(str(path), "r") as old, Trajectory(str(tmp), "w") as new:
        for k in range(n_frames):
            new.write(old[k])
    os.replace(tmp, path)


class TrajectoryReporter:
    """One ASE trajectory per replica (``.traj``: positions, momenta, cell, energy, forces).

    Args:
        paths: file of each replica.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self._open: dict[int, object] = {}

    def start(self, frames: Sequence[int] | None = None) -> None:
        """Open the files: overwrite them (``frames`` None) or cut each to its number of
        frames and append (resume)."""
        from ase.io.trajectory import Trajectory

        for i, path in enumerate(self.paths):
            path.parent.mkdir(parents=True, exist_ok=True)
            if frames is None:
                path.unlink(missing_ok=True)
            else:
                truncate_trajectory(path, frames[i])
            self._open[i] = Trajectory(str(path), "a")

    def write(self, replica: int, atoms: Atoms) -> None:
        """Append one frame (flushed to the OS by ASE's writer)."""
        self._open[replica].write(atoms)

    def finish(self, replica: int) -> None:
        """Close the file of a replica that has stopped."""
        traj = self._open.pop(replica, None)
        if traj is not None:
            traj.close()

    def close(self) -> None:
        for replica in list(self._open):
            self.finish(replica)


LOG_COLUMNS = ("step", "time_ps", "replica", "E_pot", "E_kin", "E_tot", "T")


class EnergyLog:
    """CSV log, one row per replica and log step: step, time_ps, replica, E_pot, E_kin, E_tot
    (eV), T (K).

    Args:
        path: the CSV file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: io.TextIOBase | None = None

    def start(self, up_to_step: int | None = None) -> None:
        """Overwrite the file (``up_to_step`` None) or keep only rows with step ≤ ``up_to_step``
        (and drop a partial last line) and append (resume)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if up_to_step is None or not self.path.is_file():
            if up_to_step is not None and up_to_step > 0:
                raise OutputMismatchError(
                    f"the log {self.path} is missing but the checkpoint was written at step "
                    f"{up_to_step}; start fresh: delete the checkpoint or pass restart=False"
                )
            self._file = open(self.path, "w", newline="")  # noqa: SIM115
            self._file.write(",".join(LOG_COLUMNS) + "\n")
        else:
            self._truncate(up_to_step)
            self._file = open(self.path, "a", newline="")  # noqa: SIM115

    def _truncate(self, up_to_step: int) -> None:
        text = self.path.read_text()
        lines = text.splitlines(keepends=True)
        kept = [",".join(LOG_COLUMNS) + "\n"]
        for line in lines[1:]:
            fields = line.rstrip("\n").split(",")
            if not line.endswith("\n") or len(fields) != len(LOG_COLUMNS):
                break  # a partial line: the run was killed while writing it
            if int(fields[0]) > up_to_step:
                break
            kept.append(line)
        if "".join(kept) != text:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, self.path)

    def write(
        self,
        step: int,
        time_ps: float,
        replicas: Sequence[int],
        e_pot: np.ndarray,
        e_kin: np.ndarray,
        temperature: np.ndarray,
    ) -> None:
        """Rows for the given replicas; energies in eV, temperature in K, arrays (k,)."""
        writer = csv.writer(self._file, lineterminator="\n")
        for k, replica in enumerate(replicas):
            writer.writerow(
                [
                    step,
                    f"{time_ps:.10g}",
                    replica,
                    f"{e_pot[k]:.12g}",
                    f"{e_kin[k]:.12g}",
                    f"{e_pot[k] + e_kin[k]:.12g}",
                    f"{temperature[k]:.8g}",
                ]
            )
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_log(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of an :class:`EnergyLog` CSV as arrays (step and replica as int)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for name in LOG_COLUMNS:
        kind = int if name in ("step", "replica") else float
        out[name] = np.array([kind(row[name]) for row in rows])
    return out
