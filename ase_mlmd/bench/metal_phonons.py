"""Phonons of an fcc crystal by finite displacements with phonopy, for any ASE calculator.

:func:`fcc_phonons` displaces atoms by 0.01 Å in an n×n×n repeat of the conventional cubic
cell (n chosen so every side is ≥ 10 Å and ≥ twice the calculator's cutoff), builds the force
constants and returns the band structure along the standard fcc path Γ–X–U|K–Γ–L–W–X
(Setyawan–Curtarolo, in the primitive reciprocal basis) and the total DOS on a q mesh.
:func:`frequency_mae` compares two band structures on the same path (THz).

A supercell narrower than twice the cutoff would let a displaced atom's periodic images act on
the same atoms, which aliases the force constants; it raises
:class:`~ase_mlmd.errors.PhononSupercellError`. (The rule is the one for a local potential; a
message-passing model's range is its layers × cutoff, which this check does not demand.)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from ase_mlmd.errors import PhononSupercellError
from ase_mlmd.observables.trajectory import perpendicular_widths

#: displacement amplitude, Å
PHONON_DISPLACEMENT = 0.01
#: smallest supercell side, Å (METRICS.md §6)
PHONON_MIN_WIDTH = 10.0
#: the standard fcc path, primitive reciprocal coordinates
FCC_POINTS = {
    "Γ": (0.0, 0.0, 0.0),
    "X": (0.5, 0.0, 0.5),
    "U": (0.625, 0.25, 0.625),
    "K": (0.375, 0.375, 0.75),
    "L": (0.5, 0.5, 0.5),
    "W": (0.5, 0.25, 0.75),
}
FCC_PATH = (("Γ", "X", "U"), ("K", "Γ", "L", "W", "X"))
#: phonopy's primitive matrix of a conventional fcc cell
FCC_PRIMITIVE = np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])


@dataclasses.dataclass
class PhononResult:
    """Band structure and DOS.

    Attributes:
        distances: (Q,) path coordinate, 1/Å (phonopy's, 2π not included).
        frequencies: (Q, 3·n_primitive) THz, ascending at each q.
        ticks: path coordinates of the labelled points; labels: their names.
        dos_frequencies: (F,) THz. dos: (F,) states/THz per primitive cell.
        repeat: supercell repeat n. width: its smallest side, Å.
    """

    distances: np.ndarray
    frequencies: np.ndarray
    ticks: list[float]
    labels: list[str]
    dos_frequencies: np.ndarray
    dos: np.ndarray
    repeat: int
    width: float

    def summary(self) -> dict[str, Any]:
        gamma = self.frequencies[0]
        return {
            "supercell_repeat": self.repeat,
            "supercell_width_A": self.width,
            "max_frequency_THz": float(self.frequencies.max()),
            "gamma_acoustic_THz": [float(x) for x in gamma[:3]],
            "min_frequency_THz": float(self.frequencies.min()),
        }


def calculator_cutoff(calc: BaseCalculator, atoms: Atoms) -> float | None:
    """The interaction cutoff of ``calc`` in Å: a model's ``cutoff``; ASE EMT's ``rc`` (known
    after one calculation on ``atoms``); ``rc`` of a pair calculator; None when unknown."""
    cutoff = getattr(calc, "cutoff", None)
    if isinstance(cutoff, int | float):
        return float(cutoff)
    if type(calc).__name__ == "EMT" and getattr(calc, "rc", None) is None:
        probe = atoms.copy()
        probe.calc = calc
        probe.get_potential_energy()
    rc = getattr(calc, "rc", None)
    if rc is None and isinstance(getattr(calc, "parameters", None), dict):
        rc = calc.parameters.get("rc")
    return float(rc) if isinstance(rc, int | float) else None


def phonon_repeat(crystal: Atoms, cutoff: float | None, repeat: int | None = None) -> int:
    """The supercell repeat: ``repeat`` if given (checked), else the smallest n with every side
    ≥ 10 Å and ≥ 2 × cutoff.

    Raises:
        PhononSupercellError: ``repeat`` gives a side shorter than twice the cutoff.
    """
    width = float(perpendicular_widths(crystal.cell.array).min())
    need = max(PHONON_MIN_WIDTH, 2.0 * (cutoff or 0.0))
    if repeat is None:
        return max(1, math.ceil(need / width - 1e-9))
    if repeat < 1:
        raise PhononSupercellError(f"the phonon supercell repeat must be >= 1, got {repeat}")
    if cutoff is not None and repeat * width < 2.0 * cutoff - 1e-9:
        enough = math.ceil(2.0 * cutoff / width - 1e-9)
        raise PhononSupercellError(
            f"phonon supercell {repeat}x{repeat}x{repeat} is {repeat * width:.2f} Å wide, less "
            f"than twice the calculator's cutoff (2 × {cutoff:g} = {2 * cutoff:g} Å): displaced "
            "atoms would interact with their own periodic images. Use a repeat of at least "
            f"{enough} (--phonon-supercell {enough}), or leave it out to choose it automatically"
        )
    return repeat


def _phonopy_atoms(atoms: Atoms):
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=atoms.cell.array,
        scaled_positions=atoms.get_scaled_positions(),
    )


def fcc_phonons(
    crystal: Atoms,
    calc: BaseCalculator,
    *,
    repeat: int | None = None,
    cutoff: float | None = None,
    points_per_segment: int = 41,
    mesh: int = 16,
) -> PhononResult:
    """Phonons of a relaxed conventional fcc cell (4 atoms per element site) by phonopy.

    Args:
        crystal: the relaxed conventional cubic cell.
        calc: any ASE calculator with forces.
        repeat: supercell repeat (default: automatic, see :func:`phonon_repeat`).
        cutoff: interaction cutoff, Å (default :func:`calculator_cutoff`).
        points_per_segment: q points on each straight piece of the path.
        mesh: q mesh per axis of the DOS.

    Raises:
        PhononSupercellError: ``repeat`` too small for the cutoff.
    """
    from phonopy import Phonopy
    from phonopy.phonon.band_structure import get_band_qpoints_and_path_connections

    cutoff = calculator_cutoff(calc, crystal) if cutoff is None else cutoff
    n = phonon_repeat(crystal, cutoff, repeat)
    phonon = Phonopy(
        _phonopy_atoms(crystal),
        supercell_matrix=np.eye(3, dtype=int) * n,
        primitive_matrix=FCC_PRIMITIVE,
    )
    phonon.generate_displacements(distance=PHONON_DISPLACEMENT)
    forces = []
    for cell in phonon.supercells_with_displacements:
        atoms = Atoms(
            cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True
        )
        atoms.calc = calc
        f = np.asarray(atoms.get_forces(), dtype=float)
        forces.append(f - f.mean(axis=0))  # remove the drift (net force of a finite step)
    phonon.forces = forces
    phonon.produce_force_constants()
    path = [[FCC_POINTS[p] for p in segment] for segment in FCC_PATH]
    qpoints, connections = get_band_qpoints_and_path_connections(path, npoints=points_per_segment)
    phonon.run_band_structure(qpoints, path_connections=connections)
    bands = phonon.band_structure
    distances = np.concatenate(bands.distances)
    frequencies = np.concatenate(bands.frequencies)
    pieces = [pair for segment in FCC_PATH for pair in zip(segment[:-1], segment[1:], strict=True)]
    ticks, labels = [float(distances[0])], [pieces[0][0]]
    for (start, end), dist in zip(pieces, bands.distances, strict=True):
        if start != labels[-1]:  # a jump in the path (U|K): same abscissa, two names
            labels[-1] = f"{labels[-1]}|{start}"
        ticks.append(float(dist[-1]))
        labels.append(end)
    phonon.run_mesh([mesh] * 3, is_gamma_center=True)
    phonon.run_total_dos()
    dos = phonon.total_dos
    return PhononResult(
        distances=distances,
        frequencies=frequencies,
        ticks=ticks,
        labels=labels,
        dos_frequencies=np.asarray(dos.frequency_points),
        dos=np.asarray(dos.dos),
        repeat=n,
        width=float(n * perpendicular_widths(crystal.cell.array).min()),
    )


def frequency_mae(model: PhononResult, reference: PhononResult) -> float:
    """Mean |ν_model − ν_ref| over all q points of the path and all branches, THz (both must
    be computed on the same path and q points)."""
    if model.frequencies.shape != reference.frequencies.shape:
        raise ValueError(
            f"band structures on different q points/branches: {model.frequencies.shape} vs "
            f"{reference.frequencies.shape}; compute both with the same path settings"
        )
    return float(np.mean(np.abs(model.frequencies - reference.frequencies)))


__all__ = [
    "FCC_PATH",
    "FCC_POINTS",
    "PHONON_DISPLACEMENT",
    "PhononResult",
    "calculator_cutoff",
    "fcc_phonons",
    "frequency_mae",
    "phonon_repeat",
]
