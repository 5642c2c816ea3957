"""``ase-mlmd cg map`` and ``ase-mlmd cg autograin``: build, learn and apply CG mappings.

Applying a mapping is part of ``cg map``: ``--apply TRAJ --output-cg CG.extxyz`` writes the
CG frames of a trajectory (bead positions, and forces mapped with the summed force map when
every frame has forces), whether the mapping was just built or read with ``--mapping``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_subcommands(sub) -> None:
    """Add ``map`` and ``autograin`` to the ``ase-mlmd cg`` subparsers."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "map",
        help="build a CG mapping (and apply it to a trajectory)",
        formatter_class=fmt,
        description=(
            "Build a CG mapping of the structure in FILE and write it as JSON; optionally map a "
            "trajectory with it.\n\n"
            "schemes: girvan-newman (--beads N; beads at the centre of geometry), heavy-atom "
            "(each heavy atom with its hydrogens, centre of mass), backbone (N, CA, C atoms; "
            "atom names from a PDB FILE or --topology), ca (CA atoms), com-groups:FILE / "
            "cog-groups:FILE (centre of mass / geometry of groups: one bead per line, 'TYPE i j "
            "k-l ...', 0-based atom indices), learned (Autograin with its defaults; see "
            "`ase-mlmd cg autograin` for its options).\n\n"
            "examples:\n"
            "  ase-mlmd cg map ala2.extxyz --scheme girvan-newman --beads 6 -o map.json\n"
            "  ase-mlmd cg map ala2.extxyz --scheme backbone --topology ala2.pdb -o bb.json \\\n"
            "      --apply ala2.extxyz --output-cg ala2_cg.extxyz\n"
            "  ase-mlmd cg map water_box.extxyz --scheme com-groups:water.txt --molecules auto "
            "\\\n      -o water.json --apply water_box.extxyz --output-cg water_cg.extxyz\n"
            "  ase-mlmd cg map --mapping map.json --apply traj.xtc --topology top.pdb "
            "--output-cg cg.extxyz"
        ),
    )
    p.add_argument("file", nargs="?", help="all-atom structure/trajectory to build the map from")
    p.add_argument("--scheme", help="girvan-newman, heavy-atom, backbone, ca, com-groups:FILE, "
                   "cog-groups:FILE or learned")  # fmt: skip
    p.add_argument("--beads", type=int, help="number of beads (girvan-newman, learned)")
    p.add_argument("--index", default="0", help="frame of FILE to build from (default 0)")
    p.add_argument("--topology", help="topology (PDB, prmtop) for atom names and mdtraj files")
    p.add_argument(
        "--weighting", choices=("mass", "geometry"), help="bead centre (default per scheme)"
    )
    p.add_argument(
        "--molecules",
        help="FILE is a box of identical molecules: 'auto' (found by connectivity) or their "
        "count N (stored one after the other); the scheme maps one molecule, repeated",
    )
    p.add_argument(
        "--mapping",
        help="read this mapping JSON instead of building one (with --molecules: one molecule's)",
    )
    p.add_argument("-o", "--output", help="mapping JSON to write")
    p.add_argument("--apply", metavar="TRAJ", help="trajectory to map (extxyz, traj, xtc, ...)")
    p.add_argument("--output-cg", help="CG frames to write (extended XYZ) for --apply")
    p.add_argument(
        "--no-wrap",
        action="store_true",
        help="periodic frames: keep beads at W r (continuous paths from unwrapped input) instead "
        "of shifting each CG molecule into the cell",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the learned scheme")
    p.set_defaults(cg_run=run_map)

    q = sub.add_parser(
        "autograin",
        help="learn a CG mapping (Gumbel-softmax auto-encoder + force regularizer)",
        formatter_class=fmt,
        description=(
            "Learn an N-bead mapping from all-atom frames with forces (Autograin: assignment "
            "logits sampled by Gumbel-softmax, linear decoder, loss = reconstruction MSE (Å²) + "
            "rho * mean squared mapped force ((eV/Å)²)). Frames are centred and aligned. The "
            "result is the hard assignment, beads at the centre of geometry.\n\n"
            "example:\n"
            "  ase-mlmd cg autograin ala2.extxyz --beads 6 --rho 0.1 -o map_learned.json"
        ),
    )
    q.add_argument("file", help="all-atom frames with forces (extxyz, traj, ...)")
    q.add_argument("--beads", type=int, required=True, help="number of beads N")
    q.add_argument("--rho", type=float, default=0.1, help="force-regularizer weight (default 0.1)")
    q.add_argument("--epochs", type=int, default=300, help="epochs (default 300)")
    q.add_argument("--batch-size", type=int, default=128, help="frames per step (default 128)")
    q.add_argument("--lr", type=float, default=0.02, help="Adam learning rate (default 0.02)")
    q.add_argument("--hard", action="store_true", help="straight-through hard Gumbel-softmax")
    q.add_argument("--bond-weight", type=float, default=0.0, help="bond-length term weight")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--max-time", help="wall-time limit, e.g. 90s, 10m")
    q.add_argument("--index", default=":", help="frames of FILE to use (default all)")
    q.add_argument("--topology", help="topology for mdtraj trajectory files")
    q.add_argument("--no-progress", action="store_true")
    q.add_argument("-o", "--output", required=True, help="mapping JSON to write")
    q.set_defaults(cg_run=run_autograin)


def _index(text: str):
    return int(text) if text.lstrip("-").isdigit() else text


def run_map(args) -> None:
    from ase_mlmd.cg.frames import read_trajectory
    from ase_mlmd.cg.mapping import CGMapping
    from ase_mlmd.errors import MappingError
    from ase_mlmd.outdir import lock_file, locked_outputs

    if args.apply and not args.output_cg:
        raise MappingError("--apply TRAJ needs --output-cg FILE for the CG frames")
    if args.output_cg and not args.apply:
        raise MappingError("--output-cg needs --apply TRAJ (the trajectory to map)")
    if args.mapping and args.scheme:
        raise MappingError("give either --mapping (an existing JSON) or --scheme, not both")
    if not args.mapping and not (args.scheme and args.file):
        raise MappingError("give FILE and --scheme to build a mapping, or --mapping map.json")
    if args.molecules and not (
        args.molecules == "auto" or (args.molecules.isdigit() and int(args.molecules) > 0)
    ):
        raise MappingError(f"--molecules takes 'auto' or a count ≥ 1, got {args.molecules!r}")
    if not args.mapping and not args.output and not args.apply:
        raise MappingError("nothing to write: give -o map.json and/or --apply/--output-cg")
    outputs = [Path(p) for p in (args.output, args.output_cg) if p]
    with locked_outputs(*(lock_file(p, "output file") for p in outputs)):
        if args.mapping:
            mapping = CGMapping.from_json(args.mapping)
        else:
            mapping = _build(args, read_trajectory)
            if args.output:
                mapping.to_json(args.output)
                what = "one molecule's " if args.molecules else ""
                print(f"{what}mapping ({mapping.scheme}, {mapping.n_beads} beads): {args.output}")
        if args.apply:
            _apply(mapping, args, read_trajectory)


def _build(args, read_trajectory):
    from ase_mlmd.cg.builders import build_mapping
    from ase_mlmd.cg.frames import bond_graph, connected_components, label_from_topology
    from ase_mlmd.errors import MappingError

    if args.scheme == "learned":
        from ase_mlmd.cg.autograin import AutograinConfig, autograin

        if args.beads is None:
            raise MappingError("--scheme learned needs --beads N")
        frames = read_trajectory(args.file, ":", args.topology)
        return autograin(frames, AutograinConfig(n_beads=args.beads, seed=args.seed)).mapping
    atoms = read_trajectory(args.file, _index(args.index), args.topology)[0]
    if args.topology and Path(args.topology).suffix.lower() in (".pdb", ".prmtop", ".parm7"):
        atoms = label_from_topology(args.topology, atoms)
    box = None
    if args.molecules:
        box = atoms
        if args.molecules == "auto":
            first = connected_components(len(atoms), bond_graph(atoms))[0]
        else:
            size, rest = divmod(len(atoms), int(args.molecules))
            if rest:
                raise MappingError(
                    f"--molecules {args.molecules}: {len(atoms)} atoms do not split into "
                    f"{args.molecules} equal molecules"
                )
            first = list(range(size))
        atoms = atoms[first]
        atoms.pbc = False  # one molecule, made whole below
        atoms.positions = box.positions[first[0]] + _whole_offsets(box, first)
    return build_mapping(args.scheme, atoms, args.beads, None, args.weighting)


def _whole_offsets(box, first):
    """Positions of the atoms ``first`` of ``box`` relative to the first one, made whole."""
    from ase_mlmd.cg.frames import bfs_levels, bond_graph, make_whole

    sub = box[first]
    whole = make_whole(
        sub.positions, sub.cell.array, sub.pbc, bfs_levels(len(sub), bond_graph(sub))
    )
    return whole - whole[0]


def _apply(mapping, args, read_trajectory) -> None:
    from ase.io import write

    from ase_mlmd.fileio import atomic_output

    frames = read_trajectory(args.apply, ":", args.topology)
    if args.molecules:  # the mapping is one molecule's: repeat it over the box
        mapping = mapping.replicate(frames[0] if args.molecules == "auto" else int(args.molecules))
    with_forces = all(_has_forces(f) for f in frames)
    wrap = not args.no_wrap
    cg = (
        mapping.apply(frames, wrap=wrap)
        if with_forces
        else mapping.apply_positions(frames, wrap=wrap)
    )
    with atomic_output(args.output_cg) as tmp:
        write(tmp, cg, format="extxyz")
    what = "positions and summed forces" if with_forces else "positions (frames lack forces)"
    print(f"{len(cg)} CG frames ({mapping.n_beads} beads, {what}): {args.output_cg}")


def _has_forces(atoms) -> bool:
    if "forces" in atoms.arrays:
        return True
    try:
        return atoms.calc is not None and atoms.get_forces() is not None
    except Exception:
        return False


def run_autograin(args) -> None:
    from ase_mlmd.cg.autograin import AutograinConfig, autograin
    from ase_mlmd.cg.frames import read_trajectory
    from ase_mlmd.outdir import lock_file
    from ase_mlmd.train.config import parse_duration

    config = AutograinConfig(
        n_beads=args.beads,
        rho=args.rho,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        hard=args.hard,
        bond_weight=args.bond_weight,
        seed=args.seed,
        max_time=parse_duration(args.max_time),
    )
    with lock_file(args.output, "output file (-o)"):
        frames = read_trajectory(args.file, _index(args.index), args.topology)
        result = autograin(frames, config, progress=not args.no_progress)
        result.mapping.to_json(args.output)
    last = result.history[-1]
    print(
        f"{len(frames)} frames, {len(result.history)} epochs ({result.stop_reason}), final tau "
        f"{last['tau']:.3f}; hard mapping: reconstruction RMSD {result.reconstruction_rmsd:.3f} "
        f"Å (least-squares linear decoder), force noise {result.force_noise:.4g} (eV/Å)²"
        + (f", repaired empty beads {result.repaired_beads}" if result.repaired_beads else "")
    )
    groups = " | ".join(
        f"{n}: {m.tolist()}"
        for n, m in zip(result.mapping.bead_names, result.mapping.members, strict=True)
    )
    print(f"beads {groups}")
    print(f"mapping: {args.output}")
