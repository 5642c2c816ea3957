"""Hydrogens for heavy-atom protein structures with OpenMM's ``Modeller.addHydrogens``.

PULCHRA (:mod:`ase_mlmd.backmap.pulchra`) rebuilds heavy atoms only. :class:`HydrogenAdder`
completes such a structure to the full molecule of a backmapper's mapping: it builds an OpenMM
topology of the molecule's heavy atoms (residues, atom names, the heavy-atom bonds of the
mapping), asks ``Modeller.addHydrogens`` for exactly the reference's hydrogens (per residue a
list of (hydrogen name, parent atom name) taken from the mapping's bond graph, so protonation
states and termini are the reference's), and returns all atoms in the mapping's atom order.

Placement: OpenMM starts each hydrogen about 1 Å off its parent and relaxes the hydrogens for
50 minimizer steps under amber14 (``amber14-all.xml``, no solvent, non-periodic cutoff) with
every heavy atom fixed. (OpenMM's force-field-free placement, restraints plus a soft
repulsion, leaves X–H bonds at 1.17–1.21 Å on chignolin against 0.96–1.09 Å in amber14; it is
not offered.)

Heavy atoms never move. The random start of OpenMM's placement uses Python's ``random``
module; it is seeded per call (``seed``) and the caller's ``random`` state is restored, so
results are reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from ase_mlmd.cg.mapping import CGMapping
from ase_mlmd.errors import BackmapError

__all__ = ["HYDROGEN_METHODS", "HydrogenAdder"]

#: the ``hydrogens`` choices of a PULCHRA backmapper → what they do (CLI help)
HYDROGEN_METHODS = {
    "none": "heavy atoms only (PULCHRA's output)",
    "amber14": "OpenMM Modeller.addHydrogens, hydrogens minimized under amber14, heavy atoms fixed",
}


class HydrogenAdder:
    """Heavy-atom positions → all-atom positions of the mapping's molecule (module docstring).

    Args:
        mapping: the molecule (elements, atom order, bonds); every hydrogen must be bonded to
            exactly one heavy atom.
        atom_names, residue_names: (n_atoms,) per-atom names as in the molecule's PDB.
        residue_index: (n_atoms,) residue of each atom, 0-based in chain order.

    Raises:
        BackmapError: a hydrogen without exactly one heavy-atom parent, or atom names that
            repeat within a residue.
    """

    def __init__(
        self,
        mapping: CGMapping,
        atom_names: Sequence[str],
        residue_names: Sequence[str],
        residue_index: Sequence[int],
    ) -> None:
        from openmm import app

        self.mapping = mapping
        numbers = mapping.numbers
        self.heavy = np.flatnonzero(numbers > 1)
        residue_index = np.asarray(residue_index, dtype=int)
        parent = {}
        for i, j in mapping.bonds:
            for h, x in ((i, j), (j, i)):
                if numbers[h] == 1 and numbers[x] > 1:
                    parent.setdefault(int(h), []).append(int(x))
        hydrogens = np.flatnonzero(numbers == 1)
        lonely = [int(h) for h in hydrogens if len(parent.get(int(h), [])) != 1]
        if lonely:
            raise BackmapError(
                f"hydrogen {atom_names[lonely[0]]} (atom {lonely[0]}) is not bonded to exactly "
                "one heavy atom in the mapping's bond graph; hydrogens cannot be placed"
            )
        self._key = {(int(residue_index[i]), str(atom_names[i]).strip()): i
                     for i in range(mapping.n_atoms)}  # fmt: skip
        if len(self._key) != mapping.n_atoms:
            raise BackmapError("atom names repeat within a residue; hydrogens cannot be matched")
        topology = app.Topology()
        chain = topology.addChain()
        residues, order = {}, []
        for r in sorted(set(residue_index.tolist())):
            members = [i for i in self.heavy if residue_index[i] == r]
            name = str(residue_names[members[0]]).strip() if members else "UNK"
            residues[r] = topology.addResidue(name, chain)
            order += members
        atoms = {}
        for i in order:
            element = app.Element.getByAtomicNumber(int(numbers[i]))
            residue = residues[residue_index[i]]
            atoms[i] = topology.addAtom(str(atom_names[i]).strip(), element, residue)
        for i, j in mapping.bonds:
            if numbers[i] > 1 and numbers[j] > 1:
                topology.addBond(atoms[int(i)], atoms[int(j)])
        self._topology, self._order = topology, np.asarray(order, dtype=int)
        self._residues = sorted(residues)
        self._variants = [
            [(str(atom_names[h]).strip(), str(atom_names[parent[int(h)][0]]).strip())
             for h in hydrogens if residue_index[h] == r]
            for r in sorted(residues)
        ]  # fmt: skip
        self._forcefield = app.ForceField("amber14-all.xml")

    def add(self, heavy_positions: np.ndarray, seed: int = 0) -> np.ndarray:
        """All-atom positions (n_atoms, 3) Å, the mapping's order, from heavy-atom positions
        (n_heavy, 3) Å in the order of :attr:`heavy`.

        Raises:
            BackmapError: OpenMM added other hydrogens than the reference's, or failed.
        """
        import openmm
        from openmm import app, unit

        heavy = np.asarray(heavy_positions, dtype=float)
        if heavy.shape != (len(self.heavy), 3):
            raise BackmapError(f"heavy positions have shape {heavy.shape}, "
                               f"expected ({len(self.heavy)}, 3)")  # fmt: skip
        slot = {int(i): k for k, i in enumerate(self.heavy)}
        start = heavy[[slot[int(i)] for i in self._order]] / 10.0
        modeller = app.Modeller(self._topology, unit.Quantity(start, unit.nanometer))
        state = random.getstate()
        try:
            random.seed(seed)
            modeller.addHydrogens(
                self._forcefield,
                variants=[list(v) for v in self._variants],
                platform=openmm.Platform.getPlatformByName("Reference"),
            )
        except (ValueError, KeyError, openmm.OpenMMException) as err:
            raise BackmapError(f"OpenMM could not add the hydrogens: {err}") from None
        finally:
            random.setstate(state)
        xyz = modeller.getPositions().value_in_unit(unit.angstrom)
        out = np.full((self.mapping.n_atoms, 3), np.nan)
        for atom, x in zip(modeller.topology.atoms(), xyz, strict=True):
            index = self._key.get((self._residues[atom.residue.index], atom.name))
            if index is None:
                raise BackmapError(
                    f"OpenMM added atom {atom.name} of residue {atom.residue.index}, which the "
                    "molecule does not have"
                )
            out[index] = [x[0], x[1], x[2]]
        if not np.isfinite(out).all():
            raise BackmapError("OpenMM did not place every hydrogen of the molecule")
        out[self.heavy] = heavy  # fixed in the minimization; exact, not through nm and back
        return out
