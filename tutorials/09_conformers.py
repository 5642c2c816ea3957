# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 09 — Conformers: SMILES in, ASE structures out, judged against reference ensembles
#
# A molecule's *conformers* are its low-energy 3D shapes (rotations about single bonds, ring
# puckers). This tutorial:
#
# 1. converts between SMILES, RDKit molecules and ASE `Atoms` (atom order and bonds kept),
# 2. generates conformers with RDKit's ETKDG and with ETKDG + relaxation by a calculator
#    (GFN2-xTB), pruned by a symmetry-aware RMSD and an energy window,
# 3. computes a small *reference ensemble* with the package's own conformer search (GFN2-xTB,
#    torsion kicks + short MD + quenches, no RDKit embedding) and
# 4. scores the generators against it: COV-R/MAT-R (is each reference conformer found?) and
#    COV-P/MAT-P (is each generated conformer real?), METRICS.md §5.
#
# Command-line equivalents: `ase-mlmd conformers "SMILES" -n 20 -o out.extxyz`,
# `ase-mlmd conformers reference mols.smi -o ref/`, `ase-mlmd conformers eval ...` (README).
# `ASE_MLMD_FAST=1` (how the test suite runs it) makes every step tiny; the measured benchmark
# on 62 held-out FreeSolv molecules is `benchmarks/conformers_bench.py` (BENCHMARKS.md).

# %%
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from rdkit import Chem

from ase_mlmd.conformers.generate import generate_conformers
from ase_mlmd.conformers.metrics import evaluate_molecule
from ase_mlmd.conformers.molecules import atoms_to_mol, mol_from_smiles, molecule_record
from ase_mlmd.conformers.reference import generate_reference, reference_ensembles
from ase_mlmd.conformers.search import KCAL
from ase_mlmd.errors import ConformerRequestError, InvalidMoleculeError

FAST = os.environ.get("ASE_MLMD_FAST") == "1"
workdir = Path(tempfile.mkdtemp(prefix="ase_mlmd_tutorial09_"))
print("outputs in", workdir)
SMILES = "CCCO" if FAST else "CCCCO"  # propanol / butanol

# %% [markdown]
# ## 1. Molecules and structures
# `mol_from_smiles` adds hydrogens (atom order = RDKit's `AddHs` order). A salt keeps its
# largest fragment with a warning; unspecified stereo is fixed to one stereoisomer with a
# warning (enantiomers are not superimposable, so an ensemble needs one).

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    salt = mol_from_smiles("[Na+].CC(=O)[O-]")
    chiral = mol_from_smiles("CC(O)CC")
for w in caught:
    print(type(w.message).__name__, "—", w.message)
print("kept:", Chem.MolToSmiles(Chem.RemoveHs(salt)))
print("stereo assigned:", Chem.MolToSmiles(Chem.RemoveHs(chiral)))
try:
    mol_from_smiles("C1CC", source="my.smi line 3")
except InvalidMoleculeError as err:
    print("error:", err)

# %% [markdown]
# ## 2. ETKDG and ETKDG + GFN2-xTB relaxation
# Each conformer is an `Atoms` with `info["smiles"]` and `info["mapped_smiles"]` (the bonds,
# so `atoms_to_mol` rebuilds the RDKit molecule). Relaxed ones carry their energy (eV).

# %%
n = 4 if FAST else 20
etkdg = generate_conformers(SMILES, n, "etkdg", seed=0)
relaxed = generate_conformers(SMILES, n, "etkdg+relax", calc="gfn2-xtb", window=6.0, seed=0)
print(f"ETKDG: {len(etkdg)} conformers; relaxed + pruned (0.25 Å, 6 kcal/mol): {len(relaxed)}")
for atoms in relaxed:
    print(f"  E = {atoms.get_potential_energy():.4f} eV, +{atoms.info['rel_energy_kcal']} kcal/mol")
mol = atoms_to_mol(relaxed)
print("back to RDKit:", Chem.MolToSmiles(Chem.RemoveHs(mol)), mol.GetNumConformers(), "confs")
try:
    generate_conformers(SMILES, 0)
except ConformerRequestError as err:
    print("error:", err)

# %% [markdown]
# ## 3. A reference ensemble from the package's own search
# The search starts from a geometry built from the bond graph (no RDKit embedding), turns
# torsions at random, runs a few MD steps at 800 K and quenches with GFN2-xTB; structures
# whose bonds or stereo changed are dropped; duplicates (heavy-atom RMSD ≤ 0.25 Å) are merged.
# The driver writes `REF/<split>/<id>.extxyz` and an index, and resumes where it stopped.

# %%
budget = {"max_gradients": 60, "patience": 2} if FAST else {"max_gradients": 600}
record = molecule_record(SMILES, "mol", "tutorial")
generate_reference([record], {"mol": "test"}, workdir / "ref", **budget)
ref = reference_ensembles(workdir / "ref" / "test")["mol"]
rel = [(a.info["energy"] - ref[0].info["energy"]) / KCAL for a in ref]
print(f"{len(ref)} reference conformers, kcal/mol above the lowest:", np.round(rel, 2))

# %% [markdown]
# ## 4. Coverage and matching
# Protocol: generate 2K conformers for K references; heavy atoms; δ = 0.5 Å.

# %%
k = len(ref)
for method in ("etkdg", "etkdg+relax"):
    gen = generate_conformers(SMILES, 2 * k, method, prune_rmsd=0, window=None, seed=1)
    m = evaluate_molecule(ref, gen)
    print(
        f"{method:12s} COV-R {100 * m['cov_r']:5.1f} %  MAT-R {m['mat_r']:.3f} Å  "
        f"COV-P {100 * m['cov_p']:5.1f} %  MAT-P {m['mat_p']:.3f} Å"
    )
