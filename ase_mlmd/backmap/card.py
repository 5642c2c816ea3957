"""Backmapper cards: TOML + safetensors + sha256 (:mod:`ase_mlmd.calculators.cards`), loaded
without trust.

A backmapper card stores, besides the weights, the CG mapping in its JSON form
(``[parameters.mapping]``: the molecule's elements in atom order, its bond graph, the beads and
their atoms and weights), so that it rebuilds the model alone and refuses CG frames or
molecules it was not made for. ``backend`` selects the loader (:data:`LOADERS`): ``cgvae``
here, ``linear-backmap`` for the linear baseline (:mod:`ase_mlmd.backmap.linear`), ``pulchra``
for PULCHRA (:mod:`ase_mlmd.backmap.pulchra`; a card without weights).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from ase_mlmd.backmap.base import Backmapper
from ase_mlmd.calculators.cards import ModelCard, load_state_dict, read_card, sha256_of, write_card
from ase_mlmd.cg.mapping import CGMapping
from ase_mlmd.errors import BackmapError, CardError

CGVAE_BACKEND = "cgvae"
CGVAE_CITATION = (
    "W. Wang, M. Xu, C. Cai, B. K. Miller, T. Smidt, Y. Wang, J. Tang, R. Gómez-Bombarelli, "
    "Generative coarse-graining of molecular conformations, ICML 2022"
)
#: backend → "module:function" that turns a read card into a Backmapper
LOADERS = {
    CGVAE_BACKEND: "ase_mlmd.backmap.card:cgvae_from_card",
    "linear-backmap": "ase_mlmd.backmap.linear:linear_from_card",
    "pulchra": "ase_mlmd.backmap.pulchra:pulchra_from_card",
}


def mapping_from_card(card: ModelCard) -> CGMapping:
    """The CG mapping stored in a backmapper card.

    Raises:
        CardError: the card has no (valid) ``[parameters.mapping]``.
    """
    data = card.parameters.get("mapping")
    if not isinstance(data, dict):
        raise CardError(f"{card.path}: a backmapper card needs [parameters.mapping] (the mapping)")
    return CGMapping.from_dict(data, f"the mapping of card {card.path}")


def molecule_species(mapping: CGMapping) -> list[str]:
    """Sorted element symbols of the mapping's molecule (a card's ``species``)."""
    return sorted({chemical_symbols[z] for z in mapping.numbers})


def write_backmapper_card(
    directory: str | os.PathLike,
    name: str,
    tensors: dict[str, torch.Tensor] | None,
    mapping: CGMapping,
    *,
    backend: str,
    description: str,
    citation: str,
    dtype: str,
    cutoff: float = 0.0,
    parameters: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    card_file: str = "card.toml",
) -> Path:
    """Write ``NAME.safetensors`` then the card (both atomically) of any backmapper backend:
    the weights, the mapping (``[parameters.mapping]``) and ``parameters``; return the card's
    path. ``tensors=None``: a backend without weights (no ``[weights]`` table)."""
    from safetensors.torch import save_file

    from ase_mlmd.fileio import atomic_output

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{name}.safetensors"
    if tensors is not None:
        with atomic_output(weights) as tmp:
            tensors = {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}
            save_file(tensors, str(tmp))
    table = {
        "name": name,
        "description": description,
        "backend": backend,
        "species": molecule_species(mapping),
        "cutoff": float(cutoff),
        "dtype": dtype,
        "citation": citation,
        "units": {"energy": "eV", "length": "Å"},
        "parameters": {**(parameters or {}), "mapping": mapping.to_dict()},
        "provenance": dict(provenance or {}),
    }
    if tensors is not None:
        table["weights"] = {"file": weights.name, "sha256": sha256_of(weights),
                            "format": "safetensors"}  # fmt: skip
    return write_card(table, directory / card_file)


def save_cgvae_card(
    backmapper: Any,
    directory: str | os.PathLike,
    name: str,
    *,
    description: str = "",
    provenance: dict[str, Any] | None = None,
    card_file: str = "card.toml",
) -> Path:
    """Write a CGVAE backmapper's ``NAME.safetensors`` and card; return the card's path."""
    import dataclasses

    model, mapping = backmapper.model, backmapper.mapping
    return write_backmapper_card(
        directory,
        name,
        model.state_dict(),
        mapping,
        backend=CGVAE_BACKEND,
        description=description
        or f"CGVAE backmapper: {mapping.n_beads} beads ({mapping.scheme}), {mapping.n_atoms} atoms",
        citation=CGVAE_CITATION,
        dtype="float32",
        cutoff=float(model.hyper.cutoff),
        parameters={"hyperparameters": dataclasses.asdict(model.hyper)},
        provenance=provenance,
        card_file=card_file,
    )


def cgvae_from_card(card: ModelCard) -> Backmapper:
    """A :class:`~ase_mlmd.backmap.cgvae.CGVAEBackmapper` from a read card (safe weights only).

    Raises:
        CardError: parameters or weights that do not fit each other.
    """
    from ase_mlmd.backmap.cgvae import CGVAEBackmapper, CGVAEHyper

    mapping = mapping_from_card(card)
    try:
        hyper = CGVAEHyper.from_dict(dict(card.parameters.get("hyperparameters", {})))
    except (TypeError, ValueError) as err:
        raise CardError(f"{card.path}: [parameters.hyperparameters]: {err}") from None
    backmapper = CGVAEBackmapper.new(mapping, hyper)
    state = load_state_dict(card)
    try:
        backmapper.model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v
                                          for k, v in state.items()})  # fmt: skip
    except RuntimeError as err:
        raise CardError(
            f"{card.path}: the weights do not fit the card's mapping and hyperparameters ({err})"
        ) from None
    return backmapper


def load_backmapper(card_path: str | os.PathLike) -> Backmapper:
    """Load a backmapper card of any backend in :data:`LOADERS` (no trust needed: the weights
    are safetensors).

    Raises:
        ModelFileError, ChecksumMismatchError: missing or altered files.
        CardError: not a backmapper card, or a backend this package cannot load.
    """
    card = read_card(card_path)
    target = LOADERS.get(card.backend)
    if target is None:
        raise CardError(
            f"{card.path} has backend {card.backend!r}, not a backmapper ({sorted(LOADERS)}); "
            "give a card written by `ase-mlmd backmap train`, `backmap linear` or `backmap pulchra`"
        )
    module, function = target.split(":")
    try:
        loader = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as err:
        raise CardError(f"{card.path}: backend {card.backend!r} cannot be loaded ({err})") from None
    return loader(card)


def check_same_molecule(backmapper: Backmapper, atoms: Atoms, where: str = "the structure") -> None:
    """Refuse an all-atom structure of another molecule than the backmapper's (other atom
    count or elements/order), naming both formulas.

    Raises:
        BackmapError: the structure is not the backmapper's molecule.
    """
    mapping = backmapper.topology
    mine = "".join(chemical_symbols[z] for z in mapping.numbers)
    theirs = "".join(atoms.get_chemical_symbols())
    if len(atoms) != mapping.n_atoms or not np.array_equal(atoms.numbers, mapping.numbers):
        raise BackmapError(
            f"{where} ({len(atoms)} atoms, {atoms.get_chemical_formula()}) is not the molecule "
            f"this backmapper was trained for ({mapping.n_atoms} atoms, "
            f"{Atoms(numbers=mapping.numbers).get_chemical_formula()}, atom order "
            f"{mine[:16]}{'...' if len(mine) > 16 else ''} vs {theirs[:16]}"
            f"{'...' if len(theirs) > 16 else ''}); train a backmapper for this molecule"
        )
