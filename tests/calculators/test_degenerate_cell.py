"""Degenerate periodic cells (parallel or coplanar non-zero vectors) are refused with the same
InvalidStructureError as a zero-volume cell on every path: the ASE calculator, a batch, and
the torch MD engine's state. Parallel vectors whose Gram determinant rounds to a tiny positive
number (about one cell in five of random parallel pairs) used to reach the neighbor list and
fail there with "RuntimeError: the box matrix is not invertible"."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from ase_mlmd import load_calculator
from ase_mlmd.errors import InvalidStructureError
from ase_mlmd.md.state import MDState

# parallel first and second vectors; in floating point det(cell @ cell.T) is not 0 and the
# old Gram-determinant test let this cell through
PARALLEL = [
    [-2.614720836539693, -1.5195644638097194, 1.9775492445948877],
    [-2.309156896999752, -1.341983707402439, 1.7464470445556923],
    [-0.6426733147201713, 6.832317352748429, -3.325973367433068],
]


def _random_parallel_cells(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    cells = []
    for _ in range(count):
        a = rng.normal(size=3) * rng.uniform(1, 10)
        cells.append(np.array([a, a * rng.uniform(-3, 3), rng.normal(size=3) * 5]))
    return cells


def _argon(cell) -> Atoms:
    return Atoms("Ar2", positions=[[0, 0, 0], [1.0, 1.0, 1.0]], cell=cell, pbc=True)


def test_rounded_parallel_cell_is_refused_by_the_calculator():
    atoms = _argon(PARALLEL)
    assert np.linalg.det(atoms.cell.array @ atoms.cell.array.T) != 0.0  # the rounding case
    atoms.calc = load_calculator("lj-argon")
    with pytest.raises(InvalidStructureError, match="zero volume") as err:
        atoms.get_potential_energy()
    assert "set_cell" in str(err.value) and "pbc = False" in str(err.value)


def test_rounded_parallel_cell_is_refused_in_a_batch_and_named():
    calc = load_calculator("lj-argon")
    good = _argon(np.eye(3) * 6.0)
    with pytest.raises(InvalidStructureError, match="structure 1: .*zero volume"):
        calc.calculate_batch([good, _argon(PARALLEL)])


def test_rounded_parallel_cell_is_refused_by_the_md_engine_state():
    with pytest.raises(InvalidStructureError, match="zero volume"):
        MDState.from_atoms([_argon(PARALLEL)])


@pytest.mark.parametrize("cell", _random_parallel_cells(200))
def test_every_parallel_cell_is_refused(cell):
    with pytest.raises(InvalidStructureError, match="zero volume"):
        MDState.from_atoms([_argon(cell)])


def test_a_skewed_but_proper_cell_is_accepted():
    # a strongly sheared cell (60 degrees off) is fine and gives the same energy as its
    # Niggli-reduced equivalent (the same lattice)
    a = 6.0
    reduced = np.eye(3) * a
    sheared = reduced.copy()
    sheared[1] += 3 * reduced[0]
    atoms = _argon(reduced)
    skewed = _argon(sheared)
    atoms.calc, skewed.calc = load_calculator("lj-argon"), load_calculator("lj-argon")
    assert skewed.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
