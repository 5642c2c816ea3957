"""CG structures as ordinary ASE ``Atoms``: beads with a type name and a pseudo atomic number.

The convention (see :mod:`ase_mlmd.cg`): ``arrays["bead_type"]`` holds each bead's type name,
``numbers`` holds ``1 + index`` of that name in the ordered type list, and
``info["bead_types"]`` holds the ordered list as one space-separated string.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from ase_mlmd.errors import InvalidStructureError

BEAD_TYPE_ARRAY = "bead_type"
BEAD_TYPES_INFO = "bead_types"


def make_cg_atoms(
    positions: np.ndarray,
    bead_types: Sequence[str],
    type_list: Sequence[str],
    masses: np.ndarray | Sequence[float],
    cell: np.ndarray | None = None,
    pbc: bool | Sequence[bool] = False,
) -> Atoms:
    """A CG structure.

    Args:
        positions: (n_beads, 3) bead positions, Å.
        bead_types: (n_beads,) type name of each bead.
        type_list: the ordered type names; bead ``i`` gets atomic number
            ``1 + type_list.index(bead_types[i])``.
        masses: (n_beads,) bead masses, amu (summed atom masses).
        cell: (3, 3) cell, Å, ASE row vectors (None: no cell).
        pbc: periodic directions.
    """
    type_list = [str(t) for t in type_list]
    _check_type_names(type_list)
    index = {name: i for i, name in enumerate(type_list)}
    unknown = sorted({str(t) for t in bead_types} - set(index))
    if unknown:
        raise InvalidStructureError(
            f"bead types {unknown} are not in the type list {type_list}; add them to it"
        )
    positions = np.asarray(positions, dtype=float)
    if positions.shape != (len(bead_types), 3):
        raise InvalidStructureError(
            f"positions have shape {positions.shape}, expected ({len(bead_types)}, 3) "
            "for one position per bead"
        )
    atoms = Atoms(
        numbers=[1 + index[str(t)] for t in bead_types],
        positions=positions,
        cell=cell,
        pbc=pbc,
        masses=np.asarray(masses, dtype=float),
    )
    atoms.set_array(BEAD_TYPE_ARRAY, np.array([str(t) for t in bead_types]))
    atoms.info[BEAD_TYPES_INFO] = " ".join(type_list)
    return atoms


def is_cg_atoms(atoms: Atoms) -> bool:
    """True when ``atoms`` carries bead types (a CG structure)."""
    return BEAD_TYPE_ARRAY in atoms.arrays and BEAD_TYPES_INFO in atoms.info


def type_list_of(atoms: Atoms) -> list[str]:
    """The ordered bead type list of a CG structure (``info["bead_types"]``)."""
    if not is_cg_atoms(atoms):
        raise InvalidStructureError(
            "this structure has no bead types (arrays['bead_type'] and info['bead_types']): "
            "it is not a CG structure; map an all-atom structure with a CGMapping first"
        )
    raw = atoms.info[BEAD_TYPES_INFO]
    return raw.split() if isinstance(raw, str) else [str(t) for t in raw]


def bead_types_of(atoms: Atoms) -> list[str]:
    """The type name of each bead, checked against the pseudo atomic numbers."""
    type_list = type_list_of(atoms)
    names = [str(t) for t in atoms.arrays[BEAD_TYPE_ARRAY]]
    expected = [1 + type_list.index(n) if n in type_list else -1 for n in names]
    if list(atoms.numbers) != expected:
        raise InvalidStructureError(
            "bead types and pseudo atomic numbers disagree (numbers must be 1 + the index of "
            f"each bead's type in {type_list}); rebuild the structure with make_cg_atoms"
        )
    return names


def check_bead_types(atoms: Atoms, known: Sequence[str], what: str = "this CG model") -> None:
    """Refuse a structure whose beads are not typed, or typed outside ``known``.

    ``known`` is the ordered type list of a model; the structure's pseudo numbers must use the
    same order, so the model sees the type it was trained on for every bead.
    """
    known = [str(t) for t in known]
    if not is_cg_atoms(atoms):
        raise InvalidStructureError(
            f"{what} works on CG structures (bead types {known}), but this structure has no "
            "bead types (arrays['bead_type']); it looks all-atom — map it with the CGMapping "
            "the model was trained with first"
        )
    names = bead_types_of(atoms)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise InvalidStructureError(
            f"bead types {unknown} are unknown to {what} (it knows {known})"
        )
    if list(atoms.numbers) != [1 + known.index(n) for n in names]:
        raise InvalidStructureError(
            f"the structure orders its bead types as {type_list_of(atoms)} but {what} "
            f"expects {known}; rebuild it with make_cg_atoms(..., type_list={known})"
        )


def _check_type_names(type_list: list[str]) -> None:
    if len(set(type_list)) != len(type_list):
        raise InvalidStructureError(f"bead type list {type_list} repeats a name")
    bad = [t for t in type_list if not t or any(c.isspace() for c in t)]
    if bad:
        raise InvalidStructureError(
            f"bead type names {bad!r} are empty or contain white space; use single words"
        )
    if len(type_list) > 118:
        raise InvalidStructureError(
            f"{len(type_list)} bead types: at most 118 fit the pseudo atomic numbers"
        )
