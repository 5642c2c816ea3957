"""SchNetPack 2.x models (SchNet, PaiNN, SO3net, ...) as ase_mlmd energy models.

:class:`SchNetPackModel` runs a ``schnetpack.model.NeuralNetworkPotential`` *energy-only* on an
:class:`~ase_mlmd.batch.AtomsBatch`: schnetpack's input dict is built from the batch (our neighbor
list; Cartesian ``offsets = shifts @ cell``, so ``R_ij = R[j] - R[i] + offsets`` as in
``PairwiseDistances``), then the input modules, the representation, the output modules that take
no derivatives and the postprocessors run. Forces and stress come from the shared autograd
:func:`~ase_mlmd.models.interface.evaluate`, which strains positions and cell itself; the model's
``Forces``/``Response`` outputs, its ``Strain`` input (identity at zero strain) and its
``initialize_derivatives`` are skipped. A plain SchNet representation (and the
``PairwiseDistances`` input module) runs through :mod:`~ase_mlmd.models.backends.schnet_fast`:
the model's own modules with cheaper gathers and one filter per pair of a full neighbor list,
equal to schnetpack's forward to rounding; ``fast=False`` runs schnetpack's forward throughout.

Postprocessors run exactly when ``nnp.do_postprocessing`` is true, as in schnetpack, so energies
equal schnetpack's: ``spktrain``'s ``best_model`` carries ``CastTo64`` and ``AddOffsets`` (mean
energy per atom, single-atom references), without which absolute energies would be off by a
per-system constant (forces and stress are unaffected). Per-atom energies get the same offsets
atom by atom, so they sum to the total.

Units: schnetpack models are unit-agnostic; a card's ``[units]`` declares them and the registry
converts to eV and Å. Bare model files are taken as eV and Å (:func:`model_from_path` warns).

New torch: see :func:`import_schnetpack`. ``torch.load`` keeps its ``weights_only=True``
default; pickled models load with ``weights_only=False`` only in :func:`load_pickled_model`, only
with ``trust=True``.
"""

from __future__ import annotations

import importlib.util
import typing
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

import torch
from ase.data import chemical_symbols

from ase_mlmd.batch import AtomsBatch
from ase_mlmd.errors import (
    BackendNotAvailableError,
    UnsupportedSpeciesError,
)
from ase_mlmd.models.backends import lazy_functions
from ase_mlmd.models.backends.schnet_fast import (
    fast_schnet_supported,
    is_pairwise_distances,
    pairwise_vectors,
    schnet_representation,
    symmetric_pairs,
)
from ase_mlmd.models.interface import EnergyModel

INSTALL_HINT = (
    "install it with `pip install 'ase-mlmd[schnetpack]'` followed by "
    "`pip install --no-deps 'schnetpack>=2.1,<2.2'` (schnetpack 2.1 pins sympy<=1.12, which "
    "conflicts with torch, hence --no-deps)"
)
SCHNETPACK_CITATION = (
    "K. T. Schütt et al., SchNetPack 2.0: A neural network toolbox for atomistic machine "
    "learning, J. Chem. Phys. 158, 144801 (2023)"
)
REPRESENTATIONS = ("schnet", "painn")
#: arguments of build_schnet_model that define the architecture (recorded on the model)
ARCHITECTURE_KEYS = tuple(
    "representation cutoff n_atom_basis n_interactions n_rbf n_filters n_out_layers energy_key "
    "per_atom_output_key add_offsets stress".split()
)
PICKLE_RISK = (
    "a pickled schnetpack model (torch.save of a whole module, e.g. spktrain's best_model) can "
    "run arbitrary code when unpickled"
)


#: card and file functions, defined in ``schnetpack_files`` and importable from here
_FILE_FUNCTIONS = (
    "export_schnetpack_card",
    "model_from_state_dict",
    "load_pickled_model",
    "model_from_file",
    "model_from_path",
)


__getattr__ = lazy_functions(__name__, "ase_mlmd.models.backends.schnetpack_files", _FILE_FUNCTIONS)


# ----------------------------------------------------------------------------- compatibility
def _restore_dataloader_typevar() -> bool:
    """Define ``torch.utils.data.dataloader.T_co`` if this torch lacks it; return True if added.

    schnetpack 2.1.1 (``schnetpack/data/loader.py``) does
    ``from torch.utils.data.dataloader import _collate_fn_t, T_co``, only to annotate its
    ``AtomsLoader``; torch ≥ 2.10 dropped the module-level ``T_co``. The covariant TypeVar is
    what torch used to define there, so typing-only users see the same object kind.
    """
    import torch.utils.data.dataloader as dataloader

    if hasattr(dataloader, "T_co"):
        return False
    dataloader.T_co = typing.TypeVar("T_co", covariant=True)
    return True


def import_schnetpack() -> ModuleType:
    """Import schnetpack, making schnetpack 2.1.x importable on new torch.

    The only change made is :func:`_restore_dataloader_typevar` (and only when the name is
    missing). ``torch.load`` defaults and ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` are left alone.

    Raises:
        BackendNotAvailableError: schnetpack is not installed, or fails to import.
    """
    if importlib.util.find_spec("schnetpack") is None:
        raise BackendNotAvailableError(f"the schnetpack backend needs schnetpack; {INSTALL_HINT}")
    _restore_dataloader_typevar()
    try:
        import schnetpack
    except ImportError as err:
        raise BackendNotAvailableError(
            f"schnetpack is installed but cannot be imported ({err}); a runtime dependency may "
            f"be missing: {INSTALL_HINT}"
        ) from err
    return schnetpack


# ----------------------------------------------------------------------------- the adapter
def _as_float(value: Any) -> float:
    return float(value.reshape(-1)[0]) if isinstance(value, torch.Tensor) else float(value)


def _model_cutoff(nnp: torch.nn.Module) -> float | None:
    """The representation's cutoff (its ``cutoff`` or ``cutoff_fn.cutoff``), Å, or None."""
    rep = nnp.representation
    value = getattr(rep, "cutoff", None)
    if value is None:
        value = getattr(getattr(rep, "cutoff_fn", None), "cutoff", None)
    return None if value is None else _as_float(value)


def _embedding_size(nnp: torch.nn.Module) -> int | None:
    """Number of rows of the nuclear embedding (atomic numbers must stay below it), or None."""
    embedding = getattr(nnp.representation, "embedding", None)
    if isinstance(embedding, torch.nn.Embedding):
        return int(embedding.num_embeddings)
    table = getattr(embedding, "element_embedding", None)  # schnetpack NuclearEmbedding
    return int(table.shape[0]) if isinstance(table, torch.Tensor) else None


class SchNetPackModel(EnergyModel):
    """A schnetpack ``NeuralNetworkPotential`` behind the energy-model contract.

    Args:
        nnp: the schnetpack model (``representation``, ``input_modules``, ``output_modules``),
            used as is and not modified; its ``Forces``/``Response``/``Strain`` modules are
            skipped at run time.
        species: atomic numbers the model was trained on. schnetpack models do not record
            their elements, so the default ``None`` accepts any atomic number the nuclear
            embedding covers (1..99 by default), seen in training or not; pass the training
            elements (a card's ``species`` does) to get
            :class:`~ase_mlmd.errors.UnsupportedSpeciesError` for others.
        cutoff: neighbor-list cutoff, Å; default the representation's cutoff radius. Required
            for models that filter a longer list (``FilterShortRange``); never shorter than the
            model's own cutoff.
        energy_key: output key of the energy; default the ``energy_key`` of the model's
            ``Forces``/``Response`` module, else the key of its only ``Atomwise``, else
            ``"energy"``.
        dtype: cast the model to this dtype (default: keep).
        fast: run a plain SchNet representation and the ``PairwiseDistances`` input module
            through :mod:`~ase_mlmd.models.backends.schnet_fast` (the model's own modules,
            cheaper gathers; the same results to rounding). Other representations always run
            schnetpack's own forward. ``False``: schnetpack's forward everywhere.

    Attributes:
        fast_representation: whether the representation runs the fast SchNet forward.
    """

    def __init__(
        self,
        nnp: torch.nn.Module,
        species: Iterable[int] | None = None,
        cutoff: float | None = None,
        energy_key: str | None = None,
        dtype: torch.dtype | None = None,
        fast: bool = True,
    ) -> None:
        spk = import_schnetpack()
        if not all(hasattr(nnp, a) for a in ("representation", "input_modules", "output_modules")):
            raise TypeError(
                f"cannot wrap a {type(nnp).__name__}: SchNetPackModel needs a schnetpack "
                "NeuralNetworkPotential (representation + input and output modules)"
            )
        own_cutoff = _model_cutoff(nnp)
        filters = any(isinstance(m, spk.atomistic.FilterShortRange) for m in nnp.input_modules)
        if cutoff is None and (own_cutoff is None or filters):
            raise ValueError(
                "cannot tell this schnetpack model's neighbor-list cutoff"
                + (" (it filters a longer list with FilterShortRange)" if filters else "")
                + "; pass cutoff= (Å) explicitly"
            )
        # schnetpack stores the cutoff in float32: allow for its rounding
        if cutoff is not None and own_cutoff is not None and cutoff < own_cutoff * (1 - 1e-6):
            raise ValueError(
                f"cutoff={cutoff} is shorter than the model's own cutoff {own_cutoff}: "
                "interactions would be truncated; use a cutoff >= the model's"
            )
        super().__init__(cutoff=own_cutoff if cutoff is None else cutoff, species=species)
        self.nnp = nnp if dtype is None else nnp.to(dtype=dtype)
        size = _embedding_size(nnp)
        self.max_atomic_number = None if size is None else size - 1
        derivative_types = (spk.atomistic.Forces, spk.atomistic.Response)
        self._skip_inputs = [isinstance(m, spk.atomistic.Strain) for m in nnp.input_modules]
        self._fast_inputs = [fast and is_pairwise_distances(m) for m in nnp.input_modules]
        self.fast_representation = bool(fast) and fast_schnet_supported(nnp.representation)
        # filters once per pair: only when the representation sees our (full) list unchanged
        self._pair_filters = self.fast_representation and all(
            skip or fast for skip, fast in zip(self._skip_inputs, self._fast_inputs, strict=True)
        )
        self._skip_outputs = [
            isinstance(m, derivative_types) or bool(getattr(m, "required_derivatives", None))
            for m in nnp.output_modules
        ]
        atomwise = [m for m in nnp.output_modules if isinstance(m, spk.atomistic.Atomwise)]
        if energy_key is None:
            keys = [m.energy_key for m in nnp.output_modules if hasattr(m, "energy_key")]
            keys += [m.output_key for m in atomwise] if len(atomwise) == 1 else []
            energy_key = (keys + ["energy"])[0]
        produced = {
            key
            for module, skip in zip(nnp.output_modules, self._skip_outputs, strict=True)
            if not skip
            for key in (getattr(module, "model_outputs", None) or [])
        }
        if energy_key not in produced:
            raise ValueError(
                f"the schnetpack model has no output {energy_key!r} (outputs: "
                f"{sorted(produced)}); pass energy_key= naming its energy output"
            )
        self.energy_key = energy_key
        # per-atom energies: the energy Atomwise's per-atom output, when every postprocessor
        # is one that can be applied atom by atom (casts, offsets)
        source = [m for m in atomwise if m.output_key == energy_key]
        known = (spk.transform.CastMap, spk.transform.AddOffsets)
        self._per_atom_key = None
        if (
            len(source) == 1
            and source[0].aggregation_mode == "sum"
            and all(isinstance(pp, known) for pp in nnp.postprocessors)
        ):
            self._per_atom_key = source[0].per_atom_output_key
        self.provides = ("energies",) if self._per_atom_key is not None else ()

    @property
    def spk_model(self) -> torch.nn.Module:
        """The wrapped schnetpack model."""
        return self.nnp

    def check_species(self, numbers: Sequence[int] | torch.Tensor) -> None:
        """Raise :class:`UnsupportedSpeciesError` for elements outside ``species`` or beyond the
        nuclear embedding."""
        super().check_species(numbers)
        present = {int(z) for z in torch.as_tensor(numbers).unique().tolist()}
        limit = self.max_atomic_number or len(chemical_symbols) - 1
        bad = sorted(z for z in present if not 1 <= z <= limit)
        if bad:
            raise UnsupportedSpeciesError(
                f"this schnetpack model embeds atomic numbers 1..{limit} only; "
                f"the structure contains atomic numbers {bad}"
            )

    def spk_inputs(self, batch: AtomsBatch) -> dict[str, torch.Tensor]:
        """schnetpack's input dict for ``batch``; differentiable in positions and cell.

        Keys (``schnetpack.properties``): Z (N,), R (N,3), cell (B,3,3), pbc (B,3), idx_m (N,),
        n_atoms (B,), idx (B,), idx_i/idx_j (E,), offsets (E,3) = shifts @ cell of the system
        of i, Å.
        """
        from schnetpack import properties as p

        idx_i, idx_j = batch.edge_index
        cells = batch.cell[batch.system_idx[idx_i]]
        offsets = torch.einsum("ek,ekl->el", batch.cell_shifts.to(batch.dtype), cells)
        return {
            p.Z: batch.numbers,
            p.R: batch.positions,
            p.cell: batch.cell,
            p.pbc: batch.pbc,
            p.idx_m: batch.system_idx,
            p.n_atoms: batch.n_atoms,
            p.idx: torch.arange(batch.n_systems, device=batch.device),
            p.idx_i: idx_i,
            p.idx_j: idx_j,
            p.offsets: offsets,
        }

    def forward(self, batch: AtomsBatch) -> dict[str, torch.Tensor]:
        """Energy (B,) and, when available, per-atom energies (N,) in the model's units."""
        from schnetpack.transform import AddOffsets

        nnp = self.nnp
        inputs = self.spk_inputs(batch)
        for module, skip, fast in zip(
            nnp.input_modules, self._skip_inputs, self._fast_inputs, strict=True
        ):
            if not skip:
                inputs = pairwise_vectors(inputs) if fast else module(inputs)
        if self.fast_representation:
            pairs = None
            if self._pair_filters:
                pairs = symmetric_pairs(*batch.edge_index, batch.cell_shifts, len(batch.numbers))
            inputs = schnet_representation(nnp.representation, inputs, pairs)
        else:
            inputs = nnp.representation(inputs)
        for module, skip in zip(nnp.output_modules, self._skip_outputs, strict=True):
            inputs = inputs if skip else module(inputs)
        per_atom = None
        if self._per_atom_key is not None:
            per_atom = inputs[self._per_atom_key].reshape(len(batch.numbers), -1)[:, 0]
        for pp in nnp.postprocessors if nnp.do_postprocessing else []:
            inputs = pp(inputs)
            if per_atom is not None and isinstance(pp, AddOffsets):
                per_atom = per_atom + self._atom_offsets(pp, batch).to(per_atom.dtype)
        energy = inputs[self.energy_key].reshape(batch.n_systems)
        out = {"energy": energy}
        if per_atom is not None:
            out["energies"] = per_atom.to(energy.dtype)
        return out

    def _atom_offsets(self, pp: torch.nn.Module, batch: AtomsBatch) -> torch.Tensor:
        """(N,) per-atom share of what an ``AddOffsets`` postprocessor adds to the energy."""
        offsets = torch.zeros(len(batch.numbers), dtype=pp.mean.dtype, device=batch.device)
        if pp._property != self.energy_key:
            return offsets
        if pp.add_mean:
            offsets = offsets + pp.mean.reshape(-1)[0]
        if pp.add_atomrefs:
            offsets = offsets + pp.atomref[batch.numbers]
        if not pp.is_extensive:  # the mean was added per system: share it equally
            offsets = offsets / batch.n_atoms[batch.system_idx]
        return offsets


# ----------------------------------------------------------------------------- building
def build_schnet_model(
    cutoff: float = 5.0,
    n_atom_basis: int = 32,
    n_interactions: int = 2,
    n_rbf: int = 20,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    representation: str = "schnet",
    *,
    n_filters: int | None = None,
    n_out_layers: int = 2,
    energy_key: str = "energy",
    per_atom_output_key: str | None = "energies",
    add_offsets: bool = False,
    stress: bool = False,
) -> torch.nn.Module:
    """A small schnetpack NeuralNetworkPotential (SchNet or PaiNN) with random weights.

    The network is Gaussian radial basis + cosine cutoff → representation → ``Atomwise`` energy
    (summed), plus schnetpack's ``Forces`` module (and ``Strain`` with ``stress=True``) so the
    model also works on its own inside schnetpack. The hyperparameters that define the
    architecture are stored in ``model.ase_mlmd_hyperparameters`` (TOML-safe), which
    :func:`export_schnetpack_card` writes into the card and :func:`model_from_state_dict`
    rebuilds from.

    Args:
        cutoff: cutoff radius, Å.
        n_atom_basis: feature size per atom.
        n_interactions: number of interaction blocks.
        n_rbf: number of Gaussian radial basis functions.
        seed: seed for the weights (the global torch RNG is left untouched).
        dtype: floating dtype of the parameters.
        representation: ``"schnet"`` or ``"painn"``.
        n_filters: SchNet filter size (default n_atom_basis).
        n_out_layers: layers of the atomwise output MLP.
        energy_key: output key of the energy.
        per_atom_output_key: key of per-atom energies (None: not provided).
        add_offsets: add an ``AddOffsets`` postprocessor (mean energy per atom and per-element
            reference energies, zero until set; part of the state dict).
        stress: also let schnetpack's own ``Forces`` module compute the stress.
    """
    arguments = dict(locals())
    params = {k: v for k, v in arguments.items() if k in ARCHITECTURE_KEYS and v is not None}
    spk = import_schnetpack()
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {representation!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        radial = spk.nn.GaussianRBF(n_rbf=n_rbf, cutoff=cutoff)
        cutoff_fn = spk.nn.CosineCutoff(cutoff)
        if representation == "schnet":
            rep = spk.representation.SchNet(
                n_atom_basis, n_interactions, radial, cutoff_fn, n_filters
            )
        else:
            rep = spk.representation.PaiNN(n_atom_basis, n_interactions, radial, cutoff_fn)
        atomwise = spk.atomistic.Atomwise(
            n_atom_basis,
            n_layers=n_out_layers,
            output_key=energy_key,
            per_atom_output_key=per_atom_output_key,
        )
        inputs = [spk.atomistic.PairwiseDistances()]
        if stress:
            inputs.insert(0, spk.atomistic.Strain())
        forces = spk.atomistic.Forces(calc_forces=True, calc_stress=stress, energy_key=energy_key)
        offsets = spk.transform.AddOffsets(energy_key, add_mean=True, add_atomrefs=True)
        postprocessors = [offsets] if add_offsets else []
        nnp = spk.model.NeuralNetworkPotential(
            representation=rep,
            input_modules=inputs,
            output_modules=[atomwise, forces],
            postprocessors=postprocessors,
            input_dtype_str=str(dtype).removeprefix("torch."),
        )
    nnp = nnp.to(dtype=dtype)
    nnp.ase_mlmd_hyperparameters = params
    return nnp
