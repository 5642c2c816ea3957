"""Conversion of accepted structure types to ASE ``Atoms``.

Wherever ase_mlmd accepts a structure it accepts ASE ``Atoms`` and pymatgen ``Structure`` /
``Molecule``; pymatgen objects are converted with pymatgen's own ``AseAtomsAdaptor``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ase import Atoms


def to_atoms(structure: Any) -> Atoms:
    """Return ``structure`` as ASE ``Atoms`` (the same object if it already is one).

    Raises:
        TypeError: for anything that is neither ASE ``Atoms`` nor a pymatgen structure.
    """
    if isinstance(structure, Atoms):
        return structure
    module = type(structure).__module__
    if module.startswith("pymatgen"):
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_atoms(structure)
    raise TypeError(
        f"expected ase.Atoms or a pymatgen Structure/Molecule, got {type(structure).__name__}; "
        "read files with ase.io.read() first"
    )


def is_single_structure(obj: Any) -> bool:
    """True for one structure (ASE Atoms, pymatgen Structure/Molecule — which are themselves
    sequences of sites), False for a list/tuple of structures."""
    return (
        isinstance(obj, Atoms)
        or type(obj).__module__.startswith("pymatgen")
        or not isinstance(obj, Sequence)
    )
