"""CG data: mapped coordinates and forces as CG ``Atoms`` frames (see :mod:`ase_mlmd.cg`).

Two sources:

* a folder (or file prefix) of numpy arrays ``*coordinates*.npy`` (T, n_beads, 3) and
  ``*forces*.npy`` (T, n_beads, 3), in units that must be named explicitly (``units=``, the
  CLI's ``--units``): coordinates in Å, forces in ``units`` per Å, converted here to eV/Å;
* extxyz files of CG frames (bead types in ``arrays["bead_type"]``, ``info["bead_types"]``)
  with forces, e.g. written by ``ase-mlmd cg map``; those are in ASE units (eV/Å) already.

Forces go into a ``SinglePointCalculator`` (forces only; the data have no energies). Bead types
and masses of a numpy data set come from ``bead_types``/``masses`` or, for the alanine
dipeptide backbone data (``ala2_*.npy``, 5 beads), from :data:`ALA2_BACKBONE`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from ase_mlmd.beads import is_cg_atoms, make_cg_atoms
from ase_mlmd.errors import DataFormatError, MissingLabelsError

#: eV per unit, for the force units of foreign CG data (forces are unit / Å)
FORCE_ENERGY_UNITS = {
    "eV": 1.0,
    "meV": 1e-3,
    "kcal/mol": units.kcal / units.mol,
    "kJ/mol": units.kJ / units.mol,
}


@dataclass(frozen=True)
class BeadSpec:
    """Bead types and masses of a CG data set.

    Attributes:
        bead_types: (n_beads,) type of each bead.
        masses: (n_beads,) bead masses, amu.
        note: how the masses were obtained (recorded in provenance).
    """

    bead_types: tuple[str, ...]
    masses: tuple[float, ...]
    note: str = ""

    @property
    def type_list(self) -> list[str]:
        """Types in order of first appearance."""
        return list(dict.fromkeys(self.bead_types))


#: alanine dipeptide backbone beads C, N, CA, C, N (ACE C, ALA N, CA, C, NME N). Each bead's
#: mass is the summed mass of its group: ACE CH3-C=O (43.045), N-H (15.015), CA-HA + CB-H3
#: (28.054), C=O (28.010), NME N-H + CH3 (30.050); total 144.17 amu = the molecule's mass.
ALA2_BACKBONE = BeadSpec(
    bead_types=("C", "N", "CA", "C", "N"),
    masses=(43.045, 15.015, 28.054, 28.010, 30.050),
    note="ala2 backbone groups: ACE CH3C=O, NH, CA(H)CH3, C=O, NH-CH3 (summed atom masses)",
)


def _npy_pair(path: Path) -> tuple[Path, Path, str]:
    """The coordinates and forces files of a folder or prefix, and the data set's stem."""
    if path.is_dir():
        coords = sorted(path.glob("*coordinates*.npy"))
        forces = sorted(path.glob("*forces*.npy"))
        if len(coords) != 1 or len(forces) != 1:
            raise DataFormatError(
                f"{path} must hold exactly one *coordinates*.npy and one *forces*.npy file "
                f"(found {len(coords)} and {len(forces)})"
            )
        return coords[0], forces[0], coords[0].name.split("_coordinates")[0]
    raise DataFormatError(
        f"{path} is not a folder of *coordinates*.npy/*forces*.npy arrays nor an extxyz file"
    )


def read_cg_data(
    path: str | os.PathLike,
    units_name: str | None = None,
    beads: BeadSpec | None = None,
    stride: int = 1,
) -> list[Atoms]:
    """CG frames with forces (eV/Å) from numpy arrays or an extxyz file.

    Args:
        path: a folder with ``*coordinates*.npy`` and ``*forces*.npy``, or an extxyz file.
        units_name: energy unit of the numpy forces (``"kcal/mol"`` → forces in kcal/mol/Å);
            required for numpy data. For extxyz only ``"eV"`` (ASE units) or None.
        beads: bead types and masses of numpy data (default: :data:`ALA2_BACKBONE` for
            ``ala2_*`` files with 5 beads).
        stride: keep every ``stride``-th frame (time order kept).

    Raises:
        DataFormatError: no units for numpy data, unknown units, inconsistent arrays, missing
            bead types, or frames that are not CG frames.
        MissingLabelsError: a frame without forces (names the file and the frame).
    """
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"CG data {path} does not exist")
    if stride < 1:
        raise DataFormatError(f"stride must be >= 1, got {stride}")
    if path.is_file():
        return _read_cg_extxyz(path, units_name)[::stride]
    coords_file, forces_file, stem = _npy_pair(path)
    if units_name is None:
        raise DataFormatError(
            f"{path}: numpy CG data carry no units; name the energy unit of the forces "
            f"explicitly with --units (one of {sorted(FORCE_ENERGY_UNITS)}), e.g. --units "
            "kcal/mol for forces in kcal/mol/Å (python: units_name='kcal/mol')"
        )
    if units_name not in FORCE_ENERGY_UNITS:
        raise DataFormatError(
            f"unknown unit {units_name!r} for --units; use one of {sorted(FORCE_ENERGY_UNITS)}"
        )
    coords = np.load(coords_file, allow_pickle=False)
    forces = np.load(forces_file, allow_pickle=False)
    if coords.ndim != 3 or coords.shape[2] != 3 or coords.shape != forces.shape:
        raise DataFormatError(
            f"{coords_file.name} {coords.shape} and {forces_file.name} {forces.shape} must both "
            "be (frames, beads, 3)"
        )
    n_beads = coords.shape[1]
    if beads is None:
        if stem.startswith("ala2") and n_beads == len(ALA2_BACKBONE.bead_types):
            beads = ALA2_BACKBONE
        else:
            raise DataFormatError(
                f"{path}: bead types and masses of these {n_beads}-bead data are unknown; pass "
                "beads=BeadSpec(bead_types=..., masses=...)"
            )
    if len(beads.bead_types) != n_beads or len(beads.masses) != n_beads:
        raise DataFormatError(
            f"{path} has {n_beads} beads but the bead spec lists {len(beads.bead_types)} types "
            f"and {len(beads.masses)} masses"
        )
    bad = np.flatnonzero(~np.isfinite(forces).all(axis=(1, 2)))
    if bad.size:
        raise MissingLabelsError(
            f"{forces_file}: frame {int(bad[0])} has non-finite forces ({bad.size} such frames)"
        )
    scale = FORCE_ENERGY_UNITS[units_name]
    type_list = beads.type_list
    frames = []
    for k in range(0, len(coords), stride):
        atoms = make_cg_atoms(coords[k], beads.bead_types, type_list, beads.masses)
        atoms.calc = SinglePointCalculator(atoms, forces=forces[k].astype(np.float64) * scale)
        atoms.info["source"] = f"{coords_file.name}[{k}]"
        frames.append(atoms)
    return frames


def _read_cg_extxyz(path: Path, units_name: str | None) -> list[Atoms]:
    from ase.io import read

    if units_name not in (None, "eV"):
        raise DataFormatError(
            f"{path}: extxyz CG frames are in ASE units (eV/Å); leave --units out or give eV"
        )
    try:
        frames = read(path, index=":")
    except Exception as err:  # ase raises many types for unreadable files
        raise DataFormatError(f"cannot read {path} as CG frames: {err}") from None
    for k, atoms in enumerate(frames):
        if not is_cg_atoms(atoms):
            raise DataFormatError(
                f"{path} frame {k} has no bead types (arrays['bead_type']); it is not a CG "
                "frame — map all-atom frames with ase-mlmd cg map first"
            )
        atoms.info["source"] = f"{path.name}[{k}]"
    return frames


def require_forces(frames: Sequence[Atoms], source: str = "") -> np.ndarray:
    """(T, n_beads, 3) forces of every frame, eV/Å.

    Raises:
        MissingLabelsError: a frame has no forces (names the file and frame).
    """
    out = []
    for k, atoms in enumerate(frames):
        forces = None
        if atoms.calc is not None:
            forces = atoms.calc.results.get("forces")
        if forces is None:
            where = atoms.info.get("source") or f"{source} frame {k}"
            raise MissingLabelsError(
                f"{where} has no forces; force matching needs mapped forces on every frame "
                "(map all-atom frames that carry forces)"
            )
        out.append(np.asarray(forces, dtype=np.float64))
    return np.stack(out)


def positions_of(frames: Sequence[Atoms]) -> np.ndarray:
    """(T, n_beads, 3) bead positions, Å."""
    return np.stack([a.positions for a in frames])
