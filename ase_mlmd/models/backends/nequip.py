"""nequip models (0.19 framework: ``GraphModel``) as ase_mlmd energy models.

nequip's data conventions are the ones of :class:`~ase_mlmd.batch.AtomsBatch`: ``edge_index``
rows are (centre, neighbor), ``edge_vec = pos[j] - pos[i] + edge_cell_shift @ cell[system of
i]``, cells have lattice vectors as rows (``nequip.nn.utils.with_edge_vectors_``). nequip data
(positions, cells, shifts) are float64 whatever the ``model_dtype``; a float32 model casts
internally. A ``GraphModel`` built by nequip is ``ForceStressOutput(energy_model)``;
:class:`NequipModel` calls the energy model only, so forces and stress come from ase_mlmd's one
shared autograd path (:func:`ase_mlmd.models.interface.evaluate`). Compiled models, whose parts
cannot be reached, are called whole and return their own forces and stress.

nequip is imported lazily: importing this module does not need it. Cards (safetensors export
and loading) and nequip's own files (packages, compiled models) are handled in
:mod:`ase_mlmd.models.backends.nequip_files`; its functions can be imported from here too.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols

from ase_mlmd.batch import AtomsBatch
from ase_mlmd.errors import BackendNotAvailableError, UnsupportedSpeciesError
from ase_mlmd.models.backends import lazy_functions
from ase_mlmd.models.interface import EnergyModel

#: attribute of a ``GraphModel`` built by :func:`build_nequip_model` holding its hyperparameters
HYPERPARAMETERS_ATTR = "ase_mlmd_hyperparameters"
#: nequip data (positions, cell, shifts) are always float64 (``nequip.utils.global_dtype``)
NEQUIP_DATA_DTYPE = torch.float64
#: a small NequIP architecture, for tests, tutorials and quick fits
SMALL_NEQUIP = {
    "num_layers": 2,
    "l_max": 1,
    "parity": False,
    "num_features": 16,
    "radial_mlp_depth": 1,
    "radial_mlp_width": 32,
    "num_bessels": 8,
    # nequip needs it; set it from the data (mean number of neighbors within r_max)
    "avg_num_neighbors": 20.0,
    "per_type_energy_scales": 1.0,
    "per_type_energy_shifts": 0.0,
}
DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64"}
#: card and file functions, defined in ``nequip_files`` and importable from here
_FILE_FUNCTIONS = (
    "export_nequip_card",
    "model_from_state_dict",
    "model_from_file",
    "model_from_path",
)


__getattr__ = lazy_functions(__name__, "ase_mlmd.models.backends.nequip_files", _FILE_FUNCTIONS)


def import_nequip() -> ModuleType:
    """Import nequip, or raise :class:`BackendNotAvailableError` with how to install it."""
    try:
        import nequip
        import nequip.data  # noqa: F401
    except ImportError as err:
        raise BackendNotAvailableError(
            f"the nequip backend needs the nequip package (>=0.19,<0.20), which failed to "
            f"import ({err}); install it with `pip install 'ase-mlmd[nequip]'`"
        ) from None
    return nequip


@contextlib.contextmanager
def keep_caller_state() -> Iterator[None]:
    """Restore the default dtype and the torch/numpy/random RNG states on exit."""
    default_dtype = torch.get_default_dtype()
    torch_rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    numpy_rng, python_rng = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_default_dtype(default_dtype)
        torch.random.set_rng_state(torch_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        np.random.set_state(numpy_rng)
        random.setstate(python_rng)


def init_nequip_state() -> None:
    """Initialise nequip's global state once (needed to build or load models).

    nequip's ``set_global_state`` also sets torch's default dtype to float64 and seeds every
    RNG; both are restored here so that using a nequip model changes nothing for the caller.
    :class:`NequipModel` does not depend on the default dtype, but nequip's own data tools do
    (``nequip.data.from_ase``, ``NequIPCalculator``): run them under
    ``nequip.utils.torch_default_dtype(torch.float64)`` (or set that default yourself).
    """
    import_nequip()
    from nequip.utils.global_state import global_state_initialized, set_global_state

    if not global_state_initialized():
        with keep_caller_state():
            set_global_state()


def _metadata_of(model: torch.nn.Module, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is not None:
        return dict(metadata)
    try:
        return dict(getattr(model, "metadata", None) or {})
    except Exception:  # a scripted model or an exotic wrapper: no metadata property
        return {}


def _energy_part(model: torch.nn.Module) -> torch.nn.Module | None:
    """The energy-only module inside a nequip model, or None (compiled: call it whole)."""
    if isinstance(model, torch.jit.ScriptModule) or not hasattr(model, "model_input_fields"):
        return None
    inner = getattr(model, "model", None)
    if type(inner).__name__ == "ForceStressOutput" and isinstance(
        getattr(inner, "func", None), torch.nn.Module
    ):
        return inner.func
    irreps_out = getattr(model, "irreps_out", {})
    if "total_energy" in irreps_out and "forces" not in irreps_out:
        return model
    return None


class NequipModel(EnergyModel):
    """A nequip model (``GraphModel``, packaged or compiled) as an :class:`EnergyModel`.

    Args:
        model: the nequip model; an in-memory ``GraphModel``, a ``GraphModel`` loaded from a
            package, or a compiled model from ``nequip.model.inference_models``.
        type_names: nequip type names in type-index order (default: the model's metadata).
        cutoff: neighbor-list radius, Å (default: the model's ``r_max``; never smaller).
        species_to_type: chemical symbol → type name (default: identity, which needs type
            names that are chemical symbols).
        metadata: metadata of a compiled model (as returned by nequip's loaders).
        use_model_derivatives: call the whole model and use nequip's own forces and stress
            instead of ase_mlmd's autograd (always the case for compiled models).

    Attributes:
        graph_model: the wrapped nequip model.
        hyperparameters: the architecture as :func:`build_nequip_model` arguments, or None if
            the model was not built by it (then it cannot be exported as safetensors).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        type_names: Sequence[str] | None = None,
        cutoff: float | None = None,
        species_to_type: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        use_model_derivatives: bool = False,
    ) -> None:
        import_nequip()
        meta = _metadata_of(model, metadata)
        names = list(type_names) if type_names is not None else meta.get("type_names")
        if isinstance(names, str):
            names = names.split()
        if not names:
            raise ValueError("the nequip model has no type_names metadata; pass type_names=[...]")
        r_max = float(meta["r_max"]) if meta.get("r_max") is not None else None
        if cutoff is None:
            if r_max is None:
                raise ValueError("the nequip model has no r_max metadata; pass cutoff=")
            cutoff = r_max
        elif r_max is not None and cutoff < r_max - 1e-9:
            raise ValueError(f"cutoff {cutoff} Å is below the model's r_max {r_max} Å")
        mapping = dict(species_to_type) if species_to_type else {n: n for n in names}
        for symbol, name in mapping.items():
            if symbol not in atomic_numbers or name not in names:
                raise ValueError(
                    f"cannot map element {symbol!r} to nequip type {name!r} (type names: "
                    f"{names}); pass species_to_type={{'H': 'type name', ...}} with chemical "
                    "symbols as keys and the model's type names as values"
                )
        super().__init__(cutoff, species=[atomic_numbers[s] for s in mapping])
        self.graph_model = model
        self.type_names = names
        self.species_to_type = mapping
        self.use_model_derivatives = bool(use_model_derivatives or _energy_part(model) is None)
        if self.use_model_derivatives:
            self.provides = ("energies", "forces", "stress")
        self.hyperparameters = copy.deepcopy(getattr(model, HYPERPARAMETERS_ATTR, None))
        table = torch.full((len(chemical_symbols),), -1, dtype=torch.long)
        for symbol, name in mapping.items():
            table[atomic_numbers[symbol]] = names.index(name)
        self.register_buffer("_type_of_number", table, persistent=False)
        self._nequip_dtype = self._find_dtype(model, meta)
        input_keys = getattr(model, "input_keys", None)  # AOTInductor wrapper
        self._single_frame = input_keys is not None and "batch" not in input_keys
        self._fixed_device = (
            torch.device(meta.get("AOTI_DEVICE_KEY", "cpu")) if input_keys is not None else None
        )
        self._pruner = self._edge_pruner(meta, names, cutoff if r_max is None else r_max)

    @staticmethod
    def _find_dtype(model: torch.nn.Module, meta: Mapping[str, Any]) -> torch.dtype:
        name = meta.get("model_dtype")
        if name in ("float32", "float64"):
            return getattr(torch, name)
        if isinstance(getattr(model, "model_dtype", None), torch.dtype):
            return model.model_dtype
        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float64

    @staticmethod
    def _edge_pruner(meta: Mapping[str, Any], names: list[str], r_max: float):
        """nequip's own pruning transform for per-edge-type cutoffs (None without them)."""
        per_type = meta.get("per_edge_type_cutoff")
        if not per_type:
            return None
        from nequip.data.transforms import NeighborListPruneTransform
        from nequip.nn.embedding.utils import cutoff_str_to_fulldict

        if isinstance(per_type, str):
            per_type = cutoff_str_to_fulldict(per_type, names)
        return NeighborListPruneTransform(r_max, per_type, names)

    @property
    def dtype(self) -> torch.dtype:
        """The model's ``model_dtype`` (coordinates are passed to nequip in float64)."""
        return self._nequip_dtype

    @property
    def device(self) -> torch.device:
        if self._fixed_device is not None:
            return self._fixed_device
        return super().device

    def to(self, *args: Any, **kwargs: Any) -> NequipModel:
        """Move to a device; a new dtype rebuilds the model in that ``model_dtype``.

        nequip fixes the precision of each module when it is built (some buffers stay float64 in
        a float32 model), so casting all tensors would be wrong: the architecture is rebuilt from
        :attr:`hyperparameters` and the weights are copied over.
        """
        device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
        if dtype is not None and dtype != self.dtype:
            self._rebuild(dtype)
        if device is None:
            return self
        if self._fixed_device is not None and torch.device(device) != self._fixed_device:
            raise ValueError(
                f"this compiled nequip model runs on {self._fixed_device} only; use that device "
                f"or compile it for {device} (nequip-compile --device {torch.device(device).type})"
            )
        return super().to(device=device, non_blocking=non_blocking)

    def float(self) -> NequipModel:
        return self.to(torch.float32)

    def double(self) -> NequipModel:
        return self.to(torch.float64)

    def _rebuild(self, dtype: torch.dtype) -> None:
        if self.hyperparameters is None or dtype not in DTYPE_NAMES:
            raise ValueError(
                f"cannot run this nequip model in {dtype}: its model_dtype "
                f"({DTYPE_NAMES.get(self.dtype)}) is fixed when it is built, and only models "
                "built by build_nequip_model (or loaded from a safetensors card) can be rebuilt "
                "in another one. Keep dtype=None, or re-train / re-package in the wanted dtype"
            )
        old = self.graph_model
        new = build_nequip_model(model_dtype=DTYPE_NAMES[dtype], **self.hyperparameters)
        new.load_state_dict(old.state_dict())
        device = next((t.device for t in old.state_dict().values()), torch.device("cpu"))
        self.graph_model = new.to(device).train(old.training)
        self._nequip_dtype = dtype

    def nequip_data(self, batch: AtomsBatch) -> dict[str, torch.Tensor]:
        """The nequip ``AtomicDataDict`` of a batch.

        Keys: pos (N,3), cell (B,3,3), edge_index (2,E), edge_cell_shift (E,3) float64 (Å and
        cell units), batch (N,), num_atoms (B,), atom_types (N,) nequip type indices.

        Raises:
            UnsupportedSpeciesError: an element that the model has no type for.
        """
        from nequip.data import AtomicDataDict as K

        types = self._type_of_number[batch.numbers]
        if bool((types < 0).any()):
            unknown = sorted({chemical_symbols[int(z)] for z in batch.numbers[types < 0]})
            raise UnsupportedSpeciesError(
                f"the nequip model has types for {', '.join(self.species_to_type)} only; the "
                f"structure also contains {', '.join(unknown)}. Use a model trained on these "
                "elements, or map them with species_to_type="
            )
        data = {
            K.POSITIONS_KEY: batch.positions.to(NEQUIP_DATA_DTYPE),
            K.CELL_KEY: batch.cell.to(NEQUIP_DATA_DTYPE),
            K.EDGE_INDEX_KEY: batch.edge_index,
            K.EDGE_CELL_SHIFT_KEY: batch.cell_shifts.to(NEQUIP_DATA_DTYPE),
            K.BATCH_KEY: batch.system_idx,
            K.NUM_NODES_KEY: batch.n_atoms,
            K.ATOM_TYPE_KEY: types,
        }
        return self._pruner(data) if self._pruner is not None else data

    def forward(self, batch: AtomsBatch) -> dict[str, torch.Tensor]:
        from nequip.data import AtomicDataDict as K

        data = self.nequip_data(batch)
        if not self.use_model_derivatives:
            out = _energy_part(self.graph_model)(data)
            return {
                "energy": out[K.TOTAL_ENERGY_KEY].reshape(-1),
                "energies": out[K.PER_ATOM_ENERGY_KEY].reshape(-1),
            }
        frames = self._split_frames(data, batch) if self._single_frame else [data]
        outs = [self.graph_model(frame) for frame in frames]
        return {
            "energy": torch.cat([o[K.TOTAL_ENERGY_KEY].reshape(-1) for o in outs]),
            "energies": torch.cat([o[K.PER_ATOM_ENERGY_KEY].reshape(-1) for o in outs]),
            "forces": torch.cat([o[K.FORCE_KEY].reshape(-1, 3) for o in outs]),
            "stress": torch.cat([o[K.STRESS_KEY].reshape(-1, 3, 3) for o in outs]),
        }

    @staticmethod
    def _split_frames(data: dict[str, torch.Tensor], batch: AtomsBatch) -> list[dict]:
        """One data dict per system, without batch keys (single-frame compiled models)."""
        from nequip.data import AtomicDataDict as K

        frames = []
        starts = torch.cumsum(batch.n_atoms, 0) - batch.n_atoms
        edge_system = batch.system_idx[data[K.EDGE_INDEX_KEY][0]]
        for b, start in enumerate(starts.tolist()):
            atoms = batch.system_idx == b
            edges = edge_system == b
            frames.append(
                {
                    K.POSITIONS_KEY: data[K.POSITIONS_KEY][atoms],
                    K.CELL_KEY: data[K.CELL_KEY][b : b + 1],
                    K.EDGE_INDEX_KEY: data[K.EDGE_INDEX_KEY][:, edges] - start,
                    K.EDGE_CELL_SHIFT_KEY: data[K.EDGE_CELL_SHIFT_KEY][edges],
                    K.ATOM_TYPE_KEY: data[K.ATOM_TYPE_KEY][atoms],
                }
            )
        return frames


def _check_toml_value(key: str, value: Any) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_toml_value(f"{key}.{k}", v)
    elif isinstance(value, list | tuple):
        for v in value:
            _check_toml_value(key, v)
    elif not isinstance(value, bool | int | float | str):
        raise TypeError(
            f"hyperparameter {key}={value!r} cannot be stored in a model card; use numbers, "
            "strings, lists and dicts (None: leave the argument out)"
        )


def build_nequip_model(
    type_names: Sequence[str],
    r_max: float,
    seed: int = 0,
    model_dtype: str = "float64",
    **hyper: Any,
) -> torch.nn.Module:
    """Build a NequIP GNN (``nequip.model.NequIPGNNModel``) in code; small by default.

    Args:
        type_names: nequip type names, normally chemical symbols (``["H", "C", "O"]``).
        r_max: cutoff radius, Å.
        seed: seed of the weight initialisation (the caller's RNG state is left unchanged).
        model_dtype: "float64" or "float32".
        **hyper: any ``NequIPGNNModel`` argument (``num_layers``, ``l_max``, ``num_features``,
            ``avg_num_neighbors``, ``per_type_energy_shifts`` (eV), ...); defaults:
            :data:`SMALL_NEQUIP`. Values must be TOML-storable (no None).

    Returns:
        the ``GraphModel``; its :data:`HYPERPARAMETERS_ATTR` attribute holds every argument but
        ``model_dtype`` (see :func:`nequip_card_parameters`).
    """
    init_nequip_state()
    from nequip.model import NequIPGNNModel

    params = {"type_names": list(type_names), "r_max": float(r_max), "seed": int(seed)}
    params.update({**SMALL_NEQUIP, **hyper})
    for key, value in params.items():
        _check_toml_value(key, value)
    model = NequIPGNNModel(model_dtype=model_dtype, **copy.deepcopy(params))
    setattr(model, HYPERPARAMETERS_ATTR, params)
    return model


def _graph_model(model: torch.nn.Module) -> torch.nn.Module:
    while hasattr(model, "inner"):  # UnitConvertedModel
        model = model.inner
    return model.graph_model if isinstance(model, NequipModel) else model


def nequip_card_parameters(model: torch.nn.Module) -> dict[str, Any]:
    """The hyperparameters that rebuild ``model``'s architecture (a card's ``[parameters]``).

    Args:
        model: a :class:`NequipModel` or a ``GraphModel`` built by :func:`build_nequip_model`.

    Raises:
        ValueError: the model was not built by :func:`build_nequip_model`.
    """
    if isinstance(model, NequipModel) and model.hyperparameters is not None:
        return copy.deepcopy(model.hyperparameters)
    params = getattr(_graph_model(model), HYPERPARAMETERS_ATTR, None)
    if params is None:
        raise ValueError(
            "this nequip model was not built by build_nequip_model, so its architecture is "
            "unknown and it cannot be stored as safetensors + card; share it as a nequip "
            "package (nequip-package) and a card with [weights] format = 'nequip-package'"
        )
    return copy.deepcopy(params)
