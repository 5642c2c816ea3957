"""``ase-mlmd train``: train a NequIP, SchNet or PaiNN model on labelled frames and write a
card that ``ase-mlmd run`` / ``ase-mlmd md`` load without trust flags."""

from __future__ import annotations

import shlex

#: (flag, argparse attribute) of the options recorded in the card's command line
_RECORDED = (
    ("--format", "format"),
    ("--energy-unit", "energy_unit"),
    ("--model", "model"),
    ("--split", "split"),
    ("--seed", "seed"),
    ("--split-seed", "split_seed"),
    ("--max-time", "max_time"),
    ("--max-epochs", "max_epochs"),
    ("--cutoff", "cutoff"),
    ("--batch-size", "batch_size"),
    ("--lr", "lr"),
    ("--energy-weight", "energy_weight"),
    ("--force-weight", "force_weight"),
    ("--ema-decay", "ema_decay"),
    ("--lr-patience", "lr_patience"),
    ("--early-stop-patience", "early_stop_patience"),
    ("--dtype", "dtype"),
    ("--hyper", "hyper"),
    ("--name", "name"),
    ("--device", "device"),
)


class CLICommand:
    """Train a machine-learning force field on labelled frames (energies and forces).

    The data are read with ase_mlmd's readers (extxyz, xyz, ASE db, MD17 npz, deepmd folders;
    --format when the name does not tell, --energy-unit where the file states none) and split
    randomly (--seed, or --ordered-split for time order). Training minimises a per-atom energy
    + force MSE with Adam, an EMA of the weights, LR reduction on plateau and early stopping on
    the validation force MAE, within --max-epochs and --max-time. The output folder gets
    checkpoint.pt (running the same command again resumes it; --no-resume starts afresh),
    train_log.csv (per epoch: lr, train loss, validation energy and force MAE), split.json and,
    when training has finished, card.toml + weights (safetensors): use the card with
    `ase-mlmd run DIR/card.toml structure.xyz` or `ase-mlmd md structure.xyz --calc
    DIR/card.toml`.

    --devices N --strategy ddp trains on N data-parallel processes (CPU: N processes with
    gloo; CUDA: N GPUs with NCCL, one process each) on one machine. Each optimiser step uses
    the same --batch-size frames as a single-process run, split over the processes, so the
    loss curve is the single-process one; rank 0 validates, logs, checkpoints and writes the
    card. An interrupted run resumes with the same --devices.

    Examples:

        ase-mlmd train --data ethanol_ref.extxyz --model nequip --split 0.8,0.1,0.1
            --seed 123 --max-time 10m -o models/ethanol-nequip
        ase-mlmd train --data water_dft --format deepmd --model schnet --split 320,40,40
            -o models/water-schnet
        ase-mlmd train --data big.extxyz --model nequip --devices 2 --strategy ddp
            -o models/big
    """

    @staticmethod
    def add_arguments(parser) -> None:
        from ase_mlmd.train.config import DTYPES, MODELS, STRATEGIES, TrainConfig

        d = TrainConfig()
        add = parser.add_argument
        add("--data", required=True, help="dataset file or folder (deepmd: a system folder)")
        add("--format", default=None, help="extxyz, xyz, db, md17 or deepmd (default: guess)")
        add("--energy-unit", default=None, help="energy unit of the file, e.g. kcal/mol")
        add("--model", choices=MODELS, default=d.model, help=f"default {d.model}")
        add("--split", default="0.8,0.1,0.1", help="train,val,test fractions or frame counts")
        add(
            "--seed",
            type=int,
            default=d.seed,
            help=f"weights, batch order, split (default {d.seed})",
        )
        add("--split-seed", type=int, default=None, help="seed of the split (default --seed)")
        add("--ordered-split", action="store_true", help="contiguous blocks in frame order")
        add("--max-time", default=None, help="wall-time budget, e.g. 90s, 10m, 1.5h")
        add("--max-epochs", type=int, default=d.max_epochs, help=f"default {d.max_epochs}")
        add("--cutoff", type=float, default=d.cutoff, help=f"Å (default {d.cutoff})")
        add("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
        add("--lr", type=float, default=d.lr, help=f"initial learning rate (default {d.lr})")
        add("--energy-weight", type=float, default=d.energy_weight, help="per-atom energy MSE")
        add("--force-weight", type=float, default=d.force_weight, help="force MSE weight")
        add("--ema-decay", type=float, default=d.ema_decay, help=f"default {d.ema_decay}")
        add("--lr-patience", type=int, default=d.lr_patience, help="epochs before LR reduction")
        add("--early-stop-patience", type=int, default=d.early_stop_patience, help="epochs")
        add("--dtype", choices=DTYPES, default=d.dtype, help=f"default {d.dtype}")
        add("--hyper", default="", help="architecture, e.g. num_features=32,l_max=2")
        add("--name", default=None, help="the card's name (default: the output folder's name)")
        add("--device", default=d.device, help="cpu, cuda or auto")
        add(
            "--devices",
            type=int,
            default=d.devices,
            help="data-parallel processes (CPU) or GPUs (CUDA); default 1",
        )
        add(
            "--strategy",
            choices=STRATEGIES,
            default=d.strategy,
            help="ddp: torch.distributed data parallel (auto: ddp when --devices > 1)",
        )
        add("--no-resume", action="store_true", help="ignore a checkpoint in the output folder")
        add("--no-progress", action="store_true", help="no progress bars")
        add("-o", "--output", required=True, help="output folder")

    @staticmethod
    def run(args, parser=None) -> None:
        from ase_mlmd.cli.common import parse_parameters
        from ase_mlmd.data.splits import parse_split
        from ase_mlmd.train import TrainConfig, parse_duration, train

        try:
            config = TrainConfig(
                model=args.model,
                cutoff=args.cutoff,
                hyperparameters=parse_parameters(args.hyper),
                energy_weight=args.energy_weight,
                force_weight=args.force_weight,
                lr=args.lr,
                batch_size=args.batch_size,
                max_epochs=args.max_epochs,
                max_time=parse_duration(args.max_time),
                lr_patience=args.lr_patience,
                early_stop_patience=args.early_stop_patience,
                ema_decay=args.ema_decay,
                seed=args.seed,
                split=parse_split(args.split),
                split_seed=args.split_seed,
                ordered_split=args.ordered_split,
                device=args.device,
                dtype=args.dtype,
                name=args.name,
                devices=args.devices,
                strategy=args.strategy,
            )
        except ValueError as err:
            if parser is None:
                raise
            parser.error(str(err))
        result = train(
            args.data,
            config,
            args.output,
            data_format=args.format,
            energy_unit=args.energy_unit,
            resume=not args.no_resume,
            progress=not args.no_progress,
            command=command_line(args),
        )
        print(
            f"test MAE: energy {result.test_energy_mae_mev_per_atom:.3f} meV/atom "
            f"({result.test_energy_mae_mev:.2f} meV per frame), forces "
            f"{result.test_force_mae_mev_per_angstrom:.2f} meV/Å "
            f"({result.n_test} test frames)"
        )
        resumed = (
            f", resumed from epoch {result.resumed_from_epoch} of {args.output}"
            if result.resumed_from_epoch is not None
            else ""
        )
        print(
            f"{result.epochs} epochs in {result.wall_time_s:.0f} s (stopped: {result.stop_reason}"
            f"{resumed}); best validation force MAE {result.val_force_mae_mev_per_angstrom:.2f} "
            f"meV/Å at epoch {result.best_epoch}"
        )
        print(f"card: {result.card_path}")


def command_line(args) -> str:
    """The command as it would be typed, with the options that were set (for the card)."""
    words = ["ase-mlmd", "train", "--data", str(args.data)]
    for flag, key in _RECORDED:
        value = getattr(args, key, None)
        if value not in (None, ""):
            words += [flag, str(value)]
    if getattr(args, "devices", 1) != 1 or getattr(args, "strategy", "auto") != "auto":
        words += ["--devices", str(args.devices), "--strategy", args.strategy]
    if args.ordered_split:
        words.append("--ordered-split")
    if args.no_resume:
        words.append("--no-resume")
    words += ["-o", str(args.output)]
    return shlex.join(words)
