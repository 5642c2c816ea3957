"""Condensed-phase coarse-graining (issue 13, acceptance 5c; METRICS.md §3 last bullet, §2).

TIP3P water, one centre-of-mass bead per molecule, and three CG pair potentials on one system:
force matching (linear least squares on a spline, :mod:`ase_mlmd.cg.pair_matching`), IBI and
DiffSim (Gauss–Newton from the IBI result, :mod:`ase_mlmd.diffsim`), each judged by its CG RDF
against the mapped all-atom RDF (rdf_dev and the sampling noise floor), pressure and diffusivity.

Stages (``--stages``, each resumable: it skips what its output file already holds):

* ``sample``: ``ase-mlmd sample`` with ``--reference tip3p-water`` (OpenMM, PME, rigid TIP3P,
  Langevin 1/ps, 2 fs) on a box of ``--molecules`` at 0.9965 g/cm³ and 300 K → ``aa.extxyz``.
* ``map``: centre-of-mass beads and summed forces of every frame after ``--skip-ps`` → ``cg.npz``.
* ``target``: the mapped RDF on the DiffSim grid (target CSV), its noise floor (rdf_dev between
  the two halves of the trajectory) and the all-atom COM diffusivity and molecular pressure.
* ``fm``, ``ibi``, ``newton``: the three fits (cards under ``fits/``).
* ``eval``: CG MD of each card (batched engine, NVT Langevin 300 K, beads of 18.015 amu) →
  RDF, rdf_dev, pressure (virial), diffusivity; ``report``: ``report.md``, ``rdf.png``,
  ``potentials.png``, ``results.json``.

Usage:  OMP_NUM_THREADS=1 python benchmarks/cg_water.py [--stages sample map ...]
        [--outdir benchmarks/cg_runs/water]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("sample", "map", "target", "fm", "ibi", "newton", "eval", "report")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def stage_sample(args, out: Path, results: dict) -> None:
    from ase.io import write

    from ase_mlmd.data.openmm_water import water_box

    trajectory = out / "aa.extxyz"
    if trajectory.exists():
        log(f"sample: {trajectory} exists, kept")
        return
    start = out / "start.extxyz"
    write(start, water_box(args.molecules, seed=args.seed))
    command = [
        str(Path(sys.executable).with_name("ase-mlmd")),
        "sample",
        str(start),
        "--reference",
        "tip3p-water",
        "--temperature",
        "300",
        "--steps",
        str(args.steps),
        "--every",
        str(args.every),
        "--threads",
        "1",
        "--seed",
        str(args.seed),
        "-o",
        str(trajectory),
    ]
    log("sample: " + " ".join(command))
    started = time.perf_counter()
    subprocess.run(command, check=True)
    results["sample"] = {
        "command": " ".join(command),
        "wall_s": time.perf_counter() - started,
        "molecules": args.molecules,
        "steps": args.steps,
        "every": args.every,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--outdir", default="benchmarks/cg_runs/water")
    parser.add_argument("--molecules", type=int, default=500)
    parser.add_argument("--steps", type=int, default=110_000, help="all-atom MD steps (2 fs)")
    parser.add_argument("--every", type=int, default=250, help="all-atom frame interval, steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    state_file = out / "stages.json"
    results = json.loads(state_file.read_text()) if state_file.exists() else {}
    for name in args.stages:
        log(f"stage {name}")
        globals()[f"stage_{name}"](args, out, results)
        from ase_mlmd.fileio import atomic_write_text

        atomic_write_text(state_file, json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
