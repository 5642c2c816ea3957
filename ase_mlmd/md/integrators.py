"""Integrators as ``init`` / ``step`` function pairs over a batched :class:`MDState`.

Each factory takes a :class:`~ase_mlmd.md.forcefield.ForceField` and its settings and returns an
:class:`Integrator`: ``init(state)`` computes forces (and sets up thermostat variables) and
``step(state)`` advances every system by one time step. Per-system settings (temperature,
friction) may be scalars or (B,) sequences; they are stored in ``state.thermostat`` so that
selecting a subset of systems keeps each system's own settings. Stochastic integrators draw from
their own seeded ``torch.Generator`` (``Integrator.generator``), so runs are reproducible and
their random state can be checkpointed.

Units: time step and time constants in fs, temperatures in K, friction in 1/fs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
from ase import units

from ase_mlmd.md.forcefield import ForceField
from ase_mlmd.md.state import MDState

Schedule = float | Sequence[float] | torch.Tensor


@dataclasses.dataclass
class Integrator:
    """An ``init``/``step`` pair and what a checkpoint needs to resume it."""

    name: str
    init: Callable[[MDState], MDState]
    step: Callable[[MDState], MDState]
    timestep_fs: float
    generator: torch.Generator | None = None


def _check_timestep(timestep_fs: float) -> float:
    if not (
        isinstance(timestep_fs, int | float) and math.isfinite(timestep_fs) and timestep_fs > 0
    ):
        raise ValueError(f"timestep must be a positive number of fs, got {timestep_fs!r}")
    return float(timestep_fs) * units.fs


def _time_constant(value_fs: float | None, timestep_fs: float, name: str) -> float:
    """A thermostat time constant in ASE time units (default: 100 time steps)."""
    if value_fs is None:
        return 100 * timestep_fs * units.fs
    if not (isinstance(value_fs, int | float) and math.isfinite(value_fs) and value_fs > 0):
        raise ValueError(f"{name} must be a positive number of fs, got {value_fs!r}")
    return float(value_fs) * units.fs


def _per_system(value: Schedule, state: MDState, name: str, positive: bool = False):
    tensor = torch.as_tensor(value, dtype=state.dtype, device=state.device).reshape(-1)
    if tensor.numel() == 1:
        tensor = tensor.expand(state.n_systems).clone()
    if tensor.numel() != state.n_systems:
        raise ValueError(f"{name} has {tensor.numel()} values for {state.n_systems} systems")
    if not torch.isfinite(tensor).all() or (tensor < 0).any() or (positive and (tensor == 0).any()):
        raise ValueError(f"{name} must be {'positive' if positive else 'non-negative'}: {value!r}")
    return tensor


def _generator(integrator: Integrator, state: MDState, seed: int) -> torch.Generator:
    """The integrator's generator, created (seeded, on the state's device) at the first init."""
    if integrator.generator is None:
        integrator.generator = torch.Generator(device=state.device)
        integrator.generator.manual_seed(int(seed))
    return integrator.generator


def _kick(state: MDState, dt: float) -> MDState:
    return state.replace(momenta=state.momenta + dt * state.forces)


def _drift(state: MDState, dt: float) -> MDState:
    return state.replace(positions=state.positions + dt * state.momenta / state.masses[:, None])


def _with_thermostat(state: MDState, **values: torch.Tensor) -> MDState:
    return state.replace(thermostat={**(state.thermostat or {}), **values})


def velocity_verlet(
    forcefield: ForceField, timestep_fs: float, differentiable: bool = False
) -> Integrator:
    """NVE velocity Verlet (the same update order as ASE's ``VelocityVerlet``)."""
    dt = _check_timestep(timestep_fs)

    def init(state: MDState) -> MDState:
        forcefield.check(state)
        return forcefield(state, create_graph=differentiable)

    def step(state: MDState) -> MDState:
        state = _drift(_kick(state, 0.5 * dt), dt)
        return _kick(forcefield(state, create_graph=differentiable), 0.5 * dt)

    return Integrator("nve", init, step, timestep_fs)


def langevin(
    forcefield: ForceField,
    timestep_fs: float,
    temperature_K: Schedule,
    friction_per_fs: Schedule = 0.01,
    seed: int = 0,
    differentiable: bool = False,
) -> Integrator:
    """Langevin dynamics, BAOAB splitting (Leimkuhler & Matthews), per-system T and friction."""
    dt = _check_timestep(timestep_fs)

    def init(state: MDState) -> MDState:
        forcefield.check(state)
        _generator(integrator, state, seed)
        state = _with_thermostat(
            state,
            temperature=_per_system(temperature_K, state, "temperature"),
            friction=_per_system(friction_per_fs, state, "friction") / units.fs,
        )
        return forcefield(state, create_graph=differentiable)

    def step(state: MDState) -> MDState:
        th = state.thermostat
        state = _drift(_kick(state, 0.5 * dt), 0.5 * dt)
        c1 = torch.exp(-th["friction"] * dt)[state.system_idx, None]
        kT = (units.kB * th["temperature"])[state.system_idx, None]
        noise = torch.randn(
            state.momenta.shape,
            generator=integrator.generator,
            device=state.device,
            dtype=state.dtype,
        )
        sigma = torch.sqrt((1.0 - c1**2) * kT * state.masses[:, None])
        state = state.replace(momenta=c1 * state.momenta + sigma * noise)
        state = _drift(state, 0.5 * dt)
        return _kick(forcefield(state, create_graph=differentiable), 0.5 * dt)

    integrator = Integrator("nvt-langevin", init, step, timestep_fs)
    return integrator


def nose_hoover_chain(
    forcefield: ForceField,
    timestep_fs: float,
    temperature_K: Schedule,
    tdamp_fs: float | None = None,
    chain_length: int = 3,
    differentiable: bool = False,
) -> Integrator:
    """Nosé–Hoover chain NVT (Martyna–Tuckerman–Klein, Trotter splitting around velocity Verlet).

    Thermostat masses Q₁ = g k_B T τ², Q_j = k_B T τ² (g = 3 N degrees of freedom, τ =
    ``tdamp_fs``, default 100 time steps). ``chain_length=1`` with ``tdamp_fs = ttime ·
    timestep_fs`` is MDsim's single thermostat, Q = 3 N k_B T (ttime·dt)².
    ``state.thermostat`` holds the chain positions ``eta`` and velocities ``eta_velocity`` (B, M)
    so that :func:`nose_hoover_conserved_energy` can report the conserved quantity.
    """
    dt = _check_timestep(timestep_fs)
    if chain_length < 1:
        raise ValueError(f"chain_length must be >= 1, got {chain_length}")
    tau = _time_constant(tdamp_fs, timestep_fs, "tdamp_fs")

    def init(state: MDState) -> MDState:
        forcefield.check(state)
        temperature = _per_system(temperature_K, state, "temperature", positive=True)
        kT = units.kB * temperature
        dof = 3.0 * state.n_atoms.to(state.dtype)
        masses = (kT * tau**2)[:, None].repeat(1, chain_length)
        masses[:, 0] = dof * kT * tau**2
        zeros = torch.zeros_like(masses)
        state = _with_thermostat(
            state,
            temperature=temperature,
            eta=zeros,
            eta_velocity=zeros.clone(),
            eta_mass=masses,
        )
        return forcefield(state, create_graph=differentiable)

    def chain_half_step(state: MDState) -> MDState:
        th = state.thermostat
        kT = units.kB * th["temperature"]
        dof = 3.0 * state.n_atoms.to(state.dtype)
        q = th["eta_mass"]
        # chain velocities as a list of (B,) columns: no in-place writes, so the update stays
        # differentiable (differentiable MD backpropagates through it)
        v = list(th["eta_velocity"].unbind(dim=1))
        kinetic2 = 2.0 * state.kinetic_energy()
        h = 0.5 * dt  # this half step; dt/4 and dt/8 sub-steps as in Frenkel & Smit
        m = chain_length

        def force(j: int, kinetic2: torch.Tensor) -> torch.Tensor:
            if j == 0:
                return (kinetic2 - dof * kT) / q[:, 0]
            return (q[:, j - 1] * v[j - 1] ** 2 - kT) / q[:, j]

        v[m - 1] = v[m - 1] + 0.5 * h * force(m - 1, kinetic2)
        for j in range(m - 2, -1, -1):
            damp = torch.exp(-0.25 * h * v[j + 1])
            v[j] = (v[j] * damp + 0.5 * h * force(j, kinetic2)) * damp
        scale = torch.exp(-h * v[0])
        momenta = state.momenta * scale[state.system_idx, None]
        kinetic2 = kinetic2 * scale**2
        eta = th["eta"] + h * torch.stack(v, dim=1)
        for j in range(m - 1):
            damp = torch.exp(-0.25 * h * v[j + 1])
            v[j] = (v[j] * damp + 0.5 * h * force(j, kinetic2)) * damp
        v[m - 1] = v[m - 1] + 0.5 * h * force(m - 1, kinetic2)
        velocity = torch.stack(v, dim=1)
        return _with_thermostat(state.replace(momenta=momenta), eta=eta, eta_velocity=velocity)

    def step(state: MDState) -> MDState:
        state = chain_half_step(state)
        state = _drift(_kick(state, 0.5 * dt), dt)
        state = _kick(forcefield(state, create_graph=differentiable), 0.5 * dt)
        return chain_half_step(state)

    return Integrator("nvt-nose-hoover", init, step, timestep_fs)


def nose_hoover_conserved_energy(state: MDState) -> torch.Tensor:
    """(B,) the quantity a Nosé–Hoover chain conserves: E_pot + E_kin + Σ ½ Q_j v_j² +
    g k_B T η₁ + k_B T Σ_{j>1} η_j, eV."""
    th = state.thermostat
    kT = units.kB * th["temperature"]
    dof = 3.0 * state.n_atoms.to(state.dtype)
    chain = 0.5 * (th["eta_mass"] * th["eta_velocity"] ** 2).sum(dim=1)
    chain = chain + dof * kT * th["eta"][:, 0] + kT * th["eta"][:, 1:].sum(dim=1)
    return state.total_energy() + chain


def bussi(
    forcefield: ForceField,
    timestep_fs: float,
    temperature_K: Schedule,
    taut_fs: float | None = None,
    seed: int = 0,
    differentiable: bool = False,
) -> Integrator:
    """Bussi–Donadio–Parrinello stochastic velocity rescaling (CSVR) after each Verlet step.

    τ = ``taut_fs`` (default 100 time steps). The new kinetic energy is drawn exactly (Bussi et
    al. 2007, appendix), with a χ² variate of g − 1 degrees of freedom from the integrator's
    generator.
    """
    dt = _check_timestep(timestep_fs)
    tau = _time_constant(taut_fs, timestep_fs, "taut_fs")

    def init(state: MDState) -> MDState:
        forcefield.check(state)
        _generator(integrator, state, seed)
        state = _with_thermostat(
            state, temperature=_per_system(temperature_K, state, "temperature")
        )
        return forcefield(state, create_graph=differentiable)

    def rescale(state: MDState) -> MDState:
        gen = integrator.generator
        dof = 3 * state.n_atoms
        kinetic = state.kinetic_energy()
        target = 0.5 * dof.to(state.dtype) * units.kB * state.thermostat["temperature"]
        c = math.exp(-dt / tau)
        r1 = torch.randn(state.n_systems, generator=gen, device=state.device, dtype=state.dtype)
        extra = int(dof.max()) - 1
        normals = torch.randn(
            (state.n_systems, max(extra, 1)),
            generator=gen,
            device=state.device,
            dtype=state.dtype,
        )
        mask = torch.arange(normals.shape[1], device=state.device)[None, :] < (dof - 1)[:, None]
        chi2 = (normals**2 * mask).sum(dim=1)
        ratio = target / (dof.to(state.dtype) * kinetic.clamp_min(1e-300))
        alpha2 = c + (1 - c) * (chi2 + r1**2) * ratio + 2 * r1 * torch.sqrt(c * (1 - c) * ratio)
        sign = torch.sign(r1 + torch.sqrt(c / ((1 - c) * ratio)))
        alpha = sign * torch.sqrt(alpha2.clamp_min(0.0))
        return state.replace(momenta=state.momenta * alpha[state.system_idx, None])

    def step(state: MDState) -> MDState:
        state = _drift(_kick(state, 0.5 * dt), dt)
        state = _kick(forcefield(state, create_graph=differentiable), 0.5 * dt)
        return rescale(state)

    integrator = Integrator("nvt-bussi", init, step, timestep_fs)
    return integrator


ENSEMBLES = ("nve", "nvt-langevin", "nvt-nose-hoover", "nvt-bussi")


def make_integrator(
    ensemble: str,
    forcefield: ForceField,
    timestep_fs: float,
    temperature_K: Schedule = 300.0,
    friction_per_fs: Schedule = 0.01,
    tdamp_fs: float | None = None,
    chain_length: int = 3,
    seed: int = 0,
    differentiable: bool = False,
) -> Integrator:
    """The integrator for an ensemble name (``ENSEMBLES``)."""
    if ensemble == "nve":
        return velocity_verlet(forcefield, timestep_fs, differentiable)
    if ensemble == "nvt-langevin":
        return langevin(
            forcefield, timestep_fs, temperature_K, friction_per_fs, seed, differentiable
        )
    if ensemble == "nvt-nose-hoover":
        return nose_hoover_chain(
            forcefield,
            timestep_fs,
            temperature_K,
            tdamp_fs,
            chain_length,
            differentiable=differentiable,
        )
    if ensemble == "nvt-bussi":
        return bussi(forcefield, timestep_fs, temperature_K, tdamp_fs, seed, differentiable)
    raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")


def check_thermostat_constants(friction_per_fs: Schedule, tdamp_fs: Schedule | None) -> None:
    """Refuse a negative/non-finite Langevin friction (1/fs) or a non-positive thermostat time
    constant (fs) before a run starts (a negative friction heats the system without bound)."""
    friction = torch.as_tensor(friction_per_fs, dtype=torch.float64).reshape(-1)
    if not torch.isfinite(friction).all() or (friction < 0).any():
        raise ValueError(
            f"friction must be >= 0 per fs (--friction), got {friction_per_fs!r}; 0.01/fs "
            "(a 100 fs relaxation time) is the default"
        )
    if tdamp_fs is not None:
        tdamp = torch.as_tensor(tdamp_fs, dtype=torch.float64).reshape(-1)
        if not torch.isfinite(tdamp).all() or (tdamp <= 0).any():
            raise ValueError(
                f"the thermostat time constant must be > 0 fs (--tdamp), got {tdamp_fs!r}"
            )
