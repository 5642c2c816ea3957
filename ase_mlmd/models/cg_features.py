"""A CGnet-style network: internal-coordinate features of a CG molecule → dense network → energy.

Following CGnet (J. Wang et al., ACS Cent. Sci. 5, 755 (2019)), the features of one molecule
of ``n_beads`` beads are

* the distances of all bead pairs i < j, Å (``n_beads (n_beads − 1) / 2`` values);
* the bond angles of the topology, radians (apex in the middle);
* cos φ and sin φ of every dihedral φ of the topology (IUPAC sign, as the prior's dihedrals).

Distances and angles are the same for a structure and its mirror image; sin φ changes sign, so
this network (unlike a distance-only SchNet) can tell a chiral molecule from its mirror image.
The features are standardised with a mean and standard deviation (buffers set from training
structures by :meth:`CGnetNetwork.set_normalisation`) and fed to an MLP (tanh by default) whose
scalar output is the molecule's energy, eV. A system holds one or several copies of the
molecule, bead after bead, as for :class:`ase_mlmd.models.bonded.BondedPrior`; the system's
energy is the sum over its molecules. Forces and stress come from the shared autograd path
(:func:`ase_mlmd.models.interface.evaluate`). The features need no neighbour list; ``cutoff``
is only declared (for the sum with a prior).

Lipschitz regularisation (CGnet's λ, ``lipschitz=λ``): every dense layer uses the weight
W · min(1, λ / σ(W)), σ the spectral norm (largest singular value), so the spectral norm of
each layer as used is at most λ at every training step and in the card. CGnet projects W after
each optimiser step; here the same projection is applied when the layer is used (the factor is
not differentiated, as a projection is not), which keeps the bound without a hook in the
training loop and also holds for the EMA weights. The factor is recomputed only when the
weights change (cached on the parameter's version), so MD pays nothing for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ase_mlmd.batch import AtomsBatch
from ase_mlmd.models.bonded import BondedPrior, bond_angle, dihedral_angle
from ase_mlmd.models.interface import EnergyModel, scatter_sum

#: name of the network kind in a CG card (``[parameters.network] backend``)
CGNET_BACKEND = "cgnet"
ACTIVATIONS = {"tanh": torch.nn.Tanh, "silu": torch.nn.SiLU}


class CGnetNetwork(EnergyModel):
    """MLP energy over the internal coordinates of one CG molecule topology.

    Args:
        n_beads: beads per molecule.
        angles: (n_a, 3) bead indices of the bond angles, apex in the middle.
        dihedrals: (n_d, 4) bead indices of the dihedrals along bonds.
        hidden: widths of the hidden layers.
        activation: ``"tanh"`` (CGnet) or ``"silu"``.
        cutoff: declared cutoff, Å.
        species: pseudo atomic numbers accepted (None: any).
        dtype: floating dtype of weights and buffers.
        seed: seed of the weight initialisation (None: torch's global generator).
        lipschitz: bound λ on the spectral norm of every dense layer as used (None: none;
            CGnet's Lipschitz regularisation, see the module docstring). Energy in eV over
            standardised features, so λ is in those units.
    """

    provides: tuple[str, ...] = ()

    def __init__(
        self,
        n_beads: int,
        angles: np.ndarray | Sequence = (),
        dihedrals: np.ndarray | Sequence = (),
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "tanh",
        cutoff: float = 0.0,
        species: Sequence[int] | None = None,
        dtype: torch.dtype = torch.float64,
        seed: int | None = None,
        lipschitz: float | None = None,
    ) -> None:
        super().__init__(cutoff=cutoff, species=species)
        if lipschitz is not None and not float(lipschitz) > 0:
            raise ValueError(f"lipschitz must be a positive bound (or None), got {lipschitz}")
        self.lipschitz = None if lipschitz is None else float(lipschitz)
        self._scales: dict[int, tuple[tuple[int, int], torch.Tensor]] = {}
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.n_beads = int(n_beads)
        if self.n_beads < 2:
            raise ValueError(f"a CGnet network needs at least 2 beads, got {self.n_beads}")
        self.hidden = [int(h) for h in hidden]
        self.activation = activation
        pairs = np.array(np.triu_indices(self.n_beads, 1)).T
        self.register_buffer("pairs", torch.as_tensor(pairs, dtype=torch.int64).reshape(-1, 2))
        self.register_buffer("angles", torch.as_tensor(np.asarray(angles, np.int64).reshape(-1, 3)))
        self.register_buffer(
            "dihedrals", torch.as_tensor(np.asarray(dihedrals, np.int64).reshape(-1, 4))
        )
        for name in ("angles", "dihedrals"):
            idx = getattr(self, name)
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.n_beads):
                raise ValueError(f"{name} refer to beads outside 0 … {self.n_beads - 1}")
        n_in = self.n_features
        self.register_buffer("feature_mean", torch.zeros(n_in, dtype=dtype))
        self.register_buffer("feature_std", torch.ones(n_in, dtype=dtype))
        generator = torch.random.fork_rng() if seed is not None else contextlib.nullcontext()
        with generator:
            if seed is not None:
                torch.manual_seed(seed)
            layers: list[torch.nn.Module] = []
            width = n_in
            for h in self.hidden:
                layers += [torch.nn.Linear(width, h, dtype=dtype), ACTIVATIONS[activation]()]
                width = h
            layers.append(torch.nn.Linear(width, 1, dtype=dtype))
            self.mlp = torch.nn.Sequential(*layers)

    @property
    def n_features(self) -> int:
        return len(self.pairs) + len(self.angles) + 2 * len(self.dihedrals)

    def hyperparameters(self) -> dict[str, Any]:
        """What rebuilds this network (for a card's ``[parameters.network] parameters``)."""
        parameters = {
            "n_beads": self.n_beads,
            "angles": self.angles.tolist(),
            "dihedrals": self.dihedrals.tolist(),
            "hidden": list(self.hidden),
            "activation": self.activation,
        }
        if self.lipschitz is not None:
            parameters["lipschitz"] = self.lipschitz
        return parameters

    # ------------------------------------------------------------------ Lipschitz bound
    def _scale(self, k: int, weight: torch.Tensor) -> torch.Tensor:
        """min(1, λ / σ(W)) of layer ``k`` (a 0-d tensor, not differentiated), cached until
        the weight changes in place (optimiser step, state loading)."""
        key = (weight._version, weight.data_ptr())
        cached = self._scales.get(k)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                sigma = torch.linalg.matrix_norm(weight.detach(), ord=2)
                scale = torch.clamp(self.lipschitz / sigma, max=1.0)
            cached = (key, scale)
            self._scales[k] = cached
        return cached[1]

    def effective_weights(self) -> list[torch.Tensor]:
        """The weights of the dense layers as used (after the Lipschitz projection), in order."""
        out = []
        for k, layer in enumerate(self.mlp):
            if isinstance(layer, torch.nn.Linear):
                w = layer.weight
                out.append(w * self._scale(k, w) if self.lipschitz is not None else w)
        return out

    def _dense(self, x: torch.Tensor) -> torch.Tensor:
        if self.lipschitz is None:
            return self.mlp(x)
        for k, layer in enumerate(self.mlp):
            if isinstance(layer, torch.nn.Linear):
                scale = self._scale(k, layer.weight)
                x = torch.nn.functional.linear(x, layer.weight * scale, layer.bias)
            else:
                x = layer(x)
        return x

    # ------------------------------------------------------------------ features
    def features(self, batch: AtomsBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (unstandardised) features (M, n_features) of the M molecules of ``batch`` and
        the (M,) system of each molecule."""
        starts = BondedPrior._molecule_starts(self, batch)  # same whole-molecule rule as prior
        system = batch.system_idx[starts]

        def vec(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            ia, ib = starts[:, None] + a[None], starts[:, None] + b[None]
            return BondedPrior._displacement(batch, ia, ib, system[:, None].expand_as(ia))

        parts = [vec(self.pairs[:, 0], self.pairs[:, 1]).norm(dim=-1)]
        if len(self.angles):
            u = vec(self.angles[:, 1], self.angles[:, 0])
            v = vec(self.angles[:, 1], self.angles[:, 2])
            parts.append(bond_angle(u, v))
        if len(self.dihedrals):
            b0 = vec(self.dihedrals[:, 0], self.dihedrals[:, 1])
            b1 = vec(self.dihedrals[:, 1], self.dihedrals[:, 2])
            b2 = vec(self.dihedrals[:, 2], self.dihedrals[:, 3])
            phi = dihedral_angle(b0, b1, b2)
            parts += [torch.cos(phi), torch.sin(phi)]
        return torch.cat(parts, dim=-1), system

    @torch.no_grad()
    def set_normalisation(self, batch: AtomsBatch) -> None:
        """Set the feature mean and standard deviation from the molecules of ``batch``
        (training structures); a feature that does not vary keeps std 1."""
        feats = self.features(batch)[0].to(self.feature_mean.dtype)
        std = feats.std(0, unbiased=False) if len(feats) > 1 else torch.ones_like(feats[0])
        self.feature_mean.copy_(feats.mean(0))
        self.feature_std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    def forward(self, batch: AtomsBatch) -> dict[str, torch.Tensor]:
        feats, system = self.features(batch)
        x = (feats.to(self.feature_mean.dtype) - self.feature_mean) / self.feature_std
        energy = self._dense(x).squeeze(-1).to(batch.dtype)
        return {"energy": scatter_sum(energy, system, batch.n_systems)}


def cgnet_from_state(
    parameters: dict[str, Any],
    state: dict[str, torch.Tensor],
    *,
    cutoff: float,
    species: Sequence[int] | None,
) -> CGnetNetwork:
    """Rebuild a :class:`CGnetNetwork` from its card parameters and weights.

    Raises:
        KeyError: a parameter is missing; RuntimeError: weights that do not fit them.
    """
    dtype = state["feature_mean"].dtype if "feature_mean" in state else torch.float64
    network = CGnetNetwork(
        int(parameters["n_beads"]),
        angles=parameters.get("angles", ()),
        dihedrals=parameters.get("dihedrals", ()),
        hidden=parameters.get("hidden", (128, 128, 128)),
        activation=str(parameters.get("activation", "tanh")),
        lipschitz=parameters.get("lipschitz"),
        cutoff=cutoff,
        species=species,
        dtype=dtype,
    )
    network.load_state_dict(state)
    return network
