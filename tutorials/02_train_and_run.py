# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 02 — Label, train, export a card, run MD
#
# From nothing to an ML force field that ASE uses like any calculator:
#
# 1. **label**: reference MD of ethanol with GFN2-xTB (tblite) at 500 K — labelled frames in an
#    extended XYZ file (energies in eV, forces in eV/Å). The same as
#    `ase-mlmd sample ethanol.xyz --reference gfn2-xtb --temperature 500 --timestep 0.5 ...`;
# 2. **read and inspect** the data: split (seed 123), per-species energy shifts, force RMS and
#    the average neighbour count that the model is built with;
# 3. **train** a NequIP model (the same loop trains SchNet and PaiNN) with EMA, LR on plateau,
#    early stopping and a time limit — `ase-mlmd train --data ... --model nequip -o DIR`;
# 4. **the card**: the training folder holds `card.toml` + safetensors weights with the data,
#    split, seed, command and test errors; `load_calculator` needs no trust flag for it;
# 5. **MD** with the trained model through ASE (`ase-mlmd md`/`run` work the same) and a check
#    that the molecule stays intact.
#
# `ASE_MLMD_FAST=1` (the test suite) makes every stage tiny; the full run takes a few minutes.

# %%
import os
import tempfile
import tomllib
from pathlib import Path

import numpy as np
from ase.build import molecule
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta
from ase import units

from ase_mlmd import load_calculator
from ase_mlmd.data import (
    SamplingConfig,
    dataset_statistics,
    read_frames,
    sample_reference,
    split_indices,
)
from ase_mlmd.md.monitors import bond_lengths, find_bonds
from ase_mlmd.train import TrainConfig, train

FAST = os.environ.get("ASE_MLMD_FAST") == "1"
workdir = Path(tempfile.mkdtemp(prefix="ase_mlmd_tutorial02_"))

# %% [markdown]
# ## 1. Label: GFN2-xTB reference MD
# A frame every 10 steps; the file is written atomically and a rerun resumes it.

# %%
sampling = SamplingConfig(
    temperature=500.0, timestep=0.5, steps=400 if FAST else 10000, every=10, seed=0
)
reference_file = workdir / "ethanol_ref.extxyz"
frames = sample_reference(
    molecule("CH3CH2OH"), "gfn2-xtb", sampling, reference_file, progress=not FAST, threads=1
)
print(f"{len(frames)} labelled frames in {reference_file}")

# %% [markdown]
# ## 2. Read the data back and look at it
# Readers return ASE `Atoms` with a `SinglePointCalculator` holding energy (eV) and forces
# (eV/Å). Other formats: ASE databases, MD17 npz (`energy_unit="kcal/mol"`), deepmd folders,
# plain XYZ with force columns.

# %%
data = read_frames(reference_file, "extxyz")
split = split_indices(len(data), (0.8, 0.1, 0.1), seed=123)
stats = dataset_statistics(split.frames(data, "train"), cutoff=5.0)
print("split sizes:", split.as_dict())
print("energy shift per species (eV):", {k: round(v, 3) for k, v in stats.energy_shifts.items()})
print(f"force RMS {stats.force_rms:.3f} eV/Å, average neighbours {stats.avg_num_neighbors:.1f}")

# %% [markdown]
# ## 3. Train NequIP
# The loop is the same for `model="schnet"` and `model="painn"`. Checkpoints are written as it
# goes: interrupt it and run the same call again to resume.

# %%
config = TrainConfig(
    model="nequip",
    split=(0.8, 0.1, 0.1),
    seed=123,
    max_epochs=1 if FAST else 200,
    max_time="1m" if FAST else "5m",
)
result = train(reference_file, config, workdir / "ethanol-nequip", progress=not FAST)
print(
    f"test force MAE {result.test_force_mae_mev_per_angstrom:.1f} meV/Å, "
    f"energy MAE {result.test_energy_mae_mev_per_atom:.2f} meV/atom, "
    f"{result.epochs} epochs in {result.wall_time_s:.0f} s ({result.stop_reason})"
)

# %% [markdown]
# ## 4. The card
# Everything needed to rebuild and trust the model: backend, hyperparameters, species, cutoff,
# sha256 of the weights, and where it came from.

# %%
card = tomllib.loads(result.card_path.read_text())
print(result.card_path)
print({k: card[k] for k in ("name", "backend", "species", "cutoff")})
print({k: card["provenance"][k] for k in list(card["provenance"])[:8]})

# %% [markdown]
# ## 5. MD with the trained model through ASE
# From a shell: `ase-mlmd run DIR/card.toml ethanol.xyz -f 0.01` or
# `ase-mlmd md ethanol.xyz --calc DIR/card.toml --engine torch --replicas 8 ...`.

# %%
atoms = molecule("CH3CH2OH")
atoms.calc = load_calculator(result.card_path)
thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
dyn = Langevin(
    atoms, 0.5 * units.fs, temperature_K=300, friction=0.01, fixcm=False,
    rng=np.random.default_rng(1),
)
bonds = find_bonds(molecule("CH3CH2OH"))
start = bond_lengths([atoms], bonds)[0]
worst = 0.0
for _ in range(10 if FAST else 200):
    dyn.run(10)
    worst = max(worst, float(np.abs(bond_lengths([atoms], bonds)[0] - start).max()))
print(f"{dyn.nsteps} steps at 300 K; largest bond-length change {worst:.3f} Å")
if not FAST:
    assert worst < 0.5, "the molecule fell apart: train longer or on more data"
