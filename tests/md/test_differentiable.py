"""Differentiable MD against central finite differences of the same deterministic simulation.

A 13-atom Lennard-Jones cluster in reduced units (σ = ε = m = 1, so ASE units), a few tens of
steps of dt = 0.005 τ: short enough that chaos does not amplify the finite-difference error.
Langevin runs are deterministic functions of their inputs because the noise comes from the
integrator's seeded generator; the gradient w.r.t. temperature then goes through the noise
amplitude. Checkpointed gradients must equal plain ones to rounding; truncated BPTT must give
the sum over windows of each window's gradient with its start state held fixed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.cluster import Icosahedron

from ase_mlmd.md.differentiable import (
    carry_state,
    find_parameters,
    rollout,
    truncated_bptt,
)
from ase_mlmd.md.forcefield import ForceField
from ase_mlmd.md.integrators import make_integrator
from ase_mlmd.md.state import MDState
from ase_mlmd.models.pair import LennardJones, Morse

DT_FS = 0.005 / units.fs  # 0.005 τ in fs (τ = 1 ASE time unit in reduced LJ units)
T_STAR = 0.5  # reduced temperature
T_K = T_STAR / units.kB
FRICTION_PER_FS = 2.0 * units.fs  # γ = 2 / τ
TDAMP_FS = 0.1 / units.fs  # Nosé–Hoover τ = 0.1 τ_LJ (strong coupling: T matters in 30 steps)
STEPS = 30
FD_RTOL = 1e-7  # finite differences vs autograd (float64, h = 1e-5 relative; seen: <= 4e-9)
CK_RTOL = 1e-10  # checkpointed vs plain backprop


def lj_cluster(seed: int = 0) -> Atoms:
    """13-atom LJ icosahedron (nearest neighbours near 2^(1/6) σ), rattled, velocities at T*."""
    atoms = Icosahedron("Ar", noshells=2, latticeconstant=2 ** (1 / 6) * 2**0.5)
    rng = np.random.default_rng(seed)
    atoms.rattle(0.05, rng=rng)
    atoms.set_cell(np.zeros((3, 3)))
    atoms.pbc = False
    atoms.set_masses(np.ones(len(atoms)))
    momenta = rng.normal(scale=np.sqrt(T_STAR), size=(len(atoms), 3))
    atoms.set_momenta(momenta - momenta.mean(axis=0))
    return atoms


def lj_crystal() -> Atoms:
    """32-atom periodic fcc LJ solid at ρ* ≈ 1.0, rattled, velocities at T*."""
    atoms = bulk("Ar", "fcc", a=4 ** (1 / 3), cubic=True).repeat(2)
    rng = np.random.default_rng(1)
    atoms.rattle(0.03, rng=rng)
    atoms.set_masses(np.ones(len(atoms)))
    momenta = rng.normal(scale=np.sqrt(T_STAR), size=(len(atoms), 3))
    atoms.set_momenta(momenta - momenta.mean(axis=0))
    return atoms


def integrator(ensemble: str, model: torch.nn.Module, temperature=T_K, seed: int = 7):
    forcefield = ForceField(model, skin=0.3)
    made = make_integrator(
        ensemble,
        forcefield,
        DT_FS,
        temperature_K=temperature,
        friction_per_fs=FRICTION_PER_FS,
        tdamp_fs=TDAMP_FS,
        seed=seed,
        differentiable=True,
    )
    return made, forcefield


def mean_potential_energy(values: torch.Tensor) -> torch.Tensor:
    return values.mean()


def simulate(
    ensemble: str,
    model: torch.nn.Module,
    atoms: Atoms,
    temperature=T_K,
    positions: torch.Tensor | None = None,
    momenta: torch.Tensor | None = None,
    observable: Callable[[MDState], torch.Tensor] = lambda s: s.energy,
    steps: int = STEPS,
    checkpoint_every: int | None = None,
) -> torch.Tensor:
    """The mean over the run of ``observable`` (a scalar with the graph)."""
    made, _ = integrator(ensemble, model, temperature)
    state = MDState.from_atoms(atoms)
    state = state.replace(
        positions=state.positions if positions is None else positions,
        momenta=state.momenta if momenta is None else momenta,
    )
    out = rollout(made, made.init(state), steps, observable, checkpoint_every=checkpoint_every)
    return out.values.mean()


def central_difference(f: Callable[[float], float], x: float, h: float) -> float:
    return (f(x + h) - f(x - h)) / (2 * h)


def assert_relative(actual: float, expected: float, rtol: float, what: str) -> None:
    error = abs(actual - expected) / abs(expected)
    assert error < rtol, f"{what}: autograd {actual:.12g}, reference {expected:.12g} ({error:.1e})"


# ------------------------------------------------------------------ model parameters
@pytest.mark.parametrize("ensemble", ["nve", "nvt-nose-hoover", "nvt-langevin"])
@pytest.mark.parametrize("name", ["epsilon", "sigma"])
def test_gradient_wrt_lennard_jones_parameter(ensemble, name):
    atoms = lj_cluster()
    values = {"epsilon": 1.0, "sigma": 1.0}
    model = LennardJones(**values, cutoff=2.5, trainable=True)
    loss = simulate(ensemble, model, atoms)
    (grad,) = torch.autograd.grad(loss, getattr(model, name))

    def loss_at(x: float) -> float:
        with torch.no_grad():
            perturbed = LennardJones(**{**values, name: x}, cutoff=2.5)
            return float(simulate(ensemble, perturbed, atoms))

    expected = central_difference(loss_at, values[name], 1e-5)
    assert_relative(float(grad), expected, FD_RTOL, f"{ensemble} d<E_pot>/d{name}")


def test_gradient_wrt_morse_parameters():
    atoms = lj_cluster()
    values = {"epsilon": 1.0, "r0": 2 ** (1 / 6), "rho0": 6.0}
    model = Morse(**values, cutoff=2.5, r_on=2.0, trainable=True)
    loss = simulate("nve", model, atoms)
    grads = torch.autograd.grad(loss, [model.epsilon, model.r0, model.rho0])
    for (name, value), grad in zip(values.items(), grads, strict=True):

        def loss_at(x: float, name=name) -> float:
            with torch.no_grad():
                perturbed = Morse(**{**values, name: x}, cutoff=2.5, r_on=2.0)
                return float(simulate("nve", perturbed, atoms))

        expected = central_difference(loss_at, value, 1e-5 * value)
        assert_relative(float(grad), expected, FD_RTOL, f"d<E_pot>/d{name} (Morse)")


# ------------------------------------------------------------------ initial conditions
@pytest.mark.parametrize("ensemble", ["nve", "nvt-nose-hoover", "nvt-langevin"])
def test_gradient_wrt_initial_positions_and_momenta(ensemble):
    atoms = lj_cluster()
    model = LennardJones(1.0, 1.0, cutoff=2.5)
    x0 = torch.tensor(atoms.positions, requires_grad=True)
    p0 = torch.tensor(atoms.get_momenta(), requires_grad=True)
    loss = simulate(ensemble, model, atoms, positions=x0, momenta=p0)
    gx, gp = torch.autograd.grad(loss, [x0, p0])
    direction = torch.from_numpy(np.random.default_rng(3).normal(size=x0.shape))
    for what, leaf, grad in (("positions", x0, gx), ("momenta", p0, gp)):

        def loss_at(t: float, leaf=leaf, what=what) -> float:
            moved = leaf.detach() + t * direction
            with torch.no_grad():
                return float(simulate(ensemble, model, atoms, **{what: moved}))

        expected = central_difference(loss_at, 0.0, 1e-6)
        actual = float((grad * direction).sum())
        assert_relative(actual, expected, FD_RTOL, f"{ensemble} directional d/d{what}")


# ------------------------------------------------------------------ temperature
def kinetic_energy(state: MDState) -> torch.Tensor:
    return state.kinetic_energy()


@pytest.mark.parametrize("ensemble", ["nvt-nose-hoover", "nvt-langevin", "nvt-bussi"])
def test_gradient_wrt_temperature(ensemble):
    """T given to the integrator: Langevin noise amplitude (noise fixed by the seed),
    Nosé–Hoover k_B T and chain masses, Bussi target kinetic energy."""
    atoms = lj_cluster()
    model = LennardJones(1.0, 1.0, cutoff=2.5)
    temperature = torch.tensor(2.0 * T_K, dtype=torch.float64, requires_grad=True)
    loss = simulate(ensemble, model, atoms, temperature, observable=kinetic_energy)
    (grad,) = torch.autograd.grad(loss, temperature)

    def loss_at(t: float) -> float:
        with torch.no_grad():
            return float(simulate(ensemble, model, atoms, t, observable=kinetic_energy))

    expected = central_difference(loss_at, 2.0 * T_K, 1e-5 * T_K)
    assert abs(expected) > 1e-6, "the observable does not depend on T: the test is empty"
    assert_relative(float(grad), expected, FD_RTOL, f"{ensemble} d<E_kin>/dT")


def test_gradient_wrt_thermostat_temperature_set_after_init():
    """A leaf put into ``state.thermostat`` after init: Nosé–Hoover masses stay fixed and only
    k_B T in the chain forces sees it."""
    atoms = lj_cluster()
    model = LennardJones(1.0, 1.0, cutoff=2.5)

    def run(t: torch.Tensor) -> torch.Tensor:
        made, _ = integrator("nvt-nose-hoover", model, T_K)
        state = made.init(MDState.from_atoms(atoms))
        state.thermostat["temperature"] = t.reshape(1)
        out = rollout(made, state, STEPS, kinetic_energy)
        return out.values.mean()

    temperature = torch.tensor(2.0 * T_K, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(run(temperature), temperature)

    def loss_at(t: float) -> float:
        with torch.no_grad():
            return float(run(torch.tensor(t, dtype=torch.float64)))

    expected = central_difference(loss_at, 2.0 * T_K, 1e-5 * T_K)
    assert_relative(float(grad), expected, FD_RTOL, "d<E_kin>/dT (chain k_B T only)")


# ------------------------------------------------------------------ checkpointing
@pytest.mark.parametrize("ensemble", ["nve", "nvt-langevin", "nvt-nose-hoover", "nvt-bussi"])
def test_checkpointed_gradients_equal_plain(ensemble):
    atoms = lj_crystal()

    def gradients(checkpoint_every: int | None) -> list[torch.Tensor]:
        model = LennardJones(1.0, 1.0, cutoff=2.5, trainable=True)
        x0 = torch.tensor(atoms.positions, requires_grad=True)
        temperature = torch.tensor(T_K, dtype=torch.float64, requires_grad=True)
        made, _ = integrator(ensemble, model, temperature)
        state = made.init(MDState.from_atoms(atoms).replace(positions=x0))
        out = rollout(made, state, 40, lambda s: s.energy, checkpoint_every)
        final = out.state
        loss = out.values.mean() + 0.1 * final.kinetic_energy().sum() + final.positions.std()
        leaves = [model.epsilon, model.sigma, x0, temperature]
        return [loss.detach(), *torch.autograd.grad(loss, leaves, allow_unused=True)]

    plain = gradients(None)
    for k in (7, 40, 100):  # windows that do not divide the run, one window, longer than it
        checkpointed = gradients(k)
        for what, a, b in zip(["loss", "eps", "sigma", "x0", "T"], checkpointed, plain, strict=1):
            if b is None:  # NVE has no temperature
                assert a is None
                continue
            error = float((a - b).abs().max() / b.abs().max())
            assert error < CK_RTOL, f"{ensemble}, every {k}: {what} differs by {error:.1e}"


def test_find_parameters_and_explicit_parameters():
    atoms = lj_cluster()
    model = LennardJones(1.0, 1.0, cutoff=2.5, trainable=True)
    made, _ = integrator("nvt-langevin", model)
    state = made.init(MDState.from_atoms(atoms))
    found = find_parameters(made, state)
    assert {id(p) for p in found} == {id(model.epsilon), id(model.sigma)}
    # the probe step leaves the random stream where it was
    before = made.generator.get_state()
    find_parameters(made, state)
    assert torch.equal(before, made.generator.get_state())

    grads = []
    for parameters in (None, [model.epsilon, model.sigma], [model.epsilon]):
        # a fresh init each time: the initial forces carry the graph of the init force call
        made, _ = integrator("nvt-langevin", model)
        state = made.init(MDState.from_atoms(atoms))
        out = rollout(made, state, 12, lambda s: s.energy, 5, parameters)
        grads.append(torch.autograd.grad(out.values.mean(), model.epsilon)[0])
    assert float(abs(grads[1] - grads[0])) < 1e-12 and float(abs(grads[2] - grads[0])) < 1e-12


# ------------------------------------------------------------------ truncated BPTT
def test_truncated_bptt_is_the_sum_of_window_gradients():
    """Σ_k ∂L_k/∂ε with each window's start (positions, momenta) held fixed, checked by finite
    differences of each window alone; the carried state follows the untruncated trajectory."""
    atoms = lj_cluster(seed=4)
    window_steps, n_windows = 10, 3
    model = LennardJones(1.0, 1.0, cutoff=2.5, trainable=True)
    made, forcefield = integrator("nve", model)
    state = made.init(MDState.from_atoms(atoms))
    starts = []

    windows = []

    def loss_fn(window) -> torch.Tensor:
        starts.append(window.start.detach())
        windows.append(window)
        return window.rollout.values.mean()

    result = truncated_bptt(
        made, state, window_steps, n_windows, loss_fn, lambda s: s.energy, forcefield
    )
    tbptt = float(model.epsilon.grad)

    def window_loss(start: MDState, epsilon: float) -> float:
        with torch.no_grad():
            ff_made, _ = integrator("nve", LennardJones(epsilon, 1.0, cutoff=2.5))
            out = rollout(ff_made, ff_made.init(start), window_steps, lambda s: s.energy)
            return float(out.values.mean())

    expected = sum(
        central_difference(lambda e, s=start: window_loss(s, e), 1.0, 1e-5) for start in starts
    )
    assert_relative(tbptt, expected, FD_RTOL, "truncated BPTT dΣL_k/dε")

    # the carried state is the plain trajectory's
    with torch.no_grad():
        plain = rollout(made, state.detach(), window_steps * n_windows, None)
    assert torch.allclose(result.state.positions, plain.state.positions, rtol=0, atol=1e-12)
    assert len(result.losses) == n_windows and result.state.positions.grad_fn is None
    # finished windows were detached (their graphs freed)
    assert all(w.rollout.values.grad_fn is None for w in windows)

    # truncation matters: the full gradient of Σ L_k differs
    full = rollout(made, state, window_steps * n_windows, lambda s: s.energy)
    total = full.values.reshape(n_windows, window_steps).mean(dim=1).sum()
    (full_grad,) = torch.autograd.grad(total, model.epsilon)
    assert abs(float(full_grad) - tbptt) > 1e-3 * abs(tbptt)

    # checkpointed windows give the same accumulated gradient
    model.epsilon.grad = None
    truncated_bptt(
        made,
        state,
        window_steps,
        n_windows,
        lambda w: w.rollout.values.mean(),
        lambda s: s.energy,
        forcefield,
        checkpoint_every=4,
    )
    assert abs(float(model.epsilon.grad) - tbptt) < CK_RTOL * abs(tbptt)


def test_truncated_bptt_fitting_loop_recovers_epsilon():
    """An optimizer step after every window (the DiffSim pattern): fitting the mean potential
    energy of a Langevin run at ε = 1 from ε = 0.8 brings ε back near 1 (not exactly: each
    window sees another stretch of a short, unequilibrated trajectory)."""
    atoms = lj_cluster()
    with torch.no_grad():
        made, _ = integrator("nvt-langevin", LennardJones(1.0, 1.0, cutoff=2.5))
        start = made.init(MDState.from_atoms(atoms))
        target = float(rollout(made, start, 60, lambda s: s.energy).values.mean())
    model = LennardJones(0.8, 1.0, cutoff=2.5, trainable=True)
    model.sigma.requires_grad_(False)
    made, forcefield = integrator("nvt-langevin", model)
    optimizer = torch.optim.Adam([model.epsilon], lr=0.03)
    seen = []

    def step(window, loss):
        seen.append(window.index)
        optimizer.step()
        optimizer.zero_grad()

    result = truncated_bptt(
        made,
        made.init(MDState.from_atoms(atoms)),
        6,
        10,
        lambda w: (w.rollout.values.mean() - target) ** 2,
        lambda s: s.energy,
        forcefield,
        after_backward=step,
    )
    assert seen == list(range(10))
    assert abs(float(model.epsilon.detach()) - 1.0) < 0.1  # seen: 1.074
    assert result.losses[-1] < 1e-2 * result.losses[0]


# ------------------------------------------------------------------ errors and helpers
def test_rollout_errors():
    atoms = lj_cluster()
    model = LennardJones(1.0, 1.0, cutoff=2.5, trainable=True)
    state = MDState.from_atoms(atoms)
    made, _ = integrator("nve", model)
    with pytest.raises(ValueError, match="integrator.init"):
        rollout(made, state, 3)
    with pytest.raises(ValueError, match="checkpoint_every"):
        rollout(made, made.init(state), 3, checkpoint_every=0)
    plain = make_integrator("nve", ForceField(model), DT_FS)  # differentiable=False
    x0 = state.positions.clone().requires_grad_(True)
    with pytest.raises(ValueError, match="differentiable=True"):
        rollout(plain, plain.init(state.replace(positions=x0)), 3)


def test_carry_state_keeps_leaves_and_cuts_the_graph():
    atoms = lj_cluster()
    model = LennardJones(1.0, 1.0, cutoff=2.5, trainable=True)
    made, _ = integrator("nvt-nose-hoover", model)
    state = made.init(MDState.from_atoms(atoms))
    leaf = torch.full((1,), T_K, dtype=torch.float64, requires_grad=True)
    state.thermostat["temperature"] = leaf
    out = rollout(made, state, 3)
    carried = carry_state(out.state)
    assert carried.thermostat["temperature"] is leaf
    for tensor in (carried.positions, carried.momenta, carried.forces, carried.energy):
        assert tensor.grad_fn is None and not tensor.requires_grad
    assert carried.thermostat["eta_velocity"].grad_fn is None
    assert out.values.shape == (3, len(atoms), 3)  # default observable: the trajectory


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("ensemble", ["nvt-nose-hoover", "nvt-langevin"])
def test_cuda_gradients(ensemble):
    """On the GPU: checkpointed == plain (the CUDA generator is replayed), and for the
    deterministic Nosé–Hoover run the gradient equals the CPU one."""
    atoms = lj_crystal()

    def gradient(device: str, checkpoint_every: int | None) -> torch.Tensor:
        model = LennardJones(1.0, 1.0, cutoff=2.5, trainable=True).to(device)
        made, _ = integrator(ensemble, model)
        state = made.init(MDState.from_atoms(atoms, device=device))
        out = rollout(made, state, 40, lambda s: s.energy, checkpoint_every)
        return torch.autograd.grad(out.values.mean(), model.epsilon)[0].cpu()

    plain = gradient("cuda", None)
    assert abs(float(gradient("cuda", 7) - plain)) < CK_RTOL * abs(float(plain))
    if ensemble == "nvt-nose-hoover":
        assert abs(float(gradient("cpu", None) - plain)) < 1e-9 * abs(float(plain))
