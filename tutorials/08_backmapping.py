# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 08 — Backmapping: all-atom structures from CG structures with a CGVAE
#
# A CG simulation (tutorial 07) moves beads; to look at atoms again — hydrogen bonds, side
# chains, an all-atom energy — each CG frame must be *backmapped*. Many all-atom structures
# fit one CG frame, so a good backmapper is generative: CGVAE (Wang et al., ICML 2022) learns
# p(atoms | beads) with a rotation-equivariant variational auto-encoder. This tutorial, with
# alanine dipeptide:
#
# 1. (CG, all-atom) pairs from all-atom frames and a Girvan–Newman mapping,
# 2. training a CGVAE (time-ordered split, EMA, early stopping, checkpoint, card),
# 3. sampling several all-atom structures per CG frame; the CG input is reproduced exactly
#    and rotating the CG frame rotates the samples,
# 4. the linear baseline and the metrics of METRICS.md §4 (RMSD, graph-edit ratio, clashes),
# 5. for Cα traces of proteins, the PULCHRA card (no training).
#
# Command-line equivalents: `ase-mlmd backmap train` / `backmap run` (README). Run it as a
# script; `ASE_MLMD_FAST=1` makes training tiny (how the test suite runs it — the numbers are
# then meaningless). The measured acceptance run is `benchmarks/backmap_ala2.py` (BENCHMARKS.md).

# %%
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from ase.io import read
from scipy.spatial.transform import Rotation

from ase_mlmd.backmap.card import load_backmapper
from ase_mlmd.backmap.cgvae import CGVAEHyper
from ase_mlmd.backmap.linear import LinearBackmapper
from ase_mlmd.backmap.metrics import backmap_metrics, subset_bonds, valid_and_clashing
from ase_mlmd.backmap.pairs import BackmapPairs
from ase_mlmd.backmap.pulchra import PulchraBackmapper
from ase_mlmd.backmap.train import BackmapTrainConfig, train_backmapper
from ase_mlmd.cg.builders import girvan_newman
from ase_mlmd.errors import BackmapError

FAST = os.environ.get("ASE_MLMD_FAST") == "1"
torch.set_num_threads(1 if FAST else 2)
REPO = Path(__file__).resolve().parents[1]
if not (REPO / "benchmarks" / "cg_data").is_dir():  # run from the project root instead
    REPO = Path.cwd().resolve()
workdir = Path(tempfile.mkdtemp(prefix="ase_mlmd_tutorial08_"))
print("outputs in", workdir)

# %% [markdown]
# ## 1. Pairs of CG and all-atom frames
#
# 200 all-atom frames of alanine dipeptide (OpenMM, implicit solvent, 300 K, 1 ps apart, in
# time order). A Girvan–Newman mapping cuts the bond graph into 6 beads; every bead sits at the
# centre of geometry of its atoms. `BackmapPairs` holds the bead positions (F, 6, 3), the atom
# positions (F, 22, 3) and the bead each atom is decoded from.

# %%
frames = read(REPO / "benchmarks" / "cg_data" / "ala2_aa_200.extxyz", ":")
mapping = girvan_newman(frames[0], 6)
pairs = BackmapPairs.from_frames(frames, mapping, centre="geometry")
print(pairs.cg.shape, pairs.aa.shape)
print("atom -> bead:", pairs.assignment.tolist())

# %% [markdown]
# ## 2. Training
#
# The encoder sees atoms and beads and gives an invariant latent per bead; the prior sees the
# beads only; the decoder turns beads + latents into per-atom offsets, re-centred so that
# each bead's atoms average to the bead. Loss = MSE + β KL + γ bond-length MSE. The split is
# time-ordered (80 / 10 / 10 %): the test frames come after every training frame. Rerunning
# the same call resumes from `checkpoint.pt`; the card is written only at the end.
#
# Three optional terms go beyond the paper's loss (all off by default): `gamma_angle`, an MSE
# of the 1–3 distances (a squeezed angle makes a bond the molecule lacks), `delta`, a steric
# penalty on atoms more than 3 bonds apart closer than `clash_factor` × the sum of their van
# der Waals radii, and `sample_terms`, which applies the bond, 1–3 and steric terms also to a
# structure decoded from the prior: what `sample` returns. With them the samples keep the
# molecule's bond graph and are clash-free far more often (BENCHMARKS.md, backmapping 4a).

# %%
hyper = CGVAEHyper(
    features=8 if FAST else 32,
    latent=4 if FAST else 8,
    gamma_angle=1.0,
    delta=1.0,
    clash_factor=0.9,
    sample_terms=True,
)
config = BackmapTrainConfig(
    hyper=hyper,
    centre="geometry",
    split=(0.8, 0.1, 0.1),
    max_epochs=1 if FAST else 200,
    max_time=None if FAST else "5m",
    batch_size=16,
)
result = train_backmapper(frames, mapping, workdir / "ala2-backmap-6", config, progress=False)
print(f"{result.epochs} epochs, stopped by {result.stop_reason}")
print(f"test RMSD (all atoms): auto-encoded {result.test_rmsd_autoencode:.3f} Å, "
      f"from the CG frame alone {result.test_rmsd_prior_mean:.3f} Å")  # fmt: skip

# %% [markdown]
# ## 3. Sampling from the card
#
# The card (TOML + safetensors + sha256) stores the mapping and the molecule, and loads
# without trust. `sample` draws latents from the prior p(z | CG) and decodes them.

# %%
backmapper = load_backmapper(result.card_path)
test = list(range(180, 200))
cg = [pairs.cg_atoms(i) for i in test]
samples = backmapper.sample(cg, n_samples=5, seed=0)
print(
    len(samples), "CG frames x", len(samples[0]), "samples of", samples[0][0].get_chemical_formula()
)

# mapping a sample back gives its CG frame (to rounding)
remapped = backmapper.topology.apply_positions(samples[0][0])
print("max |W x - X| =", np.abs(remapped.positions - cg[0].positions).max(), "Å")

# rotating the CG frame rotates the samples (same seed)
R = Rotation.random(random_state=0).as_matrix()
turned = cg[0].copy()
turned.positions = cg[0].positions @ R.T
a = backmapper.sample([cg[0]], 1, seed=3)[0][0].positions
b = backmapper.sample([turned], 1, seed=3)[0][0].positions
print("rotation equivariance error:", np.abs(a @ R.T - b).max(), "Å")

# a CG frame of another mapping is refused
try:
    backmapper.sample(girvan_newman(frames[0], 4).apply_positions(frames[0]), 1)
except BackmapError as err:
    print("refused:", str(err)[:90], "...")

# %% [markdown]
# ## 4. Against the linear baseline
#
# The linear baseline is a least-squares matrix from bead to atom coordinates. The metrics
# (METRICS.md §4): RMSD (unaligned, Å), graph-edit ratio (bonds by covalent radii that
# differ from the reference's), validity, and the clash ratio (a pair more than 3 bonds apart
# closer than 0.8 × the sum of van der Waals radii).

# %%
linear = LinearBackmapper.fit(pairs.subset(range(160)))
reference = pairs.aa[test]
generated = np.stack([[s.positions for s in per_frame] for per_frame in samples])
lin = linear.positions(cg)[:, None]
for name, values in (("CGVAE samples", generated), ("linear", lin)):
    m = backmap_metrics(reference, values, pairs.numbers, pairs.bonds)
    print(f"{name:14s} RMSD heavy {m['rmsd_heavy']:.3f} Å, graph-edit heavy {m['ged_heavy']:.3f}, "
          f"validity {m['validity_all']:.2f}, clash ratio {m['clash_ratio']:.2f}")  # fmt: skip

# %% [markdown]
# ## 5. Cα traces of proteins: the PULCHRA card
#
# For a protein simulated at one bead per residue on its Cα, PULCHRA (Rotkiewicz & Skolnick
# 2008, PyPI `pulchra`) rebuilds the backbone and side-chain heavy atoms from the trace, with
# no training. `PulchraBackmapper.from_pdb` reads the protein's topology (atom names,
# residues, bonds) from a PDB file and builds its Cα mapping; `save` writes a card without
# weights that `load_backmapper` and `ase-mlmd backmap run` read like any other backmapper.
# On the command line: `ase-mlmd backmap pulchra --topology chignolin.pdb -o DIR`
# (`--hydrogens amber14` completes the hydrogens with OpenMM, heavy atoms fixed). Here:
# chignolin (GYDPETGTWG) and Cα frames of a 340 K implicit-solvent run.

# %%
chig = REPO / "benchmarks" / "backmap_runs" / "chignolin"
pulchra_card = PulchraBackmapper.from_pdb(chig / "chignolin.pdb").save(
    workdir / "chignolin-pulchra", "chignolin-pulchra"
)
pulchra = load_backmapper(pulchra_card)
ca_frames = read(chig / "cg_test_ca.extxyz", ":2" if FAST else ":10")
rebuilt = pulchra.reconstruct(ca_frames)
top = pulchra.topology
index = rebuilt[0].arrays["reference_index"]  # the molecule's atom of each rebuilt atom
print(f"{len(ca_frames)} Cα frames of {top.n_beads} beads -> {len(index)} heavy atoms of "
      f"{top.n_atoms} ({rebuilt[0].get_chemical_formula()})")  # fmt: skip
x = np.stack([a.positions for a in rebuilt])
ca = np.searchsorted(index, [int(m[0]) for m in top.members])
moved = np.linalg.norm(x[:, ca] - np.stack([f.positions for f in ca_frames]), axis=-1)
print(f"Cα moved by PULCHRA's trace optimisation: at most {moved.max():.2f} Å")
numbers, bonds = top.numbers[index], subset_bonds(top.bonds, index, top.n_atoms)
same, clashing = valid_and_clashing(x, numbers, bonds)
print(f"heavy-atom bond graph as in the topology: {same.sum()} of {len(same)} frames; "
      f"heavy-atom clash ratio {clashing.mean():.2f}")  # fmt: skip
