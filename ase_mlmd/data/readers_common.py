"""Units and the one labelled-frame representation shared by all dataset readers.

Every format reader produces :class:`RawFrame` objects in the file's own units; one function,
:func:`build_atoms`, converts them to ASE units (eV, Å, eV/Å, eV/Å³) and returns ``Atoms`` with
the labels in a ``SinglePointCalculator``. Units are never guessed: a frame either declares its
unit (file metadata), or its format has a documented convention (ASE's eV/Å for extended XYZ and
ASE databases, deepmd's eV/Å), or the caller must name it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers, chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress

from ase_mlmd.errors import DataFormatError, MissingLabelsError

#: energy units a reader accepts: name -> eV per unit
ENERGY_UNITS: dict[str, float] = {
    "eV": 1.0,
    "meV": 1e-3,
    "kcal/mol": units.kcal / units.mol,
    "kJ/mol": units.kJ / units.mol,
    "Hartree": units.Hartree,
    "Ry": units.Rydberg,
}
#: length units a reader accepts: name -> Å per unit
LENGTH_UNITS: dict[str, float] = {"Å": 1.0, "Bohr": units.Bohr, "nm": 10.0}

_ENERGY_ALIASES = {
    "ev": "eV",
    "mev": "meV",
    "kcal/mol": "kcal/mol",
    "kcal mol-1": "kcal/mol",
    "kcal mol^-1": "kcal/mol",
    "kj/mol": "kJ/mol",
    "kj mol-1": "kJ/mol",
    "hartree": "Hartree",
    "ha": "Hartree",
    "eh": "Hartree",
    "ry": "Ry",
    "rydberg": "Ry",
}
_LENGTH_ALIASES = {
    "å": "Å",
    "a": "Å",
    "ang": "Å",
    "angstrom": "Å",
    "angstroms": "Å",
    "bohr": "Bohr",
    "a0": "Bohr",
    "nm": "nm",
}
#: labels a caller may require
LABELS = ("energy", "forces", "stress")


def energy_unit_name(unit: str, where: str = "energy_unit") -> str:
    """Canonical name (a key of :data:`ENERGY_UNITS`) of an energy unit given in any case or
    alias (``"Ha"``, ``"ev"``, ``"kcal/mol"``)."""
    name = _ENERGY_ALIASES.get(str(unit).strip().lower())
    if name is None:
        raise DataFormatError(
            f"unknown energy unit {unit!r} ({where}); known units: {', '.join(ENERGY_UNITS)}"
        )
    return name


def length_unit_name(unit: str, where: str = "length_unit") -> str:
    """Canonical name (a key of :data:`LENGTH_UNITS`) of a length unit (``"Angstrom"``, ...)."""
    name = _LENGTH_ALIASES.get(str(unit).strip().lower())
    if name is None:
        raise DataFormatError(
            f"unknown length unit {unit!r} ({where}); known units: {', '.join(LENGTH_UNITS)}"
        )
    return name


@dataclass
class RawFrame:
    """One labelled frame as a file stores it, in the file's units.

    Attributes:
        numbers: (n,) atomic numbers.
        positions: (n, 3) positions, file length unit.
        source: ``"<path>#<frame index>"``, used in every error message and kept in
            ``atoms.info["source"]``.
        cell: (3, 3) cell rows (file length unit) or None.
        pbc: (3,) periodic flags.
        energy: total energy (file energy unit) or None when the frame has none.
        forces: (n, 3) forces (file energy / length unit) or None.
        stress: (6,) Voigt or (3, 3) stress (energy / length³) or None.
        energy_unit: the unit the file declares for this frame, or None.
        length_unit: the length unit the file declares, or None.
        default_energy_unit: the format's documented convention when nothing is declared, or
            None when the caller must name the unit.
        hint: what to tell a caller who must name the unit.
        missing: why a label is absent (label -> text), added to MissingLabelsError messages.
        info: extra per-frame metadata copied to ``atoms.info``.
        arrays: extra per-atom arrays copied to ``atoms.arrays``.
    """

    numbers: np.ndarray
    positions: np.ndarray
    source: str
    cell: np.ndarray | None = None
    pbc: Any = False
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    energy_unit: str | None = None
    length_unit: str | None = None
    default_energy_unit: str | None = "eV"
    hint: str = ""
    missing: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)


def numbers_from_symbols(symbols: Sequence[str], source: str) -> np.ndarray:
    """Atomic numbers of element symbols (or of integers written as text); DataFormatError
    naming ``source`` for an unknown element."""
    numbers = np.empty(len(symbols), dtype=np.int64)
    for k, symbol in enumerate(symbols):
        if symbol in atomic_numbers:
            numbers[k] = atomic_numbers[symbol]
        elif symbol.isdigit() and 0 < int(symbol) < len(chemical_symbols):
            numbers[k] = int(symbol)
        else:
            raise DataFormatError(f"{source}: atom {k} has unknown element {symbol!r}")
    return numbers


def _resolve_energy_unit(frame: RawFrame, requested: str | None) -> str:
    declared = frame.energy_unit
    if declared is not None:
        declared = energy_unit_name(declared, f"declared by {frame.source}")
    if requested is not None:
        requested = energy_unit_name(requested)
        if declared is not None and declared != requested:
            raise DataFormatError(
                f"{frame.source} declares energies in {declared} but energy_unit={requested!r} "
                "was passed; mixed units: pass the unit the file declares (or energy_unit=None)"
            )
        return requested
    if declared is not None:
        return declared
    if frame.default_energy_unit is None:
        raise DataFormatError(
            f"{frame.source}: the file does not say in which unit its energies are; pass "
            f"energy_unit= explicitly{frame.hint} (known: {', '.join(ENERGY_UNITS)})"
        )
    return frame.default_energy_unit


def _resolve_length_unit(frame: RawFrame, requested: str) -> str:
    requested = length_unit_name(requested)
    if frame.length_unit is not None:
        declared = length_unit_name(frame.length_unit, f"declared by {frame.source}")
        if declared != requested:
            raise DataFormatError(
                f"{frame.source} declares lengths in {declared} but length_unit={requested!r} "
                f"was passed; mixed units: pass length_unit={declared!r}"
            )
    return requested


def check_require(require: Sequence[str]) -> tuple[str, ...]:
    """Validated tuple of required labels (each one of :data:`LABELS`)."""
    if isinstance(require, str):
        require = (require,)
    unknown = [name for name in require if name not in LABELS]
    if unknown:
        raise ValueError(f"require names unknown labels {unknown}; choose from {LABELS}")
    return tuple(require)


def _finite(name: str, value: Any, frame: RawFrame) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise DataFormatError(f"{frame.source}: {name} holds NaN or infinite values")
    return array


def build_atoms(
    frame: RawFrame, energy_unit: str | None, length_unit: str, require: Sequence[str]
) -> Atoms:
    """ASE ``Atoms`` of ``frame`` in eV/Å with its labels in a ``SinglePointCalculator``.

    Raises:
        MissingLabelsError: a label in ``require`` is absent from the frame.
        DataFormatError: undeclared units, conflicting units, non-finite values, wrong shapes.
    """
    for name in require:
        if getattr(frame, name) is None:
            why = f" ({frame.missing[name]})" if name in frame.missing else ""
            raise MissingLabelsError(
                f"{frame.source} has no {name}{why}, but {name} is required; pass "
                f"require={tuple(r for r in require if r != name)!r} to read frames "
                f"without {name}, or fix the file"
            )
    n = len(frame.numbers)
    positions = _finite("positions", frame.positions, frame)
    if positions.shape != (n, 3):
        raise DataFormatError(f"{frame.source}: positions have shape {positions.shape}, not {n}x3")
    scale_e = 1.0
    if frame.energy is not None or frame.forces is not None or frame.stress is not None:
        scale_e = ENERGY_UNITS[_resolve_energy_unit(frame, energy_unit)]
    scale_l = LENGTH_UNITS[_resolve_length_unit(frame, length_unit)]
    cell = None if frame.cell is None else _finite("cell", frame.cell, frame).reshape(3, 3)
    atoms = Atoms(
        numbers=np.asarray(frame.numbers, dtype=np.int64),
        positions=positions * scale_l,
        cell=None if cell is None else cell * scale_l,
        pbc=frame.pbc,
    )
    atoms.info.update(frame.info)
    atoms.info["source"] = frame.source
    for name, values in frame.arrays.items():
        atoms.arrays[name] = np.asarray(values)
    results = {}
    if frame.energy is not None:
        energy = _finite("energy", frame.energy, frame)
        if energy.size != 1:
            raise DataFormatError(f"{frame.source}: energy has {energy.size} values, not one")
        results["energy"] = float(energy.reshape(())) * scale_e
    if frame.forces is not None:
        forces = _finite("forces", frame.forces, frame)
        if forces.shape != (n, 3):
            raise DataFormatError(
                f"{frame.source}: forces have shape {forces.shape}, expected ({n}, 3)"
            )
        results["forces"] = forces * (scale_e / scale_l)
    if frame.stress is not None:
        stress = _finite("stress", frame.stress, frame)
        if stress.shape not in ((6,), (3, 3), (9,)):
            raise DataFormatError(f"{frame.source}: stress has shape {stress.shape}")
        if stress.size == 9:
            stress = full_3x3_to_voigt_6_stress(stress.reshape(3, 3))
        results["stress"] = stress * (scale_e / scale_l**3)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms
