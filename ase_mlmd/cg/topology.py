"""The bonded topology of a CG molecule: which beads are bonded, and the angles and dihedrals
that the bonds imply. Priors (harmonic bonds/angles, dihedrals, non-bonded repulsion) and
evaluation (bond/angle/dihedral distributions) read it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ase_mlmd.errors import InvalidStructureError


@dataclass(frozen=True)
class CGTopology:
    """Bonded topology of one CG molecule.

    Attributes:
        bead_types: (n_beads,) type name of each bead.
        bonds: (n_bonds, 2) bead indices, i < j, sorted.
        angles: (n_angles, 3) bead indices (i, j, k) with j the apex, i < k.
        dihedrals: (n_dihedrals, 4) bead indices (i, j, k, l) along bonds, i < l.
    """

    bead_types: tuple[str, ...]
    bonds: np.ndarray
    angles: np.ndarray
    dihedrals: np.ndarray

    @property
    def n_beads(self) -> int:
        return len(self.bead_types)

    @classmethod
    def from_bonds(
        cls, bead_types: Sequence[str], bonds: Sequence[Sequence[int]] | np.ndarray
    ) -> CGTopology:
        """Angles and dihedrals are every path of 3 and 4 beads along ``bonds``."""
        n = len(bead_types)
        pairs = sorted({tuple(sorted((int(i), int(j)))) for i, j in np.reshape(bonds, (-1, 2))})
        for i, j in pairs:
            if i == j or not (0 <= i < n and 0 <= j < n):
                raise InvalidStructureError(
                    f"bond ({i}, {j}) is not between two different beads of 0..{n - 1}"
                )
        neighbors: list[set[int]] = [set() for _ in range(n)]
        for i, j in pairs:
            neighbors[i].add(j)
            neighbors[j].add(i)
        angles = sorted(
            (min(i, k), j, max(i, k))
            for j in range(n)
            for i in neighbors[j]
            for k in neighbors[j]
            if i < k
        )
        dihedrals = set()
        for j, k in pairs:
            for i in neighbors[j] - {k}:
                for m in neighbors[k] - {j, i}:
                    quad = (i, j, k, m)
                    dihedrals.add(quad if i < m else quad[::-1])
        return cls(
            bead_types=tuple(str(t) for t in bead_types),
            bonds=np.array(pairs, dtype=int).reshape(-1, 2),
            angles=np.array(angles, dtype=int).reshape(-1, 3),
            dihedrals=np.array(sorted(dihedrals), dtype=int).reshape(-1, 4),
        )

    @classmethod
    def chain(cls, bead_types: Sequence[str]) -> CGTopology:
        """A linear chain: bead i bonded to bead i + 1."""
        n = len(bead_types)
        return cls.from_bonds(bead_types, [(i, i + 1) for i in range(n - 1)])

    def to_dict(self) -> dict:
        """JSON-ready form (bead types and bonds; angles/dihedrals are derived)."""
        return {"bead_types": list(self.bead_types), "bonds": self.bonds.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> CGTopology:
        return cls.from_bonds(data["bead_types"], data["bonds"])

    def excluded_pairs(self, n_bonds_apart: int = 3) -> set[tuple[int, int]]:
        """Bead pairs within ``n_bonds_apart`` bonds of each other (i < j): the pairs a
        non-bonded term usually leaves out."""
        n = self.n_beads
        adjacency: list[set[int]] = [set() for _ in range(n)]
        for i, j in self.bonds:
            adjacency[i].add(int(j))
            adjacency[j].add(int(i))
        excluded = set()
        for start in range(n):
            frontier, seen = {start}, {start}
            for _ in range(n_bonds_apart):
                frontier = {m for b in frontier for m in adjacency[b]} - seen
                seen |= frontier
            excluded |= {(start, m) for m in seen if m > start}
        return excluded
