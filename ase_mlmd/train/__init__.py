"""Training of machine-learning force fields (NequIP, SchNet, PaiNN) on labelled frames.

>>> from ase_mlmd.train import TrainConfig, train
>>> result = train("ethanol.extxyz", TrainConfig(model="nequip", max_time="10m"), "models/eth")
>>> result.card_path  # models/eth/card.toml, loadable with ase_mlmd.load_calculator
"""

from ase_mlmd.train.config import (
    DEFAULT_HYPERPARAMETERS,
    MODELS,
    TrainConfig,
    TrainResult,
    parse_duration,
)
from ase_mlmd.train.trainer import train

__all__ = [
    "DEFAULT_HYPERPARAMETERS",
    "MODELS",
    "TrainConfig",
    "TrainResult",
    "parse_duration",
    "train",
]
