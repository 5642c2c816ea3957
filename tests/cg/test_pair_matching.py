"""Force matching of a spline pair potential by linear least squares: the design matrix is the
spline's own force, a spline potential is recovered exactly, and an independent analytic
potential (ASE's Morse) is recovered up to the basis from frames it labelled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.morse import MorsePotential

from ase_mlmd.calculators.ml_calculator import MLCalculator
from ase_mlmd.cg.pair_matching import (
    SplineGrid,
    fit_pair_forces,
    force_design,
    frames_from_atoms,
    spline_basis,
)
from ase_mlmd.errors import DataFormatError, MissingLabelsError


def liquid_like_frames(calc, n_frames: int = 6, seed: int = 0):
    """Rattled FCC boxes (108 atoms, nearest neighbour 1.13 Å) labelled by ``calc``."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        atoms = bulk("Ar", "fcc", a=1.6, cubic=True).repeat(3)
        atoms.positions += rng.normal(scale=0.12, size=atoms.positions.shape)
        atoms.calc = calc
        atoms.get_forces()
        frames.append(atoms)
    return frames


def test_basis_reproduces_spline_pair_energy_and_derivative():
    grid = SplineGrid(0.8, 3.0, 12, r_on=2.6)
    values = np.sin(np.linspace(0, 4, 12)) - np.linspace(0, 4, 12) * 0.1
    values[-1] = 0.0
    spline = grid.spline(values)
    r = np.linspace(0.5, 3.2, 300)  # below r_min (linear), inside, switch region, beyond cutoff
    rt = torch.tensor(r, requires_grad=True)
    energy = spline.cut_pair_energy(rt)
    energy = torch.where(rt < spline.cutoff, energy, torch.zeros_like(energy))
    (slope,) = torch.autograd.grad(energy.sum(), rt)
    b, g = spline_basis(r, grid)
    np.testing.assert_allclose(b @ values, energy.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(g @ values, slope.numpy(), atol=1e-10)


def test_design_matrix_gives_the_calculator_forces():
    grid = SplineGrid(0.8, 2.5, 10)
    values = 2.0 * np.exp(-2.0 * (np.linspace(0.8, 2.5, 10) - 0.8)) - 0.3
    values[-1] = 0.0
    calc = MLCalculator(grid.spline(values))
    atoms = liquid_like_frames(calc, n_frames=1)[0]
    design, _ = force_design(atoms.positions, atoms.cell.array, atoms.pbc, grid)
    np.testing.assert_allclose(design @ values, atoms.get_forces().ravel(), atol=1e-10)


def test_spline_potential_is_recovered_exactly():
    grid = SplineGrid(0.8, 2.5, 14, r_on=2.2)
    knots = grid.knots
    truth = 1.5 * np.exp(-3.0 * (knots - 0.9)) - 0.5 * np.exp(-((knots - 1.4) ** 2) / 0.1)
    truth[-1] = 0.0
    frames = liquid_like_frames(MLCalculator(grid.spline(truth)), n_frames=4)
    result = fit_pair_forces(frames_from_atoms(frames), grid, regularization=0.0)
    sampled = np.concatenate([[True], result.pair_counts > 0])  # knots some pair reaches
    sampled &= np.concatenate([result.pair_counts > 0, [True]])
    np.testing.assert_allclose(result.values[sampled], truth[sampled], atol=1e-8)
    assert result.force_rmse < 1e-8 * result.force_rms


def test_morse_is_recovered_up_to_the_basis():
    # ASE's Morse: rcut1, rcut2 in units of r0 (smooth cutoff from 1.84 to 2.3 Å); soft enough
    # (rho0 = 3) that the closest pairs of the rattled boxes stay within the basis
    morse = MorsePotential(epsilon=1.0, r0=1.15, rho0=3.0, rcut1=1.6, rcut2=2.0)
    frames = liquid_like_frames(morse, n_frames=8)
    closest = min(f.get_all_distances(mic=True)[np.triu_indices(len(f), 1)].min() for f in frames)
    grid = SplineGrid(closest - 0.05, 2.4, 45)
    result = fit_pair_forces(frames_from_atoms(frames), grid, regularization=1e-8)
    # the true pair energy of ASE's Morse (with its cutoff function) on the sampled range
    r = np.linspace(closest, 2.4, 60)
    probe = [morse.get_potential_energy(_dimer(x)) for x in r]
    fitted = result.potential.cut_pair_energy(torch.tensor(r)).detach().numpy()
    assert np.max(np.abs(fitted - probe)) < 5e-3  # ε = 1: within 0.5 % of the well depth
    assert result.force_rmse < 2e-3 * result.force_rms


def _dimer(r: float):
    from ase import Atoms

    return Atoms("Ar2", positions=[[0, 0, 0], [r, 0, 0]])


def test_frames_without_forces_or_pairs_are_refused():
    from ase import Atoms

    grid = SplineGrid(0.8, 2.5, 10)
    bare = Atoms("Ar2", positions=[[0, 0, 0], [1.0, 0, 0]], cell=[10, 10, 10], pbc=True)
    with pytest.raises(MissingLabelsError, match="no forces"):
        fit_pair_forces(frames_from_atoms([bare]), grid)
    far = [(np.array([[0.0, 0, 0], [5.0, 0, 0]]), np.zeros((2, 3)), np.eye(3) * 10, [1, 1, 1])]
    with pytest.raises(DataFormatError, match="no bead pair"):
        fit_pair_forces(far, grid)
    with pytest.raises(MissingLabelsError, match="finite forces"):
        fit_pair_forces([(far[0][0], np.full((2, 3), np.nan), far[0][2], far[0][3])], grid)
