"""Read labelled datasets (energies, forces) into ASE ``Atoms`` in eV and Å.

One entry point, :func:`read_frames`, for five layouts (:data:`FORMATS`):

==========  ================================================  ===============================
format      what                                              units
==========  ================================================  ===============================
``extxyz``  extended XYZ, parsed by ASE                       eV, Å (ASE convention) unless
                                                              frames declare ``energy_unit``
``xyz``     plain XYZ, energy on the comment line, columns    none stated: ``energy_unit``
            ``symbol x y z [fx fy fz]``                       required
``db``      ASE database (SQLite ``.db``)                     eV, Å for calculator results;
                                                              metadata units if declared;
                                                              ``row.data`` labels: required
``md17``    MD17 / rMD17 ``.npz``                             none stated: ``energy_unit``
                                                              required (``"kcal/mol"``)
``deepmd``  deepmd ``type.raw`` + ``set.NNN/*.npy``           eV, Å (deepmd convention)
==========  ================================================  ===============================

Every frame comes back with ``atoms.calc = SinglePointCalculator(atoms, energy=<eV>,
forces=<eV/Å>)`` (the one representation of labels in ase_mlmd) and
``atoms.info["source"] = "<path>#<frame index>"``. Forces are read in
``energy_unit / length_unit`` and converted; positions and cells in ``length_unit``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io.formats import string2index

from ase_mlmd.data.readers_arrays import read_deepmd, read_md17
from ase_mlmd.data.readers_ase import read_db, read_extxyz
from ase_mlmd.data.readers_common import (
    ENERGY_UNITS,
    LENGTH_UNITS,
    RawFrame,
    build_atoms,
    check_require,
    energy_unit_name,
    length_unit_name,
)
from ase_mlmd.data.readers_xyz import read_plain_xyz
from ase_mlmd.errors import DataFormatError

__all__ = ["ENERGY_UNITS", "FORMATS", "LENGTH_UNITS", "infer_format", "read_datasets",
           "read_frames"]  # fmt: skip

#: dataset layouts :func:`read_frames` understands
FORMATS = ("extxyz", "xyz", "db", "md17", "deepmd")

_READERS: dict[str, Callable[..., list[RawFrame]]] = {
    "extxyz": read_extxyz,
    "xyz": lambda path, **_: read_plain_xyz(path),
    "db": read_db,
    "md17": lambda path, **_: read_md17(path),
    "deepmd": lambda path, **_: read_deepmd(path),
}


def infer_format(path: str | Path) -> str:
    """The format of ``path`` from its name (and, for ``.xyz``, its second line).

    A directory holding ``type.raw`` (or systems that do) is ``deepmd``; ``.npz`` is ``md17``;
    ``.db`` is ``db``; ``.extxyz`` is ``extxyz``; ``.xyz`` is ``extxyz`` when its comment line
    has ``Properties=`` or ``Lattice=``, plain ``xyz`` otherwise.

    Raises:
        DataFormatError: the name says nothing; pass ``format=`` explicitly.
    """
    path = Path(path)
    if path.is_dir():
        if any(path.rglob("type.raw")):
            return "deepmd"
    elif path.suffix.lower() == ".npz":
        return "md17"
    elif path.suffix.lower() == ".db":
        return "db"
    elif path.suffix.lower() == ".extxyz":
        return "extxyz"
    elif path.suffix.lower() == ".xyz":
        with open(path, errors="replace") as file:
            file.readline()
            comment = file.readline()
        return "extxyz" if "Properties=" in comment or "Lattice=" in comment else "xyz"
    raise DataFormatError(
        f"cannot tell the dataset format of {path} from its name; pass format= one of {FORMATS}"
    )


def _select(n_frames: int, index: int | slice | str, path: Path) -> list[int]:
    if isinstance(index, str):
        index = string2index(index)
    if isinstance(index, int | np.integer):
        if not -n_frames <= index < n_frames:
            raise IndexError(f"{path}: frame {index} requested but the file has {n_frames} frames")
        return [int(index) % n_frames]
    if isinstance(index, slice):
        return list(range(n_frames))[index]
    raise TypeError(f"index must be an int, a slice or a string like '10:20', not {index!r}")


def _check_declared_units(frames: list[RawFrame], path: Path) -> None:
    """One file, one unit: frames that declare different energy units, or some that declare
    one while others do not, are refused."""
    declared: dict[str | None, str] = {}
    for frame in frames:
        unit = None if frame.energy_unit is None else energy_unit_name(frame.energy_unit)
        declared.setdefault(unit, frame.source)
    if len(declared) > 1:
        listing = "; ".join(f"{where}: {unit or 'no unit'}" for unit, where in declared.items())
        raise DataFormatError(
            f"{path} mixes energy units between frames ({listing}); split the file by unit or "
            "convert it, then read each part with its energy_unit"
        )


def read_frames(
    path: str | Path,
    format: str | None = None,
    *,
    energy_unit: str | None = None,
    length_unit: str = "Å",
    index: int | slice | str = ":",
    require: Sequence[str] = ("energy", "forces"),
    energy_key: str | None = None,
    forces_key: str | None = None,
) -> list[Atoms]:
    """Labelled frames of a dataset file or directory, converted to eV and Å.

    Args:
        path: a file, or for ``deepmd`` a system directory or a directory of systems.
        format: one of :data:`FORMATS`; None infers it (:func:`infer_format`).
        energy_unit: unit of the stored energies (a key of :data:`ENERGY_UNITS`; case and
            common aliases such as ``"Ha"`` accepted). Required for ``md17``, ``xyz`` and for
            database labels kept in ``row.data``; the others default to eV. When the file
            declares a unit, a different ``energy_unit`` is an error.
        length_unit: unit of positions and cell (``"Å"``, ``"Bohr"``, ``"nm"``); forces are
            read in ``energy_unit / length_unit``.
        index: frames to return, as in ``ase.io.read`` (``":"``, ``"-1"``, ``"::10"``, int,
            slice); ``atoms.info["source"]`` keeps the frame's index in the file.
        require: labels every selected frame must have (``"energy"``, ``"forces"``,
            ``"stress"``); ``require=()`` reads unlabelled frames too.
        energy_key, forces_key: name of the label in an ``extxyz`` frame's info / arrays or a
            database row's data, when it is not one of the usual names (``energy``, ``E``,
            ``forces``, ``F``, ...).

    Returns:
        One ``Atoms`` per selected frame with a ``SinglePointCalculator`` holding ``energy``
        (eV), ``forces`` (n, 3) eV/Å and ``stress`` (6,) eV/Å³ where the frame has them.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: unknown format or unit, undeclared units where they are required,
            mixed units, a truncated or corrupt file (the message names file and frame).
        MissingLabelsError: a selected frame lacks a label in ``require``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {path} does not exist")
    fmt = format if format is not None else infer_format(path)
    if fmt not in FORMATS:
        raise DataFormatError(f"unknown dataset format {fmt!r} for {path}; choose from {FORMATS}")
    if (energy_key or forces_key) and fmt not in ("extxyz", "db"):
        raise ValueError(f"energy_key/forces_key apply to extxyz and db files, not {fmt!r}")
    require = check_require(require)
    if energy_unit is not None:
        energy_unit = energy_unit_name(energy_unit)
    length_unit = length_unit_name(length_unit)
    raw = _READERS[fmt](path, energy_key=energy_key, forces_key=forces_key)
    _check_declared_units(raw, path)
    return [
        build_atoms(raw[i], energy_unit, length_unit, require)
        for i in _select(len(raw), index, path)
    ]


def read_datasets(
    paths: Sequence[str | Path],
    format: str | None = None,
    *,
    energy_unit: str | None | Sequence[str | None] = None,
    length_unit: str = "Å",
    require: Sequence[str] = ("energy", "forces"),
) -> list[Atoms]:
    """All frames of several datasets, each converted with its own units, concatenated.

    Args:
        paths: dataset files or directories (each as for :func:`read_frames`).
        format: one format for all, or None to infer each.
        energy_unit: one unit for all files, or one per file (None: the file's convention).
        length_unit, require: as for :func:`read_frames`.

    Raises:
        ValueError: a per-file ``energy_unit`` list whose length differs from ``paths``.
        DataFormatError, MissingLabelsError: as for :func:`read_frames`, naming the file.
    """
    paths = list(paths)
    if energy_unit is None or isinstance(energy_unit, str):
        units = [energy_unit] * len(paths)
    else:
        units = list(energy_unit)
        if len(units) != len(paths):
            raise ValueError(f"{len(units)} energy units given for {len(paths)} datasets")
    frames: list[Atoms] = []
    for path, unit in zip(paths, units, strict=True):
        frames.extend(
            read_frames(path, format, energy_unit=unit, length_unit=length_unit, require=require)
        )
    return frames
