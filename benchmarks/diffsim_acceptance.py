"""DiffSim acceptance runs: LJ recovery (BPTT, reweighting, IBI) against the noise floor, and
transferability of single- and multi-state fits.

Targets: ``../shared/data/lj_rdf`` (mdgrad's LJ data: 256 particles, cutoff 2.5 σ, dt 0.01).
Every simulation uses the DiffSim engine settings (4×4×4 FCC start, Nosé–Hoover chain Q = 50,
5 chains, dt = 0.01, 1000 equilibration steps); every rdf_dev comes from a production run of
``--production`` steps with a frame every 10 steps.

Parts (``--parts``; each one updates its entry of the JSON file, so parts can run separately):

* ``floor``: the true LJ (ε = σ = 1, cut at 2.5 σ) at every state used below: its rdf_dev against
  the target is the noise floor (and checks that our RDF follows the target's definition);
* ``bptt``, ``reweighting``, ``newton``, ``ibi``: fits at ρ = 0.845, T = 1.0; rdf_dev, ratio to
  the floor,
  max |U − U_LJ| over [1.0, 2.5] σ, wall time; outputs (card, plots) in ``--outdir/<part>``.
  Neural fits start from the prior (ε_p = 0.4, σ_p = 0.94, n = 10, as the LJ run of the paper's
  code) or, with ``--init pmf``, from the Boltzmann-inverted target; the loss adds the VACF
  (weight ``--vacf-weight``) for BPTT (reweighting averages static observables only);
  ``newton`` (Gauss–Newton with the reweighting Jacobian) starts from −kT ln g*;
* ``bptt_newton``: Newton iterations that refine the BPTT result of ``--outdir/bptt/card.toml``;
* ``transfer``: BPTT fits at ρ = 0.3 and at {0.3, 0.7} jointly (T = 1.2), each evaluated at
  ρ = 0.3, 0.5, 0.7 (T = 1.2);
* ``spline_paths``: ``bptt_newton`` twice in one process, same seeds and settings: first with
  the spline tables forced onto the autograd path (as before ``SplinePair`` had an analytic
  derivative), then on the analytic (no-graph) path; wall times side by side, outputs in
  ``--outdir/bptt_newton_autograd`` and ``--outdir/bptt_newton_direct``;
* ``spline_step``: the engine step of that fit alone (the BPTT result as Newton's 1001-knot
  table, ρ = 0.845, T = 1.0, Nosé–Hoover chain), rounds of ``--step-rounds`` × 200 steps on
  each path in turn; median wall and CPU ms per step.

Usage:  python benchmarks/diffsim_acceptance.py --parts floor bptt ... [--threads 2]
        [-o benchmarks/diffsim_acceptance.json] [--outdir benchmarks/diffsim_runs]
"""

from __future__ import annotations

import argparse
import contextlib
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
from ase_mlmd.diffsim.engine import EngineConfig, production_rdf
from ase_mlmd.diffsim.fit import evaluate, fit, make_potential, pretrain_to_pmf
from ase_mlmd.diffsim.losses import LossWeights, rdf_dev
from ase_mlmd.diffsim.report import u_error
from ase_mlmd.diffsim.systems import ThermoState
from ase_mlmd.diffsim.targets import read_rdf_csv, read_vacf_csv
from ase_mlmd.models.pair import LennardJones
from ase_mlmd.models.spline_pair import SplinePair

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lj_rdf"
MAIN = (0.845, 1.0)
TRANSFER = [(0.3, 1.2), (0.5, 1.2), (0.7, 1.2)]
PRIOR = {"prior_epsilon": 0.4, "prior_sigma": 0.94, "prior_n": 10.0}


def state(rho: float, temp: float, vacf: bool = True) -> ThermoState:
    stem = f"rho{rho}_T{temp}_dt0.01.csv"
    vacf_path = DATA / f"vacf_{stem}"
    return ThermoState(
        rho,
        temp,
        read_rdf_csv(DATA / f"rdf_{stem}"),
        vacf=read_vacf_csv(vacf_path) if vacf and vacf_path.exists() else None,
    )


def truth() -> LennardJones:
    return LennardJones(1.0, 1.0, cutoff=2.5)


def part_floor(args) -> dict:
    out = {}
    for rho, temp in [MAIN, *TRANSFER]:
        s = state(rho, temp)
        start = time.perf_counter()
        (g,), _ = production_rdf(truth(), [s], EngineConfig(), args.production, 10)
        out[s.name] = {"rdf_dev": rdf_dev(g, s.target.g), "wall_s": time.perf_counter() - start}
        print(s.name, out[s.name], flush=True)
    return out


def fit_config(method: str, args) -> FitConfig:
    return FitConfig(
        method=method,
        epochs=args.epochs,
        window=args.window,
        lr=args.lr,
        weights=LossWeights(rdf=0.95, vacf=args.vacf_weight),
        production_steps=args.production,
        ibi_iterations=args.ibi_iterations,
        ibi_alpha=args.ibi_alpha,
        ibi_steps=args.ibi_steps,
        rw_frames=args.rw_frames,
        newton_iterations=args.newton_iterations,
        newton_frames=args.newton_frames,
        time_limit=args.time_limit,
    )


def part_fit(method: str, args, suffix: str = "") -> dict:
    s = state(*MAIN)
    out_dir = Path(args.outdir) / f"{method}{suffix}"
    if method in ("ibi", "newton"):
        potential = None
    elif method == "bptt_newton":
        method, potential = (
            "newton",
            model_from_card(read_card(Path(args.outdir) / "bptt/card.toml")),
        )
    else:
        potential = make_potential("neural-pair", seed=args.seed, **PRIOR)
        if args.init == "pmf":
            pretrain_to_pmf(potential, [s])
    result = fit(
        potential,
        [s],
        fit_config(method, args),
        out_dir=out_dir,
        true_potential=truth(),
        progress=False,
        name=f"lj-{method}",
    )
    return {
        "rdf_dev": result.rdf_dev[0],
        "u_error_max": u_error(result.potential, truth()),
        "iterations": len(result.history),
        "fit_wall_s": result.wall_time,
        "messages": result.messages,
    }


@contextlib.contextmanager
def spline_path(direct: bool):
    """Benchmark switch: with ``direct=False`` every :class:`SplinePair` (and so every
    species-pair potential of them) reports no analytic derivative while the block runs, so
    the engine and ``evaluate`` take the autograd path; ``direct=True`` changes nothing."""
    if direct:
        yield
        return
    SplinePair.direct_forces = property(lambda self: False)
    try:
        yield
    finally:
        del SplinePair.direct_forces


def part_spline_step(args) -> dict:
    """ms per engine step of the refinement's table, autograd and direct interleaved."""
    from ase_mlmd.diffsim.engine import Engine
    from ase_mlmd.diffsim.newton import TABLE_KNOTS
    from ase_mlmd.diffsim.tabulate import TABLE_R_MIN
    from ase_mlmd.models.spline_pair import spline_from_potential

    bptt = model_from_card(read_card(Path(args.outdir) / "bptt/card.toml"))
    table = spline_from_potential(bptt, TABLE_R_MIN, TABLE_KNOTS)
    engine = Engine(table, [state(*MAIN)], EngineConfig())
    start = engine.run(engine.initial_state(), 200)
    times: dict[str, list[tuple[float, float]]] = {"autograd": [], "direct": []}
    # the force field follows the switch at each call (a path change rebuilds its list)
    for _ in range(args.step_rounds):
        for label, direct in (("autograd", False), ("direct", True)):
            with spline_path(direct):
                current = engine.reinit(start)
                wall, cpu = time.perf_counter(), time.process_time()
                engine.run(current, 200)
                times[label].append(
                    ((time.perf_counter() - wall) / 0.2, (time.process_time() - cpu) / 0.2)
                )
    out = {}
    for label, rows in times.items():
        walls, cpus = sorted(r[0] for r in rows), sorted(r[1] for r in rows)
        out[label] = {"wall_ms": walls[len(walls) // 2], "cpu_ms": cpus[len(cpus) // 2]}
    out["speedup_wall"] = out["autograd"]["wall_ms"] / out["direct"]["wall_ms"]
    out["speedup_cpu"] = out["autograd"]["cpu_ms"] / out["direct"]["cpu_ms"]
    # the same trajectory from the same start on both paths, until chaos amplifies rounding
    finals = {}
    for label, direct in (("autograd", False), ("direct", True)):
        with spline_path(direct):
            finals[label] = [engine.reinit(start)]
            for _ in range(5):
                finals[label].append(engine.run(finals[label][-1], 100))
    out["max_position_difference_A"] = {
        f"{100 * k} steps": float((a.positions - b.positions).abs().max())
        for k, (a, b) in enumerate(zip(finals["autograd"], finals["direct"], strict=True))
    }
    print(json.dumps(out), flush=True)
    return out


def part_spline_paths(args, floor: float | None) -> dict:
    """``bptt_newton`` on the autograd path, then on the analytic path (one process)."""
    out = {}
    for label, direct in (("autograd", False), ("direct", True)):
        load_before = os.getloadavg()
        start, cpu_start = time.perf_counter(), time.process_time()
        with spline_path(direct):
            value = part_fit("bptt_newton", args, suffix=f"_{label}")
        value["wall_s"] = time.perf_counter() - start
        # CPU seconds of this process: on a shared machine less dependent on the others' load
        value["cpu_s"] = time.process_time() - cpu_start
        value["load_average_before"] = load_before
        value["load_average_after"] = os.getloadavg()
        if floor is not None:
            value["ratio_to_floor"] = value["rdf_dev"] / floor
        out[label] = value
        print(label, json.dumps(value, indent=1), flush=True)
    out["speedup_wall"] = out["autograd"]["wall_s"] / out["direct"]["wall_s"]
    out["speedup_fit"] = out["autograd"]["fit_wall_s"] / out["direct"]["fit_wall_s"]
    out["speedup_cpu"] = out["autograd"]["cpu_s"] / out["direct"]["cpu_s"]
    return out


def part_transfer(args) -> dict:
    out = {}
    evaluation = [state(*sp, vacf=False) for sp in TRANSFER]
    for label, train in [("rho0.3", [(0.3, 1.2)]), ("rho0.3+0.7", [(0.3, 1.2), (0.7, 1.2)])]:
        states = [state(*sp) for sp in train]
        potential = make_potential("neural-pair", seed=args.seed, **PRIOR)
        result = fit(
            potential,
            states,
            fit_config("bptt", args),
            out_dir=Path(args.outdir) / f"transfer_{label}",
            true_potential=truth(),
            progress=False,
            name=f"lj-transfer-{label}",
        )
        _, devs = evaluate(potential, evaluation, fit_config("bptt", args))
        out[label] = {
            "train": [s.name for s in states],
            "rdf_dev": {s.name: d for s, d in zip(evaluation, devs, strict=True)},
            "u_error_max": u_error(potential, truth()),
            "fit_wall_s": result.wall_time,
            "iterations": len(result.history),
        }
        print(label, out[label], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["floor", "bptt", "reweighting", "newton", "bptt_newton", "ibi", "transfer"],
        choices=[
            "floor",
            "bptt",
            "reweighting",
            "newton",
            "bptt_newton",
            "ibi",
            "transfer",
            "spline_paths",
            "spline_step",
        ],
    )
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--window", type=int, default=60)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--vacf-weight", type=float, default=0.4)
    parser.add_argument("--rw-frames", type=int, default=100)
    parser.add_argument("--ibi-iterations", type=int, default=20)
    parser.add_argument("--ibi-alpha", type=float, default=0.2)
    parser.add_argument("--ibi-steps", type=int, default=2000)
    parser.add_argument("--newton-iterations", type=int, default=8)
    parser.add_argument("--newton-frames", type=int, default=1000)
    parser.add_argument("--production", type=int, default=5000)
    parser.add_argument("--time-limit", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-rounds", type=int, default=5, help="rounds of spline_step")
    parser.add_argument(
        "--init", choices=("prior", "pmf"), default="prior", help="start of bptt/reweighting fits"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-o", "--output", default="benchmarks/diffsim_acceptance.json")
    parser.add_argument("--outdir", default="benchmarks/diffsim_runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = Path(args.output)
    record = json.loads(path.read_text()) if path.exists() else {}
    for part in args.parts:
        start = time.perf_counter()
        if part == "floor":
            value = part_floor(args)
        elif part == "transfer":
            value = part_transfer(args)
        elif part == "spline_step":
            value = part_spline_step(args)
        elif part == "spline_paths":
            floor = record.get("floor", {}).get("result", {}).get(state(*MAIN).name, {})
            value = part_spline_paths(args, floor.get("rdf_dev"))
        else:
            value = part_fit(part, args)
        record[part] = {
            "result": value,
            "wall_s": time.perf_counter() - start,
            "date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads",
            "command": "python benchmarks/diffsim_acceptance.py " + " ".join(sys.argv[1:]),
            "load_average_after": os.getloadavg(),
        }
        print(part, json.dumps(record[part], indent=1), flush=True)
        path.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
