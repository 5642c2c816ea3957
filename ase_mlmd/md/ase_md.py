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

from ase_mlmd.errors import CorruptOutputError
from ase_mlmd.md.integrators import check_thermostat_constants
from ase_mlmd.outdir import lock_file, locked_outputs

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
        check_thermostat_constants(self.friction_per_fs, self.tdamp_fs)


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
        progress: show progress (a bar on a terminal, plain lines otherwise).

    Both files are locked while the run goes on (sidecar ``.NAME.lock``), are not left behind
    empty when the run fails, and are read back at the end.

    Raises:
        InvalidStructureError: NaN/inf positions or a degenerate periodic cell (before any step).
        OutputLockedError: another run is writing the trajectory or log now.
        CorruptOutputError: a file written does not read back as written.
    """
    from ase.io.trajectory import Trajectory
    from ase.md import MDLogger
    from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta

    from ase_mlmd.batch import check_structure
    from ase_mlmd.md.reporters import verify_trajectory

    check_structure(atoms.positions, atoms.cell.array, atoms.pbc, "MD start structure")
    rng = np.random.default_rng(config.seed)
    atoms.calc = calc
    if not config.keep_velocities:
        thermalize_momenta(atoms, temperature_K=config.temperature_K, rng=rng)
        Stationary(atoms)
        if not atoms.pbc.any():
            ZeroRotation(atoms)
    atoms.get_forces()  # a calculator that fails, fails before any file is created
    dyn = make_dynamics(atoms, config, rng)
    outputs = [Path(p) for p in (trajectory, logfile) if p is not None]
    with locked_outputs(*(lock_file(p, "MD output file") for p in outputs)):
        writers: list = []
        try:
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
            _run_with_progress(dyn, atoms, config, progress)
        except BaseException:
            for writer in writers:
                writer.close()
            _remove_if_empty(trajectory, logfile)
            raise
        for writer in writers:
            writer.close()
        if trajectory is not None:
            verify_trajectory(Path(trajectory), config.steps // config.save_every + 1)
        if logfile is not None:
            _verify_ase_log(Path(logfile), config.steps // config.log_every + 1)
    return atoms


def _run_with_progress(dyn, atoms: Atoms, config: AseMDConfig, progress: bool) -> None:
    from ase_mlmd.progress import progress_bar

    bar = progress_bar(
        total=config.steps, unit="step", disable=not progress, desc="MD", mininterval=1.0
    )

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


def _remove_if_empty(trajectory: str | Path | None, logfile: str | Path | None) -> None:
    """After a failed run: delete a trajectory without frames and a log without data rows."""
    from ase_mlmd.md.reporters import count_frames

    if trajectory is not None:
        path = Path(trajectory)
        try:
            empty = count_frames(path) == 0
        except CorruptOutputError:
            empty = False
        if empty:
            path.unlink(missing_ok=True)
    if logfile is not None:
        path = Path(logfile)
        if path.is_file() and len(path.read_text().splitlines()) <= 1:
            path.unlink()


def _verify_ase_log(path: Path, n_rows: int) -> None:
    """Check that the MDLogger file holds a header and ``n_rows`` rows of numbers."""
    lines = path.read_text().splitlines()
    rows = lines[1:]
    problem = None
    if len(rows) != n_rows:
        problem = f"it holds {len(rows)} rows, this run wrote {n_rows}"
    else:
        for number, line in enumerate(rows, start=2):
            try:
                [float(x) for x in line.split()]
            except ValueError:
                problem = f"line {number} is not a row of numbers: {line!r}"
                break
    if problem:
        raise CorruptOutputError(
            f"the run finished but its log {path} does not read back ({problem}); another "
            "process may have written to it at the same time. Run again into another file"
        )
