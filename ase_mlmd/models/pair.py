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

Forces without autograd: a potential that implements :meth:`PairPotential.pair_derivative`
(Lennard-Jones, Morse, Yukawa, soft sphere) has ``direct_forces = True``, and
:meth:`PairPotential.direct_evaluate` returns energy, forces and stress from φ'(r) directly, on a
full or a half neighbor list, without building a graph. :func:`~ase_mlmd.models.interface.evaluate`
takes that path whenever no graph through the results is wanted (``create_graph=False``); the
autograd path stays for differentiable runs and for potentials without a derivative (neural
pair potentials). On CPU tensors the four potentials here run that path as one compiled loop over
the pairs (:mod:`ase_mlmd.models.pair_kernel`); elsewhere, and for potentials without a row in
that loop (spline tables), as torch operations.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import torch

from ase_mlmd.batch import AtomsBatch
from ase_mlmd.models.interface import EnergyModel, scatter_sum, system_energy
from ase_mlmd.models.pair_direct import pair_forces_and_stress
from ase_mlmd.models.pair_kernel import (
    KIND_LENNARD_JONES,
    KIND_MORSE,
    KIND_SOFT_SPHERE,
    KIND_YUKAWA,
    KernelTable,
    kernel_applies,
    kernel_forces_and_stress,
    kernel_row,
)

CUTOFF_MODES = ("shift", "smooth", "none")


def _scalar(value: float | torch.Tensor) -> float:
    """A float or 0-d tensor (trainable parameter) as a float, for reprs."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def smoothstep_switch(r: torch.Tensor, r_on: float, r_cut: float) -> torch.Tensor:
    """Quintic switching S(r): 1 for r ≤ r_on, 0 for r ≥ r_cut, C² in between."""
    s = ((r_cut - r) / (r_cut - r_on)).clamp(0.0, 1.0)
    return s**3 * (10.0 - 15.0 * s + 6.0 * s**2)


@functools.cache
def _owner(cls: type, name: str) -> type:
    """The class of ``cls``'s MRO that defines ``name`` (asked on every MD step: cached)."""
    return next(k for k in cls.__mro__ if name in k.__dict__)


@functools.cache
def _direct_forces(cls: type) -> bool:
    """:attr:`PairPotential.direct_forces` of a class (it depends on the class only)."""
    derivative = _owner(cls, "pair_derivative")
    return (
        derivative is not PairPotential
        and derivative is _owner(cls, "pair_energy")
        and _owner(cls, "pair_terms") in (PairPotential, derivative)
        and _owner(cls, "forward") is PairPotential
        and _owner(cls, "cut_pair_energy") is PairPotential
    )


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

    def pair_derivative(self, r: torch.Tensor) -> torch.Tensor:
        """dφ/dr (eV/Å) at r (Å), without the cutoff treatment; optional for subclasses."""
        raise NotImplementedError(f"{type(self).__name__} has no analytic pair derivative")

    @property
    def direct_forces(self) -> bool:
        """True when φ'(r) is known, so forces need no autograd.

        Only when the class that gives ``pair_derivative`` also gives ``pair_energy`` (a
        subclass that changes φ without φ' keeps autograd) and nothing changes how φ becomes
        the energy (``forward``, ``cut_pair_energy``): the direct path would ignore that.
        """
        return _direct_forces(type(self))

    def _kernel_params(self) -> tuple[int, tuple[float, ...]] | None:
        """(kind, parameters) of this potential for the compiled pair loop, or None."""
        return None

    def kernel_row(self):
        """This potential as a row of the compiled pair loop
        (:func:`~ase_mlmd.models.pair_kernel.kernel_row`), or None when it has none: no
        analytic derivative, or a subclass that changes φ (its row would be its parent's)."""
        cls = type(self)
        if not self.direct_forces:
            return None
        if _owner(cls, "_kernel_params") is not _owner(cls, "pair_derivative"):
            return None
        spec = self._kernel_params()
        if spec is None:
            return None
        kind, params = spec
        return kernel_row(kind, self.cutoff_mode, self.cutoff, self.r_on, params)

    def kernel_table(self) -> KernelTable | None:
        """:meth:`kernel_row` as the table of the compiled pair loop, or None."""
        row = self.kernel_row()
        return None if row is None else KernelTable.single(row)

    def _energy_at_cutoff(self, like: torch.Tensor) -> torch.Tensor:
        rc = torch.full((1,), self.cutoff, dtype=like.dtype, device=like.device)
        return self.pair_energy(rc)

    def pair_terms(self, r2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cut pair energies and scaled derivatives at squared distances ``r2`` (E,), Å².

        Returns:
            ``(φ_c(r), -φ_c'(r)/r)``, both (E,), in eV and eV/Å²; φ_c is φ with the cutoff
            treatment (:meth:`cut_pair_energy`); both are zero at and beyond r_c.
        """
        r = torch.sqrt(r2)
        phi = self.pair_energy(r)
        dphi = self.pair_derivative(r)
        if self.cutoff_mode == "shift":
            phi = phi - self._energy_at_cutoff(r)
        elif self.cutoff_mode == "smooth":
            width = self.cutoff - self.r_on
            s = ((self.cutoff - r) / width).clamp(0.0, 1.0)
            switch = s**3 * (10.0 - 15.0 * s + 6.0 * s**2)
            # dS/dr = -30 s² (1 - s)² / width, zero outside the switching region
            dswitch = (-30.0 / width) * (s * (1.0 - s)).square()
            dphi = dphi * switch + phi * dswitch
            phi = phi * switch
        inside = r2 < self.cutoff**2
        return torch.where(inside, phi, 0.0), torch.where(inside, -dphi / r, 0.0)

    def direct_evaluate(
        self,
        batch: AtomsBatch,
        properties: Iterable[str] = ("energy", "forces"),
        half_list: bool = False,
        shift_vectors: torch.Tensor | None = None,
        flat_index: tuple[torch.Tensor, torch.Tensor] | None = None,
        centre_counts: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Energy, per-atom energies, forces (and stress) from φ'(r), without autograd.

        Args:
            batch: the systems; ``batch.edge_index`` may hold pairs beyond the cutoff (a skin
                list): they contribute nothing.
            properties: "stress" adds the (B, 3, 3) virial stress; the rest is always given.
            half_list: the list holds each pair once (otherwise both ways, the contract).
            shift_vectors: (E, 3) Cartesian image shifts of the edges, Å, if already known.
            flat_index: the edges' atoms as flat component indices, if already known
                (:func:`~ase_mlmd.models.pair_direct.flat_component_index` of each row).
            centre_counts: (N,) edges per centre atom when the edges are sorted by centre.

        Returns:
            energy (B,), energies (N,), forces (N, 3), stress (B, 3, 3): eV, eV/Å, eV/Å^3.
        """
        if not self.direct_forces:
            raise NotImplementedError(
                f"{type(self).__name__} has no analytic derivative; use "
                "ase_mlmd.models.interface.evaluate (autograd) instead"
            )
        table = self.kernel_table() if kernel_applies(batch) else None
        if table is not None:
            return kernel_forces_and_stress(table, batch, "stress" in set(properties), half_list)
        return pair_forces_and_stress(
            self.pair_terms,
            batch,
            "stress" in set(properties),
            half_list,
            shift_vectors,
            flat_index,
            centre_counts,
        )

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

    def pair_derivative(self, r: torch.Tensor) -> torch.Tensor:
        x = self.sigma / r
        return self.prefactor * self.epsilon * (self.m * x**self.m - self.n * x**self.n) / r

    def _kernel_params(self) -> tuple[int, tuple[float, ...]]:
        scale = self.prefactor * _scalar(self.epsilon)
        return KIND_LENNARD_JONES, (scale, _scalar(self.sigma), self.n, self.m)

    def pair_terms(self, r2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`PairPotential.pair_terms`, from r² alone (no square root) unless the
        cutoff is ``"smooth"``; the 12-6 powers by multiplication."""
        if self.cutoff_mode == "smooth":
            return super().pair_terms(r2)
        x2 = self.sigma**2 / r2
        if self.n == 12.0 and self.m == 6.0:
            xm = x2 * x2 * x2
            xn = xm * xm
        else:
            xm = x2 ** (0.5 * self.m)
            xn = x2 ** (0.5 * self.n)
        scale = self.prefactor * self.epsilon
        phi = scale * (xn - xm)
        force = (scale / r2) * (self.n * xn - self.m * xm)
        if self.cutoff_mode == "shift":
            phi = phi - self._energy_at_cutoff(r2)
        inside = r2 < self.cutoff**2
        return torch.where(inside, phi, 0.0), torch.where(inside, force, 0.0)

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

    def pair_derivative(self, r: torch.Tensor) -> torch.Tensor:
        e = torch.exp(self.rho0 * (1.0 - r / self.r0))
        return (-2.0 * self.epsilon * self.rho0 / self.r0) * e * (e - 1.0)

    def _kernel_params(self) -> tuple[int, tuple[float, ...]]:
        return KIND_MORSE, (_scalar(self.epsilon), _scalar(self.rho0), _scalar(self.r0))

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

    def pair_derivative(self, r: torch.Tensor) -> torch.Tensor:
        return -self.amplitude * torch.exp(-self.kappa * r) * (self.kappa * r + 1.0) / r**2

    def _kernel_params(self) -> tuple[int, tuple[float, ...]]:
        return KIND_YUKAWA, (_scalar(self.amplitude), _scalar(self.kappa))

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

    def pair_derivative(self, r: torch.Tensor) -> torch.Tensor:
        return -self.n * self.epsilon * (self.sigma / r) ** self.n / r

    def _kernel_params(self) -> tuple[int, tuple[float, ...]]:
        return KIND_SOFT_SPHERE, (_scalar(self.epsilon), _scalar(self.sigma), self.n)

    def extra_repr(self) -> str:
        return (
            f"epsilon={_scalar(self.epsilon)}, sigma={_scalar(self.sigma)}, n={self.n}, "
            f"{self._cutoff_repr()}"
        )


def lennard_jones_minimum(sigma: float, n: float = 12.0, m: float = 6.0) -> float:
    """Distance of the minimum of the n-m potential, Å: σ (n/m)^(1/(n−m))."""
    return sigma * math.pow(n / m, 1.0 / (n - m))
