# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 05 — DiffSim: learn a pair potential from g(r) by differentiating through MD
#
# Wang, Wu, Dietschreit and Gómez-Bombarelli (J Chem Phys 2023) fit a pair potential to a radial
# distribution function by backpropagating through molecular dynamics. This tutorial recovers
# the Lennard-Jones potential from the g(r) of the LJ liquid at ρ* = 0.845, T* = 1.0
# (`../shared/data/lj_rdf/`, from the paper's repository):
#
# 1. the target, and the *noise floor*: the true LJ simulated with the same settings,
# 2. a neural pair potential (MLP on Gaussians + repulsive prior) fitted by truncated BPTT,
# 3. the learned potential as an ordinary ASE calculator (model card + safetensors),
# 4. refining the BPTT result by Gauss–Newton steps on the reweighting Jacobian,
# 5. the other methods behind the same interface: reweighting (DiffTRe) and IBI.
#
# Units: reduced LJ units are ASE units with σ = 1 Å, ε = 1 eV, m = 1 amu (so T* = k_B T in eV
# and dt* = 0.01 is 0.01 ASE time units). Run it as a script; `ASE_MLMD_FAST=1` makes every run
# tiny (that is how the test suite runs it — the numbers are then meaningless). The full
# acceptance runs are `benchmarks/diffsim_acceptance.py` (see BENCHMARKS.md).

# %%
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ase_mlmd import load_calculator
from ase_mlmd.diffsim.config import FitConfig
from ase_mlmd.diffsim.engine import EngineConfig, production_rdf
from ase_mlmd.diffsim.fit import fit, make_potential
from ase_mlmd.diffsim.losses import LossWeights, rdf_dev
from ase_mlmd.diffsim.report import u_error, u_errors
from ase_mlmd.diffsim.systems import ThermoState, initial_atoms
from ase_mlmd.diffsim.targets import read_rdf_csv, read_vacf_csv
from ase_mlmd.models.pair import LennardJones

FAST = os.environ.get("ASE_MLMD_FAST") == "1"
torch.set_num_threads(1 if FAST else 2)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lj_rdf"
if not DATA.is_dir():  # run from the project root instead of tutorials/
    DATA = Path.cwd().resolve().parent / "shared" / "data" / "lj_rdf"
workdir = Path(tempfile.mkdtemp(prefix="ase_mlmd_tutorial05_"))
print("outputs in", workdir)

# %% [markdown]
# ## 1. Target and noise floor
# The target file has two rows: r (Gaussian centres, 0.75–3.3 σ) and g(r). The state (ρ, T)
# comes from the file name. `ThermoState` builds the simulation box: 256 atoms from a 4×4×4
# FCC lattice at that density (the box must be at least twice the 2.5 σ cutoff).
#
# Before fitting anything we simulate the *true* potential with exactly the settings a fit
# uses (Nosé–Hoover chain Q = 50, 5 chains, dt = 0.01) and compare its g(r) with the target.
# That difference, `rdf_dev` = mean |Δg|, is the noise floor: a fitted potential cannot be
# judged more precisely than that, and a small floor also shows that our RDF follows the
# target's definition (Gaussian-smeared, self-normalized, as in the paper's code).

# %%
target = read_rdf_csv(DATA / "rdf_rho0.845_T1.0_dt0.01.csv")
vacf = read_vacf_csv(DATA / "vacf_rho0.845_T1.0_dt0.01.csv")
state = ThermoState(target.density, target.temperature, target, vacf=vacf)
print(f"state {state.name}: {state.n_atoms} atoms in a {state.box_length:.3f} σ box")

engine = EngineConfig(equilibration=50 if FAST else 1000)
production = 100 if FAST else 5000
truth = LennardJones(1.0, 1.0, cutoff=2.5)
start = time.perf_counter()
(g_true,), _ = production_rdf(truth, [state], engine, steps=production, every=10)
floor = rdf_dev(g_true, target.g)
print(f"noise floor: rdf_dev(true LJ) = {floor:.4f} ({time.perf_counter() - start:.0f} s)")

# %% [markdown]
# ## 2. Fit a neural pair potential by truncated BPTT
# U(r) = MLP(Gaussian basis of r) + a repulsive prior 4 ε_p (σ_p/r)^10 (ε_p = 0.4, σ_p = 0.94,
# as the paper's LJ fit), smoothly switched off between 2.25 and 2.5 σ. Each epoch runs one
# window of τ = 60 steps with the autograd graph, computes g(r) (and the VACF) over the window,
# backpropagates the loss 0.95 MSE(g) + 0.4 MSE(VACF) into the MLP and takes one Adam step; the
# MD state is carried into the next window. `fit` then runs a production simulation with the
# learned potential and writes the card, the loss curve and the g(r) and U(r) plots.

# %%
potential = make_potential("neural-pair", prior_epsilon=0.4, prior_sigma=0.94, prior_n=10)
config = FitConfig(
    method="bptt",
    epochs=3 if FAST else 300,
    window=10 if FAST else 60,
    weights=LossWeights(rdf=0.95, vacf=0.4),
    production_steps=production,
    engine=engine,
)
result = fit(potential, [state], config, out_dir=workdir / "bptt", true_potential=truth)
print(f"{len(result.history)} epochs in {result.wall_time:.0f} s")
print(f"rdf_dev = {result.rdf_dev[0]:.4f} (noise floor {floor:.4f}, ratio "
      f"{result.rdf_dev[0] / floor:.2f}); max |U − U_LJ| on [1, 2.5] σ = "
      f"{u_error(potential, truth):.3f} ε")
print(sorted(p.name for p in (workdir / "bptt").iterdir()))

# %% [markdown]
# ## 3. The learned potential is an ordinary calculator
# The card (`card.toml`: backend `neural-pair`, hyperparameters in `[parameters]`, weights in
# safetensors with their sha256) loads without `trust`, like any card. From the shell:
# `ase-mlmd run bptt/card.toml liquid.xyz`.

# %%
calc = load_calculator(workdir / "bptt" / "card.toml")
liquid = initial_atoms(state)
liquid.rattle(0.05, seed=0)
liquid.calc = calc
print(f"E = {liquid.get_potential_energy() / len(liquid):.4f} ε per atom, "
      f"max |F| = {np.abs(liquid.get_forces()).max():.3f} ε/σ")

# %% [markdown]
# ## 4. Refine the fit: Gauss–Newton steps with the reweighting Jacobian
# In a dense liquid g(r) reacts only weakly to the depth of the well, so the BPTT fit matches
# g(r) near the floor while its well can still be ≈ 0.3 ε too shallow. The Newton method
# samples the current potential, computes the whole Jacobian of ⟨g⟩ with respect to a spline
# correction ΔU(r) from fluctuations (J = −β Cov(g, ∂U/∂c), the same formula the reweighting
# gradient uses) and solves for the step (inverse Monte Carlo). Eight iterations of 1000 frames
# bring the full BPTT fit to 0.70× the floor and within 0.07 ε of LJ (BENCHMARKS.md).

# %%
config = FitConfig(method="newton", newton_iterations=2 if FAST else 8,
                   newton_frames=5 if FAST else 1000, production_steps=production, engine=engine)
refined = fit(potential, [state], config, out_dir=workdir / "refined", true_potential=truth,
              log=lambda m: None)
print(f"refined: rdf_dev {refined.rdf_dev[0]:.4f} (floor {floor:.4f}), max |U − U_LJ| "
      f"{u_error(refined.potential, truth):.3f} ε, {refined.wall_time:.0f} s")

# %% [markdown]
# ## 5. Reweighting and IBI through the same interface
# Reweighting (DiffTRe) differentiates ensemble averages by thermodynamic perturbation over
# stored frames and re-simulates when the effective sample size drops — memory does not grow
# with the trajectory. Iterative Boltzmann Inversion needs no gradients at all:
# U ← U + α kT ln(g/g*). Both return the same `FitResult`. The runs here are shortened (100
# reweighting steps, 10 IBI iterations); BENCHMARKS.md has the full ones.

# %%
for method, extra in [("reweighting", {"rw_frames": 5 if FAST else 100}),
                      ("ibi", {"ibi_iterations": 1 if FAST else 10,
                               "ibi_steps": 20 if FAST else 2000})]:
    config = FitConfig(method=method, epochs=2 if FAST else 100, production_steps=production,
                       engine=engine, **extra)
    start_pot = None if method == "ibi" else make_potential(
        "neural-pair", prior_epsilon=0.4, prior_sigma=0.94, prior_n=10)
    res = fit(start_pot, [state], config, out_dir=workdir / method, true_potential=truth,
              log=lambda m: None)
    print(f"{method:12s}: rdf_dev {res.rdf_dev[0]:.4f} (floor {floor:.4f}), "
          f"max |ΔU| {u_error(res.potential, truth):.3f} ε, {res.wall_time:.0f} s")

# %% [markdown]
# ## 6. Mixtures: one potential per species pair, fitted over compositions
# A binary LJ mixture (METRICS.md: σ_ArAr 0.9, σ_ArKr 1.0, σ_KrKr 1.1) needs one φ per species
# pair. `SpeciesPairPotential` holds them (any pair potentials; `make_mixture_potential` builds
# neural ones), the targets are the partial RDFs g_ab(r) — here simulated from the true mixture
# at x_Kr = 0.25 and 0.75 and saved in the partial-RDF CSV layout that
# `ase-mlmd diffsim fit --target FILE` reads — and BPTT sums the loss over every partial RDF of
# every composition. The full run (transfer to x = 0.5, Newton refinement) is
# `benchmarks/diffsim_mixture.py`.

# %%
from ase_mlmd.diffsim.fit import make_mixture_potential, pretrain_to_pmf
from ase_mlmd.diffsim.mixture import binary_lj_mixture, mixture_states, simulate_partial_targets
from ase_mlmd.diffsim.targets import read_targets, write_partial_rdf_csv

mix_states = mixture_states(0.75, 1.2, [0.25, 0.75], n_cells=3 if FAST else 4)
simulate_partial_targets(binary_lj_mixture(), mix_states, engine, steps=50 if FAST else 5000)
path = write_partial_rdf_csv(workdir / "mix_x0.25.csv", mix_states[0].partials,
                             mix_states[0].composition, 0.75, 1.2)
print(path.read_text().splitlines()[:2], "->", [t.pair for t in read_targets(path)[0]])
mixture = make_mixture_potential(["Ar", "Kr"], prior_epsilon=0.4, prior_sigma=0.85, prior_n=10)
pretrain_to_pmf(mixture, mix_states)
res = fit(mixture, mix_states, FitConfig(epochs=2 if FAST else 60, production_steps=production,
                                         engine=engine),
          out_dir=workdir / "mixture", true_potential=binary_lj_mixture(), log=lambda m: None)
for name, dev in zip(res.states, res.rdf_dev):
    print(f"{name:36s} rdf_dev {dev:.4f}")
print("max |ΔU| per pair:", {k: round(v, 3) for k, v in u_errors(res.potential,
                                                                  binary_lj_mixture()).items()})

# %% [markdown]
# BPTT alone stops several times above the noise floor of the partial RDFs (BENCHMARKS.md). The
# Gauss–Newton refinement works for mixtures too: one spline correction per species pair, a
# Jacobian that couples every partial RDF of every composition to every correction. It starts
# from the BPTT result (`--method newton --start fit_mix/card.toml` on the command line), or by
# default from the Boltzmann inversion of each partial RDF; `diffsim ibi` likewise updates one
# spline per pair from its own g_ab, and `--method reweighting` reweights each composition's
# frames by the energy summed over all pair potentials.

# %%
refined = fit(res.potential, mix_states,
              FitConfig(method="newton", newton_iterations=1 if FAST else 6,
                        newton_frames=5 if FAST else 500, production_steps=production,
                        engine=engine),
              out_dir=workdir / "mixture_newton", true_potential=binary_lj_mixture(),
              log=lambda m: None)
for name, before, after in zip(refined.states, res.rdf_dev, refined.rdf_dev):
    print(f"{name:36s} rdf_dev BPTT {before:.4f} -> Newton {after:.4f}")
