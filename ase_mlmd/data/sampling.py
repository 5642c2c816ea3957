"""Labelled frames from a reference method: sample them by MD, or relabel frames you have.

:func:`sample_reference` runs MD with ASE's integrators (:func:`ase_mlmd.md.ase_md.
make_dynamics`) and a reference calculator and writes every ``every``-th step as a labelled
frame; :func:`label_frames` evaluates the reference on given frames.

Frame files are extended XYZ. ``ase.io.read(path, ":")`` (and ``ase_mlmd.data.read_frames``)
gives atoms whose ``get_potential_energy()`` (eV) and ``get_forces()`` (eV/Å, the raw
reference forces, never constraint-projected) work; periodic frames also carry the stress
(eV/Å³, ASE sign and Voigt order) when the reference computes one. Sampled frames also hold
``momenta`` (amu·Å/ASE time) and info ``step``, ``time_fs``, ``temperature_K`` (kinetic, 3N
degrees of freedom as ASE counts them), ``reference`` and the run settings
(``ensemble``, ``target_temperature_K``, ``timestep_fs``, ``every``, ``seed``,
``friction_per_fs`` for Langevin, ``tdamp_fs`` for Nosé–Hoover/Bussi).

Writing is atomic: frames are collected in memory and the file is replaced (temp file in the
same folder + ``os.replace``) at most every ``flush_seconds`` and at the end, so a reader
or a killed run never sees a truncated frame; a kill loses at most the frames of the last
``flush_seconds``. Running the same ``sample`` again resumes after the last frame in the file
(positions and momenta of that frame; Nosé–Hoover chain variables restart at zero and
stochastic thermostats draw from a generator seeded with ``(seed, step)``, so a resumed run is
reproducible and statistically — not bitwise — the same as an uninterrupted one).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.calculators.singlepoint import SinglePointCalculator

from ase_mlmd.data.reference import check_species, reference_calculator
from ase_mlmd.errors import CheckpointMismatchError, DataFormatError, SimulationUnstableError
from ase_mlmd.fileio import temporary_path
from ase_mlmd.md.ase_md import AseMDConfig, make_dynamics
from ase_mlmd.outdir import lock_file
from ase_mlmd.threads import thread_limit

#: a run stops if the kinetic temperature leaves this range (K), as in MDsim
TEMPERATURE_LIMIT_K = 100_000.0


@dataclasses.dataclass
class SamplingConfig:
    """Settings of a reference MD run.

    Attributes:
        temperature: thermostat and initial Maxwell–Boltzmann temperature, K.
        timestep: fs.
        steps: number of MD steps.
        every: a frame every this many steps; step 0 (the start structure) is written too, so a
            run has ``steps // every + 1`` frames.
        ensemble: one of :data:`ase_mlmd.md.ase_md.ENSEMBLES` (``nve``, ``nvt-langevin``,
            ``nvt-nose-hoover``, ``nvt-bussi``).
        friction: Langevin friction, 1/fs (0.01/fs = 10/ps: decorrelates fast, good for
            sampling configurations; use ~0.001 for dynamics closer to NVE).
        tdamp: Nosé–Hoover/Bussi time constant, fs (default 100 time steps).
        seed: seed of the initial velocities and of the stochastic thermostats.
    """

    temperature: float = 300.0
    timestep: float = 0.5
    steps: int = 1000
    every: int = 10
    ensemble: str = "nvt-langevin"
    friction: float = 0.01
    tdamp: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"every must be >= 1 step, got {self.every}")
        self.md_config()  # validates the rest

    def md_config(self) -> AseMDConfig:
        """The same settings for :mod:`ase_mlmd.md.ase_md`."""
        return AseMDConfig(
            ensemble=self.ensemble,
            temperature_K=self.temperature,
            timestep_fs=self.timestep,
            steps=self.steps,
            friction_per_fs=self.friction,
            tdamp_fs=self.tdamp,
            save_every=self.every,
            seed=self.seed,
        )

    def fingerprint(self) -> dict[str, Any]:
        """The settings stored in every frame; a resumed run must match them."""
        out: dict[str, Any] = {
            "ensemble": self.ensemble,
            "target_temperature_K": float(self.temperature),
            "timestep_fs": float(self.timestep),
            "every": int(self.every),
            "seed": int(self.seed),
        }
        if self.ensemble == "nvt-langevin":
            out["friction_per_fs"] = float(self.friction)
        if self.ensemble in ("nvt-nose-hoover", "nvt-bussi"):
            out["tdamp_fs"] = float(self.tdamp or 100 * self.timestep)
        return out


class FrameFileWriter:
    """Extended-XYZ frames appended to a file by atomic replacement.

    Frames are kept in memory and written at most every ``flush_seconds`` (0: every frame) and
    on :meth:`close`: the current file is copied to a temp file in the same folder, the new
    frames are appended, and the temp file replaces the file (``os.replace``).

    Args:
        path: output file.
        append: keep the frames already in ``path`` (else the first flush replaces it).
        flush_seconds: most time between writes, s.
    """

    def __init__(self, path: str | os.PathLike, append: bool, flush_seconds: float = 5.0) -> None:
        self.path = Path(path)
        self.append = append and self.path.exists()
        self.flush_seconds = flush_seconds
        self._pending: list[str] = []
        self._last_flush = time.monotonic()
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            stale.unlink(missing_ok=True)  # left by a run killed while writing

    def add(self, atoms: Atoms) -> None:
        """Queue one frame; write if ``flush_seconds`` have passed since the last write."""
        from ase.io import write

        buffer = io.StringIO()
        write(buffer, atoms, format="extxyz")
        self._pending.append(buffer.getvalue())
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the queued frames now (atomically); a new file is created even when empty."""
        if not self._pending and self.append:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(self.path)
        try:
            with open(tmp, "wb") as out:
                if self.append:
                    with open(self.path, "rb") as old:
                        while chunk := old.read(1 << 20):
                            out.write(chunk)
                out.write("".join(self._pending).encode())
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()
        self._pending.clear()
        self.append = True
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Write what is queued."""
        self.flush()

    def __enter__(self) -> FrameFileWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _resolve_reference(reference: str | BaseCalculator) -> tuple[BaseCalculator, str]:
    calc = reference_calculator(reference) if isinstance(reference, str) else reference
    return calc, getattr(calc, "reference_name", None) or type(calc).__name__


def labelled_copy(atoms: Atoms, calc: BaseCalculator, info: dict[str, Any]) -> Atoms:
    """A copy of ``atoms`` with the reference's energy, forces (and stress when periodic in 3D
    and the calculator has it) on a ``SinglePointCalculator``; ``atoms.calc`` is used if it
    holds results for these positions (no recomputation during MD)."""
    if atoms.calc is not calc:
        atoms = atoms.copy()
        atoms.calc = calc
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces(apply_constraint=False)
    results: dict[str, Any] = {"energy": energy, "forces": forces}
    if atoms.pbc.all() and "stress" in getattr(calc, "implemented_properties", ()):
        results["stress"] = atoms.get_stress(apply_constraint=False)
    frame = atoms.copy()
    frame.constraints = []
    for key in ("forces", "energies", "stress"):
        frame.arrays.pop(key, None)
    frame.info = dict(info)
    frame.calc = SinglePointCalculator(frame, **results)
    return frame


def _read_frames(path: Path) -> list[Atoms]:
    from ase.io import read

    try:
        return list(read(path, index=":", format="extxyz"))
    except Exception as err:
        raise DataFormatError(
            f"{path} exists but is not a readable extended XYZ frames file ({err}); choose "
            "another output or start afresh (resume=False / --no-resume overwrites it)"
        ) from None


def _mismatch(path: Path, what: str) -> CheckpointMismatchError:
    return CheckpointMismatchError(
        f"{path} holds another run than the one asked for: {what}. Rerun with the settings it "
        "was made with to resume it, choose another output file, or start afresh "
        "(resume=False / --no-resume overwrites it)"
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float | np.number) and isinstance(b, int | float | np.number):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b


def _check_resumable(
    path: Path, frames: list[Atoms], start: Atoms, name: str, config: SamplingConfig
) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``frames`` are the beginning of the run
    that ``start``, ``name`` and ``config`` describe."""
    expected = {"reference": name, **config.fingerprint()}
    for i, frame in enumerate(frames):
        wrong = [
            f"{key}={frame.info.get(key)!r} in the file, {value!r} now"
            for key, value in expected.items()
            if not _same(frame.info.get(key), value)
        ]
        if wrong:
            raise _mismatch(path, f"frame {i}: " + "; ".join(wrong))
        if frame.info.get("step") != i * config.every:
            raise _mismatch(
                path, f"frame {i} is step {frame.info.get('step')}, expected {i * config.every}"
            )
        if len(frame) != len(start) or (frame.numbers != start.numbers).any():
            raise _mismatch(path, f"frame {i} has other atoms than the start structure")
    if not np.allclose(frames[0].positions, start.positions, rtol=0.0, atol=1e-6):
        raise _mismatch(path, "its step-0 positions differ from the start structure")
    if frames[-1].info["step"] > config.steps:
        raise _mismatch(
            path, f"it already runs to step {frames[-1].info['step']} > steps={config.steps}"
        )
    if "momenta" not in frames[-1].arrays:
        raise _mismatch(path, "its last frame has no momenta to restart from")


def _thermalize(atoms: Atoms, temperature: float, rng: np.random.Generator) -> None:
    from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta

    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    if not atoms.pbc.any():
        with np.errstate(invalid="ignore", divide="ignore"):  # linear molecules: zero moments
            ZeroRotation(atoms)


def sample_reference(
    atoms: Atoms,
    reference: str | BaseCalculator,
    config: SamplingConfig,
    output: str | os.PathLike,
    *,
    resume: bool = True,
    progress: bool = True,
    flush_seconds: float = 5.0,
    threads: int | None = None,
) -> list[Atoms]:
    """Run MD with a reference calculator and write labelled frames (see the module docstring).

    Args:
        atoms: start structure (ASE Atoms or pymatgen; not modified). Its constraints apply.
        reference: a reference name (:func:`~ase_mlmd.data.reference.reference_calculator`)
            or an ASE calculator (named by its ``reference_name`` or class).
        config: the MD settings; ``config.steps // config.every + 1`` frames (step 0 included).
        output: extended XYZ file.
        resume: continue the run already in ``output`` (it must be the same run, else
            :class:`CheckpointMismatchError`); False overwrites it.
        progress: progress over steps (a bar on a terminal, plain lines otherwise).
        flush_seconds: most seconds between file writes.
        threads: torch/OpenMP/BLAS threads of the reference (:func:`ase_mlmd.threads.thread_limit`).

    Returns:
        All frames of the run, as read back from ``output``.

    Raises:
        UnsupportedSpeciesError: elements the reference cannot handle (before any step).
        CheckpointMismatchError: ``output`` holds another run.
        OutputLockedError: another run is writing ``output`` now (sidecar ``.NAME.lock``).
        SimulationUnstableError: NaN energy/forces or T > 100 000 K; the frames before stay.
    """
    from ase.io import read

    from ase_mlmd.batch import check_structure
    from ase_mlmd.progress import progress_bar
    from ase_mlmd.structures import to_atoms

    atoms = to_atoms(atoms).copy()
    calc, name = _resolve_reference(reference)
    check_structure(atoms.positions, atoms.cell.array, atoms.pbc, "start structure")
    check_species(calc, atoms, "the start structure")
    output = Path(output)
    with lock_file(output, "frames file"):
        start_step, resumed = 0, False
        if resume and output.exists() and output.stat().st_size > 0:
            done = _read_frames(output)
            _check_resumable(output, done, atoms, name, config)
            start_step, resumed = int(done[-1].info["step"]), True
            atoms.positions = done[-1].positions
            atoms.set_momenta(done[-1].get_momenta(), apply_constraint=False)
            rng = np.random.default_rng([config.seed, start_step])
        else:
            rng = np.random.default_rng(config.seed)
            _thermalize(atoms, config.temperature, rng)
        if resumed and start_step == config.steps:
            return _read_frames(output)

        atoms.calc = calc
        dyn = make_dynamics(atoms, config.md_config(), rng)
        fingerprint = {"reference": name, **config.fingerprint()}
        writer = FrameFileWriter(output, append=resumed, flush_seconds=flush_seconds)
        bar = progress_bar(
            total=config.steps,
            initial=start_step,
            unit="step",
            disable=not progress,
            desc=f"sample {name}",
            mininterval=1.0,
        )
        try:
            with thread_limit(threads):
                for _ in dyn.irun(config.steps - start_step):
                    step = start_step + dyn.nsteps
                    bar.update(step - bar.n)
                    if step % config.every or (resumed and step == start_step):
                        continue
                    temperature = atoms.get_temperature()
                    frame = labelled_copy(
                        atoms,
                        calc,
                        {
                            "step": step,
                            "time_fs": step * config.timestep,
                            "temperature_K": temperature,
                            **fingerprint,
                        },
                    )
                    energy, forces = frame.get_potential_energy(), frame.get_forces()
                    if not (np.isfinite(energy) and np.isfinite(forces).all()) or not (
                        temperature < TEMPERATURE_LIMIT_K
                    ):
                        raise SimulationUnstableError(
                            f"reference MD with {name} blew up at step {step} (E = {energy} eV, "
                            f"T = {temperature:.0f} K); the frames before it are in {output}. "
                            "Use a smaller timestep, a lower temperature or a better start "
                            "structure"
                        )
                    writer.add(frame)
                    bar.set_postfix(T=f"{temperature:.0f}K", E=f"{energy:.4f}eV")
        finally:
            bar.close()
            writer.close()
        return list(read(output, index=":", format="extxyz"))


_LABEL_INFO_KEYS = ("energy", "free_energy", "stress", "forces", "reference", "source_index")


def label_frames(
    frames: Sequence[Atoms] | str | os.PathLike,
    reference: str | BaseCalculator,
    output: str | os.PathLike,
    *,
    progress: bool = True,
    resume: bool = True,
    flush_seconds: float = 5.0,
    threads: int | None = None,
) -> list[Atoms]:
    """Evaluate a reference on existing frames and write them labelled (extended XYZ).

    Each output frame keeps the positions, cell, pbc, info and per-atom arrays of its input
    frame; old labels are replaced by the reference's energy (eV), forces (eV/Å) and, for
    3D-periodic frames, stress; info gains ``reference`` and ``source_index`` (the frame's
    index in the input).

    Args:
        frames: Atoms, or a file ASE reads (all frames).
        reference: a reference name or an ASE calculator.
        output: extended XYZ file.
        progress: progress over frames (a bar on a terminal, plain lines otherwise).
        resume: keep the frames already labelled in ``output`` (same reference, same positions
            as the first input frames) and label the rest; False overwrites it.
        flush_seconds: most seconds between file writes.
        threads: torch/OpenMP/BLAS threads of the reference (:func:`ase_mlmd.threads.thread_limit`).

    Returns:
        The labelled frames.

    Raises:
        UnsupportedSpeciesError: a frame with elements the reference cannot handle (checked
            for all frames before any calculation).
        CheckpointMismatchError: ``output`` holds frames labelled otherwise or from other input.
        OutputLockedError: another run is writing ``output`` now (sidecar ``.NAME.lock``).
    """
    from ase.io import read

    from ase_mlmd.progress import progress_bar
    from ase_mlmd.structures import to_atoms

    source = str(frames) if isinstance(frames, str | os.PathLike) else "frames"
    if isinstance(frames, str | os.PathLike):
        frames = read(frames, index=":")
    frames = [to_atoms(f) for f in frames]
    calc, name = _resolve_reference(reference)
    for i, frame in enumerate(frames):
        check_species(calc, frame, f"frame {i} of {source}")
    output = Path(output)
    with lock_file(output, "frames file"):
        done: list[Atoms] = []
        if resume and output.exists() and output.stat().st_size > 0:
            done = _read_frames(output)
            for i, old in enumerate(done):
                if old.info.get("reference") != name:
                    raise _mismatch(
                        output,
                        f"frame {i} is labelled by {old.info.get('reference')!r}, not {name!r}",
                    )
                same_input = (
                    i < len(frames)
                    and len(old) == len(frames[i])
                    and (old.numbers == frames[i].numbers).all()
                    and np.allclose(old.positions, frames[i].positions, rtol=0.0, atol=1e-6)
                )
                if not same_input:
                    raise _mismatch(output, f"its frame {i} is not frame {i} of {source}")
        labelled = list(done)
        writer = FrameFileWriter(output, append=bool(done), flush_seconds=flush_seconds)
        with writer, thread_limit(threads):
            for i in progress_bar(
                range(len(done), len(frames)),
                total=len(frames),
                initial=len(done),
                unit="frame",
                disable=not progress,
                desc=f"label {name}",
                mininterval=1.0,
            ):
                info = {k: v for k, v in frames[i].info.items() if k not in _LABEL_INFO_KEYS}
                frame = labelled_copy(
                    frames[i], calc, {**info, "reference": name, "source_index": i}
                )
                writer.add(frame)
                labelled.append(frame)
        return labelled


__all__ = [
    "FrameFileWriter",
    "SamplingConfig",
    "label_frames",
    "labelled_copy",
    "sample_reference",
]
