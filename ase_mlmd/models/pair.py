"""Analytic pair potentials as energy models: Lennard-Jones (Mie n-m), Morse, Yukawa, soft sphere.

``E = 1/2 Σ_i Σ_{j≠i} φ(r_ij)`` over the full neighbor list, with one of three cutoff treatments
(``cutoff_mode``):

* ``"shift"``: φ(r) − φ(r_c) below r_c, so the energy is continuous (ASE ``LennardJones`` with
  ``smooth=False``);
* ``"smooth"``: φ(r)·S(r) with the quintic smoothstep S going from 1 at ``r_on`` to 0 at r_c, so
  energy and forces are continuous (the switching function of ASE ``MorsePotential``);
* ``"none"``: plain truncation.

Pair potentials are element-agnostic unless ``species`` is given: like ASE's own LJ and Morse
calculators they apply the same φ to every pair.

With ``trainable=True`` the shape parameters (LJ: ε, σ; Morse: ε, r0, ρ0; Yukawa: A, κ; soft
sphere: ε, σ) are registered as 0-d
``torch.nn.Parameter`` tensors (for fitting, e.g. through differentiable MD); the cutoff and the
switching region stay fixed at the values set at construction. By default they are plain floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from ase_mlmd.batch import AtomsBatch
from ase_mlmd.models.interface import EnergyModel, scatter_sum, system_energy

CUTOFF_MODES = ("shift", "smooth", "none")


def _scalar(value: float | torch.Tensor) -> float:
    """A float or 0-d tensor (trainable parameter) as a float, for reprs."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def smoothstep_switch(r: torch.Tensor, r_on: float, r_cut: float) -> torch.Tensor:
    """Quintic switching S(r): 1 for r ≤ r_on, 0 for r ≥ r_cut, C² in between."""
    s = ((r_cut - r) / (r_cut - r_on)).clamp(0.0, 1.0)
    return s**3 * (10.0 - 15.0 * s + 6.0 * s**2)


class PairPotential(EnergyModel):
    """Base class: subclasses implement :meth:`pair_energy` φ(r) for r in Å, returning eV.

    Args:
        cutoff: r_c, Å.
        cutoff_mode: ``"shift"``, ``"smooth"`` or ``"none"``.
        r_on: start of the switching region for ``"smooth"`` (default 0.8 r_c), Å.
        species: atomic numbers accepted, or ``None`` for any.
        dtype: floating dtype the potential computes in.
    """

    def __init__(
        self,
        cutoff: float,
        cutoff_mode: str = "shift",
        r_on: float | None = None,
        species: Iterable[int] | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(cutoff=cutoff, species=species)
        if cutoff_mode not in CUTOFF_MODES:
            raise ValueError(f"cutoff_mode must be one of {CUTOFF_MODES}, got {cutoff_mode!r}")
        if not cutoff > 0:
            raise ValueError(f"cutoff must be positive, got {cutoff}")
        self.cutoff_mode = cutoff_mode
        self.r_on = 0.8 * self.cutoff if r_on is None else float(r_on)
        if cutoff_mode == "smooth" and not 0 <= self.r_on < self.cutoff:
            raise ValueError(f"r_on must lie in [0, cutoff), got r_on={r_on}, cutoff={cutoff}")
        self._dtype = dtype

    def _set_shape_parameters(self, trainable: bool, **values: float) -> None:
        """Store each value as a float, or as a 0-d ``nn.Parameter`` when ``trainable``."""
        self.trainable = bool(trainable)
        for name, value in values.items():
            value = float(value)
            if trainable:
                value = torch.nn.Parameter(torch.tensor(value, dtype=self._dtype))
            setattr(self, name, value)

    def _cutoff_repr(self) -> str:
        """The ``extra_repr`` tail every pair potential shares: cutoff, its mode, trainable."""
        trainable = ", trainable=True" if self.trainable else ""
        return f"cutoff={self.cutoff}, cutoff_mode={self.cutoff_mode!r}{trainable}"

    def pair_energy(self, r: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def cut_pair_energy(self, r: torch.Tensor) -> torch.Tensor:
        """φ(r) with the cutoff treatment applied; zero at and beyond r_c."""
        phi = self.pair_energy(r)
        if self.cutoff_mode == "shift":
            rc = torch.full((1,), self.cutoff, dtype=r.dtype, device=r.device)
            phi = phi - self.pair_energy(rc)
        elif self.cutoff_mode == "smooth":
            phi = phi * smoothstep_switch(r, self.r_on, self.cutoff)
        return torch.where(r < self.cutoff, phi, torch.zeros_like(phi))

    def forward(self, batch: AtomsBatch) -> dict[str, torch.Tensor]:
        r = torch.linalg.norm(batch.edge_vectors(), dim=1)
        half = 0.5 * self.cut_pair_energy(r)
        energies = scatter_sum(half, batch.edge_index[0], batch.positions.shape[0])
        return {"energy": system_energy(batch, energies), "energies": energies}


class LennardJones(PairPotential):
    """Lennard-Jones (Mie n-m) potential.

    φ(r) = C ε [(σ/r)^n − (σ/r)^m] with C = n/(n−m) (n/m)^(m/(n−m)), so the well depth is ε for
    every (n, m); n = 12, m = 6 gives the familiar 4ε[(σ/r)^12 − (σ/r)^6].

    Args:
        epsilon: well depth, eV.
        sigma: zero crossing of φ, Å.
        cutoff: r_c, Å (default 2.5 σ).
        n, m: repulsive and attractive exponents (n > m > 0).
        cutoff_mode, r_on, species, dtype: see :class:`PairPotential`.
        trainable: register ε and σ as ``nn.Parameter`` (the cutoff stays fixed).
    """

    def __init__(
        self,
        epsilon: float = 1.0,
        sigma: float = 1.0,
        cutoff: float | None = None,
        n: float = 12.0,
        m: float = 6.0,
        cutoff_mode: str = "shift",
        r_on: float | None = None,
        species: Iterable[int] | None = None,
        dtype: torch.dtype = torch.float64,
        trainable: bool = False,
    ) -> None:
        if not n > m > 0:
            raise ValueError(f"exponents must satisfy n > m > 0, got n={n}, m={m}")
        cutoff = 2.5 * sigma if cutoff is None else cutoff
        super().__init__(cutoff, cutoff_mode, r_on, species, dtype)
        self._set_shape_parameters(trainable, epsilon=epsilon, sigma=sigma)
        self.n, self.m = float(n), float(m)
        gap = self.n - self.m
        self.prefactor = self.n / gap * (self.n / self.m) ** (self.m / gap)

    def pair_energy(self, r: torch.Tensor) -> torch.Tensor:
        x = self.sigma / r
        return self.prefactor * self.epsilon * (x**self.n - x**self.m)

    def extra_repr(self) -> str:
        return (
            f"epsilon={_scalar(self.epsilon)}, sigma={_scalar(self.sigma)}, "
            f"n={self.n}, m={self.m}, {self._cutoff_repr()}"
        )


class Morse(PairPotential):
    """Morse potential in ASE's parameterization.

    φ(r) = ε e^{ρ0 (1 − r/r0)} (e^{ρ0 (1 − r/r0)} − 2): minimum −ε at r0; ρ0 (dimensionless) sets
    the width, ρ0 = a·r0 for the textbook form with inverse length a.

    Args:
        epsilon: well depth, eV.
        r0: equilibrium distance, Å.
        rho0: dimensionless stiffness.
        cutoff: r_c, Å (default 2.7 r0, ASE's default ``rcut2``).
        cutoff_mode: default ``"smooth"`` with ``r_on`` = 1.9 r0 (ASE's ``rcut1``).
        trainable: register ε, r0 and ρ0 as ``nn.Parameter`` (cutoff and r_on stay fixed).
    """

    def __init__(
        self,
        epsilon: float = 1.0,
        r0: float = 1.0,
        rho0: float = 6.0,
        cutoff: float | None = None,
        cutoff_mode: str = "smooth",
        r_on: float | None = None,
        species: Iterable[int] | None = None,
        dtype: torch.dtype = torch.float64,
        trainable: bool = False,
    ) -> None:
        cutoff = 2.7 * r0 if cutoff is None else cutoff
        r_on = min(1.9 * r0, 0.8 * cutoff) if r_on is None else r_on
        super().__init__(cutoff, cutoff_mode, r_on, species, dtype)
        self._set_shape_parameters(trainable, epsilon=epsilon, r0=r0, rho0=rho0)

    def pair_energy(self, r: torch.Tensor) -> torch.Tensor:
        e = torch.exp(self.rho0 * (1.0 - r / self.r0))
        return self.epsilon * e * (e - 2.0)

    def extra_repr(self) -> str:
        return (
            f"epsilon={_scalar(self.epsilon)}, r0={_scalar(self.r0)}, rho0={_scalar(self.rho0)}, "
            f"{self._cutoff_repr()}"
        )


class Yukawa(PairPotential):
    """Yukawa (screened Coulomb) potential φ(r) = A e^{−κ r} / r.

    Args:
        amplitude: A, eV·Å (positive: repulsive).
        kappa: inverse screening length κ, 1/Å.
        cutoff: r_c, Å (default 2.5 Å, the reduced-unit value of the DiffSim LJ systems).
        cutoff_mode: default ``"smooth"`` (r_on = 0.8 r_c); see :class:`PairPotential`.
        trainable: register A and κ as ``nn.Parameter``.
    """

    def __init__(
        self,
        amplitude: float = 1.0,
        kappa: float = 1.0,
        cutoff: float = 2.5,
        cutoff_mode: str = "smooth",
        r_on: float | None = None,
        species: Iterable[int] | None = None,
        dtype: torch.dtype = torch.float64,
        trainable: bool = False,
    ) -> None:
        super().__init__(cutoff, cutoff_mode, r_on, species, dtype)
        self._set_shape_parameters(trainable, amplitude=amplitude, kappa=kappa)

    def pair_energy(self, r: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.exp(-self.kappa * r) / r

    def extra_repr(self) -> str:
        return (
            f"amplitude={_scalar(self.amplitude)}, kappa={_scalar(self.kappa)}, "
            f"{self._cutoff_repr()}"
        )


class SoftSphere(PairPotential):
    """Soft-sphere (inverse power) repulsion φ(r) = ε (σ/r)^n.

    Args:
        epsilon: energy scale, eV (φ(σ) = ε).
        sigma: length scale, Å.
        n: exponent (> 0; 12 is the repulsive part of LJ).
        cutoff: r_c, Å (default 2.5 σ).
        cutoff_mode: default ``"smooth"``; see :class:`PairPotential`.
        trainable: register ε and σ as ``nn.Parameter``.
    """

    def __init__(
        self,
        epsilon: float = 1.0,
        sigma: float = 1.0,
        n: float = 12.0,
        cutoff: float | None = None,
        cutoff_mode: str = "smooth",
        r_on: float | None = None,
        species: Iterable[int] | None = None,
        dtype: torch.dtype = torch.float64,
        trainable: bool = False,
    ) -> None:
        if not n > 0:
            raise ValueError(f"the soft-sphere exponent must be positive, got n={n}")
        cutoff = 2.5 * sigma if cutoff is None else cutoff
        super().__init__(cutoff, cutoff_mode, r_on, species, dtype)
        self._set_shape_parameters(trainable, epsilon=epsilon, sigma=sigma)
        self.n = float(n)

    def pair_energy(self, r: torch.Tensor) -> torch.Tensor:
        return self.epsilon * (self.sigma / r) ** self.n

    def extra_repr(self) -> str:
        return (
            f"epsilon={_scalar(self.epsilon)}, sigma={_scalar(self.sigma)}, n={self.n}, "
            f"{self._cutoff_repr()}"
        )


def lennard_jones_minimum(sigma: float, n: float = 12.0, m: float = 6.0) -> float:
    """Distance of the minimum of the n-m potential, Å: σ (n/m)^(1/(n−m))."""
    return sigma * math.pow(n / m, 1.0 / (n - m))
