"""Reader of PLUMED grid files: the free-energy surface that ``plumed sum_hills`` writes
(e.g. the alanine-dipeptide reference ``fes.dat`` of MDsim).

Format: header lines ``#! FIELDS cv1 cv2 <free energy> [derivatives...]`` and ``#! SET
min_cv1 / max_cv1 / nbins_cv1 / periodic_cv1 ...``, then one row per grid point with the
first collective variable varying fastest, blocks separated by blank lines. Values are as
PLUMED wrote them: angles in radians, free energy in PLUMED's energy unit (kJ/mol by default;
the file does not say, so kJ/mol is assumed as for MDsim's file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ase_mlmd.errors import DataFormatError


def read_plumed_fes(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a 2-D PLUMED ``sum_hills`` free-energy grid.

    Args:
        path: the grid file (e.g. ``fes.dat``).

    Returns:
        φ (n₁,) and ψ (n₂,) grid values of the two collective variables (radians for angles),
        and F (n₁, n₂) with F[i, j] the free energy at (φᵢ, ψⱼ), kJ/mol, as in the file (not
        shifted).

    Raises:
        DataFormatError: not a 2-D PLUMED grid, a missing or short row, or a grid that is not
            the regular one its header declares (the message names the file).
    """
    path = Path(path)
    fields: list[str] = []
    settings: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.startswith("#!"):
                    continue
                words = line[2:].split()
                if words[:1] == ["FIELDS"]:
                    fields = words[1:]
                elif words[:1] == ["SET"] and len(words) >= 3:
                    settings[words[1]] = words[2]
        rows = np.loadtxt(path, comments="#", ndmin=2)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataFormatError(f"{path}: cannot read a PLUMED grid ({error})") from error
    if len(fields) < 3:
        raise DataFormatError(
            f"{path}: no '#! FIELDS cv1 cv2 free-energy ...' header; not a 2-D PLUMED grid"
        )
    names = fields[:2]
    try:
        shape = tuple(int(settings[f"nbins_{name}"]) for name in names)
    except (KeyError, ValueError) as error:
        raise DataFormatError(
            f"{path}: the header lacks '#! SET nbins_{names[0]}' / 'nbins_{names[1]}'"
        ) from error
    if rows.shape[1] < 3 or rows.shape[0] != shape[0] * shape[1]:
        raise DataFormatError(
            f"{path}: expected {shape[0]} × {shape[1]} = {shape[0] * shape[1]} rows of at least "
            f"3 columns ({' '.join(fields)}), found {rows.shape[0]} rows of {rows.shape[1]}"
        )
    # row order: first variable fastest -> reshape (n₂, n₁) and transpose to F[i₁, i₂]
    first = rows[:, 0].reshape(shape[1], shape[0])
    second = rows[:, 1].reshape(shape[1], shape[0])
    free = rows[:, 2].reshape(shape[1], shape[0]).T
    phi, psi = first[0], second[:, 0]
    regular = np.allclose(first, phi[None, :]) and np.allclose(second, psi[:, None])
    if not regular or not (np.all(np.diff(phi) > 0) and np.all(np.diff(psi) > 0)):
        raise DataFormatError(
            f"{path}: the rows do not form the regular {shape[0]} × {shape[1]} grid with "
            f"{names[0]} varying fastest"
        )
    if not np.isfinite(free).all():
        raise DataFormatError(f"{path}: the free-energy column has NaN or inf values")
    return phi.copy(), psi.copy(), np.ascontiguousarray(free)
