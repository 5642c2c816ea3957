# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 04 — Forces are not enough: the MD benchmark report
#
# Fu et al. (TMLR 2023) showed that a force field's force error says little about the
# simulations it produces. This tutorial runs their protocol on ethanol with the shipped NequIP
# and SchNet cards:
#
# 1. a GFN2-xTB reference run (the embedded default reference; no download),
# 2. `benchmark(...)`: test force MAE, replicas from test frames with MDsim's thermostat
#    (Nosé–Hoover, 500 K, 0.5 fs), collapse by bond deviation > 0.5 Å, h(r) MAE,
# 3. the report folder: `report.md`, `metrics.json`, plots — and the same observables called
#    directly from `ase_mlmd.observables` on the saved trajectories.
#
# The command line equivalent is
# `ase-mlmd bench --system ethanol --models ethanol-nequip,ethanol-schnet --reference REF -o report/`.
# `ASE_MLMD_FAST=1` (the test suite) runs tiny lengths.

# %%
import os
import tempfile
from pathlib import Path

import numpy as np
from ase.build import molecule

from ase_mlmd.bench import BenchConfig, benchmark
from ase_mlmd.data import SamplingConfig, sample_reference
from ase_mlmd.observables import bond_deviation, compute_hr, hr_mae, reference_bonds

FAST = os.environ.get("ASE_MLMD_FAST") == "1"
workdir = Path(tempfile.mkdtemp(prefix="ase_mlmd_tutorial04_"))

# %% [markdown]
# ## 1. Reference data: GFN2-xTB ethanol at 500 K

# %%
sampling = SamplingConfig(temperature=500.0, timestep=0.5, steps=300 if FAST else 4000, every=10,
                          seed=1)  # fmt: skip
reference = sample_reference(
    molecule("CH3CH2OH"), "gfn2-xtb", sampling, workdir / "ref.extxyz", progress=not FAST,
    threads=1,
)
print(len(reference), "reference frames")

# %% [markdown]
# ## 2. The benchmark
# Each model: force MAE on the test split (seed 123), then replicas started from different test
# frames. A replica stops at its collapse; collapsed replicas count in the statistics with the
# time they lasted.

# %%
config = BenchConfig(
    system="ethanol",
    replicas=2 if FAST else 5,
    length_ps=0.25 if FAST else 5.0,
    progress=not FAST,
)
report, runs = benchmark(
    ["ethanol-nequip", "ethanol-schnet"], reference, workdir / "report", config
)
print(report.read_text())

# %% [markdown]
# ## 3. The observables behind the table
# Everything in the report is a pure function in `ase_mlmd.observables`, usable on any
# trajectory: here the bond-length deviation of one replica against the reference bonds, and the
# h(r) of its frames.

# %%
bonds, lengths = reference_bonds(reference)
frames = runs[0].replicas[0].frames
dev = bond_deviation(frames, bonds, lengths)
print(f"{runs[0].name}, replica 0: max bond deviation {np.max(dev):.3f} Å over {len(frames)} frames")
_, h_ref = compute_hr(reference)
_, h_run = compute_hr(frames)
print(f"h(r) MAE of that replica alone: {hr_mae(h_run, h_ref):.3f}")
print("plots:", sorted(p.name for p in (workdir / "report").glob("*.png")))
