"""CG priors: bonded energy terms (forces = finite differences, periodic dihedrals, geometry
against mdtraj) and Boltzmann inversion recovering known parameters from sampled data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units

from ase_mlmd.batch import batch_from_atoms
from ase_mlmd.beads import make_cg_atoms
from ase_mlmd.calculators.ml_calculator import MLCalculator
from ase_mlmd.cg.priors import PriorSettings, fit_fourier, fit_harmonic, fit_priors, parse_terms
from ase_mlmd.cg.topology import CGTopology
from ase_mlmd.errors import DataFormatError, InvalidStructureError
from ase_mlmd.models.bonded import BondedPrior
from ase_mlmd.models.interface import evaluate
from ase_mlmd.observables.dihedrals import compute_dihedrals
from ase_mlmd.observables.internal import compute_dihedral_angles
from ase_mlmd.testing import check_batch_consistency, check_forces

CHAIN = CGTopology.chain(["A", "B", "C", "B", "A"])


def chain_positions(rng, n=1, noise=0.15):
    """(n, 5, 3) zig-zag chains with random distortions, Å."""
    base = np.array([[0, 0, 0], [1.4, 0.3, 0], [2.2, 1.5, 0.2], [3.5, 1.6, 1.0], [4.3, 2.8, 0.7]])
    return base + rng.normal(scale=noise, size=(n, 5, 3))


def full_prior() -> BondedPrior:
    rng = np.random.default_rng(1)
    return BondedPrior(
        5,
        bonds=CHAIN.bonds,
        bond_k=rng.uniform(10, 30, 4),
        bond_r0=rng.uniform(1.3, 1.5, 4),
        angles=CHAIN.angles,
        angle_k=rng.uniform(2, 6, 3),
        angle_theta0=rng.uniform(1.8, 2.2, 3),
        dihedrals=CHAIN.dihedrals,
        dihedral_cos=rng.normal(scale=0.05, size=(2, 3)),
        dihedral_sin=rng.normal(scale=0.05, size=(2, 3)),
        pairs=[(0, 4)],
        repulsion_sigma=[3.0],
        repulsion_epsilon=0.03,
        cutoff=6.0,
    )


def cg(positions, cell=None, pbc=False):
    return make_cg_atoms(positions, CHAIN.bead_types, ["A", "B", "C"], [12, 14, 13, 12, 14],
                         cell=cell, pbc=pbc)  # fmt: skip


def test_prior_forces_are_finite_differences_and_batches_agree():
    rng = np.random.default_rng(0)
    calc = MLCalculator(full_prior())
    atoms = cg(chain_positions(rng)[0])
    assert check_forces(calc, atoms, step=1e-5, atol=1e-6) < 1e-6
    types = list(CHAIN.bead_types) * 2
    pair = np.concatenate(chain_positions(rng, 2))
    two_molecules = make_cg_atoms(pair, types, ["A", "B", "C"], [12.0] * 10)
    check_batch_consistency(calc, [atoms, two_molecules, cg(chain_positions(rng)[0])])
    # two molecules in one system = the sum of each alone
    e2 = calc.get_potential_energy(two_molecules)
    e_each = sum(calc.get_potential_energy(cg(p)) for p in two_molecules.positions.reshape(2, 5, 3))
    assert e2 == pytest.approx(e_each, rel=1e-12)


def test_prior_is_rotation_translation_invariant_and_minimum_image_in_a_box():
    rng = np.random.default_rng(3)
    calc = MLCalculator(full_prior())
    pos = chain_positions(rng)[0]
    e0 = calc.get_potential_energy(cg(pos))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))  # a proper rotation (dihedral sin terms are chiral)
    assert calc.get_potential_energy(cg(pos @ q.T + 3.0)) == pytest.approx(e0, abs=1e-10)
    # the same molecule split across a periodic boundary: minimum image keeps its energy
    box = cg(pos + [8.0, 0, 0], cell=np.diag([10.0, 10.0, 10.0]), pbc=True)
    box.wrap()
    assert calc.get_potential_energy(box) == pytest.approx(e0, abs=1e-10)
    # the mirror image differs through the sine terms of the dihedrals only
    mirror = pos * [1, 1, -1]
    achiral = full_prior()
    achiral.dihedral_sin.zero_()
    calc_a = MLCalculator(achiral)
    assert calc_a.get_potential_energy(cg(mirror)) == pytest.approx(
        calc_a.get_potential_energy(cg(pos)), abs=1e-10
    )
    assert abs(calc.get_potential_energy(cg(mirror)) - e0) > 1e-6


def test_dihedral_energy_is_periodic_and_matches_mdtraj_angles():
    rng = np.random.default_rng(4)
    pos = chain_positions(rng, 20, noise=0.4)
    ours = compute_dihedral_angles(pos, CHAIN.dihedrals)
    np.testing.assert_allclose(ours, compute_dihedrals(pos, CHAIN.dihedrals), atol=1e-5)
    prior = BondedPrior(5, dihedrals=[(0, 1, 2, 3)], dihedral_cos=[[0.1, -0.02]],
                        dihedral_sin=[[0.05, 0.03]], cutoff=5.0)  # fmt: skip
    # rotate bead 3 about the 1-2 axis by phi: E(phi) must be periodic with 2π and match the
    # Fourier series evaluated at the measured angle
    base = chain_positions(np.random.default_rng(5), noise=0.0)[0]
    axis = (base[2] - base[1]) / np.linalg.norm(base[2] - base[1])

    def rotated(angle):
        v = base[3] - base[2]
        rot = (v * np.cos(angle) + np.cross(axis, v) * np.sin(angle)
               + axis * (axis @ v) * (1 - np.cos(angle)))  # fmt: skip
        p = base.copy()
        p[3] = base[2] + rot
        return p

    angles = np.linspace(0, 2 * np.pi, 9)
    energies = []
    for a in angles:
        p = rotated(a)
        e = float(evaluate(prior, batch_from_atoms([cg(p)], 5.0))["energy"][0])
        phi = compute_dihedral_angles(p, [(0, 1, 2, 3)])[0, 0]
        expected = 0.1 * np.cos(phi) - 0.02 * np.cos(2 * phi) + 0.05 * np.sin(phi)
        expected += 0.03 * np.sin(2 * phi)
        assert e == pytest.approx(expected, abs=1e-10)
        energies.append(e)
    assert energies[0] == pytest.approx(energies[-1], abs=1e-10)
    assert max(energies) - min(energies) > 0.05


def test_boltzmann_inversion_recovers_harmonic_bond_and_angle():
    rng = np.random.default_rng(7)
    kT = units.kB * 300.0
    k_true, r0_true = 20.0, 1.45  # eV/Å², Å
    # p(r) ∝ r² exp(-k (r - r0)² / 2kT): Gaussian proposals accepted with probability (r/r_max)²
    r = rng.normal(r0_true, np.sqrt(kT / k_true), 400_000)
    r = r[rng.uniform(size=r.size) < (r / r.max()) ** 2]
    k, r0 = fit_harmonic(r, kT, "r2", bins=80)
    assert k == pytest.approx(k_true, rel=0.03)
    assert r0 == pytest.approx(r0_true, abs=2e-3)
    # without the Jacobian the fit is biased (r0 shifts outwards by ~2kT/(k r0))
    _, r0_naive = fit_harmonic(r, kT, "none", bins=80)
    assert r0_naive - r0_true > 0.5 * 2 * kT / (k_true * r0_true)
    # angles: p(θ) ∝ sin θ exp(-k (θ - θ0)²/2kT)
    k_a, t0 = 4.0, 1.9
    th = rng.normal(t0, np.sqrt(kT / k_a), 400_000)
    th = th[rng.uniform(size=th.size) < np.sin(th)]
    k_fit, t0_fit = fit_harmonic(th, kT, "sin", bins=80)
    assert k_fit == pytest.approx(k_a, rel=0.03)
    assert t0_fit == pytest.approx(t0, abs=3e-3)


def test_one_sided_profile_puts_the_minimum_inside_the_data():
    """A profile that falls across the whole sampled range (the angle prior of a weakly
    coupled bead triple) has its free parabola's vertex far outside the data — once at
    θ₀ = −1.31 rad. The minimum goes to the low edge of the data, and the stiffness is the
    curvature of the fit around it."""
    rng = np.random.default_rng(11)
    kT = units.kB * 300.0
    slope = 2.0 * kT  # U(θ) = slope · (θ − 1.6) on [1.6, 2.6]: lowest at 1.6
    th = 1.6 + rng.exponential(kT / slope, 400_000)
    th = th[th < 2.6]
    th = th[rng.uniform(size=th.size) < np.sin(th) / np.sin(1.6)]  # p ∝ sin θ exp(−U/kT)
    k, t0 = fit_harmonic(th, kT, "sin", bins=60)
    assert th.min() <= t0 <= th.min() + 0.05
    assert k > 0


def test_boltzmann_inversion_recovers_fourier_dihedral():
    rng = np.random.default_rng(8)
    kT = units.kB * 300.0
    a_true, b_true = np.array([0.02, -0.01]), np.array([0.015, 0.0])

    def energy(phi):
        n = np.arange(1, 3)
        return np.cos(np.outer(phi, n)) @ a_true + np.sin(np.outer(phi, n)) @ b_true

    # rejection sampling of p(φ) ∝ exp(-U/kT)
    phi = rng.uniform(-np.pi, np.pi, 600_000)
    u = energy(phi)
    phi = phi[rng.uniform(size=phi.size) < np.exp(-(u - u.min()) / kT)]
    a, b = fit_fourier(phi, kT, n_harmonics=2, bins=60)
    np.testing.assert_allclose(a, a_true, atol=1e-3)
    np.testing.assert_allclose(b, b_true, atol=1e-3)


def test_fit_priors_from_sampled_chain_and_repulsion_sigma():
    rng = np.random.default_rng(9)
    pos = chain_positions(rng, 3000, noise=0.08)
    prior, summary = fit_priors(pos, CHAIN, PriorSettings(terms=("bonds", "angles", "repulsion")))
    bonds = np.linalg.norm(pos[:, 1:] - pos[:, :-1], axis=-1)
    np.testing.assert_allclose(summary["bonds"]["r0_A"], bonds.mean(0), atol=0.02)
    # exclusion 3: only beads 0 and 4 (4 bonds apart) repel; σ = their closest approach
    assert summary["repulsion"]["pairs"] == [(0, 4)]
    d04 = np.linalg.norm(pos[:, 4] - pos[:, 0], axis=-1)
    assert summary["repulsion"]["sigma_A"][0] == pytest.approx(d04.min())
    assert len(prior.dihedrals) == 0


def test_bad_prior_input():
    with pytest.raises(ValueError, match="unknown or no terms"):
        parse_terms("bonds,torsions")
    assert parse_terms("bonds, dihedrals") == ("bonds", "dihedrals")
    with pytest.raises(DataFormatError, match="too few"):
        fit_harmonic(np.array([1.0, 1.1]), 0.025)
    with pytest.raises(DataFormatError, match="do not match"):
        fit_priors(np.zeros((10, 4, 3)), CHAIN)
    with pytest.raises(InvalidStructureError, match="not a multiple"):
        prior = full_prior()
        atoms = cg(chain_positions(np.random.default_rng(0))[0])[:4]
        evaluate(prior, batch_from_atoms([atoms], 6.0))
    assert torch.is_tensor(full_prior().bond_k)
