"""Atomic file writes: a result appears complete or not at all (never half-written).

Temporary files get unique names (``tempfile`` in the target's folder), so two writers of the
same file never share one; the last ``os.replace`` wins and each file is whole.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def temporary_path(path: str | os.PathLike) -> Path:
    """A new, empty, uniquely named file beside ``path`` (``.NAME.XXXX.tmp``) for writing
    ``path`` atomically; parents are created. The caller replaces ``path`` with it or
    removes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager: yields a unique temporary path beside ``path``; when the block ends
    without an exception the temporary file (with the usual umask permissions) replaces
    ``path``, otherwise it is removed and ``path`` is left as it was.

    >>> with atomic_output("run/checkpoint.pt") as tmp:  # doctest: +SKIP
    ...     torch.save(data, tmp)
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # temporary files are private; results are not
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder + ``os.replace``
    (parents are created; the file gets the usual umask permissions). Returns the path."""
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))
