"""The differentiable (torch) RDF and VACF of ase_mlmd.observables.differentiable.

References: finite differences (gradients), ASE's neighbor list with a plain numpy Gaussian sum
over every bin (the smeared histogram), ideal-gas and FCC-crystal physics (g → 1, 12 nearest
neighbours at a/√2), the normalization the shared ``lj_rdf`` targets satisfy, and analytic VACFs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase.lattice.cubic import FaceCenteredCubic
from ase.neighborlist import neighbor_list

from ase_mlmd.observables.differentiable import (
    RDFGrid,
    compute_rdf_torch,
    compute_vacf_torch,
)


def liquid_like(n: int = 64, length: float = 8.0, seed: int = 0):
    """Random positions without overlaps below 0.8 Å (a crude hard-sphere fluid)."""
    rng = np.random.default_rng(seed)
    pos = []
    while len(pos) < n:
        x = rng.uniform(0, length, 3)
        d = np.array(pos) - x if pos else np.zeros((0, 3))
        d -= length * np.round(d / length)
        if not pos or np.linalg.norm(d, axis=1).min() > 0.8:
            pos.append(x)
    return torch.as_tensor(np.array(pos)), torch.eye(3, dtype=torch.float64) * length


def test_smeared_rdf_equals_numpy_gaussian_sum_over_ase_neighbor_list():
    """mdgrad normalization from an independent path: ASE pairs, every Gaussian of every bin."""
    from ase import Atoms

    positions, cell = liquid_like()
    grid = RDFGrid(0.75, 3.3, 100)
    ours = compute_rdf_torch(positions, cell, grid).numpy()
    atoms = Atoms("Ar64", positions=positions.numpy(), cell=cell.numpy(), pbc=True)
    d = neighbor_list("d", atoms, 3.3 + 1.0)[::1] / 1.0
    centres = np.linspace(0.75, 3.3, 100)
    counts = np.exp(-0.5 * ((d[:, None] - centres) / (2.55 / 99)) ** 2).sum(0)
    edges = np.linspace(0.75, 3.3, 101)
    shells = 4 / 3 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    ref = counts / counts.sum() * (4 / 3 * np.pi * 3.3**3) / shells
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-8)


def test_shared_targets_follow_the_mdgrad_normalization(shared_file):
    """Σ g ΔV = 4/3 π r_end³ holds for the target files as for our RDF (same definition)."""
    r, g = np.loadtxt(shared_file("lj_rdf/rdf_rho0.845_T1.0_dt0.01.csv"), delimiter=",")
    grid = RDFGrid(float(r[0]), float(r[-1]), len(r))
    np.testing.assert_allclose(r, grid.centres().numpy(), rtol=1e-12)
    volume = 4 / 3 * math.pi * r[-1] ** 3
    assert float((g * grid.shell_volumes().numpy()).sum()) == pytest.approx(volume, rel=1e-6)
    positions, cell = liquid_like(seed=2)
    ours = compute_rdf_torch(positions, cell, grid).numpy()
    assert float((ours * grid.shell_volumes().numpy()).sum()) == pytest.approx(volume, rel=1e-9)


def test_ideal_gas_limits_of_both_normalizations():
    rng = np.random.default_rng(1)
    length, n = 9.0, 200
    frames = torch.as_tensor(rng.uniform(0, length, (40, n, 3)))
    cell = torch.eye(3, dtype=torch.float64) * length
    grid = RDFGrid(1.0, 4.0, 31)
    inner = slice(3, -3)  # away from the truncated Gaussians at the grid ends
    g_density = compute_rdf_torch(frames, cell, grid, "density").numpy()
    assert np.abs(g_density[inner] - 1.0).max() < 0.06
    assert g_density[inner].mean() == pytest.approx(1.0, abs=0.01)
    g_mdgrad = compute_rdf_torch(frames, cell, grid, "mdgrad").numpy()
    # uniform pairs: count_k ∝ ∫ 4π r² exp(−(r − r_k)²/2w²) dr; then the mdgrad normalization
    r = np.linspace(0.0, 6.0, 60001)
    centres = grid.centres().numpy()
    counts = np.trapezoid(
        4 * np.pi * r[:, None] ** 2 * np.exp(-0.5 * ((r[:, None] - centres) / grid.sigma) ** 2),
        r,
        axis=0,
    )
    volume = 4 / 3 * np.pi * grid.end**3
    expected = counts / counts.sum() * volume / grid.shell_volumes().numpy()
    np.testing.assert_allclose(g_mdgrad[inner], expected[inner], atol=0.06)
    assert (g_mdgrad / expected)[inner].mean() == pytest.approx(1.0, abs=0.01)


def test_fcc_crystal_first_shell_has_twelve_neighbours_at_a_over_root2():
    a = 1.6
    atoms = FaceCenteredCubic("Ar", size=(4, 4, 4), latticeconstant=a, pbc=True)
    positions = torch.as_tensor(atoms.positions)
    cell = torch.as_tensor(atoms.cell.array)
    grid = RDFGrid(0.5, 3.0, 251, width=0.02)
    g = compute_rdf_torch(positions, cell, grid, "density").numpy()
    r = grid.centres().numpy()
    assert r[np.argmax(g)] == pytest.approx(a / math.sqrt(2), abs=grid.spacing)
    rho = len(atoms) / atoms.get_volume()
    shell = (r > 0.9) & (r < 1.4)
    coordination = (4 * np.pi * r[shell] ** 2 * rho * g[shell]).sum() * grid.spacing
    assert coordination == pytest.approx(12.0, rel=2e-3)


def test_rdf_gradient_equals_finite_differences():
    positions, cell = liquid_like(n=24, length=5.0, seed=3)
    grid = RDFGrid(0.75, 2.4, 30)
    weights = torch.linspace(-1.0, 1.0, 30, dtype=torch.float64)

    def loss(x):
        return (compute_rdf_torch(x, cell, grid) * weights).sum()

    x = positions.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(x), x)
    rng = np.random.default_rng(0)
    for _ in range(5):
        atom, axis = int(rng.integers(24)), int(rng.integers(3))
        h = 1e-6
        xp, xm = positions.clone(), positions.clone()
        xp[atom, axis] += h
        xm[atom, axis] -= h
        fd = (float(loss(xp)) - float(loss(xm))) / (2 * h)
        assert float(grad[atom, axis]) == pytest.approx(fd, rel=1e-5, abs=1e-7)
    cell_grad = torch.autograd.gradcheck(
        lambda c: compute_rdf_torch(positions, c, grid).sum(), (cell.clone().requires_grad_(),)
    )
    assert cell_grad


def test_vacf_analytic_cases():
    steps, n = 400, 50
    t = torch.arange(steps, dtype=torch.float64)
    omega = 2 * math.pi / 100.0
    # every atom oscillates, v = cos(ω t + φ_i) along x: c(τ) → ½ cos(ω τ) / 3 per component
    rng = np.random.default_rng(0)
    phases = torch.as_tensor(rng.uniform(0, 2 * math.pi, n))
    v = torch.zeros(steps, n, 3, dtype=torch.float64)
    v[:, :, 0] = torch.cos(omega * t[:, None] + phases)
    c = compute_vacf_torch(v, 60)
    lags = torch.arange(60, dtype=torch.float64)
    torch.testing.assert_close(c, torch.cos(omega * lags) / 6.0, atol=0.01, rtol=0)
    dot = compute_vacf_torch(v, 60, reduce="dot")
    torch.testing.assert_close(dot, 3 * c)
    torch.testing.assert_close(
        compute_vacf_torch(v, 60, normalize=True)[0], torch.tensor(1.0).double()
    )
    # ballistic atoms keep their velocity: c(τ) = ⟨v²⟩/3 at every lag
    ballistic = torch.as_tensor(rng.normal(size=(1, n, 3))).expand(30, n, 3)
    c = compute_vacf_torch(ballistic, 30)
    torch.testing.assert_close(c, c[0].expand(30))
    with pytest.raises(ValueError, match="max_lag"):
        compute_vacf_torch(v, steps + 1)


def test_rdf_input_errors():
    positions, cell = liquid_like(n=8, length=4.0)
    with pytest.raises(ValueError, match="normalization"):
        compute_rdf_torch(positions, cell, normalization="bogus")
    with pytest.raises(ValueError, match="start < end"):
        RDFGrid(3.0, 1.0, 10)
