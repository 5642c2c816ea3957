"""Names → calculators: model cards on the search path, backends by name, ASE registration.

Cards are searched in the directories of the ``ASE_MLMD_CARD_PATH`` environment variable
(``os.pathsep``-separated), then in the project's ``calculators/`` directory. A name is never
allowed to shadow one of ASE's own calculator names (``emt``, ``lj``, ``morse``, ...).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ase_mlmd.calculators.cards import (
    ENERGY_UNITS,
    LENGTH_UNITS,
    ModelCard,
    load_state_dict,
    read_card,
    require_trust,
    verify_weights,
)
from ase_mlmd.calculators.ml_calculator import MLCalculator
from ase_mlmd.errors import CardError, UnknownCalculatorError, UnknownParameterError
from ase_mlmd.models.cg_model import CG_BACKEND, cg_model_from_card
from ase_mlmd.models.interface import EnergyModel
from ase_mlmd.models.neural_pair import NeuralPair
from ase_mlmd.models.pair import LennardJones, Morse, SoftSphere, Yukawa
from ase_mlmd.models.species_pair import SpeciesPairPotential
from ase_mlmd.models.spline_pair import SplinePair
from ase_mlmd.models.units import UnitConvertedModel

BUILTIN_CARD_DIR = Path(__file__).resolve().parents[2] / "calculators"
PAIR_BACKENDS = {
    "lennard-jones": LennardJones,
    "morse": Morse,
    "yukawa": Yukawa,
    "soft-sphere": SoftSphere,
    # learned pair potentials: hyperparameters in [parameters], tensors in safetensors weights
    "neural-pair": NeuralPair,
    "spline-pair": SplinePair,
}
ML_BACKENDS = ("nequip", "schnetpack")
#: one pair potential per species pair: [parameters.pairs."A-B"] = {backend, parameters}
SPECIES_PAIR_BACKEND = "species-pair"


def card_directories() -> list[Path]:
    """Directories searched for ``*.toml`` cards, in order of precedence."""
    extra = [Path(p) for p in os.environ.get("ASE_MLMD_CARD_PATH", "").split(os.pathsep) if p]
    return [*extra, BUILTIN_CARD_DIR]


def ase_reserved_names() -> set[str]:
    """ASE's own calculator names, which cards and backends must never shadow."""
    from ase.calculators.calculator import external_calculators
    from ase.calculators.names import names

    return set(names) - set(external_calculators)


def available_cards() -> dict[str, Path]:
    """Map card name → card path for every card on the search path (first one wins)."""
    found: dict[str, Path] = {}
    for directory in card_directories():
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def find_card(name_or_path: str | os.PathLike) -> ModelCard:
    """The card for a name on the search path or a path to a ``.toml`` file.

    Raises:
        UnknownCalculatorError: no such card; the message lists the known names.
    """
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text or Path(text).is_file():
        return read_card(text)
    cards = available_cards()
    if text in cards:
        return read_card(cards[text])
    hint = ""
    if text in ase_reserved_names():
        hint = f" {text!r} is one of ASE's own calculators: use it through ASE (ase run {text})."
    raise unknown_calculator_error(text, extra=hint)


def unknown_calculator_error(
    name: str, include_ase: bool = False, extra: str = ""
) -> UnknownCalculatorError:
    """The error for a calculator name that is neither a card, a backend nor (with
    ``include_ase``) one of ASE's calculators: it lists the known names and suggests the closest
    ones (difflib)."""
    import difflib

    cards = sorted(available_cards())
    candidates = [*cards, *ML_BACKENDS]
    ase_names = sorted(ase_reserved_names()) if include_ase else []
    close = difflib.get_close_matches(name, [*candidates, *ase_names], n=3, cutoff=0.6)
    guess = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    ase_part = f"; ASE's own calculators: {', '.join(ase_names)}" if include_ase else ""
    return UnknownCalculatorError(
        f"no calculator named {name!r}.{guess} Known cards: {', '.join(cards) or '(none)'}; "
        f"backends: {', '.join(ML_BACKENDS)} (give them a model file){ase_part}.{extra} A card "
        "of your own can be passed as a path to its .toml file or put in a directory listed in "
        "ASE_MLMD_CARD_PATH (`ase-mlmd calculators` lists them all)"
    )


def model_from_card(card: ModelCard, trust: bool = False) -> EnergyModel:
    """Build the energy model a card describes, loading its weights safely.

    Tensor-only weights (safetensors, state_dict) load without trust; formats that execute code
    raise :class:`~ase_mlmd.errors.UntrustedModelError` unless ``trust=True``.
    """
    if card.backend in PAIR_BACKENDS or card.backend == SPECIES_PAIR_BACKEND:
        try:
            model: EnergyModel = _pair_model(card.backend, dict(card.parameters), card)
        except (TypeError, ValueError, KeyError) as err:
            raise CardError(f"{card.path}: bad [parameters] for {card.backend}: {err}") from None
        if card.weights is not None:
            _load_pair_weights(model, card)
    elif card.backend in ML_BACKENDS:
        backend = _backend_module(card.backend)
        require_trust(card, trust)
        if card.weights is not None and card.weights.format not in ("safetensors", "state_dict"):
            model = backend.model_from_file(verify_weights(card), card.weights.format, card)
        else:
            model = backend.model_from_state_dict(card, load_state_dict(card))
    elif card.backend == CG_BACKEND:  # coarse-grained prior + network (safetensors only)
        model = cg_model_from_card(card, load_state_dict(card))
    else:
        raise CardError(
            f"{card.path}: unknown backend {card.backend!r}; use one of "
            f"{sorted(PAIR_BACKENDS) + [SPECIES_PAIR_BACKEND] + list(ML_BACKENDS)}"
        )
    if card.energy_unit != "eV" or LENGTH_UNITS[card.length_unit] != 1.0:
        model = UnitConvertedModel(
            model, ENERGY_UNITS[card.energy_unit], LENGTH_UNITS[card.length_unit]
        )
    model.card = card
    return model


def _pair_model(backend: str, params: dict, card: ModelCard) -> EnergyModel:
    """A pair potential (or a species-pair potential of them) from card parameters."""
    if backend != SPECIES_PAIR_BACKEND:
        if backend not in PAIR_BACKENDS:
            raise ValueError(
                f"unknown pair backend {backend!r}; use one of {sorted(PAIR_BACKENDS)}"
            )
        params.setdefault("cutoff", card.cutoff)
        species = card.species if card.backend != SPECIES_PAIR_BACKEND else None
        return PAIR_BACKENDS[backend](**params, species=species, dtype=card.dtype)
    pairs = params.pop("pairs", None)
    if not isinstance(pairs, dict) or not pairs or params:
        raise ValueError(
            'a species-pair card has only [parameters.pairs."A-B"] tables, each with backend '
            "and parameters"
        )
    built = {}
    for label, entry in pairs.items():
        if not isinstance(entry, dict) or "backend" not in entry:
            raise ValueError(f"pair {label}: needs backend = ... and [parameters]")
        built[label] = _pair_model(entry["backend"], dict(entry.get("parameters", {})), card)
    return SpeciesPairPotential(built)


def _load_pair_weights(model: EnergyModel, card: ModelCard) -> None:
    """Load a pair potential's tensors (neural pair, spline table) from the card's weights.

    Only tensor formats (safetensors, state_dict) are accepted: a pair potential never needs
    code from a file.
    """
    if card.weights.format not in ("safetensors", "state_dict"):
        raise CardError(
            f"{card.path}: a {card.backend!r} card needs safetensors or state_dict weights, not "
            f"{card.weights.format!r}"
        )
    state = load_state_dict(card)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CardError(
            f"{card.path}: weights {card.weights.file.name} do not fit the [parameters] of this "
            f"{card.backend!r} card ({err}). Export card and weights together"
        ) from None


def _backend_module(name: str):
    if name == "nequip":
        from ase_mlmd.models.backends import nequip as module
    else:
        from ase_mlmd.models.backends import schnetpack as module
    return module


def load_calculator(
    name_or_path: str | os.PathLike,
    device: str | torch.device | None = "cpu",
    trust: bool = False,
    dtype: torch.dtype | str | None = None,
) -> MLCalculator:
    """An ASE calculator from a card name (``"lj-argon"``) or a card path (``"my/model.toml"``).

    Args:
        name_or_path: card name on the search path, or path to a ``.toml`` card.
        device: "cpu", "cuda", "auto".
        trust: allow weights formats that execute code (pickles, nequip packages, ...).
        dtype: override the card's dtype.
    """
    card = find_card(name_or_path)
    calc = MLCalculator(model_from_card(card, trust=trust), device=device, dtype=dtype)
    calc.model_name = card.name
    calc.card = card
    return calc


def load_model_file(backend: str, path: str | os.PathLike, trust: bool = False) -> EnergyModel:
    """An energy model from a backend's own model file (no card), e.g. a nequip package.

    Such files execute code when loaded, so they need ``trust=True``. A ``.toml`` path is read as
    a card instead.
    """
    if str(path).endswith(".toml"):
        card = read_card(path)
        if card.backend != backend:
            raise CardError(f"{path} is a {card.backend!r} card, not {backend!r}")
        return model_from_card(card, trust=trust)
    return _backend_module(backend).model_from_path(Path(path), trust=trust)


def check_card_parameters(name: str, parameters: dict[str, Any]) -> None:
    """Raise :class:`~ase_mlmd.errors.UnknownParameterError` for parameters a card calculator
    does not take (a card's own parameters are set in the card; only ``dtype`` is left)."""
    from ase_mlmd.calculators.ml_calculator import ASE_CALCULATOR_ARGUMENTS

    unknown = sorted(set(parameters) - {"dtype", *ASE_CALCULATOR_ARGUMENTS})
    if unknown:
        raise UnknownParameterError(
            f"calculator {name!r} has no parameter {', '.join(map(repr, unknown))}; a card "
            "takes only -p dtype=float32|float64 (its own parameters are set in the card; use "
            "--device and --trust-model, or -p trust=True with `run`, for the rest)"
        )


def _card_calculator_class(name: str) -> type[MLCalculator]:
    def __init__(self, device: str = "cpu", trust: bool = False, dtype: Any = None, **kw):
        check_card_parameters(name, kw)
        calc = load_calculator(name, device=device, trust=trust, dtype=dtype)
        MLCalculator.__init__(self, calc.model, device=calc.device, **kw)
        self.model_name, self.card = name, calc.card

    class_name = f"Card_{Path(name).stem.replace('-', '_')}"
    return type(class_name, (MLCalculator,), {"__init__": __init__})


def _backend_calculator_class(backend: str) -> type[MLCalculator]:
    def __init__(
        self,
        model: str | None = None,
        device: str = "cpu",
        trust: bool = False,
        dtype: Any = None,
        **kw,
    ):
        if model is None:
            raise CardError(
                f"the {backend!r} calculator needs a model: a card (.toml) or a {backend} model "
                f"file, e.g. `ase-mlmd run {backend} in.xyz -p model=my_model.toml`"
            )
        energy_model = load_model_file(backend, model, trust=trust)
        MLCalculator.__init__(self, energy_model, device=device, dtype=dtype, **kw)
        self.model_name = backend

    return type(f"{backend.title()}Calculator", (MLCalculator,), {"__init__": __init__})


def register_card_path(path: str | os.PathLike) -> str:
    """Register the card at ``path`` with ASE under the path itself as its name; return it."""
    from ase.calculators.calculator import external_calculators, register_calculator_class

    name = str(path)
    read_card(name)  # fail early, with the card's own error, if it is not a valid card
    if name not in external_calculators:
        register_calculator_class(name, _card_calculator_class(name))
    return name


def register_with_ase() -> list[str]:
    """Register every card and backend with ASE (``get_calculator_class``); return the names.

    Idempotent. Names of ASE's own calculators are never shadowed: a card with such a name
    raises :class:`~ase_mlmd.errors.CardError`.
    """
    from ase.calculators.calculator import external_calculators, register_calculator_class

    reserved = ase_reserved_names()
    registered = []
    classes = {b: _backend_calculator_class(b) for b in ML_BACKENDS}
    for name in available_cards():
        if name in reserved:
            raise CardError(
                f"card {name!r} would shadow ASE's own {name!r} calculator; rename the card file"
            )
        classes[name] = _card_calculator_class(name)
    for name, cls in classes.items():
        if name not in external_calculators:
            register_calculator_class(name, cls)
        registered.append(name)
    return registered
