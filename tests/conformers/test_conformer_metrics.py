"""COV/MAT metrics: a hand-built case, RDKit's own RMSD, other atom orders, reports."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolAlign

from ase_mlmd.conformers.metrics import (
    coverage_matching,
    energy_above_reference,
    evaluate_sets,
    rmsd_matrix,
    summarize,
)
from ase_mlmd.conformers.molecules import mol_from_smiles, mol_to_atoms, with_positions
from ase_mlmd.conformers.report import write_report
from ase_mlmd.conformers.search import KCAL
from ase_mlmd.errors import DataFormatError


def test_coverage_and_matching_by_hand():
    # 2 references x 4 generated
    dist = np.array([[0.2, 0.9, 1.4, 0.6], [0.7, 0.8, 0.55, 1.0]])
    m = coverage_matching(dist, delta=0.5)
    assert m["cov_r"] == 0.5  # ref 0 (0.2) covered, ref 1 (0.55) not
    assert m["mat_r"] == pytest.approx((0.2 + 0.55) / 2)
    assert m["cov_p"] == 0.25  # only generated 0 within 0.5 of a reference
    assert m["mat_p"] == pytest.approx((0.2 + 0.8 + 0.55 + 0.6) / 4)
    assert coverage_matching(dist, delta=0.6)["cov_r"] == 1.0


def _frames(smiles, n, seed):
    mol = mol_from_smiles(smiles)
    ids = AllChem.EmbedMultipleConfs(mol, n, randomSeed=seed)
    return mol, [mol_to_atoms(with_positions(mol, mol.GetConformer(i).GetPositions())) for i in ids]


def test_rmsd_matrix_agrees_with_rdkit_for_another_atom_order():
    ref_mol, ref = _frames("CC(C)(C)CC(=O)O", 3, 5)
    gen_mol, gen = _frames("OC(=O)CC(C)(C)C", 4, 9)  # same molecule, other atom order
    ours = rmsd_matrix(ref, gen)
    expected = np.array(
        [
            [
                rdMolAlign.GetBestRMS(
                    Chem.RemoveHs(with_positions(gen_mol, g.positions)),
                    Chem.RemoveHs(with_positions(ref_mol, r.positions)),
                )
                for g in gen
            ]
            for r in ref
        ]
    )
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_other_molecule_is_refused_and_missing_molecules_listed(tmp_path):
    _, ref = _frames("CCCCO", 2, 1)
    _, other = _frames("CCCCN", 2, 1)
    with pytest.raises(DataFormatError, match="not the reference"):
        rmsd_matrix(ref, other)
    rows = evaluate_sets({"a": ref, "b": ref}, {"a": ref + ref})
    assert rows[1] == {"id": "b", "missing": True}
    assert rows[0]["cov_r"] == 1.0 and rows[0]["mat_r"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(DataFormatError, match="no generated"):
        evaluate_sets({"a": ref}, {"z": ref})
    summary = write_report(rows, tmp_path / "report")
    assert summary["n_molecules"] == 1 and summary["cov_r_median"] == 1.0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| generated | 1 | 100 / 100 |" in text and "b" in text
    assert (tmp_path / "report" / "cov_mat.png").stat().st_size > 1000


def test_energy_above_reference_and_summary():
    e = energy_above_reference([-10.0 + 2 * KCAL, -10.0 - KCAL], [-10.0, -9.0])
    assert e["e_min"] == pytest.approx(-1.0) and e["e_mean"] == pytest.approx(0.5)
    s = summarize([{"cov_r": 1.0}, {"cov_r": 0.0}, {"cov_r": 0.5}, {"missing": True}], ["cov_r"])
    assert s == {"n_molecules": 3, "cov_r_mean": 0.5, "cov_r_median": 0.5}
