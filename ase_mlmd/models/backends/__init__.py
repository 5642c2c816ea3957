"""Thin adapters that make third-party models follow the energy-model contract.

The backend packages are imported lazily: ``import ase_mlmd`` never imports nequip or
schnetpack, and a model object is recognised by the module its class comes from.
"""

from __future__ import annotations

import torch

from ase_mlmd.models.interface import EnergyModel


def as_energy_model(model: torch.nn.Module) -> EnergyModel:
    """Return ``model`` as an :class:`EnergyModel`, wrapping nequip and schnetpack models.

    Raises:
        TypeError: for a module that is none of these, with what to do instead.
    """
    if isinstance(model, EnergyModel):
        return model
    module = type(model).__module__
    if module.startswith("nequip") or ".nequip." in module:  # also torch.package-d models
        from ase_mlmd.models.backends.nequip import NequipModel

        return NequipModel(model)
    if module.startswith("schnetpack"):
        from ase_mlmd.models.backends.schnetpack import SchNetPackModel

        return SchNetPackModel(model)
    raise TypeError(
        f"cannot use a {type(model).__name__} as an energy model: pass an "
        "ase_mlmd.models.interface.EnergyModel subclass, a nequip GraphModel or a schnetpack "
        "NeuralNetworkPotential"
    )
