"""PULCHRA as a backmapper: a protein's Cα trace in, its heavy atoms out (PyPI ``pulchra``).

PULCHRA (Rotkiewicz & Skolnick 2008; the PyPI package is a Python port) rebuilds the backbone
and side-chain heavy atoms of a protein from its Cα positions and sequence with rotamer
statistics; by default it first adjusts the Cα trace (``ca_optimize``: Cα–Cα distances towards
3.8 Å, moves of at most 0.5 Å), removes clashes (``optimize_xvol``) and fixes D-amino acids
(``check_chirality``). It is deterministic.

What comes back: PULCHRA builds **heavy atoms only** (backbone N, CA, C, O, the C-terminal
OXT and the side chains) and no hydrogens. A :class:`PulchraBackmapper` therefore returns
structures of the molecule's heavy atoms only: ``K`` atoms in the reference atom order, with
``arrays["reference_index"]`` (K,) giving each atom's index in the full molecule (the
mapping's atom order). Metrics compare those atoms only (heavy-atom RMSD, heavy-atom bond
graph, clashes among heavy atoms); hydrogens are not part of the comparison. A heavy atom of
the reference that PULCHRA does not build (a residue type it does not know) raises a
:class:`~ase_mlmd.errors.BackmapError` when the backmapper is made.

Hydrogens: with ``hydrogens="amber14"`` the heavy atoms are completed with
the molecule's own hydrogens by OpenMM's ``Modeller.addHydrogens``
(:class:`~ase_mlmd.backmap.hydrogens.HydrogenAdder`; heavy atoms fixed) and the structures are
the full molecule in the mapping's atom order, like the other backmappers' output.

Atoms are matched by (residue index, atom name); the molecule's atom names and residues come
from its topology (a PDB file; :meth:`PulchraBackmapper.from_pdb`).

Cards: backend ``pulchra``, no weights; ``[parameters]`` holds the mapping, the per-atom names,
residue names and residue indices, the PULCHRA options and the hydrogens method
(:meth:`PulchraBackmapper.save`; loaded by :func:`~ase_mlmd.backmap.card.load_backmapper`
through :func:`pulchra_from_card`). ``ase-mlmd backmap pulchra`` writes one.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ase_mlmd.backmap.base import aa_atoms, check_cg_frames, check_n_samples, copies_per_frame
from ase_mlmd.backmap.card import mapping_from_card, write_backmapper_card
from ase_mlmd.backmap.hydrogens import HYDROGEN_METHODS, HydrogenAdder
from ase_mlmd.calculators.cards import ModelCard
from ase_mlmd.cg.mapping import CGMapping
from ase_mlmd.errors import BackmapError, CardError, MappingError

__all__ = ["PULCHRA_BACKEND", "PulchraBackmapper", "protein_topology", "pulchra_from_card"]

PULCHRA_BACKEND = "pulchra"
PULCHRA_CITATION = (
    "P. Rotkiewicz, J. Skolnick, Fast procedure for reconstruction of full-atom protein models "
    "from reduced representations, J. Comput. Chem. 29, 1460 (2008) (PyPI pulchra, a Python port)"
)

#: residue names of AMBER/CHARMM protonation variants → the standard name PULCHRA knows
_VARIANTS = {"HIE": "HIS", "HID": "HIS", "HIP": "HIS", "HSD": "HIS", "HSE": "HIS",
             "CYX": "CYS", "ASH": "ASP", "GLH": "GLU", "LYN": "LYS"}  # fmt: skip


def protein_topology(pdb: str | Path) -> tuple[Atoms, list[str], list[str], list[int]]:
    """Atoms (elements, positions Å, no cell) and per-atom names, residue names and residue
    indices (0-based, in chain order) of a protein PDB file, read with OpenMM's PDB reader
    (elements from the element column).

    Raises:
        DataFormatError: not a readable PDB file, no atoms, or atoms without an element.
    """
    from openmm import app, unit

    from ase_mlmd.errors import DataFormatError

    try:
        pdb_file = app.PDBFile(str(pdb))
    except (ValueError, KeyError, IndexError, OSError) as err:
        raise DataFormatError(f"cannot read {pdb} as a PDB file: {err}") from None
    top = pdb_file.topology
    if top.getNumAtoms() == 0 or any(a.element is None for a in top.atoms()):
        raise DataFormatError(
            f"{pdb} has no atoms or atoms without an element; give the protein's PDB file "
            "(e.g. the topology PDB written with the all-atom frames)"
        )
    atoms = Atoms(
        numbers=[a.element.atomic_number for a in top.atoms()],
        positions=pdb_file.getPositions(asNumpy=True).value_in_unit(unit.angstrom),
    )
    names = [a.name for a in top.atoms()]
    residue_names = [a.residue.name for a in top.atoms()]
    residue_index = [a.residue.index for a in top.atoms()]
    return atoms, names, residue_names, residue_index


class PulchraBackmapper:
    """Cα trace → protein heavy atoms with PULCHRA (module docstring).

    Args:
        mapping: the Cα mapping of the molecule (one bead per residue, on its CA atom, in
            chain order; e.g. :func:`ase_mlmd.cg.builders.alpha_carbon`).
        atom_names: (n_atoms,) atom names in the mapping's atom order (N, CA, CB, ...).
        residue_names: (n_atoms,) three-letter residue names.
        residue_index: (n_atoms,) residue of each atom, 0-based in chain order.
        **options: options of ``pulchra.Pulchra`` (e.g. ``ca_optimize=False``).

    Raises:
        BackmapError: a mapping whose beads are not the CA atoms, one per residue in order,
            or heavy atoms PULCHRA does not build.
    """

    def __init__(
        self,
        mapping: CGMapping,
        atom_names: Sequence[str],
        residue_names: Sequence[str],
        residue_index: Sequence[int],
        hydrogens: str = "none",
        **options,
    ) -> None:
        import pulchra
        from pulchra.core.constants import AA_NAMES, SHORT_AA_NAMES

        allowed = _pulchra_options()
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise BackmapError(f"unknown PULCHRA option(s) {unknown}; known: {sorted(allowed)}")
        if hydrogens not in HYDROGEN_METHODS:
            raise BackmapError(
                f"hydrogens must be one of {sorted(HYDROGEN_METHODS)}, got {hydrogens!r} "
                "(--hydrogens on the command line)"
            )

        n = mapping.n_atoms
        if not len(atom_names) == len(residue_names) == len(residue_index) == n:
            raise BackmapError(
                f"atom names, residue names and residue indices must have one entry per atom "
                f"of the mapping ({n}); got {len(atom_names)}, {len(residue_names)}, "
                f"{len(residue_index)}"
            )
        self.mapping = mapping
        self.names = [str(a).strip() for a in atom_names]
        self.residue_names = [str(a).strip() for a in residue_names]
        self.options = {k: options[k] for k in sorted(options)}
        self.hydrogens = hydrogens
        self.residue_index = np.asarray(residue_index, dtype=int)
        residues = sorted(set(self.residue_index.tolist()))
        with_ca = {int(r) for r, a in zip(self.residue_index, self.names, strict=True) if a == "CA"}
        if set(residues) - with_ca:
            r = min(set(residues) - with_ca)
            name = self.residue_names[int(np.flatnonzero(self.residue_index == r)[0])]
            raise BackmapError(
                f"residue {name}{r + 1} has no CA atom: PULCHRA rebuilds chains of standard "
                "amino acids only (capping groups such as ACE/NME, ligands and water are not "
                "supported); use a CGVAE or linear backmapper for this molecule"
            )
        ca = [int(m[0]) for m in mapping.members]
        ca_residues = [int(self.residue_index[i]) for i in ca]
        if (
            any(len(m) != 1 for m in mapping.members)
            or any(self.names[i] != "CA" for i in ca)
            or ca_residues != residues
        ):
            raise BackmapError(
                f"PULCHRA backmaps Cα traces: the mapping ({mapping.scheme}, {mapping.n_beads} "
                f"beads) must have one bead per residue on its CA atom, in chain order "
                f"({len(residues)} residues here); build it with `ase-mlmd cg map --scheme ca` "
                "(ase_mlmd.cg.builders.alpha_carbon), or leave --mapping out to build it from "
                "the --topology PDB"
            )
        letters = dict(zip(AA_NAMES, SHORT_AA_NAMES, strict=False))
        sequence = []
        for i in ca:
            name = _VARIANTS.get(str(residue_names[i]).strip(), str(residue_names[i]).strip())
            if name not in letters or name == "UNK":
                raise BackmapError(f"PULCHRA does not know residue {residue_names[i]!r}")
            sequence.append(letters[name])
        self.sequence = "".join(sequence)
        self._residue_position = {r: k for k, r in enumerate(residues)}
        self._pulchra = pulchra.Pulchra(**options)
        self.heavy = np.flatnonzero(mapping.numbers > 1)
        self._key = {(self._residue_position[int(self.residue_index[i])], self.names[i]): i
                     for i in self.heavy}  # fmt: skip
        built = {self._key[k] for k in self._build_keys(self._probe_trace())}
        missing = sorted(set(self.heavy.tolist()) - built)
        if missing:
            i = missing[0]
            raise BackmapError(
                f"PULCHRA does not build {len(missing)} heavy atom(s) of this molecule, e.g. "
                f"{self.names[i]} of residue {residue_names[i]}{self.residue_index[i]}"
            )
        self._hydrogens = (
            None if hydrogens == "none"
            else HydrogenAdder(mapping, self.names, self.residue_names, self.residue_index)
        )  # fmt: skip

    @classmethod
    def from_pdb(
        cls, pdb: str | Path, mapping: CGMapping | None = None, hydrogens: str = "none", **options
    ) -> PulchraBackmapper:
        """The backmapper of the protein in ``pdb`` (its Cα mapping built from the file's CA
        atoms unless ``mapping`` is given; atom names and residues from the file).

        Raises:
            MappingError: ``mapping`` is for another molecule than the file's.
            BackmapError: a mapping that is not a Cα trace, residues PULCHRA does not know.
        """
        from ase_mlmd.cg.builders import alpha_carbon

        atoms, names, residue_names, residue_index = protein_topology(pdb)
        if mapping is None:
            mapping = alpha_carbon(atoms, names=names, residue_names=residue_names)
        elif mapping.n_atoms != len(atoms) or not np.array_equal(mapping.numbers, atoms.numbers):
            raise MappingError(
                f"the mapping is for {mapping.n_atoms} atoms but {pdb} has {len(atoms)} (or "
                "other elements/order); give the PDB of the mapped molecule"
            )
        return cls(mapping, names, residue_names, residue_index, hydrogens, **options)

    @property
    def topology(self) -> CGMapping:
        """The Cα mapping (the molecule's elements, atom order and bonds)."""
        return self.mapping

    def _probe_trace(self) -> np.ndarray:
        """A straight Cα trace (n_residues, 3), 3.8 Å apart, used to list what PULCHRA builds."""
        return (
            np.outer(np.arange(self.mapping.n_beads), [3.8, 0.0, 0.0])
            + np.array([[0.0, 0.3, 0.0], [0.0, -0.3, 0.0]] * self.mapping.n_beads)[
                : self.mapping.n_beads
            ]
        )

    def _build(self, ca: np.ndarray) -> list[tuple[tuple[int, str], np.ndarray]]:
        with warnings.catch_warnings():  # scipy's align_vectors warns on collinear frames
            warnings.simplefilter("ignore", UserWarning)
            molecule = self._pulchra.reconstruct_coords(np.asarray(ca, float), self.sequence)
        return [
            ((k, atom.name.strip()), np.asarray(atom.coords, dtype=float))
            for k, residue in enumerate(molecule.residues)
            for atom in residue.atoms
        ]

    def _build_keys(self, ca: np.ndarray) -> list[tuple[int, str]]:
        return [key for key, _ in self._build(ca) if key in self._key]

    def heavy_positions(self, cg: Atoms | Sequence[Atoms]) -> np.ndarray:
        """Heavy-atom positions (F, n_heavy, 3) Å, in the order of :attr:`heavy`."""
        beads = check_cg_frames(cg, self.mapping)
        slot = {int(i): k for k, i in enumerate(self.heavy)}
        out = np.full((len(beads), len(self.heavy), 3), np.nan)
        for f, ca in enumerate(beads):
            for key, x in self._build(ca):
                if key in self._key:
                    out[f, slot[self._key[key]]] = x
            if not np.isfinite(out[f]).all():
                i = int(self.heavy[np.flatnonzero(~np.isfinite(out[f]).all(axis=1))[0]])
                raise BackmapError(
                    f"PULCHRA built no (finite) position for atom {self.names[i]} of residue "
                    f"{int(self.residue_index[i])} in CG frame {f}"
                )
        return out

    def _atoms(self, x: np.ndarray, **info) -> Atoms:
        if self._hydrogens is not None:
            return aa_atoms(x, self.mapping, **info)
        atoms = Atoms(numbers=self.mapping.numbers[self.heavy], positions=x)
        atoms.arrays["reference_index"] = self.heavy.copy()
        atoms.info.update(info)
        return atoms

    def positions(self, cg: Atoms | Sequence[Atoms]) -> np.ndarray:
        """Positions (F, K, 3) Å of what the backmapper returns: the heavy atoms (K = n_heavy,
        order of :attr:`heavy`), or with hydrogens the whole molecule (K = n_atoms)."""
        heavy = self.heavy_positions(cg)
        if self._hydrogens is None:
            return heavy
        return np.stack([self._hydrogens.add(x, seed=0) for x in heavy])

    def reconstruct(self, cg: Atoms | Sequence[Atoms]) -> list[Atoms]:
        """One structure per Cα frame (info ``cg_frame``): heavy atoms with
        ``arrays["reference_index"]``, or the whole molecule with hydrogens."""
        return [self._atoms(x, cg_frame=k) for k, x in enumerate(self.positions(cg))]

    def sample(
        self, cg: Atoms | Sequence[Atoms], n_samples: int, seed: int = 0
    ) -> list[list[Atoms]]:
        """``n_samples`` identical copies per frame (PULCHRA and the hydrogen placement are
        deterministic; ``seed`` is unused)."""
        check_n_samples(n_samples)  # before any work
        return copies_per_frame(self.positions(cg), n_samples, self._atoms)

    def save(
        self,
        directory: str | os.PathLike,
        name: str,
        *,
        description: str = "",
        provenance: dict[str, Any] | None = None,
        card_file: str = "card.toml",
    ) -> Path:
        """Write the card (no weights: mapping, atom names, residues, options, hydrogens)
        atomically; return its path."""
        m = self.mapping
        what = "heavy atoms only" if self.hydrogens == "none" else f"+ H ({self.hydrogens})"
        return write_backmapper_card(
            directory,
            name,
            None,
            m,
            backend=PULCHRA_BACKEND,
            description=description
            or f"PULCHRA, Cα trace of {self.sequence} → {m.n_atoms} atoms ({what})",
            citation=PULCHRA_CITATION,
            dtype="float64",
            parameters={
                "atom_names": self.names,
                "residue_names": self.residue_names,
                "residue_index": [int(i) for i in self.residue_index],
                "hydrogens": self.hydrogens,
                "options": dict(self.options),
            },
            provenance=provenance,
            card_file=card_file,
        )


def _pulchra_options() -> list[str]:
    """Keyword options of ``pulchra.Pulchra`` (``verbose`` and ``**kwargs`` left out)."""
    import pulchra

    parameters = inspect.signature(pulchra.Pulchra.__init__).parameters.values()
    return [p.name for p in parameters
            if p.name not in ("self", "verbose") and p.kind is p.POSITIONAL_OR_KEYWORD]  # fmt: skip


def pulchra_from_card(card: ModelCard) -> PulchraBackmapper:
    """A :class:`PulchraBackmapper` from a read card (no weights).

    Raises:
        CardError: missing or inconsistent parameters.
        BackmapError: the stored mapping is not a Cα trace of the stored residues.
    """
    mapping = mapping_from_card(card)
    p = card.parameters
    missing = [k for k in ("atom_names", "residue_names", "residue_index") if k not in p]
    if missing:
        raise CardError(f"{card.path}: a PULCHRA card needs [parameters] {missing}; rewrite it "
                        "with `ase-mlmd backmap pulchra`")  # fmt: skip
    options = p.get("options", {})
    if not isinstance(options, dict):
        raise CardError(f"{card.path}: [parameters.options] must be a table")
    try:
        return PulchraBackmapper(mapping, p["atom_names"], p["residue_names"], p["residue_index"],
                                 str(p.get("hydrogens", "none")), **options)  # fmt: skip
    except BackmapError as err:
        raise CardError(f"{card.path}: {err}") from None
