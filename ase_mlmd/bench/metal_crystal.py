"""Crystal properties of a cubic metal for any ASE calculator (METRICS.md §6).

* :func:`equation_of_state` — energies at volumes V₀(1 ± up to 6 %) and ASE's Birch–Murnaghan
  fit (``ase.eos.EquationOfState(..., eos="birchmurnaghan")``, as ``ase-mlmd run -E`` with
  ``--eos-type birchmurnaghan``): V₀ per atom (Å³), E₀ per atom (eV), B (GPa).
* :func:`relax_lattice` — the cubic cell at the EOS minimum (two EOS rounds), returned as ASE
  ``Atoms`` and as a pymatgen ``Structure``.
* :func:`cubic_elastic_constants` — C11, C12, C44 (GPa) from stresses of the relaxed cell at
  ±0.5 % and ±1 % strains: central differences at each amplitude, combined into the
  fourth-order estimate [8 D(h) − D(2h)] / 7 with D(h) = (σ(+h) − σ(−h)) / (2h).
* :func:`vacancy_formation_energy` — E_v = E(N−1, relaxed) − (N−1)/N · E(N) in a supercell of
  at least ``min_atoms`` atoms at the relaxed lattice constant (fixed cell, atoms relaxed).

Energies eV, lengths Å, stresses in ASE's sign (tensile positive) converted to GPa.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import BaseCalculator

from ase_mlmd.data.materials import deformed

#: strain amplitudes of the elastic constants (fractions)
ELASTIC_STRAINS = (0.005, 0.01)
#: the EOS volume range: V₀(1 ± EOS_VOLUME_RANGE), and its number of points
EOS_VOLUME_RANGE, EOS_POINTS = 0.06, 11


@dataclasses.dataclass
class EOSResult:
    """An equation of state: the points and the Birch–Murnaghan fit.

    Attributes:
        volumes: (P,) Å³ per atom. energies: (P,) eV per atom.
        v0: Å³ per atom. e0: eV per atom. bulk_modulus: GPa. a0: the first cell edge at V₀,
        Å (the lattice constant for a conventional cubic cell). b_prime: dB/dP.
    """

    volumes: np.ndarray
    energies: np.ndarray
    v0: float
    e0: float
    bulk_modulus: float
    a0: float
    b_prime: float = 4.0

    def curve(self, n: int = 100) -> tuple[np.ndarray, np.ndarray]:
        """The fitted E(V) per atom on ``n`` volumes spanning the points."""
        from ase.eos import birchmurnaghan

        v = np.linspace(self.volumes.min(), self.volumes.max(), n)
        b = self.bulk_modulus * units.GPa
        return v, birchmurnaghan(v, self.e0, b, self.b_prime, self.v0)

    def summary(self) -> dict[str, Any]:
        return {
            "a0_A": self.a0,
            "v0_A3_per_atom": self.v0,
            "e0_eV_per_atom": self.e0,
            "bulk_modulus_GPa": self.bulk_modulus,
            "b_prime": self.b_prime,
            "volumes_A3_per_atom": self.volumes.tolist(),
            "energies_eV_per_atom": self.energies.tolist(),
        }


def _energy(atoms: Atoms, calc: BaseCalculator) -> float:
    atoms = atoms.copy()
    atoms.calc = calc
    return float(atoms.get_potential_energy())


def _stress(atoms: Atoms, calc: BaseCalculator) -> np.ndarray:
    """Voigt stress (6,), eV/Å³, ASE order xx yy zz yz xz xy."""
    atoms = atoms.copy()
    atoms.calc = calc
    return np.asarray(atoms.get_stress(voigt=True), dtype=float)


def _scaled_cell(atoms: Atoms, volume_factor: float) -> Atoms:
    return deformed(atoms, (volume_factor ** (1.0 / 3.0) - 1.0) * np.eye(3))


def equation_of_state(
    crystal: Atoms,
    calc: BaseCalculator,
    volume_range: float = EOS_VOLUME_RANGE,
    points: int = EOS_POINTS,
) -> EOSResult:
    """Energies at ``points`` volumes in V(1 ± ``volume_range``) of ``crystal`` (cubic cell,
    positions scaled with it) and the Birch–Murnaghan fit of ase.eos.

    Raises:
        ValueError: fewer than 5 points or a range outside (0, 0.2]; or ASE's fit fails
            (the minimum is outside the range: start nearer to the equilibrium volume).
    """
    from ase.eos import EquationOfState

    if points < 5 or not 0 < volume_range <= 0.2:
        raise ValueError(f"need >= 5 EOS points and 0 < range <= 0.2, got {points}, {volume_range}")
    n = len(crystal)
    factors = np.linspace(1 - volume_range, 1 + volume_range, points)
    volumes = crystal.get_volume() * factors / n
    energies = np.array([_energy(_scaled_cell(crystal, f), calc) for f in factors]) / n
    eos = EquationOfState(volumes, energies, eos="birchmurnaghan")
    v0, e0, b = eos.fit()
    b_prime = float(eos.eos_parameters[2])
    a0 = float(crystal.cell.lengths()[0] * np.cbrt(v0 * n / crystal.get_volume()))
    return EOSResult(volumes, energies, float(v0), float(e0), float(b / units.GPa), a0, b_prime)


def relax_lattice(crystal: Any, calc: BaseCalculator, rounds: int = 2) -> tuple[Atoms, EOSResult]:
    """The cubic crystal scaled to its EOS minimum (``rounds`` EOS fits, each centred on the
    previous V₀); returns the relaxed ``Atoms`` and the last EOS (around the relaxed volume)."""
    from ase_mlmd.structures import to_atoms

    atoms = to_atoms(crystal).copy()
    eos = None
    for _ in range(rounds):
        eos = equation_of_state(atoms, calc)
        atoms = _scaled_cell(atoms, eos.v0 * len(atoms) / atoms.get_volume())
    assert eos is not None
    return atoms, eos


def to_pymatgen(atoms: Atoms):
    """A pymatgen ``Structure`` of periodic ``atoms`` (pymatgen's ``AseAtomsAdaptor``)."""
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(atoms)


def _strained(atoms: Atoms, voigt_index: int, strain: float) -> Atoms:
    """``atoms`` under one Voigt strain component (engineering shear for indices 3-5)."""
    eps = np.zeros((3, 3))
    pairs = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    i, j = pairs[voigt_index]
    if i == j:
        eps[i, i] = strain
    else:
        eps[i, j] = eps[j, i] = strain / 2.0
    return deformed(atoms, eps)


def _relaxed_stress(atoms: Atoms, calc: BaseCalculator, fmax: float) -> np.ndarray:
    """Stress after relaxing the atoms (fixed cell) when any force exceeds ``fmax``."""
    from ase.optimize import BFGS

    atoms = atoms.copy()
    atoms.calc = calc
    if np.abs(atoms.get_forces()).max() > fmax:
        BFGS(atoms, logfile=None).run(fmax=fmax, steps=200)
    return np.asarray(atoms.get_stress(voigt=True), dtype=float)


def stress_derivatives(
    crystal: Atoms,
    calc: BaseCalculator,
    voigt_index: int,
    strains: tuple[float, ...] = ELASTIC_STRAINS,
    fmax: float = 1e-4,
) -> dict[float, np.ndarray]:
    """Central differences dσ/dε_k (6,), GPa, for strain component ``voigt_index`` at each
    amplitude h: (σ(+h) − σ(−h)) / (2h); atoms relaxed at each strain when forces appear."""
    out = {}
    for h in strains:
        plus = _relaxed_stress(_strained(crystal, voigt_index, h), calc, fmax)
        minus = _relaxed_stress(_strained(crystal, voigt_index, -h), calc, fmax)
        out[h] = (plus - minus) / (2.0 * h) / units.GPa
    return out


def _richardson(d: dict[float, np.ndarray]) -> np.ndarray:
    """[8 D(h) − D(2h)] / 7 when the amplitudes are h and 2h, else D at the smallest h."""
    hs = sorted(d)
    if len(hs) == 2 and math.isclose(hs[1], 2 * hs[0]):
        return (8.0 * d[hs[0]] - d[hs[1]]) / 7.0
    return d[hs[0]]


def cubic_elastic_constants(
    crystal: Atoms, calc: BaseCalculator, strains: tuple[float, ...] = ELASTIC_STRAINS
) -> dict[str, Any]:
    """C11, C12, C44 (GPa) of a relaxed cubic crystal from central stress differences.

    C11 = dσxx/dεxx and C12 = (dσyy + dσzz)/(2 dεxx) under εxx; C44 = dσyz/dγyz under the
    engineering shear γyz. Returns ``C11``, ``C12``, ``C44``, the bulk modulus
    ``B_elastic`` = (C11 + 2 C12)/3 and ``by_strain``: the same at each amplitude alone.
    """
    normal = stress_derivatives(crystal, calc, 0, strains)
    shear = stress_derivatives(crystal, calc, 3, strains)

    def constants(n: np.ndarray, s: np.ndarray) -> dict[str, float]:
        c11, c12, c44 = float(n[0]), float((n[1] + n[2]) / 2), float(s[3])
        return {"C11": c11, "C12": c12, "C44": c44, "B_elastic": (c11 + 2 * c12) / 3}

    result: dict[str, Any] = constants(_richardson(normal), _richardson(shear))
    result["by_strain"] = {f"{h:g}": constants(normal[h], shear[h]) for h in sorted(normal)}
    return result


def supercell_repeat(crystal: Atoms, min_atoms: int = 100) -> int:
    """The smallest n with n³ · len(crystal) ≥ ``min_atoms``."""
    return max(1, math.ceil((min_atoms / len(crystal)) ** (1 / 3) - 1e-9))


def vacancy_formation_energy(
    crystal: Atoms,
    calc: BaseCalculator,
    min_atoms: int = 100,
    fmax: float = 0.01,
    max_steps: int = 300,
) -> dict[str, float]:
    """E_v = E(N−1, relaxed) − (N−1)/N · E(N) of one vacancy, eV.

    The supercell repeats the relaxed ``crystal`` until it has ≥ ``min_atoms`` atoms; atom 0
    is removed and the rest relaxed with BFGS (fixed cell) to ``fmax`` eV/Å.
    Returns ``E_vac_eV``, ``n_atoms`` (N), ``relax_steps`` and ``E_unrelaxed_eV``.
    """
    from ase.optimize import BFGS

    n = supercell_repeat(crystal, min_atoms)
    perfect = crystal.repeat(n)
    big = len(perfect)
    e_perfect = _energy(perfect, calc)
    vacancy = perfect.copy()
    del vacancy[0]
    vacancy.calc = calc
    e_unrelaxed = float(vacancy.get_potential_energy())
    opt = BFGS(vacancy, logfile=None)
    opt.run(fmax=fmax, steps=max_steps)
    e_relaxed = float(vacancy.get_potential_energy())
    scale = (big - 1) / big
    return {
        "E_vac_eV": e_relaxed - scale * e_perfect,
        "E_vac_unrelaxed_eV": e_unrelaxed - scale * e_perfect,
        "n_atoms": big,
        "relax_steps": int(opt.nsteps),
    }


__all__ = [
    "ELASTIC_STRAINS",
    "EOSResult",
    "cubic_elastic_constants",
    "equation_of_state",
    "relax_lattice",
    "stress_derivatives",
    "supercell_repeat",
    "to_pymatgen",
    "vacancy_formation_energy",
]
