"""Data-parallel training on several processes (``devices=N, strategy="ddp"``): everything in
which a distributed run differs from a single-process one lives here.

Design:

* **Launch**: :func:`launch` spawns ``N`` processes (``torch.multiprocessing``, start method
  ``spawn``) and waits for them. The rendezvous is a ``TCPStore`` that the launching process
  opens on a free localhost port (the OS picks it), so nothing is guessed and no file is left
  behind. Backend: ``gloo`` on the CPU, ``nccl`` on CUDA (rank ``r`` on ``cuda:r``). One
  machine only. A failing rank stops all ranks: its exception is re-raised in the launcher (same
  type, with a note naming the rank); a rank killed by a signal, or Ctrl-C, stops the others and
  raises :class:`~ase_mlmd.errors.DistributedTrainingError`.
* **Global batch**: every rank walks the same epoch order (a function of (seed, epoch) only)
  and the same global batches as a single-process run; rank ``r`` computes ``batch[r::N]``.
  Each rank's loss is normalised by the *global* batch's frame and force-component counts, and
  gradients (and the loss) are summed over ranks, so loss and gradient are those of the
  single-process batch up to floating-point summation order. The optimiser step then runs on
  every rank with identical gradients, so the weights stay identical without broadcasting them.
  (This is the all-reduce of ``DistributedDataParallel``, done once per step over one flat
  buffer instead of through the module wrapper: a rank whose share of the last, short batch is
  empty contributes zeros, and parameters without a gradient stay without one, as in a
  single-process step.)
* **Rank 0 decides**: validation, EMA-based model selection, LR schedule input, stopping rules,
  the CSV log, checkpoints and the card happen on rank 0; the values the other ranks need
  (stop/continue, validation errors) are broadcast from it (:meth:`ProcessGroup.from_main`).
* **Launcher death**: on Linux each rank asks the kernel to SIGKILL it when the launcher dies,
  so ``kill -9`` of the launcher (or of everything) leaves no rank behind.
* **Resume**: all ranks read rank 0's checkpoint; it records the world size, and resuming it
  with another number of processes raises :class:`~ase_mlmd.errors.WorldSizeMismatchError`
  (the optimisation itself does not depend on the world size, but the reduction order does, so
  a resumed run would no longer repeat the interrupted one exactly).
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ase_mlmd.errors import DistributedTrainingError, MLMDError, WorldSizeMismatchError

#: how long a rank waits in a collective before giving up (the launcher stops all ranks as
#: soon as one fails, so this only matters if a rank hangs)
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)


def uses_processes(devices: int, strategy: str) -> bool:
    """True when training runs in spawned worker processes (``ddp``, or ``auto`` with >1)."""
    return strategy == "ddp" or devices > 1


class ProcessGroup:
    """This process's place in a training run: the single-process case (rank 0 of 1).

    The distributed subclass overrides every method; the epoch loop calls them and does not
    test the rank itself.
    """

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that validates, logs, checkpoints and exports."""
        return self.rank == 0

    def shard(self, chunk: Sequence[int]) -> list[int]:
        """This rank's frames of the global batch ``chunk``."""
        return list(chunk)

    def reduce_gradients(self, model: torch.nn.Module, loss: float) -> float:
        """Sum the parameters' gradients and ``loss`` over ranks; return the summed loss."""
        return loss

    def from_main(self, compute: Callable[[], Any]) -> Any:
        """``compute()`` evaluated on rank 0, its (picklable) result returned on every rank."""
        return compute()

    def broadcast_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` with rank 0's parameters and buffers (in place)."""
        return module


class DistributedGroup(ProcessGroup):
    """A rank of an initialised ``torch.distributed`` process group."""

    def __init__(self, rank: int, size: int, device: torch.device) -> None:
        self.rank, self.size, self.device = rank, size, device

    def shard(self, chunk: Sequence[int]) -> list[int]:
        return list(chunk)[self.rank :: self.size]

    def reduce_gradients(self, model: torch.nn.Module, loss: float) -> float:
        import torch.distributed as dist

        params = [p for p in model.parameters() if p.requires_grad]
        pieces = [
            torch.zeros(p.numel(), dtype=torch.float64, device=self.device)
            if p.grad is None
            else p.grad.detach().reshape(-1).to(torch.float64)
            for p in params
        ]
        has_grad = [0.0 if p.grad is None else 1.0 for p in params]
        tail = torch.tensor([loss, *has_grad], dtype=torch.float64, device=self.device)
        flat = torch.cat([*pieces, tail])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        counts = flat[-len(params) :] if params else flat[:0]
        for p, count in zip(params, counts.tolist(), strict=True):
            n = p.numel()
            if count > 0:
                p.grad = flat[offset : offset + n].view_as(p).to(p.dtype).clone()
            else:
                p.grad = None
            offset += n
        return float(flat[offset])

    def from_main(self, compute: Callable[[], Any]) -> Any:
        import torch.distributed as dist

        box = [compute() if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]

    def broadcast_module(self, module: torch.nn.Module) -> torch.nn.Module:
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)
        return module

    def _object_device(self) -> torch.device | None:
        return self.device if self.device.type == "cuda" else None


def check_world_size(stored: dict[str, Any], size: int, checkpoint: Path) -> None:
    """Refuse to resume a checkpoint written by a run with another number of processes.

    Raises:
        WorldSizeMismatchError: names both process counts and the ``--devices`` to use.
    """
    before = int(stored.get("world_size", 1))
    if before != size:
        raise WorldSizeMismatchError(
            f"the checkpoint {checkpoint} was written by a run on {before} process(es) "
            f"(--devices {before}); this run has {size} (--devices {size}). Resume it with "
            f"--devices {before} (Python: TrainConfig(devices={before})), so that it repeats "
            "the interrupted run exactly, or start afresh with resume=False (CLI: --no-resume)"
        )


def process_device(device: torch.device, rank: int, size: int) -> torch.device:
    """The device of rank ``rank``: the CPU, or CUDA device ``rank`` (one GPU per rank).

    Raises:
        DistributedTrainingError: fewer visible GPUs than ``size`` (names ``--devices``).
    """
    if device.type != "cuda":
        return torch.device("cpu")
    available = torch.cuda.device_count()
    if size > available:
        raise DistributedTrainingError(
            f"--devices {size} on CUDA needs {size} GPUs, but {available} are visible; pass "
            f"--devices {available} or fewer (or --device cpu for CPU processes)"
        )
    return torch.device("cuda", rank)


def launch(worker: Callable[..., Any], args: tuple, size: int, device: torch.device) -> Any:
    """Run ``worker(group, device, *args)`` on ``size`` spawned processes; return rank 0's
    result.

    Raises:
        the exception a rank raised first (same type; a note names the rank), or
        DistributedTrainingError: a rank died from a signal (SIGKILL, the out-of-memory
            killer), or the launcher was interrupted (Ctrl-C). All ranks are stopped first.
    """
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if device.type == "cuda":
        process_device(device, size - 1, size)  # enough GPUs? (before spawning)
    store = dist.TCPStore(
        "127.0.0.1", 0, None, True, timeout=COLLECTIVE_TIMEOUT, wait_for_workers=False
    )
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    threads = max(1, (os.cpu_count() or 1) // size) if device.type == "cpu" else None
    processes = [
        context.Process(
            target=_run_rank,
            args=(
                rank,
                size,
                store.port,
                str(device),
                threads,
                results,
                worker,
                args,
                os.getpid(),
            ),  # fmt: skip
            name=f"ase-mlmd-train-rank{rank}",
        )
        for rank in range(size)
    ]
    try:
        for process in processes:
            process.start()
        codes = _wait(processes)
    except KeyboardInterrupt:
        _stop(processes)
        raise DistributedTrainingError(
            f"interrupted: all {size} training processes were stopped; run the same command "
            "again to resume from the last checkpoint"
        ) from None
    if codes is not None:
        _stop(processes)
        raise _failure(codes, results, size) from None
    return _first_result(results)


def _wait(processes: list[Any]) -> list[int | None] | None:
    """Wait until every rank has ended well (None) or one has failed: then the exit codes
    of all ranks at that moment (None: still running), before anything is stopped."""
    from multiprocessing.connection import wait

    pending = {process.sentinel: process for process in processes}
    while pending:
        for sentinel in wait(list(pending)):
            process = pending.pop(sentinel)
            process.join()
            if process.exitcode != 0:
                return [p.exitcode for p in processes]
    return None


def _failure(codes: list[int | None], results: Any, size: int) -> BaseException:
    """Why the run failed: a rank killed by a signal (its peers then fail in collectives), else
    the first exception a rank reported."""
    for rank, code in enumerate(codes):
        if code is not None and code < 0:
            return DistributedTrainingError(
                f"training process {rank} of {size} died ({_signal_name(-code)}); all "
                "processes were stopped. Run the same command again to resume from the last "
                "checkpoint"
            )
    raised = _first_error(results)
    if raised is not None:
        return raised
    rank, code = next((r, c) for r, c in enumerate(codes) if c not in (None, 0))
    return DistributedTrainingError(
        f"training process {rank} of {size} ended with exit code {code}; all processes were "
        "stopped. Run the same command again to resume from the last checkpoint"
    )


def _run_rank(
    rank: int,
    size: int,
    port: int,
    device_name: str,
    threads: int | None,
    results: Any,
    worker: Callable[..., Any],
    args: tuple,
    launcher: int,
) -> None:
    """One spawned rank: join the process group, run ``worker``, report to the launcher."""
    import torch.distributed as dist

    _die_with(launcher)
    if threads is not None and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(threads)
    try:
        device = process_device(torch.device(device_name), rank, size)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        store = dist.TCPStore("127.0.0.1", port, None, False, timeout=COLLECTIVE_TIMEOUT)
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            store=store,
            rank=rank,
            world_size=size,
            timeout=COLLECTIVE_TIMEOUT,
        )
        outcome = worker(DistributedGroup(rank, size, device), device, *args)
    except Exception as err:  # reported before this rank's exit makes the others fail
        err.add_note(f"(raised in training process {rank} of {size})")
        try:
            results.put(("error", rank, err))
        except Exception:  # an exception that does not pickle: its text
            results.put(("error", rank, DistributedTrainingError(f"process {rank}: {err}")))
        if isinstance(err, MLMDError):  # a message for the user, which the launcher raises
            sys.exit(1)
        raise  # anything else: its traceback on stderr too
    except KeyboardInterrupt:  # Ctrl-C reaches every rank; the launcher says what happened
        sys.exit(130)
    dist.destroy_process_group()
    if rank == 0:
        results.put(("result", rank, outcome))


def _die_with(launcher: int) -> None:
    """Have the kernel SIGKILL this rank when the launcher dies (Linux ``PR_SET_PDEATHSIG``):
    a ``kill -9`` of the launcher must not leave ranks training on, unsupervised, in the
    output folder whose lock died with it."""
    if sys.platform != "linux":
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != launcher:  # the launcher died before that took effect
        os._exit(1)


def _drain(results: Any) -> list[tuple[str, int, Any]]:
    items = []
    while not results.empty():
        items.append(results.get())
    return items


def _first_error(results: Any) -> BaseException | None:
    """The first exception reported: the cause (a rank that fails makes the others fail
    later, e.g. gloo's "Connection closed by peer"), in the order the ranks reported them."""
    errors = [err for kind, _, err in _drain(results) if kind == "error"]
    return errors[0] if errors else None


def _first_result(results: Any) -> Any:
    for kind, _, value in _drain(results):
        if kind == "result":
            return value
    raise DistributedTrainingError("training process 0 ended without a result")


def _stop(processes: list[Any]) -> None:
    """Kill every rank still running (it may be blocked in a collective) and reap it; the
    checkpoint is written atomically, so nothing is lost that a resumed run needs."""
    for process in processes:
        if process.is_alive():
            process.kill()
    for process in processes:
        if process.pid is not None:
            process.join()


def _signal_name(number: int) -> str:
    try:
        return f"signal {signal.Signals(number).name}"
    except ValueError:
        return f"signal {number}"
