"""The helix-folding control demo at full settings: final loss, RMSD to the helix, wall time.

Trains the control potential of :mod:`ase_mlmd.diffsim.control` (22-bead chain, defaults of
``ControlConfig`` unless overridden) and records the evaluation before and after training (last
frame of a held-out-seed episode, mean ± std over replicas), the wall time and the machine.
The machine may be shared: the 1-minute load average at start and end is recorded with the
timings.

Usage:  python benchmarks/control_demo.py [--epochs N] [--seed S] [--threads 1]
        [--output-dir benchmarks/control_demo] [-o benchmarks/control_demo.json]
Writes control_chain.png, control_loss.png, control.md and control_final.extxyz into the output
folder and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
from datetime import date
from pathlib import Path

import torch

from ase_mlmd.diffsim.control import LOSS_TERMS, ControlConfig, train_control

HERE = Path(__file__).resolve().parent


def episode_summary(episode) -> dict:
    """Loss terms and RMSD of an evaluation episode's last frame (mean and std over replicas)."""
    out = {f"{k}_mean": float(v.mean()) for k, v in episode.final_terms.items()}
    out["total_std"] = float(episode.final_terms["total"].std())
    out["rmsd_mean"] = float(episode.rmsd.mean())
    out["rmsd_std"] = float(episode.rmsd.std())
    out["rmsd_per_replica"] = [round(float(r), 4) for r in episode.rmsd]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: ControlConfig's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output-dir", default=str(HERE / "control_demo"))
    parser.add_argument("-o", "--output", default=str(HERE / "control_demo.json"))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config = ControlConfig(seed=args.seed)
    if args.epochs is not None:
        config = dataclasses.replace(config, epochs=args.epochs)
    load_start = os.getloadavg()[0]
    result = train_control(config, output_dir=args.output_dir, progress=True)
    load_end = os.getloadavg()[0]

    cpus = os.cpu_count()
    machine = f"{platform.machine()}, {cpus} CPUs, Python {platform.python_version()}"
    print(f"\n{date.today()}, {machine}, torch {torch.__version__}, {args.threads} thread(s)")
    print(f"load average (1 min) at start {load_start:.1f}, at end {load_end:.1f}\n")
    print(result.table())
    print(
        f"\nfinal loss {result.final_loss:.4f}, RMSD {result.rmsd:.3f} σ, "
        f"wall time {result.wall_time_s:.0f} s ({result.wall_time_s / config.epochs:.2f} s/epoch)"
    )
    payload = {
        "meta": {
            "date": str(date.today()),
            "machine": machine,
            "torch": torch.__version__,
            "threads": args.threads,
            "load_average_start": round(load_start, 2),
            "load_average_end": round(load_end, 2),
            "command": "python benchmarks/control_demo.py "
            + (f"--epochs {args.epochs} " if args.epochs is not None else "")
            + f"--seed {args.seed} --threads {args.threads}",
        },
        "config": dataclasses.asdict(config),
        "loss_terms": list(LOSS_TERMS),
        "no_control": episode_summary(result.initial),
        "learned_control": episode_summary(result.final),
        "final_loss": result.final_loss,
        "rmsd": result.rmsd,
        "wall_time_s": round(result.wall_time_s, 1),
        "history": result.history,
        "files": {k: os.path.relpath(v, HERE.parent) for k, v in result.files.items()},
    }
    Path(args.output).write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {args.output} and {args.output_dir}/")


if __name__ == "__main__":
    main()
