"""``ase-mlmd``: ASE's command-line tool with this package's calculators and commands.

Built on ``ase.cli.main.main`` (as GPAW does): ``ase-mlmd run`` is ASE's ``run`` command (with
checks and a summary around it, :mod:`ase_mlmd.cli.run`), with every model card and backend
registered as an ASE calculator first; ASE's own names (``emt``, ``lj``, ...) keep their meaning.
Every subcommand shares one error path (:func:`main`).
"""

from __future__ import annotations

import re
import sys

COMMANDS = [
    ("run", "ase_mlmd.cli.run"),
    ("md", "ase_mlmd.cli.md"),
    ("calculators", "ase_mlmd.cli.calculators"),
    ("demo", "ase_mlmd.cli.demo"),
    ("bench", "ase_mlmd.cli.bench"),
    ("train", "ase_mlmd.cli.train"),
    ("sample", "ase_mlmd.cli.sample"),
    ("label", "ase_mlmd.cli.label"),
    ("diffsim", "ase_mlmd.cli.diffsim"),
    ("cg", "ase_mlmd.cli.cg"),
    ("conformers", "ase_mlmd.cli.conformers"),
    ("export", "ase_mlmd.cli.export"),
    ("backmap", "ase_mlmd.cli.backmap"),
    ("info", "ase.cli.info"),
    ("convert", "ase.cli.convert"),
    ("build", "ase.cli.build"),
    ("db", "ase.cli.db"),
]


#: exceptions that mean "the input or the options were wrong", not "ase-mlmd has a bug": exit 2
#: (ValueError: configuration checks of the library and ASE's readers raise it for bad values)
_USAGE_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, IsADirectoryError, ValueError)

#: Python keywords in library messages → the flag a command-line user types instead
_KEYWORD_FLAGS = {
    "energy_unit": "--energy-unit",
    "length_unit": "--length-unit",
    "format": "--format",
    "restart=False": "--no-restart",
    "resume=False": "--no-resume",
    "trust=True": "--trust-model",
    "energy_weight": "--energy-weight",
}


_KEYWORD_PATTERN = re.compile(
    r"(?<![\w-])(energy_unit|length_unit|format|restart|resume|trust|energy_weight)="
    r"(\"[^\"]*\"|'[^']*'|[\w./-]*)"
)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``ase-mlmd`` console script.

    One error path for every subcommand: an error is printed as ``ase-mlmd CMD: error: ...``
    on stderr, without a traceback unless ``--debug`` (anywhere on the line) or ASE's
    ``-T/--traceback`` (before the subcommand) is given. Exit code 2 for usage and input errors
    (ase_mlmd's :class:`~ase_mlmd.errors.MLMDError` subclasses, argparse errors, missing
    files), 1 for anything unexpected, 130 on Ctrl-C.
    """
    from ase.cli.main import main as ase_main

    from ase_mlmd import __version__

    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    state: dict = {"debug": debug, "command": None, "parser": None}

    def hook(parser, hook_args):
        parser.add_argument(
            "--debug",
            action="store_true",
            help="show the full traceback of an error (may be given anywhere on the line)",
        )
        parsed = parser.parse_args(hook_args)
        state["debug"] = state["debug"] or parsed.traceback
        state["command"] = getattr(parsed, "command", None)
        state["parser"] = _subparser(parser, state["command"])
        parsed.traceback = True  # ASE re-raises; the handler below reports it once
        return parsed

    try:
        from ase_mlmd import register_with_ase

        register_with_ase()
        ase_main(
            prog="ase-mlmd",
            description="ML force fields in ASE: run, md, train, bench, sample, label, demo.",
            version=__version__,
            commands=COMMANDS,
            hook=hook,
            args=argv,
        )
    except (SystemExit, KeyboardInterrupt) as stop:
        if isinstance(stop, KeyboardInterrupt):
            print("ase-mlmd: interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        raise
    except Exception as err:
        if state["debug"]:
            raise
        raise SystemExit(_report(err, state["command"], state["parser"])) from None


def _subparser(parser, command: str | None):
    """The argparse parser of ``command`` (to map keywords to its flags), or None."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return None


def _report(err: Exception, command: str | None, subparser) -> int:
    """Print ``err`` for a command-line user on stderr; return the exit code.

    Input errors (2) print the error class and its message (which says what to do); a missing
    file prints the OS message and the path; anything else (1) adds how to get the traceback.
    """
    from ase_mlmd.errors import MLMDError

    prog = f"ase-mlmd {command}" if command else "ase-mlmd"
    message = cli_message(str(err) or type(err).__name__, subparser)
    if isinstance(err, OSError) and not isinstance(err, MLMDError) and err.filename:
        message = f"{err.strerror or err}: {err.filename}"
    elif isinstance(err, (MLMDError, *_USAGE_ERRORS)):
        message = f"{type(err).__name__}: {message}"
    else:
        print(
            f"{prog}: error: {type(err).__name__}: {message}\n"
            "(unexpected; for the full traceback run again with --debug)",
            file=sys.stderr,
        )
        return 1
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def cli_message(message: str, subparser=None) -> str:
    """Rewrite Python keyword hints (``pass energy_unit="kcal/mol"``) as the flags of the
    current subcommand (``--energy-unit kcal/mol``); hints that already name the flag, e.g.
    ``restart=False (CLI: --no-restart)``, and keywords the command has no flag for are kept."""
    flags = set(subparser._option_string_actions) if subparser is not None else set()

    def flag_for(match: re.Match) -> str:
        keyword, value = match.group(1), match.group(2)
        flag = _KEYWORD_FLAGS.get(f"{keyword}={value}") or _KEYWORD_FLAGS.get(keyword)
        following = message[match.end() :].lstrip()
        spelled_out = following.startswith(("(CLI", "(--", "(Py", "(com"))
        spelled_out = spelled_out or message[: match.start()].endswith("-p ")  # a -p value
        if flag is None or flag not in flags or spelled_out:
            return match.group(0)
        if f"{keyword}={value}" in _KEYWORD_FLAGS:
            return flag
        value = value.strip("\"'")
        return f"{flag} {value}" if value else flag

    return _KEYWORD_PATTERN.sub(flag_for, message)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
