"""φ/ψ of alanine dipeptide through mdtraj, checked against ASE's get_dihedrals on quartets
picked by atom name."""

from __future__ import annotations

import mdtraj as md
import numpy as np
import pytest
from ase.geometry import get_dihedrals
from ase.io import read

from ase_mlmd.errors import IncompatibleTrajectoriesError
from ase_mlmd.observables import compute_dihedrals, compute_phi_psi


def backbone_quartets(topology: md.Topology) -> tuple[list[int], list[int]]:
    """φ = C(ACE)–N–CA–C(ALA), ψ = N–CA–C(ALA)–N(NME), by residue and atom name."""

    def atom(residue: str, name: str) -> int:
        return next(a.index for a in topology.atoms if a.residue.name == residue and a.name == name)

    phi = [atom("ACE", "C"), atom("ALA", "N"), atom("ALA", "CA"), atom("ALA", "C")]
    psi = [atom("ALA", "N"), atom("ALA", "CA"), atom("ALA", "C"), atom("NME", "N")]
    return phi, psi


def ase_dihedral(x: np.ndarray, quartet: list[int]) -> np.ndarray:
    """(T,) radians in (-π, π] from ase.geometry.get_dihedrals (degrees in [0, 360))."""
    i, j, k, l = quartet
    degrees = get_dihedrals(x[:, j] - x[:, i], x[:, k] - x[:, j], x[:, l] - x[:, k])
    return np.radians((degrees + 180.0) % 360.0 - 180.0)


def test_phi_psi_of_ala2_match_ase_and_mdtraj(shared_file):
    pdb = shared_file("ala2/ala2.pdb")
    atoms = read(pdb)
    topology = md.load_topology(pdb)
    rng = np.random.default_rng(0)
    x = atoms.positions[None] + rng.normal(scale=0.15, size=(12, len(atoms), 3))
    x[0] = atoms.positions
    phi, psi = compute_phi_psi(x, topology, atoms.numbers)
    quartet_phi, quartet_psi = backbone_quartets(topology)
    np.testing.assert_allclose(phi, ase_dihedral(x, quartet_phi), atol=1e-5)
    np.testing.assert_allclose(psi, ase_dihedral(x, quartet_psi), atol=1e-5)
    _, reference_phi = md.compute_phi(md.load(pdb))
    assert phi[0] == pytest.approx(float(reference_phi[0, 0]), abs=1e-5)
    # ASE frames work as well (elements taken from them)
    frames = [atoms.copy() for _ in range(3)]
    for k, frame in enumerate(frames):
        frame.positions = x[k]
    phi_frames, _ = compute_phi_psi(frames, topology)
    np.testing.assert_allclose(phi_frames, phi[:3], atol=1e-6)


def test_compute_dihedrals_on_quartets_matches_ase():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 8, 3)) * 2.0
    quartets = np.array([[0, 1, 2, 3], [4, 2, 7, 5], [6, 0, 3, 1]])
    angles = compute_dihedrals(x, quartets)
    assert angles.shape == (5, 3)
    for q, quartet in enumerate(quartets):
        np.testing.assert_allclose(angles[:, q], ase_dihedral(x, list(quartet)), atol=1e-5)


def test_phi_psi_rejects_a_mismatched_topology(shared_file):
    pdb = shared_file("ala2/ala2.pdb")
    atoms = read(pdb)
    topology = md.load_topology(pdb)
    with pytest.raises(IncompatibleTrajectoriesError, match="22 atoms"):
        compute_phi_psi(atoms.positions[:21], topology)
    numbers = atoms.numbers.copy()
    numbers[[0, 1]] = numbers[[1, 0]]
    with pytest.raises(IncompatibleTrajectoriesError, match="atom 0"):
        compute_phi_psi(atoms.positions, topology, numbers)
    with pytest.raises(IncompatibleTrajectoriesError, match="outside"):
        compute_dihedrals(atoms.positions, [[0, 1, 2, 22]])
