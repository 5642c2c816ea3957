"""``ase-mlmd backmap pulchra``: write a PULCHRA backmapper card (Cα trace → protein heavy
atoms, optionally + hydrogens) that ``backmap run``, ``cg loop`` and ``load_backmapper`` use
like a CGVAE or linear card."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """examples:
  ase-mlmd cg map chignolin.pdb --scheme ca -o ca.json
  ase-mlmd backmap pulchra --topology chignolin.pdb --mapping ca.json -o models/chig-pulchra
  ase-mlmd backmap pulchra --topology chignolin.pdb --hydrogens amber14 -o models/chig-pulchra-h
  ase-mlmd backmap run models/chig-pulchra/card.toml cg_ca.extxyz --reconstruct -o chig_aa.extxyz
"""
#: PULCHRA steps a user may switch off: flag → ``pulchra.Pulchra`` option
SWITCHES = {
    "--no-ca-optimize": ("ca_optimize", "keep the Cα positions as given (default: PULCHRA "
                         "moves them ≤ 0.5 Å towards 3.8 Å Cα–Cα distances)"),
    "--no-optimize-xvol": ("optimize_xvol", "skip PULCHRA's clash removal"),
    "--no-check-chirality": ("check_chirality", "skip the D-amino-acid check and fix"),
}  # fmt: skip


def add_subcommands(sub) -> None:
    """Add ``pulchra`` to the ``ase-mlmd backmap`` subparsers."""
    from ase_mlmd.backmap.hydrogens import HYDROGEN_METHODS

    p = sub.add_parser(
        "pulchra",
        help="write a PULCHRA backmapper card (protein Cα trace -> heavy atoms, + H optional)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write OUTPUT/card.toml (backend pulchra, no weights): the Cα mapping, the "
        "protein's atom names and residues from --topology, the PULCHRA options and the "
        "hydrogens choice. PULCHRA restores heavy atoms only: by default `backmap run` writes "
        "the heavy atoms (arrays reference_index = their index in the full molecule); with "
        "--hydrogens amber14 OpenMM's Modeller.addHydrogens adds the molecule's own hydrogens "
        "(minimized under amber14, heavy atoms fixed) and the output is the whole molecule in "
        "its atom order.\n\n" + EXAMPLES,
    )
    add = p.add_argument
    add("--topology", required=True,
        help="PDB of the protein (atom names, residues, elements, atom order)")  # fmt: skip
    add("--mapping", default=None,
        help="Cα mapping JSON (`cg map --scheme ca`); default: the PDB's CA atoms")  # fmt: skip
    choices = "; ".join(f"{k}: {v}" for k, v in HYDROGEN_METHODS.items())
    add("--hydrogens", choices=sorted(HYDROGEN_METHODS), default="none",
        help=f"{choices} (default none)")  # fmt: skip
    for flag, (_, text) in SWITCHES.items():
        add(flag, action="store_true", help=text)
    add("-o", "--output", required=True, help="output folder (card.toml)")
    p.set_defaults(backmap_run=run, backmap_parser=p)


def run(args) -> None:
    """Run ``backmap pulchra`` with parsed ``args``."""
    from ase_mlmd.backmap.pulchra import PulchraBackmapper
    from ase_mlmd.calculators.cards import sha256_of
    from ase_mlmd.cg.mapping import CGMapping
    from ase_mlmd.errors import DataFormatError
    from ase_mlmd.outdir import lock_folder

    topology = Path(args.topology)
    if not topology.is_file():
        raise DataFormatError(f"--topology {topology} does not exist; give the protein's PDB")
    mapping = None if args.mapping is None else CGMapping.from_json(args.mapping)
    options = {
        name: False
        for flag, (name, _) in SWITCHES.items()
        if getattr(args, flag[2:].replace("-", "_"))
    }
    backmapper = PulchraBackmapper.from_pdb(topology, mapping, args.hydrogens, **options)
    name = Path(args.output).name or "pulchra"
    provenance = {"topology": str(topology.resolve()), "topology_sha256": sha256_of(topology)}
    if args.mapping is not None:
        provenance["mapping"] = str(Path(args.mapping).resolve())
    with lock_folder(args.output, "output folder (-o)"):
        card = backmapper.save(args.output, name, provenance=provenance)
    m = backmapper.topology
    n_heavy = len(backmapper.heavy)
    print(f"PULCHRA card for {backmapper.sequence} ({m.n_beads} Cα beads, {m.n_atoms} atoms)")
    if args.hydrogens == "none":
        print(
            f"note: PULCHRA restores heavy atoms only: `backmap run` writes {n_heavy} of the "
            f"{m.n_atoms} atoms (arrays reference_index); for the whole molecule write the card "
            "with --hydrogens amber14 (OpenMM Modeller.addHydrogens)"
        )
    else:
        print(f"hydrogens: {args.hydrogens} (OpenMM Modeller.addHydrogens; heavy atoms fixed)")
    print(f"card: {card}")
