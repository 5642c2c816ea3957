"""A nearly degenerate periodic cell (two vectors 1e-3 Å from parallel) passes the zero-volume
test but used to hang the neighbour list (each atom would see ~10⁵–10⁶ periodic images within
the cutoff): it is refused, naming the estimate, on the calculator and engine paths; an
ordinary dense cell and a thin but physical slab are not."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from ase_mlmd import load_calculator
from ase_mlmd.batch import MAX_NEIGHBORS_PER_ATOM, check_cutoff_images
from ase_mlmd.errors import InvalidStructureError
from ase_mlmd.md import simulate

THIN = [[5.0, 0.0, 0.0], [5.0, 1e-3, 0.0], [0.0, 0.0, 5.0]]


def thin_argon() -> Atoms:
    positions = np.random.default_rng(0).uniform(0.0, 5.0, (4, 3))
    return Atoms("Ar4", positions=positions, cell=THIN, pbc=True)


def test_calculator_refuses_a_nearly_parallel_cell():
    atoms = thin_argon()
    atoms.calc = load_calculator("lj-argon")
    with pytest.raises(InvalidStructureError, match="so thin that each atom would have about"):
        atoms.get_potential_energy()


def test_engine_refuses_it_before_the_first_step(tmp_path):
    with pytest.raises(InvalidStructureError, match="nearly parallel vectors"):
        simulate([thin_argon()], "lj-argon", steps=2, save_every=1)


def test_the_estimate_is_atoms_times_cutoff_ball_over_the_cell_measure():
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True)  # 4 atoms in 46.7 Å^3
    check_cutoff_images(len(crystal), crystal.cell.array, crystal.pbc, 10.0, "Cu")  # ~360
    # a 2-D periodic slab: atoms per area times the cutoff disc
    cell = np.diag([3.0, 3.0, 0.0])
    limit = np.sqrt(MAX_NEIGHBORS_PER_ATOM * 9.0 / np.pi)  # cutoff at which 1 atom reaches it
    check_cutoff_images(1, cell, [True, True, False], 0.99 * limit, "slab")
    with pytest.raises(InvalidStructureError, match="Å\\^2"):
        check_cutoff_images(1, cell, [True, True, False], 1.01 * limit, "slab")
