"""All-atom frames for coarse-graining: reading trajectories (ASE and mdtraj formats), the bond
graph, molecules, and making molecules whole across periodic boundaries.

Positions are Å; bonds are pairs of atom indices ``(i, j)`` with ``i < j``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from ase_mlmd.errors import DataFormatError, InvalidStructureError

#: file suffixes read through mdtraj (they need a topology: a PDB, prmtop, ... file)
MDTRAJ_SUFFIXES = (".xtc", ".dcd", ".trr", ".nc", ".netcdf", ".h5", ".binpos", ".lammpstrj")


def read_trajectory(
    path: str | os.PathLike,
    index: str | int | slice = ":",
    topology: str | os.PathLike | None = None,
) -> list[Atoms]:
    """All-atom frames of a file as ASE ``Atoms``.

    Files ASE reads (extxyz, traj, xyz, pdb, ...) come through ``ase.io.read`` with their
    labels (forces in a SinglePointCalculator). Trajectories of MD engines
    (:data:`MDTRAJ_SUFFIXES`) come through mdtraj with ``topology`` (a PDB, prmtop, ...), and
    so do PDB files (ASE's PDB reader takes the atom name CA for calcium when the element
    column is empty):
    positions and cells are converted nm → Å, atom and residue names are kept in
    ``arrays["atom_name"]`` and ``arrays["residue_name"]``.

    Raises:
        DataFormatError: the file is missing, unreadable, empty, or needs a topology.
    """
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"trajectory file {path} does not exist")
    if path.suffix.lower() in MDTRAJ_SUFFIXES + (".pdb",):
        return _read_mdtraj(path, index, topology)
    from ase.io import read

    try:
        frames = read(path, index=index)
    except Exception as error:  # ASE raises many types for unreadable files
        raise DataFormatError(f"cannot read {path} with ase.io.read: {error}") from error
    frames = [frames] if isinstance(frames, Atoms) else list(frames)
    if not frames:
        raise DataFormatError(f"{path} holds no frames (index {index!r})")
    for k, atoms in enumerate(frames):
        atoms.info.setdefault("source", f"{path}#{k}")
    return frames


def _read_mdtraj(path: Path, index: str | int | slice, topology) -> list[Atoms]:
    try:
        import mdtraj
    except ImportError as error:  # pragma: no cover - mdtraj comes with the analysis extra
        raise DataFormatError(
            f"{path} is read through mdtraj; install it with `pip install ase-mlmd[analysis]`"
        ) from error
    if topology is None and path.suffix.lower() not in (".h5", ".pdb"):
        raise DataFormatError(
            f"{path} stores positions only; give its topology (a PDB or prmtop file) to read it"
        )
    try:
        if path.suffix.lower() == ".pdb":  # keep the file's atom names (NME's CH3 stays CH3)
            traj = mdtraj.load_pdb(str(path), standard_names=False)
        else:
            traj = mdtraj.load(str(path), top=_topology(topology))
    except Exception as error:
        raise DataFormatError(
            f"mdtraj cannot read {path} (topology {topology}): {error}"
        ) from error
    from ase.io.formats import string2index

    selection = string2index(index) if isinstance(index, str) else index
    picked = range(traj.n_frames)[selection]
    picked = [picked] if isinstance(picked, int) else list(picked)
    top = traj.topology
    symbols = [a.element.symbol if a.element is not None else "X" for a in top.atoms]
    names = np.array([a.name for a in top.atoms])
    residues = np.array([a.residue.name for a in top.atoms])
    residue_numbers = np.array([a.residue.resSeq for a in top.atoms])
    frames = []
    for k in picked:
        cell = None if traj.unitcell_vectors is None else traj.unitcell_vectors[k] * 10.0
        atoms = Atoms(symbols, positions=traj.xyz[k] * 10.0, cell=cell, pbc=cell is not None)
        atoms.set_array("atom_name", names.copy())
        atoms.set_array("residue_name", residues.copy())
        atoms.set_array("residuenumbers", residue_numbers.copy())
        atoms.info["source"] = f"{path}#{k}"
        frames.append(atoms)
    if not frames:
        raise DataFormatError(f"{path} holds no frames (index {index!r})")
    return frames


def label_from_topology(path: str | os.PathLike, atoms: Atoms) -> Atoms:
    """Copy atom names, residue names and residue numbers of a topology file (PDB, prmtop,
    ... read by mdtraj) onto ``atoms`` (``arrays["atom_name"]``, ``["residue_name"]``,
    ``["residuenumbers"]``), after checking that it lists the same elements in the same order.

    Raises:
        DataFormatError: unreadable topology, or other atoms (names both formulas).
    """
    try:
        top = _topology(path)
    except Exception as error:
        raise DataFormatError(f"mdtraj cannot read the topology {path}: {error}") from error
    symbols = [a.element.symbol if a.element is not None else "X" for a in top.atoms]
    if symbols != atoms.get_chemical_symbols():
        raise DataFormatError(
            f"topology {path} has {len(symbols)} atoms ({''.join(symbols[:12])}...) but the "
            f"structure has {len(atoms)} ({''.join(atoms.get_chemical_symbols()[:12])}...); "
            "give the topology of these atoms, in their order"
        )
    atoms.set_array("atom_name", np.array([a.name for a in top.atoms]))
    atoms.set_array("residue_name", np.array([a.residue.name for a in top.atoms]))
    atoms.set_array("residuenumbers", np.array([a.residue.resSeq for a in top.atoms]))
    return atoms


def _topology(path):
    """An mdtraj topology (PDB atom names as written in the file), or None."""
    import mdtraj

    if path is None:
        return None
    if str(path).lower().endswith(".pdb"):
        return mdtraj.load_pdb(str(path), standard_names=False).topology
    return mdtraj.load_topology(str(path))


def bond_graph(atoms: Atoms, multiplier: float = 1.2) -> np.ndarray:
    """Bonds (n_bonds, 2), ``i < j``: pairs closer than ``multiplier`` (1.2: covalent radii alone
    miss stretched C–H bonds) times the sum of ASE's
    natural (covalent) cutoffs, minimum image across periodic boundaries."""
    from ase.neighborlist import natural_cutoffs, neighbor_list

    if len(atoms) == 0:
        return np.zeros((0, 2), dtype=int)
    first, second = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=multiplier))
    keep = first < second
    pairs = np.unique(np.stack([first[keep], second[keep]], axis=1), axis=0)
    return pairs.reshape(-1, 2).astype(int)


def connected_components(n_atoms: int, bonds: np.ndarray) -> list[np.ndarray]:
    """Molecules: sorted atom-index arrays of each connected component of the bond graph, in
    the order of their first atom."""
    neighbors = _adjacency(n_atoms, bonds)
    seen = np.zeros(n_atoms, dtype=bool)
    molecules = []
    for start in range(n_atoms):
        if seen[start]:
            continue
        seen[start] = True
        queue, members = deque([start]), [start]
        while queue:
            for other in neighbors[queue.popleft()]:
                if not seen[other]:
                    seen[other] = True
                    members.append(other)
                    queue.append(other)
        molecules.append(np.array(sorted(members), dtype=int))
    return molecules


def _adjacency(n_atoms: int, bonds: np.ndarray) -> list[list[int]]:
    neighbors: list[list[int]] = [[] for _ in range(n_atoms)]
    for i, j in np.reshape(bonds, (-1, 2)):
        neighbors[int(i)].append(int(j))
        neighbors[int(j)].append(int(i))
    return neighbors


def bfs_levels(n_atoms: int, bonds: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Breadth-first spanning forest of the bond graph, by depth: a list of
    ``(children, parents)`` index arrays, one per depth ≥ 1 (roots, the first atom of each
    molecule, stay where they are)."""
    neighbors = _adjacency(n_atoms, bonds)
    depth = np.full(n_atoms, -1)
    parent = np.full(n_atoms, -1)
    for start in range(n_atoms):
        if depth[start] >= 0:
            continue
        depth[start] = 0
        queue = deque([start])
        while queue:
            atom = queue.popleft()
            for other in neighbors[atom]:
                if depth[other] < 0:
                    depth[other] = depth[atom] + 1
                    parent[other] = atom
                    queue.append(other)
    return [
        (np.flatnonzero(depth == d), parent[depth == d])
        for d in range(1, int(depth.max(initial=0)) + 1)
    ]


def minimum_image(vectors: np.ndarray, cell: np.ndarray, pbc: Sequence[bool]) -> np.ndarray:
    """Vectors (..., 3) Å reduced to their nearest periodic image along the periodic cell
    vectors (rounding of fractional components: exact for vectors shorter than half the
    shortest cell height, which bond vectors are)."""
    periodic = np.asarray(pbc, dtype=bool)
    if not periodic.any():
        return vectors
    fractional = vectors @ np.linalg.inv(cell)
    fractional[..., periodic] -= np.round(fractional[..., periodic])
    return fractional @ cell


def make_whole(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: Sequence[bool],
    levels: list[tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """Positions (n_atoms, 3) Å with every molecule made whole: walking the bond graph
    outwards from each molecule's first atom (``levels`` from :func:`bfs_levels`), each atom
    is moved to the periodic image nearest to the atom it is bonded to."""
    if not np.any(pbc):
        return positions
    whole = np.array(positions, dtype=float, copy=True)
    cell = np.asarray(cell, dtype=float)
    if abs(np.linalg.det(cell)) < 1e-12:
        raise InvalidStructureError(
            "the structure is periodic but its cell is degenerate (zero volume); set a cell "
            "or turn pbc off"
        )
    for children, parents in levels:
        whole[children] = whole[parents] + minimum_image(
            whole[children] - whole[parents], cell, pbc
        )
    return whole


def frame_forces(atoms: Atoms, where: str) -> np.ndarray:
    """(n_atoms, 3) forces of a labelled frame (calculator results or ``arrays["forces"]``).

    Raises:
        MissingLabelsError: the frame has none; names ``where``.
    """
    from ase.calculators.calculator import PropertyNotImplementedError

    from ase_mlmd.errors import MissingLabelsError

    forces = None
    if atoms.calc is not None:
        try:
            forces = atoms.get_forces()
        except (PropertyNotImplementedError, RuntimeError):
            forces = None
    if forces is None and "forces" in atoms.arrays:
        forces = atoms.arrays["forces"]
    if forces is None:
        raise MissingLabelsError(
            f"{where} has no forces; mapping forces needs all-atom frames labelled with "
            "forces (e.g. from `ase-mlmd sample`)"
        )
    return np.asarray(forces, dtype=float)


def frame_energy(atoms: Atoms) -> float | None:
    """The potential energy of a labelled frame, or None when it has none."""
    try:
        return None if atoms.calc is None else float(atoms.get_potential_energy())
    except Exception:  # no energy stored
        return None
