"""generate_conformers: ETKDG, ETKDG + relaxation with a calculator, bad requests."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.calculator import CalculationFailed, Calculator, all_changes
from ase.calculators.emt import EMT
from rdkit import Chem

from ase_mlmd.conformers.generate import embed_etkdg, generate_conformers, relax_conformers
from ase_mlmd.conformers.molecules import mol_from_smiles
from ase_mlmd.conformers.rmsd import best_rmsd_matrix, heavy_indices, symmetry_matches
from ase_mlmd.conformers.search import KCAL
from ase_mlmd.data.reference import reference_calculator
from ase_mlmd.errors import ConformerRequestError, UnsupportedSpeciesError


def test_etkdg_is_seeded_distinct_and_in_addhs_order():
    a = generate_conformers("CCCCO", 5, "etkdg", seed=4)
    b = generate_conformers("CCCCO", 5, "etkdg", seed=4)
    assert len(a) == 5
    np.testing.assert_array_equal(a[2].positions, b[2].positions)
    order = [x.GetSymbol() for x in Chem.AddHs(Chem.MolFromSmiles("CCCCO")).GetAtoms()]
    assert a[0].get_chemical_symbols() == order
    assert np.abs(a[0].positions - a[1].positions).max() > 0.1


def test_relax_with_xtb_gives_minima_sorted_pruned_within_window():
    calc = reference_calculator("gfn2-xtb")
    confs = generate_conformers("CCO", 4, "etkdg+relax", calc=calc, window=6.0, seed=1)
    energies = np.array([c.get_potential_energy() for c in confs])
    assert np.all(np.diff(energies) >= 0)
    assert (energies - energies[0]).max() <= 6.0 * KCAL
    for c in confs:
        probe = c.copy()
        probe.calc = calc
        assert np.abs(probe.get_forces()).max() < 0.06  # relaxed to fmax 0.05 eV/A
        assert probe.get_potential_energy() == pytest.approx(c.get_potential_energy(), abs=1e-5)
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    heavy = heavy_indices(mol)
    xyz = np.array([c.positions[heavy] for c in confs])
    dist = best_rmsd_matrix(xyz, xyz, symmetry_matches(mol))
    assert (dist[np.triu_indices(len(confs), 1)] > 0.25).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "-n"),
        ({"n": -3}, "-n"),
        ({"n": 2, "method": "rdkit"}, "unknown conformer method"),
        ({"n": 2, "method": "confvae"}, "--model"),
    ],
)
def test_bad_requests(kwargs, match):
    with pytest.raises(ConformerRequestError, match=match):
        generate_conformers("CCO", **kwargs)


def test_element_the_calculator_cannot_handle():
    with pytest.raises(UnsupportedSpeciesError, match="Cl"):
        generate_conformers("CCCl", 2, "etkdg+relax", calc=EMT())


class _FailsFarFromOrigin(Calculator):
    """Zero energy and forces (every start is already relaxed), but fails like a GFN2-xTB SCF
    that does not converge when atom 0 sits beyond x = 50 Å."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self.atoms.positions[0, 0] > 50.0:
            raise CalculationFailed("SCF not converged in 250 cycles")
        self.results = {"energy": 0.0, "forces": np.zeros((len(self.atoms), 3))}


def test_relax_leaves_out_structures_the_calculator_fails_on():
    mol = mol_from_smiles("CCO")
    starts = embed_etkdg(mol, 3, seed=1)
    starts[1] += 100.0  # the calculator fails on this one only
    positions, energies, kept = relax_conformers(mol, starts, _FailsFarFromOrigin())
    assert kept.tolist() == [0, 2]
    np.testing.assert_allclose(positions, starts[[0, 2]])
    np.testing.assert_allclose(energies, 0.0)
