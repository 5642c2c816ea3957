"""Helpers shared by the ase-mlmd subcommands."""

from __future__ import annotations

from typing import Any

from ase.calculators.calculator import BaseCalculator


def parse_parameters(text: str | None) -> dict[str, Any]:
    """``"a=1,b=x"`` → ``{"a": 1, "b": "x"}``, with ASE's own parser (as ``ase run -p``)."""
    if not text:
        return {}
    from ase.cli.run import str2dict

    return str2dict(text)


def make_calculator(
    name: str, parameters: dict[str, Any], device: str = "cpu", trust: bool = False
) -> BaseCalculator:
    """A calculator from a card name/path, a backend name (with ``model=`` in parameters) or
    one of ASE's own calculator names (``emt``, ``lj``, ...), which keep ASE's meaning."""
    from ase.calculators.calculator import get_calculator_class

    from ase_mlmd.calculators.registry import (
        ML_BACKENDS,
        ase_reserved_names,
        check_card_parameters,
        load_calculator,
        register_with_ase,
    )

    if name in ase_reserved_names():
        return get_calculator_class(name)(**parameters)
    if name in ML_BACKENDS:
        register_with_ase()
        return get_calculator_class(name)(device=device, trust=trust, **parameters)
    check_card_parameters(name, parameters)
    return load_calculator(name, device=device, trust=trust, **parameters)


def add_reference_arguments(parser, example_options: str = "charge=1") -> None:
    """The options ``ase-mlmd sample`` and ``ase-mlmd label`` share: the reference method,
    its options, resuming, progress and threads."""
    from ase_mlmd.data.reference import REFERENCES

    add = parser.add_argument
    add(
        "--reference",
        required=True,
        help=f"reference method: {', '.join(REFERENCES)}, or a model card name/path",
    )
    add("-p", "--parameters", default="", help=f"reference options, e.g. {example_options}")
    add("--no-resume", action="store_true", help="overwrite the output instead of resuming")
    add("--no-progress", action="store_true", help="no progress bar")
    add(
        "--threads",
        type=int,
        default=1,
        help="OpenMP/BLAS threads of the reference (default 1: fastest for small molecules; "
        "0 leaves the library default)",
    )


def read_structures(path: str, index: str, flag: str = "--index"):
    """``ase.io.read(path, index=index)`` for a command-line user: a missing or unreadable
    file, or an index outside the file / not of ASE's form (``5``, ``-1``, ``0:8``, ``::2``),
    is a :class:`~ase_mlmd.errors.StructureFileError` that names the file and ``flag``."""
    from pathlib import Path

    from ase.io import read

    from ase_mlmd.errors import StructureFileError

    if not Path(path).is_file():
        raise StructureFileError(f"structure file {path} does not exist")
    try:
        structures = read(path, index=index)
    except (StopIteration, IndexError) as err:
        raise StructureFileError(
            f"{flag} {index} selects no frame of {path} (it holds fewer frames); give an index "
            "within the file, e.g. 0, -1 or 0:8"
        ) from err
    except (TypeError, ValueError) as err:
        if _is_index(index):
            raise StructureFileError(f"cannot read {path}: {type(err).__name__}: {err}") from err
        raise StructureFileError(
            f"{flag} {index!r} is not a frame index; use ASE's form: a number (0, -1) or a "
            "slice (0:8, ::2, 10:)"
        ) from err
    if isinstance(structures, list) and not structures:
        raise StructureFileError(f"{flag} {index} selects no frame of {path}")
    return structures


def _is_index(text: str) -> bool:
    """True for ASE's index syntax: an integer or a slice of up to three integers."""
    parts = str(text).split(":")
    if len(parts) > 3:
        return False
    try:
        [int(p) for p in parts if p.strip()]
    except ValueError:
        return False
    return True
