"""``ase-mlmd run``: ASE's own ``run`` command, with checks before it starts and a summary after.

The calculation itself is ASE's (:class:`ase.cli.run.Runner`: single point, ``-f`` relaxation,
``-s`` cell relaxation, ``-E`` equation of state, ``-o`` output); this module adds what a user
of the command line needs around it: an unknown calculator name is reported with the known
names and the closest match, a card path is registered, a missing structure file is named,
``-E`` is validated, and a one-line summary (energy, max force, stress when periodic) plus the
files written are printed unless ``-q``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from ase.cli.run import CLICommand as AseRunCommand
from ase.cli.run import Runner

from ase_mlmd.errors import StructureFileError

#: ASE's deprecated spellings of EOS names (ASE warns about them; we pass the new name)
_OLD_EOS_NAMES = {"sjeos": "sj", "antonschmidt": "anton-schmidt"}


class CLICommand:
    """Run a calculation with a model card, a backend or one of ASE's calculators.

    ASE's run command: single point, relaxation (-f), cell relaxation (-s) or equation of state
    (-E). A one-line summary (energy, max force, stress when periodic) and the files written are
    printed unless -q.

    Examples:

        ase-mlmd run lj-argon argon.xyz
        ase-mlmd run lj-argon cluster.xyz -f 0.01 -o relaxed.xyz
        ase-mlmd run my/card.toml crystal.cif -E 7,3.0
    """

    @staticmethod
    def add_arguments(parser) -> None:
        parser.add_argument(
            "calculator",
            help="model card name (see `ase-mlmd calculators`), path to a card .toml, a "
            "backend (nequip, schnetpack; with -p model=FILE) or one of ASE's calculators "
            "(emt, lj, ...)",
        )
        AseRunCommand.add_more_arguments(parser)
        parser.set_defaults(eos_type="sj")
        parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")

    @staticmethod
    def run(args, parser) -> None:
        check_calculator_name(args.calculator)
        if args.name != "-" and not Path(args.name).is_file():
            raise StructureFileError(
                f"structure file {args.name} does not exist; give the path of a file ASE can "
                "read (xyz, extxyz, cif, traj, POSCAR, ...)"
            )
        if args.equation_of_state:
            _check_eos(args, parser)
        _check_relaxation_and_properties(args, parser)
        runner = SummaryRunner()
        runner.parse(args)
        runner.run()


def check_calculator_name(name: str) -> None:
    """Register a card path as a calculator; raise ``UnknownCalculatorError`` (with the known
    names and a did-you-mean) for a name ASE's ``get_calculator_class`` would not find."""
    from ase.calculators.calculator import external_calculators

    from ase_mlmd.calculators.registry import (
        ase_reserved_names,
        register_card_path,
        register_with_ase,
        unknown_calculator_error,
    )

    if name.endswith(".toml") or os.sep in name:
        register_card_path(name)
        return
    register_with_ase()
    if name not in ase_reserved_names() and name not in external_calculators:
        raise unknown_calculator_error(name, include_ase=True)


def _check_eos(args, parser) -> None:
    from ase.eos import eos_names

    args.eos_type = _OLD_EOS_NAMES.get(args.eos_type, args.eos_type)
    if args.eos_type not in eos_names:
        parser.error(
            f"--eos-type {args.eos_type!r} is not an equation of state ASE knows; use one of "
            f"{', '.join(eos_names)}"
        )
    try:
        count, percent = args.equation_of_state.split(",")
        count, percent = int(count), float(percent)
    except ValueError:
        parser.error(
            f"-E/--equation-of-state takes POINTS,PERCENT (e.g. -E 5,2.0 for 5 lattice "
            f"constants within ±2 %), got {args.equation_of_state!r}"
        )
    if count < 4 or not 0 < percent < 50:
        parser.error(
            f"-E/--equation-of-state {args.equation_of_state}: needs at least 4 points and a "
            "strain range 0 < PERCENT < 50, e.g. -E 5,2.0"
        )


def _check_relaxation_and_properties(args, parser) -> None:
    """ASE's runner tests ``-f``/``-s`` for truth (``-f 0`` silently does a single point and a
    negative value never converges) and indexes ``--properties`` letters unchecked."""
    for flag, value in (
        ("-f/--maximum-force", args.maximum_force),
        ("-s/--maximum-stress", args.maximum_stress),
    ):
        if value is not None and not value > 0:
            parser.error(
                f"{flag} is the convergence threshold of the relaxation (eV/Å, eV/Å³) and must "
                f"be positive, got {value}; e.g. -f 0.05"
            )
    unknown = sorted(set(args.properties or "") - set("efsdMm"))
    if unknown:
        parser.error(
            f"--properties {args.properties!r}: unknown letters {''.join(unknown)}; use any of "
            "e (energy), f (forces), s (stress), d (dipole), M (magnetic moment), m (magmoms)"
        )


class SummaryRunner(Runner):
    """ASE's runner, reporting the results and the files it wrote."""

    def run(self) -> None:
        args = self.args
        name = "stdin" if args.name == "-" else args.name
        planned = []
        if args.maximum_force or args.maximum_stress:
            planned += [self.get_filename(name, "traj"), self.get_filename(name, "log")]
        elif args.equation_of_state:
            planned.append(self.get_filename(name, "traj"))
        existed = {path: Path(path).is_file() for path in [*planned, args.output or ""] if path}
        super().run()
        if args.quiet:
            return
        print(summary_line(name, self.atoms))
        for path in planned:
            if path.endswith(".log"):
                how = "appended to the existing log" if existed[path] else "optimizer log"
            else:
                how = "trajectory (overwritten)" if existed[path] else "trajectory"
            print(f"  {how}: {path}")
        if args.output:
            how = "appended to" if existed[args.output] else "written to"
            print(f"  final structure {how}: {args.output}")

    def build(self, name: str):
        """ASE's reading of the structure, with a file ASE cannot parse named as such."""
        try:
            atoms = super().build(name)
        except Exception as err:  # ASE raises XYZError, UnknownFileTypeError, ValueError, ...
            raise StructureFileError(
                f"cannot read a structure from {name} ({type(err).__name__}: {err}); check the "
                "file, and that its extension names its format (.xyz, .extxyz, .cif, .traj, "
                "POSCAR, ...)"
            ) from err
        if self.args.maximum_stress and not atoms.pbc.all():
            raise StructureFileError(
                f"-s/--maximum-stress relaxes the cell, but {name} is not periodic (pbc="
                f"{atoms.pbc.tolist()}); relax the atoms only with -f/--maximum-force"
            )
        return atoms

    def calculate_once(self, atoms) -> None:
        super().calculate_once(atoms)
        self.atoms = atoms


def summary_line(name: str, atoms) -> str:
    """One line of results: energy (eV), max |force| (eV/Å), stress (Voigt, eV/Å³, periodic
    systems only), from the calculator's stored results (nothing is recomputed)."""
    results = atoms.calc.results if atoms.calc is not None else {}
    parts = [f"{name} ({atoms.get_chemical_formula()})"]
    if "energy" in results:
        parts.append(f"energy {results['energy']:.6f} eV")
    if "forces" in results:
        fmax = float(np.linalg.norm(results["forces"], axis=1).max())
        parts.append(f"max force {fmax:.4g} eV/Å")
    if "stress" in results and atoms.pbc.all():
        voigt = " ".join(f"{s:.4g}" for s in np.asarray(results["stress"]).ravel())
        parts.append(f"stress [{voigt}] eV/Å³ (xx yy zz yz xz xy)")
    return ": ".join(parts[:1]) + ": " + ", ".join(parts[1:])
