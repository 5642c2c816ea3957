"""``python -m ase_mlmd.lammps run in.file --trust-model`` (also under ``mpirun -np N``).

Runs a LAMMPS input through LAMMPS' Python module; its ``pair_style mliap unified FILE 0`` line
names a model exported by ``ase-mlmd export lammps``. The model file is a pickle and loading it
runs code, so ``--trust-model`` is required: use it only for files from people you trust.
"""

from __future__ import annotations

import argparse
import sys

from ase_mlmd.errors import MLMDError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ase_mlmd.lammps",
        description="Run LAMMPS inputs with models exported by `ase-mlmd export lammps`.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run a LAMMPS input (mpirun -np N python -m ase_mlmd.lammps run ... for N ranks)",
        description=(
            "Run a LAMMPS input file whose `pair_style mliap unified FILE 0` names an exported "
            "model. The model file is a pickle: loading it runs code, so --trust-model is "
            "required; only load files from people you trust."
        ),
    )
    run.add_argument("input", help="LAMMPS input file (e.g. in.water)")
    run.add_argument(
        "--trust-model",
        action="store_true",
        help="allow unpickling the model file (runs code; only for files you trust)",
    )
    run.add_argument(
        "-var",
        "--var",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="define a LAMMPS index variable (as lmp -var NAME VALUE)",
    )
    run.add_argument("--log", default="none", help="LAMMPS log file (default: none)")
    run.add_argument("--quiet", action="store_true", help="no LAMMPS screen output")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit status 2 for input errors (printed by rank 0), 0 on success."""
    from ase_mlmd.lammps.run import ensure_library_path

    args = build_parser().parse_args(argv)
    ensure_library_path()
    from mpi4py import MPI

    from ase_mlmd.lammps.run import run_input

    cmdargs = ["-log", args.log]
    for name, value in args.var:
        cmdargs += ["-var", name, value]
    if args.quiet:
        cmdargs += ["-screen", "none"]
    try:
        lmp = run_input(args.input, trust=args.trust_model, cmdargs=cmdargs)
    except (MLMDError, FileNotFoundError) as err:
        if MPI.COMM_WORLD.Get_rank() == 0:
            print(f"python -m ase_mlmd.lammps run: error: {err}", file=sys.stderr)
        return 2
    lmp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
