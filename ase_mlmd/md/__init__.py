"""Molecular dynamics: ASE-driven runs (:mod:`ase_mlmd.md.ase_md`) and the batched torch engine.

The torch engine runs many replicas at once on CPU or GPU::

    from ase_mlmd.md import BondDeviation, simulate
    result = simulate(frames, "my-model", ensemble="nvt-nose-hoover", temperature=500,
                      timestep=0.5, steps=600_000, save_every=100, device="cuda",
                      trajectory="run_{i}.traj", monitors=[BondDeviation(reference, 0.5)])

Importing this package does not import nequip or schnetpack.
"""

from ase_mlmd.md.checkpoint import CheckpointError, CheckpointMismatchError
from ase_mlmd.md.forcefield import ForceField
from ase_mlmd.md.integrators import ENSEMBLES, Integrator, make_integrator
from ase_mlmd.md.monitors import BondDeviation, MaxForce, Monitor, NaNMonitor, TemperatureBounds
from ase_mlmd.md.reporters import read_log
from ase_mlmd.md.results import ReplicaResult, SimulationResult
from ase_mlmd.md.simulate import SimulationConfig, simulate
from ase_mlmd.md.state import MDState

__all__ = [
    "ENSEMBLES",
    "BondDeviation",
    "CheckpointError",
    "CheckpointMismatchError",
    "ForceField",
    "Integrator",
    "MDState",
    "MaxForce",
    "Monitor",
    "NaNMonitor",
    "ReplicaResult",
    "SimulationConfig",
    "SimulationResult",
    "TemperatureBounds",
    "make_integrator",
    "read_log",
    "simulate",
]
