"""nequip model cards and files: safetensors + card export/loading, packages, compiled models.

Safetensors weights with a card hold tensors only and load without trust. nequip packages
(``.nequip.zip``, torch.package archives) and compiled models (``.nequip.pt2`` AOTInductor,
``.nequip.pth`` TorchScript) run code from the file when loaded: they are loaded by nequip's own
functions, and only with ``trust=True``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ase.data import chemical_symbols

from ase_mlmd.errors import CardError, ModelFileError, UntrustedModelError
from ase_mlmd.fileio import atomic_output
from ase_mlmd.models.backends.nequip import (
    DTYPE_NAMES,
    HYPERPARAMETERS_ATTR,
    NequipModel,
    build_nequip_model,
    init_nequip_state,
    keep_caller_state,
    nequip_card_parameters,
)

FILE_FORMATS = {
    ".nequip.zip": "nequip-package",
    ".nequip.pt2": "nequip-compiled",
    ".nequip.pth": "nequip-compiled",
}


def export_nequip_card(
    model: torch.nn.Module,
    directory: str | os.PathLike,
    name: str,
    *,
    description: str = "",
    citation: str = "",
    provenance: Mapping[str, Any] | None = None,
    weights_file: str | None = None,
    card_file: str | None = None,
) -> Path:
    """Write the model's weights (safetensors) and a card that rebuilds it; return the card path.

    Args:
        model: a :class:`NequipModel` or a ``GraphModel`` from :func:`build_nequip_model`.
        directory: where ``NAME.toml`` and the weights go (created if needed).
        name: the card's name (and file stem).
        description, citation: card fields.
        provenance: the card's ``[provenance]`` table (data, training command, metrics, ...).
        weights_file: weights file name in ``directory`` (default ``NAME.safetensors``).
        card_file: card file name in ``directory`` (default ``NAME.toml``; e.g. ``card.toml``
            for a training run's folder, the card's name staying ``name``).
    """
    from safetensors.torch import save_file

    from ase_mlmd.calculators.cards import sha256_of, write_card

    if isinstance(model, NequipModel):
        wrapper = model
    elif hasattr(model, HYPERPARAMETERS_ATTR):
        wrapper = NequipModel(model)
    else:
        raise TypeError(
            f"cannot export a {type(model).__name__}: pass a NequipModel or a GraphModel built "
            "by build_nequip_model (a unit-converted model: export the model inside it)"
        )
    params = nequip_card_parameters(wrapper)
    if any(symbol != type_name for symbol, type_name in wrapper.species_to_type.items()):
        params["species_to_type"] = dict(wrapper.species_to_type)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / (weights_file or f"{name}.safetensors")
    state = {
        k: v.detach().to("cpu").clone().contiguous()
        for k, v in wrapper.graph_model.state_dict().items()
    }
    with atomic_output(weights) as tmp:  # a unique temporary name, then os.replace
        save_file(state, str(tmp), metadata={"format": "pt", "backend": "nequip"})
    table: dict[str, Any] = {
        "name": name,
        "description": description,
        "backend": "nequip",
        "species": [chemical_symbols[z] for z in wrapper.species],
        "cutoff": float(wrapper.cutoff),
        "dtype": DTYPE_NAMES[wrapper.dtype],
    }
    if citation:
        table["citation"] = citation
    table["units"] = {"energy": "eV", "length": "Å"}
    table["parameters"] = params
    table["weights"] = {"file": weights.name, "sha256": sha256_of(weights), "format": "safetensors"}
    if provenance:
        table["provenance"] = dict(provenance)
    return write_card(table, directory / (card_file or f"{name}.toml"))


def _check_against_card(model: NequipModel, card: Any) -> NequipModel:
    if card.species is not None:
        missing = sorted(set(card.species) - set(model.species or ()))
        if missing:
            raise CardError(
                f"{card.path}: species lists {[chemical_symbols[z] for z in missing]}, which the "
                f"nequip model has no types for (types: {model.type_names})"
            )
    if card.dtype != model.dtype:
        raise CardError(
            f"{card.path}: dtype is {DTYPE_NAMES[card.dtype]} but the model was built in "
            f"{DTYPE_NAMES[model.dtype]}; fix the card's dtype"
        )
    return model


def model_from_state_dict(card: Any, state_dict: Mapping[str, torch.Tensor]) -> NequipModel:
    """Rebuild a card's model from its ``[parameters]`` and load its weights (strictly).

    ``model_dtype`` is the card's ``dtype``; ``r_max`` defaults to the card's ``cutoff``.

    Raises:
        CardError: parameters that :func:`build_nequip_model` rejects, or weights that do not
            fit the architecture.
    """
    params = dict(card.parameters)
    species_to_type = params.pop("species_to_type", None)
    params.pop("model_dtype", None)
    params.setdefault("r_max", card.cutoff)
    if "type_names" not in params:
        raise CardError(f"{card.path}: [parameters] needs type_names (the nequip type names)")
    try:
        graph = build_nequip_model(model_dtype=DTYPE_NAMES[card.dtype], **params)
    except (TypeError, ValueError, AssertionError, KeyError) as err:
        raise CardError(f"{card.path}: bad [parameters] for nequip: {err}") from None
    try:
        graph.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as err:
        raise CardError(
            f"{card.path}: the weights do not fit the architecture in [parameters]: {err}"
        ) from None
    try:
        model = NequipModel(graph, cutoff=card.cutoff, species_to_type=species_to_type)
    except ValueError as err:
        raise CardError(f"{card.path}: {err}") from None
    return _check_against_card(model, card)


def _format_of(path: Path) -> str:
    for suffix, fmt in FILE_FORMATS.items():
        if path.name.endswith(suffix):
            return fmt
    raise ModelFileError(
        f"{path}: not a nequip model file; expected a package (.nequip.zip, from "
        "nequip-package) or a compiled model (.nequip.pt2 / .nequip.pth, from nequip-compile). "
        "For a training checkpoint, run `nequip-package build` first"
    )


def _aoti_device(path: Path) -> str:
    """The device an AOTInductor file was compiled for."""
    return torch._inductor.aoti_load_package(str(path)).get_metadata()["AOTI_DEVICE_KEY"]


def _read(path: Path, fmt: str, device: str | torch.device | None) -> tuple[Any, dict | None]:
    """Load a nequip file with nequip's own functions: (model, metadata or None)."""
    init_nequip_state()
    try:
        if fmt == "nequip-package":
            from nequip.model.saved_models.load_utils import load_saved_model

            # an absolute path: load_saved_model reads "nequip.net:..." names as downloads
            return load_saved_model(str(path.resolve())).eval(), None
        if fmt in ("nequip-compiled", "torchscript"):
            from nequip.model.inference_models import load_compiled_model

            if device is None:
                device = _aoti_device(path) if path.name.endswith(".pt2") else "cpu"
            with keep_caller_state():
                return load_compiled_model(str(path), device)
        if fmt == "pickle":
            return torch.load(path, map_location="cpu", weights_only=False), None
    except Exception as err:
        raise ModelFileError(
            f"nequip could not load {path} as {fmt}: {type(err).__name__}: {err}"
        ) from err
    raise ModelFileError(f"{path}: format {fmt!r} is not a nequip model format")


def _load(path: Path, fmt: str, device: str | torch.device | None, **kw: Any) -> NequipModel:
    model, metadata = _read(path, fmt, device)
    if not isinstance(model, torch.nn.Module):
        raise ModelFileError(f"{path} holds a {type(model).__name__}, not a nequip model")
    return NequipModel(model.eval(), metadata=metadata, **kw)


def model_from_file(path: str | os.PathLike, format: str, card: Any) -> NequipModel:
    """Load a card's code-executing weights (package, compiled, pickle); trust is checked by the
    caller (:func:`ase_mlmd.calculators.registry.model_from_card`)."""
    kw: dict[str, Any] = {"cutoff": card.cutoff}
    if "species_to_type" in card.parameters:
        kw["species_to_type"] = card.parameters["species_to_type"]
    try:
        model = _load(Path(path), format, None, **kw)
    except ValueError as err:
        raise CardError(f"{card.path}: {err}") from None
    return _check_against_card(model, card)


def model_from_path(
    path: str | os.PathLike, trust: bool = False, device: str | torch.device | None = None
) -> NequipModel:
    """Load a nequip package (``.nequip.zip``) or compiled model (``.nequip.pt2``/``.pth``).

    Args:
        path: the model file.
        trust: these files run code from the file when loaded; load only if you trust it.
        device: for compiled models, the device it was compiled for (default: read from the
            file); packages load on CPU and move with ``.to(device)``.

    Raises:
        ModelFileError: unknown suffix, missing or unreadable file.
        UntrustedModelError: ``trust`` is not True.
        BackendNotAvailableError: nequip is not installed.
    """
    from ase_mlmd.calculators.cards import CODE_FORMATS

    path = Path(path)
    fmt = _format_of(path)
    if not path.is_file():
        raise ModelFileError(f"nequip model file {path} does not exist")
    if not trust:
        raise UntrustedModelError(
            f"refusing to load {path}: {CODE_FORMATS[fmt]}. Load it only if you trust its "
            "author: pass trust=True (Python) or --trust-model / -p trust=True (command line)"
        )
    return _load(path, fmt, device)
