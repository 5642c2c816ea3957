"""Extended XYZ and ASE database readers (both parsed by ASE itself).

Where the labels are: ASE puts ``energy``/``forces``/``stress`` of an extended XYZ frame, and
the calculator results of a database row, into a ``SinglePointCalculator``; other files keep
them as frame info / per-atom arrays (``E``, ``F``, ``REF_energy``, ...), and schnetpack
databases keep them in ``row.data``. All of these are found; a caller with other names passes
``energy_key`` / ``forces_key``.

Units: labels stored the ASE way (calculator results) follow ASE's convention, eV and Å, unless
the file declares otherwise (extended XYZ frame keys ``energy_unit``/``units``/``length_unit``;
database metadata ``energy_unit``/``length_unit`` or schnetpack's ``_property_unit_dict`` and
``_distance_unit``). Labels in ``row.data`` have no convention: the caller names the unit.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.db import connect

from ase_mlmd.data.readers_common import RawFrame
from ase_mlmd.errors import DataFormatError

ENERGY_KEYS = ("energy", "E", "energies", "Energy", "total_energy")
FORCES_KEYS = ("forces", "F", "force", "Forces")
_ENERGY_UNIT_KEYS = ("energy_unit", "energy_units", "units")
_LENGTH_UNIT_KEYS = ("length_unit", "length_units", "distance_unit")
_DATA_HINT = (
    "; the labels are stored in row.data, which has no unit convention (schnetpack's test "
    'databases of MD17 molecules use energy_unit="kcal/mol")'
)


def _pop_unit(info: dict, keys: tuple[str, ...], where: str) -> str | None:
    found = {key: info.pop(key) for key in keys if key in info}
    values = {str(v) for v in found.values()}
    if len(values) > 1:
        raise DataFormatError(f"{where} declares conflicting units {found}")
    return values.pop() if values else None


def _take(container: dict, keys: tuple[str, ...]) -> object | None:
    for key in keys:
        if key in container:
            return container.pop(key)
    return None


def _frame_from_atoms(
    atoms: Atoms, where: str, energy_key: str | None, forces_key: str | None
) -> RawFrame:
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    info, arrays = dict(atoms.info), dict(atoms.arrays)
    arrays.pop("numbers"), arrays.pop("positions")
    e_keys = (energy_key,) if energy_key else ENERGY_KEYS
    f_keys = (forces_key,) if forces_key else FORCES_KEYS
    energy = _take(results, e_keys)
    energy = energy if energy is not None else _take(info, e_keys)
    forces = _take(results, f_keys)
    forces = forces if forces is not None else _take(arrays, f_keys)
    stress = results.get("stress", info.pop("stress", None))
    return RawFrame(
        numbers=atoms.numbers,
        positions=atoms.positions,
        source=where,
        cell=np.asarray(atoms.cell) if atoms.cell.rank > 0 else None,
        pbc=atoms.pbc.copy(),
        energy=energy,
        forces=forces,
        stress=stress,
        energy_unit=_pop_unit(info, _ENERGY_UNIT_KEYS, where),
        length_unit=_pop_unit(info, _LENGTH_UNIT_KEYS, where),
        default_energy_unit="eV",
        info=info,
        arrays=arrays,
    )


def read_extxyz(
    path: Path, energy_key: str | None = None, forces_key: str | None = None
) -> list[RawFrame]:
    """All frames of an extended XYZ file, in the file's units.

    Raises:
        DataFormatError: ASE cannot parse a frame (truncated or corrupt file); names the frame.
    """
    frames: list[RawFrame] = []
    try:
        for atoms in ase.io.iread(path, index=":", format="extxyz"):
            where = f"{path}#{len(frames)}"
            frames.append(_frame_from_atoms(atoms, where, energy_key, forces_key))
    except DataFormatError:
        raise
    except Exception as err:  # ASE raises XYZError, ValueError, IndexError, ... for bad files
        raise DataFormatError(
            f"{path}#{len(frames)}: cannot parse this extended XYZ frame ({err}); the file is "
            "truncated or corrupt (or not extended XYZ: pass format='xyz' for plain XYZ)"
        ) from err
    if not frames:
        raise DataFormatError(f"{path} holds no frames (empty file)")
    return frames


def _db_units(metadata: dict) -> tuple[str | None, str | None]:
    units = metadata.get("_property_unit_dict") or {}
    energy = metadata.get("energy_unit", units.get("energy"))
    length = metadata.get("length_unit", metadata.get("_distance_unit"))
    return energy, length


def read_db(
    path: Path, energy_key: str | None = None, forces_key: str | None = None
) -> list[RawFrame]:
    """All rows of an ASE database (SQLite or JSON), in id order, in the file's units.

    Raises:
        DataFormatError: the file is not an ASE database, or a row cannot be read.
    """
    frames: list[RawFrame] = []
    try:
        db = connect(path, type="json" if path.suffix == ".json" else "db")
        energy_unit, length_unit = _db_units(db.metadata)
        e_keys = (energy_key,) if energy_key else ENERGY_KEYS
        f_keys = (forces_key,) if forces_key else FORCES_KEYS
        for row in db.select(sort="id"):
            where = f"{path}#{len(frames)}"
            atoms = row.toatoms()
            info = dict(row.key_value_pairs)
            data = dict(row.data) if row.get("data") else {}
            # calculator results first (ASE convention: eV, Å), then key-value pairs, then data
            energy = row.get("energy") if "energy" in e_keys else None
            energy = energy if energy is not None else _take(info, e_keys)
            forces = row.get("forces") if "forces" in f_keys else None
            from_data = False
            if energy is None and (energy := _take(data, e_keys)) is not None:
                from_data = True
            if forces is None and (forces := _take(data, f_keys)) is not None:
                from_data = True
            frames.append(
                RawFrame(
                    numbers=atoms.numbers,
                    positions=atoms.positions,
                    source=where,
                    cell=np.asarray(atoms.cell) if atoms.cell.rank > 0 else None,
                    pbc=atoms.pbc.copy(),
                    energy=energy,
                    forces=forces,
                    stress=row.get("stress"),
                    energy_unit=energy_unit,
                    length_unit=length_unit,
                    default_energy_unit=None if from_data else "eV",
                    hint=_DATA_HINT if from_data else "",
                    info={**info, "db_id": row.id},
                )
            )
    except (sqlite3.DatabaseError, ValueError, KeyError, OSError) as err:
        raise DataFormatError(
            f"{path}#{len(frames)}: cannot read this ASE database row ({err}); the file is "
            "corrupt or not an ASE database"
        ) from err
    if not frames:
        raise DataFormatError(f"{path} holds no rows (empty database)")
    return frames
