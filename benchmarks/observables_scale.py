"""Observables at scale: every numpy observable on a 100 000-frame, 192-atom trajectory.

The trajectory is synthetic and the size of the MDsim water benchmark (64 H2O in a cubic
12.44 Å box, 500 ps saved every 5 fs would be 100 000 frames): 64 O and 128 H starting at
random positions, each atom a Gaussian random walk (0.05 Å per frame and axis), not wrapped
into the box; velocities and forces are random normals. Structure does not matter for the cost:
all pairs are evaluated either way (at this density ~47 % of them fall within 6 Å).

Timed, one after the other (wall clock and the process's CPU time):

* compute_rdf: O-O, H-H, H-O, 500 bins on (0, 6] Å, minimum image (18 336 pairs per frame);
* rdf_window_stability: the same histograms per frame, 10-frame sliding window vs a reference;
* compute_hr: all 18 336 pair distances per frame, open boundaries, 500 bins on (0, 10] Å;
* compute_adf: H-O-H within 1.2 Å, minimum image;
* compute_diffusivity: oxygens, centre of mass removed, all time origins (FFT), 100 lags of 10
  frames; compute_vacf: all atoms, all origins (FFT), lags up to 1000 frames;
* bond_deviation: 128 O-H bonds, minimum image;
* compute_dihedrals (64 quartets, mdtraj) + compute_fes / compute_pmf of one φ/ψ pair;
* force_mae over 100 000 × 192 × 3 components.

Threads: at most 2 (OMP/BLAS variables set before numpy is imported); the histogram kernel
itself is single-threaded numpy.

Usage:  python benchmarks/observables_scale.py [--frames 100000] [-o OUTPUT.json]
Prints a Markdown table.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "2")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from ase_mlmd.observables import (  # noqa: E402
    bond_deviation,
    compute_adf,
    compute_diffusivity,
    compute_dihedrals,
    compute_fes,
    compute_hr,
    compute_pmf,
    compute_rdf,
    compute_vacf,
    force_mae,
    rdf_window_stability,
)

BOX = 12.44
N_O, N_H = 64, 128
LIMIT_S = 60.0


def synthetic_water(n_frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions (T, 192, 3) Å (random walks from random starts) and numbers (192,)."""
    rng = np.random.default_rng(seed)
    n_atoms = N_O + N_H
    positions = np.empty((n_frames, n_atoms, 3))
    positions[0] = rng.random((n_atoms, 3)) * BOX
    chunk = 10_000
    for start in range(1, n_frames, chunk):
        stop = min(start + chunk, n_frames)
        steps = rng.normal(scale=0.05, size=(stop - start, n_atoms, 3))
        positions[start:stop] = positions[start - 1] + np.cumsum(steps, axis=0)
    return positions, np.array([8] * N_O + [1] * N_H)


def cpu_model() -> str:
    """The CPU's model name (Linux), or ''."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def timed(name: str, function, results: list[dict], note: str = "") -> object:
    """Run ``function()`` once, record wall and CPU seconds, return its value."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    results.append({"observable": name, "wall_s": wall, "cpu_s": cpu, "note": note})
    print(f"  {name:<34s} {wall:7.1f} s wall  {cpu:7.1f} s CPU", flush=True)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("-o", "--output", default="benchmarks/observables_scale.json")
    args = parser.parse_args()

    print(f"synthetic trajectory: {args.frames} frames x {N_O + N_H} atoms", flush=True)
    positions, numbers = synthetic_water(args.frames)
    cell = np.eye(3) * BOX
    rng = np.random.default_rng(1)
    oxygens = np.arange(N_O)
    bonds = np.stack([np.repeat(oxygens, 2), N_O + np.arange(N_H)], axis=1)
    load_before = os.getloadavg()
    results: list[dict] = []

    _, reference = timed(
        "compute_rdf (O-O, H-H, H-O)",
        lambda: compute_rdf(positions, cell, numbers),
        results,
        "500 bins, (0, 6] Å, 18 336 pairs/frame",
    )
    timed(
        "rdf_window_stability (10 frames)",
        lambda: rdf_window_stability(positions, cell, numbers, reference=reference, window=10),
        results,
        "per-frame histograms, sliding window MAE",
    )
    timed("compute_hr (all pairs)", lambda: compute_hr(positions), results, "open boundaries")
    timed(
        "compute_adf (H-O-H, 1.2 Å)",
        lambda: compute_adf(positions, cell, numbers, r_cut=1.2),
        results,
        "minimum image",
    )
    timed(
        "compute_diffusivity (O)",
        lambda: compute_diffusivity(
            positions, 5.0, numbers=numbers, atoms=oxygens, lag_stride=10, n_lags=100
        ),
        results,
        "COM removed, FFT MSD over all origins",
    )
    velocities = rng.normal(size=positions.shape)
    timed(
        "compute_vacf (all atoms)",
        lambda: compute_vacf(velocities, max_lag=1000),
        results,
        "FFT over all origins",
    )
    timed(
        "bond_deviation (128 O-H)",
        lambda: bond_deviation(positions, bonds, np.ones(len(bonds)), cells=cell),
        results,
        "minimum image",
    )
    quartets = np.stack([oxygens, N_O + 2 * oxygens, N_O + 2 * oxygens + 1, (oxygens + 1) % N_O], 1)

    def dihedrals_and_fes():
        angles = compute_dihedrals(positions, quartets)
        _, _, free = compute_fes(angles[:, 0], angles[:, 1])
        return compute_pmf(free)

    timed("compute_dihedrals (64) + FES/PMF", dihedrals_and_fes, results, "mdtraj")
    timed(
        "force_mae",
        lambda: force_mae(velocities, velocities * 1.01),
        results,
        f"{positions.size} components",
    )
    load_after = os.getloadavg()

    record = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {cpu_model()}".strip(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "frames": args.frames,
        "atoms": int(len(numbers)),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "results": results,
    }
    output = Path(args.output)
    partial = output.with_suffix(".json.tmp")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, output)

    print(
        f"\n{args.frames} frames x {len(numbers)} atoms, numpy {np.__version__}, "
        f"load average {load_before[0]:.1f} -> {load_after[0]:.1f}\n"
    )
    print("| observable | wall s | CPU s | < 60 s | note |")
    print("|---|---|---|---|---|")
    for row in results:
        ok = "yes" if row["wall_s"] < LIMIT_S else "no"
        print(
            f"| {row['observable']} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | {ok} | "
            f"{row['note']} |"
        )
    total = sum(row["wall_s"] for row in results)
    print(f"| **all** | {total:.1f} | {sum(r['cpu_s'] for r in results):.1f} | | |")


if __name__ == "__main__":
    main()
