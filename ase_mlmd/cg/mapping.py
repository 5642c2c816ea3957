"""``CGMapping``: a linear map from all-atom structures to CG structures (beads), with the
force map that belongs to it.

Coordinates: bead ``I`` sits at ``R_I = Σ_i W_Ii r_i`` with ``W`` the (n_beads, n_atoms) weight
matrix, each row non-negative and summing to 1 (centre of mass: ``m_i / M_I``; centre of
geometry: ``1 / n_I``; a single atom: 1). The atoms of bead ``I`` are those with ``W_Ii > 0``.

Forces (METRICS.md §3, Noid et al. 2008): for a mapping where every atom belongs to at most one
bead, the mapped force is ``F_I = Σ_{i ∈ I} f_i`` (``M_F`` has 1 where ``W > 0``). With
``R = W r``, a potential of the bead coordinates only gives atom forces ``f = Wᵀ F`` and
``M_F Wᵀ = I`` because each row of ``W`` sums to 1 over the bead's own atoms, so the summed map
returns exactly ``F = −∂U/∂R``. An overlapping mapping (an atom in two beads, allowed only with
``allow_overlap=True``) has no such summed map: :meth:`CGMapping.apply_forces` refuses it with a
:class:`~ase_mlmd.errors.MappingError` (make it non-overlapping, e.g. by the hard assignment).

Atoms left out of every bead (backbone and Cα mappings, ``allow_unmapped=True``) contribute to
no bead coordinate and no mapped force.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.symbols import chemical_symbols
from scipy import sparse

from ase_mlmd.beads import make_cg_atoms
from ase_mlmd.cg.frames import (
    bfs_levels,
    bond_graph,
    connected_components,
    frame_energy,
    frame_forces,
    make_whole,
)
from ase_mlmd.cg.mapping_json import JSON_FORMAT
from ase_mlmd.cg.topology import CGTopology
from ase_mlmd.errors import DataFormatError, InvalidStructureError, MappingError
from ase_mlmd.fileio import atomic_write_text
from ase_mlmd.structures import is_single_structure, to_atoms

__all__ = ["CGMapping", "JSON_FORMAT"]

_WEIGHT_TOLERANCE = 1e-6
#: a mapping with more weight-matrix entries keeps ``weights`` as a sparse CSR array
DENSE_LIMIT = 4_000_000


@dataclass(frozen=True, eq=False)
class CGMapping:
    """A bead × atom coordinate map for a structure of ``n_atoms`` atoms in a fixed order.

    Attributes:
        weights: (n_beads, n_atoms) coordinate weights, rows ≥ 0 summing to 1: a dense array,
            or a SciPy sparse CSR array when it has more than :data:`DENSE_LIMIT` entries
            (big boxes); either kind may be given.
        bead_types: (n_beads,) type name of each bead (one word each).
        bead_names: (n_beads,) name of each bead (for reports; one word each).
        numbers: (n_atoms,) atomic numbers of the atoms the mapping was built for, in order.
        bonds: (n_bonds, 2) the all-atom bond graph (molecules are made whole along it and
            bead bonds follow from it).
        type_list: ordered bead type list of the CG structures (default: order of first use).
        scheme: how the mapping was built (``"heavy-atom"``, ``"girvan-newman"``, ...).
        allow_unmapped: atoms may belong to no bead (backbone, Cα mappings).
        allow_overlap: an atom may have weight in several beads (positions only).
    """

    weights: np.ndarray | sparse.csr_array
    bead_types: tuple[str, ...]
    bead_names: tuple[str, ...]
    numbers: np.ndarray
    bonds: np.ndarray
    type_list: tuple[str, ...] = ()
    scheme: str = "custom"
    allow_unmapped: bool = False
    allow_overlap: bool = False
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if sparse.issparse(self.weights):
            matrix = sparse.csr_array(self.weights, dtype=float)
        else:
            dense = np.array(self.weights, dtype=float)
            if dense.ndim != 2:
                raise MappingError(f"weights have shape {dense.shape}; expected (n_beads, n_atoms)")
            matrix = sparse.csr_array(dense)
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        matrix.sort_indices()
        set_(self, "_matrix", matrix)
        dense_ok = matrix.shape[0] * matrix.shape[1] <= DENSE_LIMIT
        set_(self, "weights", matrix.toarray() if dense_ok else matrix)
        set_(self, "numbers", np.array(self.numbers, dtype=int).reshape(-1))
        set_(self, "bonds", np.array(self.bonds, dtype=int).reshape(-1, 2))
        set_(self, "bead_types", tuple(str(t) for t in self.bead_types))
        set_(self, "bead_names", tuple(str(t) for t in self.bead_names))
        if not self.type_list:
            set_(self, "type_list", tuple(dict.fromkeys(self.bead_types)))
        set_(self, "type_list", tuple(str(t) for t in self.type_list))
        self._validate()
        set_(self, "_levels", bfs_levels(self.n_atoms, self.bonds))

    # -- checks ---------------------------------------------------------------------------
    def _validate(self) -> None:
        w = self._matrix
        n_beads, n_atoms = w.shape
        if n_atoms != len(self.numbers):
            raise MappingError(
                f"weights have shape {w.shape}, expected (n_beads, {len(self.numbers)}) for "
                f"{len(self.numbers)} atoms"
            )
        if n_beads == 0:
            raise MappingError("a mapping needs at least one bead")
        if n_beads > n_atoms:
            raise MappingError(
                f"{n_beads} beads for {n_atoms} atoms: a mapping cannot have more beads than "
                f"atoms; ask for at most {n_atoms} beads"
            )
        if len(self.bead_types) != n_beads or len(self.bead_names) != n_beads:
            raise MappingError(
                f"{n_beads} beads but {len(self.bead_types)} bead types and "
                f"{len(self.bead_names)} bead names; give one of each per bead"
            )
        bad = [t for t in self.bead_types + self.bead_names if not t or any(c.isspace() for c in t)]
        if bad:
            raise MappingError(
                f"bead types/names {bad[:5]!r} are empty or contain white space; use single "
                "words (they are written to extended XYZ and JSON)"
            )
        if not np.all(np.isfinite(w.data)) or (w.data < 0).any():
            raise MappingError("mapping weights must be finite and non-negative")
        unknown = sorted(set(self.bead_types) - set(self.type_list))
        if unknown:
            raise MappingError(f"bead types {unknown} are missing from the type list")
        empty = np.flatnonzero(np.diff(w.indptr) == 0)
        if len(empty):
            bead = int(empty[0])
            raise MappingError(f"bead {bead} ({self.bead_names[bead]}) has no atoms")
        sums = np.asarray(w.sum(axis=1)).ravel()
        off = np.flatnonzero(np.abs(sums - 1.0) > _WEIGHT_TOLERANCE)
        if len(off):
            bead = int(off[0])
            raise MappingError(
                f"the weights of bead {bead} ({self.bead_names[bead]}) sum to "
                f"{sums[bead]:.6g}, not 1; normalize each bead's weights"
            )
        count = np.bincount(w.indices, minlength=n_atoms)
        if not self.allow_unmapped and (count == 0).any():
            left = np.flatnonzero(count == 0)
            raise MappingError(
                f"atoms {left[:10].tolist()}{' ...' if len(left) > 10 else ''} belong to no "
                "bead; put every atom in a bead, or build a partial mapping "
                "(allow_unmapped=True, as backbone and Cα mappings do)"
            )
        if not self.allow_overlap and (count > 1).any():
            atom = int(np.flatnonzero(count > 1)[0])
            raise MappingError(
                f"atom {atom} ({chemical_symbols[self.numbers[atom]]}) is in beads "
                f"{self._beads_of(atom)}; each atom may belong to one bead only "
                "(allow_overlap=True maps positions but no forces)"
            )
        if len(self.bonds) and (self.bonds.min() < 0 or self.bonds.max() >= n_atoms):
            raise MappingError(f"bonds name atoms outside 0..{n_atoms - 1}")

    # -- basic properties ---------------------------------------------------------------
    @property
    def n_beads(self) -> int:
        return self._matrix.shape[0]

    @property
    def n_atoms(self) -> int:
        return self._matrix.shape[1]

    @property
    def sparse_weights(self) -> sparse.csr_array:
        """The weights as a SciPy CSR array (sorted indices, no stored zeros)."""
        return self._matrix

    @property
    def members(self) -> list[np.ndarray]:
        """The atom indices of each bead (atoms with a positive weight), ascending."""
        w = self._matrix
        return [w.indices[w.indptr[b] : w.indptr[b + 1]] for b in range(w.shape[0])]

    def _beads_of(self, atom: int) -> list[int]:
        return np.flatnonzero(self._matrix[:, [atom]].toarray().ravel() > 0).tolist()

    @property
    def is_overlapping(self) -> bool:
        return bool((np.bincount(self._matrix.indices, minlength=self.n_atoms) > 1).any())

    def _force_matrix(self) -> sparse.csr_array:
        ones = self._matrix.copy()
        ones.data[:] = 1.0
        return ones

    def force_map(self) -> np.ndarray:
        """(n_beads, n_atoms) ``M_F``: 1 for each atom of a bead, else 0 (see the module
        docstring). Raises :class:`MappingError` for an overlapping mapping."""
        if self.is_overlapping:
            atom = int(np.flatnonzero(np.bincount(self._matrix.indices) > 1)[0])
            raise MappingError(
                f"this mapping puts atom {atom} in several beads, so summing atom forces per "
                "bead is not a valid force map (it would not satisfy M_F Wᵀ = 1); map forces "
                "with a non-overlapping mapping (each atom in one bead)"
            )
        ones = self._force_matrix()
        return ones if sparse.issparse(self.weights) else ones.toarray()

    def bead_masses(self, masses: np.ndarray) -> np.ndarray:
        """(n_beads,) amu: the summed masses of each bead's atoms."""
        return self._force_matrix() @ np.asarray(masses, dtype=float)

    # -- application ----------------------------------------------------------------------
    def check_structure(self, atoms: Atoms, where: str = "the structure") -> None:
        """Refuse a structure of another atom count or element order, or with NaN positions."""
        if len(atoms) != self.n_atoms:
            raise MappingError(
                f"{where} has {len(atoms)} atoms but the mapping was built for {self.n_atoms} "
                f"({_formula(self.numbers)}); use the mapping built for this molecule/box "
                "(CGMapping.replicate for many molecules)"
            )
        differ = np.flatnonzero(atoms.numbers != self.numbers)
        if len(differ):
            i = int(differ[0])
            raise MappingError(
                f"atom {i} of {where} is {atoms.get_chemical_symbols()[i]} but the mapping "
                f"expects {chemical_symbols[self.numbers[i]]} there: the atom order differs "
                "from the structure the mapping was built for"
            )
        positions = atoms.get_positions()
        bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
        if len(bad):
            raise InvalidStructureError(
                f"{where} has non-finite positions (atom {int(bad[0])}); drop that frame"
            )

    def _bead_positions(self, atoms: Atoms) -> np.ndarray:
        positions = atoms.get_positions()
        if atoms.pbc.any():
            positions = make_whole(positions, atoms.cell.array, atoms.pbc, self._levels)
        return self._matrix @ positions

    def apply_positions(
        self, frames: Atoms | Sequence[Atoms], where: str = "frame", wrap: bool = True
    ) -> Atoms | list[Atoms]:
        """CG structures (bead positions, types, masses; cell and pbc kept) of one structure
        or a list of frames (ASE ``Atoms`` or pymatgen structures). Molecules are first made
        whole along the bond graph (minimum image); each CG molecule is then shifted by a
        lattice vector so that its centre of mass lies inside the cell, so a molecule broken
        across the boundary and the whole one map to the same CG structure. ``wrap=False``
        skips that shift: for unwrapped, continuous input (OpenMM positions) the beads are then
        plain ``W r``, continuous in time (for diffusivities)."""
        single = is_single_structure(frames)
        frames = [to_atoms(frames)] if single else [to_atoms(f) for f in frames]
        result = [
            self._map_one(
                atoms, "the structure" if single else _where(atoms, where, k), False, wrap
            )
            for k, atoms in enumerate(frames)
        ]
        return result[0] if single else result

    def apply_forces(self, forces: np.ndarray) -> np.ndarray:
        """Mapped forces ``M_F f``: (n_beads, 3) from (n_atoms, 3), or (T, n_beads, 3) from
        (T, n_atoms, 3), same unit. Refuses an overlapping mapping (see the module doc)."""
        forces = np.asarray(forces, dtype=float)
        if forces.shape[-2:] != (self.n_atoms, 3):
            raise MappingError(
                f"forces have shape {forces.shape}, expected (..., {self.n_atoms}, 3)"
            )
        self.force_map()  # refuses an overlapping mapping
        flat = np.moveaxis(forces, -2, 0).reshape(self.n_atoms, -1)
        mapped = (self._force_matrix() @ flat).reshape((self.n_beads, *forces.shape[:-2], 3))
        return np.moveaxis(mapped, 0, -2)

    def apply(
        self, frames: Atoms | Sequence[Atoms], where: str = "frame", wrap: bool = True
    ) -> list[Atoms]:
        """CG frames with mapped forces: like :meth:`apply_positions`, and every frame must
        carry forces, which are mapped into a ``SinglePointCalculator`` (forces only: the
        all-atom energy is no CG energy; it is kept in ``info["aa_energy"]``, eV)."""
        single = is_single_structure(frames)
        frames = [to_atoms(frames)] if single else [to_atoms(f) for f in frames]
        return [
            self._map_one(atoms, _where(atoms, where, k), True, wrap)
            for k, atoms in enumerate(frames)
        ]

    def _map_one(self, atoms: Atoms, where: str, with_forces: bool, wrap: bool) -> Atoms:
        self.check_structure(atoms, where)
        positions = self._bead_positions(atoms)
        masses = self.bead_masses(atoms.get_masses())
        if wrap and atoms.pbc.any():
            positions = self._shift_into_cell(positions, masses, atoms)
        cg = make_cg_atoms(
            positions, self.bead_types, self.type_list, masses, atoms.cell.array, atoms.pbc
        )
        cg.set_array("bead_name", np.array(self.bead_names))
        cg.info.update({k: v for k, v in atoms.info.items() if k in ("source", "step", "time_fs")})
        cg.info["cg_scheme"] = self.scheme
        if with_forces:
            forces = frame_forces(atoms, where)
            cg.calc = SinglePointCalculator(cg, forces=self.apply_forces(forces))
            energy = frame_energy(atoms)
            if energy is not None:
                cg.info["aa_energy"] = energy
        return cg

    def _shift_into_cell(self, positions: np.ndarray, masses: np.ndarray, atoms: Atoms):
        """Shift each CG molecule by the lattice vector that puts its centre of mass in the
        cell (periodic directions only)."""
        cell = atoms.cell.array
        labels = self._bead_molecule_labels()
        total = np.bincount(labels, weights=masses)
        centres = (
            np.stack(
                [np.bincount(labels, weights=masses * positions[:, k]) for k in range(3)], axis=1
            )
            / total[:, None]
        )
        shifts = np.floor(centres @ np.linalg.inv(cell))
        shifts[:, ~np.asarray(atoms.pbc, dtype=bool)] = 0.0
        return positions - (shifts @ cell)[labels]

    def _bead_molecule_labels(self) -> np.ndarray:
        """(n_beads,) index of the CG molecule (connected bead component) of each bead."""
        cached = getattr(self, "_molecule_labels", None)
        if cached is None:
            cached = np.empty(self.n_beads, dtype=int)
            for k, beads in enumerate(connected_components(self.n_beads, self.topology().bonds)):
                cached[beads] = k
            object.__setattr__(self, "_molecule_labels", cached)
        return cached

    # -- topology -------------------------------------------------------------------------
    def topology(self) -> CGTopology:
        """Bead bonds: beads are bonded when an atom of one is bonded to an atom of the other,
        or when they are joined through atoms that belong to no bead (a Cα trace), or when
        they share an atom (overlapping mappings)."""
        member_of: list[list[int]] = [[] for _ in range(self.n_atoms)]
        for bead, atoms in enumerate(self.members):
            for a in atoms:
                member_of[a].append(bead)
        pairs: set[tuple[int, int]] = set()
        for beads in member_of:
            pairs |= {(a, b) for a in beads for b in beads if a < b}
        unmapped = np.array([not m for m in member_of])
        for i, j in self.bonds:
            pairs |= {(min(a, b), max(a, b)) for a in member_of[i] for b in member_of[j] if a != b}
        if unmapped.any():  # beads joined through atoms of no bead (a Cα trace)
            inner = self.bonds[unmapped[self.bonds].all(axis=1)]
            relabel = -np.ones(self.n_atoms, dtype=int)
            relabel[unmapped] = np.arange(unmapped.sum())
            component_of = -np.ones(self.n_atoms, dtype=int)
            components = connected_components(int(unmapped.sum()), relabel[inner])
            for k, component in enumerate(components):
                component_of[np.flatnonzero(unmapped)[component]] = k
            touching: list[set[int]] = [set() for _ in components]
            for i, j in self.bonds:
                for a, c in ((i, j), (j, i)):
                    if component_of[a] >= 0:
                        touching[component_of[a]].update(member_of[c])
            for beads in touching:
                pairs |= {(a, b) for a in beads for b in beads if a < b}
        return CGTopology.from_bonds(self.bead_types, sorted(pairs))

    # -- many molecules -------------------------------------------------------------------
    def replicate(self, structure: Atoms | int) -> CGMapping:
        """The mapping of a box of copies of this molecule.

        Args:
            structure: an ``Atoms`` box: molecules are found by connectivity (ASE natural
                cutoffs, minimum image); each must have this mapping's elements in this
                order (atoms in increasing index order), wherever its atoms sit in the box.
                The box's own bond graph is used (molecules are made whole along it). Or an
                int ``n``: ``n`` copies stored one after the other, bonded as this molecule.
        """
        if isinstance(structure, int | np.integer):
            count = int(structure)
            if count < 1:
                raise MappingError(f"a repeat count must be ≥ 1, got {count}")
            molecules = [np.arange(self.n_atoms) + k * self.n_atoms for k in range(count)]
            n_total = count * self.n_atoms
            numbers = np.tile(self.numbers, count)
        else:
            n_total, numbers = len(structure), structure.numbers.copy()
            box_bonds = bond_graph(structure)
            molecules = connected_components(n_total, box_bonds)
            for k, molecule in enumerate(molecules):
                if len(molecule) != self.n_atoms or (numbers[molecule] != self.numbers).any():
                    raise MappingError(
                        f"molecule {k} of the box (atoms {molecule[:6].tolist()}...) is "
                        f"{_formula(numbers[molecule])} in the order "
                        f"{''.join(chemical_symbols[z] for z in numbers[molecule][:8])}..., but "
                        f"the mapping is for {_formula(self.numbers)} in the order "
                        f"{''.join(chemical_symbols[z] for z in self.numbers[:8])}...; give a "
                        "box of that molecule only, atoms of each molecule in that order"
                    )
        one = self._matrix.tocoo()
        copies = len(molecules)
        weights = sparse.csr_array(
            (
                np.tile(one.data, copies),
                (
                    np.concatenate([one.row + k * self.n_beads for k in range(copies)]),
                    np.concatenate([molecule[one.col] for molecule in molecules]),
                ),
            ),
            shape=(self.n_beads * copies, n_total),
        )
        if isinstance(structure, int | np.integer):
            bonds = [molecule[self.bonds] for molecule in molecules]
        else:
            bonds = [box_bonds]
        return CGMapping(
            weights=weights,
            bead_types=self.bead_types * len(molecules),
            bead_names=tuple(f"{n}_{k}" for k in range(len(molecules)) for n in self.bead_names),
            numbers=numbers,
            bonds=np.concatenate(bonds).reshape(-1, 2),
            type_list=self.type_list,
            scheme=self.scheme,
            allow_unmapped=self.allow_unmapped,
            allow_overlap=self.allow_overlap,
            info={**self.info, "molecules": len(molecules)},
        )

    # -- JSON (layout and checks in ase_mlmd.cg.mapping_json) ----------------------------
    def to_dict(self) -> dict:
        """JSON-ready form (see :func:`ase_mlmd.cg.mapping_json.mapping_to_dict`)."""
        from ase_mlmd.cg.mapping_json import mapping_to_dict

        return mapping_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "the mapping") -> CGMapping:
        from ase_mlmd.cg.mapping_json import mapping_from_dict

        return mapping_from_dict(cls, data, where)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The JSON text; written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike) -> CGMapping:
        """Read a mapping from a JSON file (or JSON text starting with ``{``)."""
        text = str(path_or_text)
        if text.lstrip().startswith("{"):
            where, raw = "the mapping JSON text", text
        else:
            path = Path(path_or_text)
            if not path.exists():
                raise DataFormatError(f"mapping file {path} does not exist")
            where, raw = f"mapping file {path}", path.read_text()
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as error:
            raise DataFormatError(f"{where} is not valid JSON: {error}") from error
        return cls.from_dict(data, where)


def _where(atoms: Atoms, what: str, k: int) -> str:
    """``frame 3 (traj.extxyz#3)``: the frame's place in the list and its source, if known."""
    source = atoms.info.get("source")
    return f"{what} {k}" + (f" ({source})" if source else "")


def _formula(numbers: np.ndarray) -> str:
    from ase.formula import Formula

    return str(Formula.from_list([chemical_symbols[z] for z in numbers]).format("hill"))
