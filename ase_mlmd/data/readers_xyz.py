"""Plain multi-frame XYZ with forces as extra columns (the sGDML / schnetpack test layout).

Each frame is::

    N
    <comment: the energy, either a bare number or energy=<number>>
    Sym  x  y  z  [fx  fy  fz]      (N lines)

The file carries no units: the caller names the energy unit (``energy_unit="kcal/mol"`` for
MD17-derived files). Lines with four columns give a frame without forces; seven give forces.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ase_mlmd.data.readers_common import RawFrame, numbers_from_symbols
from ase_mlmd.errors import DataFormatError

_KEY_VALUE = re.compile(r"""(\w+)\s*=\s*("[^"]*"|'[^']*'|\S+)""")
_ENERGY_KEYS = ("energy", "e", "total_energy")
_UNIT_KEYS = ("energy_unit", "energy_units", "units")
_HINT = (
    '; plain XYZ files carry no units (energy_unit="kcal/mol" for MD17/sGDML-derived files, '
    '"eV" for most DFT codes)'
)


def _parse_comment(comment: str, where: str) -> tuple[float | None, str | None]:
    """Energy and declared energy unit found on a comment line (either may be None)."""
    text = comment.strip()
    if not text:
        return None, None
    try:
        return float(text), None
    except ValueError:
        pass
    energy, unit = None, None
    for key, value in _KEY_VALUE.findall(text):
        value = value.strip("\"'")
        if key.lower() in _ENERGY_KEYS:
            try:
                energy = float(value)
            except ValueError as err:
                raise DataFormatError(f"{where}: energy {value!r} is not a number") from err
        elif key.lower() in _UNIT_KEYS:
            unit = value
    return energy, unit


def _parse_atoms(lines: list[str], first_line: int, where: str) -> tuple[list[str], np.ndarray]:
    """Symbols and the (n, 3) or (n, 6) numeric columns of one frame's atom lines."""
    rows = [line.split() for line in lines]
    widths = {len(row) for row in rows}
    if len(widths) != 1 or widths.pop() not in (4, 7):
        for k, row in enumerate(rows):
            if len(row) not in (4, 7) or len(row) != len(rows[0]):
                raise DataFormatError(
                    f"{where} (line {first_line + k}): expected 'symbol x y z' or "
                    f"'symbol x y z fx fy fz' consistently, found {len(row)} columns: "
                    f"{lines[k].strip()!r}"
                )
    symbols = [row[0] for row in rows]
    try:
        values = np.array([row[1:] for row in rows], dtype=np.float64)
    except ValueError:
        for k, row in enumerate(rows):
            try:
                np.array(row[1:], dtype=np.float64)
            except ValueError as err:
                raise DataFormatError(
                    f"{where} (line {first_line + k}): non-numeric coordinates or forces: "
                    f"{lines[k].strip()!r}"
                ) from err
        raise
    return symbols, values


def read_plain_xyz(path: Path) -> list[RawFrame]:
    """All frames of a plain XYZ file with optional force columns, in the file's units.

    Raises:
        DataFormatError: a bad atom count, a frame cut short, a malformed or non-numeric line;
            the message names the file, frame and line (1-based).
    """
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path} is not a text file (XYZ expected)") from err
    frames: list[RawFrame] = []
    pos = 0
    while pos < len(lines):
        if not lines[pos].strip():
            pos += 1
            continue
        index = len(frames)
        where = f"{path}#{index}"
        try:
            n_atoms = int(lines[pos].strip())
        except ValueError as err:
            raise DataFormatError(
                f"{where} (line {pos + 1}): expected the number of atoms, found "
                f"{lines[pos].strip()!r}; the file is corrupt or not plain XYZ"
            ) from err
        if n_atoms <= 0:
            raise DataFormatError(f"{where} (line {pos + 1}): atom count {n_atoms} is not > 0")
        block = lines[pos + 2 : pos + 2 + n_atoms]
        if pos + 1 >= len(lines) or len(block) < n_atoms:
            found = max(0, len(lines) - pos - 2)
            raise DataFormatError(
                f"{where}: the file ends inside this frame (line {len(lines)}): {n_atoms} atom "
                f"lines announced at line {pos + 1}, {found} found; the file is truncated"
            )
        energy, unit = _parse_comment(lines[pos + 1], f"{where} (line {pos + 2})")
        symbols, values = _parse_atoms(block, pos + 3, where)
        frames.append(
            RawFrame(
                numbers=numbers_from_symbols(symbols, where),
                positions=values[:, :3],
                source=where,
                energy=energy,
                forces=values[:, 3:] if values.shape[1] == 6 else None,
                energy_unit=unit,
                default_energy_unit=None,
                hint=_HINT,
            )
        )
        pos += 2 + n_atoms
    if not frames:
        raise DataFormatError(f"{path} holds no frames (empty file)")
    return frames
