"""Peak memory of one gradient through MD versus trajectory length.

System: 108-atom Lennard-Jones fcc solid (3×3×3 cubic cells) in reduced units (σ = ε = m = 1,
so ASE units), ρ* = 0.8, periodic, Nosé–Hoover chain (3) at T* = 1.0, dt = 0.005 τ, trainable
ε and σ, float64. Loss: the mean potential energy over the trajectory; gradient w.r.t. (ε, σ).

Methods:

* ``plain``: :func:`~ase_mlmd.md.differentiable.rollout` keeping the whole graph
  (expected memory linear in the number of steps);
* ``checkpoint``: the same gradient with ``checkpoint_every = ceil(√steps)`` (windows are
  recomputed in backward; expected ~√steps);
* ``tbptt``: :func:`~ase_mlmd.md.differentiable.truncated_bptt` over windows of ``--window``
  steps (state carried, graph cut between windows; a different, truncated gradient; expected
  flat).

Measurement: each (method, steps) runs in a fresh subprocess (``ru_maxrss`` only grows within a
process). After setup and a short warm-up gradient, the worker reads its current resident set
size (VmRSS); the reported *peak MB* is ``ru_maxrss`` after the gradient minus that baseline,
i.e. the extra resident memory the gradient needed (torch's CPU allocations included, which
``tracemalloc`` would not see). Wall time is the rollout plus backward, single-threaded torch by
default (``--threads``). A ``plain`` run whose extrapolated memory exceeds ``--max-gb`` (from the
MB/step of the shorter plain runs) is run at the longest multiple of 1000 steps that fits, and
the table says so.

Usage:  python benchmarks/md_gradient_memory.py [--steps 100 1000 10000] [--window 100]
        [--max-gb 8] [-o benchmarks/md_gradient_memory.json]
Prints a Markdown table (steps, method, peak MB, wall s).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from peak_memory import current_rss_mb, max_rss_mb

METHODS = ("plain", "checkpoint", "tbptt")


def worker(method: str, steps: int, window: int, threads: int) -> dict:
    """Run one gradient in this process and return its measurements."""
    import numpy as np
    import torch
    from ase import units
    from ase.build import bulk

    from ase_mlmd.md.differentiable import rollout, truncated_bptt
    from ase_mlmd.md.forcefield import ForceField
    from ase_mlmd.md.integrators import make_integrator
    from ase_mlmd.md.state import MDState
    from ase_mlmd.models.pair import LennardJones

    torch.set_num_threads(threads)
    density, temperature = 0.8, 1.0
    atoms = bulk("Ar", "fcc", a=(4 / density) ** (1 / 3), cubic=True).repeat(3)
    rng = np.random.default_rng(0)
    atoms.rattle(0.02, rng=rng)
    atoms.set_masses(np.ones(len(atoms)))
    momenta = rng.normal(scale=math.sqrt(temperature), size=(len(atoms), 3))
    atoms.set_momenta(momenta - momenta.mean(axis=0))
    model = LennardJones(1.0, 1.0, cutoff=2.5, trainable=True)
    forcefield = ForceField(model, skin=0.3)
    integrator = make_integrator(
        "nvt-nose-hoover",
        forcefield,
        0.005 / units.fs,
        temperature_K=temperature / units.kB,
        tdamp_fs=0.5 / units.fs,
        differentiable=True,
    )

    def energy(state: MDState) -> torch.Tensor:
        return state.energy

    def gradient(n_steps: int) -> None:
        state = integrator.init(MDState.from_atoms(atoms))
        if method == "tbptt":
            truncated_bptt(
                integrator,
                state,
                min(window, n_steps),
                max(1, n_steps // window),
                lambda w: w.rollout.values.mean(),
                energy,
                forcefield,
            )
            return
        every = math.ceil(math.sqrt(n_steps)) if method == "checkpoint" else None
        out = rollout(integrator, state, n_steps, energy, checkpoint_every=every)
        out.values.mean().backward()

    gradient(5)  # warm-up: allocator, lazy imports, neighbor-list code paths
    model.zero_grad()
    baseline = current_rss_mb()
    start = time.perf_counter()
    gradient(steps)
    wall = time.perf_counter() - start
    peak = max_rss_mb()
    return {
        "method": method,
        "steps": steps,
        "window": window if method == "tbptt" else None,
        "checkpoint_every": math.ceil(math.sqrt(steps)) if method == "checkpoint" else None,
        "atoms": len(atoms),
        "baseline_rss_mb": round(baseline, 1),
        "max_rss_mb": round(peak, 1),
        "peak_mb": round(peak - baseline, 1),
        "wall_s": round(wall, 2),
        "grad_epsilon": float(model.epsilon.grad),
    }


def run_worker(method: str, steps: int, window: int, threads: int) -> dict:
    """Run :func:`worker` in a fresh Python process and return its result."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        method,
        str(steps),
        "--window",
        str(window),
        "--threads",
        str(threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} {steps}: worker failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def describe(row: dict) -> str:
    if row["method"] == "checkpoint":
        return f"checkpoint (k = {row['checkpoint_every']})"
    if row["method"] == "tbptt":
        return f"truncated BPTT (τ = {row['window']})"
    return "plain backprop"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--window", type=int, default=100, help="truncated-BPTT window τ")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--max-gb", type=float, default=8.0, help="cap for plain backprop")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("-o", "--output", default=None, help="write results as JSON")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker(args.worker[0], int(args.worker[1]), args.window, args.threads)
        print(json.dumps(result))
        return

    rows = []
    mb_per_step = None
    for steps in sorted(args.steps):
        for method in args.methods:
            run_steps, note = steps, ""
            if method == "plain" and mb_per_step is not None:
                if mb_per_step * steps > 1024 * args.max_gb:
                    run_steps = int(1024 * args.max_gb / mb_per_step) // 1000 * 1000
                    note = (
                        f"reduced from {steps} steps: {steps} would need about "
                        f"{mb_per_step * steps / 1024:.0f} GB (> {args.max_gb:g} GB cap)"
                    )
            if run_steps <= 0:
                continue
            row = run_worker(method, run_steps, args.window, args.threads)
            row["note"] = note
            rows.append(row)
            if method == "plain" and run_steps >= 1000:
                mb_per_step = row["peak_mb"] / run_steps
            print(
                f"{run_steps:>6} {describe(row):<28} {row['peak_mb']:>9.1f} MB "
                f"{row['wall_s']:>8.2f} s {note}",
                file=sys.stderr,
                flush=True,
            )

    import torch

    cpus = len(os.sched_getaffinity(0))
    machine = f"{platform.machine()}, {cpus} CPUs, Python {platform.python_version()}"
    print(f"\n{date.today()}, {machine}, torch {torch.__version__}, {args.threads} thread(s)\n")
    print("| steps | method | peak MB | wall s | note |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['steps']} | {describe(row)} | {row['peak_mb']:.1f} | {row['wall_s']:.2f} "
            f"| {row['note']} |"
        )
    if args.output:
        meta = {"date": str(date.today()), "machine": machine, "torch": torch.__version__}
        payload = {"meta": {**meta, "threads": args.threads}, "rows": rows}
        Path(args.output).write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
