"""Reference calculators by name: the methods that label frames for training and benchmarks.

Built-in references (no download; see :data:`REFERENCES`):

* ``gfn2-xtb`` / ``gfn1-xtb`` — tight binding through tblite (``tblite.ase.TBLite``), elements
  H–Rn (Z ≤ 86). Options are TBLite's keywords: ``charge`` (e), ``multiplicity`` (2S + 1),
  ``accuracy``, ``electronic_temperature`` (K), ``solvation``, ... (printing is off unless
  ``verbosity`` is given). ``accuracy`` defaults to :data:`XTB_ACCURACY` = 0.01 instead of
  tblite's 1.0: the SCF converges 100× tighter, so that forces do not depend on the start guess
  (during MD tblite restarts from the previous step's density): with 1.0 the same positions give
  forces differing by up to ~3e-4 eV/Å, with 0.01 by ~3e-6 eV/Å, at the same cost (~2 ms per
  ethanol call on one thread).
* ``emt`` — ASE's effective-medium theory: Al, Cu, Ag, Au, Ni, Pd, Pt (and ASE's rough H, C, N,
  O parameters, meant for tests only). Option: ``asap_cutoff``.
* ``lj`` — ASE's ``LennardJones``, element-agnostic. Options and ASE's defaults: ``sigma`` = 1 Å,
  ``epsilon`` = 1 eV (reduced LJ units), ``rc`` = 3 σ (energy shifted to 0 at rc),
  ``smooth`` = False, ``ro`` = 0.66 rc (start of the smooth cutoff when ``smooth=True``).
  Argon: ``sigma=3.40, epsilon=0.0104, rc=8.5``.
* ``amber-implicit`` — an AMBER topology in OBC2 implicit solvent through OpenMM
  (:class:`~ase_mlmd.data.openmm_reference.OpenMMCalculator`); option ``prmtop=FILE``
  (required), ``implicit_solvent``, ``platform``.
* ``tip3p-water`` — a periodic box of rigid TIP3P water with PME through OpenMM
  (:class:`~ase_mlmd.data.openmm_water.TIP3PWaterCalculator`); options ``cutoff`` (Å, default
  9), ``platform``, ``ewald_tolerance``, ``threads``.

Any other name is looked up as a model card (:func:`ase_mlmd.calculators.registry.
load_calculator`, options ``device``, ``trust``, ``dtype``).

Every calculator returned carries ``reference_name``: the name plus its options (``"gfn2-xtb"``,
``"lj(epsilon=0.0104, rc=8.5, sigma=3.4)"``), which labelled frames store as ``info["reference"]``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.data import chemical_symbols

from ase_mlmd.errors import UnknownCalculatorError, UnsupportedSpeciesError

#: built-in reference names → what they are
REFERENCES: dict[str, str] = {
    "gfn2-xtb": "GFN2-xTB tight binding (tblite), H-Rn; molecules and materials",
    "gfn1-xtb": "GFN1-xTB tight binding (tblite), H-Rn",
    "emt": "ASE's effective-medium theory: Al Cu Ag Au Ni Pd Pt (H C N O for tests only)",
    "lj": "ASE's Lennard-Jones (options sigma [1 Å], epsilon [1 eV], rc [3 sigma])",
    "amber-implicit": "AMBER topology in OBC2 implicit solvent via OpenMM (option prmtop=FILE)",
    "tip3p-water": "rigid TIP3P water box with PME via OpenMM (options cutoff [9 Å], platform)",
}

#: elements tblite's xTB methods parametrize (H..Rn)
XTB_NUMBERS = frozenset(range(1, 87))

#: tblite SCF accuracy of the xTB references (tblite's default: 1.0; smaller is tighter)
XTB_ACCURACY = 0.01

#: options left out of ``reference_name`` because they do not change the labels
_NAME_NEUTRAL_OPTIONS = {"device", "verbosity", "platform", "trust", "threads"}


def reference_name(name: str, options: dict[str, Any]) -> str:
    """The label stored with frames: ``name`` or ``name(key=value, ...)`` (sorted keys; paths
    by their file name; options that do not change the numbers are left out)."""
    parts = []
    for key in sorted(options):
        if key in _NAME_NEUTRAL_OPTIONS:
            continue
        value = options[key]
        if isinstance(value, os.PathLike) or key == "prmtop":
            value = os.path.basename(os.fspath(value))
        parts.append(f"{key}={value}")
    return f"{name}({', '.join(parts)})" if parts else name


def _check_options(name: str, options: dict[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"reference {name!r} has no option(s) {unknown}; its options are {sorted(allowed)}"
        )


def reference_calculator(name: str, **options: Any) -> BaseCalculator:
    """An ASE calculator for a reference method named ``name`` (see the module docstring).

    Args:
        name: a key of :data:`REFERENCES` (case-insensitive) or a model card name/path.
        **options: the method's options (e.g. ``charge=1`` for xTB, ``sigma=3.4`` for LJ,
            ``prmtop="x.prmtop"`` for amber-implicit).

    Raises:
        UnknownCalculatorError: neither a built-in reference nor a card; lists both.
        TypeError: an option the method does not have.
    """
    key = name.lower()
    if key in ("gfn2-xtb", "gfn1-xtb"):
        from tblite.ase import TBLite

        _check_options(name, options, set(TBLite.default_parameters) - {"method"})
        method = "GFN2-xTB" if key == "gfn2-xtb" else "GFN1-xTB"
        calc = TBLite(method=method, **{"verbosity": 0, "accuracy": XTB_ACCURACY, **options})
    elif key == "emt":
        from ase.calculators.emt import EMT

        _check_options(name, options, EMT.default_parameters)
        calc = EMT(**options)
    elif key == "lj":
        from ase.calculators.lj import LennardJones

        _check_options(name, options, LennardJones.default_parameters)
        calc = LennardJones(**options)
    elif key == "amber-implicit":
        from ase_mlmd.data.openmm_reference import OpenMMCalculator

        _check_options(name, options, {"prmtop", "implicit_solvent", "platform"})
        if "prmtop" not in options:
            raise TypeError(
                "reference 'amber-implicit' needs its topology: prmtop=PATH.prmtop "
                "(CLI: -p prmtop=PATH.prmtop)"
            )
        calc = OpenMMCalculator(**options)
    elif key == "tip3p-water":
        from ase_mlmd.data.openmm_water import TIP3PWaterCalculator

        _check_options(name, options, {"cutoff", "platform", "ewald_tolerance", "threads"})
        calc = TIP3PWaterCalculator(**options)
    else:
        from ase_mlmd.calculators.registry import load_calculator

        try:
            calc = load_calculator(name, **options)
        except UnknownCalculatorError as err:
            raise UnknownCalculatorError(
                f"unknown reference {name!r}. Built-in references: {', '.join(REFERENCES)}; "
                f"or a model card: {err}"
            ) from None
        calc.reference_name = reference_name(name, options)
        return calc
    calc.reference_name = reference_name(key, options)
    return calc


def supported_numbers(calc: BaseCalculator) -> frozenset[int] | None:
    """Atomic numbers ``calc`` can evaluate, or None when any element goes (LJ, unknown
    calculators) or when the check is done otherwise (see :func:`check_species`)."""
    from ase.calculators.emt import EMT
    from ase.calculators.emt import parameters as emt_parameters

    if isinstance(calc, EMT):
        return frozenset(chemical_symbols.index(s) for s in emt_parameters)
    if type(calc).__module__.startswith("tblite"):
        return XTB_NUMBERS
    return None


def check_species(calc: BaseCalculator, atoms: Atoms, where: str = "the structure") -> None:
    """Raise before any calculation if ``calc`` cannot evaluate the elements of ``atoms``.

    Covers EMT and xTB (fixed element sets), the OpenMM calculator (the topology's atoms in
    order) and card calculators (the card's species).

    Raises:
        UnsupportedSpeciesError: with the offending and the supported elements.
        InvalidStructureError: an OpenMM topology with another number of atoms.
    """
    check_atoms = getattr(calc, "check_atoms", None)
    if callable(check_atoms):
        check_atoms(atoms)
        return
    model = getattr(calc, "model", None)
    if model is not None and callable(getattr(model, "check_species", None)):
        model.check_species(atoms.numbers)
        return
    allowed = supported_numbers(calc)
    if allowed is None:
        return
    unknown = sorted({int(z) for z in atoms.numbers} - allowed)
    if unknown:
        name = getattr(calc, "reference_name", type(calc).__name__)
        known = " ".join(chemical_symbols[z] for z in sorted(allowed))
        if len(allowed) > 20:
            known = f"{chemical_symbols[min(allowed)]}-{chemical_symbols[max(allowed)]}"
        raise UnsupportedSpeciesError(
            f"{where} contains {', '.join(chemical_symbols[z] for z in unknown)}, which the "
            f"reference {name} cannot handle (it has {known}); choose another reference "
            "(e.g. gfn2-xtb for molecules, emt for the fcc metals)"
        )
