"""Dihedral angles of a trajectory through mdtraj (backbone φ/ψ from a topology, or any atom
quartets). Positions in Å are handed to mdtraj in nm; angles come back in radians, (−π, π].

mdtraj is an optional dependency (the ``analysis`` extra); it is imported when called.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from ase_mlmd.errors import BackendNotAvailableError, IncompatibleTrajectoriesError
from ase_mlmd.observables.trajectory import resolve_trajectory

if TYPE_CHECKING:
    import mdtraj


def _mdtraj():
    try:
        import mdtraj
    except ImportError as error:  # pragma: no cover - mdtraj is installed with the extra
        raise BackendNotAvailableError(
            "dihedral angles need mdtraj; install it with `pip install ase-mlmd[analysis]`"
        ) from error
    return mdtraj


def _as_mdtraj(positions: np.ndarray, topology: mdtraj.Topology | None) -> mdtraj.Trajectory:
    """An mdtraj Trajectory of positions (T, N, 3) Å (converted to nm)."""
    md = _mdtraj()
    return md.Trajectory((positions / 10.0).astype(np.float32), topology)


def compute_dihedrals(
    trajectory: np.ndarray | Atoms | Iterable[Atoms], quartets: np.ndarray
) -> np.ndarray:
    """Dihedral angles of atom quartets (i, j, k, l), open boundaries.

    Args:
        trajectory: positions (T, N, 3) Å, or ASE frames.
        quartets: (Q, 4) atom indices.

    Returns:
        (T, Q) angles in radians, (−π, π] (mdtraj's convention, IUPAC sign).
    """
    positions, _, _ = resolve_trajectory(trajectory)
    quartets = np.asarray(quartets, dtype=np.int64).reshape(-1, 4)
    if quartets.size and (quartets.min() < 0 or quartets.max() >= positions.shape[1]):
        raise IncompatibleTrajectoriesError(
            f"quartets refer to atoms outside 0 … {positions.shape[1] - 1}"
        )
    md = _mdtraj()
    return md.compute_dihedrals(_as_mdtraj(positions, None), quartets, periodic=False)


def compute_phi_psi(
    trajectory: np.ndarray | Atoms | Iterable[Atoms],
    topology: mdtraj.Topology,
    numbers: np.ndarray | None = None,
    *,
    check_elements: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Backbone dihedrals φ and ψ of a dipeptide (e.g. alanine dipeptide), via mdtraj's
    ``compute_phi`` / ``compute_psi`` on the given topology.

    Args:
        trajectory: positions (T, N, 3) Å, or ASE frames, in the topology's atom order.
        topology: an ``mdtraj.Topology`` (e.g. ``mdtraj.load_topology("ala2.pdb")``).
        numbers: (N,) atomic numbers to check against the topology (frames bring their own).
        check_elements: compare elements with the topology's (turn off for a topology file
            whose element column is wrong; the atom count is always checked).

    Returns:
        φ (T,) and ψ (T,), radians in (−π, π].

    Raises:
        IncompatibleTrajectoriesError: atom count or elements differ from the topology, or
            the topology has not exactly one φ and one ψ.
    """
    positions, _, numbers = resolve_trajectory(trajectory, None, numbers)
    if topology.n_atoms != positions.shape[1]:
        raise IncompatibleTrajectoriesError(
            f"the topology has {topology.n_atoms} atoms, the trajectory {positions.shape[1]}"
        )
    if check_elements and numbers is not None:
        expected = np.array([atom.element.atomic_number for atom in topology.atoms])
        if not np.array_equal(expected, numbers):
            k = int(np.flatnonzero(expected != numbers)[0])
            raise IncompatibleTrajectoriesError(
                f"atom {k} is {chemical_symbols[expected[k]]} in the topology but "
                f"{chemical_symbols[numbers[k]]} in the trajectory; use the topology of the "
                "simulated molecule in its atom order (check_elements=False if only the "
                "topology file's element column is wrong)"
            )
    md = _mdtraj()
    traj = _as_mdtraj(positions, topology)
    _, phi = md.compute_phi(traj, periodic=False)
    _, psi = md.compute_psi(traj, periodic=False)
    if phi.shape[1] != 1 or psi.shape[1] != 1:
        raise IncompatibleTrajectoriesError(
            f"the topology has {phi.shape[1]} φ and {psi.shape[1]} ψ dihedrals, a dipeptide "
            "one each; use compute_dihedrals with explicit quartets"
        )
    return phi[:, 0].astype(np.float64), psi[:, 0].astype(np.float64)
