"""SMILES/Mol <-> Atoms conversion, bad input (invalid SMILES, salts, stereo), FreeSolv split."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from ase.io import read, write
from rdkit import Chem
from rdkit.Chem import AllChem

from ase_mlmd.conformers.molecules import (
    FragmentWarning,
    StereoWarning,
    atoms_to_mol,
    mol_from_smiles,
    mol_to_atoms,
    read_smiles_file,
    select_molecules,
    split_molecules,
)
from ase_mlmd.errors import InvalidMoleculeError, StructureFileError


def _embedded(smiles: str, seed: int = 3) -> Chem.Mol:
    mol = mol_from_smiles(smiles)
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    return mol


def test_atom_order_is_addhs_order_and_round_trip_through_extxyz_keeps_graph():
    mol = _embedded("OC(=O)c1ccccc1[N+](=O)[O-]")
    expected = Chem.AddHs(Chem.MolFromSmiles("OC(=O)c1ccccc1[N+](=O)[O-]"))
    atoms = mol_to_atoms(mol, energy=-1.25, mol_id="x")
    assert [a.GetSymbol() for a in expected.GetAtoms()] == atoms.get_chemical_symbols()
    buf = io.StringIO()
    write(buf, atoms, format="extxyz")
    buf.seek(0)
    back = read(buf, format="extxyz")
    assert back.get_potential_energy() == pytest.approx(-1.25)
    mol2 = atoms_to_mol(back)
    np.testing.assert_allclose(mol2.GetConformer().GetPositions(), atoms.positions, atol=1e-6)
    for b1 in mol.GetBonds():
        b2 = mol2.GetBondBetweenAtoms(b1.GetBeginAtomIdx(), b1.GetEndAtomIdx())
        assert b2 is not None and b2.GetBondType() == b1.GetBondType()
    assert mol2.GetNumBonds() == mol.GetNumBonds()
    assert [a.GetFormalCharge() for a in mol2.GetAtoms()] == [
        a.GetFormalCharge() for a in mol.GetAtoms()
    ]


def test_stereo_survives_conversion():
    mol = _embedded("C[C@H](Cl)CC")
    back = atoms_to_mol(mol_to_atoms(mol))
    Chem.AssignStereochemistryFrom3D(back)
    assert Chem.MolToSmiles(Chem.RemoveHs(back)) == Chem.MolToSmiles(Chem.RemoveHs(mol))


def test_atoms_not_matching_their_smiles_are_refused():
    atoms = mol_to_atoms(_embedded("CCO"))
    atoms.numbers[[0, 2]] = atoms.numbers[[2, 0]]
    with pytest.raises(InvalidMoleculeError, match="does not match"):
        atoms_to_mol(atoms)


def test_invalid_smiles_in_a_file_names_the_string_and_line(tmp_path):
    path = tmp_path / "mols.smi"
    path.write_text("# header\nCCO ethanol\n\nC1CC broken\n")
    with pytest.raises(InvalidMoleculeError, match=r"'C1CC'.*mols.smi line 4"):
        read_smiles_file(path)
    with pytest.raises(StructureFileError):
        read_smiles_file(tmp_path / "missing.smi")


def test_salt_keeps_largest_fragment_with_warning_or_is_refused():
    with pytest.warns(FragmentWarning, match=r"dropped \[Na\+\]"):
        mol = mol_from_smiles("[Na+].CC(=O)[O-]")
    assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == "CC(=O)[O-]"
    with pytest.raises(InvalidMoleculeError, match="disconnected"):
        mol_from_smiles("[Na+].CC(=O)[O-]", fragments="refuse")


def test_unspecified_stereo_is_assigned_with_warning_or_refused():
    with pytest.warns(StereoWarning):
        mol = mol_from_smiles("CC(O)CC")
    centres = Chem.FindMolChiralCenters(mol, includeUnassigned=True, useLegacyImplementation=False)
    assert centres and all(label in ("R", "S") for _, label in centres)
    with pytest.raises(InvalidMoleculeError, match="stereo"):
        mol_from_smiles("CC(O)CC", stereo="refuse")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mol_from_smiles("C[C@H](O)CC")  # specified: no warning


def test_freesolv_selection_and_split():
    records = select_molecules()
    assert len(records) == 311
    for rec in records:
        mol = Chem.MolFromSmiles(rec.smiles)
        assert mol.GetNumHeavyAtoms() <= 12
        assert 1 <= Chem.rdMolDescriptors.CalcNumRotatableBonds(mol) <= 6
    split = split_molecules(records, seed=123)
    assert split == split_molecules(records, seed=123)
    parts = list(split.values())
    assert parts.count("test") >= 50 and parts.count("train") >= 150
    assert set(split) == {r.id for r in records}
    assert split != split_molecules(records, seed=124)
