"""CGTopology: angles and dihedrals as paths along bonds, exclusions, serialisation, bad bonds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ase_mlmd.cg.topology import CGTopology
from ase_mlmd.errors import InvalidStructureError


def test_chain_paths():
    topo = CGTopology.chain(["C", "N", "CA", "C", "N"])
    assert topo.bonds.tolist() == [[0, 1], [1, 2], [2, 3], [3, 4]]
    assert topo.angles.tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4]]
    assert topo.dihedrals.tolist() == [[0, 1, 2, 3], [1, 2, 3, 4]]
    assert topo.n_beads == 5


def test_branched_and_ring_paths():
    # star: centre 0 with three arms → 3 angles at the centre, no dihedral
    star = CGTopology.from_bonds(["A"] * 4, [(0, 1), (2, 0), (0, 3)])
    assert star.angles.tolist() == [[1, 0, 2], [1, 0, 3], [2, 0, 3]]
    assert star.dihedrals.shape == (0, 4)
    # a 4-ring: 4 angles and 4 dihedrals (each path of 4 beads once), bonds deduplicated
    ring = CGTopology.from_bonds(["A"] * 4, [(0, 1), (1, 2), (2, 3), (3, 0), (1, 0)])
    assert len(ring.bonds) == 4 and len(ring.angles) == 4
    assert len(ring.dihedrals) == 4
    assert all(d[0] < d[3] for d in ring.dihedrals)
    # every dihedral is a path along bonds
    bonds = {tuple(b) for b in ring.bonds.tolist()}
    for d in ring.dihedrals.tolist():
        for a, b in zip(d[:-1], d[1:], strict=True):
            assert tuple(sorted((a, b))) in bonds


def test_exclusions():
    topo = CGTopology.chain(list("ABCDEF"))
    assert topo.excluded_pairs(1) == {(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)}
    three = topo.excluded_pairs(3)
    assert (0, 3) in three and (0, 4) not in three and (1, 5) not in three
    assert len(topo.excluded_pairs(5)) == 15  # everything within a 6-bead chain


def test_round_trip_and_bad_bonds():
    topo = CGTopology.from_bonds(["A", "B", "C"], np.array([[0, 1], [1, 2]]))
    back = CGTopology.from_dict(json.loads(json.dumps(topo.to_dict())))
    assert back.bead_types == topo.bead_types
    np.testing.assert_array_equal(back.angles, topo.angles)
    with pytest.raises(InvalidStructureError, match="not between two different beads"):
        CGTopology.from_bonds(["A", "B"], [(0, 2)])
    with pytest.raises(InvalidStructureError, match="not between two different beads"):
        CGTopology.from_bonds(["A", "B"], [(1, 1)])
