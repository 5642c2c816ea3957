"""Limiting CPU threads for small workloads.

Small systems (a molecule, a few replicas of it) run fastest on one thread: torch's and
OpenMP's thread pools cost more than they give for tensors of a few dozen atoms, and on a busy
machine a second spinning thread can make each step 10x slower (measured: 5 replicas of
ethanol with SchNet, 17 ms per step on one thread vs 270 ms on two threads of a loaded 2-core
machine). :func:`thread_limit` limits torch's intra-op threads and the OpenMP/BLAS pools
(tblite, numpy) inside a block and restores them afterwards.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

#: below this many atoms in a batch, one thread is the default for MD of small systems
SMALL_WORKLOAD_ATOMS = 500


@contextlib.contextmanager
def thread_limit(threads: int | None) -> Iterator[None]:
    """Limit torch, OpenMP and BLAS to ``threads`` threads inside the block; None: leave them."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            warnings.warn(
                "threadpoolctl is not installed: only torch's threads are limited", stacklevel=3
            )
            yield
            return
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


def threads_for(n_atoms: int) -> int | None:
    """1 for batches smaller than :data:`SMALL_WORKLOAD_ATOMS` atoms, else None (no limit)."""
    return 1 if n_atoms < SMALL_WORKLOAD_ATOMS else None
