# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 07 — Coarse-graining: mappings, a learned mapping, force matching, CG MD, free energies
#
# A coarse-grained (CG) model replaces groups of atoms by *beads* and simulates the beads with
# an effective force field. This tutorial goes through the steps with alanine dipeptide:
#
# 1. fixed mappings (heavy-atom groups, Girvan–Newman partition of the bond graph) of
#    all-atom frames, and what a CG structure is in ASE,
# 2. a learned mapping (Autograin: Wang & Gómez-Bombarelli, npj Comput Mater 2019),
# 3. a CG force field by force matching (Boltzmann-inverted priors + a SchNet correction, as
#    CGnet) on the 5-bead backbone data `../shared/data/ala2_cg`, and the card as a calculator,
# 4. CG Langevin MD of many replicas with the batched engine,
# 5. the free energy over the CG dihedrals against the reference, with the report.
#
# Definitions: `../shared/METRICS.md` §3. The command-line equivalents are `ase-mlmd cg map`,
# `cg autograin`, `cg fit`, `ase-mlmd md --engine torch` and `cg eval` (README). Run it as a
# script; `ASE_MLMD_FAST=1` makes every step tiny (that is how the test suite runs it — the
# numbers are then meaningless). The measured acceptance runs are `benchmarks/cg_ala2.py` and
# `benchmarks/cg_ala2_learned.py` (BENCHMARKS.md).

# %%
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from ase_mlmd import load_calculator
from ase_mlmd.cg.autograin import AutograinConfig, align_frames, autograin, linear_decoder_rmsd
from ase_mlmd.cg.builders import girvan_newman, heavy_atom
from ase_mlmd.cg.data import read_cg_data
from ase_mlmd.cg.evaluate import evaluate_runs
from ase_mlmd.cg.forcefield import KCAL_PER_EV, fit_cg_forcefield
from ase_mlmd.cg.mapping import CGMapping
from ase_mlmd.cg.priors import PriorSettings
from ase_mlmd.cg.report import summary_row, write_report
from ase_mlmd.errors import InvalidStructureError, UnsupportedSpeciesError
from ase_mlmd.md import simulate
from ase_mlmd.train.config import TrainConfig

FAST = os.environ.get("ASE_MLMD_FAST") == "1"
torch.set_num_threads(1 if FAST else 2)
REPO = Path(__file__).resolve().parents[1]
if not (REPO / "benchmarks" / "cg_data").is_dir():  # run from the project root instead
    REPO = Path.cwd().resolve()
SHARED = REPO.parent / "shared" / "data"
workdir = Path(tempfile.mkdtemp(prefix="ase_mlmd_tutorial07_"))
print("outputs in", workdir)

# %% [markdown]
# ## 1. Fixed mappings, and a CG structure in ASE
# `benchmarks/cg_data/ala2_aa_200.extxyz` holds 200 all-atom frames of alanine dipeptide
# (AMBER, implicit solvent, 300 K, OpenMM through `ase-mlmd sample --reference amber-implicit`)
# with forces. A `CGMapping` is a bead × atom weight matrix with bead types and names. The
# heavy-atom mapping puts each heavy atom with its hydrogens in one bead; Girvan–Newman cuts
# the bond graph into N communities.

# %%
aa_frames = read(REPO / "benchmarks" / "cg_data" / "ala2_aa_200.extxyz", index=":")
aa = aa_frames[0]
print(len(aa_frames), "frames of", aa.get_chemical_formula(), "with forces:",
      aa.get_forces().shape)  # fmt: skip
heavy = heavy_atom(aa)
gn6 = girvan_newman(aa, 6)
for name, mapping in [("heavy-atom", heavy), ("Girvan–Newman 6", gn6)]:
    print(f"{name}: {mapping.n_beads} beads, types {list(mapping.bead_types)}")
    for bead, members in zip(mapping.bead_names, mapping.members, strict=True):
        print(f"   {bead}: atoms {members.tolist()}")

# %% [markdown]
# Applying a mapping gives CG frames: ordinary `Atoms` whose "atoms" are beads. The bead type
# names are in `arrays["bead_type"]`, the atomic numbers are pseudo numbers (1 + index of the
# type in `info["bead_types"]`), masses are the summed atom masses, and cell/pbc are kept. The
# forces are the summed atomic forces of each bead (the force map of a non-overlapping
# mapping, METRICS §3).

# %%
cg_frames = gn6.apply(aa_frames)
cg = cg_frames[0]
print("bead types:", [str(t) for t in cg.arrays["bead_type"]])
print("pseudo numbers:", cg.numbers.tolist(), "| type list:", cg.info["bead_types"])
masses = cg.get_masses()
print("masses (amu):", np.round(masses, 3).tolist(), "sum", round(masses.sum(), 3),
      "= all-atom", round(aa.get_masses().sum(), 3))  # fmt: skip
print("mapped forces (eV/Å):", cg.get_forces().shape, "| net force CG vs all-atom:",
      np.round(cg.get_forces().sum(0), 6), np.round(aa.get_forces().sum(0), 6))  # fmt: skip
gn6.to_json(workdir / "gn6.json")
print("round trip through JSON:", CGMapping.from_json(workdir / "gn6.json").n_beads, "beads")

# %% [markdown]
# ## 2. A learned mapping (Autograin)
# Autograin learns the assignment of atoms to beads with a Gumbel-softmax encoder and a linear
# decoder: it minimizes the reconstruction error of the all-atom coordinates from the beads
# plus ρ times the instantaneous mean-force noise ⟨|Σᵢ Cᵢ fᵢ|²⟩ (METRICS §3), with the
# temperature τ annealed over the epochs. Here on the 200 frames (the measured table of
# BENCHMARKS.md used 3 000 frames, 300 epochs and three seeds).

# %%
config = AutograinConfig(n_beads=6, rho=0.1, epochs=5 if FAST else 300, seed=0)
learned = autograin(aa_frames, config, progress=False)
print(f"learned 6 beads: reconstruction RMSD {learned.reconstruction_rmsd:.3f} Å, force "
      f"noise {learned.force_noise:.3f} (eV/Å)², stopped by {learned.stop_reason}")  # fmt: skip
aligned, _ = align_frames(np.stack([a.positions for a in aa_frames]))
for name, mapping in [("Girvan–Newman 6", gn6), ("heavy-atom (10)", heavy)]:
    _, rmsd = linear_decoder_rmsd(mapping.sparse_weights.toarray(), aligned)
    print(f"{name} on the same frames: reconstruction RMSD {rmsd:.3f} Å")
for bead, members in zip(learned.mapping.bead_names, learned.mapping.members, strict=True):
    print(f"   {bead}: atoms {members.tolist()}")
# the mapping learned on the 3 ns run (benchmarks/cg_mappings.py) is committed:
committed = CGMapping.from_json(REPO / "benchmarks" / "cg_data" / "ala2_map_learned6.json")
print("committed learned mapping, types", list(committed.bead_types),
      "| CG bonds", committed.topology().bonds.tolist())  # fmt: skip

# %% [markdown]
# ## 3. Force matching: priors + network → a card
# `../shared/data/ala2_cg` is the 5-bead backbone (C, N, CA, C, N) of alanine dipeptide with
# mapped forces in kcal/mol/Å — the unit must be named (`"kcal/mol"`), and the frames are
# converted to eV/Å. The fit: priors (harmonic bonds and angles, Fourier dihedrals, a
# repulsion) by Boltzmann inversion of the training frames, then prior + SchNet trained by
# force matching ⟨|F_CG − M_F F|²⟩ with the package's training loop, time-ordered split.

# %%
frames = read_cg_data(SHARED / "ala2_cg", "kcal/mol", stride=20 if FAST else 1)
print(len(frames), "CG frames, beads", [str(t) for t in frames[0].arrays["bead_type"]])
train_config = TrainConfig(
    model="schnet",
    cutoff=10.0,
    hyperparameters={"n_atom_basis": 16 if FAST else 32, "n_interactions": 2, "n_rbf": 20},
    split=(0.7, 0.1, 0.2),
    ordered_split=True,
    batch_size=64,
    lr=2e-3,
    max_epochs=2 if FAST else 60,
    max_time=None if FAST else 15 * 60,
    early_stop_patience=10,
    seed=1,
)
priors = PriorSettings(terms=("bonds", "angles", "dihedrals", "repulsion"), temperature_K=300.0)
prior = fit_cg_forcefield(frames, workdir / "prior", train_config, priors, network=False,
                          progress=False)  # fmt: skip
fit = fit_cg_forcefield(frames, workdir / "model", train_config, priors, progress=False)
k2 = KCAL_PER_EV**2
print(f"test force-matching loss per component: prior only {prior.test_loss:.4f} (eV/Å)² "
      f"= {prior.test_loss * k2:.1f} (kcal/mol/Å)²; prior + network "
      f"{fit.test_loss:.4f} (eV/Å)² = {fit.test_loss * k2:.1f} (kcal/mol/Å)²")  # fmt: skip
print("card:", fit.card_path)

# %% [markdown]
# The mapped forces are very noisy (the force-matching loss is dominated by the fluctuating
# part of the all-atom force that no function of the beads can predict), so the test loss
# tells the models apart by little; the free energy below is the real test.
#
# The card is an ordinary calculator. It refuses an all-atom structure: it has no bead types.

# %%
calc = load_calculator(str(fit.card_path))
cg = frames[0].copy()
cg.calc = calc
print("CG energy", round(cg.get_potential_energy(), 4), "eV; forces", cg.get_forces().shape)
try:
    aa_copy = aa.copy()
    aa_copy.calc = calc
    aa_copy.get_forces()
except (InvalidStructureError, UnsupportedSpeciesError) as err:
    print("refused:", err)

# %% [markdown]
# ## 4. CG Langevin MD with the batched engine
# Many replicas run at once in one batch (the same engine as `ase-mlmd md --engine torch
# --replicas N`), started from frames spread over the training part. A replica whose run
# collapses is stopped and the others go on.

# %%
n_fit = int(0.7 * len(frames))
replicas = 4 if FAST else 32
starts = []
for k in range(replicas):
    start = frames[k * n_fit // replicas].copy()
    start.calc = None
    starts.append(start)
runs = {}
for name, card in [("prior", prior.card_path), ("prior+network", fit.card_path)]:
    folder = workdir / "runs" / name
    folder.mkdir(parents=True)
    result = simulate(
        starts,
        str(card),
        ensemble="nvt-langevin",
        temperature=300.0,
        timestep=4.0,
        friction=0.002,
        steps=200 if FAST else 50_000,
        save_every=20 if FAST else 250,
        trajectory=str(folder / "replica_{i}.traj"),
        seed=7,
        progress=False,
    )
    runs[name] = folder
    print(name, [r.status for r in result.replicas])

# %% [markdown]
# ## 5. Free energy over the CG dihedrals
# φ = (bead 0, 1, 2, 3) and ψ = (1, 2, 3, 4) of the backbone beads; F = −kT ln p on a 60 × 60
# grid, the MAE over the bins the reference populates below 4 kT, Jensen–Shannon divergences
# of the (φ, ψ) histogram and of every bond/angle/dihedral distribution, and the report with
# plots (`ase-mlmd cg eval` writes the same).

# %%
evaluations = {name: evaluate_runs(frames, folder, label=name) for name, folder in runs.items()}
for name, ev in evaluations.items():
    row = summary_row(ev)
    print(f"{name}: {ev.n_frames} frames, FES MAE {row['fes_mae_kT']:.2f} kT, "
          f"JS(φ,ψ) {row['js_phi_psi']:.3f}, populations {ev.populations}")  # fmt: skip
print("reference populations", evaluations["prior"].populations_reference)
report = write_report(evaluations, workdir / "report")
print("report:", report, sorted(p.name for p in report.parent.iterdir()))

# %% [markdown]
# With the full settings the 5a acceptance runs (`benchmarks/cg_ala2.py`, 100 replicas, ≥ 100
# ns CG) and 5b (`benchmarks/cg_ala2_learned.py`: all-atom data → the learned 6-bead mapping →
# fit → MD → FES over two CG dihedrals chosen by mutual information with the all-atom φ/ψ)
# give the figures in BENCHMARKS.md.
