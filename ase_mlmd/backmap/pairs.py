"""(CG, all-atom) training pairs for backmapping, built from all-atom frames and a mapping.

Bead positions are ``R = W r`` with the mapping's weights ``W`` (n_beads, n_atoms);
``centre="geometry"`` replaces each bead's weights by ``1 / n_I`` over its atoms (the centre of
geometry, METRICS.md §4, as CGVAE) whatever the mapping stored (the Girvan–Newman and learned
schemes already use it; the heavy-atom scheme uses centres of mass).

Every atom needs a bead to be decoded from: atoms of a bead belong to it; atoms of no bead (Cα,
backbone mappings) are assigned to the bead reached first along the bond graph
(:func:`assignment_of`). Overlapping mappings are refused.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from ase_mlmd.beads import make_cg_atoms
from ase_mlmd.cg.frames import bfs_levels, make_whole
from ase_mlmd.cg.mapping import CGMapping
from ase_mlmd.errors import BackmapError, DataFormatError, MappingError

__all__ = ["BackmapPairs", "assignment_of", "geometric_mapping"]

CENTRES = ("mapping", "geometry")


def geometric_mapping(mapping: CGMapping) -> CGMapping:
    """``mapping`` with each bead at the centre of geometry of its atoms (weights ``1/n_I``)."""
    weights = np.zeros((mapping.n_beads, mapping.n_atoms))
    for bead, members in enumerate(mapping.members):
        weights[bead, members] = 1.0 / len(members)
    return dataclasses.replace(mapping, weights=weights)


def assignment_of(mapping: CGMapping) -> np.ndarray:
    """(n_atoms,) the bead each atom is decoded from: its bead, or for an atom of no bead the
    bead reached in the fewest bonds (ties: lower bead index).

    Raises:
        MappingError: an overlapping mapping, or an atom not connected to any bead.
    """
    if mapping.is_overlapping:
        raise MappingError(
            "backmapping needs each atom in at most one bead; this mapping puts atoms in "
            "several beads (build it without overlap)"
        )
    owner = np.full(mapping.n_atoms, -1)
    for bead, members in enumerate(mapping.members):
        owner[members] = bead
    neighbors: list[list[int]] = [[] for _ in range(mapping.n_atoms)]
    for i, j in mapping.bonds:
        neighbors[int(i)].append(int(j))
        neighbors[int(j)].append(int(i))
    queue = deque(np.flatnonzero(owner >= 0).tolist())
    while queue:  # breadth-first from all beads at once: each free atom takes the nearest
        atom = queue.popleft()
        for other in sorted(neighbors[atom]):
            if owner[other] < 0:
                owner[other] = owner[atom]
                queue.append(other)
    if (owner < 0).any():
        atom = int(np.flatnonzero(owner < 0)[0])
        raise MappingError(
            f"atom {atom} belongs to no bead and is not bonded (through other atoms) to any "
            "bead, so no bead can place it; put it in a bead"
        )
    return owner


@dataclass(frozen=True, eq=False)
class BackmapPairs:
    """Paired CG and all-atom coordinates of one molecule.

    Attributes:
        mapping: the mapping (already with geometric centres if ``centre="geometry"``).
        cg: (F, n_beads, 3) bead positions, Å (``W r`` of each frame).
        aa: (F, n_atoms, 3) all-atom positions, Å (molecules made whole for periodic frames).
        assignment: (n_atoms,) the bead each atom is decoded from (:func:`assignment_of`).
    """

    mapping: CGMapping
    cg: np.ndarray
    aa: np.ndarray
    assignment: np.ndarray

    @classmethod
    def from_frames(
        cls,
        frames: Sequence[Atoms],
        mapping: CGMapping,
        centre: str = "mapping",
        cg_frames: Sequence[Atoms] | None = None,
    ) -> BackmapPairs:
        """Pairs of all-atom ``frames`` (time order kept) and their CG frames.

        Args:
            frames: all-atom frames of the mapping's molecule (elements in its atom order).
            mapping: the CG mapping.
            centre: ``"mapping"`` (the mapping's weights) or ``"geometry"`` (centre of geometry).
            cg_frames: CG frames to pair with instead of mapping ``frames`` (checked: one per
                all-atom frame, the mapping's bead count and bead types in order).

        Raises:
            MappingError: a frame's atom count or element order differs from the mapping's.
            InvalidStructureError: non-finite coordinates.
            BackmapError: CG frames that do not fit the mapping or the all-atom frames.
            DataFormatError: no frames, or an unknown ``centre``.
        """
        from ase_mlmd.backmap.base import check_cg_frames

        if centre not in CENTRES:
            raise DataFormatError(f"centre must be one of {CENTRES}, got {centre!r}")
        if len(frames) == 0:
            raise DataFormatError("no all-atom frames were given")
        if centre == "geometry":
            mapping = geometric_mapping(mapping)
        assignment = assignment_of(mapping)
        levels = bfs_levels(mapping.n_atoms, mapping.bonds)
        aa = np.empty((len(frames), mapping.n_atoms, 3))
        for k, atoms in enumerate(frames):
            mapping.check_structure(atoms, f"all-atom frame {k}")
            positions = atoms.get_positions()
            if atoms.pbc.any():
                positions = make_whole(positions, atoms.cell.array, atoms.pbc, levels)
            aa[k] = positions
        weights = np.asarray(mapping.weights.todense() if hasattr(mapping.weights, "todense")
                             else mapping.weights)  # fmt: skip
        if cg_frames is None:
            cg = np.einsum("bn,fnx->fbx", weights, aa)
        else:
            if len(cg_frames) != len(frames):
                raise BackmapError(
                    f"{len(cg_frames)} CG frames for {len(frames)} all-atom frames; give one "
                    "CG frame per all-atom frame, in the same order"
                )
            cg = check_cg_frames(list(cg_frames), mapping)
        return cls(mapping=mapping, cg=cg, aa=aa, assignment=assignment)

    def __len__(self) -> int:
        return len(self.cg)

    @property
    def numbers(self) -> np.ndarray:
        """(n_atoms,) atomic numbers in atom order."""
        return self.mapping.numbers

    @property
    def bonds(self) -> np.ndarray:
        """(n_bonds, 2) the all-atom bond graph."""
        return self.mapping.bonds

    @property
    def weights(self) -> np.ndarray:
        """(n_beads, n_atoms) dense coordinate weights."""
        w = self.mapping.weights
        return np.asarray(w.todense()) if hasattr(w, "todense") else np.asarray(w)

    def subset(self, indices: Sequence[int] | np.ndarray) -> BackmapPairs:
        """The pairs at ``indices`` (frame order as given)."""
        idx = np.asarray(indices, dtype=int)
        return dataclasses.replace(self, cg=self.cg[idx], aa=self.aa[idx])

    def cg_atoms(self, k: int) -> Atoms:
        """CG frame ``k`` as a CG ``Atoms`` (:mod:`ase_mlmd.beads` convention; masses of 1)."""
        m = self.mapping
        return make_cg_atoms(self.cg[k], m.bead_types, m.type_list, np.ones(m.n_beads))

    def aa_atoms(self, k: int) -> Atoms:
        """All-atom frame ``k`` as ``Atoms``."""
        return Atoms(numbers=self.numbers, positions=self.aa[k])
