"""How well does the ρ = 0.845, T = 1.0 target RDF pin down U(r)? A linearized check.

For a base potential U₀ (the true LJ, or a fitted card), it samples U₀'s canonical ensemble with
the DiffSim engine, then computes the response of the mean RDF to a correction ΔU(r) written as a
natural cubic spline on knots from 0.75 σ to the cutoff (spacing 0.05 σ, last knot fixed at 0):

    J = ∂⟨g⟩/∂c = −β Cov(g_frame, ∂U_frame/∂c)        (the reweighting / inverse-Monte-Carlo
                                                       fluctuation formula; c = knot values)

(the pieces of ``ase_mlmd.diffsim.newton``: :class:`Correction`, :class:`Moments`,
:func:`newton_step`)

and the regularized Newton (inverse Monte Carlo) step that fits the target,

    Δc = argmin |J Δc − (g* − ⟨g⟩₀)|² + λ |D₂ Δc|²      (D₂: second differences).

It prints, for several λ, the rdf_dev the linearized step predicts and max |U₀ + ΔU − U_LJ| over
[1.0, 2.5] σ. If two different base potentials can each be corrected to fit the target far below
the noise floor while staying far apart in U, the target does not determine U to that accuracy.

Usage:  python benchmarks/diffsim_identifiability.py [--base lj|CARD ...] [--frames 1000]
            [-o benchmarks/diffsim_identifiability.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch

from ase_mlmd.calculators.cards import read_card
from ase_mlmd.calculators.registry import model_from_card
from ase_mlmd.diffsim.engine import Engine, EngineConfig
from ase_mlmd.diffsim.losses import rdf_dev
from ase_mlmd.diffsim.newton import Correction, Moments, newton_step
from ase_mlmd.diffsim.systems import ThermoState
from ase_mlmd.diffsim.targets import read_rdf_csv
from ase_mlmd.models.pair import LennardJones
from ase_mlmd.models.spline_pair import spline_from_potential

TARGET = Path(__file__).resolve().parents[2] / "shared/data/lj_rdf/rdf_rho0.845_T1.0_dt0.01.csv"
KNOT_MIN, KNOT_SPACING = 0.75, 0.05
LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1)


def u_lj(r: torch.Tensor) -> torch.Tensor:
    return 4.0 * (r**-12 - r**-6)


def analyse(base_name: str, frames_n: int, every: int) -> dict:
    target = read_rdf_csv(TARGET)
    point = ThermoState(0.845, 1.0, target)
    if base_name == "lj":
        base = LennardJones(1.0, 1.0, cutoff=2.5)
    else:
        base = model_from_card(read_card(base_name))
    # the engine runs a fine Hermite table of the base potential (fast, exact at the knots)
    table = spline_from_potential(base, 0.5, 1001)
    r_eval = torch.linspace(1.0, 2.5, 301, dtype=torch.float64)
    with torch.no_grad():
        u_base = table.cut_pair_energy(r_eval)
    start = time.perf_counter()
    engine = Engine(table, [point], EngineConfig())
    state = engine.run(engine.initial_state(), 1000)
    frames = []
    for _ in range(frames_n):
        state = engine.run(state, every)
        frames.append(state.positions.clone())
    positions = torch.stack(frames)
    correction = Correction(KNOT_MIN, 2.5, KNOT_SPACING)
    moments = Moments(len(target.g), correction.n_free)
    ((g, d, frame),) = engine.frame_data(positions, state.cell, 2.5)
    moments.add(g, correction.frame_gradients(d, frame, len(frames)))
    g_mean, jac = moments.mean_and_jacobian(1.0 / point.temperature)
    residual = target.g_tensor() - g_mean
    smoothness = correction.smoothness()
    out = {
        "base": base_name,
        "frames": frames_n,
        "every": every,
        "sampling_wall_s": time.perf_counter() - start,
        "base_u_error": float((u_base - u_lj(r_eval)).abs().max()),
        "base_rdf_dev": rdf_dev(g_mean, target.g),
        "steps": [],
    }
    for lam in LAMBDAS:
        delta = newton_step([jac], [residual], smoothness, lam)
        du = correction(r_eval, torch.cat([delta, delta.new_zeros(1)]))
        out["steps"].append(
            {
                "lambda": lam,
                "predicted_rdf_dev": float((residual - jac @ delta).abs().mean()),
                "max_abs_dU": float(du.abs().max()),
                "u_error_after": float((u_base + du - u_lj(r_eval)).abs().max()),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--base", nargs="+", default=["lj", "benchmarks/diffsim_runs/bptt/card.toml"]
    )
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-o", "--output", default="benchmarks/diffsim_identifiability.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for name in args.base:
        row = analyse(name, args.frames, args.every)
        results.append(row)
        print(
            f"{name}: U error {row['base_u_error']:.3f} ε, rdf_dev {row['base_rdf_dev']:.4f}",
            flush=True,
        )
        for s in row["steps"]:
            print(
                f"  λ {s['lambda']:.0e}: predicted rdf_dev {s['predicted_rdf_dev']:.4f}, "
                f"max |ΔU| {s['max_abs_dU']:.3f} ε, U error after {s['u_error_after']:.3f} ε",
                flush=True,
            )
    record = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "target": TARGET.name,
        "results": results,
    }
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
