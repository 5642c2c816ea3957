"""CG mappings of alanine dipeptide compared: learned (Autograin) vs Girvan–Newman vs heavy-atom
groups, by linear reconstruction RMSD and mean-force noise (issue 13, item 2).

Data: all-atom alanine dipeptide with forces from ``ase-mlmd sample ... --reference
amber-implicit`` (OpenMM, OBC2 implicit solvent, 300 K, bonds flexible, a frame every 1 ps;
command in BENCHMARKS.md). The first ``--skip`` frames are dropped; the rest is split in time,
the first 80 % to train (Autograin, and the least-squares decoder), the last 20 % to test.

All frames are centred and rotated onto one reference together (``align_frames``), forces with
them. Every mapping places beads at the centre of geometry of their atoms (METRICS.md §4), so
the summed force map of ``CGMapping`` and the Autograin force map ``C = W / Σ W²`` coincide.

Per mapping, on the test frames:

* reconstruction RMSD, Å: root of the mean over frames and atoms (all 22) of |D W x − x|², with
  the linear decoder D (22 × N) fitted by least squares on the training frames;
* force noise, (eV/Å)²: ⟨|Σ_i C_Ii f_i|²⟩, mean over frames and beads of the squared mapped
  force (the Autograin regularizer).

Learned mappings: ``--rho`` for seeds ``--seeds`` (mean ± std over seeds) and ρ = 0
(reconstruction only, first seed). Girvan–Newman: N beads; heavy-atom: its own N = 10.

Usage:  python benchmarks/cg_mappings.py FRAMES.extxyz [--epochs 300] [-o cg_mappings.json]
Prints a Markdown table.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from datetime import date  # noqa: E402

import numpy as np  # noqa: E402

BEADS = (3, 4, 5, 6, 8, 10, 12)
#: CGVAE repository draft table (METRICS.md §4): RMSD_recon, all atoms, linear decoder, Å
CGVAE_LINEAR_ALL = {3: 1.125, 4: 1.022, 5: 0.585, 6: 0.541, 8: 0.439, 10: 0.361, 12: 0.275}


def evaluate(weights, train, test, test_forces) -> dict:
    from ase_mlmd.cg.autograin import linear_decoder_rmsd, mean_force_noise

    _, rmsd = linear_decoder_rmsd(weights, train, test)
    return {"rmsd": rmsd, "force_noise": mean_force_noise(weights, test_forces)}


def main() -> None:
    import torch

    from ase_mlmd.cg.autograin import AutograinConfig, align_frames, autograin
    from ase_mlmd.cg.builders import girvan_newman, heavy_atom
    from ase_mlmd.cg.frames import read_trajectory

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("frames", help="all-atom ala2 frames with forces (extxyz)")
    parser.add_argument("--skip", type=int, default=10, help="frames dropped at the start")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--rho", type=float, default=0.1)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--beads", default=",".join(map(str, BEADS)))
    parser.add_argument("-o", "--output", default="benchmarks/cg_mappings.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    frames = read_trajectory(args.frames)[args.skip :]
    positions = np.stack([f.positions for f in frames])
    forces = np.stack([f.get_forces() for f in frames])
    aligned, rotated = align_frames(positions, forces)
    n_train = int(0.8 * len(frames))
    train, test, test_forces = aligned[:n_train], aligned[n_train:], rotated[n_train:]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: dict[str, dict] = {}
    started = time.time()

    heavy = heavy_atom(frames[0], weighting="geometry")
    rows[f"heavy-atom N={heavy.n_beads}"] = {
        "scheme": "heavy-atom", "beads": heavy.n_beads,
        **evaluate(heavy.weights, train, test, test_forces),
    }  # fmt: skip
    for n in (int(b) for b in args.beads.split(",")):
        gn = girvan_newman(frames[0], n)
        rows[f"girvan-newman N={n}"] = {
            "scheme": "girvan-newman",
            "beads": n,
            **evaluate(gn.weights, train, test, test_forces),
        }
        for rho, run_seeds in ((args.rho, seeds), (0.0, seeds[:1])):
            results, wall = [], []
            for seed in run_seeds:
                t0 = time.time()
                config = AutograinConfig(n_beads=n, rho=rho, epochs=args.epochs, seed=seed)
                learned = autograin(frames[:n_train], config, progress=False)
                wall.append(time.time() - t0)
                results.append(
                    {
                        "seed": seed,
                        "groups": [m.tolist() for m in learned.mapping.members],
                        "repaired": learned.repaired_beads,
                        **evaluate(learned.mapping.weights, train, test, test_forces),
                    }
                )
            rmsd = [r["rmsd"] for r in results]
            noise = [r["force_noise"] for r in results]
            rows[f"learned rho={rho:g} N={n}"] = {
                "scheme": "learned", "beads": n, "rho": rho,
                "rmsd": float(np.mean(rmsd)), "rmsd_std": float(np.std(rmsd)),
                "force_noise": float(np.mean(noise)), "force_noise_std": float(np.std(noise)),
                "seeds": results, "wall_s_per_run": float(np.mean(wall)),
            }  # fmt: skip
            print(f"N={n} rho={rho:g}: rmsd {rmsd} noise {noise} ({np.mean(wall):.0f} s/run)")

    report = {
        "date": date.today().isoformat(),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "frames": args.frames,
        "n_frames": len(frames),
        "n_train": n_train,
        "epochs": args.epochs,
        "seeds": seeds,
        "wall_s": time.time() - started,
        "rows": rows,
    }
    from ase_mlmd.fileio import atomic_write_text

    atomic_write_text(args.output, json.dumps(report, indent=1) + "\n")
    print(table(report))


def table(report: dict) -> str:
    rows = report["rows"]
    beads = sorted({r["beads"] for r in rows.values()})
    head = "| mapping | " + " | ".join(f"N={n}" for n in beads) + " |"
    lines = [head, "|---" * (len(beads) + 1) + "|"]

    def line(label: str, key: str, scheme: str, rho: float | None = None, fmt="{:.3f}") -> str:
        cells = []
        for n in beads:
            match = [
                r for r in rows.values()
                if r["beads"] == n and r["scheme"] == scheme and r.get("rho") == rho
            ]  # fmt: skip
            if not match:
                cells.append("")
                continue
            r = match[0]
            cell = fmt.format(r[key])
            if f"{key}_std" in r and len(r.get("seeds", [])) > 1:
                cell += " ± " + fmt.format(r[f"{key}_std"])
            cells.append(cell)
        return f"| {label} | " + " | ".join(cells) + " |"

    seeds = len(report["seeds"])
    rho = next(r["rho"] for r in rows.values() if r.get("rho"))
    for key, what in (("rmsd", "RMSD Å"), ("force_noise", "force noise (eV/Å)²")):
        lines.append(line(f"{what}: learned ρ={rho:g} ({seeds} seeds)", key, "learned", rho))
        lines.append(line(f"{what}: learned ρ=0", key, "learned", 0.0))
        lines.append(line(f"{what}: Girvan–Newman", key, "girvan-newman"))
        lines.append(line(f"{what}: heavy-atom groups", key, "heavy-atom"))
    cells = [f"{CGVAE_LINEAR_ALL.get(n, '')}" for n in beads]
    lines.append("| RMSD Å: CGVAE draft table, linear (METRICS §4) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
