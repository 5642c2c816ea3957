"""Start geometry from the graph, graph/stereo checks, and the GFN2-xTB conformer search."""

from __future__ import annotations

import numpy as np
import pytest
from ase.data import covalent_radii
from rdkit import Chem
from rdkit.Chem import rdMolTransforms

from ase_mlmd.conformers.build import embed_from_graph, stereo_matches
from ase_mlmd.conformers.molecules import mol_from_smiles, with_positions
from ase_mlmd.conformers.search import KCAL, conformer_search, graph_preserved
from ase_mlmd.data.reference import reference_calculator


@pytest.mark.parametrize(
    ("smiles", "seed"),
    [
        ("C/C=C/C=O", 1),
        ("C[C@@H]1CC[C@H](O)CC1", 1),
        ("CC[C@H](C)Cl", 178),  # gave a strained start that inverted before the 4-face fix
        ("C([C@H]([C@H]([C@@H]([C@@H](CO)O)O)O)O)O", 0),  # four stereocentres in a row
    ],
)
def test_graph_embedding_has_the_molecules_bonds_and_stereo(smiles, seed):
    mol = mol_from_smiles(smiles)
    pos = embed_from_graph(mol, np.random.default_rng(seed))
    assert stereo_matches(mol, pos) == ([], [])
    assert graph_preserved(mol, pos)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        d = np.linalg.norm(pos[i] - pos[j])
        assert (
            0.75 * (covalent_radii[z[i]] + covalent_radii[z[j]])
            < d
            < 1.1 * (covalent_radii[z[i]] + covalent_radii[z[j]])
        )


def test_graph_check_detects_broken_bond_and_inverted_centre():
    mol = mol_from_smiles("C[C@H](Cl)CC")
    pos = embed_from_graph(mol, np.random.default_rng(2))
    cl = next(a.GetIdx() for a in mol.GetAtoms() if a.GetSymbol() == "Cl")
    stretched = pos.copy()
    stretched[cl] += 3.0 * (pos[cl] - pos[1]) / np.linalg.norm(pos[cl] - pos[1])
    assert not graph_preserved(mol, stretched)
    mirror = pos * np.array([1.0, 1.0, -1.0])
    assert stereo_matches(mol, mirror)[0] == [1]
    assert not graph_preserved(mol, mirror)


def test_search_finds_butane_anti_and_gauche_with_xtb():
    mol = mol_from_smiles("CCCC")
    calc = reference_calculator("gfn2-xtb")
    res = conformer_search(mol, calc, max_gradients=250, patience=6, seed=0, md_steps=5)
    assert np.all(np.diff(res.energies) >= 0)
    dihedrals = [
        abs(rdMolTransforms.GetDihedralDeg(with_positions(mol, p).GetConformer(), 0, 1, 2, 3))
        for p in res.positions
    ]
    # lowest is anti (~180 deg); gauche (~65 deg) lies 0.3-1.5 kcal/mol above (GFN2-xTB)
    assert dihedrals[0] == pytest.approx(180.0, abs=10.0)
    gauche = [k for k, d in enumerate(dihedrals) if abs(d - 65.0) < 15.0]
    assert gauche, dihedrals
    rel = (res.energies[gauche[0]] - res.energies[0]) / KCAL
    assert 0.2 < rel < 1.5
    # every structure kept is a minimum with the same bonds
    for p in res.positions:
        assert graph_preserved(mol, p)
        atoms_forces = _forces(mol, p, calc)
        assert np.abs(atoms_forces).max() < 0.1
    assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == "CCCC"


def _forces(mol, pos, calc):
    from ase import Atoms

    atoms = Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=pos)
    atoms.calc = calc
    return atoms.get_forces()


def test_extended_geometry_puts_chain_torsions_anti_and_keeps_bonds():
    from ase_mlmd.conformers.build import extended_geometry, side_of_bond
    from ase_mlmd.conformers.search import torsion_bonds

    mol = mol_from_smiles("CCCCCCO")
    pos = embed_from_graph(mol, np.random.default_rng(5))
    torsions = [(i, j, side_of_bond(mol, i, j)) for i, j in torsion_bonds(mol)]
    ext = extended_geometry(mol, pos, torsions)
    conf = with_positions(mol, ext).GetConformer()
    for a in range(4):  # heavy-atom chain C0-C1-...-C5-O6
        assert abs(rdMolTransforms.GetDihedralDeg(conf, a, a + 1, a + 2, a + 3)) > 179.0
    # only torsions changed: every bond length as before
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        assert np.linalg.norm(ext[i] - ext[j]) == pytest.approx(np.linalg.norm(pos[i] - pos[j]))
