"""The three DiffSim methods on tiny systems: BPTT moves σ toward the truth, reweighting equals
thermodynamic perturbation theory, IBI updates in the right direction, explosions are recovered.

System: 108 LJ atoms (3 FCC cells) at ρ = 0.845, the smallest box that holds a 2.5 σ cutoff.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import units
from ase.calculators.lj import LennardJones as AseLennardJones

from ase_mlmd.diffsim.bptt import fit_bptt
from ase_mlmd.diffsim.config import FitConfig
from ase_mlmd.diffsim.engine import Engine, EngineConfig, production_rdf
from ase_mlmd.diffsim.ibi import G_MIN, ibi_initial_guess, ibi_update
from ase_mlmd.diffsim.report import export_card
from ase_mlmd.diffsim.reweighting import StoredFrames, reweighted_average
from ase_mlmd.diffsim.systems import ThermoState, fcc_box
from ase_mlmd.diffsim.tabulate import PairTable
from ase_mlmd.diffsim.targets import RDFTarget
from ase_mlmd.errors import SimulationUnstableError
from ase_mlmd.models.pair import LennardJones
from ase_mlmd.models.spline_pair import hermite_energy_basis
from ase_mlmd.observables.differentiable import (
    RDFGrid,
    compute_rdf_torch,
    frame_pair_distances,
)

ENGINE = EngineConfig(equilibration=100, seed=3)


def simulated_lj_state(density: float, engine: EngineConfig, steps: int) -> ThermoState:
    """108 atoms at (ρ, T = 1) with a target g(r) simulated here from the true LJ (σ = ε = 1)
    over ``steps`` steps (a frame every 10)."""
    grid = RDFGrid()
    empty = RDFTarget(grid.centres().numpy(), np.ones(grid.nbins))
    state = ThermoState(density, 1.0, empty, n_cells=3)
    gs, _ = production_rdf(LennardJones(cutoff=2.5), [state], engine, steps=steps, every=10)
    state.target = RDFTarget(grid.centres().numpy(), gs[0].numpy(), density, 1.0, "simulated")
    return state


@pytest.fixture(scope="module")
def lj_state() -> ThermoState:
    """ρ = 0.845, T = 1 with a target g(r) simulated here from the true LJ (σ = ε = 1)."""
    return simulated_lj_state(0.845, ENGINE, 300)


def short_config(**kw) -> FitConfig:
    defaults = dict(
        epochs=3,
        window=20,
        rdf_every=2,
        lr=0.01,
        engine=ENGINE,
        table_spacing=0.005,
        heldout_every=0,
    )  # the methods themselves; best iterate: test_best_iterate.py
    return FitConfig(**{**defaults, **kw})


def test_short_bptt_fit_moves_sigma_toward_the_truth(lj_state):
    potential = LennardJones(1.0, 1.08, cutoff=2.5, trainable=True)
    result = fit_bptt(potential, [lj_state], short_config(), log=lambda m: None, progress=False)
    sigma = float(potential.sigma.detach())
    assert len(result.history) == 3 and all(math.isfinite(h["loss"]) for h in result.history)
    assert 1.0 <= sigma < 1.08 - 0.02, f"σ went from 1.08 to {sigma}"
    assert result.final_state is not None


def test_explosion_mid_fit_restores_parameters_and_halves_the_step(lj_state, tmp_path):
    def poison(epoch, potential):
        if epoch == 1:
            with torch.no_grad():
                potential.sigma.fill_(float("nan"))

    messages: list[str] = []
    potential = LennardJones(1.0, 1.05, cutoff=2.5, trainable=True)
    config = short_config(callback=poison)
    result = fit_bptt(potential, [lj_state], config, log=messages.append, progress=False)
    assert any("restored the last good parameters" in m for m in messages), messages
    assert any("halved the learning rate to 0.005" in m for m in messages), messages
    assert math.isfinite(float(potential.sigma.detach())) and len(result.history) == 3
    export_card(potential, tmp_path)  # finite parameters: exported
    # with no failures allowed the fit stops, with the last good parameters in the model
    potential = LennardJones(1.0, 1.05, cutoff=2.5, trainable=True)
    with pytest.raises(SimulationUnstableError, match="gave up"):
        fit_bptt(
            potential,
            [lj_state],
            short_config(callback=poison, max_failures=0),
            log=messages.append,
            progress=False,
        )
    assert math.isfinite(float(potential.sigma.detach()))


def test_reweighting_gradient_equals_thermodynamic_perturbation_formula():
    """d⟨O⟩/dε = −β (⟨O ∂U/∂ε⟩ − ⟨O⟩⟨∂U/∂ε⟩) with ∂U/∂ε = U/ε from ASE's LJ calculator."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(12):
        atoms = fcc_box(0.25, 2)  # 32 atoms, 5.04 Å box
        atoms.rattle(0.25, rng=rng)
        frames.append(atoms)
    epsilon, beta = 1.3, 1.0 / 0.8
    potential = LennardJones(epsilon, 1.0, cutoff=2.5, trainable=True)
    table = PairTable(potential, 0.5, 0.002)
    positions = torch.as_tensor(np.stack([a.positions for a in frames]))
    cells = torch.as_tensor(np.stack([a.cell.array for a in frames]))
    observables = compute_rdf_torch(positions, cells, RDFGrid(0.75, 2.4, 20), per_frame=True)
    d, frame = frame_pair_distances(positions, cells, 2.5)
    bases = hermite_energy_basis(d, 0.5, table.spline.spacing, table.n_knots, frame, 12)
    theta = torch.cat([table.values, table.derivatives])
    stored = StoredFrames(observables, bases, (bases @ theta).detach())
    weights = torch.linspace(0.5, 2.0, 20, dtype=torch.float64)
    average, ess = reweighted_average(stored.rdfs, stored.energies(theta), stored.reference, beta)
    (average * weights).sum().backward()
    table.push_gradients()
    assert float(ess) == pytest.approx(12.0)  # at θ = θ̂ every frame weighs the same
    # reference: ASE energies (E = ε f(x) with the shifted cutoff, so ∂E/∂ε = E/ε)
    energies = []
    for atoms in frames:
        atoms.calc = AseLennardJones(epsilon=epsilon, sigma=1.0, rc=2.5, smooth=False)
        energies.append(atoms.get_potential_energy())
    du = torch.as_tensor(energies) / epsilon
    obs = (observables * weights).sum(dim=1)
    expected = -beta * ((obs * du).mean() - obs.mean() * du.mean())
    assert float(potential.epsilon.grad) == pytest.approx(float(expected), rel=1e-5)
    assert abs(float(expected)) > 1e-3


def test_ibi_initial_guess_and_update_direction():
    knots = np.linspace(0.5, 2.5, 81)
    r = np.linspace(0.75, 3.3, 100)
    g_target = np.clip(1 + 1.5 * np.exp(-(((r - 1.1) / 0.1) ** 2)), 0, None) * (r > 0.9)
    kt = 1.2
    values, wall = ibi_initial_guess(r, g_target, knots, kt)
    rw = knots[wall]
    outside = knots >= rw
    g_knots = np.interp(knots, r, g_target)
    np.testing.assert_allclose(values[outside], -kt * np.log(np.maximum(g_knots[outside], G_MIN)))
    assert np.all(np.diff(values[: wall + 1]) < 0), "the wall must be repulsive"
    # too many pairs at 1.6 (g_sim > g*), too few at 2.0: U goes up at 1.6 and down at 2.0
    g_sim = g_target * (
        1 + 0.3 * np.exp(-(((r - 1.6) / 0.05) ** 2)) - 0.3 * np.exp(-(((r - 2.0) / 0.05) ** 2))
    )
    new = ibi_update(values, knots, wall, [(r, g_sim, g_target, kt)], alpha=0.5)
    delta = new - values
    k16, k20 = np.argmin(np.abs(knots - 1.6)), np.argmin(np.abs(knots - 2.0))
    gs, gt = np.interp(knots, r, g_sim), np.interp(knots, r, g_target)
    assert delta[k16] == pytest.approx(0.5 * kt * np.log((gs[k16] + G_MIN) / (gt[k16] + G_MIN)))
    assert delta[k16] > 0.05 and delta[k20] < -0.05
    unchanged = ibi_update(values, knots, wall, [(r, g_target, g_target, kt)], alpha=0.5)
    np.testing.assert_allclose(unchanged, values, atol=1e-12)


def test_multi_state_batch_keeps_each_state_at_its_temperature():
    states = [ThermoState(0.845, 1.0, n_cells=3), ThermoState(0.7, 1.6, n_cells=3)]
    engine = Engine(LennardJones(cutoff=2.5), states, EngineConfig(seed=1))
    state = engine.run(engine.initial_state(), 150)
    temps = []
    for _ in range(15):
        state = engine.run(state, 10)
        temps.append((state.temperature() * units.kB).numpy())
    mean = np.mean(temps, axis=0)
    assert mean == pytest.approx([1.0, 1.6], rel=0.12)
    assert engine.instability(state) is None


def test_short_reweighting_fit_moves_sigma_toward_the_truth(lj_state):
    from ase_mlmd.diffsim.reweighting import fit_reweighting

    potential = LennardJones(1.0, 1.08, cutoff=2.5, trainable=True)
    config = short_config(rw_frames=10, sample_every=5, rw_equilibration=20)
    result = fit_reweighting(potential, [lj_state], config, log=lambda m: None, progress=False)
    sigma = float(potential.sigma.detach())
    assert len(result.history) == 3
    assert all(0 < h["ess"] <= 1 for h in result.history)
    assert 1.0 <= sigma < 1.08 - 0.02, f"σ went from 1.08 to {sigma}"


def test_pmf_start_follows_the_boltzmann_inverted_target(lj_state):
    from ase_mlmd.diffsim.fit import pretrain_to_pmf
    from ase_mlmd.models.neural_pair import NeuralPair

    potential = NeuralPair(cutoff=2.5, hidden=32, layers=2, seed=0)
    rms = pretrain_to_pmf(potential, [lj_state], steps=300)
    target = lj_state.target
    r = torch.as_tensor(target.r[(target.g > 0.5) & (target.r < 2.2)])
    pmf = -np.log(np.interp(r.numpy(), target.r, target.g))
    with torch.no_grad():
        fitted = potential.cut_pair_energy(r).numpy()
        wall = potential.cut_pair_energy(torch.tensor([0.7, 0.8, 0.9], dtype=torch.float64))
    assert rms < 0.1 and np.abs(fitted - pmf).max() < 0.3
    assert bool((wall[:-1] > wall[1:]).all()) and float(wall[0]) > 5.0
