"""Benchmark 4b (issue 14): backmapping chignolin (GYDPETGTWG) — CGVAE vs PULCHRA vs linear.

Stages (``--stages``, comma-separated, in this order):

* ``simulate``: all-atom reference frames with
  :func:`ase_mlmd.data.openmm_peptide.peptide_reference_trajectory` (extended chain from
  PeptideBuilder, hydrogens and charged termini from pdbfixer, amber14 + GBn2, 340 K, Langevin
  1/ps, 2 fs with bonds to H constrained, a frame every 2 ps, one CPU thread) into
  ``WORK/chignolin_340K.extxyz`` and ``WORK/chignolin.pdb``; stop it (Ctrl-C / kill) whenever
  enough frames exist: frames are streamed.
* ``prepare``: drop the first ``--equilibration`` ps, split the rest in time order 0.8 / 0.1 /
  0.1 (train / validation / test, the same blocks ``ase-mlmd backmap train --split
  time:0.8,0.1,0.1`` takes), write ``WORK/frames.extxyz`` (all kept frames) and
  ``WORK/test.extxyz``; build two mappings: ``ca`` (one bead per residue on Cα,
  :func:`ase_mlmd.cg.builders.alpha_carbon`) and ``res3`` (three beads per residue at the
  centre of geometry: [N, its H, Cα, HA/HA2], [C, O, OXT], [side chain; Gly: HA3]) as
  ``WORK/map_ca.json``, ``WORK/map_res3.json``, and the CG test frames ``WORK/cg_test_*.extxyz``.
* ``linear``: the least-squares linear backmapper per mapping, fitted on the training block.
* ``pulchra``: PULCHRA (default options) on the Cα test frames (heavy atoms only).
* ``cgvae``: ``ase-mlmd backmap train`` per mapping (``--max-time``; the optional loss terms
  ``--gamma-angle``, ``--delta``, ``--clash-factor``, ``--sample-terms`` are passed on) into
  ``WORK/<variant>_<mapping>`` (``--variant``, default ``cgvae``), then ``backmap run`` with
  ``--samples`` per test frame (the training is skipped when the card exists, unless
  ``--train``).
* ``eval``: :mod:`ase_mlmd.backmap.report` per mapping (every CGVAE variant generated) →
  ``OUT/<mapping>/report.md``, ``metrics.json`` and PNGs; energies under amber14 + GBn2
  (unconstrained) for the all-atom backmappers on the first 100 test frames.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ("ca", "res3")


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def cli(*args: str) -> None:
    exe = Path(sys.executable).with_name("ase-mlmd")
    log("$ ase-mlmd " + " ".join(args))
    subprocess.run([str(exe), *args], check=True)


def stage_simulate(args) -> None:
    from ase_mlmd.data.openmm_peptide import CHIGNOLIN, peptide_reference_trajectory

    peptide_reference_trajectory(
        CHIGNOLIN, temperature=340.0, steps=args.steps, every=1000, seed=0,
        output=args.work / "chignolin_340K.extxyz", topology_pdb=args.work / "chignolin.pdb",
        threads=1, flush_seconds=60,
    )  # fmt: skip


def residue_groups(pdb: Path) -> tuple[list[list[int]], list[str], list[str]]:
    """The three groups per residue of the ``res3`` mapping, their types and names."""
    from ase_mlmd.backmap.pulchra import protein_topology

    _, names, residue_names, residue_index = protein_topology(pdb)
    groups, types, labels = [], [], []
    for r in sorted(set(residue_index)):
        atoms = [i for i, k in enumerate(residue_index) if k == r]
        res = residue_names[atoms[0]]
        amine = [i for i in atoms if names[i] in ("N", "H", "H1", "H2", "H3", "CA", "HA", "HA2")]
        carbonyl = [i for i in atoms if names[i] in ("C", "O", "OXT")]
        side = [i for i in atoms if i not in amine and i not in carbonyl]
        for part, group in (("A", amine), ("C", carbonyl), ("S", side)):
            groups.append(group)
            types.append(f"{res}_{part}")
            labels.append(f"{res}{r + 1}_{part}")
    return groups, types, labels


def effective_frames(series: np.ndarray) -> tuple[float, float]:
    """Statistical inefficiency g = 1 + 2 Σ_k (1 − k/n) ρ_k (summed until ρ_k first drops
    below 0) of a time series and the effective number of independent frames n / g."""
    x = np.asarray(series, dtype=float) - np.mean(series)
    n = len(x)
    acf = np.correlate(x, x, mode="full")[n - 1 :] / (x @ x)
    g = 1.0
    for k in range(1, n):
        if acf[k] < 0:
            break
        g += 2 * (1 - k / n) * acf[k]
    return g, n / g


def stage_prepare(args) -> None:
    from ase.io import read, write

    from ase_mlmd.backmap.pulchra import protein_topology
    from ase_mlmd.cg.builders import alpha_carbon, from_groups
    from ase_mlmd.data.splits import split_indices

    frames = read(args.work / "chignolin_340K.extxyz", ":")
    dt_ps = (frames[1].info["time_fs"] - frames[0].info["time_fs"]) / 1000
    kept = [f for f in frames if f.info["time_fs"] / 1000 >= args.equilibration]
    n = len(kept)
    split = split_indices(n, (0.8, 0.1, 0.1), ordered=True)  # the blocks `backmap train` takes
    n_train, n_val = len(split.train), len(split.val)
    test = [kept[i] for i in split.test]
    write(args.work / "frames.extxyz", kept)
    write(args.work / "test.extxyz", test)
    pdb = args.work / "chignolin.pdb"
    atoms, names, residue_names, _ = protein_topology(pdb)
    maps = {"ca": alpha_carbon(atoms, names=names, residue_names=residue_names)}
    bonds = maps["ca"].bonds
    groups, types, labels = residue_groups(pdb)
    maps["res3"] = from_groups(atoms, groups, "geometry", types, labels, "residue-3", bonds=bonds)
    for name, mapping in maps.items():
        mapping.to_json(args.work / f"map_{name}.json")
        write(args.work / f"cg_test_{name}.extxyz", mapping.apply_positions(test))
    heavy = atoms.numbers > 1
    rg = np.array([np.sqrt(((f.positions[heavy] - f.positions[heavy].mean(0)) ** 2).sum(1).mean())
                   for f in kept])  # fmt: skip
    ca = [i for i, nm in enumerate(names) if nm == "CA"]
    end = np.array([np.linalg.norm(f.positions[ca[0]] - f.positions[ca[-1]]) for f in kept])
    g_rg, n_rg = effective_frames(rg)
    g_end, n_end = effective_frames(end)
    info = {"frames_total": len(frames), "frame_interval_ps": dt_ps,
            "simulated_ns": frames[-1].info["time_fs"] * 1e-6,
            "equilibration_ps": args.equilibration, "kept": n, "train": n_train,
            "validation": n_val, "test": len(test),
            "rg_heavy_mean_sd": [float(rg.mean()), float(rg.std())],
            "ca_end_to_end_mean_sd": [float(end.mean()), float(end.std())],
            "inefficiency_rg": g_rg, "effective_frames_rg": n_rg,
            "inefficiency_end_to_end": g_end, "effective_frames_end_to_end": n_end}  # fmt: skip
    (args.out / "data.json").write_text(json.dumps(info, indent=2) + "\n")
    log(f"prepare: {info}")


def _mapping(args, name):
    from ase_mlmd.cg.mapping import CGMapping

    return CGMapping.from_json(args.work / f"map_{name}.json")


def stage_linear(args) -> None:
    from ase.io import read, write

    from ase_mlmd.backmap.linear import LinearBackmapper
    from ase_mlmd.backmap.pairs import BackmapPairs
    from ase_mlmd.data.splits import split_indices

    frames = read(args.work / "frames.extxyz", ":")
    train = [frames[i] for i in split_indices(len(frames), (0.8, 0.1, 0.1), ordered=True).train]
    for name in MAPPINGS:
        mapping = _mapping(args, name)
        model = LinearBackmapper.fit(BackmapPairs.from_frames(train, mapping))
        model.save(args.work / f"linear_{name}", f"chignolin-linear-{name}")
        cg = read(args.work / f"cg_test_{name}.extxyz", ":")
        write(args.work / f"gen_linear_{name}.extxyz", model.reconstruct(cg))
        log(f"linear {name}: fitted on {len(train)} frames")


def stage_pulchra(args) -> None:
    from ase.io import read, write

    from ase_mlmd.backmap.pulchra import PulchraBackmapper

    backmapper = PulchraBackmapper.from_pdb(args.work / "chignolin.pdb", _mapping(args, "ca"))
    cg = read(args.work / "cg_test_ca.extxyz", ":")
    tick = time.time()
    write(args.work / "gen_pulchra_ca.extxyz", backmapper.reconstruct(cg))
    log(f"pulchra: {len(cg)} frames in {time.time() - tick:.0f} s")


def loss_flags(args) -> list[str]:
    """The optional CGVAE loss terms asked for, as ``backmap train`` flags."""
    flags = []
    for flag in ("gamma_angle", "delta", "clash_factor"):
        value = getattr(args, flag)
        if value is not None:
            flags += ["--" + flag.replace("_", "-"), str(value)]
    return flags + (["--sample-terms"] if args.sample_terms else [])


def stage_cgvae(args) -> None:
    for name in args.mappings.split(","):
        folder = args.work / f"{args.variant}_{name}"
        if args.train or not (folder / "card.toml").is_file():
            cli("backmap", "train", "--data", str(args.work / "frames.extxyz"), "--mapping",
                str(args.work / f"map_{name}.json"), "--split", "time:0.8,0.1,0.1",
                "--max-time", args.max_time, "--no-progress", *loss_flags(args),
                "-o", str(folder))  # fmt: skip
        cg = args.work / f"cg_test_{name}.extxyz"
        gen = args.work / f"gen_{args.variant}_{name}.extxyz"
        cli("backmap", "run", str(folder / "card.toml"), str(cg), "--samples", str(args.samples),
            "-o", str(gen))  # fmt: skip


def stage_eval(args) -> None:
    from ase.io import read
    from openmm import app

    from ase_mlmd.backmap.report import evaluate, pair_frames, write_report
    from ase_mlmd.data.openmm_peptide import build_peptide_system

    topology = app.PDBFile(str(args.work / "chignolin.pdb")).topology
    system = build_peptide_system(topology, constraints=None)
    test = read(args.work / "test.extxyz", ":")
    data = json.loads((args.out / "data.json").read_text())
    for name in MAPPINGS:
        results, paired = {}, {}
        variants = sorted(p.name[4 : -len(f"_{name}.extxyz")]
                          for p in args.work.glob(f"gen_cgvae*_{name}.extxyz"))  # fmt: skip
        for model in (*variants, "linear", "pulchra"):
            path = args.work / f"gen_{model}_{name}.extxyz"
            if not path.is_file():
                continue
            paired[model] = pair_frames(test, read(path, ":"))
            results[model] = evaluate(paired[model], system, energy_frames=100)
            log(f"{name} {model}: {json.dumps(results[model])}")
        notes = [
            f"Chignolin GYDPETGTWG, amber14 + GBn2, 340 K: {data['simulated_ns']:.2f} ns "
            f"simulated, a frame every {data['frame_interval_ps']:g} ps; first "
            f"{data['equilibration_ps']} ps dropped; time-ordered split {data['train']} / "
            f"{data['validation']} / {data['test']} frames; metrics on the test block.",
            "PULCHRA builds heavy atoms only: its row compares the 77 heavy atoms (its RMSD "
            "all = heavy, no energies).",
        ]
        write_report(results, paired, args.out / name, title=f"Chignolin, {name} mapping",
                     notes=notes)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default="prepare,linear,pulchra,cgvae,eval")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "backmap_eval" / "chignolin")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "backmap_runs" / "chignolin"
    )
    parser.add_argument("--steps", type=int, default=5_000_000, help="simulate: MD steps (2 fs)")
    parser.add_argument("--equilibration", type=float, default=100.0, help="ps dropped")
    parser.add_argument("--max-time", default="10m", help="CGVAE training budget per mapping")
    parser.add_argument("--samples", type=int, default=5, help="CGVAE samples per test frame")
    parser.add_argument("--mappings", default=",".join(MAPPINGS), help="cgvae: ca, res3 or both")
    parser.add_argument("--train", action="store_true", help="retrain CGVAE even if a card exists")
    parser.add_argument("--variant", default="cgvae",
                        help="cgvae: name of the trained model (cgvae or cgvae-<tag>)")  # fmt: skip
    parser.add_argument("--gamma-angle", type=float, default=None, help="cgvae: 1-3 MSE weight")
    parser.add_argument("--delta", type=float, default=None, help="cgvae: steric penalty weight")
    parser.add_argument("--clash-factor", type=float, default=None, help="cgvae: its onset")
    parser.add_argument("--sample-terms", action="store_true", help="cgvae: terms on a prior draw")
    args = parser.parse_args()
    if not args.variant.startswith("cgvae"):
        parser.error(f"--variant must start with 'cgvae' (got {args.variant!r})")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")
    for stage in ("simulate", "prepare", "linear", "pulchra", "cgvae", "eval"):
        if stage in stages:
            log(f"stage {stage}")
            globals()[f"stage_{stage}"](args)


if __name__ == "__main__":
    main()
