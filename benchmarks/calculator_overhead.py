"""Overhead of MLCalculator in an ASE MD loop, against the raw model and the backends' own
ASE calculators.

For each model (a NequIP and a SchNet network, random weights, same architecture for every
path) and each system (ethanol, 9 atoms; liquid water from ../shared/data/water_dft repeated to
1536 atoms), it measures in one run, side by side:

* raw:    the model's own forward + backward for forces only (nequip: its energy model plus
          ``torch.autograd.grad``; schnetpack: the network with its ``Forces`` module) on a
          prepared input with the neighbor list built once: the floor any calculator can reach;
* ours:   ASE ``VelocityVerlet`` driving ``MLCalculator`` (neighbor list rebuilt every step);
* theirs: ASE ``VelocityVerlet`` driving ``nequip.integrations.ase.NequIPCalculator`` or
          schnetpack's ``SpkCalculator`` on the same model.

Usage:  python benchmarks/calculator_overhead.py [--device cpu] [--quick] [-o results.json]
            [--markdown table.md] [--data ../shared/data]
Prints a Markdown table (time per step, ratios ours/raw and theirs/ours). ``--data`` is the
folder that holds ``water_dft/`` (on the GPU machine, the copy the suite carries).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from ase_mlmd import MLCalculator
from ase_mlmd.batch import batch_from_atoms
from ase_mlmd.fileio import atomic_write_text

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WATER = DATA / "water_dft" / "data_0"


def water_box(repeat: int = 2) -> Atoms:
    """Frame 0 of the DFT water data (192 atoms) repeated ``repeat``^3 times."""
    types = np.loadtxt(WATER / "type.raw", dtype=int)
    names = (WATER / "type_map.raw").read_text().split()
    coords = np.load(WATER / "set.000" / "coord.npy")[0].reshape(-1, 3)
    box = np.load(WATER / "set.000" / "box.npy")[0].reshape(3, 3)
    atoms = Atoms([names[t] for t in types], positions=coords, cell=box, pbc=True)
    atoms.wrap()
    return atoms.repeat(repeat)


class MDTimer:
    """An ASE VelocityVerlet run that can be advanced and timed in pieces."""

    def __init__(self, atoms: Atoms, calc) -> None:
        self.atoms = atoms.copy()
        self.atoms.calc = calc
        thermalize_momenta(self.atoms, temperature_K=300, rng=np.random.default_rng(0))
        self.dyn = VelocityVerlet(self.atoms, timestep=0.25 * units.fs)
        self.dyn.run(2)  # warm-up

    def __call__(self, steps: int) -> float:
        """Seconds per step over ``steps`` steps."""
        start = time.perf_counter()
        self.dyn.run(steps)
        return (time.perf_counter() - start) / steps


def call_timer(fn):
    """Time ``repeats`` calls of ``fn``: seconds per call."""
    fn()
    fn()

    def timed(repeats: int) -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats

    return timed


# ---------------------------------------------------------------- nequip
def nequip_paths(atoms: Atoms, device: str, cutoff: float):
    from nequip.data import AtomicDataDict, from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
    from nequip.integrations.ase import NequIPCalculator
    from nequip.utils import torch_default_dtype

    from ase_mlmd.models.backends.nequip import build_nequip_model

    model = build_nequip_model(
        type_names=["H", "C", "O"], r_max=cutoff, seed=0, num_layers=3, num_features=32, l_max=1
    ).eval()
    transforms = [
        ChemicalSpeciesToAtomTypeMapper(
            model_type_names=["H", "C", "O"], chemical_species_to_atom_type_map=None
        ),
        NeighborListTransform(r_max=cutoff),
    ]
    with torch_default_dtype(torch.float64):
        data = from_ase(atoms)
        for t in transforms:
            data = t(data)
    data = AtomicDataDict.to_(data, torch.device(device))

    energy_model = model.model.func  # GraphModel = ForceStressOutput(energy model)

    def raw():
        inputs = dict(data)
        positions = inputs[AtomicDataDict.POSITIONS_KEY].detach().requires_grad_(True)
        inputs[AtomicDataDict.POSITIONS_KEY] = positions
        energy = energy_model(inputs)[AtomicDataDict.TOTAL_ENERGY_KEY].sum()
        return -torch.autograd.grad(energy, positions)[0]

    theirs = NequIPCalculator(model, device=device, transforms=transforms)
    # nequip's data tools follow torch's default dtype; its models expect float64 data
    return model, raw, theirs, lambda: torch_default_dtype(torch.float64)


# ---------------------------------------------------------------- schnetpack
def schnet_paths(atoms: Atoms, device: str, cutoff: float):
    from ase_mlmd.models.backends.schnetpack import build_schnet_model, import_schnetpack

    spk = import_schnetpack()
    model = build_schnet_model(
        cutoff=cutoff, n_atom_basis=128, n_interactions=3, n_rbf=20, seed=0, dtype=torch.float64
    ).eval()
    model = model.to(device)
    converter = spk.interfaces.AtomsConverter(
        neighbor_list=spk.transform.MatScipyNeighborList(cutoff=cutoff),
        device=device,
        dtype=torch.float64,
    )
    inputs = converter(atoms)

    def raw():
        out = model({k: v.clone() for k, v in inputs.items()})
        return out["forces"]

    class InMemorySpkCalculator(spk.interfaces.SpkCalculator):
        """SpkCalculator reads a pickled model file; give it the in-memory model instead."""

        def _load_model(self, model_file):
            return model

    theirs = InMemorySpkCalculator(
        model_file="<in-memory>",
        neighbor_list=spk.transform.MatScipyNeighborList(cutoff=cutoff),
        energy_unit="eV",
        position_unit="Ang",
        device=device,
        dtype=torch.float64,
    )
    return model, raw, theirs, contextlib.nullcontext


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="few steps (smoke test)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("-o", "--output", default=None, help="write results as JSON")
    parser.add_argument("--markdown", default=None, help="write the table as Markdown")
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding water_dft/")
    args = parser.parse_args()
    global WATER
    WATER = args.data / "water_dft" / "data_0"
    systems = {"ethanol (9 atoms)": molecule("CH3CH2OH"), "water (1536 atoms)": water_box(2)}
    steps = {
        "ethanol (9 atoms)": 20 if args.quick else 100,
        "water (1536 atoms)": 1 if args.quick else 3,
    }
    cutoff = 5.0
    rows = []
    for model_name, paths in (("NequIP", nequip_paths), ("SchNet", schnet_paths)):
        for system_name, atoms in systems.items():
            model, raw, theirs, backend_context = paths(atoms, args.device, cutoff)
            n = steps[system_name]
            with backend_context():
                timers = {"raw": call_timer(raw), "theirs": MDTimer(atoms, theirs)}
            timers["ours"] = MDTimer(atoms, MLCalculator(model, device=args.device))
            samples = {name: [] for name in timers}
            # interleaved rounds, order rotated each round: machine noise hits every path alike
            for round_ in range(args.rounds):
                order = list(timers)[round_ % 3 :] + list(timers)[: round_ % 3]
                for name in order:
                    context = contextlib.nullcontext if name == "ours" else backend_context
                    with context():
                        samples[name].append(timers[name](n))
            t = {name: float(np.median(v)) for name, v in samples.items()}
            batch = batch_from_atoms([atoms], cutoff)
            rows.append(
                {
                    "model": model_name,
                    "system": system_name,
                    "edges": batch.edge_index.shape[1],
                    "raw_ms": 1e3 * t["raw"],
                    "ours_ms": 1e3 * t["ours"],
                    "theirs_ms": 1e3 * t["theirs"],
                    "ours_over_raw": t["ours"] / t["raw"],
                    "theirs_over_ours": t["theirs"] / t["ours"],
                    "samples_ms": {k: [1e3 * x for x in v] for k, v in samples.items()},
                }
            )
            print(f"done {model_name} {system_name}", flush=True)
    lines = [
        f"device {args.device}, torch {torch.__version__}, {platform.machine()}, "
        f"{torch.get_num_threads()} threads, float64, median of {args.rounds} interleaved rounds",
        "",
        "| model | system | raw fwd+bwd ms | MLCalculator MD step ms "
        "| backend calculator MD step ms | ours / raw | backend / ours |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['system']} | {r['raw_ms']:.2f} | {r['ours_ms']:.2f} | "
            f"{r['theirs_ms']:.2f} | {r['ours_over_raw']:.2f} | {r['theirs_over_ours']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.output:
        atomic_write_text(args.output, json.dumps(rows, indent=2))
    if args.markdown:
        atomic_write_text(args.markdown, text)


if __name__ == "__main__":
    main()
