# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 06 — Control: teach a bead chain to fold into a helix
#
# Differentiable simulation can do more than fit a force field to data: it can *design* a
# Hamiltonian so that the dynamics does what we want. Following Wang, Axelrod and
# Gómez-Bombarelli, "Differentiable Molecular Simulations for Control and Learning" (2020), a
# chain of 22 beads — harmonic bonds and excluded volume, nothing that prefers any shape —
# gets an extra *control potential*, a small neural network. Langevin dynamics starts from an
# extended chain; the loss compares the chain at the end with a target helix (bond lengths,
# bond angles, dihedral angles, pair distances); its gradient with respect to the network's
# weights comes from backpropagating through the integrator. After training, the chain folds
# into the helix on its own.
#
# 1. the chain as an energy model and as an ASE calculator,
# 2. the loss and why it needs dihedral angles,
# 3. one gradient through the dynamics,
# 4. training (`train_control`) and its report,
# 5. the learned control in a plain ASE Langevin run.
#
# Units are reduced Lennard-Jones units, which in ase_mlmd are ASE units with σ = 1 Å,
# ε = 1 eV and m = 1 amu (so time is in ASE time units, τ ≈ 10.18 fs, and T* = k_B T / ε).
# `ASE_MLMD_FAST=1` trains for a few epochs only (that is how the test suite runs it); the full
# run takes several minutes on a laptop-class CPU.

# %%
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.md.langevin import Langevin

from ase_mlmd import MLCalculator
from ase_mlmd.diffsim.bead_chain import BeadChain, chain_atoms
from ase_mlmd.diffsim.control import (
    ControlConfig,
    build_chain_model,
    control_loss,
    run_episode,
    start_chain,
    target_helix,
    train_control,
)
from ase_mlmd.diffsim.geometry import dihedral_angles, kabsch_rmsd

FAST = os.environ.get("ASE_MLMD_FAST") == "1"
torch.set_num_threads(1)  # a 22-bead chain is far too small for threads to pay off
workdir = Path(tempfile.mkdtemp(prefix="ase_mlmd_tutorial06_"))


def show(path):
    """Display a picture inside a notebook; print its path otherwise."""
    try:
        get_ipython  # noqa: B018  (defined only inside IPython / Jupyter)
        from IPython.display import Image, display

        display(Image(filename=str(path)))
    except NameError:
        print("picture:", path)


# %% [markdown]
# ## 1. The chain
# `ControlConfig` holds every setting. The target is an α-helix-like helix (3.6 beads per turn;
# the Cα trace of an α-helix scaled to bonds of ≈ 1 σ), and the bonds' rest length r₀ is the
# helix's bond length. `BeadChain` is an ordinary ase_mlmd energy model: harmonic bonds
# between consecutive atoms, WCA repulsion between non-bonded beads, and (when given) the
# control network. Without control the helix costs no energy at all — but neither does any
# other clash-free shape with the right bond lengths, so nothing makes the chain fold.

# %%
config = ControlConfig()
if FAST:
    config = ControlConfig(
        n_beads=10, steps=100, window=50, timestep=0.02, replicas=4, epochs=20, lr=1e-2
    )
target = target_helix(config)
start = start_chain(config)
print(f"{config.n_beads} beads, r0 = {config.bond_length:.4f} σ, k = {config.bond_k} ε/σ²")

plain = BeadChain(config.bond_k, config.bond_length, config.wca_epsilon, config.wca_sigma)
for name, positions in (("helix", target), ("extended start", start)):
    atoms = chain_atoms(positions)
    atoms.calc = MLCalculator(plain)
    print(f"{name:15s} E = {atoms.get_potential_energy():8.4f} ε, "
          f"max |F| = {np.abs(atoms.get_forces()).max():.3f} ε/σ")

# %% [markdown]
# ## 2. The loss
# `control_loss` returns four mean squared deviations from the target: bond lengths, bond
# angles, dihedral angles (as 2(1 − cos Δφ), ≈ Δφ² for small Δφ) and all non-bonded pair
# distances, and their weighted sum. Distances and angles are the same for a helix and its
# mirror image; only the dihedral term tells a right-handed helix from a left-handed one. For
# the same reason, the control network sees, for every window of five consecutive beads, six
# distances *and* two triple products b₁·(b₂×b₃) of bond vectors, which change sign under
# reflection.

# %%
reference = torch.from_numpy(target)
mirror = target * np.array([1.0, 1.0, -1.0])
for name, chain in (("start", start), ("helix", target), ("mirror helix", mirror)):
    terms = control_loss(torch.from_numpy(chain), reference)
    text = ", ".join(f"{k} {float(v):.3g}" for k, v in terms.items())
    print(f"{name:13s} {text};  RMSD {kabsch_rmsd(chain, target):.3f} σ")
print("helix dihedral:", f"{np.degrees(float(dihedral_angles(reference)[0])):.1f}°",
      "(right-handed; the Cα trace of an α-helix has about +50°)")

# %% [markdown]
# ## 3. One gradient through the dynamics
# An *episode* runs `replicas` Langevin trajectories (T* = 0.05) of `steps` steps from the
# extended chain, as one batch in the torch engine. With `train=True`, the integrator keeps the
# autograd graph through every force call and the gradient of the loss reaches the control
# network's weights by truncated backpropagation through time
# (`ase_mlmd.md.differentiable.truncated_bptt`): windows of `window` steps, each window's loss
# differentiated with its start state held fixed. The loss of a window is averaged over its
# frames, and the objective is the mean of log(loss) over the windows of the second half of
# the trajectory (`loss_from=0.5`): we ask for a chain that *is* folded at the end, not for one
# that folds as fast as possible (counting the early windows rewards steep control forces that
# pull the helix out of shape); the logarithm makes a small loss of a nearly folded window
# count as much as a large one.
#
# The untrained network's last layer is zero: it starts as "no control", and the chain just
# wiggles thermally.

# %%
model = build_chain_model(config)
episode = run_episode(model, config, seed=1, train=True)
gradient = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
print(f"no control: loss at the end {episode.final_terms['total'].mean():.3f}, "
      f"RMSD {episode.rmsd.mean():.2f} σ; |∇θ| = {gradient.norm():.3g}")

# %% [markdown]
# ## 4. Training
# `train_control` repeats episodes with fresh noise, one Adam step each. Before and after
# training it runs an evaluation episode with a held-out seed and reports the loss and the
# Kabsch RMSD of the last frame (optimal superposition, proper rotations only, so a mirror
# image would not count as folded). It writes a picture of the chains, the training curve, a
# Markdown table and the final chains as extended XYZ.

# %%
result = train_control(config, output_dir=workdir, progress=not FAST)
print(result.table())
print(f"\nfinal loss {result.final_loss:.4f}, RMSD {result.rmsd:.3f} σ, "
      f"{result.wall_time_s:.0f} s")
show(result.files["chain_png"])
show(result.files["loss_png"])

# %% [markdown]
# ## 5. The learned control in ASE
# The trained chain is an energy model like any other, so `MLCalculator` makes it an ASE
# calculator and ASE's own Langevin integrator folds the chain too (in reduced units: time step
# 0.01 τ, friction 1/τ, T* = 0.05).

# %%
atoms = chain_atoms(start)
atoms.calc = MLCalculator(result.model)
dyn = Langevin(
    atoms,
    timestep=config.timestep,  # ASE time units = τ
    temperature_K=config.temperature / units.kB,
    friction=config.friction,  # 1/τ
    fixcm=False,
    rng=np.random.default_rng(7),
)
print(f"before: RMSD to the helix {kabsch_rmsd(atoms.positions, target):.2f} σ")
dyn.run(config.steps)
print(f"after {config.steps} ASE Langevin steps: RMSD {kabsch_rmsd(atoms.positions, target):.2f} σ")
