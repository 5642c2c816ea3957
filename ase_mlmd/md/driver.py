"""The MD loop behind :func:`ase_mlmd.md.simulate`: step, watch, drop collapsed replicas,
report, checkpoint.

Order of work at step s (s ≥ 1): one integrator step for the whole batch; every monitor on the
new state (one device → host transfer for all of them); collapsed replicas are recorded with
the state of step s − 1 as their last good frame and taken out of the batch; then, for the
replicas still running, a log row (s % log_every == 0), a trajectory frame (s % save_every ==
0) and, after the frames, the checkpoint. At step 0 the frames, log rows and a checkpoint are
written without monitoring (the start structure is the user's).

If the batch step raises (e.g. a model that fails on one exploded system), each replica is
stepped alone from the previous state to find the ones that fail; they are recorded as
collapsed (monitor ``"error"``) and the step is repeated for the others with the random state
restored. An error that every replica survives alone is raised.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ase_mlmd.md import checkpoint as ckpt
from ase_mlmd.md.forcefield import ForceField
from ase_mlmd.md.integrators import Integrator
from ase_mlmd.md.monitors import Monitor
from ase_mlmd.md.reporters import EnergyLog, TrajectoryReporter, verify_log, verify_trajectory
from ase_mlmd.md.results import ReplicaResult
from ase_mlmd.md.state import MDState


@dataclasses.dataclass
class Collapse:
    """Record of a replica that stopped: monitor name, monitored value, step, message."""

    monitor: str
    value: float | None
    step: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Driver:
    """Runs the batched MD loop; see the module docstring for the order of work.

    Args:
        state: the initialized state of all replicas (after ``integrator.init``).
        integrator, forcefield: the integrator and the force field it uses.
        monitors: stop conditions, checked in this order.
        config: a :class:`~ase_mlmd.md.simulate.SimulationConfig`.
        n_replicas: number of replicas.
        trajectories, log: reporters, or None.
        checkpoint: checkpoint file, or None.
        fingerprint: settings stored in the checkpoint.
    """

    def __init__(
        self,
        state: MDState,
        integrator: Integrator,
        forcefield: ForceField,
        monitors: list[Monitor],
        config: Any,
        n_replicas: int,
        trajectories: TrajectoryReporter | None,
        log: EnergyLog | None,
        checkpoint: Path | None,
        fingerprint: dict[str, str],
    ) -> None:
        self.state = state
        self.integrator = integrator
        self.forcefield = forcefield
        self.monitors = monitors
        self.config = config
        self.save_every = int(config.save_every)
        self.log_every = int(config.log_every or config.save_every)
        self.dt_ps = float(config.timestep_fs) / 1000.0
        self.n_replicas = n_replicas
        self.trajectories = trajectories
        self.log = log
        self.checkpoint = checkpoint
        self.fingerprint = fingerprint
        self.active = list(range(n_replicas))
        self.frames = [0] * n_replicas
        self.collapses: dict[int, Collapse] = {}
        self.last_good: dict[int, MDState] = {}
        self.step = 0
        self.first_step = 0
        self.atom_steps = 0
        self.log_step = -1
        self._bar = None

    # ------------------------------------------------------------------ start / resume
    def start(self) -> None:
        """Fresh run: overwrite the outputs and report step 0."""
        if self.trajectories is not None:
            self.trajectories.start()
        if self.log is not None:
            self.log.start()
        self._report(force_save=True)

    def resume(self, data: dict[str, Any]) -> None:
        """Continue from a checkpoint: cut the outputs back to it and restore the state, the
        random generator and the per-replica records."""
        self.step = self.first_step = int(data["step"])
        self.active = [int(i) for i in data["active"]]
        self.frames = [int(k) for k in data["frames"]]
        self.log_step = int(data["log_step"])
        self.collapses = {int(i): Collapse(**c) for i, c in data["collapses"].items()}
        device = self.state.device
        self.last_good = {
            int(i): ckpt.state_from_dict(s, device) for i, s in data["last_good"].items()
        }
        self.state = ckpt.state_from_dict(data["state"], device)
        generator = self.integrator.generator
        if (generator is None) != (data["generator"] is None):
            raise ckpt.CheckpointMismatchError("the checkpoint's random state does not fit")
        if generator is not None:
            generator.set_state(data["generator"])
        self.forcefield.reset()  # as after every checkpoint in an uninterrupted run
        if self.trajectories is not None:
            self.trajectories.start(self.frames)
            for i in set(range(self.n_replicas)) - set(self.active):
                self.trajectories.finish(i)
        if self.log is not None:
            self.log.start(up_to_step=self.log_step)

    # ------------------------------------------------------------------ the loop
    def run(self, progress: bool = True) -> None:
        from ase_mlmd.progress import progress_bar

        steps = int(self.config.steps)
        self._bar = progress_bar(
            total=steps, initial=self.step, unit="step", desc="MD", disable=not progress
        )
        self._update_bar()
        saved_at = self.step
        while self.step < steps and self.active:
            self.atom_steps += int(self.state.positions.shape[0])
            previous = self._step()
            self.step += 1
            if self.active:
                self._watch(previous)
            if self._report():
                saved_at = self.step
            self._bar.update(1)
        if saved_at != self.step:
            self._checkpoint()

    def _step(self) -> MDState:
        """Advance ``self.state`` by one step; return the state it started from (restricted to
        the replicas still running, in the same order)."""
        previous = self.state
        generator = self.integrator.generator
        rng_state = generator.get_state() if generator is not None else None
        try:
            self.state = self.integrator.step(previous)
            return previous
        except Exception as err:  # find the replicas whose own step fails
            failed = self._isolate_failures(previous, rng_state, err)
        for b, message in failed.items():
            self._collapse(previous, b, Collapse("error", None, self.step + 1, message))
        keep = [b for b in range(previous.n_systems) if b not in failed]
        self._drop(keep)
        previous = self.state
        if self.active:
            self.state = self.integrator.step(previous)
        return previous

    def _isolate_failures(
        self, previous: MDState, rng_state: torch.Tensor | None, err: Exception
    ) -> dict[int, str]:
        failed = {}
        for b in range(previous.n_systems):
            try:
                self.integrator.step(previous.select([b]))
            except Exception as own:  # noqa: BLE001 - any error of this system's own step
                failed[b] = f"{type(own).__name__}: {own}"
        self.forcefield.reset()
        if rng_state is not None:
            self.integrator.generator.set_state(rng_state)
        if not failed:
            raise err
        return failed

    def _watch(self, previous: MDState) -> None:
        """Run the monitors; take collapsed replicas out of the batch."""
        state = self.state
        fired = torch.full((state.n_systems,), -1, dtype=torch.int64, device=state.device)
        for k, monitor in enumerate(self.monitors):
            hit = monitor(state)
            fired = torch.where((fired < 0) & hit, k, fired)
        fired_cpu = fired.cpu()
        if not bool((fired_cpu >= 0).any()):
            return
        keep = []
        for b, k in enumerate(fired_cpu.tolist()):
            if k < 0:
                keep.append(b)
                continue
            monitor = self.monitors[k]
            value = float(monitor.measure(state.select([b]))[0])
            message = monitor.explain(value)
            self._collapse(previous, b, Collapse(monitor.name, value, self.step, message))
        self._drop(keep)

    def _collapse(self, previous: MDState, b: int, record: Collapse) -> None:
        replica = self.active[b]
        self.collapses[replica] = record
        self.last_good[replica] = previous.select([b]).detach()
        if self.trajectories is not None:
            self.trajectories.finish(replica)

    def _drop(self, keep: list[int]) -> None:
        self.state = self.state.select(keep)
        self.active = [self.active[b] for b in keep]
        self._update_bar()

    # ------------------------------------------------------------------ reporting
    def _report(self, force_save: bool = False) -> bool:
        """Log, frames and checkpoint for this step; True if a checkpoint was written."""
        state, step = self.state, self.step
        if self.log is not None and self.active and step % self.log_every == 0:
            with torch.no_grad():
                values = torch.stack(
                    [state.energy, state.kinetic_energy(), state.temperature()]
                ).cpu()
            e_pot, e_kin, temperature = values.numpy()
            self.log.write(step, step * self.dt_ps, self.active, e_pot, e_kin, temperature)
            self.log_step = step
        if not (force_save or step % self.save_every == 0):
            return False
        if self.trajectories is not None and self.active:
            for replica, atoms in zip(self.active, state.to_atoms(), strict=True):
                self.trajectories.write(replica, atoms)
                self.frames[replica] += 1
        self._checkpoint()
        return True

    def _checkpoint(self) -> None:
        if self.checkpoint is None:
            return
        generator = self.integrator.generator
        ckpt.save_checkpoint(
            self.checkpoint,
            {
                "step": self.step,
                "time_ps": self.step * self.dt_ps,
                "state": ckpt.state_to_dict(self.state),
                "active": list(self.active),
                "generator": generator.get_state() if generator is not None else None,
                "frames": list(self.frames),
                "log_step": self.log_step,
                "collapses": {str(i): c.to_dict() for i, c in self.collapses.items()},
                "last_good": {str(i): ckpt.state_to_dict(s) for i, s in self.last_good.items()},
                "fingerprint": dict(self.fingerprint),
            },
        )
        # rebuild the neighbor list from here, exactly as a run resumed from this checkpoint
        self.forcefield.reset()

    def _update_bar(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(f"running {len(self.active)}/{self.n_replicas} replicas")

    # ------------------------------------------------------------------ results
    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self.trajectories is not None:
            self.trajectories.close()
        if self.log is not None:
            self.log.close()

    def remove_empty_outputs(self) -> None:
        """After a failed fresh run: delete trajectories without frames and a log without
        rows (they would only look like results)."""
        if self.trajectories is not None:
            for i, path in enumerate(self.trajectories.paths):
                if self.frames[i] == 0:
                    path.unlink(missing_ok=True)
        if self.log is not None and self.log.rows == 0:
            self.log.path.unlink(missing_ok=True)

    def verify_outputs(self) -> None:
        """Read every trajectory and the log back; raise
        :class:`~ase_mlmd.errors.CorruptOutputError` if one does not hold what was written."""
        if self.trajectories is not None:
            for i, path in enumerate(self.trajectories.paths):
                verify_trajectory(path, self.frames[i])
        if self.log is not None:
            verify_log(self.log.path, self.log.rows)

    def results(self) -> list[ReplicaResult]:
        """One :class:`ReplicaResult` per replica, in replica order."""
        final = dict(zip(self.active, self.state.to_atoms(), strict=True)) if self.active else {}
        out = []
        for i in range(self.n_replicas):
            if i in final:
                out.append(ReplicaResult(i, "completed", final[i], self.frames[i]))
                continue
            c = self.collapses[i]
            out.append(
                ReplicaResult(
                    index=i,
                    status="collapsed",
                    atoms=self.last_good[i].to_atoms()[0],
                    frames=self.frames[i],
                    monitor=c.monitor,
                    value=c.value,
                    message=c.message,
                    collapse_step=c.step,
                    collapse_time_ps=c.step * self.dt_ps,
                )
            )
        return out
