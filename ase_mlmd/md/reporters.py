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

from ase_mlmd.errors import CorruptOutputError
from ase_mlmd.fileio import atomic_output
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
    """Number of frames in an ASE ``.traj`` file (0 if it does not exist or is empty); the
    last frame is decoded to check the file.

    Raises:
        CorruptOutputError: the file exists but ASE cannot read it.
    """
    from ase.io.trajectory import Trajectory

    if not path.is_file() or path.stat().st_size == 0:
        return 0
    try:
        with Trajectory(str(path), "r") as traj:
            if len(traj):
                traj[len(traj) - 1]  # noqa: B018 - decode the last frame too
            return len(traj)
    except Exception as err:  # ulm/JSON errors of a file written by two processes, ...
        raise _corrupt(path, err) from None


def _corrupt(path: Path, err: Exception | str) -> CorruptOutputError:
    reason = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    return CorruptOutputError(
        f"the MD output {path} is corrupt ({reason}); it cannot be resumed. Start afresh with "
        "restart=False (CLI: --no-restart) or delete the output folder; if two runs wrote to "
        "it at once, run them into different folders"
    )


def truncate_trajectory(path: Path, n_frames: int) -> None:
    """Keep the first ``n_frames`` frames of ``path``; rewrite it atomically if it has more.

    Raises:
        OutputMismatchError: it has fewer frames (the file was changed or lost).
        CorruptOutputError: ASE cannot read it.
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
    try:
        with (
            atomic_output(path) as tmp,
            Trajectory(str(path), "r") as old,
            Trajectory(str(tmp), "w") as new,
        ):
            for k in range(n_frames):
                new.write(old[k])
    except Exception as err:
        raise _corrupt(path, err) from None


def verify_trajectory(path: Path, n_frames: int) -> None:
    """Check that ASE reads ``path`` back with ``n_frames`` frames (first and last decoded).

    Raises:
        CorruptOutputError: it cannot be read, or holds another number of frames.
    """
    from ase.io.trajectory import Trajectory

    if n_frames == 0 and not path.exists():
        return
    try:
        with Trajectory(str(path), "r") as traj:
            have = len(traj)
            if have:
                traj[0], traj[have - 1]  # noqa: B018 - decode both ends
    except Exception as err:
        raise _written_unreadable(path, f"{type(err).__name__}: {err}") from None
    if have != n_frames:
        raise _written_unreadable(path, f"it holds {have} frames, this run wrote {n_frames}")


def _written_unreadable(path: Path, reason: str) -> CorruptOutputError:
    return CorruptOutputError(
        f"the run finished but its output {path} does not read back ({reason}); another "
        "process may have written to it at the same time. Its results cannot be trusted: run "
        "again into a new folder (or with --no-restart / restart=False)"
    )


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
        self.rows = 0  # rows in the file (kept at resume + written)

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
            self.rows = 0
        else:
            self._truncate(up_to_step)
            self._file = open(self.path, "a", newline="")  # noqa: SIM115

    def _truncate(self, up_to_step: int) -> None:
        text = self.path.read_text()
        lines = text.splitlines(keepends=True)
        header = ",".join(LOG_COLUMNS) + "\n"
        if lines and lines[0] != header:
            raise _corrupt(self.path, f"line 1 is not the header {header.strip()!r}")
        kept = [header]
        for number, line in enumerate(lines[1:], start=2):
            fields = line.rstrip("\n").split(",")
            if not line.endswith("\n") and number == len(lines):
                break  # a partial last line: the run was killed while writing it
            step = _log_int(fields[0]) if len(fields) == len(LOG_COLUMNS) else None
            if step is None:
                raise _corrupt(self.path, f"line {number} is not a log row: {line.strip()!r}")
            if step > up_to_step:
                break
            kept.append(line)
        self.rows = len(kept) - 1
        if "".join(kept) != text:
            with atomic_output(self.path) as tmp:
                tmp.write_text("".join(kept))

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
        self.rows += len(replicas)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _log_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def read_log(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of an :class:`EnergyLog` CSV as arrays (step and replica as int).

    Raises:
        CorruptOutputError: a row is incomplete or holds something that is not a number
            (names the file and line).
    """
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != LOG_COLUMNS:
            raise CorruptOutputError(
                f"{path} is not an ase_mlmd MD log: its first line should be "
                f"{','.join(LOG_COLUMNS)!r}, got {','.join(header or [])!r}"
            )
        rows = list(reader)
    out: dict[str, list] = {name: [] for name in LOG_COLUMNS}
    for number, row in enumerate(rows, start=2):
        try:
            if len(row) != len(LOG_COLUMNS):
                raise ValueError(f"{len(row)} fields instead of {len(LOG_COLUMNS)}")
            for name, value in zip(LOG_COLUMNS, row, strict=True):
                out[name].append(int(value) if name in ("step", "replica") else float(value))
        except ValueError as err:
            raise CorruptOutputError(
                f"line {number} of the MD log {path} is broken ({err}: {','.join(row)!r}); "
                "the file was cut or written by two runs at once. Rerun into a new folder (or "
                "with --no-restart / restart=False)"
            ) from None
    return {
        name: np.array(values, dtype=int if name in ("step", "replica") else float)
        for name, values in out.items()
    }


def verify_log(path: Path, n_rows: int) -> None:
    """Check that the log reads back with ``n_rows`` rows in step order.

    Raises:
        CorruptOutputError: it cannot be parsed, has another number of rows, or its steps go
            backwards (rows written twice).
    """
    try:
        columns = read_log(path)
    except (OSError, CorruptOutputError) as err:
        raise _written_unreadable(path, str(err)) from None
    have = len(columns["step"])
    if have != n_rows:
        raise _written_unreadable(path, f"it holds {have} rows, this run wrote {n_rows}")
    if have and (np.diff(columns["step"]) < 0).any():
        raise _written_unreadable(path, "its steps go backwards (rows were written twice)")
