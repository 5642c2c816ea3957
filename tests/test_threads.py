import pytest
import torch

from ase_mlmd.threads import SMALL_WORKLOAD_ATOMS, thread_limit, threads_for


def test_thread_limit_sets_and_restores_torch_threads():
    before = torch.get_num_threads()
    with thread_limit(1):
        assert torch.get_num_threads() == 1
        from threadpoolctl import threadpool_info

        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert torch.get_num_threads() == before
    with thread_limit(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be >= 1"):
        with thread_limit(0):
            pass


def test_threads_for_small_and_large_batches():
    assert threads_for(45) == 1
    assert threads_for(SMALL_WORKLOAD_ATOMS) is None
