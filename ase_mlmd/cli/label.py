"""``ase-mlmd label``: relabel existing frames with a reference method."""

from __future__ import annotations

from pathlib import Path


class CLICommand:
    """Evaluate a reference method on every frame of a file and write the labelled frames.

    The output (extended XYZ) keeps positions, cell, pbc and info of each input frame and holds
    the reference's energy (eV), forces (eV/Å) and, for periodic frames, stress; info gains
    reference and source_index. Rerunning the same command continues after the frames already
    labelled (--no-resume starts afresh).

    References: gfn2-xtb, gfn1-xtb, emt, lj, amber-implicit (-p prmtop=FILE), or a model card.

    Example:

        ase-mlmd label frames.xyz --reference gfn2-xtb -o labelled.extxyz
    """

    @staticmethod
    def add_arguments(parser) -> None:
        from ase_mlmd.cli.common import add_reference_arguments

        add = parser.add_argument
        add("frames", help="frames file, any format ase.io.read reads")
        add_reference_arguments(parser)
        add("--index", default=":", help="frames to label (default all, e.g. 0:100)")
        add("-o", "--output", default="labelled.extxyz", help="output file (extended XYZ)")

    @staticmethod
    def run(args, parser=None) -> None:
        from ase_mlmd.cli.common import parse_parameters, read_structures
        from ase_mlmd.data.reference import reference_calculator
        from ase_mlmd.data.sampling import label_frames

        try:
            calc = reference_calculator(args.reference, **parse_parameters(args.parameters))
        except TypeError as err:
            if parser is None:
                raise SystemExit(str(err)) from None
            parser.error(str(err))
        if args.index == ":":
            frames = args.frames  # label_frames reads it and names it in messages
        else:
            frames = read_structures(args.frames, args.index)
            frames = frames if isinstance(frames, list) else [frames]
        output = Path(args.output)
        labelled = label_frames(
            frames,
            calc,
            output,
            progress=not args.no_progress,
            resume=not args.no_resume,
            threads=args.threads or None,
        )
        print(f"{len(labelled)} frames of {args.frames} labelled by {calc.reference_name}")
        print(f"frames: {output}")
