"""DiffSim over compositions: learn the three pair potentials of a binary LJ mixture from partial
RDFs at two compositions and test at a third (METRICS.md §2).

Truth: σ_ArAr 0.9, σ_ArKr 1.0, σ_KrKr 1.1, ε = 1, shifted at 2.5 σ (reduced units, masses 1),
ρ = ``--density`` (0.75), T = ``--temperature`` (1.2), 256 atoms, x_Kr = 0.25 / 0.5 / 0.75. The
repository has no mixture data, so the targets are simulated here (the engine's Nosé–Hoover
chain, dt 0.01, a frame every 10 steps) and written as partial-RDF CSV files.

Parts (``--parts``):

* ``targets``: simulate the truth (``--target-steps`` after 1000 equilibration steps) and write
  ``--outdir/targets/rdf_mix_x{x}_rho…_T….csv``;
* ``floor``: the truth again with another seed, evaluated like a fit (``--production`` steps):
  rdf_dev per partial RDF, the noise floor;
* ``fit``: BPTT with one neural pair potential per species pair, started from the Boltzmann
  inversion of the partial RDFs, on x = 0.25 and 0.75 jointly (``--epochs``, ``--lr``,
  ``--window``, ``--time-limit``);
  evaluated at all three compositions (0.5 is the transfer test); max |U − U_true| per pair on
  [1.0, 2.5] σ; outputs (card, plots) in ``--outdir/fit``;
* ``newton``: Gauss–Newton (inverse Monte Carlo) iterations with one spline correction per
  species pair that refine a card (``--newton-start``, default the BPTT result
  ``fit/card.toml``; relative to ``--outdir``) on the same two compositions
  (``--newton-iterations``, ``--newton-frames``, ``--newton-max-step``), evaluated like
  ``fit``; outputs in ``--outdir/--newton-out`` (default ``newton``), figures under the JSON
  key of that folder.

Usage:  python benchmarks/diffsim_mixture.py [--parts targets floor fit] [--threads 2]
        [-o benchmarks/diffsim_mixture.json] [--outdir benchmarks/diffsim_runs/mixture]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

from ase_mlmd.calculators.cards import read_card
from ase_mlmd.calculators.registry import model_from_card
from ase_mlmd.diffsim.config import FitConfig
from ase_mlmd.diffsim.engine import EngineConfig
from ase_mlmd.diffsim.fit import evaluate, fit, make_mixture_potential, pretrain_to_pmf
from ase_mlmd.diffsim.mixture import binary_lj_mixture, mixture_states, simulate_partial_targets
from ase_mlmd.diffsim.report import u_errors
from ase_mlmd.diffsim.systems import ThermoState
from ase_mlmd.diffsim.targets import read_partial_rdf_csv, write_partial_rdf_csv

FRACTIONS = (0.25, 0.5, 0.75)
TRAIN = (0.25, 0.75)
PRIOR = {"prior_epsilon": 0.4, "prior_sigma": 0.85, "prior_n": 10.0}


def target_path(outdir: Path, x: float, rho: float, temp: float) -> Path:
    return outdir / "targets" / f"rdf_mix_x{x:g}_rho{rho:g}_T{temp:g}.csv"


def load_states(args, fractions) -> list[ThermoState]:
    states = []
    for x in fractions:
        targets, composition = read_partial_rdf_csv(
            target_path(args.outdir, x, args.density, args.temperature)
        )
        states.append(
            ThermoState(args.density, args.temperature, composition=composition, partials=targets)
        )
    return states


def part_targets(args) -> dict:
    states = mixture_states(args.density, args.temperature, FRACTIONS)
    started = time.perf_counter()
    config = EngineConfig(seed=100)
    simulate_partial_targets(binary_lj_mixture(), states, config, args.target_steps)
    for x, state in zip(FRACTIONS, states, strict=True):
        write_partial_rdf_csv(
            target_path(args.outdir, x, args.density, args.temperature),
            state.partials,
            state.composition,
            args.density,
            args.temperature,
        )
    return {"steps": args.target_steps, "wall_time_s": time.perf_counter() - started}


def channel_devs(names, devs) -> dict[str, float]:
    return dict(zip(names, (float(d) for d in devs), strict=True))


def part_floor(args) -> dict:
    states = load_states(args, FRACTIONS)
    config = FitConfig(production_steps=args.production, engine=EngineConfig(seed=7))
    started = time.perf_counter()
    _, devs = evaluate(binary_lj_mixture(), states, config)
    names = [f"{s.name}[{t.pair}]" for s in states for t in s.partials]
    return {"rdf_dev": channel_devs(names, devs), "wall_time_s": time.perf_counter() - started}


def part_fit(args) -> dict:
    train = load_states(args, TRAIN)
    potential = make_mixture_potential(["Ar", "Kr"], "neural-pair", seed=0, **PRIOR)
    pretrain_to_pmf(potential, train)
    config = FitConfig(
        method="bptt",
        epochs=args.epochs,
        lr=args.lr,
        window=args.window,
        time_limit=args.time_limit,
        production_steps=args.production,
    )
    return fit_and_evaluate(potential, train, config, args, "fit")


def part_newton(args) -> dict:
    train = load_states(args, TRAIN)
    potential = model_from_card(read_card(args.outdir / args.newton_start))
    config = FitConfig(
        method="newton",
        newton_iterations=args.newton_iterations,
        newton_frames=args.newton_frames,
        newton_max_step=args.newton_max_step,
        time_limit=args.time_limit,
        production_steps=args.production,
    )
    return {
        "start": args.newton_start,
        "max_step_kT": args.newton_max_step,
        **fit_and_evaluate(potential, train, config, args, args.newton_out),
    }


def fit_and_evaluate(potential, train, config: FitConfig, args, folder: str) -> dict:
    """Fit on the training compositions, write ``--outdir/folder``, evaluate at all three."""
    result = fit(
        potential,
        train,
        config,
        out_dir=args.outdir / folder,
        true_potential=binary_lj_mixture(),
        name=f"diffsim-mixture-{config.method}",
        progress=False,
    )
    every = load_states(args, FRACTIONS)
    _, devs = evaluate(result.potential, every, config)
    names = [f"{s.name}[{t.pair}]" for s in every for t in s.partials]
    return {
        "trained_on": [s.name for s in train],
        "epochs": len(result.history),
        "wall_time_s": result.wall_time,
        "final_loss": result.history[-1]["loss"] if result.history else None,
        "rdf_dev": channel_devs(names, devs),
        "u_error_max": u_errors(result.potential, binary_lj_mixture()),
        "messages": result.messages,
    }


PARTS = {
    "targets": part_targets,
    "floor": part_floor,
    "fit": part_fit,
    "newton": part_newton,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts", nargs="+", default=["targets", "floor", "fit"], choices=list(PARTS)
    )
    parser.add_argument("--density", type=float, default=0.75)
    parser.add_argument("--temperature", type=float, default=1.2)
    parser.add_argument("--target-steps", type=int, default=20000)
    parser.add_argument("--production", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate")
    parser.add_argument("--window", type=int, default=60, help="BPTT window, steps")
    parser.add_argument("--newton-iterations", type=int, default=8)
    parser.add_argument("--newton-frames", type=int, default=1000)
    parser.add_argument("--newton-start", default="fit/card.toml", help="card to refine")
    parser.add_argument("--newton-out", default="newton", help="output folder of newton")
    parser.add_argument(
        "--newton-max-step", type=float, default=0.3, help="trust region per knot, k_B T"
    )
    parser.add_argument("--time-limit", type=float, default=None, help="fit seconds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("benchmarks/diffsim_mixture.json")
    )
    parser.add_argument("--outdir", type=Path, default=Path("benchmarks/diffsim_runs/mixture"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    record = json.loads(args.output.read_text()) if args.output.exists() else {}
    record["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    record["settings"] = {
        "density": args.density,
        "temperature": args.temperature,
        "threads": args.threads,
        "command": " ".join(sys.argv),
    }
    for part in args.parts:
        print(f"== {part}", flush=True)
        key = args.newton_out if part == "newton" else part
        record[key] = {"date": date.today().isoformat(), **PARTS[part](args)}
        print(json.dumps(record[key], indent=2), flush=True)
        args.output.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
