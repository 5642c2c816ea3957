# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 01 — ML force fields as ASE calculators
#
# This tour shows everything a plain ASE script needs from ase_mlmd:
#
# 1. a named calculator from a model card (`load_calculator("lj-argon")`),
# 2. the ordinary ASE workflow with it: energies, forces, stress, relaxation, equation of state,
# 3. many structures in one forward pass (`calculate_batch`),
# 4. model cards of your own,
# 5. an ML model in memory (a nequip network) as a calculator,
# 6. the same from the command line: `ase-mlmd run`, and ASE's own `get_calculator_class`.
#
# Run it as a script (`python tutorials/01_calculators.py`) or open it as a notebook with
# jupytext. `ASE_MLMD_FAST=1` makes it quick (that is how the test suite runs it).

# %%
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from ase.build import bulk, molecule
from ase.cluster import Icosahedron

from ase_mlmd import MLCalculator, available_cards, load_calculator

FAST = os.environ.get("ASE_MLMD_FAST") == "1"
workdir = Path(tempfile.mkdtemp(prefix="ase_mlmd_tutorial01_"))

# %% [markdown]
# ## 1. A calculator from a model card
# `calculators/lj-argon.toml` ships with the package: a Lennard-Jones potential with argon
# parameters. `available_cards()` lists every card on the search path.

# %%
print(sorted(available_cards()))
calc = load_calculator("lj-argon")
argon = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(2)
argon.rattle(0.02, seed=1)
argon.calc = calc
print(f"E = {argon.get_potential_energy():.5f} eV for {len(argon)} atoms")
print("max |F| =", np.abs(argon.get_forces()).max().round(5), "eV/Å")
print("stress (Voigt, eV/Å^3) =", argon.get_stress().round(6))

# %% [markdown]
# ## 2. The ordinary ASE workflow: relax, then an equation of state

# %%
from ase.eos import EquationOfState  # noqa: E402
from ase.filters import FrechetCellFilter  # noqa: E402
from ase.optimize import BFGS  # noqa: E402
from ase.units import GPa  # noqa: E402

BFGS(FrechetCellFilter(argon), logfile=None).run(fmax=1e-4, steps=50 if FAST else 300)
a0 = argon.cell.lengths()[0] / 2
print(f"relaxed fcc lattice constant: {a0:.3f} Å (experiment at 4 K: 5.26 Å)")

volumes, energies = [], []
for scale in np.linspace(0.97, 1.03, 5 if FAST else 9):
    strained = argon.copy()
    strained.set_cell(argon.cell * scale, scale_atoms=True)
    strained.calc = calc
    volumes.append(strained.get_volume())
    energies.append(strained.get_potential_energy())
v0, e0, bulk_modulus = EquationOfState(volumes, energies).fit()
print(f"bulk modulus: {bulk_modulus / GPa:.2f} GPa")

# %% [markdown]
# ## 3. Many structures in one forward pass
# `calculate_batch` takes structures of any sizes (periodic or not) and evaluates them
# together. The results equal one-by-one evaluation.

# %%
structures = [argon, Icosahedron("Ar", 2), bulk("Ar", "fcc", a=5.3).repeat(3)]
energies, forces = calc.calculate_batch(structures)
for atoms, e, f in zip(structures, energies, forces):
    print(f"{len(atoms):4d} atoms: E = {e:9.5f} eV, forces {f.shape}")

# %% [markdown]
# ## 4. A card of your own
# A card is a small TOML file: backend, parameters, species, cutoff, units. Non-eV units are
# converted at the boundary. Here, a Morse potential for copper (Girifalco & Weizer 1959).

# %%
card = workdir / "morse-cu.toml"
card.write_text(
    """
name = "morse-cu"
description = "Morse copper, Girifalco & Weizer (1959)"
backend = "morse"
species = ["Cu"]
cutoff = 6.0
[parameters]
epsilon = 0.3429
r0 = 2.866
rho0 = 3.894
cutoff_mode = "smooth"
r_on = 5.0
""",
    encoding="utf-8",
)
copper = bulk("Cu", "fcc", a=3.61)
copper.calc = load_calculator(card)
print(f"Cu cohesive energy with morse-cu: {-copper.get_potential_energy():.3f} eV/atom")

# %% [markdown]
# ## 5. An ML model in memory
# Any nequip `GraphModel` (or schnetpack `NeuralNetworkPotential`) becomes a calculator with
# `MLCalculator(model)`. Here a small, randomly initialised NequIP network — a trained one works
# the same way (tutorial 02 trains one).

# %%
from ase_mlmd.models.backends.nequip import build_nequip_model  # noqa: E402

nequip_model = build_nequip_model(type_names=["H", "C", "O"], r_max=4.0, seed=0)
ethanol = molecule("CH3CH2OH")
ethanol.calc = MLCalculator(nequip_model, device="cpu")
print(f"random NequIP on ethanol: E = {ethanol.get_potential_energy():.4f} eV")

# %% [markdown]
# ## 6. The command line and ASE's calculator registry
# `ase-mlmd run` is ASE's own `ase run` with this package's calculators registered: single
# points, `-f` relaxations, `-E` equations of state all work. `ase_mlmd.register_with_ase()`
# does the same for a plain ASE script.

# %%
xyz = workdir / "ar.xyz"
bulk("Ar", "fcc", a=5.4, cubic=True).write(xyz)
cli = [sys.executable, "-m", "ase_mlmd.cli.main"]
print(subprocess.run([*cli, "run", "lj-argon", str(xyz)], capture_output=True, text=True,
                     cwd=workdir, check=True).stdout)
print(subprocess.run([*cli, "run", "lj-argon", str(xyz), "-f", "0.01"], capture_output=True,
                     text=True, cwd=workdir, check=True).stdout)

from ase.calculators.calculator import get_calculator_class  # noqa: E402

from ase_mlmd import register_with_ase  # noqa: E402

register_with_ase()
LJArgon = get_calculator_class("lj-argon")
print(LJArgon, "| ASE's own 'lj' is still", get_calculator_class("lj"))
