"""The FreeSolv ML card of issue 15 (``benchmarks/conformer_runs/freesolv-xtb-schnet``, not
shipped in ``calculators/``): it loads, covers the training elements, and relaxes a training-set
molecule to the GFN2-xTB minimum geometry with its bonds kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ase_mlmd.calculators.registry import load_calculator
from ase_mlmd.conformers.generate import RELAX_PRUNE_RMSD, embed_etkdg, relax_conformers
from ase_mlmd.conformers.molecules import atoms_to_mol
from ase_mlmd.conformers.reference import read_ensemble
from ase_mlmd.conformers.rmsd import best_rmsd_matrix, heavy_indices, symmetry_matches
from ase_mlmd.data.reference import reference_calculator

ROOT = Path(__file__).resolve().parents[2]
CARD = str(ROOT / "benchmarks/conformer_runs/freesolv-xtb-schnet/card.toml")
#: the same conformer: closer than the package's duplicate threshold (0.25 Å heavy-atom RMSD)
SAME = RELAX_PRUNE_RMSD
#: lowest GFN2-xTB conformer of a training molecule (2-ethylpyrazine), committed reference data
MINIMUM = ROOT / "benchmarks/conformer_data/ref_freesolv/train/freesolv_003.extxyz"


def _heavy_rmsd(mol, a: np.ndarray, b: np.ndarray) -> float:
    heavy = heavy_indices(mol)
    return float(best_rmsd_matrix(a[None, heavy], b[None, heavy], symmetry_matches(mol))[0, 0])


def test_card_loads_and_covers_the_training_elements():
    # H C N O F P S Cl Br I: every element of the FreeSolv train molecules (and of the test ones)
    assert load_calculator(CARD).model.species == (1, 6, 7, 8, 9, 15, 16, 17, 35, 53)


def test_card_relaxes_a_rattled_xtb_minimum_back_to_it():
    minimum = read_ensemble(MINIMUM)[0]
    mol = atoms_to_mol(minimum)
    start = minimum.positions + np.random.default_rng(0).normal(0.0, 0.1, minimum.positions.shape)
    assert _heavy_rmsd(mol, start, minimum.positions) > 0.1
    positions, _, kept = relax_conformers(mol, start[None], CARD)
    assert kept.tolist() == [0]  # bonds and stereo kept
    assert _heavy_rmsd(mol, positions[0], minimum.positions) < SAME


def test_card_minimum_from_etkdg_is_near_the_xtb_minimum_reached_from_it():
    mol = atoms_to_mol(read_ensemble(MINIMUM)[0])
    mol.RemoveAllConformers()
    start = embed_etkdg(mol, 1, seed=5)
    ml_pos, _, kept = relax_conformers(mol, start, CARD)
    assert kept.tolist() == [0]
    xtb_pos, _, xkept = relax_conformers(mol, ml_pos, reference_calculator("gfn2-xtb"))
    assert xkept.tolist() == [0]
    assert _heavy_rmsd(mol, ml_pos[0], xtb_pos[0]) < SAME
