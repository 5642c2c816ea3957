"""A neural pair potential: an MLP on a Gaussian basis of the distance plus a repulsive prior.

φ(r) = MLP(G(r)) + φ_prior(r), multiplied by the quintic switch S(r) from ``r_on`` to the cutoff
(so energy and forces go smoothly to zero at r_c), as in Wang et al., "Learning pair potentials
using differentiable simulations" (J Chem Phys 2023):

* G(r): Gaussians exp(−(r − μ_k)² / (2 w²)) with centres μ_k evenly spaced on
  [``basis_start``, r_c] and width w = ``basis_width`` (default 0.1 Å, i.e. 0.1 σ in reduced
  units; the number of centres defaults to r_c / w);
* MLP: ``layers`` hidden layers of ``hidden`` units with ``activation`` (default 3 × 128, ELU)
  and a scalar output (its last layer starts at 0.1 × the default initialization, so the
  untrained model is close to the prior);
* φ_prior(r) = 4 ε_p [(σ_p/r)^n − (σ_p/r)^m] (an LJ-family term; ``prior_m = 0`` keeps only the
  repulsion 4 ε_p (σ_p/r)^n, the default, with ε_p = 2 eV, σ_p = 0.9 Å, n = 6). It keeps atoms
  apart where the data never go; ``prior_epsilon = 0`` switches it off.

Every hyperparameter is a plain number or string (:meth:`NeuralPair.hyperparameters`), so a
model card stores them in ``[parameters]`` and the weights as safetensors, loadable without
trust.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ase_mlmd.models.pair import PairPotential

ACTIVATIONS = {
    "elu": torch.nn.ELU,
    "silu": torch.nn.SiLU,
    "tanh": torch.nn.Tanh,
    "softplus": torch.nn.Softplus,
}


class GaussianBasis(torch.nn.Module):
    """(M,) distances → (M, K) Gaussians exp(−(r − μ_k)² / (2 w²)), μ_k on [start, stop]."""

    def __init__(self, start: float, stop: float, n: int, width: float, dtype: torch.dtype):
        super().__init__()
        if n < 1 or not width > 0:
            raise ValueError(f"need n >= 1 Gaussians of positive width, got n={n}, width={width}")
        self.register_buffer("centres", torch.linspace(start, stop, n, dtype=dtype))
        self.width = float(width)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * ((r[:, None] - self.centres) / self.width) ** 2)


class NeuralPair(PairPotential):
    """MLP-on-Gaussians pair potential with a repulsive prior and a smooth cutoff.

    Args:
        cutoff: r_c, Å.
        r_on: start of the switching region, Å (default 0.9 r_c).
        basis_width: Gaussian width w, Å.
        n_basis: number of Gaussians (default round(r_c / w)).
        basis_start: first Gaussian centre, Å.
        hidden: units per hidden layer. layers: number of hidden layers.
        activation: one of ``ACTIVATIONS``.
        prior_epsilon, prior_sigma, prior_n, prior_m: the prior 4 ε_p [(σ_p/r)^n − (σ_p/r)^m]
            in eV and Å (``prior_m = 0``: repulsion only).
        seed: seed of the weight initialization (``None``: torch's global generator).
        species, dtype: see :class:`~ase_mlmd.models.pair.PairPotential`.
    """

    def __init__(
        self,
        cutoff: float = 2.5,
        r_on: float | None = None,
        basis_width: float = 0.1,
        n_basis: int | None = None,
        basis_start: float = 0.0,
        hidden: int = 128,
        layers: int = 3,
        activation: str = "elu",
        prior_epsilon: float = 2.0,
        prior_sigma: float = 0.9,
        prior_n: float = 6.0,
        prior_m: float = 0.0,
        seed: int | None = None,
        species: Iterable[int] | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        r_on = 0.9 * float(cutoff) if r_on is None else r_on
        super().__init__(cutoff, "smooth", r_on, species, dtype)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if layers < 1 or hidden < 1:
            raise ValueError(f"need layers >= 1 and hidden >= 1, got {layers}, {hidden}")
        if prior_epsilon < 0 or prior_sigma <= 0 or prior_n <= 0 or not 0 <= prior_m < prior_n:
            raise ValueError(
                "the prior needs prior_epsilon >= 0, prior_sigma > 0 and 0 <= prior_m < prior_n; "
                f"got {prior_epsilon}, {prior_sigma}, {prior_n}, {prior_m}"
            )
        n_basis = max(1, round(self.cutoff / basis_width)) if n_basis is None else int(n_basis)
        self.trainable = True
        self._hyper = {
            "r_on": float(self.r_on),
            "basis_width": float(basis_width),
            "n_basis": n_basis,
            "basis_start": float(basis_start),
            "hidden": int(hidden),
            "layers": int(layers),
            "activation": activation,
            "prior_epsilon": float(prior_epsilon),
            "prior_sigma": float(prior_sigma),
            "prior_n": float(prior_n),
            "prior_m": float(prior_m),
        }
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            self.basis = GaussianBasis(basis_start, self.cutoff, n_basis, basis_width, dtype)
            modules: list[torch.nn.Module] = []
            width_in = n_basis
            for _ in range(layers):
                modules += [
                    torch.nn.Linear(width_in, hidden, dtype=dtype),
                    ACTIVATIONS[activation](),
                ]
                width_in = hidden
            last = torch.nn.Linear(width_in, 1, dtype=dtype)
            with torch.no_grad():
                last.weight.mul_(0.1)
                last.bias.zero_()
            modules.append(last)
            self.mlp = torch.nn.Sequential(*modules)

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments (besides species and dtype) as plain numbers and strings."""
        return {"cutoff": self.cutoff, **self._hyper}

    def prior_energy(self, r: torch.Tensor) -> torch.Tensor:
        """φ_prior(r), eV."""
        h = self._hyper
        x = h["prior_sigma"] / r
        phi = x ** h["prior_n"]
        if h["prior_m"] > 0:
            phi = phi - x ** h["prior_m"]
        return 4.0 * h["prior_epsilon"] * phi

    def pair_energy(self, r: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.basis(r)).squeeze(-1) + self.prior_energy(r)

    def extra_repr(self) -> str:
        h = self._hyper
        prior = f"4*{h['prior_epsilon']}*[({h['prior_sigma']}/r)^{h['prior_n']}"
        prior += f" - ({h['prior_sigma']}/r)^{h['prior_m']}]" if h["prior_m"] > 0 else "]"
        return (
            f"cutoff={self.cutoff}, r_on={self.r_on}, n_basis={h['n_basis']}, "
            f"basis_width={h['basis_width']}, hidden={h['hidden']}, layers={h['layers']}, "
            f"activation={h['activation']!r}, prior={prior}"
        )
