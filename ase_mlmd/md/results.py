"""What :func:`ase_mlmd.md.simulate` returns: per-replica outcome and run statistics."""

from __future__ import annotations

import dataclasses
from typing import Any

from ase import Atoms


@dataclasses.dataclass
class ReplicaResult:
    """The outcome of one replica.

    Attributes:
        index: replica index (position in the structures given to ``simulate``).
        status: ``"completed"`` (ran all steps) or ``"collapsed"`` (stopped by a monitor or by
            an error in its own force evaluation).
        atoms: the final structure (completed), or the last good frame, i.e. the state one
            step before the collapse (collapsed); with momenta, energy and forces.
        frames: trajectory frames written for this replica.
        monitor: name of the monitor that stopped it (``"error"`` for an exception), or None.
        value: the monitored quantity at the collapse (e.g. the bond deviation, Å), or None.
        message: what happened, in words.
        collapse_step: the step at which the collapse was detected, or None.
        collapse_time_ps: simulated time of that step, ps, or None.
    """

    index: int
    status: str
    atoms: Atoms
    frames: int
    monitor: str | None = None
    value: float | None = None
    message: str = ""
    collapse_step: int | None = None
    collapse_time_ps: float | None = None

    @property
    def last_good_step(self) -> int | None:
        """Step of the last good frame (``atoms``) of a collapsed replica."""
        return None if self.collapse_step is None else self.collapse_step - 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no structure)."""
        return {
            "replica": self.index,
            "status": self.status,
            "frames": self.frames,
            "monitor": self.monitor,
            "value": self.value,
            "message": self.message,
            "collapse_step": self.collapse_step,
            "collapse_time_ps": self.collapse_time_ps,
            "final_temperature_K": float(self.atoms.get_temperature()),
            "final_energy_eV": _energy(self.atoms),
        }


def _energy(atoms: Atoms) -> float | None:
    try:
        return float(atoms.get_potential_energy())
    except Exception:  # no calculator results attached
        return None


@dataclasses.dataclass
class SimulationResult:
    """The outcome of :func:`~ase_mlmd.md.simulate`.

    Attributes:
        replicas: one :class:`ReplicaResult` per replica, in replica order.
        steps: the last step reached (== the requested steps unless every replica collapsed).
        steps_run: steps run by this call (less than ``steps`` after a resume).
        resumed_from: step of the checkpoint this call resumed from, or None.
        timestep_fs: time step, fs.
        wall_time_s: wall-clock time of this call, s.
        atom_steps_per_s: atoms × steps advanced per second of the MD loop (this call).
    """

    replicas: list[ReplicaResult]
    steps: int
    steps_run: int
    resumed_from: int | None
    timestep_fs: float
    wall_time_s: float
    atom_steps_per_s: float

    @property
    def atoms(self) -> list[Atoms]:
        """Final structure of each replica (the last good frame for collapsed ones)."""
        return [r.atoms for r in self.replicas]

    @property
    def collapsed(self) -> list[int]:
        """Indices of the replicas that collapsed."""
        return [r.index for r in self.replicas if r.status == "collapsed"]

    @property
    def completed(self) -> list[int]:
        """Indices of the replicas that ran every step."""
        return [r.index for r in self.replicas if r.status == "completed"]

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary of the run and of each replica."""
        return {
            "steps": self.steps,
            "steps_run": self.steps_run,
            "resumed_from": self.resumed_from,
            "timestep_fs": self.timestep_fs,
            "simulated_time_ps": self.steps * self.timestep_fs / 1000.0,
            "wall_time_s": self.wall_time_s,
            "atom_steps_per_s": self.atom_steps_per_s,
            "n_completed": len(self.completed),
            "n_collapsed": len(self.collapsed),
            "replicas": [r.to_dict() for r in self.replicas],
        }

    def table(self) -> str:
        """A plain-text table, one line per replica."""
        header = (
            f"{'replica':>7}  {'status':<9}  {'frames':>6}  {'T_final/K':>9}  {'stopped':>18}  why"
        )
        lines = [header, "-" * len(header)]
        for r in self.replicas:
            stopped = ""
            if r.collapse_step is not None:
                stopped = f"step {r.collapse_step} ({r.collapse_time_ps:.4g} ps)"
            lines.append(
                f"{r.index:>7}  {r.status:<9}  {r.frames:>6}  "
                f"{r.atoms.get_temperature():>9.1f}  {stopped:>18}  {r.message}"
            )
        return "\n".join(lines)
