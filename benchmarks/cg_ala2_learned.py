"""Acceptance 5b of issue 13: all-atom alanine dipeptide → the learned 6-bead mapping →
force-matched CG model → CG Langevin MD → FES over two CG dihedrals vs the mapped all-atom FES.

Stages (each skips what is already there, so rerunning continues; ``--stages`` picks them):

* ``map``: every all-atom file of ``--aa`` (extxyz with forces, written by ``ase-mlmd sample
  ... --reference amber-implicit``, see BENCHMARKS.md) is mapped with ``ase-mlmd cg map
  --mapping benchmarks/cg_data/ala2_map_learned6.json --apply AA --output-cg CG``; the CG
  frames of all files are concatenated in the given order (each file is one trajectory, so the
  time-ordered split puts the test set at the end of the last one);
* ``choose``: the learned beads are not a chain (bead 2 is a hub), so the backbone φ/ψ are not
  bonded CG dihedrals. Every quartet of distinct beads is scored by the mutual information of
  the 2-D (12 × 12 cells) histogram of the quartet pair with the 2-D histogram of the
  all-atom (φ, ψ) over the same frames; the best pair is used. The evaluation topology is the
  mapping's topology plus the bead pairs needed to make both quartets paths (recorded);
* ``fit``: Boltzmann-inverted priors (bonds, angles, Fourier dihedrals, repulsion) of the
  mapping's own topology (``CGMapping.topology()``; ``ase-mlmd cg fit`` has no topology input
  and would assume a chain), prior alone and prior + SchNet by force matching, time-ordered
  split ``--split`` (0.7 / 0.1 / 0.2) of all runs or of the first ``--fit-segments`` runs
  (``heldout``: the loss on the other runs), :func:`ase_mlmd.cg.forcefield.fit_cg_forcefield`
  (``--network cgnet``: the CGnet-style MLP over distances, angles, cos/sin of dihedrals);
* ``md``: ``ase-mlmd md START --index : --engine torch --ensemble nvt-langevin --temperature
  300`` for each model, one replica per start frame (frames spread over the training part);
* ``eval``: :func:`ase_mlmd.cg.evaluate.evaluate_runs` with the chosen dihedral pair, the
  sampling floor (second half of the mapped data against its first half), basin populations
  (backbone regions of the all-atom φ/ψ, carried to CG-dihedral cells by the mapped frames),
  report (Markdown + PNG) in ``--out/report``.

Usage (1 thread; the machine is shared)::

    OMP_NUM_THREADS=1 python benchmarks/cg_ala2_learned.py \\
        --aa out/cg_data/ala2_aa_3ns.extxyz out/cg_learned/ala2_aa_20ns.extxyz \\
        --work out/cg_learned --out benchmarks/cg_runs/ala2_learned
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
MAPPING = ROOT / "benchmarks" / "cg_data" / "ala2_map_learned6.json"
#: all-atom backbone dihedrals of the AMBER ala2 topology: φ = C-N-CA-C, ψ = N-CA-C-N
AA_PHI_PSI = np.array([[4, 6, 8, 14], [6, 8, 14, 16]])
CELLS = 12
KCAL_PER_EV = 23.060548


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def cli(*args: str) -> None:
    """Run ``ase-mlmd ARGS`` (the venv's entry point), fail loudly."""
    exe = Path(sys.executable).with_name("ase-mlmd")
    log("$ ase-mlmd " + " ".join(args))
    subprocess.run([str(exe), *args], check=True)


def _write_json(path: Path, data: dict) -> None:
    from ase_mlmd.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


# -- map -------------------------------------------------------------------------------------
def stage_map(args) -> None:
    from ase.io import read, write

    mapped = []
    for k, aa in enumerate(args.aa):
        cg = args.work / f"cg_{k}_{Path(aa).stem}.extxyz"
        if not cg.is_file() or cg.stat().st_mtime < Path(aa).stat().st_mtime:
            cli("cg", "map", "--mapping", str(MAPPING), "--apply", str(aa), "--output-cg", str(cg))
        mapped.append(cg)
    frames, aa_frames, segments = [], [], []
    for aa, cg in zip(args.aa, mapped, strict=True):
        part = read(cg, index=":")[args.drop :]
        frames += part
        aa_frames += [a.positions for a in read(aa, index=":")[args.drop :]]
        segments.append({"file": str(aa), "frames": len(part)})
        log(f"{cg.name}: {len(part)} CG frames (first {args.drop} dropped)")
    tmp = args.work / ".cg_all.tmp.extxyz"  # other stages may be reading the old one
    write(tmp, frames)
    tmp.replace(args.work / "cg_all.extxyz")
    _write_json(args.work / "segments.json", {"drop": args.drop, "segments": segments})
    np.save(args.work / "aa_positions.npy", np.stack(aa_frames))
    log(f"mapped data: {len(frames)} frames")


# -- choose the CG dihedrals ------------------------------------------------------------------
def _cell(a: np.ndarray) -> np.ndarray:
    """Cell index 0 … CELLS-1 of angles (radians) on (−π, π]."""
    return np.minimum(((a + np.pi) / (2 * np.pi) * CELLS).astype(int), CELLS - 1)


def _cells(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _cell(a) * CELLS + _cell(b)


def mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """MI (nats) of two integer labels (T,)."""
    joint = np.zeros((x.max() + 1, y.max() + 1))
    np.add.at(joint, (x, y), 1.0)
    p = joint / joint.sum()
    px, py = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    mask = p > 0
    return float((p[mask] * np.log(p[mask] / (px @ py)[mask])).sum())


def stage_choose(args) -> dict:
    from ase.io import read

    from ase_mlmd.cg.mapping import CGMapping
    from ase_mlmd.observables.internal import compute_dihedral_angles

    cg = np.stack([a.positions for a in read(args.work / "cg_all.extxyz", index=":")])
    aa = np.load(args.work / "aa_positions.npy")
    phi_psi = compute_dihedral_angles(aa, AA_PHI_PSI)
    target = _cells(phi_psi[:, 0], phi_psi[:, 1])
    quads = [q for q in itertools.permutations(range(cg.shape[1]), 4) if q[0] < q[3]]
    angles = compute_dihedral_angles(cg, np.array(quads))
    phi_cell, psi_cell = _cell(phi_psi[:, 0]), _cell(phi_psi[:, 1])
    single = {
        q: (mutual_information(_cell(angles[:, k]), phi_cell),
            mutual_information(_cell(angles[:, k]), psi_cell))
        for k, q in enumerate(quads)
    }  # fmt: skip
    # candidates: the 8 best quartets for φ and for ψ; pairs scored jointly
    top = sorted(quads, key=lambda q: -single[q][0])[:8]
    top += sorted(quads, key=lambda q: -single[q][1])[:8]
    index = {q: k for k, q in enumerate(quads)}
    best = max(
        (
            (mutual_information(target, _cells(angles[:, index[a]], angles[:, index[b]])), a, b)
            for a, b in itertools.permutations(dict.fromkeys(top), 2)
            if single[a][0] >= single[a][1] and single[b][1] >= single[b][0]
        ),
        key=lambda t: t[0],
    )
    mi, first, second = best
    mapping = CGMapping.from_json(MAPPING)
    bonds = {tuple(int(i) for i in b) for b in mapping.topology().bonds}
    extra = sorted(
        {tuple(sorted(p)) for q in (first, second) for p in zip(q[:-1], q[1:], strict=True)} - bonds
    )
    choice = {
        "phi_cg": list(first),
        "psi_cg": list(second),
        "mi_pair_nats": mi,
        "mi_phi_psi_self_nats": mutual_information(target, target),
        "mi_phi_cg_with_phi": single[first][0],
        "mi_psi_cg_with_psi": single[second][1],
        "mapping_bonds": sorted(bonds),
        "evaluation_extra_pairs": extra,
        "rule": f"max MI of the {CELLS}x{CELLS}-cell histograms of (CG quartet pair) and "
        "all-atom (phi, psi) over the mapped frames; candidates: the 8 best quartets for each",
    }
    _write_json(args.out / "dihedrals.json", choice)
    total = choice["mi_phi_psi_self_nats"]
    log(f"CG dihedrals: phi {first}, psi {second} (MI {mi:.3f} of {total:.3f} nats)")
    return choice


def evaluation_topology(choice: dict):
    from ase_mlmd.cg.mapping import CGMapping
    from ase_mlmd.cg.topology import CGTopology

    topo = CGMapping.from_json(MAPPING).topology()
    bonds = [*topo.bonds.tolist(), *choice["evaluation_extra_pairs"]]
    topo = CGTopology.from_bonds(topo.bead_types, bonds)
    rows = [tuple(int(i) for i in d) for d in topo.dihedrals]

    def find(q):
        q = tuple(q)
        return rows.index(q if q in rows else q[::-1])

    return topo, (find(choice["phi_cg"]), find(choice["psi_cg"]))


# -- fit -------------------------------------------------------------------------------------
def stage_fit(args) -> None:
    from ase.io import read

    from ase_mlmd.cg.forcefield import fit_cg_forcefield
    from ase_mlmd.cg.mapping import CGMapping
    from ase_mlmd.cg.priors import PriorSettings
    from ase_mlmd.train.config import TrainConfig, parse_duration

    frames = fit_frames(args, read(args.work / "cg_all.extxyz", index=":"))
    topology = CGMapping.from_json(MAPPING).topology()
    priors = PriorSettings(terms=("bonds", "angles", "dihedrals", "repulsion"),
                           temperature_K=300.0, exclusion=args.exclusion)  # fmt: skip
    schnet = args.network == "schnet"
    config = TrainConfig(
        model=args.network,
        cutoff=args.cutoff,
        hyperparameters={"n_atom_basis": 32, "n_interactions": 2, "n_rbf": 20}
        if schnet
        else {"hidden": [128, 128, 128, 128], "activation": "tanh"},
        split=split_fractions(args),
        ordered_split=True,
        batch_size=64,
        lr=2e-3,
        max_epochs=args.max_epochs,
        max_time=parse_duration(args.max_time),
        early_stop_patience=args.patience,
        lr_patience=args.lr_patience,
        seed=args.seed,
    )
    used = args.aa[: args.fit_segments] if args.fit_segments else args.aa
    info = {"data": [str(p) for p in used], "mapping": str(MAPPING.relative_to(ROOT))}
    dropped = []
    if args.prior_angles == "harmonic":  # see benchmarks/cg_learned_prior.py
        from cg_learned_prior import harmonic_angle_topology

        from ase_mlmd.train.trainer import make_split

        train_pos = np.stack(
            [a.positions for a in make_split(frames, config).frames(frames, "train")]
        )
        topology, dropped = harmonic_angle_topology(topology, train_pos, priors)
        info["prior_angles_dropped"] = dropped
        log(f"prior angles without a harmonic minimum, left to the network: {dropped}")
    command = "benchmarks/cg_ala2_learned.py --stages fit"
    if not (args.work / "prior" / "card.toml").is_file():
        prior = fit_cg_forcefield(frames, args.work / "prior", config, priors, topology,
                                  network=False, data_info=info, command=command)  # fmt: skip
        log(f"prior-only test force-matching loss {prior.test_loss:.4f} (eV/Å)²")
    name = fit_name(args)
    summary_file = "fit_summary.json" if name == "model" else f"fit_summary_{name}.json"
    if (args.out / summary_file).is_file():
        return
    fit = fit_cg_forcefield(frames, args.work / name, config, priors, topology,
                            network=True, data_info=info, command=command)  # fmt: skip
    summary = {
        "network": args.network,
        "seed": args.seed,
        "early_stop_patience": args.patience,
        "max_time": args.max_time,
        "n_frames": len(frames),
        "n_train": fit.n_train,
        "n_test": fit.n_test,
        "topology_bonds": topology.bonds.tolist(),
        "prior_angles": topology.angles.tolist(),
        "prior_angles_dropped": dropped,
        "repulsion_exclusion": args.exclusion,
        "test_loss_prior_eV2_per_A2": fit.test_loss_prior,
        "test_loss_eV2_per_A2": fit.test_loss,
        "test_loss_prior_kcal2": fit.test_loss_prior * KCAL_PER_EV**2,
        "test_loss_kcal2": fit.test_loss * KCAL_PER_EV**2,
        "epochs": fit.train.epochs,
        "best_epoch": fit.train.best_epoch,
        "wall_time_s": fit.train.wall_time_s,
        "stop_reason": fit.train.stop_reason,
    }
    _write_json(args.out / summary_file, summary)
    log(f"fit: {summary}")


def split_fractions(args) -> tuple[float, float, float]:
    """``--split`` as (train, val, test) fractions of the fit frames (time-ordered)."""
    parts = tuple(float(x) for x in args.split.split(","))
    if len(parts) != 3:
        raise SystemExit(f"--split {args.split}: give train,val,test fractions")
    return parts


def fit_frames(args, frames: list) -> list:
    """The frames the fit uses: all, or the first ``--fit-segments`` all-atom runs."""
    if not args.fit_segments:
        return frames
    segs = json.loads((args.work / "segments.json").read_text())["segments"]
    return frames[: sum(g["frames"] for g in segs[: args.fit_segments])]


def fit_name(args) -> str:
    """Folder of a network fit: ``--name``, else ``model`` (SchNet) / ``cgnet``, with
    ``_sSEED`` for a seed other than 1."""
    if args.name:
        return args.name
    base = "model" if args.network == "schnet" else args.network
    return base if args.seed == 1 else f"{base}_s{args.seed}"


def stage_heldout(args) -> None:
    """Force-matching loss of each ``--models`` card on the runs the fit did not see."""
    from ase.io import read

    from ase_mlmd.calculators.cards import load_state_dict, read_card
    from ase_mlmd.cg.forcefield import force_matching_loss
    from ase_mlmd.models.cg_model import cg_model_from_card

    frames = read(args.work / "cg_all.extxyz", index=":")
    held = frames[len(fit_frames(args, frames)) :]
    if not held:
        raise SystemExit("no held-out frames: give --fit-segments N smaller than the runs")
    path = args.out / "heldout.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    result["frames"] = len(held)
    result["files"] = [str(p) for p in args.aa[args.fit_segments :]]
    for name in args.models.split(","):
        card = read_card(args.work / name / "card.toml")
        loss = force_matching_loss(cg_model_from_card(card, load_state_dict(card)), held)
        result[name] = {"eV2_per_A2": loss, "kcal2_per_mol2_A2": loss * KCAL_PER_EV**2}
        log(f"held-out force-matching loss {name}: {loss:.4f} (eV/Å)²")
    _write_json(path, result)


# -- md --------------------------------------------------------------------------------------
def stage_md(args) -> None:
    from ase.io import read, write

    starts = []
    for name in args.models.split(","):
        start = args.work / f"md_starts_{name}.extxyz"  # one per model: md runs in parallel
        if not start.is_file() and not starts:
            frames = fit_frames(args, read(args.work / "cg_all.extxyz", index=":"))
            n_fit = int(split_fractions(args)[0] * len(frames))  # from the training part
            for k in range(args.replicas):
                atoms = frames[int(k * n_fit / args.replicas)].copy()
                atoms.calc = None
                starts.append(atoms)
        if not start.is_file():
            write(start, starts)
        tick = time.time()
        cli("md", str(start), "--index", ":", "--calc", str(args.work / name / "card.toml"),
            "--engine", "torch", "--ensemble", "nvt-langevin", "--temperature", "300",
            "--timestep", str(args.timestep), "--friction", str(args.friction),
            "--steps", str(args.steps), "--save-every", str(args.save_every),
            "--log-every", str(args.save_every), "--seed", str(args.md_seed), "--no-progress",
            "-o", str(args.work / "runs" / name))  # fmt: skip
        log(f"md {name}: {time.time() - tick:.0f} s")
        summary = args.work / "runs" / name / "summary.json"
        if summary.is_file():
            shutil.copy(summary, args.out / f"md_summary_{name}.json")


# -- eval ------------------------------------------------------------------------------------
def stage_eval(args) -> None:
    from ase.io import read
    from cg_basins import basin_populations

    from ase_mlmd.cg.evaluate import evaluate_runs, read_replicas
    from ase_mlmd.cg.report import summary_row, write_report
    from ase_mlmd.observables.internal import compute_dihedral_angles

    choice = json.loads((args.out / "dihedrals.json").read_text())
    topo, pair = evaluation_topology(choice)
    frames = read(args.work / "cg_all.extxyz", index=":")
    aa_phi_psi = compute_dihedral_angles(np.load(args.work / "aa_positions.npy"), AA_PHI_PSI)
    quads = np.array([choice["phi_cg"], choice["psi_cg"]])
    ref_pair = compute_dihedral_angles(np.stack([a.positions for a in frames]), quads)
    results, basins = {}, {}
    for name in args.models.split(","):
        folder = args.work / "runs" / name
        results[name] = evaluate_runs(frames, folder, topo, discard_fraction=args.discard,
                                      dihedral_pair=pair, label=name)  # fmt: skip
        sim, _, _ = read_replicas(folder, args.discard)
        ref_pop, sim_pop, agree = basin_populations(
            aa_phi_psi, ref_pair, compute_dihedral_angles(sim, quads)
        )
        basins[name] = sim_pop
    basins["reference (mapped all-atom)"] = ref_pop
    keys = ("frames", "fes_mae_kT", "js_phi_psi", "missing_population")

    def floor_of(ref: list, other: list) -> dict:
        other_pos = np.stack([a.positions for a in other])
        row = summary_row(evaluate_runs(ref, other_pos, topo, dihedral_pair=pair))
        return {k: row[k] for k in keys}

    half = len(frames) // 2
    floor = floor_of(frames[:half], frames[half:])
    floors = {}
    segments_file = args.work / "segments.json"
    if args.floor_from and segments_file.is_file():  # an independent run against the rest
        segs = json.loads(segments_file.read_text())["segments"]
        cut = sum(g["frames"] for g in segs[: args.floor_from])
        floors["runs_vs_rest"] = {
            "reference": [g["file"] for g in segs[: args.floor_from]],
            "other": [g["file"] for g in segs[args.floor_from :]],
            **floor_of(frames[:cut], frames[cut:]),
        }
    extra = {
        "dihedral_choice": choice,
        "evaluation_note": "the regions columns of the table use the all-atom backbone φ/ψ "
        "limits on CG dihedrals and mean nothing here; see basin_populations",
        "basin_populations": basins,
        "basin_rule_agreement_on_reference": agree,
        "sampling_floor_half_vs_half": floor,
        "sampling_floor_other": floors,
    }
    if (args.out / "heldout.json").is_file():
        extra["heldout_force_matching"] = json.loads((args.out / "heldout.json").read_text())
    for fit in sorted(args.out.glob("fit_summary*.json")):
        key = "fit" + fit.stem.removeprefix("fit_summary")
        extra[key] = json.loads(fit.read_text())
    for name in args.models.split(","):
        md = args.out / f"md_summary_{name}.json"
        if md.is_file():
            extra[f"md_{name}"] = json.loads(md.read_text())
    path = write_report(results, args.out / "report", extra=extra)
    for name, ev in results.items():
        s = summary_row(ev)
        log(f"{name}: {ev.n_frames} frames, FES MAE {s['fes_mae_kT']:.3f} kT, "
            f"JS {s['js_phi_psi']:.4f}, basins {basins[name]}")  # fmt: skip
    log(f"floor: {floor}; {floors}; reference basins {ref_pop}")
    log(f"report: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--aa", nargs="+", type=Path, required=True,
                        help="all-atom extxyz files with forces, in time order")  # fmt: skip
    parser.add_argument("--drop", type=int, default=10, help="frames dropped per file")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "cg_learned")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/cg_runs/ala2_learned")
    parser.add_argument("--stages", default="map,choose,fit,md,eval")
    parser.add_argument("--network", choices=("schnet", "cgnet"), default="schnet",
                        help="network of the fit: schnet (model/) or cgnet (cgnet/)")  # fmt: skip
    parser.add_argument("--cutoff", type=float, default=10.0)
    parser.add_argument("--max-epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1, help="seed of the network fit")
    parser.add_argument("--prior-angles", choices=("harmonic", "all"), default="harmonic",
                        help="harmonic: only angles with a Boltzmann-inverted minimum")  # fmt: skip
    parser.add_argument("--exclusion", type=int, default=1,
                        help="prior repulsion between beads more than N bonds apart")  # fmt: skip
    parser.add_argument("--split", default="0.7,0.1,0.2",
                        help="time-ordered train,val,test fractions of the fit frames")  # fmt: skip
    parser.add_argument("--fit-segments", type=int, default=0,
                        help="fit on the first N --aa runs only (0: all); the rest is held "
                        "out (stage heldout)")  # fmt: skip
    parser.add_argument("--name", default=None,
                        help="folder of the network fit (default model/cgnet, _sSEED)")  # fmt: skip
    parser.add_argument("--patience", type=int, default=10, help="early-stopping patience")
    parser.add_argument("--lr-patience", type=int, default=3, help="plateau patience of the lr")
    parser.add_argument("--md-seed", type=int, default=7, help="seed of the Langevin noise")
    parser.add_argument("--max-time", default="8m")
    parser.add_argument("--replicas", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--timestep", type=float, default=2.0, help="fs")
    parser.add_argument("--friction", type=float, default=0.002, help="1/fs")
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--models", default="prior,model")
    parser.add_argument("--discard", type=float, default=0.1)
    parser.add_argument("--floor-from", type=int, default=0,
                        help="also a floor: --aa runs N... vs the runs before")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")
    if "map" in stages:
        stage_map(args)
    if "choose" in stages:
        stage_choose(args)
    if "fit" in stages:
        stage_fit(args)
    if "heldout" in stages:
        stage_heldout(args)
    if "md" in stages:
        stage_md(args)
    if "eval" in stages:
        stage_eval(args)


if __name__ == "__main__":
    main()
