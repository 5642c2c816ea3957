"""``ase-mlmd``: ASE's command-line tool with this package's calculators and commands.

Built on ``ase.cli.main.main`` (as GPAW does): ``ase-mlmd run`` *is* ASE's ``run`` command, with
every model card and backend registered as an ASE calculator first; ASE's own names (``emt``,
``lj``, ...) keep their meaning.
"""

from __future__ import annotations

import sys

COMMANDS = [
    ("run", "ase.cli.run"),
    ("md", "ase_mlmd.cli.md"),
    ("calculators", "ase_mlmd.cli.calculators"),
    ("demo", "ase_mlmd.cli.demo"),
    ("bench", "ase_mlmd.cli.bench"),
    ("train", "ase_mlmd.cli.train"),
    ("sample", "ase_mlmd.cli.sample"),
    ("label", "ase_mlmd.cli.label"),
    ("diffsim", "ase_mlmd.cli.diffsim"),
    ("info", "ase.cli.info"),
    ("convert", "ase.cli.convert"),
    ("build", "ase.cli.build"),
    ("db", "ase.cli.db"),
]


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``ase-mlmd`` console script."""
    from ase.cli.main import main as ase_main

    from ase_mlmd import __version__, register_with_ase

    register_with_ase()
    ase_main(
        prog="ase-mlmd",
        description="ML force fields in ASE: run, md, train, bench, sample, label, demo.",
        version=__version__,
        commands=COMMANDS,
        hook=_register_card_paths,
        args=args,
    )


def _register_card_paths(parser, args: list[str] | None):
    """Parse the arguments; a card *path* given to ``run`` becomes a calculator name too
    (``ase-mlmd run models/x/card.toml in.xyz``), so ASE's run command can look it up."""
    from ase_mlmd.calculators.registry import register_card_path

    parsed = parser.parse_args(args)
    if getattr(parsed, "command", None) == "run" and parsed.calculator.endswith(".toml"):
        register_card_path(parsed.calculator)
    return parsed


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
