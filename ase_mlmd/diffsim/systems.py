"""Thermodynamic states to fit at: an FCC start at density ρ, Maxwell–Boltzmann velocities at T.

Reduced Lennard-Jones units are ASE units with σ = 1 Å, ε = 1 eV and m = 1 amu: a reduced
density ρ* is ρ* atoms/Å³, a reduced temperature T* is k_B T = T* eV (T = T*/k_B K), and the
reduced time τ = σ √(m/ε) is one ASE time unit (Å √(amu/eV) ≈ 10.18 fs), so dt* = 0.01 is
``0.01 / ase.units.fs`` fs. The engine's integrators take fs and K; :func:`timestep_fs` and
:func:`temperature_kelvin` convert.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from ase import Atoms, units
from ase.lattice.cubic import FaceCenteredCubic

from ase_mlmd.diffsim.targets import RDFTarget, VACFTarget
from ase_mlmd.errors import InvalidStructureError

#: atoms per conventional FCC cell
FCC_BASIS = 4
#: the element of a one-component state (reduced units: only its label matters)
PURE_ELEMENT = "Ar"


def timestep_fs(dt_reduced: float) -> float:
    """A reduced time step (units of σ√(m/ε) = 1 ASE time unit) in fs."""
    return float(dt_reduced) / units.fs


def temperature_kelvin(t_reduced: float) -> float:
    """A reduced temperature (k_B T in units of ε = 1 eV) in K."""
    return float(t_reduced) / units.kB


@dataclasses.dataclass
class ThermoState:
    """One state point of a fit.

    Attributes:
        density: number density ρ, atoms/Å³ (reduced ρ*).
        temperature: k_B T, eV (reduced T*).
        target: the RDF to reproduce (None: simulate only, e.g. for validation).
        vacf: optional VACF target.
        n_cells: FCC cells per box edge (4 gives 256 atoms, the protocol of the paper).
        name: label in reports (default ``rho{ρ}_T{T}``, plus the composition for a mixture).
        composition: a mixture's ``{element: mole fraction}`` (None: one component,
            :data:`PURE_ELEMENT`);
            the FCC sites get round(x N) atoms of each element in a seeded random order.
        partials: the partial RDFs g_ab to reproduce (a mixture; each with ``pair`` set),
            instead of (or besides) ``target``.
    """

    density: float
    temperature: float
    target: RDFTarget | None = None
    vacf: VACFTarget | None = None
    n_cells: int = 4
    name: str = ""
    composition: dict[str, float] | None = None
    partials: list[RDFTarget] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.density) and self.density > 0):
            raise InvalidStructureError(f"density must be positive, got {self.density}")
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise InvalidStructureError(f"temperature must be positive, got {self.temperature}")
        if self.n_cells < 1:
            raise InvalidStructureError(f"n_cells must be >= 1, got {self.n_cells}")
        self._check_mixture()
        if not self.name:
            self.name = f"rho{self.density:g}_T{self.temperature:g}"
            if self.composition:
                self.name += "_" + "".join(f"{k}{v:g}" for k, v in self.composition.items())

    def _check_mixture(self) -> None:
        if self.composition is not None:
            if not self.composition or any(
                not (np.isfinite(x) and x > 0) for x in self.composition.values()
            ):
                raise InvalidStructureError(
                    f"composition {self.composition}: needs positive mole fractions"
                )
            if abs(sum(self.composition.values()) - 1.0) > 1e-6:
                raise InvalidStructureError(
                    f"composition {self.composition}: mole fractions must sum to 1"
                )
            counts = species_counts(self.composition, self.n_atoms)
            empty = [k for k, n in counts.items() if n == 0]
            if empty:
                raise InvalidStructureError(
                    f"composition {self.composition}: {self.n_atoms} atoms leave no {empty} atom; "
                    "use more FCC cells"
                )
        for target in self.partials:
            if target.pair is None:
                raise InvalidStructureError(
                    f"state {self.name or '?'}: partial targets need their species pair"
                )
            unknown = set(target.pair.split("-")) - set(self.elements)
            if unknown:
                raise InvalidStructureError(
                    f"target {target.source or target.pair}: elements {sorted(unknown)} are not "
                    f"among the state's elements {self.elements}"
                )

    @property
    def rdf_targets(self) -> list[RDFTarget]:
        """The RDFs a fit reproduces at this state: the partials, else ``[target]``."""
        if self.partials:
            return list(self.partials)
        return [] if self.target is None else [self.target]

    @property
    def elements(self) -> list[str]:
        """The element symbols of the box: the composition's, or the one of a pure liquid."""
        return list(self.composition) if self.composition else [PURE_ELEMENT]

    @property
    def is_mixture(self) -> bool:
        return bool(self.composition) and len(self.composition) > 1

    @property
    def n_atoms(self) -> int:
        return FCC_BASIS * self.n_cells**3

    @property
    def box_length(self) -> float:
        """Edge of the cubic box, Å."""
        return (self.n_atoms / self.density) ** (1.0 / 3.0)

    def check_box(self, cutoff: float) -> None:
        """Raise :class:`InvalidStructureError` if the box is shorter than twice the cutoff
        (an atom would then interact with two images of the same neighbor)."""
        length = self.box_length
        if length < 2.0 * cutoff:
            needed = int(np.ceil(2.0 * cutoff * (self.density / FCC_BASIS) ** (1 / 3)))
            raise InvalidStructureError(
                f"state {self.name}: {self.n_atoms} atoms at density {self.density:g} fill a box "
                f"of {length:.3f} Å, shorter than twice the cutoff ({2 * cutoff:.3f} Å). Use at "
                f"least {needed} FCC cells per edge (--cells {needed}, {FCC_BASIS * needed**3} "
                "atoms) or a shorter cutoff"
            )


def species_counts(composition: dict[str, float], n_atoms: int) -> dict[str, int]:
    """Atoms of each element for mole fractions ``composition`` (largest remainders, so the
    counts sum to ``n_atoms``)."""
    exact = {k: x * n_atoms for k, x in composition.items()}
    counts = {k: int(np.floor(v)) for k, v in exact.items()}
    order = sorted(exact, key=lambda k: counts[k] - exact[k])
    for k in order[: n_atoms - sum(counts.values())]:
        counts[k] += 1
    return counts


def fcc_box(
    density: float,
    n_cells: int = 4,
    symbol: str = PURE_ELEMENT,
    mass: float = 1.0,
    composition: dict[str, float] | None = None,
    seed: int = 0,
) -> Atoms:
    """A cubic FCC lattice of 4 n_cells³ atoms at number density ``density`` (atoms/Å³), all
    ``symbol``, or a random substitutional mixture of ``composition`` (seeded); masses ``mass``."""
    lattice = (FCC_BASIS / density) ** (1.0 / 3.0)
    atoms = FaceCenteredCubic(symbol=symbol, size=(n_cells,) * 3, latticeconstant=lattice, pbc=True)
    if composition:
        counts = species_counts(composition, len(atoms))
        symbols = np.concatenate([[k] * n for k, n in counts.items()])
        atoms.set_chemical_symbols(np.random.default_rng(seed).permutation(symbols).tolist())
    atoms.set_masses(np.full(len(atoms), mass))
    return atoms


def initial_atoms(state: ThermoState, seed: int = 0) -> Atoms:
    """FCC start of ``state`` with Maxwell–Boltzmann momenta at its temperature (net momentum
    removed, rescaled to exactly T), masses 1 amu."""
    atoms = fcc_box(state.density, state.n_cells, composition=state.composition, seed=seed)
    rng = np.random.default_rng(seed)
    masses = atoms.get_masses()[:, None]
    momenta = rng.normal(size=(len(atoms), 3)) * np.sqrt(masses * state.temperature)
    momenta -= momenta.mean(axis=0) * masses / masses.mean()
    kinetic = 0.5 * (momenta**2 / masses).sum()
    momenta *= np.sqrt(1.5 * len(atoms) * state.temperature / kinetic)
    atoms.set_momenta(momenta)
    return atoms
