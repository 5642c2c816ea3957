"""Build a trainable model from a configuration and the training-set statistics; export it.

NequIP (``nequip.model.NequIPGNNModel`` through
:func:`~ase_mlmd.models.backends.nequip.build_nequip_model`) takes the statistics as its own
hyperparameters: ``per_type_energy_shifts`` (eV/atom per element), ``per_type_energy_scales``
(the force RMS, eV/Å, nequip's recommendation) and ``avg_num_neighbors``. They are stored in
the card's ``[parameters]``.

SchNet and PaiNN (schnetpack, :func:`~ase_mlmd.models.backends.schnetpack.build_schnet_model`)
get an ``AddOffsets`` postprocessor whose per-element references (``atomref``, part of the
weights) are the energy shifts, and the last layer of the atomwise output network is scaled by
the force RMS so that initial per-atom energies have the data's scale (the architecture is
unchanged; only initial weights differ).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from ase.data import atomic_numbers

from ase_mlmd.data.statistics import DatasetStatistics
from ase_mlmd.models.interface import EnergyModel
from ase_mlmd.train.config import TrainConfig

CARD_FILE = "card.toml"


def build_model(config: TrainConfig, stats: DatasetStatistics) -> EnergyModel:
    """A freshly initialised model of ``config.model`` for the elements in ``stats``.

    Args:
        config: model kind, cutoff, hyperparameters, dtype and seed.
        stats: statistics of the training frames (same cutoff).
    """
    if config.model not in ("nequip", "schnet", "painn"):
        raise ValueError(
            f"model {config.model!r} is a CG network: fit it with ase-mlmd cg fit "
            "(ase_mlmd.cg.fit_cg_forcefield), not ase-mlmd train"
        )
    species = sorted(stats.species, key=lambda s: atomic_numbers[s])
    shifts = {s: float(stats.energy_shifts[s]) for s in species}
    scale = float(stats.force_rms) if stats.force_rms > 0 else 1.0
    hyper = config.model_hyperparameters()
    if config.model == "nequip":
        from ase_mlmd.models.backends.nequip import NequipModel, build_nequip_model

        hyper.setdefault("avg_num_neighbors", max(float(stats.avg_num_neighbors), 1.0))
        hyper.setdefault("per_type_energy_shifts", shifts)
        hyper.setdefault("per_type_energy_scales", scale)
        graph = build_nequip_model(
            species, config.cutoff, seed=config.seed, model_dtype=config.dtype, **hyper
        )
        return NequipModel(graph)

    from ase_mlmd.models.backends.schnetpack import SchNetPackModel, build_schnet_model

    nnp = build_schnet_model(
        cutoff=config.cutoff,
        seed=config.seed,
        dtype=getattr(torch, config.dtype),
        representation=config.model,
        add_offsets=True,
        **hyper,
    )
    with torch.no_grad():
        offsets = nnp.postprocessors[0]
        for symbol, shift in shifts.items():
            offsets.atomref[atomic_numbers[symbol]] = shift
        last = nnp.output_modules[0].outnet[-1]
        last.weight.mul_(scale)
        last.bias.mul_(scale)
    numbers = [atomic_numbers[s] for s in species]
    return SchNetPackModel(nnp, species=numbers, cutoff=config.cutoff)


def export_card(
    model: EnergyModel,
    config: TrainConfig,
    directory: str | os.PathLike,
    name: str,
    provenance: dict[str, Any],
) -> Path:
    """Write ``directory/card.toml`` and ``directory/NAME.safetensors`` for ``model``.

    The weights are written first (to a temporary name, then renamed), the card last and
    atomically, so a card that exists always names complete weights with their sha256.
    """
    description = (
        f"{config.model} model trained by ase_mlmd.train on {provenance.get('data', 'data')}"
    )
    if config.model == "nequip":
        from ase_mlmd.models.backends.nequip_files import export_nequip_card

        return export_nequip_card(
            model,
            directory,
            name,
            description=description,
            citation=NEQUIP_CITATION,
            provenance=provenance,
            card_file=CARD_FILE,
        )
    from ase_mlmd.models.backends.schnetpack_files import export_schnetpack_card

    return export_schnetpack_card(
        model,
        directory,
        name,
        species=list(model.species or ()),
        description=description,
        provenance=provenance,
        card_file=CARD_FILE,
    )


NEQUIP_CITATION = (
    "S. Batzner et al., E(3)-equivariant graph neural networks for data-efficient and accurate "
    "interatomic potentials, Nat. Commun. 13, 2453 (2022)"
)
