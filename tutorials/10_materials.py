# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 10 — Materials: an ML potential for copper, judged on the properties that matter
#
# A force field for a metal is good when its equation of state, elastic constants, phonons,
# defects and liquid come out right — not only its force error. With EMT as the reference
# (fast, in ASE, no download):
#
# 1. **label**: the crystal comes from pymatgen; EMT reference MD of 32-atom Cu cells — the
#    crystal at 100–1200 K, strained and sheared crystals, a vacancy and the liquid. From a
#    shell: `ase-mlmd sample Cu --reference emt --materials -o cu_ref.extxyz`;
# 2. **train** a small NequIP model (`ase-mlmd train --data cu_ref.extxyz --model nequip
#    --cutoff 4.5 --energy-weight 10 -o models/cu-nequip`);
# 3. **crystal properties** of the model next to EMT: EOS and bulk modulus (Birch–Murnaghan,
#    ase.eos), C11/C12/C44 from stress differences, the relaxed crystal back to pymatgen;
# 4. **phonons** with phonopy (0.01 Å displacements, a ≥ 10 Å supercell) along Γ–X–U|K–Γ–L–W–X;
# 5. **liquid MD** at 2000 K: RDF and diffusivity;
# 6. **the report**: all of it plus the vacancy energy in one call — the same as
#    `ase-mlmd bench --system metal --models cu-nequip --reference cu_ref.extxyz -o report/`.
#
# `ASE_MLMD_FAST=1` (the test suite) makes every stage tiny; a model trained for one epoch is
# not worth analysing, so the fast mode analyses the shipped `cu-nequip` card (trained by the
# command of step 2 for 75 minutes on a shared 2-core CPU; see BENCHMARKS.md).

# %%
import os
import tempfile
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from ase_mlmd import load_calculator
from ase_mlmd.bench.metal import MetalBenchConfig, metal_benchmark
from ase_mlmd.bench.metal_crystal import cubic_elastic_constants, relax_lattice, to_pymatgen
from ase_mlmd.bench.metal_liquid import LiquidConfig, liquid_observables, liquid_run, melt
from ase_mlmd.bench.metal_phonons import fcc_phonons, frequency_mae
from ase_mlmd.calculators.registry import available_cards
from ase_mlmd.data.materials import MetalDatasetConfig, frames_of_type, sample_metal_dataset
from ase_mlmd.train import TrainConfig, train

FAST = os.environ.get("ASE_MLMD_FAST") == "1"
workdir = Path(tempfile.mkdtemp(prefix="ase_mlmd_tutorial10_"))

# %% [markdown]
# ## 1. Label: a pymatgen crystal, EMT reference MD
# Any conventional cubic fcc cell works — an ASE `Atoms`, a pymatgen `Structure` (here), or a
# CIF/POSCAR file on the command line. Each segment is its own resumable file in
# `cu_ref.extxyz.parts/`; every frame carries `info["config_type"]`.

# %%
structure = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.61, cubic=True))
print(structure.composition, SpacegroupAnalyzer(structure).get_space_group_symbol())
data_config = MetalDatasetConfig(steps=20, every=10) if FAST else MetalDatasetConfig()
reference_file = workdir / "cu_ref.extxyz"
frames = sample_metal_dataset(
    structure, "emt", reference_file, data_config, progress=not FAST, threads=1
)
for kind in ("crystal", "iso", "shear", "vacancy", "liquid"):
    part = frames_of_type(frames, kind)
    energies = [f.get_potential_energy() / len(f) for f in part]
    print(f"{kind:8s} {len(part):4d} frames, E {min(energies):+.3f} … {max(energies):+.3f} eV/atom")

# %% [markdown]
# ## 2. Train NequIP
# Small: 2 layers, l_max = 1, 16 features, cutoff 4.5 Å; the per-atom energy is weighted 10×
# because the equation of state and the elastic constants come from small energy differences.

# %%
config = TrainConfig(
    model="nequip",
    cutoff=4.5,
    energy_weight=10.0,
    seed=123,
    max_epochs=1 if FAST else 500,
    max_time="1m" if FAST else "30m",
)
result = train(reference_file, config, workdir / "cu-nequip", progress=not FAST)
print(
    f"test force MAE {result.test_force_mae_mev_per_angstrom:.1f} meV/Å, energy MAE "
    f"{result.test_energy_mae_mev_per_atom:.2f} meV/atom ({result.epochs} epochs)"
)
shipped = "cu-nequip" in available_cards()
card = "cu-nequip" if FAST and shipped else result.card_path  # fast: the shipped card (above)
model = load_calculator(card)
emt = EMT()

# %% [markdown]
# ## 3. Equation of state, elastic constants, pymatgen out
# `relax_lattice` fits Birch–Murnaghan to 11 energies over V₀(1 ± 6 %) twice (the second
# round centred on the first minimum); the elastic constants are central differences of the
# stress at ±0.5 % and ±1 % strain. The relaxed cell goes back to pymatgen.

# %%
crystal = AseAtomsAdaptor.get_atoms(structure)
properties = {}
for name, calc in (("EMT", emt), ("NequIP", model)):
    relaxed, eos = relax_lattice(crystal, calc)
    elastic = cubic_elastic_constants(relaxed, calc)
    properties[name] = (relaxed, eos, elastic)
    print(
        f"{name:7s} a0 {eos.a0:.4f} Å  B {eos.bulk_modulus:6.1f} GPa  C11 {elastic['C11']:6.1f}  "
        f"C12 {elastic['C12']:6.1f}  C44 {elastic['C44']:6.1f} GPa  "
        f"(C11+2C12)/3 {elastic['B_elastic']:6.1f} GPa"
    )
relaxed_structure = to_pymatgen(properties["NequIP"][0])
print(relaxed_structure.lattice.abc, SpacegroupAnalyzer(relaxed_structure).get_space_group_symbol())

# %% [markdown]
# ## 4. Phonons
# phonopy displaces one atom by 0.01 Å in a 3×3×3 supercell (10.8 Å; it must also be at
# least twice the cutoff, else `PhononSupercellError`) and builds the force constants.

# %%
bands = {
    name: fcc_phonons(properties[name][0], calc) for name, calc in (("EMT", emt), ("NequIP", model))
}
print(f"max frequency: EMT {bands['EMT'].frequencies.max():.2f} THz, "
      f"NequIP {bands['NequIP'].frequencies.max():.2f} THz; "
      f"MAE along the path {frequency_mae(bands['NequIP'], bands['EMT']):.3f} THz")  # fmt: skip

# %% [markdown]
# ## 5. Liquid MD
# One liquid is melted with EMT (a perfect crystal superheats, so it is melted at 3500 K and
# cooled to 2000 K); both calculators start from it, equilibrate and run with Bussi's
# thermostat. RDF and the diffusivity from the mean squared displacement.

# %%
if FAST:
    liquid = LiquidConfig(repeat=2, melt_ps=0.05, equilibration_ps=0.02, production_ps=0.2)
else:
    liquid = LiquidConfig(equilibration_ps=0.5, production_ps=2.0)
start = melt(properties["EMT"][0], emt, liquid)
for name, calc in (("EMT", emt), ("NequIP", model)):
    obs = liquid_observables(liquid_run(start, calc, liquid), liquid)
    peak = obs["r"][np.argmax(obs["g"])]
    print(
        f"{name:7s} T {obs['mean_temperature_K']:.0f} K, first RDF peak at {peak:.2f} Å "
        f"(g = {obs['g'].max():.2f}), D = {obs['diffusivity']:.2f}e-9 m²/s"
    )

# %% [markdown]
# ## 6. The report
# Everything above plus the vacancy formation energy (108 atoms, relaxed) and the test-set
# errors per configuration type, in `report.md` with plots (EOS, bands, DOS, RDF); each
# calculator's results are cached, so an interrupted report resumes.

# %%
bench = MetalBenchConfig(
    liquid=liquid, vacancy_min_atoms=30 if FAST else 100, threads=1, progress=not FAST
)
report, results = metal_benchmark([card], frames, workdir / "report", bench, log=print)
print(report.read_text().split("\n\n")[2])
print("plots:", sorted(p.name for p in report.parent.glob("*.png")))
