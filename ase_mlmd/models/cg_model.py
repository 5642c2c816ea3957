"""A coarse-grained force field: a bonded prior plus a learned network correction, and its card.

``E(x) = E_prior(x) + E_network(x)`` over CG structures whose "atoms" are beads with pseudo
atomic numbers ``1 … n_types`` (the convention of :mod:`ase_mlmd.cg`). The network is a
schnetpack SchNet or PaiNN over bead types (the package's ``schnetpack`` backend) or a CGnet-style
MLP over internal coordinates (:mod:`ase_mlmd.models.cg_features`, network backend ``cgnet``).

Card (backend :data:`CG_BACKEND`)::

    backend = "cg-prior-network"
    species = ["*"]                       # beads are checked by bead type, not element
    [parameters]
    bead_types = ["C", "N", "CA"]          # ordered type list: pseudo number = 1 + index
    topology = {bead_types = [...], bonds = [[0, 1], ...]}
    n_beads = 5
    network = {backend = "schnetpack", parameters = {...}}   # or "cgnet"; absent: prior only
    [weights]                             # safetensors: prior.* buffers and network.* weights

The model refuses structures without bead types or with other types (an all-atom structure):
:meth:`CGForceField.check_atoms` (called by the calculator) and :meth:`check_species`.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from ase_mlmd.batch import AtomsBatch
from ase_mlmd.beads import check_bead_types
from ase_mlmd.errors import CardError, UnsupportedSpeciesError
from ase_mlmd.models.bonded import BondedPrior
from ase_mlmd.models.cg_features import CGNET_BACKEND, CGnetNetwork, cgnet_from_state
from ase_mlmd.models.interface import EnergyModel

CG_BACKEND = "cg-prior-network"
CG_CITATION = (
    "J. Wang et al., Machine learning of coarse-grained molecular dynamics force fields, ACS "
    "Cent. Sci. 5, 755 (2019); W. Wang and R. Gómez-Bombarelli, Coarse-graining auto-encoders "
    "for molecular dynamics, npj Comput. Mater. 5, 125 (2019)"
)


class CGForceField(EnergyModel):
    """Prior + network energy over CG structures.

    Args:
        prior: the bonded prior (None: network only).
        network: an energy model over pseudo numbers (None: prior only).
        bead_types: ordered bead type list (bead type ``t`` has pseudo number
            ``1 + bead_types.index(t)``).
        topology: the molecule's topology as ``CGTopology.to_dict()`` (kept for the card).
    """

    def __init__(
        self,
        prior: BondedPrior | None,
        network: EnergyModel | None,
        bead_types: list[str],
        topology: dict | None = None,
    ) -> None:
        if prior is None and network is None:
            raise ValueError("a CG force field needs a prior, a network or both")
        cutoff = network.cutoff if network is not None else prior.cutoff
        super().__init__(cutoff=cutoff, species=range(1, len(bead_types) + 1))
        self.prior = prior
        self.network = network
        self.bead_types = [str(t) for t in bead_types]
        self.topology = dict(topology or {})

    @property
    def dtype(self) -> torch.dtype:
        return self.network.dtype if self.network is not None else self.prior.dtype

    def check_species(self, numbers) -> None:
        present = {int(z) for z in torch.as_tensor(numbers).unique().tolist()}
        unknown = sorted(present - set(self.species))
        if unknown:
            raise UnsupportedSpeciesError(
                f"this CG model works on CG structures with bead types {self.bead_types} "
                f"(pseudo atomic numbers 1-{len(self.bead_types)}); the structure has atomic "
                f"numbers {unknown}, so it looks all-atom: map it with the CGMapping the model "
                "was trained with first"
            )

    def check_atoms(self, atoms) -> None:
        """Refuse ``atoms`` unless it is a CG structure with this model's bead types."""
        check_bead_types(atoms, self.bead_types, "this CG model")

    def forward(self, batch: AtomsBatch) -> dict[str, torch.Tensor]:
        energy = 0.0
        if self.prior is not None:
            energy = self.prior(batch)["energy"].to(batch.dtype)
        if self.network is not None:
            energy = energy + self.network(batch)["energy"].to(batch.dtype)
        return {"energy": energy}


def _network_state(network: EnergyModel) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and rebuild parameters of a schnetpack or CGnet network."""
    if isinstance(network, CGnetNetwork):
        return network.state_dict(), {
            "backend": CGNET_BACKEND,
            "parameters": network.hyperparameters(),
        }
    nnp = getattr(network, "nnp", None)
    params = getattr(nnp, "ase_mlmd_hyperparameters", None)
    if params is None:
        raise ValueError(
            "only schnetpack networks built by build_schnet_model can be exported in a CG card"
        )
    params = {k: v for k, v in params.items() if v is not None}
    return nnp.state_dict(), {"backend": "schnetpack", "parameters": params}


def export_cg_card(
    model: CGForceField,
    directory: str | os.PathLike,
    name: str,
    *,
    description: str = "",
    provenance: dict[str, Any] | None = None,
    card_file: str | None = None,
) -> Path:
    """Write ``NAME.safetensors`` then the card (both atomically); return the card's path."""
    from safetensors.torch import save_file

    from ase_mlmd.calculators.cards import sha256_of, write_card

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    parameters: dict[str, Any] = {
        "bead_types": model.bead_types,
        "topology": model.topology,
    }
    if model.prior is not None:
        parameters["n_beads"] = model.prior.n_beads
        tensors.update({f"prior.{k}": v for k, v in model.prior.state_dict().items()})
    if model.network is not None:
        state, network = _network_state(model.network)
        parameters["network"] = network
        tensors.update({f"network.{k}": v for k, v in state.items()})
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}
    weights = directory / f"{name}.safetensors"
    tmp = weights.with_name(f".{weights.name}.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, weights)
    table = {
        "name": name,
        "description": description or f"CG prior + network over beads {model.bead_types}",
        "backend": CG_BACKEND,
        "species": ["*"],
        "cutoff": float(model.cutoff),
        "dtype": str(model.dtype).removeprefix("torch."),
        "citation": CG_CITATION,
        "units": {"energy": "eV", "length": "Å"},
        "parameters": parameters,
        "weights": {"file": weights.name, "sha256": sha256_of(weights), "format": "safetensors"},
        "provenance": dict(provenance or {}),
    }
    return write_card(table, directory / (card_file or f"{name}.toml"))


def cg_model_from_card(card: Any, state: dict[str, torch.Tensor]) -> CGForceField:
    """Rebuild a :class:`CGForceField` from a card and its (verified) weights.

    Raises:
        CardError: missing parameters or weights that do not fit them.
    """
    params = dict(card.parameters)
    try:
        bead_types = list(params["bead_types"])
    except KeyError:
        raise CardError(f"{card.path}: a {CG_BACKEND} card needs [parameters] bead_types") from None
    prior = network = None
    prior_state = {k[6:]: v for k, v in state.items() if k.startswith("prior.")}
    if prior_state:
        if "n_beads" not in params:
            raise CardError(f"{card.path}: prior weights present but [parameters] n_beads missing")
        eps = prior_state.pop("repulsion_epsilon", torch.zeros(1))
        prior = BondedPrior(
            int(params["n_beads"]),
            **{k: v.numpy() for k, v in prior_state.items()},
            repulsion_epsilon=float(eps.reshape(-1)[0]),
            cutoff=card.cutoff,
        )
    if "network" in params:
        spec = dict(params["network"])
        net_state = {k[8:]: v for k, v in state.items() if k.startswith("network.")}
        if spec.get("backend") == CGNET_BACKEND:
            network = _cgnet_from_card(card, spec, net_state, len(bead_types))
        elif spec.get("backend") != "schnetpack":
            raise CardError(
                f"{card.path}: network backend {spec.get('backend')!r} unsupported "
                f"(known: schnetpack, {CGNET_BACKEND})"
            )
    if "network" in params and network is None:
        from ase_mlmd.models.backends.schnetpack_files import model_from_state_dict

        net_card = SimpleNamespace(
            parameters=dict(spec.get("parameters", {})),
            cutoff=card.cutoff,
            species=None,
            dtype=card.dtype,
            path=card.path,
        )
        network = model_from_state_dict(net_card, net_state)
    if prior is None and network is None:
        raise CardError(f"{card.path}: the weights hold neither prior.* nor network.* tensors")
    return CGForceField(prior, network, bead_types, params.get("topology"))


def _cgnet_from_card(
    card: Any, spec: dict, state: dict[str, torch.Tensor], n_types: int
) -> CGnetNetwork:
    """The CGnet network of a card; CardError when its parameters or weights do not fit."""
    try:
        return cgnet_from_state(
            dict(spec.get("parameters", {})),
            state,
            cutoff=card.cutoff,
            species=range(1, n_types + 1),
        )
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CardError(
            f"{card.path}: the {CGNET_BACKEND} network's parameters and weights do not fit "
            f"together ({exc}); re-export the card with ase-mlmd cg fit"
        ) from None
