"""Progress display for long work: a tqdm bar on a terminal, plain periodic lines elsewhere.

A tqdm bar redraws itself with carriage returns and terminal escape codes; written to a file
or a pipe (a batch job's log, ``2> run.log``, CI) that becomes one long line of garbage. So
:func:`progress_bar` returns a tqdm bar only when its output is a terminal (or a Jupyter
notebook) and otherwise a :class:`PlainProgress`, which writes a plain line now and then:

    MD: 300/1000 step (30%), 12 s elapsed, ~28 s left, running 8/8 replicas

Lines are written when another 10 % is done (at most one a second) or ``interval`` seconds
(default 10) have passed, whichever comes first, and once at the end; bars that do not stay
(``leave=False``, e.g. the batches of one epoch) write only the timed lines. Both objects
have the tqdm methods the package uses: iteration, ``update``, ``set_postfix``,
``set_postfix_str``, ``close``, ``n``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

#: seconds between plain progress lines at most
DEFAULT_INTERVAL_S = 10.0
#: a plain line each time this fraction of the total more is done ...
DEFAULT_STEP_FRACTION = 0.1
#: ... but not sooner than this many seconds after the previous line
MIN_INTERVAL_S = 1.0


def is_interactive(file: IO[str] | None = None) -> bool:
    """Whether progress should be drawn as a live bar: ``file`` (default stderr) is a
    terminal, or this is a Jupyter kernel (tqdm.auto draws a widget there)."""
    if "ipykernel" in sys.modules:
        return True
    file = file if file is not None else sys.stderr
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    initial: float = 0,
    disable: bool = False,
    leave: bool = True,
    file: IO[str] | None = None,
    interval: float = DEFAULT_INTERVAL_S,
    **tqdm_options: Any,
):
    """A progress display over ``iterable`` or up to ``total``: tqdm on a terminal, a
    :class:`PlainProgress` otherwise (see the module docstring). Arguments as tqdm's;
    ``interval`` (s) is the longest time between plain lines; other tqdm options (e.g.
    ``mininterval``) apply to the tqdm bar only."""
    if disable or is_interactive(file):
        from tqdm.auto import tqdm

        return tqdm(
            iterable,
            total=total,
            desc=desc,
            unit=unit,
            initial=initial,
            disable=disable,
            leave=leave,
            file=file,
            **tqdm_options,
        )
    return PlainProgress(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        leave=leave,
        file=file,
        interval=interval,
    )


class PlainProgress:
    """Progress as plain lines (no carriage returns, no escape codes); see the module
    docstring. Arguments as :func:`progress_bar`."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: float | None = None,
        desc: str | None = None,
        unit: str = "it",
        initial: float = 0,
        leave: bool = True,
        file: IO[str] | None = None,
        interval: float = DEFAULT_INTERVAL_S,
        step_fraction: float = DEFAULT_STEP_FRACTION,
    ) -> None:
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable = iterable
        self.total = total
        self.desc = desc or ""
        self.unit = unit
        self.n = initial
        self.leave = leave
        self.file = file
        self.interval = interval
        self.step_fraction = step_fraction
        self.postfix = ""
        self._start_n = initial
        self._start = time.monotonic()
        self._last_time = self._start
        self._last_n = initial
        self._closed = False

    # ------------------------------------------------------------------ tqdm's interface
    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("this progress display has no iterable; use update()")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def update(self, n: float = 1) -> None:
        """Count ``n`` more done; write a line if one is due."""
        self.n += n
        now = time.monotonic()
        since = now - self._last_time
        due = since >= self.interval
        if self.leave and self.total and since >= min(MIN_INTERVAL_S, self.interval):
            step = max(self.total * self.step_fraction, 1)
            due = due or int(self.n // step) > int(self._last_n // step)
        if due and self.n != self._last_n:
            self._write(now)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs):
        """Extra ``key=value`` pairs shown at the end of the next line."""
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Extra text shown at the end of the next line."""
        self.postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        """Nothing to redraw (lines are written by :meth:`update`)."""

    def close(self) -> None:
        """Write the final line (bars that stay, when something was done since the last)."""
        if self._closed:
            return
        self._closed = True
        if self.leave and self.n != self._last_n:
            self._write(time.monotonic())

    # ------------------------------------------------------------------ lines
    def line(self, now: float | None = None) -> str:
        """The text of a progress line at time ``now`` (monotonic seconds)."""
        now = time.monotonic() if now is None else now
        elapsed = now - self._start
        parts = [f"{self.desc}: " if self.desc else ""]
        if self.total:
            parts.append(
                f"{_number(self.n)}/{_number(self.total)} {self.unit} "
                f"({100.0 * self.n / self.total:.0f}%), {_seconds(elapsed)} elapsed"
            )
            done = self.n - self._start_n
            if 0 < done and self.n < self.total:
                left = elapsed / done * (self.total - self.n)
                parts.append(f", ~{_seconds(left)} left")
        else:
            parts.append(f"{_number(self.n)} {self.unit}, {_seconds(elapsed)} elapsed")
        if self.postfix:
            parts.append(f", {self.postfix}")
        return "".join(parts)

    def _write(self, now: float) -> None:
        file = self.file if self.file is not None else sys.stderr
        print(self.line(now), file=file, flush=True)
        self._last_time, self._last_n = now, self.n


def _number(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.3g}"


def _seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"
