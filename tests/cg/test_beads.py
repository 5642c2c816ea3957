"""The CG structure convention (ase_mlmd.beads): bead types on ordinary Atoms, pseudo atomic
numbers, an extxyz round trip, and the refusals of check_bead_types."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.io import read, write

from ase_mlmd.beads import (
    bead_types_of,
    check_bead_types,
    is_cg_atoms,
    make_cg_atoms,
    type_list_of,
)
from ase_mlmd.errors import InvalidStructureError

TYPES = ["C", "N", "CA"]


def _beads():
    positions = np.arange(15, dtype=float).reshape(5, 3)
    return make_cg_atoms(
        positions, ["C", "N", "CA", "C", "N"], TYPES, [12.0, 14.0, 12.0, 12.0, 14.0],
        cell=np.eye(3) * 20, pbc=True,
    )  # fmt: skip


def test_numbers_masses_and_types():
    beads = _beads()
    assert list(beads.numbers) == [1, 2, 3, 1, 2]
    assert np.allclose(beads.get_masses(), [12, 14, 12, 12, 14])
    assert bead_types_of(beads) == ["C", "N", "CA", "C", "N"]
    assert type_list_of(beads) == TYPES and is_cg_atoms(beads)
    assert beads.pbc.all() and np.allclose(beads.cell.array, np.eye(3) * 20)
    check_bead_types(beads, TYPES)


def test_extxyz_round_trip_keeps_the_bead_types(tmp_path):
    write(tmp_path / "cg.extxyz", [_beads(), _beads()])
    again = read(tmp_path / "cg.extxyz", index=1)
    assert bead_types_of(again) == ["C", "N", "CA", "C", "N"]
    assert type_list_of(again) == TYPES
    assert np.allclose(again.get_masses(), [12, 14, 12, 12, 14])
    check_bead_types(again, TYPES)


def test_refusals():
    with pytest.raises(InvalidStructureError, match="looks all-atom"):
        check_bead_types(molecule("H2O"), TYPES, "the ala2 CG model")
    with pytest.raises(InvalidStructureError, match=r"bead types \['CA'\] are unknown"):
        check_bead_types(_beads(), ["C", "N"], "the model")
    with pytest.raises(InvalidStructureError, match="expects \\['N', 'C', 'CA'\\]"):
        check_bead_types(_beads(), ["N", "C", "CA"], "the model")
    with pytest.raises(InvalidStructureError, match="not in the type list"):
        make_cg_atoms(np.zeros((1, 3)), ["X"], TYPES, [1.0])
    with pytest.raises(InvalidStructureError, match="repeats a name"):
        make_cg_atoms(np.zeros((1, 3)), ["C"], ["C", "C"], [1.0])
    with pytest.raises(InvalidStructureError, match="white space"):
        make_cg_atoms(np.zeros((1, 3)), ["C A"], ["C A"], [1.0])
    with pytest.raises(InvalidStructureError, match="expected \\(2, 3\\)"):
        make_cg_atoms(np.zeros((3, 3)), ["C", "N"], TYPES, [1.0, 1.0])
    tampered = _beads()
    tampered.numbers[0] = 3
    with pytest.raises(InvalidStructureError, match="disagree"):
        bead_types_of(tampered)
