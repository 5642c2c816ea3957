"""``ase-mlmd backmap``: generative backmapping — train a CGVAE, run a backmapper card on CG
frames; :mod:`ase_mlmd.cli.backmap_eval` adds ``eval`` (metrics report) and ``linear`` (the
least-squares baseline card), :mod:`ase_mlmd.cli.backmap_pulchra` ``pulchra`` (the PULCHRA
card). Every action's parser sets ``backmap_run`` (a function of ``args``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

TRAIN_EXAMPLES = """examples:
  ase-mlmd cg map ala2_aa.extxyz --scheme girvan-newman --beads 6 -o map.json
  ase-mlmd backmap train --data ala2_aa.extxyz --mapping map.json \\
      --split time:0.8,0.1,0.1 --max-time 10m -o models/ala2-backmap-6
"""
RUN_EXAMPLES = """examples:
  ase-mlmd cg map --mapping map.json --apply cg_md.extxyz --output-cg cg_traj.extxyz
  ase-mlmd backmap run models/ala2-backmap-6/card.toml cg_traj.extxyz --samples 10 \\
      -o aa_samples.extxyz
"""


class CLICommand:
    """Restore all-atom structures from CG structures (CGVAE; linear and PULCHRA cards too).

    Examples:

        ase-mlmd backmap train --data ala2_aa.extxyz --mapping map.json
            --split time:0.8,0.1,0.1 -o models/ala2-backmap-6
        ase-mlmd backmap run models/ala2-backmap-6/card.toml cg_traj.extxyz --samples 10
            -o aa_samples.extxyz
    """

    @staticmethod
    def add_arguments(parser) -> None:
        from ase_mlmd.cli import backmap_eval, backmap_pulchra

        sub = parser.add_subparsers(dest="action", metavar="{train,run,eval,linear,pulchra}")
        sub.required = True
        add_subcommands(sub)
        backmap_eval.add_subcommands(sub)
        backmap_pulchra.add_subcommands(sub)

    @staticmethod
    def run(args, parser) -> None:
        args.backmap_run(args)


def add_subcommands(sub) -> None:
    """Add ``train`` and ``run`` to the ``ase-mlmd backmap`` subparsers."""
    from ase_mlmd.backmap.cgvae import CGVAEHyper
    from ase_mlmd.backmap.train import BackmapTrainConfig

    fmt = argparse.RawDescriptionHelpFormatter
    d, h = BackmapTrainConfig(), CGVAEHyper()
    p = sub.add_parser(
        "train",
        help="train a CGVAE backmapper on all-atom frames and a CG mapping",
        formatter_class=fmt,
        description="Train a CGVAE (equivariant VAE: CG coordinates -> all-atom coordinates) "
        "on all-atom frames mapped with a mapping JSON (`ase-mlmd cg map` / `cg autograin`); "
        "writes OUTPUT/card.toml (backend cgvae), train_log.csv and split.json. Rerunning "
        "the same command resumes from OUTPUT/checkpoint.pt.\n\n" + TRAIN_EXAMPLES,
    )
    add = p.add_argument
    add("--data", required=True, help="all-atom frames in time order (extxyz, traj, ...)")
    add("--mapping", required=True, help="CG mapping JSON of this molecule")
    add(
        "--split",
        default="time:0.8,0.1,0.1",
        help="train,val,test sizes; 'time:' = time-ordered blocks (default time:0.8,0.1,0.1)",
    )
    add(
        "--centre",
        choices=("mapping", "geometry"),
        default=d.centre,
        help="bead positions: the mapping's weights (default) or each bead's geometric centre",
    )
    add("--stride", type=int, default=1, help="use every STRIDE-th frame (default 1)")
    add("--max-time", default=None, help="wall-time budget, e.g. 10m (resumptions included)")
    add("--max-epochs", type=int, default=d.max_epochs, help=f"default {d.max_epochs}")
    add("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    add("--lr", type=float, default=d.lr, help=f"default {d.lr}")
    add("--early-stop-patience", type=int, default=d.early_stop_patience)
    add(
        "--lr-patience",
        type=int,
        default=d.lr_patience,
        help=f"epochs without a better validation loss before the LR halves ({d.lr_patience})",
    )
    add("--features", type=int, default=h.features, help=f"channels (default {h.features})")
    add("--latent", type=int, default=h.latent, help=f"latent size per bead ({h.latent})")
    add("--beta", type=float, default=h.beta, help=f"KL weight (default {h.beta})")
    add("--gamma", type=float, default=h.gamma, help=f"bond-length MSE weight ({h.gamma})")
    add(
        "--gamma-angle",
        type=float,
        default=h.gamma_angle,
        help=f"MSE weight of 1-3 distances (bond angles) ({h.gamma_angle}: CGVAE's loss)",
    )
    add("--delta", type=float, default=h.delta,
        help=f"steric penalty weight: pairs > 3 bonds apart closer than --clash-factor × the "
             f"sum of vdW radii (default {h.delta}: CGVAE's loss)")  # fmt: skip
    add(
        "--clash-factor",
        type=float,
        default=h.clash_factor,
        help=f"onset of the steric penalty, fraction of the vdW sum ({h.clash_factor})",
    )
    add(
        "--sample-terms",
        action="store_true",
        help="apply the bond (--gamma), 1-3 (--gamma-angle) and steric (--delta) terms also "
        "to a structure decoded from a prior draw, not only to the reconstruction (default "
        "off: CGVAE's loss)",
    )
    add("--cutoff", type=float, default=h.cutoff, help=f"interaction cutoff, Å ({h.cutoff})")
    add("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    add("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")
    add("--no-progress", action="store_true", help="no progress bars")
    add("-o", "--output", required=True, help="output folder")
    p.set_defaults(backmap_run=run_train, backmap_parser=p)

    r = sub.add_parser(
        "run",
        help="backmap CG frames with a backmapper card (samples per frame)",
        formatter_class=fmt,
        description="Write N all-atom samples per CG frame (extended XYZ; info cg_frame and "
        "sample name where each came from), or with --reconstruct one deterministic "
        "structure per frame.\n\n" + RUN_EXAMPLES,
    )
    add = r.add_argument
    add("card", help="backmapper card (card.toml of `backmap train`, `linear` or `pulchra`)")
    add("cg", help="CG frames (extxyz written by `ase-mlmd cg map --output-cg`, or CG MD)")
    add("--samples", type=int, default=1, help="samples per CG frame (default 1)")
    add(
        "--reconstruct",
        action="store_true",
        help="one deterministic structure per frame (latent at the prior mean) instead",
    )
    add("--index", default=":", help="CG frames to use (ASE index, default ':')")
    add("--seed", type=int, default=0, help="sampling seed (default 0)")
    add("-o", "--output", required=True, help="all-atom frames to write (extxyz)")
    r.set_defaults(backmap_run=run_backmap, backmap_parser=r)


def run_train(args) -> None:
    from ase_mlmd.backmap.cgvae import CGVAEHyper
    from ase_mlmd.backmap.train import BackmapTrainConfig, train_backmapper
    from ase_mlmd.cg.frames import read_trajectory
    from ase_mlmd.cg.mapping import CGMapping
    from ase_mlmd.cli.cg_fit import parse_cg_split
    from ase_mlmd.errors import DataFormatError

    parser = args.backmap_parser
    if args.stride < 1:
        parser.error(f"--stride must be ≥ 1, got {args.stride}")
    split, ordered = parse_cg_split(args.split)
    try:
        hyper = CGVAEHyper.from_dict(
            {
                "features": args.features,
                "latent": args.latent,
                "beta": args.beta,
                "gamma": args.gamma,
                "delta": args.delta,
                "clash_factor": args.clash_factor,
                "sample_terms": args.sample_terms,
                "gamma_angle": args.gamma_angle,
                "cutoff": args.cutoff,
            }
        )
        config = BackmapTrainConfig(
            hyper=hyper,
            centre=args.centre,
            split=split,
            ordered=ordered,
            lr=args.lr,
            batch_size=args.batch_size,
            max_epochs=args.max_epochs,
            max_time=args.max_time,
            early_stop_patience=args.early_stop_patience,
            lr_patience=args.lr_patience,
            seed=args.seed,
        )
    except ValueError as err:
        parser.error(str(err))
    mapping = CGMapping.from_json(args.mapping)
    frames = read_trajectory(args.data)[:: args.stride]
    if len(frames) < 3:
        raise DataFormatError(f"--data {args.data} has {len(frames)} frames; training needs more")
    info = {"data": str(Path(args.data).resolve()), "mapping": str(Path(args.mapping).resolve()),
            "stride": args.stride}  # fmt: skip
    result = train_backmapper(
        frames,
        mapping,
        args.output,
        config,
        resume=not args.no_resume,
        progress=not args.no_progress,
        command=shlex.join(["ase-mlmd", "backmap", *sys.argv[2:]]),
        data_info=info,
    )
    print(
        f"test RMSD ({result.n_test} frames, all atoms): autoencoded "
        f"{result.test_rmsd_autoencode:.3f} Å, from the CG alone (prior mean) "
        f"{result.test_rmsd_prior_mean:.3f} Å; {result.epochs} epochs in "
        f"{result.wall_time_s:.0f} s (stopped: {result.stop_reason})"
    )
    print(f"card: {result.card_path}")


def run_backmap(args) -> None:
    from ase.io import read, write

    from ase_mlmd.backmap.base import check_n_samples
    from ase_mlmd.backmap.card import load_backmapper
    from ase_mlmd.errors import DataFormatError
    from ase_mlmd.fileio import atomic_output
    from ase_mlmd.outdir import lock_file

    n_samples = check_n_samples(args.samples)
    if not Path(args.cg).is_file():
        raise DataFormatError(f"CG frames file {args.cg} does not exist")
    backmapper = load_backmapper(args.card)
    try:
        cg = read(args.cg, index=args.index)
    except Exception as err:  # ASE raises many types for unreadable files
        raise DataFormatError(f"cannot read the CG frames {args.cg}: {err}") from err
    cg = [cg] if not isinstance(cg, list) else cg
    if args.reconstruct:
        frames = backmapper.reconstruct(cg)
    else:
        frames = [a for per_frame in backmapper.sample(cg, n_samples, args.seed) for a in per_frame]
    with lock_file(args.output, "output file (-o)"), atomic_output(args.output) as tmp:
        write(tmp, frames, format="extxyz")
    print(f"{len(frames)} all-atom frames from {len(cg)} CG frames -> {args.output}")
    if frames and "reference_index" in frames[0].arrays:
        print(
            f"note: heavy atoms only ({len(frames[0])} of {backmapper.topology.n_atoms} atoms; "
            "arrays reference_index = index in the full molecule): PULCHRA restores heavy "
            "atoms; for hydrogens write the card with `backmap pulchra --hydrogens amber14`"
        )
