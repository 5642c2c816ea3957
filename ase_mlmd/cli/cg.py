"""``ase-mlmd cg``: coarse-graining — mappings, learned mappings, CG force fields, evaluation."""

from __future__ import annotations


class CLICommand:
    """Coarse-grain molecules: build a mapping, learn one (Autograin), fit a CG force field by
    force matching, and evaluate CG simulations against mapped all-atom data.

    Examples:

        ase-mlmd cg map ala2_aa.extxyz --scheme girvan-newman --beads 6 -o map.json
        ase-mlmd cg autograin ala2_aa.extxyz --beads 6 --rho 0.1 -o map_learned.json
        ase-mlmd cg fit ../shared/data/ala2_cg --units kcal/mol --model schnet
            --priors bonds,angles,dihedrals,repulsion -o models/ala2-cg
        ase-mlmd cg eval --reference ../shared/data/ala2_cg --simulated runs/ -o report/
    """

    @staticmethod
    def add_arguments(parser) -> None:
        from ase_mlmd.cli import cg_fit, cg_loop, cg_map

        sub = parser.add_subparsers(dest="action", metavar="{map,autograin,fit,eval,loop}")
        sub.required = True
        cg_map.add_subcommands(sub)
        cg_fit.add_subcommands(sub)
        cg_loop.add_subcommands(sub)

    @staticmethod
    def run(args, parser) -> None:
        args.cg_run(args)
