"""FES / PMF against the PLUMED reference surface of alanine dipeptide (MDsim's fes.dat)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_file

from ase_mlmd.data.plumed import read_plumed_fes
from ase_mlmd.errors import DataFormatError, IncompatibleTrajectoriesError
from ase_mlmd.observables import KT_300K, compute_fes, compute_pmf, find_basins, pmf_mae

#: basins of fes.dat listed in METRICS.md: (φ°, ψ°, kJ/mol above the global minimum)
METRICS_BASINS = [(-66, 150, 0.0), (-72, -24, 0.5), (-156, 162, 2.3), (66, 12, 13.7)]
GRID_DEG = 6.0  # 360° / 60


def angular_gap(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


@pytest.fixture(scope="module")
def reference():
    return read_plumed_fes(shared_file("ala2/fes.dat"))


def test_read_plumed_fes_layout(reference):
    phi, psi, free = reference
    assert phi.shape == psi.shape == (60,) and free.shape == (60, 60)
    np.testing.assert_allclose(phi, -np.pi + np.arange(60) * 2 * np.pi / 60, atol=1e-8)
    np.testing.assert_allclose(psi, phi)
    # rows 1 and 2 of the file: (φ, ψ) = (-3.036872898, -3.141592654), (-2.932153143, ...)
    assert free[1, 0] == pytest.approx(7.126572470)
    assert free[2, 0] == pytest.approx(5.867676373)


def test_basins_of_the_reference_surface_are_those_of_metrics_md(reference):
    phi, psi, free = reference
    basins = find_basins(free, phi, psi, max_energy=15.0)
    assert len(basins) == len(METRICS_BASINS)
    for basin, (phi_deg, psi_deg, energy) in zip(basins, METRICS_BASINS, strict=True):
        found_phi, found_psi = basin.degrees
        assert angular_gap(found_phi, phi_deg) <= 2 * GRID_DEG
        assert angular_gap(found_psi, psi_deg) <= 2 * GRID_DEG
        assert basin.energy == pytest.approx(energy, abs=0.5)


def test_pmf_of_the_reference_against_itself_is_zero(reference):
    _, _, free = reference
    pmf_phi, pmf_psi = compute_pmf(free)
    assert pmf_phi.min() == 0.0 and pmf_psi.min() == 0.0
    assert pmf_mae(pmf_phi, pmf_phi) == 0.0 and pmf_mae(pmf_psi, pmf_psi) == 0.0
    # a constant offset of F changes nothing after the minimum shift
    assert pmf_mae(compute_pmf(free + 7.0)[0], pmf_phi) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(IncompatibleTrajectoriesError, match="different grids"):
        pmf_mae(pmf_phi, pmf_phi[:30])


def test_pmf_of_a_separable_surface_is_its_one_dimensional_part():
    grid = -np.pi + np.arange(60) * 2 * np.pi / 60
    a, b = 3.0 * np.cos(grid) + 1.0, 2.0 * np.sin(2 * grid)
    pmf_phi, pmf_psi = compute_pmf(a[:, None] + b[None, :], kT=KT_300K)
    np.testing.assert_allclose(pmf_phi, a - a.min(), atol=1e-12)
    np.testing.assert_allclose(pmf_psi, b - b.min(), atol=1e-12)
    assert pmf_mae(np.zeros(60), np.ones(60)) == pytest.approx(2 * np.pi)


def test_fes_from_boltzmann_samples_recovers_the_reference(reference):
    phi, psi, free = reference
    rng = np.random.default_rng(0)
    weight = np.exp(-(free - free.min()) / KT_300K).ravel()
    cells = rng.choice(weight.size, size=2_000_000, p=weight / weight.sum())
    half = np.pi / 60  # uniform within each grid point's bin
    phi_s = phi[cells // 60] + rng.uniform(-half, half, size=cells.size)
    psi_s = psi[cells % 60] + rng.uniform(-half, half, size=cells.size)
    grid_phi, grid_psi, sampled = compute_fes(phi_s, psi_s)
    np.testing.assert_allclose(grid_phi, phi, atol=1e-8)
    low = free - free.min() < 6.0
    np.testing.assert_allclose(sampled[low], (free - free.min())[low], atol=0.4)
    # the same basins, from samples
    expected = find_basins(free, max_energy=3.0)
    found = find_basins(sampled, max_energy=3.0)
    for basin in expected:
        assert any(
            angular_gap(basin.degrees[0], f.degrees[0]) <= 2 * GRID_DEG
            and angular_gap(basin.degrees[1], f.degrees[1]) <= 2 * GRID_DEG
            for f in found
        )
    # angles wrap periodically: +π is the grid point -π
    _, _, wrapped = compute_fes(np.array([np.pi, -np.pi]), np.array([0.0, 2 * np.pi]))
    assert np.isfinite(wrapped).sum() == 1 and wrapped[0, 30] == 0.0


def test_read_plumed_fes_rejects_other_files(tmp_path):
    bad = tmp_path / "not_a_grid.dat"
    bad.write_text("1 2 3\n4 5 6\n")
    with pytest.raises(DataFormatError, match="FIELDS"):
        read_plumed_fes(bad)
    short = tmp_path / "short.dat"
    short.write_text(
        "#! FIELDS phi psi file.free\n#! SET nbins_phi 2\n#! SET nbins_psi 2\n0 0 1\n1 0 2\n0 1 3\n"
    )
    with pytest.raises(DataFormatError, match="2 × 2 = 4 rows"):
        read_plumed_fes(short)


def test_clipped_pmf_mae_is_finite_and_charges_unvisited_accessible_regions():
    """With a cap, bins above it (or never visited) on both sides agree; a bin the reference
    puts below the cap that the simulation never visits costs (cap − reference)."""
    ref = np.array([0.0, 5.0, 12.0, 30.0, np.inf, 8.0])
    sim = np.array([1.0, 5.0, np.inf, np.inf, np.inf, 10.0])
    assert pmf_mae(sim, ref) == np.inf
    expected = (1.0 + 0.0 + (20.0 - 12.0) + 0.0 + 0.0 + 2.0) / 6 * 2 * np.pi
    assert pmf_mae(sim, ref, clip=20.0) == pytest.approx(expected)
    assert pmf_mae(ref, ref, clip=20.0) == 0.0
    with pytest.raises(ValueError, match="clip"):
        pmf_mae(sim, ref, clip=0.0)
