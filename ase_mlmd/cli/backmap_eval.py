"""``ase-mlmd backmap eval``: backmapped frames against all-atom reference frames (METRICS §4
metrics, Markdown table + PNG); ``ase-mlmd backmap linear``: fit the linear baseline card."""

from __future__ import annotations

import argparse
from pathlib import Path

EVAL_EXAMPLES = """examples:
  ase-mlmd backmap eval --reference ala2_aa_test.extxyz --generated aa_samples.extxyz -o report/
  ase-mlmd backmap eval --reference ala2_aa_test.extxyz \\
      --generated lin3.extxyz lin6.extxyz lin12.extxyz --labels N3 N6 N12 \\
      --resolutions 3 6 12 --prmtop alanine-dipeptide-implicit.prmtop -o report/
"""


def add_arguments(parser) -> None:
    """The options of ``backmap eval`` on ``parser``."""
    add = parser.add_argument
    add("--reference", required=True, help="all-atom frames the CG frames were mapped from")
    add(
        "--generated",
        required=True,
        nargs="+",
        help="backmapped frames (extxyz from `ase-mlmd backmap run`); several files = several "
        "runs side by side",
    )
    add("--labels", nargs="+", default=None, help="one name per --generated file")
    add("--resolutions", nargs="+", type=float, default=None,
        help="beads per run, for the per-resolution plot")  # fmt: skip
    add("--index", default=":", help="reference frames to use (ASE index, default ':')")
    add("--prmtop", default=None,
        help="AMBER topology for energies under amber-implicit (OBC2, OpenMM)")  # fmt: skip
    add("--energy-frames", type=int, default=200,
        help="reference frames whose samples get energies (default 200)")  # fmt: skip
    add("-o", "--output", required=True, help="report folder")


def add_subcommands(sub) -> None:
    """Add ``eval`` to the ``ase-mlmd backmap`` subparsers."""
    p = sub.add_parser(
        "eval",
        help="evaluate backmapped frames against the all-atom reference",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="RMSD (heavy / all atoms, unaligned), validity, graph-edit ratio (absolute "
        "and signed), RMSD_sample, clash ratio, bond/angle errors and (with --prmtop) "
        "energies of backmapped frames; writes OUTPUT/report.md, metrics.json and PNG "
        "plots.\n\n" + EVAL_EXAMPLES,
    )
    add_arguments(p)
    p.set_defaults(backmap_run=run, backmap_parser=p)
    q = sub.add_parser(
        "linear",
        help="fit the linear baseline backmapper (least squares) and write its card",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit x = c + D (R - c) by least squares on the training block of all-atom "
        "frames mapped with a mapping JSON; writes OUTPUT/card.toml (backend linear-backmap, "
        "loaded by `backmap run` and `cg loop`) and prints the test-block RMSD.\n\n"
        "example:\n  ase-mlmd backmap linear --data ala2_aa.extxyz --mapping map.json "
        "--split time:0.8,0.1,0.1 -o models/ala2-linear-6\n",
    )
    add = q.add_argument
    add("--data", required=True, help="all-atom frames in time order")
    add("--mapping", required=True, help="CG mapping JSON of this molecule")
    add(
        "--split",
        default="time:0.8,0.1,0.1",
        help="train,val,test sizes ('time:' = time-ordered blocks; default time:0.8,0.1,0.1)",
    )
    add(
        "--centre",
        choices=("mapping", "geometry"),
        default="mapping",
        help="bead positions: the mapping's weights (default) or geometric centres",
    )
    add("--seed", type=int, default=0, help="split seed (random splits)")
    add("-o", "--output", required=True, help="output folder (card.toml)")
    q.set_defaults(backmap_run=run_linear, backmap_parser=q)


def _read(path: str, what: str, index: str = ":"):
    from ase.io import read

    from ase_mlmd.errors import DataFormatError

    if not Path(path).is_file():
        raise DataFormatError(f"{what} file {path} does not exist")
    try:
        frames = read(path, index=index)
    except StopIteration:
        frames = []
    except Exception as err:  # ASE raises many types for unreadable or empty files
        if Path(path).stat().st_size == 0:
            frames = []
        else:
            raise DataFormatError(f"cannot read {what} file {path}: {err}") from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise DataFormatError(f"{what} file {path} has no frames")
    return frames


def run(args) -> None:
    """Run ``backmap eval`` with parsed ``args``."""
    from ase_mlmd.backmap.report import evaluate, pair_frames, write_report
    from ase_mlmd.outdir import lock_folder

    parser = args.backmap_parser
    labels = args.labels or [Path(g).stem for g in args.generated]
    if len(labels) != len(args.generated):
        parser.error(f"--labels gives {len(labels)} names for {len(args.generated)} files")
    if len(set(labels)) != len(labels):
        parser.error("--labels must be distinct (file names repeat: give --labels)")
    if args.resolutions and len(args.resolutions) != len(args.generated):
        parser.error(
            f"--resolutions gives {len(args.resolutions)} values for {len(args.generated)} files"
        )
    if args.energy_frames < 1:
        parser.error(f"--energy-frames must be ≥ 1, got {args.energy_frames}")
    system = None
    if args.prmtop:
        from ase_mlmd.data.openmm_reference import build_amber_system

        _, system = build_amber_system(args.prmtop, "OBC2", None)
    reference = _read(args.reference, "--reference", args.index)
    results, paired = {}, {}
    for label, path in zip(labels, args.generated, strict=True):
        paired[label] = pair_frames(reference, _read(path, "--generated"))
        results[label] = evaluate(paired[label], system, args.energy_frames)
        m = results[label]
        print(
            f"{label}: RMSD heavy {m['rmsd_heavy']:.3f} Å, all {m['rmsd_all']:.3f} Å, valid "
            f"{m['validity_all']:.3f}, GED {m['ged_all']:.3f}, clashes {m['clash_ratio']:.3f}"
        )
    with lock_folder(args.output, "report folder (-o)"):
        report = write_report(results, paired, args.output, args.resolutions)
    print(f"report: {report}")


def run_linear(args) -> None:
    """Run ``backmap linear`` with parsed ``args``."""
    import numpy as np

    from ase_mlmd.backmap.linear import LinearBackmapper
    from ase_mlmd.backmap.metrics import rmsd, select_atoms
    from ase_mlmd.backmap.pairs import BackmapPairs
    from ase_mlmd.cg.mapping import CGMapping
    from ase_mlmd.cli.cg_fit import parse_cg_split
    from ase_mlmd.data.splits import split_indices
    from ase_mlmd.outdir import lock_folder

    sizes, ordered = parse_cg_split(args.split)
    mapping = CGMapping.from_json(args.mapping)
    frames = _read(args.data, "--data")
    pairs = BackmapPairs.from_frames(frames, mapping, centre=args.centre)
    split = split_indices(len(pairs), sizes, seed=args.seed, ordered=ordered)
    train, test = pairs.subset(split.indices("train")), pairs.subset(split.indices("test"))
    model = LinearBackmapper.fit(train)
    name = Path(args.output).name or "linear"
    provenance = {"data": str(Path(args.data).resolve()), "split": args.split,
                  "train_frames": len(train), "test_frames": len(test)}  # fmt: skip
    if len(test):
        cg = [test.cg_atoms(k) for k in range(len(test))]
        x = np.stack([a.positions for a in model.reconstruct(cg)])
        heavy = select_atoms(mapping.numbers, heavy=True)
        provenance["test_rmsd_all_A"] = float(rmsd(test.aa, x).mean())
        provenance["test_rmsd_heavy_A"] = float(rmsd(test.aa, x, heavy).mean())
        print(
            f"test RMSD ({len(test)} frames): heavy atoms {provenance['test_rmsd_heavy_A']:.3f} Å, "
            f"all atoms {provenance['test_rmsd_all_A']:.3f} Å"
        )
    with lock_folder(args.output, "output folder (-o)"):
        card = model.save(args.output, name, provenance=provenance)
    print(f"card: {card}")
