"""``ase-mlmd cg loop``: CG MD with a CG force field → backmap every frame → all-atom φ/ψ
free-energy surface against the all-atom reference, validity and clashes (report)."""

from __future__ import annotations

import argparse

LOOP_EXAMPLES = """examples:
  ase-mlmd cg loop --cg-model models/ala2-cg/card.toml \\
      --backmapper models/ala2-backmap-6/card.toml --reference ala2_aa.extxyz -o loop_report/
  ase-mlmd cg loop --cg-model cg.toml --backmapper lin.toml --reference ala2_aa.extxyz \\
      --replicas 64 --steps 40000 --timestep 2 --save-every 100 -o loop_report/
"""


def add_arguments(parser) -> None:
    """The options of ``cg loop`` on ``parser``."""
    from ase_mlmd.backmap.loop import LoopSettings

    d = LoopSettings()
    add = parser.add_argument
    add("--cg-model", required=True, help="CG force-field card (`ase-mlmd cg fit`)")
    add(
        "--backmapper",
        required=True,
        help="backmapper card for the same mapping (`ase-mlmd backmap train`, or linear)",
    )
    add(
        "--reference",
        required=True,
        help="all-atom frames: MD start structures (mapped) and the reference FES",
    )
    add("--index", default=":", help="reference frames to use (ASE index, default ':')")
    add("--replicas", type=int, default=d.replicas, help=f"CG replicas (default {d.replicas})")
    add("--steps", type=int, default=d.steps, help=f"CG MD steps (default {d.steps})")
    add("--timestep", type=float, default=d.timestep, help=f"fs (default {d.timestep})")
    add("--save-every", type=int, default=d.save_every, help=f"default {d.save_every}")
    add("--temperature", type=float, default=d.temperature, help=f"K (default {d.temperature})")
    add("--friction", type=float, default=d.friction, help=f"1/fs (default {d.friction})")
    add(
        "--discard",
        type=float,
        default=d.discard,
        help=f"fraction of each replica dropped as equilibration (default {d.discard})",
    )
    add(
        "--max-frames",
        type=int,
        default=d.max_frames,
        help=f"backmap at most this many CG frames, evenly strided (default {d.max_frames})",
    )
    add("--seed", type=int, default=d.seed, help="MD and sampling seed (default 0)")
    add("--trust-model", action="store_true", help="allow card weights that run code")
    add("--no-restart", action="store_true", help="start the CG MD afresh")
    add("--no-progress", action="store_true", help="no progress bars")
    add("-o", "--output", required=True, help="report folder")


def add_subcommands(sub) -> None:
    """Add ``loop`` to the ``ase-mlmd cg`` subparsers."""
    p = sub.add_parser(
        "loop",
        help="CG MD -> backmap every frame -> all-atom FES vs reference",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Map the reference frames, run CG Langevin MD from some of them with the "
        "CG model (torch engine, resumable), backmap every saved frame, and compare the "
        "all-atom φ/ψ free-energy surface and PMFs with the reference; reports the fraction "
        "of valid, clash-free structures. Writes OUTPUT/report.md, summary.json, fes.png, "
        "pmf.png, backmapped.extxyz and the CG MD in OUTPUT/cg_md/.\n\n" + LOOP_EXAMPLES,
    )
    add_arguments(p)
    p.set_defaults(cg_run=run, cg_parser=p)


def run(args) -> None:
    """Run ``cg loop`` with parsed ``args``."""
    from ase_mlmd.backmap.loop import LoopSettings, run_loop
    from ase_mlmd.cli.backmap_eval import _read
    from ase_mlmd.outdir import lock_folder

    parser = args.cg_parser
    for flag in ("replicas", "steps", "save_every", "max_frames"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be ≥ 1, got {getattr(args, flag)}")
    if not args.timestep > 0 or not args.temperature > 0 or not args.friction > 0:
        parser.error("--timestep, --temperature and --friction must be positive")
    if not 0 <= args.discard < 1:
        parser.error(f"--discard must be in [0, 1), got {args.discard}")
    settings = LoopSettings(
        replicas=args.replicas,
        steps=args.steps,
        timestep=args.timestep,
        save_every=args.save_every,
        temperature=args.temperature,
        friction=args.friction,
        discard=args.discard,
        max_frames=args.max_frames,
        seed=args.seed,
    )
    reference = _read(args.reference, "--reference", args.index)
    with lock_folder(args.output, "report folder (-o)"):
        s = run_loop(
            args.cg_model,
            args.backmapper,
            reference,
            args.output,
            settings,
            trust=args.trust_model,
            progress=not args.no_progress,
            restart=not args.no_restart,
        )
    print(
        f"{s['n_backmapped']} backmapped frames: FES MAE {s['fes_mae_kT']:.3f} kT, PMF MAE φ "
        f"{s['pmf_mae_phi_kT']:.3f} / ψ {s['pmf_mae_psi_kT']:.3f} kT, valid and clash-free "
        f"{s['valid_clash_free']:.3f} (reference {s['reference_valid_clash_free']:.3f})"
    )
    print(f"report: {args.output}/report.md")
