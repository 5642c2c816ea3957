"""ase_mlmd: machine-learning force fields as ASE calculators, and MD around them.

>>> from ase_mlmd import load_calculator
>>> calc = load_calculator("lj-argon")
"""

from ase_mlmd.calculators.ml_calculator import MLCalculator
from ase_mlmd.calculators.registry import (
    available_cards,
    load_calculator,
    model_from_card,
    register_with_ase,
)
from ase_mlmd.models.interface import EnergyModel, evaluate

__version__ = "0.1.0"

__all__ = [
    "EnergyModel",
    "MLCalculator",
    "__version__",
    "available_cards",
    "evaluate",
    "load_calculator",
    "model_from_card",
    "register_with_ase",
]
