"""SchNetPack model cards and files: safetensors + card export/loading, pickled models.

Safetensors weights with a card hold tensors only and load without trust. Pickled schnetpack
models (``torch.save`` of a whole module, e.g. spktrain's ``best_model``) can run code when
unpickled: they load only with ``trust=True``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from ase.data import chemical_symbols
from ase.symbols import symbols2numbers

from ase_mlmd.errors import CardError, ModelFileError, UntrustedModelError
from ase_mlmd.fileio import atomic_output
from ase_mlmd.models.backends.schnetpack import (
    PICKLE_RISK,
    SCHNETPACK_CITATION,
    SchNetPackModel,
    _model_cutoff,
    build_schnet_model,
    import_schnetpack,
)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    inner = model
    while hasattr(inner, "inner"):  # UnitConvertedModel
        inner = inner.inner
    return inner.nnp if isinstance(inner, SchNetPackModel) else inner


def export_schnetpack_card(
    model: torch.nn.Module,
    directory: str | os.PathLike,
    name: str,
    species: Iterable[int | str] | None,
    *,
    parameters: dict[str, Any] | None = None,
    description: str = "",
    citation: str = SCHNETPACK_CITATION,
    energy_unit: str = "eV",
    length_unit: str = "Å",
    provenance: dict[str, Any] | None = None,
    weights_file: str | None = None,
    card_file: str | None = None,
) -> Path:
    """Write ``model``'s weights (safetensors) and a model card; return the card's path.

    Args:
        model: a schnetpack NeuralNetworkPotential (or a :class:`SchNetPackModel` around one)
            whose architecture :func:`build_schnet_model` can rebuild.
        directory: where ``{name}.toml`` and the weights go (created if needed).
        name: card name (the file stem; what ``load_calculator(name)`` finds).
        species: elements the model was trained on (symbols or atomic numbers); None = any.
        parameters: architecture hyperparameters (default ``model.ase_mlmd_hyperparameters``).
        description, citation, provenance: written to the card.
        energy_unit, length_unit: units the model works in (see ``ase_mlmd.calculators.cards``).
        weights_file: weights file name (default ``{name}.safetensors``).
        card_file: card file name in ``directory`` (default ``{name}.toml``; e.g. ``card.toml``
            for a training run's folder, the card's name staying ``name``).

    Both files are written atomically (temporary name, then ``os.replace``), weights first.
    """
    from safetensors.torch import save_file

    from ase_mlmd.calculators.cards import sha256_of, write_card

    nnp = _unwrap(model)
    if parameters is None:
        parameters = getattr(nnp, "ase_mlmd_hyperparameters", None)
        if parameters is None:
            raise ValueError(
                "this schnetpack model records no hyperparameters; build it with "
                "build_schnet_model(...) or pass parameters= (the arguments that rebuild it)"
            )
    parameters = {k: v for k, v in parameters.items() if v is not None}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_path = directory / (weights_file or f"{name}.safetensors")
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in nnp.state_dict().items()}
    with atomic_output(weights_path) as tmp:  # a unique temporary name, then os.replace
        save_file(tensors, str(tmp))
    dtype = next(p.dtype for p in nnp.parameters() if p.is_floating_point())
    numbers = None if species is None else sorted(set(symbols2numbers(list(species))))
    table = {
        "name": name,
        "description": description or f"schnetpack {parameters.get('representation', '')} model",
        "backend": "schnetpack",
        "species": ["*"] if numbers is None else [chemical_symbols[z] for z in numbers],
        "cutoff": float(parameters.get("cutoff", _model_cutoff(nnp))),
        "dtype": str(dtype).removeprefix("torch."),
        "citation": citation,
        "units": {"energy": energy_unit, "length": length_unit},
        "parameters": parameters,
        "weights": {
            "file": weights_path.name,
            "sha256": sha256_of(weights_path),
            "format": "safetensors",
        },
        "provenance": dict(provenance or {}),
    }
    return write_card(table, directory / (card_file or f"{name}.toml"))


# ----------------------------------------------------------------------------- loading
def model_from_state_dict(card: Any, state_dict: dict[str, torch.Tensor]) -> SchNetPackModel:
    """Rebuild the architecture from ``card.parameters`` and load ``state_dict`` strictly.

    Raises:
        CardError: parameters that :func:`build_schnet_model` does not accept, or weights that
            do not fit the architecture.
    """
    params = dict(card.parameters)
    params.setdefault("cutoff", card.cutoff)
    params.pop("dtype", None)
    try:
        nnp = build_schnet_model(**params, dtype=card.dtype)
    except (TypeError, ValueError) as err:
        raise CardError(f"{card.path}: bad [parameters] for schnetpack: {err}") from None
    try:
        nnp.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise CardError(
            f"{card.path}: the weights do not fit the architecture in [parameters] ({err}). "
            "Check that the card's parameters are those the model was built with"
        ) from None
    return SchNetPackModel(
        nnp, species=card.species, cutoff=card.cutoff, energy_key=params.get("energy_key")
    )


def load_pickled_model(path: str | os.PathLike, trust: bool = False) -> torch.nn.Module:
    """Unpickle a schnetpack model file (``torch.save`` of the whole module) — code-executing.

    This is the one place that calls ``torch.load(..., weights_only=False)`` (through
    schnetpack's ``load_model``, which also upgrades models saved by older schnetpack), and only
    with ``trust=True``.

    Raises:
        UntrustedModelError: ``trust`` is False.
        ModelFileError: missing or unreadable file, or not a schnetpack model.
    """
    path = Path(path)
    if path.is_dir() and (path / "best_model").is_file():
        path = path / "best_model"
    if not trust:
        raise UntrustedModelError(
            f"refusing to load {path}: {PICKLE_RISK}. Load it only if you trust its author: "
            "pass trust=True (Python) or --trust-model / -p trust=True (command line). Safer: "
            "export it once with ase_mlmd.models.backends.schnetpack.export_schnetpack_card "
            "(safetensors weights + card)"
        )
    if not path.is_file():
        raise ModelFileError(f"schnetpack model file {path} does not exist")
    import_schnetpack()
    from schnetpack.utils.compatibility import load_model

    try:
        model = load_model(str(path), device="cpu", weights_only=False)
    except Exception as err:  # pickle raises many types for foreign or corrupt files
        raise ModelFileError(
            f"could not read {path} as a pickled schnetpack model: {type(err).__name__}: {err}"
        ) from None
    model = getattr(model, "model", model)  # an AtomisticTask holds the model
    if not hasattr(model, "representation"):
        raise ModelFileError(f"{path} holds a {type(model).__name__}, not a schnetpack model")
    return model


def model_from_file(path: str | os.PathLike, format: str, card: Any) -> SchNetPackModel:
    """The model a card's code-executing weights file holds.

    The caller must have checked trust: the registry calls this only after ``require_trust``.
    """
    if format != "pickle":
        raise CardError(
            f"{card.path}: the schnetpack backend reads weights as safetensors, state_dict or "
            f"pickle, not {format!r}"
        )
    nnp = load_pickled_model(path, trust=True)
    return SchNetPackModel(
        nnp,
        species=card.species,
        cutoff=card.cutoff,
        energy_key=card.parameters.get("energy_key"),
        dtype=card.dtype,
    )


def model_from_path(path: str | os.PathLike, trust: bool = False) -> SchNetPackModel:
    """A bare schnetpack model file (``best_model`` or a run directory holding one), no card.

    The file records neither units nor elements: energies are taken as eV and lengths as Å (a
    warning says so) and any element the embedding covers is accepted; write a card to declare
    them.

    Raises:
        UntrustedModelError: without ``trust=True`` (unpickling can run code).
    """
    nnp = load_pickled_model(path, trust=trust)
    warnings.warn(
        f"{path}: schnetpack model files record no units; using eV and Å. If the model was "
        "trained in other units (e.g. kcal/mol), load it through a card with a [units] table",
        UserWarning,
        stacklevel=2,
    )
    return SchNetPackModel(nnp)
