"""Builders of :class:`~ase_mlmd.cg.mapping.CGMapping`: groups of atoms at their centre of mass
or geometry, heavy atoms with their hydrogens, protein backbone (N, CA, C) and Cα traces, and
Girvan–Newman partitions of the bond graph. The learned mapping is
:func:`ase_mlmd.cg.autograin.autograin`.

Bead types: heavy-atom beads are named by their element and hydrogen count (``C``, ``CH3``,
``NH``); backbone/Cα beads by their atom name (``N``, ``CA``, ``C``); group beads by their type
in the groups file; Girvan–Newman (and learned) beads by the Hill formula of their atoms
(``C2H5``), so beads of the same composition share a type.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.formula import Formula

from ase_mlmd.cg.frames import bond_graph
from ase_mlmd.cg.mapping import CGMapping
from ase_mlmd.errors import DataFormatError, MappingError

__all__ = ["SCHEMES", "alpha_carbon", "backbone", "build_mapping", "formula_types", "from_groups",
           "girvan_newman", "heavy_atom", "read_groups_file"]  # fmt: skip

#: scheme names of :func:`build_mapping` (plus ``com-groups:FILE`` / ``cog-groups:FILE``)
SCHEMES = ("girvan-newman", "heavy-atom", "backbone", "ca")
WEIGHTINGS = ("mass", "geometry")


def _group_weights(atoms: Atoms, groups: Sequence[Sequence[int]], weighting: str) -> np.ndarray:
    if weighting not in WEIGHTINGS:
        raise MappingError(f"weighting {weighting!r} is not one of {WEIGHTINGS}")
    n_atoms = len(atoms)
    masses = atoms.get_masses()
    weights = np.zeros((len(groups), n_atoms))
    for bead, group in enumerate(groups):
        group = np.asarray(group, dtype=int).reshape(-1)
        if len(group) == 0:
            raise MappingError(f"bead {bead} has no atoms")
        if group.min() < 0 or group.max() >= n_atoms:
            outside = int(group.max() if group.max() >= n_atoms else group.min())
            raise MappingError(
                f"bead {bead} names atom {outside}, outside 0..{n_atoms - 1} of a "
                f"{n_atoms}-atom structure"
            )
        if len(set(group.tolist())) != len(group):
            raise MappingError(f"bead {bead} lists an atom twice: {group.tolist()}")
        share = masses[group] if weighting == "mass" else np.ones(len(group))
        weights[bead, group] = share / share.sum()
    return weights


def from_groups(
    atoms: Atoms,
    groups: Sequence[Sequence[int]],
    weighting: str = "mass",
    bead_types: Sequence[str] | None = None,
    bead_names: Sequence[str] | None = None,
    scheme: str = "groups",
    allow_unmapped: bool = False,
    bonds: np.ndarray | None = None,
) -> CGMapping:
    """One bead per group of atom indices at the group's centre of mass (``weighting="mass"``)
    or geometry (``"geometry"``).

    Args:
        atoms: the all-atom structure (elements, masses; its bond graph from ASE natural
            cutoffs unless ``bonds`` is given).
        groups: atom indices (0-based) of each bead; an atom in two groups, or (unless
            ``allow_unmapped``) in none, is an error.
        bead_types: type of each bead (default: the Hill formula of its atoms).
        bead_names: name of each bead (default ``B0``, ``B1``, ...).
    """
    if len(groups) > len(atoms):
        raise MappingError(
            f"{len(groups)} beads for {len(atoms)} atoms: at most {len(atoms)} beads"
        )
    weights = _group_weights(atoms, groups, weighting)
    types = list(bead_types) if bead_types is not None else formula_types(atoms, groups)
    names = list(bead_names) if bead_names is not None else [f"B{k}" for k in range(len(groups))]
    return CGMapping(
        weights=weights,
        bead_types=types,
        bead_names=names,
        numbers=atoms.numbers,
        bonds=bond_graph(atoms) if bonds is None else bonds,
        scheme=scheme,
        allow_unmapped=allow_unmapped,
        info={"weighting": weighting},
    )


def formula_types(atoms: Atoms, groups: Sequence[Sequence[int]]) -> list[str]:
    """The Hill formula of each group's atoms (``C2H5NO``)."""
    symbols = np.array(atoms.get_chemical_symbols())
    return [
        str(Formula.from_list(symbols[np.asarray(g, dtype=int)]).format("hill")) for g in groups
    ]


def heavy_atom(atoms: Atoms, weighting: str = "mass", bonds: np.ndarray | None = None) -> CGMapping:
    """One bead per heavy atom with the hydrogens bonded to it (ASE natural cutoffs); a
    hydrogen bonded to no heavy atom (H₂) is an error."""
    bonds = bond_graph(atoms) if bonds is None else np.asarray(bonds, dtype=int)
    heavy = np.flatnonzero(atoms.numbers != 1)
    if len(heavy) == 0:
        raise MappingError("the structure has no heavy atoms; the heavy-atom mapping needs some")
    owner = {int(h): k for k, h in enumerate(heavy)}
    groups = [[int(h)] for h in heavy]
    for hydrogen in np.flatnonzero(atoms.numbers == 1):
        partners = [int(b) for a, b in np.r_[bonds, bonds[:, ::-1]] if a == hydrogen and b in owner]
        if not partners:
            raise MappingError(
                f"hydrogen atom {int(hydrogen)} is bonded to no heavy atom (ASE natural "
                "cutoffs); the heavy-atom mapping cannot place it — check the structure"
            )
        nearest = min(partners, key=lambda b: atoms.get_distance(hydrogen, b, mic=True))
        groups[owner[nearest]].append(int(hydrogen))
    symbols = atoms.get_chemical_symbols()
    types = []
    for group in groups:
        n_h = len(group) - 1
        types.append(symbols[group[0]] + ("" if n_h == 0 else "H" if n_h == 1 else f"H{n_h}"))
    names = [f"{symbols[g[0]]}{g[0]}" for g in groups]
    return from_groups(atoms, groups, weighting, types, names, "heavy-atom", bonds=bonds)


def _atom_names(atoms: Atoms, names: Sequence[str] | None) -> list[str]:
    if names is not None:
        if len(names) != len(atoms):
            raise MappingError(
                f"{len(names)} atom names for {len(atoms)} atoms; give the topology of this "
                "structure"
            )
        return [str(n).strip() for n in names]
    if "atom_name" in atoms.arrays:
        return [str(n).strip() for n in atoms.arrays["atom_name"]]
    raise MappingError(
        "backbone and Cα mappings need atom names (N, CA, C); this structure has none — give "
        "a topology (PDB) of the same atoms (--topology on the command line)"
    )


def backbone(
    atoms: Atoms, names: Sequence[str] | None = None, atom_names: Sequence[str] = ("N", "CA", "C")
) -> CGMapping:
    """One bead on each backbone atom (atom names N, CA, C, in atom order); other atoms are
    left out (a partial mapping: bead forces are those atoms' own forces). Alanine dipeptide
    (ACE-ALA-NME) gives the 5 beads C, N, CA, C, N of ``../shared/data/ala2_cg``."""
    all_names = _atom_names(atoms, names)
    picked = [i for i, n in enumerate(all_names) if n in atom_names]
    if not picked:
        raise MappingError(f"no atom is named {' or '.join(atom_names)}; is this a protein?")
    types = [all_names[i] for i in picked]
    residues = atoms.arrays.get("residuenumbers")
    labels = [
        f"{t}{'' if residues is None else int(residues[i])}"
        for t, i in zip(types, picked, strict=True)
    ]
    return from_groups(
        atoms, [[i] for i in picked], "mass", types, labels, "backbone", allow_unmapped=True
    )


def alpha_carbon(
    atoms: Atoms,
    names: Sequence[str] | None = None,
    residue_names: Sequence[str] | None = None,
) -> CGMapping:
    """One bead on each Cα atom (atom name CA); other atoms are left out. Bead types are the
    residue names (``ALA``) when known (``residue_names`` per atom, or
    ``arrays["residue_name"]`` from a PDB/topology), else ``CA``; bead names add the residue
    number (``ALA2``)."""
    mapping = backbone(atoms, names, atom_names=("CA",))
    if residue_names is None and "residue_name" in atoms.arrays:
        residue_names = atoms.arrays["residue_name"]
    fields = {**_fields(mapping), "scheme": "ca", "type_list": ()}
    if residue_names is not None:
        if len(residue_names) != len(atoms):
            raise MappingError(f"{len(residue_names)} residue names for {len(atoms)} atoms")
        picked = [int(m[0]) for m in mapping.members]
        numbers = atoms.arrays.get("residuenumbers")
        fields["bead_types"] = [str(residue_names[i]).strip() for i in picked]
        fields["bead_names"] = [
            f"{fields['bead_types'][k]}{'' if numbers is None else int(numbers[i])}"
            for k, i in enumerate(picked)
        ]
    return CGMapping(**fields)


def _fields(mapping: CGMapping) -> dict:
    keys = ("weights", "bead_types", "bead_names", "numbers", "bonds", "type_list", "scheme",
            "allow_unmapped", "allow_overlap", "info")  # fmt: skip
    return {k: getattr(mapping, k) for k in keys}


def girvan_newman(
    atoms: Atoms, n_beads: int, weighting: str = "geometry", bonds: np.ndarray | None = None
) -> CGMapping:
    """``n_beads`` beads from the Girvan–Newman community partition of the bond graph
    (networkx ``girvan_newman``: edges of highest betweenness are removed until the graph
    falls into ``n_beads`` connected communities). Beads sit at the centre of geometry of
    their atoms (METRICS.md §4, as CGVAE) unless ``weighting="mass"``."""
    import networkx as nx
    from networkx.algorithms.community import girvan_newman as gn

    n_atoms = len(atoms)
    if not 1 <= n_beads <= n_atoms:
        raise MappingError(
            f"--beads {n_beads}: the Girvan–Newman mapping needs 1 to {n_atoms} beads for "
            f"{n_atoms} atoms"
        )
    bonds = bond_graph(atoms) if bonds is None else np.asarray(bonds, dtype=int)
    graph = nx.Graph()
    graph.add_nodes_from(range(n_atoms))
    graph.add_edges_from(map(tuple, bonds.tolist()))
    communities = [set(c) for c in nx.connected_components(graph)]
    if len(communities) > n_beads:
        raise MappingError(
            f"the bond graph already has {len(communities)} separate molecules/fragments, more "
            f"than --beads {n_beads}; map one molecule, or ask for more beads"
        )
    if len(communities) < n_beads:
        for level in gn(graph):
            if len(level) >= n_beads:
                communities = [set(c) for c in level]
                break
    groups = sorted((sorted(c) for c in communities), key=lambda g: g[0])
    if len(groups) != n_beads:  # pragma: no cover - girvan_newman splits one community a step
        raise MappingError(f"Girvan–Newman gave {len(groups)} communities, not {n_beads}")
    mapping = from_groups(atoms, groups, weighting, scheme="girvan-newman", bonds=bonds)
    return mapping


def read_groups_file(path: str | os.PathLike) -> tuple[list[list[int]], list[str]]:
    """Groups of a text file: one bead per line, ``TYPE i j k ...`` (the bead type, then
    0-based atom indices; ranges ``3-7`` include both ends); ``#`` starts a comment."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"groups file {path} does not exist")
    groups, types = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) < 2:
            raise DataFormatError(
                f"{path}, line {number}: expected 'TYPE i j k ...' (a bead type and its atom "
                f"indices), got {line.strip()!r}"
            )
        atoms = []
        for token in fields[1:]:
            match = re.fullmatch(r"(\d+)(?:-(\d+))?", token)
            if match is None:
                raise DataFormatError(
                    f"{path}, line {number}: {token!r} is not an atom index or range (3-7)"
                )
            first, last = int(match.group(1)), int(match.group(2) or match.group(1))
            atoms.extend(range(first, last + 1))
        groups.append(atoms)
        types.append(fields[0])
    if not groups:
        raise DataFormatError(f"groups file {path} defines no beads")
    return groups, types


def build_mapping(
    scheme: str,
    atoms: Atoms,
    n_beads: int | None = None,
    names: Sequence[str] | None = None,
    weighting: str | None = None,
) -> CGMapping:
    """A mapping by scheme name: ``girvan-newman`` (needs ``n_beads``), ``heavy-atom``,
    ``backbone``, ``ca``, ``com-groups:FILE`` or ``cog-groups:FILE`` (centre of mass /
    geometry of the groups of :func:`read_groups_file`). ``names``: atom names for the
    backbone/Cα schemes when ``atoms`` carries none."""
    if scheme.startswith(("com-groups:", "cog-groups:")):
        kind, file = scheme.split(":", 1)
        groups, types = read_groups_file(file)
        try:
            return from_groups(
                atoms, groups, "mass" if kind == "com-groups" else "geometry", types,
                scheme=scheme,
            )  # fmt: skip
        except MappingError as error:
            raise MappingError(f"groups file {file}: {error}") from error
    if scheme == "girvan-newman":
        if n_beads is None:
            raise MappingError("the girvan-newman scheme needs a bead count (--beads N)")
        return girvan_newman(atoms, n_beads, weighting or "geometry")
    if scheme == "heavy-atom":
        return heavy_atom(atoms, weighting or "mass")
    if scheme == "backbone":
        return backbone(atoms, names)
    if scheme == "ca":
        return alpha_carbon(atoms, names)
    raise MappingError(
        f"unknown mapping scheme {scheme!r}; use one of {', '.join(SCHEMES)}, "
        "com-groups:FILE, cog-groups:FILE (or `ase-mlmd cg autograin` for a learned one)"
    )
