"""One large periodic system per run: engine step time against system size.

Lennard-Jones: the LAMMPS ``bench/in.lj`` system (benchmarks/lammps_lj.py: fcc at ρ* 0.8442,
T* 1.44, 2.5 σ plain truncation, skin 0.3 σ, dt 0.005 τ), float64. NequIP: a small random
model (3 layers, 32 features, l_max 1, r_max 5 Å; ``--nequip-dtype``, float32 by default) on
an argon fcc lattice (a = 5.26 Å, 4 n³ atoms) at 40 K, dt 2 fs. NVE, one system per run.

For each size: the neighbor list is built and ``--warmup`` steps run, then ``--steps`` steps
are timed (device synchronised before and after), giving ms/step, atom-steps/s and the peak
device memory (CUDA only). A size that does not fit (out of memory) or runs past
``--budget-s`` stops the scan of that model; what was measured is kept.

Usage::

    python benchmarks/size_scan.py --device cuda [--lj 10 20 40 63] [--nequip 6 12 20]
        [--steps 40] [-o size_scan.json] [--markdown size_scan.md]

(``--lj n`` is n³ fcc cells, 4 n³ atoms: 10 → 4 000, 20 → 32 000, 63 → 1 000 188;
``--nequip n`` likewise: 6 → 864, 12 → 6 912, 20 → 32 000.)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.lattice.cubic import FaceCenteredCubic

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lammps_lj import CUTOFF, SKIN, TIMESTEP, lj_system  # noqa: E402

from ase_mlmd.fileio import atomic_write_text  # noqa: E402
from ase_mlmd.md.forcefield import ForceField  # noqa: E402
from ase_mlmd.md.integrators import velocity_verlet  # noqa: E402
from ase_mlmd.md.state import MDState  # noqa: E402
from ase_mlmd.models.pair import LennardJones  # noqa: E402

ARGON_LATTICE = 5.26


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def argon_lattice(repeat: int):
    atoms = FaceCenteredCubic("Ar", size=(repeat,) * 3, latticeconstant=ARGON_LATTICE)
    rng = np.random.default_rng(0)
    velocities = (
        rng.normal(size=(len(atoms), 3)) * np.sqrt(units.kB * 40.0 / atoms.get_masses())[:, None]
    )
    atoms.set_velocities(velocities - velocities.mean(axis=0))
    return atoms


def nequip_model(dtype: str):
    from ase_mlmd.models.backends.nequip import NequipModel, build_nequip_model

    graph = build_nequip_model(
        type_names=["Ar"],
        r_max=5.0,
        seed=0,
        num_layers=3,
        num_features=32,
        l_max=1,
        model_dtype=dtype,
    ).eval()
    return NequipModel(graph)


def time_one(model, atoms, timestep_fs: float, skin: float, args) -> dict:
    """ms/step of the engine on one system."""
    device = args.device
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    forcefield = ForceField(model.to(device), skin=skin)
    integrator = velocity_verlet(forcefield, timestep_fs)
    state = integrator.init(MDState.from_atoms([atoms], device=device))
    for _ in range(args.warmup):
        state = integrator.step(state).detach()
    _sync(device)
    builds = forcefield.n_builds
    start = time.perf_counter()
    for _ in range(args.steps):
        state = integrator.step(state).detach()
    _sync(device)
    wall = time.perf_counter() - start
    row = {
        "atoms": len(atoms),
        "steps": args.steps,
        "ms_per_step": 1e3 * wall / args.steps,
        "atom_steps_per_s": len(atoms) * args.steps / wall,
        "neighbor_builds": forcefield.n_builds - builds,
        "finite": bool(torch.isfinite(state.positions).all()),
    }
    if device.startswith("cuda"):
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def scan(name: str, sizes: list[int], make, args) -> list[dict]:
    rows = []
    started = time.perf_counter()
    for repeat in sizes:
        if time.perf_counter() - started > args.budget_s:
            rows.append({"repeat": repeat, "skipped": f"past the {args.budget_s} s budget"})
            break
        model, atoms, timestep_fs, skin = make(repeat)
        try:
            row = time_one(model, atoms, timestep_fs, skin, args)
        except torch.OutOfMemoryError as err:
            rows.append({"repeat": repeat, "atoms": len(atoms), "error": f"out of memory: {err}"})
            break
        row["repeat"] = repeat
        rows.append(row)
        print(
            f"{name} {row['atoms']:>9} atoms: {row['ms_per_step']:8.2f} ms/step, "
            f"{row['atom_steps_per_s']:,.0f} atom-steps/s",
            flush=True,
        )
        del model, atoms
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def markdown(report: dict) -> str:
    lines = [
        f"# Size scan ({report['date']}, {report['device_name']}, torch {report['torch']})",
        "",
        f"`{report['command']}`",
        "",
        "| model | atoms | ms/step | atom-steps/s | builds | peak GiB |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in report["scans"].items():
        for row in rows:
            if "ms_per_step" not in row:
                why = row.get("error") or row.get("skipped")
                lines.append(f"| {name} | {row.get('atoms', '?')} | {why} | | | |")
                continue
            peak = row.get("peak_memory_gib")
            lines.append(
                f"| {name} | {row['atoms']:,} | {row['ms_per_step']:.2f} | "
                f"{row['atom_steps_per_s']:,.0f} | {row['neighbor_builds']} | "
                f"{'' if peak is None else f'{peak:.2f}'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lj", type=int, nargs="*", default=[10, 20, 40, 63])
    parser.add_argument("--nequip", type=int, nargs="*", default=[6, 12, 20])
    parser.add_argument("--nequip-dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per size")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=120.0, help="per model")
    parser.add_argument("-o", "--output", type=Path, default=None, help="JSON results")
    parser.add_argument("--markdown", type=Path, default=None, help="Markdown table")
    args = parser.parse_args(argv)

    def make_lj(repeat):
        model = LennardJones(1.0, 1.0, CUTOFF, cutoff_mode="none")
        return model, lj_system(repeat), TIMESTEP / units.fs, SKIN

    def make_nequip(repeat):
        return nequip_model(args.nequip_dtype), argon_lattice(repeat), 2.0, 1.0

    scans = {}
    if args.lj:
        scans["LJ"] = scan("LJ", args.lj, make_lj, args)
    if args.nequip:
        scans[f"NequIP {args.nequip_dtype}"] = scan("NequIP", args.nequip, make_nequip, args)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": args.device,
        "device_name": torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "command": "python benchmarks/size_scan.py " + " ".join(sys.argv[1:]),
        "scans": scans,
    }
    if args.output:
        atomic_write_text(args.output, json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    if args.markdown:
        atomic_write_text(args.markdown, text)
    print(text)


if __name__ == "__main__":
    main()
