"""MD through ASE's own integrators, with a trajectory, a log and a progress bar.

This is the simple path: one system, ASE's ``VelocityVerlet``, ``Langevin``,
``NoseHooverChainNVT`` or ``Bussi`` driving any ASE calculator.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import BaseCalculator

ENSEMBLES = ("nve", "nvt-langevin", "nvt-nose-hoover", "nvt-bussi")


@dataclasses.dataclass
class AseMDConfig:
    """Settings of an ASE-driven MD run.

    Attributes:
        ensemble: one of ``ENSEMBLES``.
        temperature_K: thermostat temperature; also the Maxwell–Boltzmann temperature of the
            initial velocities (for NVE too). K.
        timestep_fs: time step, fs.
        steps: number of MD steps.
        friction_per_fs: Langevin friction, 1/fs.
        tdamp_fs: Nosé–Hoover / Bussi time constant, fs (default 100 time steps).
        save_every: write a trajectory frame every this many steps (the first frame too).
        log_every: write a log line every this many steps.
        seed: seed of the initial velocities and of stochastic thermostats.
        keep_velocities: start from the velocities already on the atoms instead of drawing them.
    """

    ensemble: str = "nvt-langevin"
    temperature_K: float = 300.0
    timestep_fs: float = 0.5
    steps: int = 1000
    friction_per_fs: float = 0.01
    tdamp_fs: float | None = None
    save_every: int = 10
    log_every: int = 10
    seed: int = 0
    keep_velocities: bool = False

    def __post_init__(self) -> None:
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {self.ensemble!r}")
        if not (self.timestep_fs > 0 and math.isfinite(self.timestep_fs)):
            raise ValueError(f"timestep must be a positive number of fs, got {self.timestep_fs}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.temperature_K < 0:
            raise ValueError(f"temperature must be >= 0 K, got {self.temperature_K}")
        if self.save_every < 1 or self.log_every < 1:
            raise ValueError("save_every and log_every must be >= 1")


def make_dynamics(atoms: Atoms, config: AseMDConfig, rng: np.random.Generator):
    """The ASE dynamics object for ``config.ensemble``."""
    dt = config.timestep_fs * units.fs
    tdamp = (config.tdamp_fs or 100 * config.timestep_fs) * units.fs
    if config.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    if config.ensemble == "nvt-langevin":
        from ase.md.langevin import Langevin

        return Langevin(
            atoms,
            timestep=dt,
            temperature_K=config.temperature_K,
            friction=config.friction_per_fs / units.fs,
            fixcm=False,
            rng=rng,
        )
    if config.ensemble == "nvt-nose-hoover":
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        return NoseHooverChainNVT(
            atoms, timestep=dt, temperature_K=config.temperature_K, tdamp=tdamp
        )
    from ase.md.bussi import Bussi

    return Bussi(atoms, timestep=dt, temperature_K=config.temperature_K, taut=tdamp, rng=rng)


def run_ase_md(
    atoms: Atoms,
    calc: BaseCalculator,
    config: AseMDConfig,
    trajectory: str | Path | None = None,
    logfile: str | Path | None = None,
    progress: bool = True,
) -> Atoms:
    """Run MD on ``atoms`` (modified in place) with ``calc`` and return it.

    Args:
        atoms: the starting structure.
        calc: any ASE calculator.
        config: the run settings.
        trajectory: ASE ``.traj`` file to write frames to (overwritten), or None.
        logfile: ASE ``MDLogger`` text log (time, energies, temperature), or None.
        progress: show a tqdm progress bar.

    Raises:
        InvalidStructureError: NaN/inf positions or a degenerate periodic cell (before any step).
    """
    from ase.io.trajectory import Trajectory
    from ase.md import MDLogger
    from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
    from tqdm.auto import tqdm

    from ase_mlmd.batch import check_structure

    check_structure(atoms.positions, atoms.cell.array, atoms.pbc, "MD start structure")
    rng = np.random.default_rng(config.seed)
    atoms.calc = calc
    if not config.keep_velocities:
        thermalize_momenta(atoms, temperature_K=config.temperature_K, rng=rng)
        Stationary(atoms)
        if not atoms.pbc.any():
            ZeroRotation(atoms)
    dyn = make_dynamics(atoms, config, rng)
    writers = []
    if trajectory is not None:
        Path(trajectory).parent.mkdir(parents=True, exist_ok=True)
        traj = Trajectory(str(trajectory), "w", atoms)
        dyn.attach(traj.write, interval=config.save_every)
        writers.append(traj)
    if logfile is not None:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        logger = MDLogger(dyn, atoms, str(logfile), header=True, peratom=False, mode="w")
        dyn.attach(logger, interval=config.log_every)
        writers.append(logger)
    bar = tqdm(total=config.steps, unit="step", disable=not progress, desc="MD", mininterval=1.0)

    def update_bar() -> None:
        bar.update(dyn.nsteps - bar.n)
        if bar.n % config.log_every == 0:
            bar.set_postfix(
                T=f"{atoms.get_temperature():.0f}K", E=f"{atoms.get_total_energy():.4f}eV"
            )

    dyn.attach(update_bar, interval=1)
    try:
        dyn.run(config.steps)
    finally:
        bar.close()
        for writer in writers:
            writer.close()
    return atoms
