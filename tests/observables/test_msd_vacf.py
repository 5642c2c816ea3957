"""MSD, diffusivity and VACF against analytic results (random walk, ballistic motion,
harmonic oscillator) and against direct sums over time origins."""

from __future__ import annotations

import numpy as np
import pytest

from ase_mlmd.errors import TrajectoryTooShortError
from ase_mlmd.observables import (
    compute_diffusivity,
    compute_msd,
    compute_vacf,
    diffusivity_to_si,
    unwrap_positions,
)


def direct_msd(x: np.ndarray) -> np.ndarray:
    """MSD by explicit loops over lags and origins (x already COM-free)."""
    n = len(x)
    return np.array([np.mean(np.sum((x[m:] - x[: n - m]) ** 2, axis=2)) for m in range(n)])


def test_random_walk_recovers_the_analytic_diffusivity():
    rng = np.random.default_rng(0)
    n_frames, n_atoms, sigma, dt_fs = 5000, 200, 0.1, 2.0
    steps = rng.normal(scale=sigma, size=(n_frames, n_atoms, 3))
    x = np.cumsum(steps, axis=0)
    t, d = compute_diffusivity(x, dt_fs, lag_stride=10, n_lags=10)
    # <Δx²> = σ² per step and component: D = σ² / (2 dt); removing the centre of mass of N
    # equal masses takes away a fraction 1/N of each atom's MSD
    analytic = sigma**2 / (2 * dt_fs) * (1 - 1 / n_atoms)
    np.testing.assert_allclose(t, np.arange(1, 11) * 10 * dt_fs)
    assert d[-1] == pytest.approx(analytic, rel=0.05)
    assert np.all(np.abs(d / analytic - 1) < 0.05)


def test_msd_equals_the_direct_sum_over_origins_and_ignores_drift():
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.normal(size=(60, 7, 3)), axis=0)
    masses = rng.uniform(1, 16, size=7)
    drifted = x + np.linspace(0, 50, 60)[:, None, None] * np.array([1.0, -2.0, 0.5])
    msd = compute_msd(drifted, masses=masses)
    com = np.einsum("tnj,n->tj", x, masses) / masses.sum()
    np.testing.assert_allclose(msd, direct_msd(x - com[:, None]), rtol=1e-9, atol=1e-9)
    # selecting atoms averages over those only (COM still of all atoms)
    sub = compute_msd(drifted, masses=masses, atoms=[0, 3])
    np.testing.assert_allclose(sub, direct_msd((x - com[:, None])[:, [0, 3]]), rtol=1e-9, atol=1e-9)


def test_ballistic_msd_is_v_squared_t_squared():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(10, 3))
    t = np.arange(200)[:, None, None] * 0.5
    x = rng.normal(size=(10, 3)) + v * t
    msd = compute_msd(x)
    v_rel = v - v.mean(axis=0)  # COM removed (equal masses)
    np.testing.assert_allclose(msd, np.mean(np.sum(v_rel**2, axis=1)) * t[:, 0, 0] ** 2, rtol=1e-8)


def test_msd_of_wrapped_positions_in_a_triclinic_cell():
    rng = np.random.default_rng(3)
    cell = np.array([[6.0, 0.0, 0.0], [2.0, 5.5, 0.0], [1.0, -1.5, 6.5]])
    x = np.cumsum(rng.normal(scale=0.3, size=(300, 5, 3)), axis=0)
    frac = x @ np.linalg.inv(cell)
    wrapped = (frac - np.floor(frac)) @ cell
    shift = unwrap_positions(wrapped, cell) - x  # the lattice vector of frame 0, constant
    np.testing.assert_allclose(shift, np.broadcast_to(shift[:1], shift.shape), atol=1e-9)
    np.testing.assert_allclose(
        compute_msd(wrapped, cells=cell), compute_msd(x), rtol=1e-8, atol=1e-9
    )


def test_diffusivity_too_short_says_how_many_frames_it_needs():
    x = np.zeros((500, 3, 3))
    with pytest.raises(TrajectoryTooShortError, match="at least 1001 frames.*has 500"):
        compute_diffusivity(x, 100.0, lag_stride=10, n_lags=100)


def test_diffusivity_unit_conversion():
    # 1 Å²/fs = 1e-20 m² / 1e-15 s = 1e-5 m²/s = 1e4 × 1e-9 m²/s
    assert diffusivity_to_si(2.3e-4) == pytest.approx(2.3)


def test_vacf_of_harmonic_oscillators_is_a_cosine():
    n_atoms, omega, amplitude, dt = 8, 0.3, 1.7, 0.1
    t = np.arange(400) * dt
    phases = 2 * np.pi * np.arange(n_atoms) / n_atoms  # evenly spaced: exact phase average
    v = np.zeros((len(t), n_atoms, 3))
    v[:, :, 0] = -amplitude * omega * np.sin(omega * t[:, None] + phases)
    vacf = compute_vacf(v, max_lag=150)
    expected = 0.5 * (amplitude * omega) ** 2 * np.cos(omega * t[:151])
    np.testing.assert_allclose(vacf, expected, atol=1e-12)
    np.testing.assert_allclose(
        compute_vacf(v, normalize=True, max_lag=150), np.cos(omega * t[:151]), atol=1e-12
    )


def test_vacf_equals_the_direct_sum_over_origins():
    rng = np.random.default_rng(4)
    v = rng.normal(size=(50, 6, 3))
    direct = [np.mean(np.sum(v[m:] * v[: 50 - m], axis=2)) for m in range(50)]
    np.testing.assert_allclose(compute_vacf(v), direct, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        compute_vacf(v, atoms=[1, 2])[:5],
        [np.mean(np.sum(v[m:, 1:3] * v[: 50 - m, 1:3], axis=2)) for m in range(5)],
        rtol=1e-10,
    )
    with pytest.raises(TrajectoryTooShortError, match="at least 51 frames"):
        compute_vacf(v, max_lag=50)
