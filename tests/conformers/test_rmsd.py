"""Vectorised symmetry-aware RMSD against RDKit's GetBestRMS; pruning."""

from __future__ import annotations

import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolAlign
from scipy.spatial.transform import Rotation

from ase_mlmd.conformers.rmsd import (
    best_rmsd_matrix,
    heavy_indices,
    prune_conformers,
    symmetry_matches,
)


def _confs(smiles: str, n: int, seed: int = 11):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMultipleConfs(mol, n, randomSeed=seed)
    heavy = heavy_indices(mol)
    return mol, np.array([c.GetPositions()[heavy] for c in mol.GetConformers()])


def test_matches_rdkit_get_best_rms_including_symmetric_groups():
    # tert-butyl (3! permutations), a carboxylic acid (terminal O symmetrized), a nitro group
    for smiles in ("CC(C)(C)c1ccccc1O", "OC(=O)CCC(C)C", "CCC[N+](=O)[O-]"):
        mol, xyz = _confs(smiles, 5)
        ours = best_rmsd_matrix(xyz, xyz, symmetry_matches(mol))
        heavy = Chem.RemoveHs(mol)
        rdkit = np.array(
            [
                [rdMolAlign.GetBestRMS(Chem.Mol(heavy), Chem.Mol(heavy), i, j) for j in range(5)]
                for i in range(5)
            ]
        )
        np.testing.assert_allclose(ours, rdkit, atol=1e-6)


def test_rotated_and_symmetry_permuted_copy_has_zero_rmsd():
    mol, xyz = _confs("CC(C)(C)CCO", 1)
    matches = symmetry_matches(mol)
    assert len(matches) == 6  # the three methyls of the tert-butyl group
    rot = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    moved = xyz[0] @ rot.T + np.array([4.0, -2.0, 1.0])
    moved = moved[matches[3]]  # relabel the equivalent methyls
    assert best_rmsd_matrix(xyz, moved[None], matches)[0, 0] < 1e-6
    # without the symmetry the relabelled copy does not superpose
    identity = matches[:1]
    assert best_rmsd_matrix(xyz, moved[None], identity)[0, 0] > 0.5


def test_mirror_image_is_not_superposable():
    mol, xyz = _confs("C[C@H](Cl)CC", 1)
    mirror = xyz * np.array([1.0, 1.0, -1.0])
    assert best_rmsd_matrix(xyz, mirror, symmetry_matches(mol))[0, 0] > 0.1


def test_prune_keeps_lowest_energy_of_duplicates_and_applies_window():
    mol, xyz = _confs("CCCCO", 1)
    shifted = xyz[0] + 0.01  # a duplicate (RMSD 0 after superposition)
    other = xyz[0].copy()
    other[-1] += np.array([1.5, 0.0, 0.0])  # clearly different
    coords = np.array([xyz[0], shifted, other, other + 0.001])
    matches = symmetry_matches(mol)
    assert prune_conformers(coords, [0.5, 0.1, 0.3, 9.0], matches, 0.25) == [1, 2]
    assert prune_conformers(coords, [0.5, 0.1, 0.3, 9.0], matches, 0.25, window=0.1) == [1]
    assert prune_conformers(coords, None, matches, 0.25) == [0, 2]
