"""Training configuration: one plain dataclass for every backend, and its result.

Loss (per batch of B systems with N atoms)::

    loss = energy_weight * mean_b ((E_pred,b - E_ref,b) / n_b)^2        (eV/atom)^2
         + force_weight  * mean_{i,α} (F_pred,iα - F_ref,iα)^2          (eV/Å)^2

The energy term is per-atom normalised (so it does not grow with system size). The default
weights 1 : 1 are nequip's (``PerAtomMSELoss`` on the total energy and ``MSELoss`` on forces,
coefficients 1 and 1): force errors still dominate the loss once energies are within ~a force
error per atom, while the energy offset cannot drift. MACE's 1 : 100 was measured too and lets
energies drift in short trainings where forces are small (13-atom LJ argon clusters, NequIP,
15 epochs: test energy MAE 17.6 meV/atom at 1 : 100, 6.0 at 1 : 10, 0.96 at 1 : 1 against a
1.8 meV/atom spread of the data, for force MAEs of 4.4, 4.5 and 5.1 meV/Å); pass
``force_weight=100`` when only forces matter.
The per-species energy shifts and the energy scale (force RMS) of the model come from the
training-set statistics (:func:`ase_mlmd.data.statistics.dataset_statistics`), so the network
fits O(1) residuals.

Precision: ``dtype="float32"`` (the default) trains NequIP 1.8x faster than float64 on CPU
(measured: 0.081 vs 0.147 s per 192-atom water frame and training step, one thread); the
neighbour geometry stays float64 (nequip casts inside) and metrics are computed in float64.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: models ``train`` can build: nequip's NequIPGNNModel, schnetpack's SchNet and PaiNN
MODELS = ("nequip", "schnet", "painn")
#: networks that only a CG fit builds (``ase_mlmd.cg.forcefield.build_network``): CGnet-style
#: MLP over the internal coordinates of a CG molecule (:mod:`ase_mlmd.models.cg_features`)
CG_MODELS = ("cgnet",)
DTYPES = ("float32", "float64")

#: architecture defaults per model, small so that training is fast on a CPU; NequIP also gets
#: ``avg_num_neighbors``, ``per_type_energy_shifts`` and ``per_type_energy_scales`` from the data
DEFAULT_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "nequip": {
        "num_layers": 2,
        "l_max": 1,
        "parity": False,
        "num_features": 16,
        "radial_mlp_depth": 1,
        "radial_mlp_width": 32,
        "num_bessels": 8,
    },
    "schnet": {"n_atom_basis": 32, "n_interactions": 3, "n_rbf": 20},
    "painn": {"n_atom_basis": 32, "n_interactions": 3, "n_rbf": 20},
    "cgnet": {"hidden": [128, 128, 128, 128], "activation": "tanh"},
}

#: settings that may change between a run and its resumption (they do not change what the
#: training has computed so far, only how long it goes on or where it runs)
RESUMABLE_FIELDS = (
    "max_epochs",
    "max_time",
    "early_stop_patience",
    "device",
    "checkpoint_every_batches",
)
#: how many processes run the training: left out of the checkpoint fingerprint and checked on
#: their own (a checkpoint records its world size; ``ase_mlmd.train.distributed``)
PROCESS_FIELDS = ("devices", "strategy")
#: ``strategy`` values: "auto" (one process for ``devices=1``, else "ddp"), "ddp" (spawned
#: data-parallel processes, see ``ase_mlmd.train.distributed``)
STRATEGIES = ("auto", "ddp")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min|h|hr|d)?\s*$", re.IGNORECASE)
_SECONDS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0,
            "d": 86400.0}  # fmt: skip


def parse_duration(text: str | float | int | None) -> float | None:
    """Seconds from ``"90s"``, ``"10m"``, ``"1.5h"``, ``"1d"`` or a plain number of seconds.

    Raises:
        ValueError: not a positive duration.
    """
    if text is None:
        return None
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if match is None:
            raise ValueError(
                f"cannot read the duration {text!r}; write a number with an optional unit "
                "s, m, h or d, e.g. 90s, 10m, 1.5h"
            )
        unit = match.group(2).lower() if match.group(2) else None
        seconds = float(match.group(1)) * _SECONDS[unit]
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"a duration must be a positive number of seconds, got {text!r}")
    return seconds


def require_positive(config: Any, keys: tuple[str, ...]) -> None:
    """Raise ValueError naming the first of ``config``'s settings ``keys`` that is not > 0 (the
    epoch-loop settings every training configuration shares: lr, batch_size, ...)."""
    for key in keys:
        value = getattr(config, key)
        if not value > 0:
            raise ValueError(f"{key} must be > 0, got {value}")


def require_non_negative(config: Any, keys: tuple[str, ...]) -> None:
    """Raise ValueError naming the first of ``config``'s settings ``keys`` that is < 0 (the
    learning-rate schedule's lr_patience, min_lr)."""
    for key in keys:
        value = getattr(config, key)
        if value < 0:
            raise ValueError(f"{key} must be >= 0, got {value}")


@dataclass
class TrainConfig:
    """Everything that defines a training run (plain data; the CLI fills it from flags).

    Attributes:
        model: ``"nequip"``, ``"schnet"`` or ``"painn"``.
        cutoff: neighbour cutoff, Å.
        hyperparameters: architecture arguments, merged over :data:`DEFAULT_HYPERPARAMETERS`
            (nequip: ``NequIPGNNModel`` arguments; schnet/painn: ``build_schnet_model``'s).
        energy_weight, force_weight: loss weights (see the module docstring), dimensionless.
        lr: initial Adam learning rate.
        batch_size: frames per optimisation step.
        max_epochs: stop after this many epochs.
        max_time: wall-time budget in seconds for the whole run (all resumptions together,
            final test and export included), or None; ``parse_duration`` reads "10m".
        lr_patience, lr_factor, min_lr: ReduceLROnPlateau on the validation force MAE
            (epochs without improvement, factor, floor).
        early_stop_patience: stop after this many epochs without a better validation force
            MAE.
        ema_decay: decay of the exponential moving average of the weights; validation, test
            and the exported model use the averaged weights.
        seed: seed of the weight initialisation and of the batch order.
        split: (train, val, test) fractions or frame counts, or a string "0.8,0.1,0.1".
        split_seed: seed of the random split (None: ``seed``).
        ordered_split: time-ordered split (contiguous blocks) instead of a random one.
        device: "cpu", "cuda" (or "cuda:1") or "auto".
        dtype: "float32" or "float64", the model's precision.
        checkpoint_every_batches: also checkpoint every this many batches within an epoch.
        name: the card's name (None: the output directory's name).
        devices: training processes (CPU) or GPUs (CUDA, one process each), data-parallel;
            the global batch stays ``batch_size`` frames, split over the processes.
        strategy: "auto" or "ddp" (see :data:`STRATEGIES`).
    """

    model: str = "nequip"
    cutoff: float = 5.0
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    energy_weight: float = 1.0
    force_weight: float = 1.0
    lr: float = 5e-3
    batch_size: int = 4
    max_epochs: int = 1000
    max_time: float | None = None
    lr_patience: int = 5
    lr_factor: float = 0.5
    min_lr: float = 1e-5
    early_stop_patience: int = 20
    ema_decay: float = 0.99
    seed: int = 123
    split: tuple[float | int, ...] | str = (0.8, 0.1, 0.1)
    split_seed: int | None = None
    ordered_split: bool = False
    device: str = "cpu"
    dtype: str = "float32"
    checkpoint_every_batches: int = 20
    name: str | None = None
    devices: int = 1
    strategy: str = "auto"

    def __post_init__(self) -> None:
        self.max_time = parse_duration(self.max_time)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first setting that cannot work."""
        if self.model not in MODELS + CG_MODELS:
            raise ValueError(f"model must be one of {MODELS + CG_MODELS}, got {self.model!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        require_positive(
            self,
            ("cutoff", "lr", "batch_size", "max_epochs", "checkpoint_every_batches",
             "early_stop_patience"),
        )  # fmt: skip
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if isinstance(self.devices, bool) or not isinstance(self.devices, int) or self.devices < 1:
            raise ValueError(f"devices must be a whole number >= 1, got {self.devices!r}")
        if self.energy_weight < 0 or self.force_weight < 0:
            raise ValueError("energy_weight and force_weight must be >= 0")
        if self.energy_weight + self.force_weight == 0:
            raise ValueError("energy_weight and force_weight are both 0: nothing to fit")
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor must be in (0, 1), got {self.lr_factor}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        require_non_negative(self, ("lr_patience", "min_lr"))
        if self.name is not None and (not self.name or Path(self.name).name != self.name):
            raise ValueError(f"name must be a plain file stem (no folders), got {self.name!r}")

    @property
    def effective_split_seed(self) -> int:
        return self.seed if self.split_seed is None else int(self.split_seed)

    def model_hyperparameters(self) -> dict[str, Any]:
        """The architecture arguments: defaults of ``model`` updated by ``hyperparameters``."""
        return {**DEFAULT_HYPERPARAMETERS[self.model], **self.hyperparameters}

    def as_dict(self) -> dict[str, Any]:
        """TOML/JSON-storable dict (None values left out, tuples as lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["hyperparameters"] = dict(self.hyperparameters)
        return out


@dataclass
class TrainResult:
    """What a finished training run produced.

    Attributes:
        card_path: the exported card (``output_dir/card.toml``).
        output_dir: the run's folder (card, weights, ``checkpoint.pt``, ``train_log.csv``).
        test_energy_mae_mev_per_atom: test MAE of E/n_atoms, meV/atom.
        test_energy_mae_mev: test MAE of the total energy per frame, meV.
        test_force_mae_mev_per_angstrom: test MAE over all force components, meV/Å.
        val_force_mae_mev_per_angstrom: best validation force MAE (the exported weights), meV/Å.
        epochs: epochs trained (all resumptions together).
        best_epoch: epoch (1-based) of the exported weights.
        wall_time_s: wall time of all resumptions together, s.
        stop_reason: "max_epochs", "max_time" or "early_stopping".
        n_train, n_val, n_test: frames per part.
        model: the exported model (best-validation EMA weights) in memory, on the training
            device.
        resumed_from_epoch: epochs done by earlier runs when this one resumed, else None.
    """

    card_path: Path
    output_dir: Path
    test_energy_mae_mev_per_atom: float
    test_energy_mae_mev: float
    test_force_mae_mev_per_angstrom: float
    val_force_mae_mev_per_angstrom: float
    epochs: int
    best_epoch: int
    wall_time_s: float
    stop_reason: str
    n_train: int
    n_val: int
    n_test: int
    model: Any = field(default=None, repr=False, compare=False)
    resumed_from_epoch: int | None = None
