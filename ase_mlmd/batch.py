"""The batch of systems that every energy model receives.

A batch concatenates the atoms of B systems (which may differ in size) and carries the full
neighbor list at the model's cutoff. Conventions follow ASE: positions in Å, cells with lattice
vectors as rows, ``r_ij = x_j - x_i + cell_shifts_ij @ cell``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms

from ase_mlmd.errors import InvalidStructureError
from ase_mlmd.neighbors import system_neighbors
from ase_mlmd.structures import to_atoms


class SystemSizes:
    """Sizes of a batch of systems, for classes with ``positions`` (N, 3), ``cell`` (B, 3, 3)
    and ``system_idx`` (N,) fields (:class:`AtomsBatch`, the MD state)."""

    positions: torch.Tensor
    cell: torch.Tensor
    system_idx: torch.Tensor

    @property
    def n_systems(self) -> int:
        return int(self.cell.shape[0])

    @property
    def n_atoms(self) -> torch.Tensor:
        """(B,) number of atoms per system."""
        return torch.bincount(self.system_idx, minlength=self.n_systems)

    @property
    def device(self) -> torch.device:
        return self.positions.device

    @property
    def dtype(self) -> torch.dtype:
        return self.positions.dtype


def cartesian_shifts(
    cell_shifts: torch.Tensor, cell: torch.Tensor, edge_system: torch.Tensor
) -> torch.Tensor:
    """(E, 3) Cartesian image shifts ``cell_shifts @ cell[edge_system]``, Å.

    Args:
        cell_shifts: (E, 3) integer image shifts.
        cell: (B, 3, 3) cells.
        edge_system: (E,) system of each edge.
    """
    shifts = cell_shifts.to(cell.dtype)
    # index_select (backward: index_add) is much faster than advanced indexing on CPU
    if cell.shape[0] == 1:
        return shifts @ cell[0]
    return torch.bmm(shifts.unsqueeze(1), cell.index_select(0, edge_system)).squeeze(1)


@dataclasses.dataclass
class AtomsBatch(SystemSizes):
    """B systems with N atoms in total and E directed edges.

    Attributes:
        positions: (N, 3) Å.
        numbers: (N,) int64 atomic numbers.
        cell: (B, 3, 3) Å, rows are lattice vectors.
        pbc: (B, 3) bool.
        system_idx: (N,) int64, system of each atom; atoms of a system are contiguous.
        edge_index: (2, E) int64, rows (centre i, neighbor j); every pair appears both ways.
        cell_shifts: (E, 3) int64 image shifts.
    """

    positions: torch.Tensor
    numbers: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    system_idx: torch.Tensor
    edge_index: torch.Tensor
    cell_shifts: torch.Tensor

    def edge_vectors(self) -> torch.Tensor:
        """(E, 3) vectors r_ij = x_j - x_i + shift @ cell, differentiable in positions and cell."""
        i, j = self.edge_index
        shift_vectors = cartesian_shifts(self.cell_shifts, self.cell, self.system_idx[i])
        positions = self.positions
        return positions.index_select(0, j) - positions.index_select(0, i) + shift_vectors

    def replace(self, **changes: Any) -> AtomsBatch:
        """A shallow copy with some fields replaced."""
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Move to ``device`` and cast floating fields (positions, cell) to ``dtype``."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value.is_floating_point():
                out[field.name] = value.to(device=device, dtype=dtype)
            else:
                out[field.name] = value.to(device=device)
        return AtomsBatch(**out)

    def volumes(self) -> torch.Tensor:
        """(B,) cell volumes, Å^3 (absolute value of the determinant)."""
        return torch.linalg.det(self.cell).abs()

    def split_per_system(self, per_atom: torch.Tensor) -> list[torch.Tensor]:
        """Split an (N, ...) per-atom tensor into B per-system tensors."""
        return list(torch.split(per_atom, self.n_atoms.tolist()))


#: a periodic cell is degenerate when its thinnest principal extent is below this fraction of its
#: widest one (parallel or coplanar vectors, up to rounding); no physical cell comes close
DEGENERATE_CELL_TOLERANCE = 1e-6


def check_structure(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, where: str) -> None:
    """Raise :class:`InvalidStructureError` for coordinates or cells that cannot be evaluated.

    Args:
        positions: (n, 3) Å.
        cell: (3, 3) Å.
        pbc: (3,) bool.
        where: a name for the structure, used in the message (e.g. "structure 3").
    """
    bad = ~np.isfinite(positions).all(axis=1)
    if bad.any():
        idx = np.flatnonzero(bad)[:5].tolist()
        raise InvalidStructureError(
            f"{where}: positions of atoms {idx} are NaN or infinite; "
            "check the input file or the step that produced these coordinates"
        )
    pbc = np.asarray(pbc, dtype=bool)
    if not pbc.any():
        return
    if not np.isfinite(np.asarray(cell)[pbc]).all():
        raise InvalidStructureError(
            f"{where}: the cell contains NaN or infinite entries; fix atoms.cell"
        )
    periodic_vectors = np.asarray(cell, dtype=np.float64)[pbc]
    # The singular values of the periodic vectors measure the cell's extent along its principal
    # directions; each is accurate to ~1e-16 of the largest, so the relative test below also
    # catches parallel or coplanar vectors whose determinant rounds to a tiny non-zero value.
    singular = np.linalg.svd(periodic_vectors, compute_uv=False)
    if singular[-1] <= DEGENERATE_CELL_TOLERANCE * singular[0] or singular[-1] < 1e-8:
        raise InvalidStructureError(
            f"{where}: pbc={pbc.tolist()} but the periodic cell vectors span zero "
            f"{['length', 'area', 'volume'][pbc.sum() - 1]} (cell={np.asarray(cell).tolist()}); "
            "set a proper cell with atoms.set_cell(...) or turn periodicity off with "
            "atoms.pbc = False"
        )


#: more neighbours (periodic images included) per atom within the cutoff than any physical
#: structure has (a dense solid at a 10 Å cutoff has a few hundred): a cell this thin (nearly
#: parallel vectors) is refused, because its neighbour list would not finish
MAX_NEIGHBORS_PER_ATOM = 100_000


def check_cutoff_images(
    n_atoms: int, cell: np.ndarray, pbc: np.ndarray, cutoff: float, where: str
) -> None:
    """Raise :class:`InvalidStructureError` when the periodic cell is so thin that each atom
    would see more than :data:`MAX_NEIGHBORS_PER_ATOM` atoms and periodic images within
    ``cutoff`` (Å): about ``n_atoms`` × (the cutoff's length/area/volume in the periodic
    directions) / (the cell's length/area/volume). A nearly degenerate cell passes
    :func:`check_structure` but would otherwise hang the neighbour list."""
    pbc = np.asarray(pbc, dtype=bool)
    dims = int(pbc.sum())
    if dims == 0 or n_atoms == 0 or not cutoff > 0:
        return
    vectors = np.asarray(cell, dtype=np.float64)[pbc]
    measure = float(np.sqrt(abs(np.linalg.det(vectors @ vectors.T))))
    ball = {1: 2.0 * cutoff, 2: np.pi * cutoff**2, 3: 4.0 / 3.0 * np.pi * cutoff**3}[dims]
    expected = n_atoms * ball / measure if measure > 0 else np.inf
    if expected > MAX_NEIGHBORS_PER_ATOM:
        unit = ["Å", "Å^2", "Å^3"][dims - 1]
        raise InvalidStructureError(
            f"{where}: the periodic cell is so thin that each atom would have about "
            f"{expected:.3g} neighbours (periodic images included) within the {cutoff:g} Å "
            f"cutoff ({n_atoms} atoms in {measure:.3g} {unit}); check the cell for nearly "
            f"parallel vectors (cell={np.asarray(cell).tolist()})"
        )


def model_cell(atoms: Atoms) -> np.ndarray:
    """The cell as models see it: a non-finite vector along a non-periodic axis (which plays no
    role) becomes zero, so that it cannot turn edge vectors into NaN."""
    cell = atoms.cell.array.copy()
    unused = ~np.asarray(atoms.pbc, dtype=bool) & ~np.isfinite(cell).all(axis=1)
    cell[unused] = 0.0
    return cell


def batch_from_atoms(
    structures: Sequence[Any],
    cutoff: float,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> AtomsBatch:
    """Build a batch with its neighbor list from ASE Atoms (or pymatgen structures).

    Args:
        structures: B structures; sizes may differ.
        cutoff: neighbor-list cutoff, Å.
        device: where the batch lives.
        dtype: floating dtype of positions and cell.

    Raises:
        InvalidStructureError: NaN/inf coordinates or a degenerate periodic cell.
    """
    atoms_list: list[Atoms] = [to_atoms(s) for s in structures]
    if not atoms_list:
        raise InvalidStructureError("no structures given; pass at least one ase.Atoms")
    for k, atoms in enumerate(atoms_list):
        where = "structure" if len(atoms_list) == 1 else f"structure {k}"
        if len(atoms) == 0:
            raise InvalidStructureError(f"{where} has no atoms")
        check_structure(atoms.positions, atoms.cell.array, atoms.pbc, where)
        check_cutoff_images(len(atoms), atoms.cell.array, atoms.pbc, cutoff, where)
    cells = [model_cell(a) for a in atoms_list]
    sizes = [len(a) for a in atoms_list]
    edges, shifts = [], []
    offset = 0
    for atoms, cell, size in zip(atoms_list, cells, sizes, strict=True):
        e, s = system_neighbors(atoms.positions, cell, atoms.pbc, cutoff)
        edges.append(e + offset)
        shifts.append(s)
        offset += size
    batch = AtomsBatch(
        positions=torch.from_numpy(np.concatenate([a.positions for a in atoms_list])),
        numbers=torch.from_numpy(np.concatenate([a.numbers for a in atoms_list]).astype(np.int64)),
        cell=torch.from_numpy(np.stack(cells)),
        pbc=torch.from_numpy(np.stack([a.pbc for a in atoms_list])),
        system_idx=torch.from_numpy(np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)),
        edge_index=torch.from_numpy(np.concatenate(edges, axis=1)),
        cell_shifts=torch.from_numpy(np.concatenate(shifts)),
    )
    if torch.device(device).type == "cpu" and dtype == torch.float64:
        return batch
    return batch.to(device=device, dtype=dtype)
