"""Thin adapters that make third-party models follow the energy-model contract.

The backend packages are imported lazily: ``import ase_mlmd`` never imports nequip or
schnetpack, and a model object is recognised by the module its class comes from.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

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


def lazy_functions(module: str, target: str, names: Iterable[str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that serves ``names`` from the module ``target`` on first use.

    A backend keeps its card/file functions in a sibling module (which imports the backend
    module itself); this makes them importable from the backend module without an import cycle.
    """
    names = frozenset(names)

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(target), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
