"""How fast the 4b reference MD runs (issue 14): chignolin, amber14 + GBn2, 340 K, 2 fs.

The same system and integrator as ``backmap_chignolin.py --stages simulate``
(:func:`ase_mlmd.data.openmm_peptide.build_peptide_system`, ``LangevinMiddleIntegrator``),
timed for ``--steps`` steps after a short warm-up, per platform and thread count; prints ns/h
and what the 4b goal (``--frames`` decorrelated frames, one per ``--tau-ps``) would cost.

    python benchmarks/chignolin_md_speed.py                       # CPU, 1 and 2 threads
    python benchmarks/chignolin_md_speed.py --platforms CUDA      # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import time


def measure(platform: str, threads: int | None, steps: int) -> float:
    """ns of chignolin MD per hour of wall time on ``platform``."""
    import openmm
    from openmm import unit

    from ase_mlmd.data.openmm_peptide import CHIGNOLIN, build_peptide, build_peptide_system

    topology, positions = build_peptide(CHIGNOLIN)
    system = build_peptide_system(topology)
    integrator = openmm.LangevinMiddleIntegrator(
        340 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond
    )
    properties = {"Threads": str(threads)} if platform == "CPU" and threads else {}
    chosen = openmm.Platform.getPlatformByName(platform)
    context = openmm.Context(system, integrator, chosen, properties)
    context.setPositions(unit.Quantity(positions / 10.0, unit.nanometer))
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(340 * unit.kelvin, 1)
    integrator.step(max(steps // 10, 100))
    context.getState(getEnergy=True)  # wait for the warm-up (GPU platforms run ahead)
    tick = time.perf_counter()
    integrator.step(steps)
    context.getState(getEnergy=True)
    seconds = time.perf_counter() - tick
    return steps * 2e-6 / seconds * 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platforms", default="CPU", help="comma-separated OpenMM platforms")
    parser.add_argument("--threads", default="1,2", help="CPU platform thread counts")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--frames", type=int, default=3000, help="decorrelated frames wanted")
    parser.add_argument(
        "--tau-ps",
        type=float,
        default=263.0,
        help="ps per decorrelated frame (measured: 131.5 frames × 2 ps, Cα end-to-end, "
        "benchmarks/backmap_runs/chignolin/data.json)",
    )
    args = parser.parse_args()
    need_ns = args.frames * args.tau_ps / 1000
    rows = []
    for platform in args.platforms.split(","):
        counts = [int(t) for t in args.threads.split(",")] if platform == "CPU" else [None]
        for threads in counts:
            rate = measure(platform, threads, args.steps)
            rows.append({"platform": platform, "threads": threads, "ns_per_hour": rate,
                         "hours_for_goal": need_ns / rate})  # fmt: skip
            print(
                f"{platform} threads={threads}: {rate:.2f} ns/h; {need_ns:.0f} ns for "
                f"{args.frames} decorrelated frames: {need_ns / rate:.0f} h",
                flush=True,
            )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
