"""Acceptance 5a of issue 13: a force-matched CG model of alanine dipeptide (ala2_cg, 5 beads).

Parts (each resumable; rerunning a part continues where it stopped):

* ``fit``: Boltzmann-inverted priors (bonds, angles, Fourier dihedrals, repulsion) on the first
  70 % of the frames, the prior-only card, and prior + SchNet force matching with the package's
  training loop on a time-ordered split 0.7 / 0.1 / 0.2 (the first 80 % fit the model, train +
  validation for early stopping; the last 20 % are the test set). The dihedral prior is there
  for chirality: SchNet sees distances only, so its energy is the same for a structure and its
  mirror image, and bonds/angles/repulsion are mirror-symmetric too: without the sine terms of
  the dihedral prior nothing tells the φ < 0 basins from their mirror images at φ > 0 (the
  ``baseline`` prior puts half of its population at φ > 0, the reference 2.4 %);
  ``--network cgnet`` fits prior + a CGnet-style MLP over internal coordinates (all bead-pair
  distances, angles, cos and sin of the dihedrals: the sines tell mirror images apart) into
  ``cgnet/`` instead (summary ``fit_summary_cgnet.json``), leaving the prior and SchNet runs;
* ``baseline``: the CGnet-style prior alone (bonds, angles, repulsion), a second prior-only
  reference;
* ``md``: Langevin CG MD of ``--replicas`` replicas in one batch with the batched engine, for
  the prior-only and the prior + network model, started from frames spread over the training
  part;
* ``eval``: FES over the CG dihedrals φ = (0,1,2,3), ψ = (1,2,3,4) against the reference data,
  JS divergences, report (Markdown + PNG) in ``--out``.

Usage (1 thread; the machine is shared)::

    OMP_NUM_THREADS=1 python benchmarks/cg_ala2.py --parts fit,baseline,md,eval \\
        --models prior,prior_nodihedral,model
    OMP_NUM_THREADS=1 python benchmarks/cg_ala2.py --parts fit,md --network cgnet --models cgnet

Acceptance 5a against one prior (``--out benchmarks/cg_runs/ala2_5a``): the CGnet-style prior
alone (``--parts baseline,md --models prior_nodihedral``) and the same prior + CGnet network
(``--priors bonds,angles,repulsion --network cgnet``, ``--patience``/``--lr-patience``/``--lr``,
``--lipschitz``); MD of many replicas split over processes with ``--chunk c/C`` (each chunk in
its own subfolder), ``--ensemble`` for the mean of several networks (benchmark-only), eval with
``LABEL=NAME:GLOB`` subsets and ``--halves`` (first vs second half of every replica).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ala2_cg"
OUT = ROOT / "benchmarks" / "cg_runs" / "ala2"  # --out changes it (5a: cg_runs/ala2_5a)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def part_fit(args, frames) -> None:
    from ase_mlmd.cg.forcefield import fit_cg_forcefield
    from ase_mlmd.cg.priors import PriorSettings
    from ase_mlmd.train.config import TrainConfig

    priors = PriorSettings(terms=tuple(args.priors.split(",")), temperature_K=300.0)
    hyper = {"n_atom_basis": 32, "n_interactions": 2, "n_rbf": 20}
    if args.network == "cgnet":
        hyper = {"hidden": [int(h) for h in args.hidden.split(",")], "activation": "tanh"}
        if args.lipschitz:
            hyper["lipschitz"] = args.lipschitz
    config = TrainConfig(
        model=args.network,
        cutoff=args.cutoff,
        hyperparameters=hyper,
        split=(0.7, 0.1, 0.2),
        ordered_split=True,
        batch_size=args.batch_size,
        lr=args.lr,
        max_epochs=args.max_epochs,
        max_time=args.max_time,
        early_stop_patience=args.patience,
        lr_patience=args.lr_patience,
        seed=args.seed,
    )
    info = {"data": str(DATA), "units": "kcal/mol (forces kcal/mol/Å, converted to eV/Å)"}
    if args.network != "schnet":  # the prior card and the SchNet run stay as recorded
        folder = args.folder or (
            args.network if args.seed == 1 else f"{args.network}_seed{args.seed}"
        )
        command = f"benchmarks/cg_ala2.py --parts fit --network {args.network} --seed {args.seed}"
        fit = fit_cg_forcefield(frames, OUT / folder, config, priors, network=True,
                                data_info=info, command=command, progress=True)  # fmt: skip
        _write_fit_summary(fit, OUT / f"fit_summary_{folder}.json")
        return
    prior = fit_cg_forcefield(
        frames,
        OUT / "prior",
        config,
        priors,
        network=False,
        data_info=info,
        command="benchmarks/cg_ala2.py --parts fit",
    )
    log(f"prior-only test force-matching loss {prior.test_loss:.4f} (eV/Å)²")
    fit = fit_cg_forcefield(
        frames,
        OUT / "model",
        config,
        priors,
        network=True,
        data_info=info,
        command="benchmarks/cg_ala2.py --parts fit",
        progress=True,
    )
    _write_fit_summary(fit, OUT / "fit_summary.json")


def _write_fit_summary(fit, path: Path) -> None:
    summary = {
        "n_train": fit.n_train,
        "n_test": fit.n_test,
        "test_loss_prior_eV2_per_A2": fit.test_loss_prior,
        "test_loss_eV2_per_A2": fit.test_loss,
        "test_loss_prior_kcal2": fit.test_loss_prior * 23.060548**2,
        "test_loss_kcal2": fit.test_loss * 23.060548**2,
        "test_force_mae_meV_per_A": fit.train.test_force_mae_mev_per_angstrom,
        "epochs": fit.train.epochs,
        "best_epoch": fit.train.best_epoch,
        "wall_time_s": fit.train.wall_time_s,
        "stop_reason": fit.train.stop_reason,
    }
    path.write_text(json.dumps(summary, indent=2) + "\n")
    log(f"fit: {summary}")


def part_baseline(args, frames) -> None:
    """The CGnet-style prior alone (bonds, angles, repulsion; no dihedral terms), as a second
    prior-only baseline: it has no chirality (every term is mirror-symmetric)."""
    from ase_mlmd.cg.forcefield import fit_cg_forcefield
    from ase_mlmd.cg.priors import PriorSettings
    from ase_mlmd.train.config import TrainConfig

    config = TrainConfig(model="schnet", cutoff=args.cutoff, split=(0.7, 0.1, 0.2),
                         ordered_split=True)  # fmt: skip
    priors = PriorSettings(terms=("bonds", "angles", "repulsion"), temperature_K=300.0)
    fit = fit_cg_forcefield(frames, OUT / "prior_nodihedral", config, priors, network=False,
                            command="benchmarks/cg_ala2.py --parts baseline")  # fmt: skip
    log(f"prior without dihedrals: test force-matching loss {fit.test_loss:.4f} (eV/Å)²")


def ensemble_model(names: list[str]):
    """Prior + the mean energy (so the mean force) of the networks of the cards ``names``, all
    fitted with the same prior on the same split (checked). Benchmark-only: no card format."""
    from ase_mlmd.calculators.registry import load_calculator
    from ase_mlmd.models.cg_model import CGForceField
    from ase_mlmd.models.interface import EnergyModel

    models = [load_calculator(OUT / n / "card.toml").model for n in names]
    first = models[0].prior.state_dict()
    for name, m in zip(names, models, strict=True):
        same = m.prior.state_dict()
        if same.keys() != first.keys() or any(not torch.equal(same[k], first[k]) for k in first):
            raise ValueError(f"{name}: another prior than {names[0]}; an ensemble shares one")

    class MeanNetwork(EnergyModel):
        def __init__(self, networks) -> None:
            super().__init__(cutoff=networks[0].cutoff, species=networks[0].species)
            self.networks = torch.nn.ModuleList(networks)

        def forward(self, batch):
            energies = [net(batch)["energy"] for net in self.networks]
            return {"energy": torch.stack(energies).mean(0)}

    m = models[0]
    return CGForceField(m.prior, MeanNetwork([x.network for x in models]), m.bead_types,
                        m.topology)  # fmt: skip


def part_md(args, frames) -> None:
    from ase_mlmd.md import simulate

    n_fit = int(0.7 * len(frames))
    picks = [int(k * n_fit / args.replicas) for k in range(args.replicas)]
    chunk, n_chunks = (int(v) for v in args.chunk.split("/"))  # c/C: replicas c, c+C, ...
    picks, sub = picks[chunk::n_chunks], ("" if n_chunks == 1 else f"chunk{chunk}")
    starts = []
    for k in picks:
        atoms = frames[k].copy()
        atoms.calc = None
        starts.append(atoms)
    for name in args.models.split(","):
        folder = OUT / "runs" / name / sub  # a chunk: its own folder (and output lock)
        folder.mkdir(parents=True, exist_ok=True)
        log(f"md {name}: {len(starts)} replicas x {args.steps} steps of {args.timestep} fs")
        tick = time.time()
        result = simulate(
            starts,
            (
                ensemble_model(args.ensemble.split(","))
                if args.ensemble and name.startswith("ens")
                else str(OUT / name / "card.toml")
            ),  # fmt: skip
            ensemble="nvt-langevin",
            temperature=300.0,
            timestep=args.timestep,
            steps=args.steps,
            save_every=args.save_every,
            friction=args.friction,
            trajectory=str(folder / "replica_{i}.traj"),
            logfile=str(folder / "log.csv"),
            seed=7 + chunk,
            progress=True,
        )
        statuses = [r.status for r in result.replicas]
        log(
            f"md {name}: {statuses.count('completed')} completed, "
            f"{statuses.count('collapsed')} collapsed, {time.time() - tick:.0f} s"
        )


def part_eval(args, frames) -> None:
    from ase_mlmd.cg.evaluate import evaluate_runs
    from ase_mlmd.cg.report import summary_row, write_report

    results, halves = {}, {}
    for spec in args.models.split(","):  # NAME, or LABEL=NAME:GLOB (a subset of NAME's runs)
        name, _, glob = spec.partition("=")[2].partition(":") if "=" in spec else (spec, "", "")
        label = spec.partition("=")[0]
        files = sorted((OUT / "runs" / name).glob(glob or "**/*.traj"))  # chunks: subfolders
        kept = _kept_positions(files, args.discard)  # each file read once
        results[label] = evaluate_runs(frames, np.concatenate(kept), label=label)
        results[label].n_replicas = len(files)
        if args.halves:  # equilibration check: 1st vs 2nd half of every replica's kept frames
            parts = [np.concatenate([p[: len(p) // 2] for p in kept]),
                     np.concatenate([p[len(p) // 2 :] for p in kept])]  # fmt: skip
            halves[label] = {
                which: {
                    k: summary_row(evaluate_runs(frames, pos))[k]
                    for k in ("fes_mae_kT", "js_phi_psi", "populations")
                }  # fmt: skip
                for which, pos in zip(("first_half", "second_half"), parts, strict=True)
            }
    fit = OUT / "fit_summary.json"
    extra = json.loads(fit.read_text()) if fit.is_file() else {}
    if halves:
        extra["halves_of_each_replica"] = halves
    for other in sorted(OUT.glob("fit_summary_*.json")):  # other networks (--network)
        extra[other.stem.removeprefix("fit_summary_")] = json.loads(other.read_text())
    # sampling floor: the second half of the reference data against its first half
    half = len(frames) // 2
    floor = evaluate_runs(frames[:half], np.stack([a.positions for a in frames[half:]]))
    row = summary_row(floor)
    extra["sampling_floor_half_vs_half"] = {
        k: row[k] for k in ("frames", "fes_mae_kT", "js_phi_psi", "missing_population")
    }
    path = write_report(results, OUT / "report", extra=extra)
    log(f"report: {path}")


def _kept_positions(files, discard: float) -> list[np.ndarray]:
    """(T_i, n_beads, 3) positions of every replica file after dropping its first ``discard``
    (read with ASE's ULM backend, positions only: 6x faster than building Atoms)."""
    from ase.io import ulm

    out = []
    for file in files:
        with ulm.open(file) as reader:
            n = len(reader)
            try:
                pos = np.stack([reader[i].positions for i in range(n)])
            except Exception as error:  # a copy taken while the run appends: drop the last
                log(f"{file}: {error}; reading all frames but the last")
                pos = np.stack([reader[i].positions for i in range(n - 1)])
        out.append(pos[int(discard * len(pos)) :])
    return [p for p in out if len(p)]


def main() -> None:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="fit,md,eval")
    parser.add_argument("--priors", default="bonds,angles,dihedrals,repulsion")
    parser.add_argument(
        "--network",
        choices=("schnet", "cgnet"),
        default="schnet",
        help="fit: schnet (prior + SchNet into model/, as recorded) or cgnet (prior + CGnet-style "
        "MLP over distances, angles, cos/sin of dihedrals, into cgnet/; MD/eval: --models cgnet)",
    )
    parser.add_argument("--seed", type=int, default=1, help="fit seed (≠ 1: folder NETWORK_seedN)")
    parser.add_argument("--folder", default=None, help="fit folder of --network cgnet (default: "
                        "cgnet, or cgnet_seedN); MD/eval name it in --models")  # fmt: skip
    parser.add_argument("--hidden", default="128,128,128,128", help="cgnet hidden layer widths")
    parser.add_argument("--cutoff", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-epochs", type=int, default=60)
    parser.add_argument("--patience", type=int, default=10, help="early-stopping patience")
    parser.add_argument("--lr-patience", type=int, default=3, help="ReduceLROnPlateau patience")
    parser.add_argument("--lipschitz", type=float, default=0.0,
                        help="cgnet: spectral-norm bound of every layer (0: none)")  # fmt: skip
    parser.add_argument("--out", default=str(OUT), help="folder of cards, runs and report")
    parser.add_argument("--max-time", default="12m")
    parser.add_argument("--replicas", type=int, default=100)
    parser.add_argument("--steps", type=int, default=125_000)
    parser.add_argument("--chunk", default="0/1", help="md: c/C runs replicas c, c+C, ... of "
                        "--replicas (C processes side by side, MD seed 7 + c)")  # fmt: skip
    parser.add_argument("--ensemble", default="", help="md: cards whose networks' mean energy "
                        "the --models named ens* use (benchmark-only ensemble)")  # fmt: skip
    parser.add_argument("--timestep", type=float, default=4.0, help="fs")
    parser.add_argument("--friction", type=float, default=0.002, help="1/fs")
    parser.add_argument("--save-every", type=int, default=250)
    parser.add_argument("--models", default="prior,prior_nodihedral,model")
    parser.add_argument("--halves", action="store_true", help="eval: also the first vs the "
                        "second half of each replica's kept frames")  # fmt: skip
    parser.add_argument("--discard", type=float, default=0.1)
    args = parser.parse_args()
    OUT = Path(args.out).resolve()
    torch.set_num_threads(1)
    from ase_mlmd.cg.data import read_cg_data

    frames = read_cg_data(DATA, "kcal/mol")
    log(f"read {len(frames)} frames from {DATA}")
    parts = args.parts.split(",")
    if "fit" in parts:
        part_fit(args, frames)
    if "baseline" in parts:
        part_baseline(args, frames)
    if "md" in parts:
        part_md(args, frames)
    if "eval" in parts:
        part_eval(args, frames)


if __name__ == "__main__":
    main()
