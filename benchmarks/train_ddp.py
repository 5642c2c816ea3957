"""Training throughput (frames/s) of ``ase_mlmd.train`` on 1 and 2 data-parallel processes.

Same model (NequIP, the package's default architecture, float32), same data (liquid water, 64
H2O = 192 atoms per frame, DFT labels, ``/work/shared/data/water_dft/data_0``), same global
batch (``--batch-size`` frames per optimiser step; with 2 processes each computes half of it
and the gradients are summed with gloo). Throughput = training frames x epochs / wall time,
measured from the end of epoch 1 to the end of the last epoch in ``train_log.csv``, so process
start, imports, neighbour lists and the first epoch's warm-up are left out; every epoch's
validation (on rank 0, ``--n-val`` frames) is inside the measured time, as in real training.

Each process gets ``cpu_count // devices`` threads (``OMP_NUM_THREADS`` unset) or what
``OMP_NUM_THREADS`` says; the machine's load average is recorded before and after each run.

The runs go in the order of ``--devices`` (default 1, 2, 2, 1, so that a load that drifts during
the benchmark affects both counts alike); the summary is the median per count.

Usage (the machine is shared; load is recorded, not controlled)::

    nice -n 5 python benchmarks/train_ddp.py --out benchmarks/train_ddp.json \\
        > out/ddp/bench.log 2>&1 &
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path

import torch

from ase_mlmd.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "water_dft" / "data_0"


def measure(devices: int, args: argparse.Namespace, folder: Path) -> dict:
    """One training run on ``devices`` processes; its throughput and timings."""
    shutil.rmtree(folder, ignore_errors=True)
    config = TrainConfig(
        model="nequip",
        cutoff=args.cutoff,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        split=(args.n_train, args.n_val, args.n_test),
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        dtype="float32",
    )
    load_before = os.getloadavg()
    tick = time.monotonic()
    result = train(args.data, config, folder, data_format="deepmd", progress=False)
    total = time.monotonic() - tick
    load_after = os.getloadavg()
    with open(folder / "train_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    t_first, t_last = float(rows[0]["wall_time_s"]), float(rows[-1]["wall_time_s"])
    measured_epochs = len(rows) - 1
    frames = result.n_train * measured_epochs
    return {
        "devices": devices,
        "frames_per_s": frames / (t_last - t_first),
        "seconds_per_epoch": (t_last - t_first) / measured_epochs,
        "measured_epochs": measured_epochs,
        "first_epoch_end_s": t_first,
        "total_wall_s": total,
        "train_loss": [float(r["train_loss"]) for r in rows],
        "load_average_1min_before_after": [load_before[0], load_after[0]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--devices", type=int, nargs="+", default=[1, 2, 2, 1], help="runs, in this order"
    )
    parser.add_argument("--n-train", type=int, default=24)
    parser.add_argument("--n-val", type=int, default=2)
    parser.add_argument("--n-test", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cutoff", type=float, default=4.0)
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "ddp" / "bench")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "train_ddp.json")
    args = parser.parse_args()

    runs = []
    for devices in args.devices:
        run = measure(devices, args, args.work / f"devices{devices}")
        print(json.dumps(run), flush=True)
        runs.append(run)
    summary = {}
    for devices in sorted(set(args.devices)):
        rates = [r["frames_per_s"] for r in runs if r["devices"] == devices]
        summary[str(devices)] = {"frames_per_s_median": statistics.median(rates), "runs": rates}
    base = summary[str(min(args.devices))]["frames_per_s_median"]
    for entry in summary.values():
        entry["speedup"] = entry["frames_per_s_median"] / base
    record = {
        "benchmark": "ase_mlmd.train data-parallel throughput (benchmarks/train_ddp.py)",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs)",
        "torch": torch.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "data": str(args.data),
        "settings": {k: v for k, v in vars(args).items() if k not in ("data", "work", "out")},
        "summary_by_devices": summary,
        "runs": runs,
    }
    args.out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
