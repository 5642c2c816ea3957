"""Conformance checks that every calculator and energy model must pass.

Public: third-party models can run the same checks on their calculators. Each ``check_*``
function raises ``AssertionError`` with the measured error when a check fails and returns the
measured error otherwise, so a caller can report it. Finite differences use ASE's own
``ase.calculators.fd`` functions (an implementation independent of ours).

The thresholds are meant for float64 models; float32 models need looser ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import BaseCalculator
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress


def _fresh(atoms: Atoms, calc: BaseCalculator) -> Atoms:
    copy = atoms.copy()
    copy.calc = calc
    return copy


def _energy_forces(calc: BaseCalculator, atoms: Atoms) -> tuple[float, np.ndarray]:
    a = _fresh(atoms, calc)
    return a.get_potential_energy(), a.get_forces()


def _fail(check: str, error: float, atol: float, detail: str = "") -> None:
    raise AssertionError(f"{check}: max error {error:.3e} exceeds {atol:.1e}. {detail}".strip())


def check_forces(
    calc: BaseCalculator,
    atoms: Atoms,
    step: float = 1e-5,
    atol: float = 1e-5,
    max_atoms: int = 12,
) -> float:
    """Forces equal −dE/dx by central finite differences (eV/Å).

    Args:
        calc: the calculator under test.
        atoms: a structure (not at a symmetric point where forces vanish, ideally rattled).
        step: displacement, Å.
        atol: tolerated max |F − F_fd|, eV/Å.
        max_atoms: check at most this many atoms (evenly spread) to bound the cost.
    """
    a = _fresh(atoms, calc)
    forces = a.get_forces()
    indices = np.unique(np.linspace(0, len(a) - 1, min(max_atoms, len(a))).astype(int))
    numerical = calculate_numerical_forces(a, eps=step, iatoms=indices)
    error = float(np.abs(forces[indices] - numerical).max())
    if error > atol:
        _fail("forces vs finite differences", error, atol)
    return error


def check_stress(
    calc: BaseCalculator, atoms: Atoms, step: float = 1e-5, atol: float = 1e-6
) -> float:
    """Stress (Voigt, eV/Å^3) equals (1/V) dE/dε by central finite differences of the strain."""
    a = _fresh(atoms, calc)
    stress = a.get_stress(voigt=True)
    numerical = calculate_numerical_stress(a, eps=step, voigt=True)
    error = float(np.abs(stress - numerical).max())
    if error > atol:
        _fail("stress vs finite differences", error, atol, f"analytic {stress}, fd {numerical}")
    return error


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def check_invariances(
    calc: BaseCalculator, atoms: Atoms, atol: float = 1e-8, seed: int = 0
) -> dict[str, float]:
    """Energy invariant and forces covariant under translation, rotation and permutation.

    Rotations rotate positions and cell together (so periodic systems are covered). Returns the
    max energy/force error of each transformation.
    """
    rng = np.random.default_rng(seed)
    e0, f0 = _energy_forces(calc, atoms)
    errors = {}

    moved = atoms.copy()
    moved.positions += rng.normal(size=3) * 1.7
    e, f = _energy_forces(calc, moved)
    errors["translation"] = max(abs(e - e0), float(np.abs(f - f0).max()))

    rot = _random_rotation(rng)
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rot.T
    rotated.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    e, f = _energy_forces(calc, rotated)
    errors["rotation"] = max(abs(e - e0), float(np.abs(f - f0 @ rot.T).max()))

    perm = rng.permutation(len(atoms))
    permuted = atoms[perm]
    e, f = _energy_forces(calc, permuted)
    errors["permutation"] = max(abs(e - e0), float(np.abs(f - f0[perm]).max()))

    worst = max(errors, key=errors.get)
    if errors[worst] > atol:
        _fail(f"{worst} invariance", errors[worst], atol, f"all errors: {errors}")
    return errors


def check_periodic_images(
    calc: BaseCalculator, atoms: Atoms, repeat: Sequence[int] = (2, 1, 1), atol: float = 1e-8
) -> float:
    """A periodic structure and its supercell agree (E per cell, forces), and so does the
    structure with atoms moved by lattice vectors (wrapping must not matter)."""
    if not atoms.pbc.all():
        raise ValueError("check_periodic_images needs a fully periodic structure")
    e0, f0 = _energy_forces(calc, atoms)
    n_cells = int(np.prod(repeat))
    e_super, f_super = _energy_forces(calc, atoms.repeat(repeat))
    error = abs(e_super - n_cells * e0) / n_cells
    error = max(error, float(np.abs(f_super - np.tile(f0, (n_cells, 1))).max()))

    shifted = atoms.copy()
    rng = np.random.default_rng(1)
    shifts = rng.integers(-2, 3, size=(len(atoms), 3))
    shifted.positions += shifts @ atoms.cell.array
    e, f = _energy_forces(calc, shifted)
    error = max(error, abs(e - e0), float(np.abs(f - f0).max()))
    if error > atol:
        _fail("periodic images (supercell / lattice shifts)", error, atol)
    return error


def check_batch_consistency(calc: Any, structures: Sequence[Atoms], atol: float = 1e-10) -> float:
    """``calc.calculate_batch`` gives the same energies and forces as one-by-one evaluation."""
    energies, forces = calc.calculate_batch(list(structures), properties=("energy", "forces"))
    error = 0.0
    for k, atoms in enumerate(structures):
        e, f = _energy_forces(calc, atoms)
        error = max(error, abs(float(energies[k]) - e), float(np.abs(forces[k] - f).max()))
    if error > atol:
        _fail("batch vs single evaluation", error, atol)
    return error


def check_nve_drift(
    calc: BaseCalculator,
    atoms: Atoms,
    steps: int = 100,
    timestep_fs: float = 0.5,
    temperature_K: float = 300.0,
    max_drift_per_atom: float = 1e-3,
    seed: int = 0,
) -> float:
    """Total energy of a short ASE VelocityVerlet run stays within ``max_drift_per_atom`` eV/atom.

    Returns max |E_tot(t) − E_tot(0)| / N over the run, eV/atom.
    """
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    a = _fresh(atoms, calc)
    thermalize_momenta(a, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    Stationary(a)
    e_start = a.get_total_energy()
    drift = 0.0
    dyn = VelocityVerlet(a, timestep=timestep_fs * units.fs)
    for _ in range(steps):
        dyn.run(1)
        drift = max(drift, abs(a.get_total_energy() - e_start) / len(a))
    if not np.isfinite(drift) or drift > max_drift_per_atom:
        _fail("NVE energy drift (eV/atom)", drift, max_drift_per_atom)
    return drift


def check_calculator(
    calc: Any,
    molecule: Atoms,
    periodic: Atoms | None = None,
    *,
    force_atol: float = 1e-5,
    stress_atol: float = 1e-6,
    invariance_atol: float = 1e-8,
    batch_atol: float = 1e-10,
    nve_steps: int = 50,
    timestep_fs: float = 0.5,
    temperature_K: float = 300.0,
    max_drift_per_atom: float = 1e-3,
    fd_step: float = 1e-5,
) -> dict[str, Any]:
    """Run every applicable check on a molecule and, if given, a periodic structure.

    Batch consistency is checked when the calculator has ``calculate_batch``. Returns the
    measured errors by check name. ``fd_step`` (Å, or strain) is the finite-difference step of
    the force and stress checks: float32 models need a larger one (e.g. 1e-2), since with
    1e-5 the rounding error of float32 energies swamps the difference quotient.
    """
    report: dict[str, Any] = {
        "forces_molecule": check_forces(calc, molecule, step=fd_step, atol=force_atol),
        "invariances_molecule": check_invariances(calc, molecule, atol=invariance_atol),
        "nve_drift_molecule": check_nve_drift(
            calc, molecule, nve_steps, timestep_fs, temperature_K, max_drift_per_atom
        ),
    }
    structures = [molecule]
    if periodic is not None:
        report["forces_periodic"] = check_forces(calc, periodic, step=fd_step, atol=force_atol)
        report["stress_periodic"] = check_stress(calc, periodic, step=fd_step, atol=stress_atol)
        report["invariances_periodic"] = check_invariances(calc, periodic, atol=invariance_atol)
        report["periodic_images"] = check_periodic_images(calc, periodic, atol=invariance_atol)
        structures.append(periodic)
    if hasattr(calc, "calculate_batch"):
        structures.append(molecule[: max(1, len(molecule) - 2)])
        report["batch"] = check_batch_consistency(calc, structures, atol=batch_atol)
    return report
