"""Export any energy model of the package (or a model card) to a LAMMPS ML-IAP model file.

The file holds a pickled :class:`~ase_mlmd.lammps.model.LammpsModel` — the form LAMMPS'
``pair_style mliap unified FILE 0`` loads (``.pt``/``.pth``: ``torch.save``, LAMMPS reads it
with ``torch.load``; other names: plain ``pickle``). **Loading such a file unpickles it, which
runs arbitrary code**: LAMMPS does so without asking; :func:`load_exported` and
``python -m ase_mlmd.lammps run`` do so only with ``trust=True`` / ``--trust-model``. Share and
load these files only between people who trust each other; the card (TOML + safetensors with
sha256) stays the safe way to ship a model.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from ase_mlmd.batch import batch_from_atoms
from ase_mlmd.calculators.cards import ModelCard
from ase_mlmd.calculators.registry import find_card, model_from_card
from ase_mlmd.errors import LammpsExportError, UntrustedModelError
from ase_mlmd.fileio import atomic_write_bytes
from ase_mlmd.lammps.model import LammpsModel
from ase_mlmd.models.cg_model import CGForceField
from ase_mlmd.models.interface import EnergyModel
from ase_mlmd.models.pair import PairPotential
from ase_mlmd.models.species_pair import SpeciesPairPotential
from ase_mlmd.models.units import UnitConvertedModel

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def interaction_layers(model: EnergyModel) -> int:
    """Number of interaction (message-passing) layers: an atom's energy depends on atoms up to
    ``layers × cutoff`` away. Pair potentials: 1; NequIP: ``num_layers``; SchNet/PaiNN:
    ``n_interactions``.

    Raises:
        LammpsExportError: the model's kind is unknown (pass ``n_layers=`` explicitly).
    """
    if isinstance(model, UnitConvertedModel):
        return interaction_layers(model.inner)
    if isinstance(model, PairPotential | SpeciesPairPotential):
        return 1
    hyper = getattr(model, "hyperparameters", None)  # NequipModel
    if isinstance(hyper, dict) and "num_layers" in hyper:
        return int(hyper["num_layers"])
    nnp = getattr(model, "nnp", None)  # SchNetPackModel
    if nnp is not None:
        hyper = getattr(nnp, "ase_mlmd_hyperparameters", None) or {}
        if "n_interactions" in hyper:
            return int(hyper["n_interactions"])
        representation = getattr(nnp, "representation", None)
        if hasattr(representation, "n_interactions"):
            return int(representation.n_interactions)
        if hasattr(representation, "interactions"):
            return len(representation.interactions)
    raise LammpsExportError(
        f"cannot tell how many interaction layers a {type(model).__name__} has (an atom's "
        "energy may depend on atoms up to layers × cutoff away, which sets the ghost shell "
        "over MPI ranks); pass n_layers= to export_mliap"
    )


def _element_names(
    model: EnergyModel, species: Sequence[str] | None, bead_types: Sequence[str] | None
) -> tuple[list, list]:
    """(names, numbers) of the LAMMPS element names the model accepts (bead type names and
    pseudo numbers ``1 + index`` for a CG model, see :mod:`ase_mlmd.beads`)."""
    if bead_types is not None:
        names = list(bead_types)
        numbers = list(range(1, len(names) + 1))
    elif model.species is not None:
        names = [chemical_symbols[z] for z in model.species]
        numbers = list(model.species)
    elif species:
        names = [str(s) for s in species]
        bad = [s for s in names if s not in atomic_numbers]
        if bad:
            raise LammpsExportError(f"species {bad} are not chemical symbols; use e.g. Ar, O, H")
        return names, [atomic_numbers[s] for s in names]
    else:
        raise LammpsExportError(
            f"the {type(model).__name__} accepts every element, so LAMMPS needs the element "
            "names to map atom types to: pass species=['Ar', ...] (command line: --species Ar)"
        )
    if species:
        unknown = sorted(set(map(str, species)) - set(names))
        if unknown:
            raise LammpsExportError(
                f"the model has no parameters for {unknown}; it knows {names} only"
            )
        keep = [names.index(str(s)) for s in species]
        names, numbers = [names[k] for k in keep], [numbers[k] for k in keep]
    return names, numbers


def _unwrap_cg(model: EnergyModel) -> tuple[EnergyModel, list[str] | None]:
    """A CG force field's network and bead type names (others: the model and None)."""
    if not isinstance(model, CGForceField):
        return model, None
    if model.prior is not None:
        raise LammpsExportError(
            "this CG model has a bonded prior (bonds, angles, dihedrals between numbered beads), "
            "which LAMMPS gives through bond_style/angle_style and a topology in the data file, "
            "not through a pair style; export a CG card without a prior (network only)"
        )
    return model.network, list(model.bead_types)


def _cast(model: EnergyModel, dtype: str) -> EnergyModel:
    if dtype not in DTYPES:
        raise LammpsExportError(f"dtype {dtype!r}: choose float64 or float32 (--dtype)")
    wanted = DTYPES[dtype]
    if model.dtype == wanted:
        return model
    try:
        model = model.to(dtype=wanted)
    except (ValueError, RuntimeError, TypeError) as err:
        raise LammpsExportError(
            f"the model cannot run in {dtype}: {err}. Export it in its own dtype "
            f"(--dtype {str(model.dtype).removeprefix('torch.')})"
        ) from None
    if model.dtype != wanted:
        raise LammpsExportError(
            f"the model stays in {model.dtype} when cast to {dtype} (its precision is fixed); "
            f"export it with --dtype {str(model.dtype).removeprefix('torch.')}"
        )
    return model


def _probe(wrapped: LammpsModel) -> None:
    """Run the model once on a small cluster of its elements: per-atom energies, finite."""
    rng = np.random.default_rng(0)
    n = 2 * len(wrapped.numbers)
    positions = rng.uniform(0.0, 1.5 * max(wrapped.cutoff, 1.0), size=(n, 3))
    numbers = np.resize(np.asarray(wrapped.numbers), n)
    atoms = Atoms(numbers=numbers, positions=positions, pbc=False)
    batch = batch_from_atoms([atoms], wrapped.cutoff).to(dtype=wrapped.dtype)
    with torch.no_grad():
        energies = wrapped.atom_energies(batch)
    if energies.shape != (n,):
        raise LammpsExportError(
            f"{type(wrapped.model).__name__} returned per-atom energies of shape "
            f"{tuple(energies.shape)} for {n} atoms; it must give one energy per atom"
        )


def prepare_mliap(
    card_or_model: ModelCard | EnergyModel | str | os.PathLike,
    dtype: str = "float64",
    species: Sequence[str] | None = None,
    n_layers: int | None = None,
    trust: bool = False,
) -> LammpsModel:
    """The :class:`LammpsModel` for a card (path or name), a loaded card or an energy model.

    Args:
        card_or_model: what to export.
        dtype: "float64" or "float32": the precision the model runs in inside LAMMPS.
        species: element names in the order they are offered to ``pair_coeff`` (default: the
            model's species); required for element-agnostic models (e.g. Lennard-Jones).
        n_layers: interaction layers (default: read from the model).
        trust: allow cards whose weights are code (pickled modules, nequip packages).

    Raises:
        LammpsExportError: no per-atom energies, a bonded CG prior, unknown layers, or a
            precision the model cannot run in.
    """
    if isinstance(card_or_model, EnergyModel):
        model = copy.deepcopy(card_or_model)  # casting and eval() must not touch the caller's
    else:
        card = card_or_model if isinstance(card_or_model, ModelCard) else find_card(card_or_model)
        model = model_from_card(card, trust=trust)
    model, bead_types = _unwrap_cg(model)
    model = _cast(model, dtype)
    names, numbers = _element_names(model, species, bead_types)
    layers = interaction_layers(model) if n_layers is None else int(n_layers)
    wrapped = LammpsModel(model, names, numbers, layers)
    _probe(wrapped)
    return wrapped


def save_mliap(model: LammpsModel, path: str | os.PathLike) -> Path:
    """Write ``model`` atomically as LAMMPS reads it: ``torch.save`` for ``.pt``/``.pth``,
    ``pickle`` otherwise."""
    path = Path(path)
    buffer = io.BytesIO()
    if path.suffix in (".pt", ".pth"):
        torch.save(model, buffer)
    else:
        pickle.dump(model, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def export_mliap(
    card_or_model: ModelCard | EnergyModel | str | os.PathLike,
    path: str | os.PathLike,
    dtype: str = "float64",
    species: Sequence[str] | None = None,
    n_layers: int | None = None,
    trust: bool = False,
) -> LammpsModel:
    """Export a card or energy model to the LAMMPS ML-IAP file ``path``.

    The file is a pickle (LAMMPS unpickles it when it reads ``pair_style mliap unified path
    0``, and so does ``python -m ase_mlmd.lammps run --trust-model``): unpickling runs code,
    so only load files from people you trust. Arguments as :func:`prepare_mliap`.

    Returns:
        the exported :class:`LammpsModel`.
    """
    model = prepare_mliap(
        card_or_model, dtype=dtype, species=species, n_layers=n_layers, trust=trust
    )
    save_mliap(model, path)
    return model


def load_exported(path: str | os.PathLike, trust: bool = False) -> LammpsModel:
    """Load an exported model file. It is a pickle, so this runs code: ``trust=True`` required.

    Raises:
        UntrustedModelError: without ``trust=True``.
        LammpsExportError: the file holds something else.
    """
    path = Path(path)
    if not trust:
        raise UntrustedModelError(
            f"refusing to load {path}: it is a pickled LammpsModel and unpickling runs code. "
            "Load it only if you trust its author: pass trust=True (Python) or --trust-model "
            "(command line)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"no model file {path}; export one with `ase-mlmd export lammps`")
    if path.suffix in (".pt", ".pth"):
        model = torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as handle:
            model = pickle.load(handle)
    if not isinstance(model, LammpsModel):
        raise LammpsExportError(
            f"{path} holds a {type(model).__name__}, not a model exported by ase_mlmd; export "
            "it with `ase-mlmd export lammps CARD -o FILE`"
        )
    return model
