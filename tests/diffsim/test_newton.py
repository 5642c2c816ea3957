"""Gauss–Newton (inverse Monte Carlo) fitting: its Jacobian is the derivative of the reweighted
average, its step solves the regularized least-squares problem, and a short fit moves a wrong
potential toward the one that made the target. ``diffsim fit --method newton`` refines a card.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import shared_file

from ase_mlmd import load_calculator
from ase_mlmd.diffsim.config import FitConfig
from ase_mlmd.diffsim.engine import EngineConfig
from ase_mlmd.diffsim.newton import (
    Correction,
    Moments,
    fit_newton,
    newton_step,
    trust_region_step,
)
from ase_mlmd.diffsim.reweighting import reweighted_average
from ase_mlmd.diffsim.systems import ThermoState, fcc_box
from ase_mlmd.models.pair import LennardJones
from ase_mlmd.observables.differentiable import (
    RDFGrid,
    compute_rdf_torch,
    frame_pair_distances,
)

ENGINE = EngineConfig(equilibration=100, seed=5)


def rattled_frames(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(1)
    frames = []
    for _ in range(n):
        atoms = fcc_box(0.25, 2)  # 32 atoms, 5.04 Å box
        atoms.rattle(0.3, rng=rng)
        frames.append(atoms)
    positions = torch.as_tensor(np.stack([a.positions for a in frames]))
    cells = torch.as_tensor(np.stack([a.cell.array for a in frames]))
    return positions, cells


def test_frame_gradients_are_the_derivative_of_the_pair_energy_sum():
    """A_f = ∂/∂c Σ_pairs ΔU_c(r) (autograd through the spline), also below the first knot."""
    positions, cells = rattled_frames(4)
    correction = Correction(0.75, 2.5, 0.05)
    d, frame = frame_pair_distances(positions, cells, 2.5)
    assert float(d.min()) < 0.75  # some pairs lie below the first knot
    a = correction.frame_gradients(d, frame, 4)
    gen = torch.Generator().manual_seed(0)
    c = torch.randn(correction.n_knots, dtype=torch.float64, generator=gen)
    c[-1] = 0.0
    c.requires_grad_(True)
    for f in range(4):
        total = correction(d[frame == f], c).sum()
        (grad,) = torch.autograd.grad(total, c)
        np.testing.assert_allclose(a[f].numpy(), grad[:-1].numpy(), rtol=1e-10, atol=1e-12)
        # U is linear in c: A · c is the energy itself
        assert float(a[f] @ c[:-1].detach()) == pytest.approx(float(total.detach()), rel=1e-10)


def test_jacobian_equals_the_derivative_of_the_reweighted_rdf():
    """J = −β Cov(g, A) is d⟨g⟩_c/dc at c = 0 of the thermodynamic-perturbation average."""
    positions, cells = rattled_frames(10)
    grid = RDFGrid(0.75, 2.4, 20)
    g = compute_rdf_torch(positions, cells, grid, per_frame=True)
    correction = Correction(0.75, 2.5, 0.1)
    d, frame = frame_pair_distances(positions, cells, 2.5)
    a = correction.frame_gradients(d, frame, 10)
    beta = 1.0 / 0.8
    moments = Moments(grid.nbins, correction.n_free)
    moments.add(g[:6], a[:6])  # in two parts, as the sampler adds chunks
    moments.add(g[6:], a[6:])
    mean, jac = moments.mean_and_jacobian(beta)

    def average(c: torch.Tensor) -> torch.Tensor:
        return reweighted_average(g, a @ c, torch.zeros(10, dtype=torch.float64), beta)[0]

    expected = torch.autograd.functional.jacobian(
        average, torch.zeros(correction.n_free, dtype=torch.float64)
    )
    np.testing.assert_allclose(mean.numpy(), g.mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(jac.numpy(), expected.numpy(), rtol=1e-9, atol=1e-12)
    assert float(jac.abs().max()) > 1e-2


def test_newton_step_solves_the_least_squares_problem():
    gen = torch.Generator().manual_seed(2)
    jacs = [torch.randn(50, 12, dtype=torch.float64, generator=gen) for _ in range(2)]
    truth = torch.sin(torch.linspace(0, 3, 12, dtype=torch.float64))
    residuals = [j @ truth for j in jacs]
    smooth = Correction(0.0, 1.2, 0.1).smoothness()
    assert smooth.shape == (10, 12)
    exact = newton_step(jacs, residuals, smooth, 0.0)
    np.testing.assert_allclose(exact.numpy(), truth.numpy(), atol=1e-7)
    # a strong smoothness penalty flattens the step's curvature
    rough = truth + 0.3 * torch.tensor([(-1.0) ** k for k in range(12)], dtype=torch.float64)
    noisy = [j @ rough for j in jacs]
    free = newton_step(jacs, noisy, smooth, 0.0)
    damped = newton_step(jacs, noisy, smooth, 1e3)
    assert float((smooth @ damped).norm()) < 0.2 * float((smooth @ free).norm())


def test_trust_region_step_damps_the_badly_determined_knots_first():
    """Within the trust region the step is the Gauss–Newton step; beyond it, the largest
    masked move equals the bound, and a knot the data barely determine (a tiny Jacobian column,
    like a knot deep in the wall) is damped instead of shrinking the whole step: the predicted
    residual stays far below that of the uniformly scaled Gauss–Newton step."""
    gen = torch.Generator().manual_seed(3)
    jac = torch.randn(60, 12, dtype=torch.float64, generator=gen)
    smooth = Correction(0.0, 1.2, 0.1).smoothness()
    mask = torch.ones(12, dtype=torch.bool)
    small = 0.2 * torch.cos(torch.linspace(0, 2, 12, dtype=torch.float64))
    within = trust_region_step([jac], [jac @ small], smooth, 0.0, 1.0, mask)
    np.testing.assert_allclose(within.numpy(), small.numpy(), atol=1e-7)
    jac[:, 0] *= 1e-3  # knot 0: barely determined
    wanted = small.clone()
    wanted[0] = 50.0
    residual = jac @ wanted + 0.01 * torch.randn(60, dtype=torch.float64, generator=gen)
    step = trust_region_step([jac], [residual], smooth, 1e-6, 0.5, mask)
    assert float(step.abs().max()) == pytest.approx(0.5, rel=1e-6)
    full = newton_step([jac], [residual], smooth, 1e-6)
    uniform = full * 0.5 / float(full.abs().max())
    lm_error = float((residual - jac @ step).norm())
    uniform_error = float((residual - jac @ uniform).norm())
    assert lm_error < 0.3 * uniform_error, (lm_error, uniform_error)


@pytest.fixture(scope="module")
def lj_state() -> ThermoState:
    """108 LJ atoms at ρ = 0.7, T = 1 (a liquid for every σ used here) with a target simulated
    here from the true LJ."""
    from test_gradient_methods import simulated_lj_state

    return simulated_lj_state(0.7, ENGINE, 600)


def test_short_newton_fit_moves_a_wrong_potential_toward_the_truth(lj_state):
    """σ = 1.02 → 1: three iterations of 100 frames (with fewer, e.g. 40, the Jacobian of a
    108-atom box is mostly noise and the steps do not help)."""
    start = LennardJones(1.0, 1.02, cutoff=2.5)
    config = FitConfig(
        method="newton",
        newton_iterations=3,
        newton_frames=100,
        sample_every=5,
        rw_equilibration=50,
        engine=ENGINE,
    )
    result = fit_newton([lj_state], config, start, log=lambda m: None, progress=False)
    devs = [h["rdf_dev[rho0.7_T1]"] for h in result.history]
    assert len(devs) == 3 and min(devs[1:]) < 0.6 * devs[0], devs
    r = torch.linspace(1.0, 1.3, 31, dtype=torch.float64)
    with torch.no_grad():
        truth = LennardJones(1.0, 1.0, cutoff=2.5).cut_pair_energy(r)
        before = (start.cut_pair_energy(r) - truth).abs().max()
        after = (result.potential.cut_pair_energy(r) - truth).abs().max()
    assert float(after) < 0.6 * float(before), (float(before), float(after))


def test_cli_newton_refines_a_card(tmp_path, capsys):
    from test_diffsim_cli import TARGET, TINY, diffsim

    target = str(shared_file(TARGET))
    ibi = tmp_path / "ibi"
    diffsim(
        ["ibi", "--target", target, "--iterations", "1", "--steps", "20", "-o", str(ibi)] + TINY
    )
    out = tmp_path / "refined"
    diffsim(
        ["fit", "--target", target, "--method", "newton", "--start", str(ibi / "card.toml")]
        + ["--epochs", "2", "--frames", "5", "--true-potential", "lj", "-o", str(out), *TINY]
    )
    assert "rdf_dev rho0.845_T1" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "newton" and np.isfinite(summary["u_error_max"])
    assert load_calculator(out / "card.toml").model.n_knots == 1001
