"""Exclusive locks on output folders and files: one run writes to an output at a time.

Two runs writing the same folder corrupt each other (interleaved trajectory frames, duplicated
log rows, checkpoints replaced under each other). Every command that writes an output folder
(or a single output file) therefore holds its lock while it runs:

>>> with lock_folder("runs/"):            # doctest: +SKIP
...     simulate(..., trajectory="runs/replica_{i}.traj")

* A folder's lock is the file ``FOLDER/.ase-mlmd.lock``. A single output file ``run.traj`` is
  locked by the sidecar ``.run.traj.lock`` beside it. The folder is created; a folder created
  so and left empty by the run is removed again on release.
* The lock file is created atomically (``O_CREAT | O_EXCL``) and holds the owner's PID, host,
  command line and start time (JSON). A second run finds it and fails with
  :class:`~ase_mlmd.errors.OutputLockedError`, which names the owner and what to do.
* A lock left by a run that crashed (``kill -9``, power cut) is stale: on the same host, its PID
  is no longer running (or now belongs to a process started later). A stale lock is taken over,
  with a :class:`StaleLockWarning` saying so. A lock held on another host is never taken over
  (its process cannot be checked from here); the message says to remove it by hand if that run
  is gone.
* Locks are released on normal exit and when the block raises (KeyboardInterrupt included).
  Within one process they are re-entrant: a library call that locks a folder its caller has
  already locked (the CLI, then :func:`ase_mlmd.md.simulate`) shares the caller's lock.

Locks protect against concurrent runs of ase_mlmd, not against other programs writing there.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import shlex
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ase_mlmd.errors import OutputLockedError

#: name of the lock file inside a locked folder
FOLDER_LOCK_NAME = ".ase-mlmd.lock"
#: seconds a lock file may stay unreadable (its owner is writing it) before it counts as broken
_UNREADABLE_GRACE_S = 5.0

__all__ = [
    "FOLDER_LOCK_NAME",
    "OutputLock",
    "StaleLockWarning",
    "lock_file",
    "lock_folder",
    "lock_file_for",
    "locked_outputs",
]


class StaleLockWarning(UserWarning):
    """A lock left by a process that no longer runs was taken over."""


def lock_file_for(path: str | os.PathLike, folder: bool) -> Path:
    """The lock file of an output folder (``FOLDER/.ase-mlmd.lock``) or of an output file
    (``.NAME.lock`` beside it)."""
    path = Path(path)
    if folder:
        return path / FOLDER_LOCK_NAME
    return path.with_name(f".{path.name}.lock")


def _process_start(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), or None
    where it cannot be read. Tells a PID reused by a later process from the lock's owner."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OSError:
        return True
    return True


def _owner_record(token: str) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC)
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python",
        "started": now.isoformat(timespec="seconds"),
        "process_start": _process_start(os.getpid()),
        "token": token,
    }


def _describe(owner: dict[str, Any]) -> str:
    return (
        f"PID {owner.get('pid')} on {owner.get('host')}, running "
        f"`{owner.get('command')}` since {owner.get('started')}"
    )


def _is_stale(owner: dict[str, Any]) -> bool:
    """True when the owner certainly no longer runs: same host, and its PID is gone or belongs
    to a process started at another time."""
    if owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return True
    started = owner.get("process_start")
    now = _process_start(pid)
    return started is not None and now is not None and started != now


def _read_owner(lock: Path) -> dict[str, Any] | None:
    """The lock file's record; None if it vanished; ``{}`` if it stays unreadable."""
    deadline = time.monotonic() + 0.5
    while True:
        try:
            text = lock.read_text()
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return None
        except OSError:
            text, age = "", _UNREADABLE_GRACE_S
        try:
            owner = json.loads(text)
            if isinstance(owner, dict) and "pid" in owner:
                return owner
        except ValueError:
            pass
        if time.monotonic() > deadline and age >= _UNREADABLE_GRACE_S:
            return {}
        time.sleep(0.05)  # its owner has created it and is writing it now


# lock file (resolved) -> [lock, depth, pid] of the locks this process holds
_HELD: dict[Path, list] = {}
_HELD_GUARD = threading.Lock()


class OutputLock:
    """An exclusive lock on an output folder (``folder=True``) or a single output file.

    Use as a context manager, or call :meth:`acquire` and :meth:`release`.

    Args:
        path: the output folder or file.
        folder: whether ``path`` is a folder (created on acquire) or a file.
        what: how messages call the output (e.g. "output folder (-o)").

    Raises (on acquire):
        OutputLockedError: another live process holds the lock, or the lock file is broken.
    """

    def __init__(self, path: str | os.PathLike, folder: bool = True, what: str | None = None):
        self.path = Path(path)
        self.folder = folder
        self.what = what or ("output folder" if folder else "output file")
        self.lock_path = lock_file_for(self.path, folder)
        self._token: str | None = None
        self._created_folder = False

    # ------------------------------------------------------------------ public
    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._token is not None

    def acquire(self) -> OutputLock:
        """Take the lock (or share the one this process already holds on the same output)."""
        if self.folder:
            if self.path.exists() and not self.path.is_dir():
                raise NotADirectoryError(
                    f"the {self.what} {self.path} is a file, not a folder; name a folder (new "
                    "or one written by the same command)"
                )
        self._created_folder = not self.lock_path.parent.exists()
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        key = self.lock_path.resolve()
        with _HELD_GUARD:
            if key in _HELD and _HELD[key][2] != os.getpid():
                del _HELD[key]  # inherited through fork: the parent's lock, not ours
            if key in _HELD:
                _HELD[key][1] += 1
                self._token = _HELD[key][0]._token
                self._created_folder = False
                return self
            try:
                self._create()
            except BaseException:
                self._remove_created_folder()
                raise
            _HELD[key] = [self, 1, os.getpid()]
        return self

    def release(self) -> None:
        """Give the lock up (when the outermost holder in this process releases it)."""
        if self._token is None:
            return
        key = self.lock_path.resolve()
        with _HELD_GUARD:
            entry = _HELD.get(key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] > 0:
                    self._token = None
                    return
                del _HELD[key]
            owner = _read_owner(self.lock_path)
            if owner and owner.get("token") == self._token and owner.get("pid") == os.getpid():
                self.lock_path.unlink(missing_ok=True)
            self._token = None
            self._remove_created_folder()

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ------------------------------------------------------------------ internals
    def _create(self) -> None:
        token = secrets.token_hex(8)
        for _ in range(10):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _read_owner(self.lock_path)
                if owner is None:
                    continue  # released meanwhile: try again
                if not owner:
                    raise OutputLockedError(
                        f"the {self.what} {self.path} has a lock file {self.lock_path} that "
                        "cannot be read. If no other ase-mlmd run is writing there, delete that "
                        "file and run again; otherwise choose another output"
                    ) from None
                if not _is_stale(owner):
                    raise OutputLockedError(self._locked_message(owner)) from None
                if self._take_over(owner):
                    warnings.warn(
                        f"took over the lock of the {self.what} {self.path}: it was left by "
                        f"{_describe(owner)}, which no longer runs (crashed or killed); its "
                        "outputs there may be incomplete",
                        StaleLockWarning,
                        stacklevel=4,
                    )
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(_owner_record(token)) + "\n")
            self._token = token
            return
        raise OutputLockedError(
            f"could not lock the {self.what} {self.path}: other runs keep taking its lock "
            f"{self.lock_path}; run one at a time or choose another output"
        )

    def _take_over(self, stale: dict[str, Any]) -> bool:
        """Move the stale lock aside; True if it was the one judged stale (else put back)."""
        aside = self.lock_path.with_name(f"{self.lock_path.name}.stale-{secrets.token_hex(4)}")
        try:
            os.rename(self.lock_path, aside)
        except FileNotFoundError:
            return False
        moved = _read_owner(aside) or {}
        if moved.get("token") == stale.get("token") and moved.get("pid") == stale.get("pid"):
            aside.unlink(missing_ok=True)
            return True
        with contextlib.suppress(OSError):  # a live lock taken meanwhile: restore it
            os.link(aside, self.lock_path)
        aside.unlink(missing_ok=True)
        return False

    def _locked_message(self, owner: dict[str, Any]) -> str:
        same_host = owner.get("host") == socket.gethostname()
        gone = (
            f"remove {self.lock_path} if that run is gone"
            if same_host
            else f"if that run on {owner.get('host')} has ended, remove {self.lock_path}"
        )
        return (
            f"the {self.what} {self.path} is in use by another run ({_describe(owner)}); two "
            "runs writing the same output corrupt each other. Wait for it to finish, choose "
            f"another output (-o), or {gone}"
        )

    def _remove_created_folder(self) -> None:
        if self._created_folder:
            with contextlib.suppress(OSError):  # not empty: the run wrote something, keep it
                self.lock_path.parent.rmdir()
            self._created_folder = False


def lock_folder(path: str | os.PathLike, what: str = "output folder") -> OutputLock:
    """An :class:`OutputLock` on an output folder (use ``with``)."""
    return OutputLock(path, folder=True, what=what)


def lock_file(path: str | os.PathLike, what: str = "output file") -> OutputLock:
    """An :class:`OutputLock` on a single output file, via a sidecar ``.NAME.lock``."""
    return OutputLock(path, folder=False, what=what)


@contextlib.contextmanager
def locked_outputs(*locks: OutputLock) -> Iterator[None]:
    """Hold several locks at once (all or none); released in reverse order."""
    with contextlib.ExitStack() as stack:
        for lock in locks:
            stack.enter_context(lock)
        yield
