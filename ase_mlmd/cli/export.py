"""``ase-mlmd export lammps``: a model card → a LAMMPS ML-IAP model file (+ example input)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

TRUST_NOTE = (
    "The model file is a pickle: LAMMPS (`pair_style mliap unified FILE 0`) and `python -m "
    "ase_mlmd.lammps run --trust-model` unpickle it, which runs code. Load only files you made "
    "or whose author you trust; to share a model, ship its card (TOML + safetensors) instead."
)


class CLICommand:
    """Export a model to another engine (today: LAMMPS, through ML-IAP).

    Examples:

        ase-mlmd export lammps calculators/ethanol-nequip.toml -o ethanol_mliap.pt
        ase-mlmd export lammps lj-argon --species Ar -o ar.pt --structure ar.extxyz
        mpirun -np 2 python -m ase_mlmd.lammps run in.ar --trust-model
    """

    @staticmethod
    def add_arguments(parser) -> None:
        sub = parser.add_subparsers(dest="engine", metavar="{lammps}")
        sub.required = True
        p = sub.add_parser(
            "lammps",
            help="write a LAMMPS ML-IAP model file (pair_style mliap unified FILE 0)",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            description=(
                "Export a model card (name or TOML path: pair, species-pair, NequIP, SchNet, or "
                "a network-only CG card) as a LAMMPS ML-IAP 'unified' model file. With "
                "--structure, also write data.NAME and in.NAME (an NVE run) beside it.\n\n"
                + TRUST_NOTE
                + "\n\nRun the input with `python -m ase_mlmd.lammps run in.NAME --trust-model` "
                "(under `mpirun -np N` for N ranks); it evaluates the model exactly over MPI "
                "ranks with a ghost shell of layers x cutoff.\n\n"
                "examples:\n"
                "  ase-mlmd export lammps calculators/ethanol-nequip.toml -o ethanol_mliap.pt\n"
                "  ase-mlmd export lammps lj-argon --species Ar -o ar.pt --structure ar.extxyz"
            ),
        )
        p.add_argument("card", help="model card: a name on the card path or a .toml file")
        p.add_argument("-o", "--output", required=True, help="model file to write (e.g. x.pt)")
        p.add_argument(
            "--dtype",
            choices=("float64", "float32"),
            default="float64",
            help="precision the model runs in inside LAMMPS (default float64)",
        )
        p.add_argument(
            "--species",
            nargs="+",
            help="element names for pair_coeff, in order (required for element-agnostic "
            "models such as lj-argon; default: the card's species)",
        )
        p.add_argument(
            "--n-layers", type=int, help="interaction layers, if they cannot be read from the model"
        )
        p.add_argument(
            "--trust-model",
            action="store_true",
            help="allow cards whose weights are code (pickled modules, nequip packages)",
        )
        p.add_argument("--structure", help="structure file for an example data.NAME and in.NAME")
        p.add_argument("--index", default="-1", help="frame of --structure (default -1)")
        p.add_argument("--name", help="NAME of the example files (default: structure file stem)")
        p.add_argument("--steps", type=int, default=100, help="MD steps of the example input")
        p.add_argument("--temperature", type=float, default=300.0, help="initial K (example)")
        p.add_argument("--timestep", type=float, default=0.5, help="fs (example input)")

    @staticmethod
    def run(args, parser) -> None:
        from ase_mlmd.cli.common import read_structures
        from ase_mlmd.lammps.export import prepare_mliap, save_mliap
        from ase_mlmd.lammps.inputs import write_example
        from ase_mlmd.outdir import OutputLock

        output = Path(args.output)
        structure = read_structures(args.structure, args.index) if args.structure else None
        if isinstance(structure, list):
            structure = structure[-1]
        model = prepare_mliap(
            args.card,
            dtype=args.dtype,
            species=args.species,
            n_layers=args.n_layers,
            trust=args.trust_model,
        )
        with OutputLock(output, folder=False, what="the exported model"):
            save_mliap(model, output)
            print(
                f"wrote {output}: {type(model.model).__name__}, elements "
                f"{' '.join(model.element_types)}, cutoff {model.cutoff:g} Å, "
                f"{model.n_layers} layer(s), {args.dtype}; ghost shell over MPI ranks "
                f"{model.ghost_cutoff:g} Å + skin"
            )
            if structure is not None:
                name = args.name or Path(args.structure).stem
                inp, data = write_example(
                    structure,
                    model,
                    output.name,
                    output.parent,
                    name,
                    temperature=args.temperature,
                    steps=args.steps,
                    timestep_fs=args.timestep,
                )
                print(f"wrote {data} and {inp}; run (from {output.parent}):")
                # 2 ranks split the longest side: each half must be at least the cutoff wide
                recip = structure.cell.reciprocal()  # rows b_i with a_i . b_j = delta_ij
                widths = [1 / np.linalg.norm(b) for b in recip] if structure.cell.rank == 3 else [0]
                launcher = "mpirun -np 2 " if max(widths) >= 2 * model.cutoff else ""
                print(f"  {launcher}python -m ase_mlmd.lammps run {inp.name} --trust-model")
                if not launcher:
                    print(
                        f"  (one rank: the box is narrower than 2 x the cutoff {model.cutoff:g} Å, "
                        "so it cannot be split over MPI ranks; repeat the structure for more)"
                    )
        print(TRUST_NOTE)
