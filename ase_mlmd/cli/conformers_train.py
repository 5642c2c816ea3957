"""``ase-mlmd conformers train``: train ConfVAE on reference conformer ensembles → a card.

The ``conformers`` command registers this module's :func:`add_arguments` and :func:`run` as
its ``train`` action.
"""

from __future__ import annotations

import shlex
import sys

EXAMPLES = """examples:
  ase-mlmd conformers train --reference ref/ --split 0.8,0.1,0.1 --seed 123 -o models/confvae
  ase-mlmd conformers train --reference ref/ --max-time 30m --max-conformers 10 -o models/cv
  ase-mlmd conformers mols.smi --method confvae --model models/confvae/card.toml -o out/
"""

DESCRIPTION = (
    "Train ConfVAE (graph + conformation encoders, latent z, decoder of distances between atoms "
    "up to --max-hops bonds apart, coordinates by differentiable distance geometry) on "
    "reference ensembles (*.extxyz under "
    "--reference, as written by 'ase-mlmd conformers reference'). A reference folder with "
    "train/ val/ test/ subfolders keeps its split by molecule; a flat one is split with "
    "--split and --seed. Writes OUTPUT/card.toml + weights (safetensors), checkpoint.pt, "
    "train_log.csv and split.json; rerunning the same command resumes.\n\n" + EXAMPLES
)


def add_arguments(parser) -> None:
    """The flags of ``ase-mlmd conformers train``."""
    from ase_mlmd.conformers.confvae_train import ConfVAETrainConfig

    d = ConfVAETrainConfig()
    add = parser.add_argument
    add("--reference", required=True, help="folder of reference ensembles (*.extxyz)")
    add(
        "--split",
        default="0.8,0.1,0.1",
        help="train,val,test fractions for a flat reference folder (default 0.8,0.1,0.1)",
    )
    add("--seed", type=int, default=d.seed, help=f"split, weights and noise seed ({d.seed})")
    add("--max-time", default=None, help="wall-time budget of the whole run, e.g. 30m")
    add("--max-epochs", type=int, default=d.max_epochs, help=f"default {d.max_epochs}")
    add(
        "--early-stop-patience",
        type=int,
        default=d.early_stop_patience,
        help=f"epochs without a better validation loss (default {d.early_stop_patience})",
    )
    add(
        "--batch-size", type=int, default=d.batch_size, help=f"conformers per step ({d.batch_size})"
    )
    add("--lr", type=float, default=d.lr, help=f"Adam learning rate ({d.lr})")
    add("--beta", type=float, default=d.beta, help=f"KL weight ({d.beta})")
    add(
        "--distance-weight",
        type=float,
        default=d.distance_weight,
        help=f"weight of the direct distance loss ({d.distance_weight})",
    )
    add(
        "--distance-loss",
        choices=("weighted", "plain"),
        default=d.distance_loss,
        help="mean of the distance loss over atom pairs: weighted by --dg-weights or plain "
        f"({d.distance_loss})",
    )
    add("--hidden", type=int, default=d.hidden, help=f"embedding width ({d.hidden})")
    add("--layers", type=int, default=d.layers, help=f"message-passing layers ({d.layers})")
    add("--latent", type=int, default=d.latent, help=f"size of each atom's latent z ({d.latent})")
    add(
        "--max-hops",
        type=int,
        default=d.max_hops,
        help=f"decode distances of atom pairs up to this many bonds apart ({d.max_hops})",
    )
    add(
        "--unrolled",
        type=int,
        default=d.unrolled,
        help=f"inner DG steps the gradient flows through ({d.unrolled})",
    )
    weights = ",".join(f"{w:g}" for w in d.dg_weights)
    add(
        "--dg-weights",
        default=weights,
        help="distance-geometry stress weights of bonds, 1-3 pairs, ..., longer pairs "
        f"(comma-separated; 1 = all pairs alike; default {weights})",
    )
    add(
        "--max-conformers",
        type=int,
        default=None,
        help="use at most N lowest-energy conformers per molecule (default: all)",
    )
    add("--name", default=None, help="the card's name (default: the output folder's name)")
    add("--no-resume", action="store_true", help="ignore a checkpoint in the output folder")
    add("--no-progress", action="store_true", help="no progress display")
    add("-o", "--output", required=True, help="output folder")


def _weights(text: str) -> list[float]:
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--dg-weights {text!r}: give comma-separated positive numbers, e.g. 100,30,1"
        ) from None


def run(args) -> None:
    """Train and print where the card is and the validation/test figures."""
    from ase_mlmd.conformers.confvae_train import ConfVAETrainConfig, train_confvae
    from ase_mlmd.errors import DatasetSplitError

    try:
        config = ConfVAETrainConfig(
            hidden=args.hidden,
            layers=args.layers,
            latent=args.latent,
            max_hops=args.max_hops,
            unrolled=args.unrolled,
            dg_weights=_weights(args.dg_weights),
            beta=args.beta,
            distance_weight=args.distance_weight,
            distance_loss=args.distance_loss,
            lr=args.lr,
            batch_size=args.batch_size,
            max_epochs=args.max_epochs,
            max_time=args.max_time,
            early_stop_patience=args.early_stop_patience,
            seed=args.seed,
            split=args.split,
            max_conformers=args.max_conformers,
        )
    except DatasetSplitError as err:
        raise DatasetSplitError(f"--split {args.split!r}: {err}") from None
    except ValueError as err:
        raise ValueError(f"conformers train: {err} (see --help for the flags)") from None
    result = train_confvae(
        args.reference,
        args.output,
        config,
        resume=not args.no_resume,
        progress=not args.no_progress,
        command=shlex.join(["ase-mlmd", "conformers", *sys.argv[2:]]),
        name=args.name,
    )
    n = result.n_molecules
    print(
        f"molecules: {n['train']} train, {n['val']} val, {n['test']} test; {result.epochs} "
        f"epochs in {result.wall_time_s:.0f} s (stopped: {result.stop_reason}, best epoch "
        f"{result.best_epoch})"
    )
    print(f"validation: loss {result.val['loss']:.4g}, aligned RMSD {result.val['rmsd_A']:.3f} Å")
    if result.test:
        print(f"test: loss {result.test['loss']:.4g}, aligned RMSD {result.test['rmsd_A']:.3f} Å")
    print(f"card: {result.card_path}")
