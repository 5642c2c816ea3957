"""``ase-mlmd cg fit`` (force-matched CG force field → a card) and ``ase-mlmd cg eval`` (CG
simulations against reference CG data: FES over CG dihedrals, JS divergences, report)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ase_mlmd.errors import DatasetSplitError

FIT_EXAMPLES = """examples:
  ase-mlmd cg fit ../shared/data/ala2_cg --units kcal/mol --model schnet \\
      --priors bonds,angles,dihedrals,repulsion --split time:0.7,0.1,0.2 --max-time 15m \\
      -o models/ala2-cg
  ase-mlmd cg fit mapped.extxyz --priors bonds,angles,repulsion --no-network -o models/prior
"""
EVAL_EXAMPLES = """examples:
  ase-mlmd cg eval --reference ../shared/data/ala2_cg --units kcal/mol \\
      --simulated runs/prior runs/model -o report/
  ase-mlmd cg eval --reference mapped.extxyz --simulated runs/ -o report/
"""


def add_subcommands(sub) -> None:
    """Add ``fit`` and ``eval`` to the ``ase-mlmd cg`` subparsers."""
    from ase_mlmd.cg.priors import PriorSettings
    from ase_mlmd.models.bonded import TERMS
    from ase_mlmd.train.config import DTYPES, TrainConfig

    fmt = argparse.RawDescriptionHelpFormatter
    d, pr = TrainConfig(), PriorSettings()
    p = sub.add_parser(
        "fit",
        help="fit a CG force field (priors + network) by force matching",
        formatter_class=fmt,
        description="Fit Boltzmann-inverted priors and a network correction to CG frames with "
        "mapped forces (force matching with the ase-mlmd train loop); writes OUTPUT/card.toml "
        "(backend cg-prior-network). Rerunning resumes from OUTPUT/checkpoint.pt.\n\n"
        + FIT_EXAMPLES,
    )
    add = p.add_argument
    add("data", help="folder of *coordinates*.npy + *forces*.npy, or an extxyz of CG frames")
    add("--units", default=None, help="energy unit of numpy forces: kcal/mol, kJ/mol, eV, meV")
    add(
        "--model",
        choices=("schnet", "painn", "cgnet"),
        default="schnet",
        help="network (default schnet; cgnet: MLP over distances, angles, cos/sin of dihedrals)",
    )
    add("--no-network", action="store_true", help="fit and export the prior alone")
    add("--priors", default=",".join(TERMS), help=f"prior terms (default {','.join(TERMS)})")
    add("--temperature", type=float, default=pr.temperature_K, help="K, of the data (300)")
    add("--exclusion", type=int, default=pr.exclusion, help="repulsion beyond N bonds (3)")
    add("--harmonics", type=int, default=pr.n_harmonics, help="Fourier terms per dihedral (3)")
    add("--skip-unfittable-angles", action="store_true",
        help="leave out of the prior (with a warning) bond angles whose Boltzmann-inverted "
        "profile has no harmonic minimum; the network carries them")  # fmt: skip
    add("--split", default="time:0.7,0.1,0.2",
        help="train,val,test fractions or counts; 'time:' = time-ordered blocks "
        "(default time:0.7,0.1,0.2: the last 20%% are the test set)")  # fmt: skip
    add("--stride", type=int, default=1, help="use every N-th frame (default 1)")
    add("--mapping", default=None,
        help="the mapping JSON the frames were made with (ase-mlmd cg map): its bead bonds "
        "give the prior topology (default: a chain in bead order)")  # fmt: skip
    add("--cutoff", type=float, default=10.0, help="network cutoff, Å (default 10)")
    add(
        "--hyper",
        default="",
        help="network architecture, e.g. n_atom_basis=32,n_interactions=2 "
        "(schnet/painn) or width=128,depth=4,activation=tanh (cgnet)",
    )
    add("--max-time", default=None, help="wall-time budget, e.g. 10m")
    add("--max-epochs", type=int, default=d.max_epochs, help=f"default {d.max_epochs}")
    add("--batch-size", type=int, default=64, help="default 64")
    add("--lr", type=float, default=2e-3, help="default 2e-3")
    add("--early-stop-patience", type=int, default=10, help="epochs (default 10)")
    add("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    add("--dtype", choices=DTYPES, default=d.dtype, help=f"default {d.dtype}")
    add("--name", default=None, help="the card's name (default: the output folder's name)")
    add("--no-resume", action="store_true", help="ignore a checkpoint in the output folder")
    add("--no-progress", action="store_true", help="no progress bars")
    add("-o", "--output", required=True, help="output folder")
    p.set_defaults(cg_run=run_fit, cg_parser=p)

    e = sub.add_parser(
        "eval",
        help="compare CG simulations with reference CG data (FES, JS divergences, report)",
        formatter_class=fmt,
        description="Free energy over the CG dihedrals (60 x 60, kT), its MAE over the bins "
        "the reference populates below 4 kT, Jensen-Shannon divergences of the (phi, psi) "
        "histogram and of every bond/angle/dihedral distribution; writes OUTPUT/report.md, "
        "fes.png, distributions.png and summary.json.\n\n" + EVAL_EXAMPLES,
    )
    add = e.add_argument
    add("--reference", required=True, help="reference CG data (npy folder or extxyz)")
    add("--units", default=None, help="energy unit of numpy reference forces (e.g. kcal/mol)")
    add(
        "--simulated",
        nargs="+",
        required=True,
        help="folders of replica trajectories (*.traj), one per model; a folder without "
        "trajectories but with subfolders that have them counts as one model per subfolder",
    )
    add("--discard", type=float, default=0.1, help="equilibration share per replica (0.1)")
    add("--threshold", type=float, default=4.0, help="FES MAE over reference bins below (kT)")
    add("--mapping", default=None,
        help="the mapping JSON of the CG data: its bead bonds give the topology (default: a "
        "chain in bead order)")  # fmt: skip
    add("--dihedral-pair", default="0,1",
        help="which two dihedrals of the topology span the FES, as indices I,J into its "
        "dihedral list (default 0,1)")  # fmt: skip
    add("-o", "--output", required=True, help="report folder")
    e.set_defaults(cg_run=run_eval, cg_parser=e)


def parse_cg_split(text: str) -> tuple[tuple[float | int, ...], bool]:
    """``"time:0.7,0.1,0.2"`` → ((0.7, 0.1, 0.2), True); without ``time:`` a random split."""
    from ase_mlmd.data.splits import parse_split

    ordered = text.startswith("time:")
    try:
        return parse_split(text.removeprefix("time:")), ordered
    except DatasetSplitError as err:
        raise DatasetSplitError(f"--split {text!r}: {err}") from None


def run_fit(args) -> None:
    from ase_mlmd.cg.data import read_cg_data
    from ase_mlmd.cg.forcefield import KCAL_PER_EV, fit_cg_forcefield
    from ase_mlmd.cg.priors import PriorSettings, parse_terms
    from ase_mlmd.cli.common import parse_parameters
    from ase_mlmd.outdir import lock_folder
    from ase_mlmd.train.config import TrainConfig, parse_duration

    parser = args.cg_parser
    try:
        split, ordered = parse_cg_split(args.split)
        priors = PriorSettings(
            terms=parse_terms(args.priors),
            temperature_K=args.temperature,
            n_harmonics=args.harmonics,
            exclusion=args.exclusion,
            skip_unfittable_angles=args.skip_unfittable_angles,
        )
        hyper = parse_parameters(args.hyper)
        if "lipschitz" in hyper and not (
            isinstance(hyper["lipschitz"], int | float) and hyper["lipschitz"] > 0
        ):
            raise ValueError(
                f"--hyper lipschitz={hyper['lipschitz']}: the Lipschitz bound must be a positive "
                "number (e.g. lipschitz=1.0), or leave it out for no bound"
            )
        config = TrainConfig(
            model=args.model,
            cutoff=args.cutoff,
            hyperparameters=hyper,
            energy_weight=0.0,
            lr=args.lr,
            batch_size=args.batch_size,
            max_epochs=args.max_epochs,
            max_time=parse_duration(args.max_time),
            early_stop_patience=args.early_stop_patience,
            seed=args.seed,
            split=split,
            ordered_split=ordered,
            dtype=args.dtype,
            name=args.name,
        )
    except (ValueError, DatasetSplitError) as err:
        parser.error(str(err))
    frames = read_cg_data(args.data, args.units, stride=args.stride)
    topology = mapping_topology(args.mapping, len(frames[0]), "--mapping")
    info = {"data": str(Path(args.data).resolve()), "n_frames": len(frames)}
    if args.mapping:
        info["mapping"] = str(Path(args.mapping).resolve())
    if args.units:
        info["units"] = args.units
    with lock_folder(args.output, "CG fit output folder"):
        result = fit_cg_forcefield(
            frames,
            args.output,
            config,
            priors,
            topology,
            network=not args.no_network,
            data_info=info,
            command=shlex.join(["ase-mlmd", "cg", *sys.argv[2:]]),
            progress=not args.no_progress,
        )
    k2 = KCAL_PER_EV**2
    print(
        f"test force-matching loss <|dF|^2> per component ({result.n_test} frames): prior only "
        f"{result.test_loss_prior:.5g} (eV/Å)^2 = {result.test_loss_prior * k2:.4g} "
        f"(kcal/mol/Å)^2; fitted {result.test_loss:.5g} (eV/Å)^2 = {result.test_loss * k2:.4g} "
        "(kcal/mol/Å)^2"
    )
    if result.train is not None:
        t = result.train
        print(f"{t.epochs} epochs in {t.wall_time_s:.0f} s (stopped: {t.stop_reason})")
    print(f"card: {result.card_path}")


def _model_folders(paths: list[str]) -> dict[str, Path]:
    folders: dict[str, Path] = {}
    for text in paths:
        path = Path(text)
        if path.is_dir() and not any(path.glob("*.traj")):
            subs = sorted(p for p in path.iterdir() if p.is_dir() and any(p.glob("*.traj")))
            folders.update({p.name: p for p in subs} if subs else {path.name: path})
        else:
            folders[path.stem if path.is_file() else path.name] = path
    return folders


def run_eval(args) -> None:
    from ase_mlmd.cg.data import read_cg_data
    from ase_mlmd.cg.evaluate import evaluate_runs
    from ase_mlmd.cg.report import summary_row, write_report
    from ase_mlmd.outdir import lock_folder

    if not 0 <= args.discard < 1:
        args.cg_parser.error(f"--discard must be in [0, 1), got {args.discard}")
    reference = read_cg_data(args.reference, args.units)
    topology = mapping_topology(args.mapping, len(reference[0]), "--mapping")
    pair = _dihedral_pair(args, topology, len(reference[0]))
    evaluations = {
        name: evaluate_runs(
            reference,
            folder,
            topology,
            dihedral_pair=pair,
            discard_fraction=args.discard,
            label=name,
            fes_threshold=args.threshold,
        )  # fmt: skip
        for name, folder in _model_folders(args.simulated).items()
    }
    with lock_folder(args.output, "CG report folder"):
        path = write_report(evaluations, args.output)
    for ev in evaluations.values():
        s = summary_row(ev)
        print(
            f"{ev.label}: {ev.n_frames} frames, FES MAE {s['fes_mae_kT']:.3f} kT over "
            f"{s['fes_bins_compared']} bins ({s['fes_bins_missing']} missing), "
            f"JS(phi,psi) {s['js_phi_psi']:.4f}"
        )
    print(f"report: {path}")


def mapping_topology(path: str | None, n_beads: int, flag: str):
    """The bead topology of the mapping JSON at ``path`` (None: None, i.e. a chain), checked
    against the ``n_beads`` of the CG data."""
    if path is None:
        return None
    from ase_mlmd.cg.mapping import CGMapping
    from ase_mlmd.errors import MappingError

    mapping = CGMapping.from_json(path)
    if mapping.n_beads != n_beads:
        raise MappingError(
            f"{flag} {path} has {mapping.n_beads} beads but the CG frames have {n_beads}; give "
            "the mapping the frames were made with"
        )
    return mapping.topology()


def _dihedral_pair(args, topology, n_beads: int) -> tuple[int, int]:
    from ase_mlmd.cg.topology import CGTopology

    topology = topology or CGTopology.chain([str(k) for k in range(n_beads)])
    n = len(topology.dihedrals)
    try:
        pair = tuple(int(k) for k in args.dihedral_pair.split(","))
    except ValueError:
        pair = ()
    if len(pair) != 2 or not all(0 <= k < n for k in pair) or pair[0] == pair[1]:
        args.cg_parser.error(
            f"--dihedral-pair {args.dihedral_pair!r}: give two different indices I,J in 0..{n - 1}"
            f" into the topology's dihedrals {topology.dihedrals.tolist()}"
        )
    return pair
