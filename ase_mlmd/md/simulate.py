"""``simulate``: batched MD of many replicas on CPU or GPU, with trajectories, a log, monitors
and restart.

>>> result = simulate([atoms] * 8, "lj-argon", ensemble="nvt-langevin", temperature=94.4,
...                   timestep=5.0, steps=2000, trajectory="runs/run_{i}.traj")  # doctest: +SKIP

All replicas advance together in one :class:`~ase_mlmd.md.state.MDState`. After every step the
monitors look at every replica; a replica that collapses is taken out of the batch (it costs
nothing afterwards) and its collapse is recorded, while the others go on. Every ``save_every``
steps each running replica gets a frame in its own ASE trajectory, and then a checkpoint is
written; calling ``simulate`` again with the same arguments resumes from it (``restart=True``).

Determinism: with a seed, a run on one device is reproducible bit for bit, and a resumed run
gives the same frames as an uninterrupted one (the neighbor list is rebuilt after every
checkpoint in both). Stochastic thermostats (Langevin, Bussi) draw the noise of all replicas
from one generator, so a replica's trajectory depends on which replicas share its batch;
deterministic ones (NVE, Nosé–Hoover) do not.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms, units

from ase_mlmd.md import checkpoint as ckpt
from ase_mlmd.md.driver import Driver
from ase_mlmd.md.forcefield import ForceField
from ase_mlmd.md.integrators import ENSEMBLES, check_thermostat_constants, make_integrator
from ase_mlmd.md.monitors import Monitor, NaNMonitor, TemperatureBounds
from ase_mlmd.md.reporters import EnergyLog, TrajectoryReporter, checkpoint_path_for, replica_paths
from ase_mlmd.md.results import SimulationResult
from ase_mlmd.md.state import MDState
from ase_mlmd.outdir import lock_folder, locked_outputs

VELOCITIES = ("maxwell-boltzmann", "keep")


@dataclasses.dataclass
class SimulationConfig:
    """Settings of a :func:`simulate` run (units: K, fs, 1/fs, Å).

    Attributes:
        ensemble: one of ``ENSEMBLES`` ("nve", "nvt-langevin", "nvt-nose-hoover", "nvt-bussi").
        temperature_K: one value, or one per replica; thermostat target and temperature of the
            Maxwell–Boltzmann initial velocities.
        timestep_fs: time step.
        steps: total number of steps (a resumed run continues up to it).
        save_every: a trajectory frame (and a checkpoint) every this many steps, step 0 too.
        log_every: a log row per replica every this many steps (default ``save_every``).
        seed: seed of the initial velocities and of the stochastic thermostats.
        friction_per_fs: Langevin friction. tdamp_fs: Nosé–Hoover / Bussi time constant
            (default 100 steps). chain_length: Nosé–Hoover chain length.
        skin: Verlet skin of the neighbor list, Å.
        velocities: "maxwell-boltzmann" (drawn per replica, centre-of-mass momentum removed) or
            "keep" (the momenta already on the atoms).
        dtype: floating dtype of the MD state (the model may compute in its own).
    """

    ensemble: str = "nvt-langevin"
    temperature_K: float | list[float] = 300.0
    timestep_fs: float = 0.5
    steps: int = 1000
    save_every: int = 100
    log_every: int | None = None
    seed: int = 0
    friction_per_fs: float = 0.01
    tdamp_fs: float | None = None
    chain_length: int = 3
    skin: float = 1.0
    velocities: str = "maxwell-boltzmann"
    dtype: torch.dtype = torch.float64

    def validate(self, n_replicas: int) -> None:
        """Raise ``ValueError`` for settings that cannot run (before anything is computed)."""
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {self.ensemble!r}")
        if not (
            isinstance(self.timestep_fs, int | float)
            and math.isfinite(self.timestep_fs)
            and self.timestep_fs > 0
        ):
            raise ValueError(f"timestep must be a positive number of fs, got {self.timestep_fs!r}")
        if int(self.steps) != self.steps or self.steps < 0:
            raise ValueError(f"steps must be a whole number >= 0, got {self.steps!r}")
        for name in ("save_every", "log_every"):
            value = getattr(self, name)
            if value is not None and (int(value) != value or value < 1):
                raise ValueError(f"{name} must be a whole number >= 1 (steps), got {value!r}")
        if self.velocities not in VELOCITIES:
            raise ValueError(f"velocities must be one of {VELOCITIES}, got {self.velocities!r}")
        temperatures = np.atleast_1d(np.asarray(self.temperature_K, dtype=float))
        if temperatures.size not in (1, n_replicas):
            raise ValueError(
                f"temperature has {temperatures.size} values for {n_replicas} replicas; give one "
                "value or one per replica"
            )
        if not np.isfinite(temperatures).all() or (temperatures < 0).any():
            raise ValueError(f"temperature must be >= 0 K, got {self.temperature_K!r}")
        check_thermostat_constants(self.friction_per_fs, self.tdamp_fs)

    def temperatures(self, n_replicas: int) -> list[float]:
        """(n_replicas,) temperature of each replica, K."""
        values = np.atleast_1d(np.asarray(self.temperature_K, dtype=float))
        return np.broadcast_to(values, (n_replicas,)).astype(float).tolist()


def replicate(structures: Any, replicas: int | None) -> list[Atoms]:
    """The list of starting structures: ``structures`` itself, or ``replicas`` copies of one.

    Raises:
        ValueError: ``replicas`` < 1, or a list whose length differs from ``replicas``.
    """
    from ase_mlmd.structures import is_single_structure, to_atoms

    if replicas is not None and (int(replicas) != replicas or replicas < 1):
        raise ValueError(f"replicas must be a whole number >= 1, got {replicas!r}")
    if is_single_structure(structures):
        atoms = to_atoms(structures)
        return [atoms.copy() for _ in range(replicas or 1)]
    atoms_list = [to_atoms(s).copy() for s in structures]
    if replicas is not None and replicas != len(atoms_list):
        raise ValueError(
            f"{len(atoms_list)} structures were given with replicas={replicas}; pass one "
            "structure to copy it, or leave replicas out to run each structure once"
        )
    return atoms_list


def resolve_model(model: Any, trust: bool = False) -> torch.nn.Module:
    """An energy model from a module, a card name/path or an :class:`MLCalculator`.

    Raises:
        TypeError: ``model`` is none of these (e.g. one of ASE's own calculators, which cannot
            run in the torch engine).
    """
    if isinstance(model, str | os.PathLike):
        from ase_mlmd.calculators.registry import find_card, model_from_card

        return model_from_card(find_card(model), trust=trust)
    if isinstance(model, torch.nn.Module):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, torch.nn.Module):  # an MLCalculator
        return inner
    raise TypeError(
        f"the torch MD engine needs an energy model (a torch module, a card name or an "
        f"MLCalculator), not a {type(model).__name__}. ASE's own calculators run with ASE's "
        "integrators: use ase_mlmd.md.ase_md.run_ase_md (CLI: --engine ase)"
    )


def maxwell_boltzmann_momenta(
    state: MDState, temperatures: Sequence[float], seed: int
) -> torch.Tensor:
    """(N, 3) momenta drawn at each system's temperature (K), amu·Å/ASE-time, with each
    system's centre-of-mass momentum removed. System b draws from its own generator seeded by
    (seed, b), on the CPU, so the draw does not depend on the device or on the other systems."""
    masses = state.masses.detach().cpu().to(torch.float64)
    sizes = state.n_atoms.tolist()
    parts, start = [], 0
    for b, n in enumerate(sizes):
        child = int(np.random.SeedSequence([int(seed), b]).generate_state(1, np.uint64)[0])
        gen = torch.Generator().manual_seed(child % (2**63))
        m = masses[start : start + n, None]
        p = torch.randn((n, 3), generator=gen, dtype=torch.float64) * torch.sqrt(
            m * units.kB * temperatures[b]
        )
        p = p - m * p.sum(dim=0) / m.sum()
        parts.append(p)
        start += n
    return torch.cat(parts).to(device=state.device, dtype=state.dtype)


def simulate(
    structures: Any,
    model: Any,
    *,
    replicas: int | None = None,
    ensemble: str = "nvt-langevin",
    temperature: float | Sequence[float] = 300.0,
    timestep: float = 0.5,
    steps: int = 1000,
    save_every: int = 100,
    log_every: int | None = None,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | str = torch.float64,
    trajectory: str | os.PathLike | None = None,
    logfile: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    monitors: Sequence[Monitor] = (),
    temperature_bounds: tuple[float, float] | None = (0.1, 100_000.0),
    seed: int = 0,
    friction: float = 0.01,
    tdamp: float | None = None,
    chain_length: int = 3,
    skin: float = 1.0,
    velocities: str = "maxwell-boltzmann",
    progress: bool = True,
    restart: bool = True,
    trust: bool = False,
) -> SimulationResult:
    """Run MD of many replicas at once and return what happened to each.

    Args:
        structures: a list of ASE Atoms (or pymatgen structures), one per replica, or one
            structure copied ``replicas`` times.
        model: an energy model (nequip / schnetpack modules are wrapped), a card name or path
            (``"lj-argon"``), or an ``MLCalculator``.
        replicas: number of copies of a single structure.
        ensemble, temperature (K, one or per replica), timestep (fs), steps, save_every,
            log_every, seed, friction (1/fs), tdamp (fs), chain_length, skin (Å), velocities:
            see :class:`SimulationConfig`.
        device: "cpu", "cuda", "cuda:1" or "auto". dtype: of the MD state (default float64).
        trajectory: per-replica ASE trajectory pattern with ``{i}``, e.g. ``"run_{i}.traj"``.
        logfile: CSV energy log (step, time_ps, replica, E_pot, E_kin, E_tot, T).
        checkpoint: checkpoint file; default beside the trajectories (``run.checkpoint.pt``
            for ``run_{i}.traj``) or the log; None and no outputs: no checkpoint.
        monitors: extra stop conditions (e.g. ``BondDeviation(ref, 0.5)``, ``MaxForce(20)``).
            :class:`NaNMonitor` is always on; ``TemperatureBounds(*temperature_bounds)`` is
            added unless ``monitors`` has one or ``temperature_bounds`` is None.
        progress: show a progress bar (steps, running replicas).
        restart: resume from the checkpoint if there is one (it must come from the same
            structures, model and settings); False starts afresh and overwrites the outputs.
        trust: allow card weights that execute code when loaded.

    Raises (all before the first step):
        ValueError: bad settings (ensemble, timestep ≤ 0, replicas < 1, save_every < 1, a
            trajectory pattern without ``{i}`` for several replicas, ...).
        InvalidStructureError: NaN/inf positions or (kept) velocities, degenerate cell.
        UnsupportedSpeciesError: elements the model was not trained on.
        DeviceNotAvailableError: CUDA asked for on a machine without it.
        CheckpointMismatchError: ``restart=True`` and the checkpoint is from another run.
        OutputLockedError: another run is writing to the output folder now.
        CorruptOutputError: an output to resume from is corrupt, or (after the run) an output
            does not read back as written.

    The folders of the outputs are locked while the run goes on
    (:func:`ase_mlmd.outdir.lock_folder`); a fresh run that fails leaves no empty trajectory
    or log behind; at the end every trajectory and the log are read back and checked.
    """
    from ase_mlmd.calculators.ml_calculator import resolve_device

    wall_start = time.perf_counter()
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    config = SimulationConfig(
        ensemble=ensemble,
        temperature_K=temperature if np.ndim(temperature) == 0 else list(temperature),
        timestep_fs=timestep,
        steps=steps,
        save_every=save_every,
        log_every=log_every,
        seed=seed,
        friction_per_fs=friction,
        tdamp_fs=tdamp,
        chain_length=chain_length,
        skin=skin,
        velocities=velocities,
        dtype=dtype,
    )
    atoms_list = replicate(structures, replicas)
    n = len(atoms_list)
    config.validate(n)
    device = resolve_device(device)
    paths = replica_paths(trajectory, n) if trajectory is not None else None
    if checkpoint is None and trajectory is not None:
        checkpoint = checkpoint_path_for(trajectory)
    elif checkpoint is None and logfile is not None:
        checkpoint = Path(logfile).with_suffix(".checkpoint.pt")

    forcefield = ForceField(resolve_model(model, trust), skin=skin)
    forcefield.model.to(device)
    watch = _monitor_list(monitors, temperature_bounds)
    temperatures = config.temperatures(n)
    if velocities == "maxwell-boltzmann":
        for atoms in atoms_list:  # drawn below; whatever the atoms carried is not used
            atoms.set_momenta(np.zeros((len(atoms), 3)))
    state = MDState.from_atoms(atoms_list, device=device, dtype=dtype)
    if velocities == "maxwell-boltzmann":
        state = state.replace(momenta=maxwell_boltzmann_momenta(state, temperatures, seed))
    forcefield.check(state)
    for monitor in watch:
        monitor.prepare(state)
    integrator = make_integrator(
        ensemble,
        forcefield,
        timestep,
        temperature_K=temperatures,
        friction_per_fs=friction,
        tdamp_fs=tdamp,
        chain_length=chain_length,
        seed=seed,
    )
    state = integrator.init(state)

    fingerprint = {
        "replicas": str(n),
        "structures": ckpt.structures_digest(atoms_list, with_momenta=velocities == "keep"),
        "model": ckpt.model_identity(forcefield.model),
        "ensemble": ensemble,
        "timestep_fs": repr(float(timestep)),
        "temperature_K": repr(temperatures),
        "friction_per_fs": repr(friction),
        "tdamp_fs": repr(tdamp),
        "chain_length": str(chain_length),
        "seed": str(seed),
        "velocities": velocities,
        "dtype": str(dtype),
        "device": device.type,
        "save_every": str(save_every),
        "log_every": str(config.log_every or save_every),
        "monitors": " | ".join(m.describe() for m in watch),
    }
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    logfile = Path(logfile) if logfile is not None else None
    folders = _output_folders(trajectory, logfile, checkpoint)
    with locked_outputs(*(lock_folder(f, "MD output folder") for f in folders)):
        saved = None
        if restart and checkpoint is not None and checkpoint.is_file():
            saved = ckpt.load_checkpoint(checkpoint)
            ckpt.check_compatible(saved, fingerprint, checkpoint)
            if saved["step"] > steps:
                raise ckpt.CheckpointError(
                    f"the checkpoint {checkpoint} is at step {saved['step']}, beyond the "
                    f"{steps} steps asked for; ask for at least {saved['step']} steps, or "
                    "delete it or pass restart=False to start fresh"
                )
        driver = Driver(
            state=state,
            integrator=integrator,
            forcefield=forcefield,
            monitors=watch,
            config=config,
            n_replicas=n,
            trajectories=TrajectoryReporter(paths) if paths is not None else None,
            log=EnergyLog(logfile) if logfile is not None else None,
            checkpoint=checkpoint,
            fingerprint=fingerprint,
        )
        loop_start = time.perf_counter()
        try:
            if saved is not None:
                driver.resume(saved)
            else:
                driver.start()
            loop_start = time.perf_counter()
            driver.run(progress=progress)
        except BaseException:
            driver.close()
            if saved is None:
                driver.remove_empty_outputs()
            raise
        driver.close()
        loop_time = time.perf_counter() - loop_start
        driver.verify_outputs()
    return SimulationResult(
        replicas=driver.results(),
        steps=driver.step,
        steps_run=driver.step - driver.first_step,
        resumed_from=None if saved is None else int(saved["step"]),
        timestep_fs=float(timestep),
        wall_time_s=time.perf_counter() - wall_start,
        atom_steps_per_s=driver.atom_steps / loop_time if loop_time > 0 else 0.0,
    )


def _output_folders(
    trajectory: str | os.PathLike | None, logfile: Path | None, checkpoint: Path | None
) -> list[Path]:
    """The folders that hold the run's outputs (locked while it runs), without duplicates."""
    folders = []
    if trajectory is not None:
        folders.append(checkpoint_path_for(trajectory).parent)
    folders += [p.parent for p in (logfile, checkpoint) if p is not None]
    unique: dict[str, Path] = {}
    for folder in folders:
        unique.setdefault(os.path.abspath(folder), folder)
    return list(unique.values())


def _monitor_list(
    monitors: Sequence[Monitor], temperature_bounds: tuple[float, float] | None
) -> list[Monitor]:
    """NaN first, then the user's monitors, then the default temperature bounds."""
    monitors = list(monitors)
    for m in monitors:
        if not isinstance(m, Monitor):
            raise TypeError(
                f"monitors must be ase_mlmd.md.monitors.Monitor objects, got {type(m).__name__}"
            )
    out: list[Monitor] = [NaNMonitor(), *(m for m in monitors if not isinstance(m, NaNMonitor))]
    if temperature_bounds is not None and not any(
        isinstance(m, TemperatureBounds) for m in monitors
    ):
        out.append(TemperatureBounds(*temperature_bounds))
    return out
