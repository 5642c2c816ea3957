"""Peak memory of one DiffSim gradient versus trajectory length, for the three gradient paths.

System: the DiffSim LJ liquid (256 atoms from 4×4×4 FCC, ρ* = 0.845, T* = 1.0, Nosé–Hoover chain
Q = 50, 5 chains, dt = 0.01), the neural pair potential (3 × 128 MLP + prior) run through its
spline table, float64. Loss: 0.95 · MSE(g, target) with g averaged over 100 frames evenly spread
over a trajectory of L steps; gradient w.r.t. the MLP parameters.

Methods:

* ``bptt``: backpropagation through the whole L-step trajectory
  (:func:`~ase_mlmd.md.differentiable.rollout`; expected memory linear in L);
* ``bptt-checkpoint``: the same gradient with ``checkpoint_every = ceil(√L)`` (windows recomputed
  during backward; expected ~√L);
* ``reweighting``: the DiffTRe estimate from the 100 stored frames of an L-step run (no graph
  through the dynamics; expected flat).

Measurement as ``benchmarks/md_gradient_memory.py``: one fresh subprocess per (method, L); peak
MB = ``ru_maxrss`` after the gradient minus the resident memory just before it. A ``bptt`` run
whose memory, extrapolated linearly from the two longest shorter ones, exceeds ``--max-gb`` is
not run; the table gives the extrapolation instead.

Usage:  python benchmarks/diffsim_memory.py [--steps 100 1000 10000] [--max-gb 6]
        [-o benchmarks/diffsim_memory.json]
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

METHODS = ("bptt", "bptt-checkpoint", "reweighting")
TARGET = Path(__file__).resolve().parents[2] / "shared/data/lj_rdf/rdf_rho0.845_T1.0_dt0.01.csv"
N_FRAMES = 100


def worker(method: str, steps: int, threads: int) -> dict:
    """One gradient in this process; returns its measurements."""
    import torch

    from ase_mlmd.diffsim.engine import Engine, EngineConfig
    from ase_mlmd.diffsim.fit import make_potential
    from ase_mlmd.diffsim.losses import rdf_mse
    from ase_mlmd.diffsim.reweighting import reweighted_average, sample_frames
    from ase_mlmd.diffsim.systems import ThermoState
    from ase_mlmd.diffsim.tabulate import PairTable
    from ase_mlmd.diffsim.targets import read_rdf_csv
    from ase_mlmd.md.differentiable import carry_state, rollout

    torch.set_num_threads(threads)
    target = read_rdf_csv(TARGET)
    state_point = ThermoState(target.density, target.temperature, target)
    potential = make_potential("neural-pair", seed=0)
    table = PairTable(potential)
    engine = Engine(table.spline, [state_point], EngineConfig(), differentiable=True)
    table.refresh(with_graph=False)
    state = engine.run(engine.initial_state(), 200)
    g_target = target.g_tensor()

    def gradient(steps: int) -> float:
        every = max(1, steps // N_FRAMES)
        table.refresh(with_graph=True)
        potential.zero_grad()
        if method == "reweighting":
            _, stored = sample_frames(engine, table, state, N_FRAMES, every)
            theta = torch.cat([table.values, table.derivatives])
            frames = stored[0]
            g, _ = reweighted_average(
                frames.rdfs, frames.energies(theta), frames.reference, 1 / target.temperature
            )
        else:
            start = engine.forcefield(carry_state(state), create_graph=True)
            k = math.ceil(math.sqrt(steps)) if method == "bptt-checkpoint" else None
            params = [table.values, table.derivatives]
            out = rollout(engine.integrator, start, steps, lambda s: s.positions, k, params)
            frames = out.values[every - 1 :: every][:N_FRAMES]
            g = engine.rdf(frames, out.state.cell)[0]
        loss = 0.95 * rdf_mse(g, g_target)
        loss.backward()
        table.push_gradients()
        return float(loss.detach())

    gradient(min(steps, 10))  # warm-up (allocator, lazy imports) on a short trajectory
    baseline = current_rss_mb()
    start = time.perf_counter()
    loss = gradient(steps)
    wall = time.perf_counter() - start
    grad_norm = math.sqrt(sum(float(p.grad.square().sum()) for p in potential.parameters()))
    return {
        "method": method,
        "steps": steps,
        "peak_mb": max_rss_mb() - baseline,
        "wall_s": wall,
        "loss": loss,
        "grad_norm": grad_norm,
    }


def run_worker(method: str, steps: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, str(steps), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--max-gb", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-o", "--output", default=None)
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.threads)))
        return
    rows = []
    measured: list[tuple[int, float]] = []  # (steps, peak MB) of the bptt runs

    def extrapolate(steps: int) -> float | None:
        """bptt memory at ``steps`` from the last two runs (slope) or the last one (ratio)."""
        if not measured:
            return None
        if len(measured) == 1:
            return measured[0][1] * steps / measured[0][0]
        (s1, m1), (s2, m2) = measured[-2:]
        return m2 + (m2 - m1) / (s2 - s1) * (steps - s2)

    for steps in sorted(args.steps):
        for method in args.methods:
            expected = extrapolate(steps) if method == "bptt" else None
            if expected is not None and expected > args.max_gb * 1024:
                rows.append(
                    {
                        "method": method,
                        "steps": steps,
                        "peak_mb": None,
                        "extrapolated_mb": expected,
                        "wall_s": None,
                        "note": f"not run: ≈ {expected / 1024:.1f} GB (extrapolated from the "
                        f"shorter runs) > {args.max_gb} GB",
                    }
                )
                print(rows[-1], flush=True)
                continue
            row = run_worker(method, steps, args.threads)
            if method == "bptt":
                measured.append((steps, row["peak_mb"]))
            rows.append(row)
            print(row, flush=True)
    print("\n| steps | method | peak MB | wall s | note |\n|---|---|---|---|---|")
    for r in rows:
        peak = "—" if r["peak_mb"] is None else f"{r['peak_mb']:.1f}"
        wall = "—" if r["wall_s"] is None else f"{r['wall_s']:.1f}"
        print(f"| {r['steps']} | {r['method']} | {peak} | {wall} | {r.get('note', '')} |")
    if args.output:
        record = {
            "date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "command": "python benchmarks/diffsim_memory.py " + " ".join(sys.argv[1:]),
            "rows": rows,
        }
        Path(args.output).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
