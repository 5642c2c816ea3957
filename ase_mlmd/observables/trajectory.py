"""Trajectories as arrays, and the checks every observable shares.

Observables work on plain arrays: positions (T, N, 3) in Å, cells (T, 3, 3) in Å (rows are
lattice vectors, ASE's convention), atomic numbers (N,). :func:`trajectory_arrays` turns ASE
frames (a list of ``Atoms``, an ``ase.io.Trajectory``, anything iterable over ``Atoms``) into
those arrays, checking that every frame holds the same atoms in the same order.

Errors: two trajectories that are compared but hold different atoms raise
:class:`~ase_mlmd.errors.IncompatibleTrajectoriesError`; a trajectory with fewer frames than a
metric needs raises :class:`~ase_mlmd.errors.TrajectoryTooShortError` saying how many it needs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, chemical_symbols

from ase_mlmd.errors import (
    IncompatibleTrajectoriesError,
    InvalidStructureError,
    TrajectoryTooShortError,
)


@dataclass(frozen=True)
class TrajectoryArrays:
    """One trajectory as arrays.

    Attributes:
        positions: (T, N, 3) Cartesian positions, Å, float64, as stored (not wrapped).
        cells: (T, 3, 3) cells, Å, rows are lattice vectors (zeros for no cell).
        pbc: (3,) periodic flags (the same in every frame).
        numbers: (N,) atomic numbers.
        velocities: (T, N, 3) in Å per ASE time unit, or None when not requested.
    """

    positions: np.ndarray
    cells: np.ndarray
    pbc: np.ndarray
    numbers: np.ndarray
    velocities: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[1])

    @property
    def masses(self) -> np.ndarray:
        """(N,) standard atomic masses, amu."""
        return atomic_masses[self.numbers]


def trajectory_arrays(
    frames: Atoms | Iterable[Atoms], velocities: bool = False
) -> TrajectoryArrays:
    """Arrays of a trajectory given as ASE frames.

    Args:
        frames: one ``Atoms``, a list of them, or an ``ase.io.Trajectory`` (read in order; never
            sorted — time order matters).
        velocities: also collect velocities (``Atoms.get_velocities()``, Å / ASE time unit).

    Raises:
        IncompatibleTrajectoriesError: a frame holds other atoms (species or order) or other
            periodic flags than frame 0.
        TrajectoryTooShortError: there are no frames.
    """
    if isinstance(frames, Atoms):
        frames = [frames]
    positions, cells, vels = [], [], []
    numbers = pbc = None
    for k, atoms in enumerate(frames):
        if numbers is None:
            numbers, pbc = atoms.numbers.copy(), atoms.pbc.copy()
        elif not np.array_equal(atoms.numbers, numbers):
            raise IncompatibleTrajectoriesError(
                f"frame {k} holds other atoms than frame 0 ({_describe(atoms.numbers)} vs "
                f"{_describe(numbers)}, or the same elements in another order); a trajectory "
                "must keep its atoms and their order"
            )
        elif not np.array_equal(atoms.pbc, pbc):
            raise IncompatibleTrajectoriesError(
                f"frame {k} has periodic flags {atoms.pbc.tolist()}, frame 0 {pbc.tolist()}"
            )
        positions.append(atoms.positions)
        cells.append(atoms.cell.array)
        if velocities:
            vels.append(atoms.get_velocities())
    if numbers is None:
        raise TrajectoryTooShortError("the trajectory has no frames; it needs at least 1")
    return TrajectoryArrays(
        positions=np.asarray(positions, dtype=np.float64),
        cells=np.asarray(cells, dtype=np.float64),
        pbc=pbc,
        numbers=numbers,
        velocities=np.asarray(vels, dtype=np.float64) if velocities else None,
    )


def _describe(numbers: np.ndarray) -> str:
    """Composition as text, e.g. ``'H128 O64'`` (elements in order of atomic number)."""
    counts = Counter(int(z) for z in np.asarray(numbers))
    return " ".join(f"{chemical_symbols[z]}{counts[z]}" for z in sorted(counts))


def check_same_atoms(
    numbers_a: np.ndarray,
    numbers_b: np.ndarray,
    names: tuple[str, str] = ("reference", "simulation"),
) -> None:
    """Raise unless two trajectories hold the same atoms in the same order.

    Args:
        numbers_a, numbers_b: (N,) atomic numbers of the two trajectories.
        names: how the message calls them.

    Raises:
        IncompatibleTrajectoriesError: different composition, or the same composition in a
            different atom order (the message names the first atom that differs).
    """
    a, b = np.asarray(numbers_a), np.asarray(numbers_b)
    if a.shape != b.shape or Counter(a.tolist()) != Counter(b.tolist()):
        raise IncompatibleTrajectoriesError(
            f"the {names[0]} ({_describe(a)}) and the {names[1]} ({_describe(b)}) hold "
            "different atoms; compare trajectories of the same system"
        )
    if not np.array_equal(a, b):
        k = int(np.flatnonzero(a != b)[0])
        raise IncompatibleTrajectoriesError(
            f"the {names[0]} and the {names[1]} hold the same atoms in a different order (atom "
            f"{k} is {chemical_symbols[a[k]]} in the {names[0]}, {chemical_symbols[b[k]]} in the "
            f"{names[1]}); reorder one of them so that atom i is the same atom in both"
        )


def require_frames(n_frames: int, needed: int, what: str) -> None:
    """Raise :class:`TrajectoryTooShortError` when ``n_frames < needed``; ``what`` says which
    metric and why it needs that many (e.g. ``"diffusivity over 100 lags of 10 frames"``)."""
    if n_frames < needed:
        raise TrajectoryTooShortError(
            f"{what} needs at least {needed} frames, the trajectory has {n_frames}; run the "
            "simulation longer (or, if it collapsed, report the metric as unavailable)"
        )


def as_positions(positions: np.ndarray, name: str = "positions") -> np.ndarray:
    """(T, N, 3) float64 positions, Å; a single frame (N, 3) becomes T = 1.

    Raises:
        ValueError: wrong shape. InvalidStructureError: NaN or inf (names the first bad frame).
    """
    x = np.asarray(positions, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"{name} must have shape (n_frames, n_atoms, 3), got {x.shape}")
    finite = np.isfinite(x).all(axis=(1, 2))
    if not finite.all():
        k = int(np.flatnonzero(~finite)[0])
        raise InvalidStructureError(
            f"{name} of frame {k} contain NaN or inf; analyse only the frames before the "
            "simulation blew up"
        )
    return x


def as_cells(cells: np.ndarray, n_frames: int) -> np.ndarray:
    """(T, 3, 3) float64 cells from one (3, 3) cell, (T, 3, 3) cells, or (3,) / (T, 3) edge
    lengths of orthorhombic cells, Å.

    Raises:
        ValueError: wrong shape or number of frames.
        InvalidStructureError: a cell with (near) zero volume.
    """
    h = np.asarray(cells, dtype=np.float64)
    if h.shape[-1:] == (3,) and h.ndim in (1, 2) and h.shape != (3, 3):
        h = h[..., None] * np.eye(3)
    if h.shape == (3, 3):
        h = np.broadcast_to(h, (n_frames, 3, 3))
    if h.shape != (n_frames, 3, 3):
        raise ValueError(f"cells must have shape (3, 3) or ({n_frames}, 3, 3), got {h.shape}")
    volumes = np.abs(np.linalg.det(h))
    scale = np.linalg.norm(h, axis=2).prod(axis=1)
    bad = ~(volumes > 1e-9 * np.maximum(scale, 1e-300))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise InvalidStructureError(
            f"the cell of frame {k} has zero volume ({h[k].tolist()}); a periodic observable "
            "needs three independent lattice vectors"
        )
    return h


def perpendicular_widths(cells: np.ndarray) -> np.ndarray:
    """(..., 3) distances between opposite faces of each cell, Å (cells: (..., 3, 3)).

    Minimum image is exact for every distance below half the smallest width.
    """
    reciprocal = np.linalg.inv(cells)  # columns are reciprocal vectors (without 2π)
    return 1.0 / np.linalg.norm(reciprocal, axis=-2)


def check_minimum_image(cells: np.ndarray, r_max: float, what: str) -> None:
    """Raise :class:`InvalidStructureError` when ``r_max`` exceeds half the smallest
    perpendicular width of any cell (T, 3, 3): minimum image would then miss pairs."""
    widths = perpendicular_widths(cells).min(axis=-1)
    k = int(np.argmin(widths))
    if r_max > 0.5 * widths[k] * (1 + 1e-12):
        raise InvalidStructureError(
            f"{what}: r_max = {r_max:g} Å exceeds half the smallest perpendicular width of the "
            f"cell of frame {k} ({0.5 * widths[k]:.4g} Å); minimum image would miss the second "
            "image of some pairs. Lower r_max, or analyse a repeated cell (atoms.repeat)"
        )


def masses_of(numbers: np.ndarray | None, masses: np.ndarray | None, n_atoms: int) -> np.ndarray:
    """(N,) masses, amu: ``masses`` if given, else standard masses of ``numbers``, else ones."""
    if masses is not None:
        m = np.asarray(masses, dtype=np.float64)
    elif numbers is not None:
        m = atomic_masses[np.asarray(numbers)]
    else:
        m = np.ones(n_atoms)
    if m.shape != (n_atoms,):
        raise ValueError(f"masses must have shape ({n_atoms},), got {m.shape}")
    return m


def unwrap_positions(positions: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(T, N, 3) continuous positions from positions wrapped into a periodic cell, Å.

    Each frame-to-frame displacement is taken as its minimum image in that frame's cell
    (fractional coordinates, so any triclinic cell works) and accumulated. Valid while no atom
    moves more than half a cell width between saved frames.

    Args:
        positions: (T, N, 3) Å. cells: (3, 3) or (T, 3, 3) Å.
    """
    x = as_positions(positions)
    h = as_cells(cells, len(x))
    step = np.diff(x, axis=0)  # (T-1, N, 3)
    inverse = np.linalg.inv(h[1:])
    frac = np.einsum("tnj,tjk->tnk", step, inverse)
    frac -= np.rint(frac)
    step = np.einsum("tnk,tkj->tnj", frac, h[1:])
    out = np.empty_like(x)
    out[0] = x[0]
    np.cumsum(step, axis=0, out=out[1:])
    out[1:] += x[0]
    return out


def resolve_trajectory(
    trajectory: np.ndarray | Atoms | Iterable[Atoms],
    cells: np.ndarray | None = None,
    numbers: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(positions (T, N, 3), cells (T, 3, 3) or None, numbers (N,) or None) from either arrays
    or ASE frames.

    For frames, ``cells`` and ``numbers`` default to the frames' own; their cells count only
    when all three axes are periodic (``None`` otherwise). Explicit arguments win.
    """
    if not isinstance(trajectory, np.ndarray):
        items = [trajectory] if isinstance(trajectory, Atoms) else list(trajectory)
        if items and all(isinstance(a, Atoms) for a in items):
            arrays = trajectory_arrays(items)
            if cells is None and arrays.pbc.all():
                cells = arrays.cells
            if numbers is None:
                numbers = arrays.numbers
            trajectory = arrays.positions
        else:
            trajectory = np.asarray(items, dtype=np.float64)
    positions = as_positions(trajectory)
    if cells is not None:
        cells = as_cells(cells, len(positions))
    if numbers is not None:
        numbers = np.asarray(numbers)
        if numbers.shape != (positions.shape[1],):
            raise ValueError(
                f"numbers must have shape ({positions.shape[1]},) for {positions.shape[1]} "
                f"atoms, got {numbers.shape}"
            )
    return positions, cells, numbers
