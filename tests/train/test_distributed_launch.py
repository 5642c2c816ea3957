"""The launcher of data-parallel training (:func:`ase_mlmd.train.distributed.launch`) on 2 gloo
processes: an exception in one rank stops the other (blocked in a collective) and reaches the
caller as the same exception naming the rank; a rank killed by a signal, or Ctrl-C in the
launcher, stops all ranks with a DistributedTrainingError that says how to resume."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from ase_mlmd.errors import DataFormatError, DistributedTrainingError
from ase_mlmd.train.distributed import launch


def wait_after(group, device, folder: str, fail: str) -> None:
    """Rank 0 records its PID and waits in a barrier; rank 1 fails as ``fail`` says (or
    records its PID and waits too)."""
    Path(folder, f"rank{group.rank}.pid").write_text(str(os.getpid()))
    while not Path(folder, "rank0.pid").exists():  # rank 0 is up before rank 1 fails
        time.sleep(0.01)
    if group.rank == 1 and fail == "raise":
        raise DataFormatError("frame 3 has no forces")
    if group.rank == 1 and fail == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fail == "wait":  # both ranks wait until the launcher stops them
        while True:
            time.sleep(0.05)
    dist.barrier()  # never completes: the other rank does not get here


def _gone(folder: Path, rank: int) -> bool:
    pid = int((folder / f"rank{rank}.pid").read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_an_exception_in_one_rank_stops_all_and_reaches_the_caller(tmp_path):
    with pytest.raises(DataFormatError, match="frame 3 has no forces") as info:
        launch(wait_after, (str(tmp_path), "raise"), 2, torch.device("cpu"))
    assert "training process 1 of 2" in " ".join(getattr(info.value, "__notes__", []))
    assert _gone(tmp_path, 0) and _gone(tmp_path, 1)


def test_a_rank_killed_by_a_signal_stops_all(tmp_path):
    with pytest.raises(DistributedTrainingError, match="SIGKILL") as info:
        launch(wait_after, (str(tmp_path), "kill"), 2, torch.device("cpu"))
    assert "resume" in str(info.value)
    assert _gone(tmp_path, 0)


def test_ctrl_c_in_the_launcher_stops_all_ranks(tmp_path):
    # Ctrl-C as in a terminal, also where the suite runs with SIGINT ignored (a background job
    # of a non-interactive shell inherits SIG_IGN, and Python then raises no KeyboardInterrupt)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def interrupt_when_both_wait() -> None:
        while len(list(tmp_path.glob("rank*.pid"))) < 2:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_both_wait, daemon=True).start()
    try:
        with pytest.raises(DistributedTrainingError, match="interrupted: all 2 training processes"):
            launch(wait_after, (str(tmp_path), "wait"), 2, torch.device("cpu"))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert _gone(tmp_path, 0) and _gone(tmp_path, 1)
