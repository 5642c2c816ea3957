# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 03 — Batched MD on CPU or GPU
#
# ASE's integrators advance one `Atoms` at a time. ase_mlmd's torch engine advances many
# systems — replicas of one structure, or different structures — in one set of tensors, with one
# model call per step for all of them, on CPU or GPU. This tutorial shows:
#
# 1. many replicas in one `MDState`, stepped by an integrator (`init` / `step`),
# 2. different systems (periodic boxes and a cluster) in one batch, each with its own
#    thermostat temperature,
# 3. converting the batch back to ASE `Atoms`,
# 4. what batching buys over an ASE loop,
# 5. the high-level `simulate(...)`: a trajectory per replica, a log, monitors that stop a
#    replica that misbehaves while the others go on,
# 6. the same with an ML model (a nequip network) and the MDsim bond-length stability criterion.
#
# Run it as a script (`python tutorials/03_batched_md.py`) or open it as a notebook with
# jupytext. `ASE_MLMD_FAST=1` makes it quick (that is how the test suite runs it).

# %%
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.build import bulk, molecule
from ase.cluster import Icosahedron
from ase.io import read
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from ase_mlmd import MLCalculator, load_calculator
from ase_mlmd.md import ForceField, MDState, make_integrator

FAST = os.environ.get("ASE_MLMD_FAST") == "1"
device = "cuda" if torch.cuda.is_available() else "cpu"
workdir = Path(tempfile.mkdtemp(prefix="ase_mlmd_tutorial03_"))
print("running on", device)

# %% [markdown]
# ## 1. Many replicas in one state
# The energy model is the one behind the `lj-argon` card (Lennard-Jones argon). Each replica of
# a 108-atom fcc box gets its own Maxwell–Boltzmann velocities (at 60 K; starting from a
# perfect lattice, about half of that kinetic energy soon turns into potential energy, so the
# boxes settle near 30 K). `MDState.from_atoms` takes the
# positions, masses, cells and momenta of all of them; `ForceField` adds a Verlet neighbor
# list with a skin (rebuilt only when an atom has moved more than half the skin); the integrator
# is an `init` / `step` pair. Units are ASE's: time steps in fs, temperatures in K.

# %%
model = load_calculator("lj-argon").model
box = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(3)  # 108 atoms
n_replicas = 4 if FAST else 16
replicas = []
for k in range(n_replicas):
    atoms = box.copy()
    thermalize_momenta(atoms, temperature_K=60, rng=np.random.default_rng(k))
    replicas.append(atoms)

state = MDState.from_atoms(replicas, device=device)
forcefield = ForceField(model, skin=1.0)
nve = make_integrator("nve", forcefield, timestep_fs=5.0)
state = nve.init(state)
start_energy = state.total_energy()
steps = 40 if FAST else 400
for _ in range(steps):
    state = nve.step(state)
drift = (state.total_energy() - start_energy) / len(box)
print(f"{state.n_systems} replicas, {len(state.positions)} atoms, {steps} NVE steps of 5 fs")
print("temperature per replica (K):", state.temperature().cpu().numpy().round(1))
print(f"largest energy drift: {drift.abs().max().item():.2e} eV/atom")
print(f"neighbor list built {forcefield.n_builds} times in {steps + 1} force calls")

# %% [markdown]
# ## 2. Different systems, each at its own temperature
# Systems in one batch may differ in size and periodicity. Here two periodic boxes and an
# open icosahedral cluster run Langevin dynamics together, each with its own target
# temperature (a list with one value per system). The thermostat keeps them apart.

# %%
systems = [
    Icosahedron("Ar", noshells=3, latticeconstant=5.26),  # 55 atoms, open boundaries
    bulk("Ar", "fcc", a=5.26, cubic=True).repeat(3),  # 108 atoms, periodic
    bulk("Ar", "fcc", a=5.26, cubic=True).repeat((4, 3, 3)),  # 144 atoms, periodic
]
targets = [20.0, 50.0, 80.0]
langevin = make_integrator(
    "nvt-langevin", ForceField(model), timestep_fs=5.0, temperature_K=targets, seed=1
)
state = langevin.init(MDState.from_atoms(systems, device=device))
steps = 100 if FAST else 1000
history = []
for step in range(steps):
    state = langevin.step(state)
    if step >= steps // 2:
        history.append(state.temperature())
mean_temperature = torch.stack(history).mean(dim=0).cpu().numpy()
for atoms, target, measured in zip(systems, targets, mean_temperature, strict=True):
    kind = "periodic" if atoms.pbc.all() else "cluster"
    print(f"{len(atoms):4d} atoms ({kind:8s}): target {target:5.1f} K, mean {measured:5.1f} K")

# %% [markdown]
# ## 3. Back to ASE
# `state.to_atoms()` gives one `Atoms` per system with momenta, energy and forces attached, for
# ASE's analysis tools and file formats. They agree with a plain `MLCalculator` evaluation.

# %%
frames = state.to_atoms()
check = frames[1].copy()
check.calc = MLCalculator(model, device=device)
print(f"E from the batch: {frames[1].get_potential_energy():.6f} eV, "
      f"MLCalculator: {check.get_potential_energy():.6f} eV")
print("max |ΔF| (eV/Å):", np.abs(frames[1].get_forces() - check.get_forces()).max())
from ase.io import write  # noqa: E402

write(workdir / "final_frames.extxyz", frames)
print("temperatures read back (K):", [f"{a.get_temperature():.1f}" for a in frames])

# %% [markdown]
# ## 4. What batching buys
# The same 108-atom box, once with ASE's `VelocityVerlet` driving an `MLCalculator` (one
# system per step), once as a batch of replicas in the engine. The measure is atom-steps per
# second. `benchmarks/md_throughput.py` does this carefully (interleaved rounds, medians,
# TorchSim alongside); see BENCHMARKS.md for measured numbers.

# %%
steps = 5 if FAST else 30
single = box.copy()
thermalize_momenta(single, temperature_K=60, rng=np.random.default_rng(0))
single.calc = MLCalculator(model, device=device)
dyn = VelocityVerlet(single, timestep=5.0 * units.fs)
dyn.run(1)
start = time.perf_counter()
dyn.run(steps)
ase_rate = len(single) * steps / (time.perf_counter() - start)

n_batch = 8 if FAST else 32
batch_integrator = make_integrator("nve", ForceField(model), timestep_fs=5.0)
batch = batch_integrator.init(MDState.from_atoms([single] * n_batch, device=device))
batch = batch_integrator.step(batch)
if device == "cuda":
    torch.cuda.synchronize()
start = time.perf_counter()
for _ in range(steps):
    batch = batch_integrator.step(batch)
if device == "cuda":
    torch.cuda.synchronize()
engine_rate = n_batch * len(single) * steps / (time.perf_counter() - start)
print(f"ASE loop, 1 box:         {ase_rate:10.0f} atom-steps/s")
print(f"engine, {n_batch:3d} replicas:   {engine_rate:10.0f} atom-steps/s "
      f"({engine_rate / ase_rate:.1f}x)")

# %% [markdown]
# ## 5. `simulate`: trajectories, a log and monitors
# `simulate` wraps all of the above: it draws velocities per replica, writes one ASE trajectory
# per replica (`{i}` in the file name), a CSV energy log and a checkpoint to resume from, and
# watches every replica with monitors. A replica that trips a monitor is taken out of the batch
# and reported; the others run on. Here the fourth replica starts far hotter than the
# `TemperatureBounds` allow, so it is stopped at once.

# %%
from ase_mlmd.md import TemperatureBounds, simulate  # noqa: E402

result = simulate(
    box,
    "lj-argon",
    replicas=4,
    ensemble="nvt-langevin",
    temperature=[30.0, 50.0, 70.0, 500.0],
    timestep=5.0,
    steps=20 if FAST else 400,
    save_every=10 if FAST else 50,
    trajectory=workdir / "argon_{i}.traj",
    logfile=workdir / "argon.csv",
    monitors=[TemperatureBounds(1.0, 250.0)],
    device=device,
    progress=not FAST,
)
print(result.table())
print(f"{result.atom_steps_per_s:.0f} atom-steps/s; collapsed replicas: {result.collapsed}")
frames_0 = read(workdir / "argon_0.traj", index=":")
print(f"replica 0: {len(frames_0)} frames in {workdir / 'argon_0.traj'}")

# %% [markdown]
# ## 6. An ML model, and the MDsim stability criterion
# Any nequip or schnetpack network (or a card naming one) runs the same way. `BondDeviation`
# is the stability criterion of Fu et al. (MDsim): a molecule has collapsed when a bond has
# stretched or shrunk by more than 0.5 Å. The network here has random weights, so its
# molecules are not expected to hold together — exactly what the monitor is there to catch; a
# trained model (tutorial 02) is passed the same way, and the result tells for how long each
# replica stayed stable.

# %%
from ase_mlmd.md import BondDeviation  # noqa: E402
from ase_mlmd.models.backends.nequip import build_nequip_model  # noqa: E402

network = build_nequip_model(type_names=["H", "C", "O"], r_max=4.0, seed=0)
ethanol = molecule("CH3CH2OH")
result = simulate(
    ethanol,
    network,
    replicas=4 if FAST else 16,
    ensemble="nvt-langevin",
    temperature=300.0,
    timestep=0.5,
    steps=40 if FAST else 2000,
    save_every=10 if FAST else 100,
    trajectory=workdir / "ethanol_{i}.traj",
    monitors=[BondDeviation(ethanol, threshold=0.5)],
    device=device,
    progress=not FAST,
)
print(result.table())
