"""The MDsim protocol: force MAE on the test split, replicas from test frames, collapse detection.

:func:`run_benchmark` judges each model by the simulations it produces (Fu et al.): it

1. splits the reference data (random, seed 123 by default) and measures the force MAE of each
   model on the test frames;
2. starts ``replicas`` simulations per model from different test frames, with the system's
   thermostat settings (:mod:`ase_mlmd.bench.systems`), in the batched engine — molecules stop
   at the bond-deviation collapse (:class:`~ase_mlmd.md.monitors.BondDeviation`), condensed
   phases are judged afterwards by the sliding-window RDF criterion;
3. computes every metric that applies (:mod:`ase_mlmd.bench.metrics`) and returns them; the
   report is written by :mod:`ase_mlmd.bench.report`.

A replica that crashes (an exception in its force evaluation, NaN, runaway temperature) is
reported as collapsed at its last good frame and stays in the statistics.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms
from ase.io import read

from ase_mlmd.bench.systems import CONDENSED, MOLECULE, SYSTEMS, BenchSystem, get_system
from ase_mlmd.errors import IncompatibleTrajectoriesError, UnsupportedSpeciesError
from ase_mlmd.threads import thread_limit, threads_for

if TYPE_CHECKING:
    from ase_mlmd.bench.metrics import ReferenceObservables


@dataclasses.dataclass
class BenchConfig:
    """Settings of a benchmark run.

    Attributes:
        system: protocol name (see :data:`ase_mlmd.bench.systems.SYSTEMS`).
        replicas: simulations per model (MDsim: about 5), started from different test frames.
        length_ps: simulated time per replica; None = the system's default (or short) length.
        short: use the system's documented short length (demo, tutorials, CI).
        seed: seed of the data split, the choice of start frames and the thermostat noise.
        split: train/val/test sizes (fractions or counts) of the reference data; the test part
            gives the start frames and the force MAE.
        max_test_frames: at most this many test frames enter the force MAE.
        device: "cpu", "cuda" or "auto".
        progress: show progress bars.
        trust: allow model files that execute code when loaded.
        topology: PDB of the peptide (atom order of the reference), for φ/ψ.
        reference_fes: reference free-energy grid (PLUMED ``fes.dat``) for the peptide; without
            it the FES of the reference frames is used.
        threads: CPU threads for the models: "auto" (one thread when all replicas together
            have fewer than 500 atoms, see :mod:`ase_mlmd.threads`), a number, or None (torch's
            setting).
    """

    system: str = "ethanol"
    replicas: int = 5
    length_ps: float | None = None
    short: bool = False
    seed: int = 123
    split: tuple[float, ...] = (0.8, 0.1, 0.1)
    max_test_frames: int = 1000
    device: str = "cpu"
    progress: bool = True
    trust: bool = False
    topology: str | None = None
    reference_fes: str | None = None
    threads: int | str | None = "auto"

    def __post_init__(self) -> None:
        get_system(self.system)  # an unknown name fails here, with the known ones
        if not (isinstance(self.replicas, int) and self.replicas >= 1):
            raise ValueError(
                f"replicas (--replicas) must be a whole number >= 1, got {self.replicas!r}"
            )
        if not (isinstance(self.max_test_frames, int) and self.max_test_frames >= 1):
            raise ValueError(f"max_test_frames must be >= 1, got {self.max_test_frames!r}")
        if self.length_ps is not None and not self.length_ps > 0:
            raise ValueError(f"length_ps (--length) must be positive, got {self.length_ps!r}")

    @property
    def protocol(self) -> BenchSystem:
        return get_system(self.system)


@dataclasses.dataclass
class ReplicaRun:
    """One replica of one model: its frames and how it ended.

    Attributes:
        index: replica index. start_frame: index of its start frame in the reference data.
        trajectory: file of its saved frames. frames: the frames (positions, cell, momenta).
        collapse_time_ps: time of the collapse (None if it ran the full length).
        status: "completed" or "collapsed". message: why it stopped, in words.
    """

    index: int
    start_frame: int
    trajectory: Path
    frames: list[Atoms]
    collapse_time_ps: float | None
    status: str
    message: str = ""


@dataclasses.dataclass
class ModelRun:
    """Everything measured for one model (metrics filled by :mod:`ase_mlmd.bench.metrics`)."""

    name: str
    source: str
    force_mae_meV_A: float
    replicas: list[ReplicaRun]
    wall_time_s: float = 0.0
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    curves: dict[str, Any] = dataclasses.field(default_factory=dict)


def model_label(model: str | os.PathLike) -> str:
    """A short name of a model for tables: the card's name (file stem), e.g. ethanol-nequip."""
    path = Path(model)
    if path.suffix == ".toml":
        return path.parent.name if path.stem == "card" else path.stem
    return str(model)


def check_reference(frames: Sequence[Atoms], where: str) -> None:
    """All reference frames must hold the same atoms in the same order (one system)."""
    if not frames:
        raise IncompatibleTrajectoriesError(f"{where}: the reference holds no frames")
    first = frames[0].numbers
    for k, atoms in enumerate(frames):
        if not np.array_equal(atoms.numbers, first):
            raise IncompatibleTrajectoriesError(
                f"{where}: frame {k} has other atoms (or another order) than frame 0; a benchmark "
                "reference must be one system with a fixed atom order"
            )


def check_system(reference: Atoms, system: BenchSystem, where: str) -> None:
    """The reference must be the system the protocol is for: its formula (molecules, peptide)
    or a whole multiple of its repeat unit (condensed phases).

    Raises:
        IncompatibleTrajectoriesError: naming the reference's and the system's composition, and
            the systems the reference would fit.
    """
    if system.formula is None or _multiple_of(reference, system.formula, system.kind):
        return
    unit = "a whole multiple of " if system.kind == CONDENSED else ""
    fits = [
        name
        for name, other in SYSTEMS.items()
        if other.formula is not None and _multiple_of(reference, other.formula, other.kind)
    ]
    if fits:
        hint = f"this reference fits --system {' or '.join(fits)}"
    else:
        generic = [n for n, o in SYSTEMS.items() if o.formula is None and o.kind == MOLECULE]
        hint = (
            f"no named system fits this reference; for another molecule use --system {generic[0]}"
            if generic and len(reference) < 1000 and not reference.pbc.any()
            else "no named system fits this reference"
        )
    raise IncompatibleTrajectoriesError(
        f"the reference {where} holds {reference.get_chemical_formula()} ({len(reference)} "
        f"atoms), but the {system.name!r} benchmark needs {unit}{system.formula} "
        f"({len(Atoms(system.formula))} atoms): {hint}, or give the reference data of "
        f"{system.name} (--reference)"
    )


def _multiple_of(atoms: Atoms, formula: str, kind: str) -> bool:
    from ase.formula import Formula

    have = Formula.from_list(atoms.get_chemical_symbols()).count()
    unit = Formula(formula).count()
    if set(have) != set(unit):
        return False
    ratios = {have[element] / unit[element] for element in unit}
    (ratio,) = ratios if len(ratios) == 1 else (None,)
    if ratio is None or ratio != int(ratio):
        return False
    return ratio == 1 or kind == CONDENSED


def check_topology(reference: Atoms, topology: str | os.PathLike, where: str) -> None:
    """The peptide topology (PDB, read with mdtraj as for φ/ψ) must list the reference's atoms
    in the reference's order."""
    import mdtraj

    atoms = list(mdtraj.load_topology(str(topology)).atoms)
    numbers = np.array([a.element.atomic_number for a in atoms])
    # some PDB files (MDsim's ala2.pdb among them) give the alpha carbon "CA" the element
    # column "CA", which reads as calcium; an atom named CA is a carbon
    calcium = np.array([a.name == "CA" and a.element.symbol == "Ca" for a in atoms], dtype=bool)
    numbers[calcium] = 6
    if np.array_equal(numbers, reference.numbers):
        return
    common = min(len(numbers), len(reference))
    first = next((k for k in range(common) if numbers[k] != reference.numbers[k]), common)
    raise IncompatibleTrajectoriesError(
        f"the topology {topology} ({Atoms(numbers).get_chemical_formula()}, {len(numbers)} "
        f"atoms) does not list the atoms of the reference {where} "
        f"({reference.get_chemical_formula()}, {len(reference)} atoms) in the same order (first "
        f"difference at atom {first}); give the PDB the reference frames were written with "
        "(--topology)"
    )


def check_model_species(calc, reference: Atoms, label: str) -> None:
    """``UnsupportedSpeciesError`` if the model card does not cover the system's elements."""
    species = getattr(calc.model, "species", None)
    if species is None:
        return
    missing = sorted(set(reference.get_chemical_symbols()) - _symbols(species))
    if missing:
        raise UnsupportedSpeciesError(
            f"model {label} was not trained on {', '.join(missing)} (its species: "
            f"{', '.join(sorted(_symbols(species)))}); benchmark it on a system it covers"
        )


def _symbols(numbers) -> set[str]:
    from ase.data import chemical_symbols

    return {chemical_symbols[int(z)] for z in numbers}


def test_force_mae(calc, frames: Sequence[Atoms], chunk: int = 64) -> float:
    """Force MAE of a calculator on labelled frames, meV/Å (all Cartesian components)."""
    from ase_mlmd.observables import force_mae

    predicted, reference = [], []
    for start in range(0, len(frames), chunk):
        part = list(frames[start : start + chunk])
        (forces,) = calc.calculate_batch(part, ("forces",))
        predicted.extend(forces)
        reference.extend(a.get_forces() for a in part)
    return float(force_mae(np.concatenate(predicted), np.concatenate(reference)))


def start_frames(test_indices: Sequence[int], replicas: int, seed: int) -> list[int]:
    """``replicas`` different test frames (random, seeded); repeats only if there are fewer."""
    rng = np.random.default_rng(seed)
    test = np.asarray(test_indices)
    replace = len(test) < replicas
    return [int(i) for i in rng.choice(test, size=replicas, replace=replace)]


def run_replicas(
    model: str,
    starts: list[Atoms],
    start_indices: list[int],
    reference_train: Sequence[Atoms],
    config: BenchConfig,
    directory: Path,
) -> tuple[list[ReplicaRun], float]:
    """Simulate the replicas of one model with the system's protocol; return them + wall time."""
    from ase_mlmd.md import simulate
    from ase_mlmd.md.monitors import BondDeviation

    system = config.protocol
    length = system.length(config.short, config.length_ps)
    monitors = []
    if system.kind != CONDENSED:
        monitors.append(BondDeviation(list(reference_train), system.bond_threshold))
    directory.mkdir(parents=True, exist_ok=True)
    pattern = directory / "replica_{i}.traj"
    starts = [a.copy() for a in starts]
    for atoms in starts:
        atoms.calc = None
    result = simulate(
        starts,
        model,
        steps=system.steps(length),
        device=config.device,
        trajectory=pattern,
        logfile=directory / "md_log.csv",
        monitors=monitors,
        seed=config.seed,
        progress=config.progress,
        trust=config.trust,
        **system.engine_settings(),
    )
    runs = []
    for rep, start in zip(result.replicas, start_indices, strict=True):
        path = Path(str(pattern).format(i=rep.index))
        frames = read(path, ":") if path.exists() and path.stat().st_size else []
        runs.append(
            ReplicaRun(
                index=rep.index,
                start_frame=start,
                trajectory=path,
                frames=list(frames),
                collapse_time_ps=rep.collapse_time_ps if rep.status == "collapsed" else None,
                status=rep.status,
                message=rep.message,
            )
        )
    return runs, result.wall_time_s


def run_benchmark(
    models: Sequence[str | os.PathLike],
    reference: Sequence[Atoms],
    config: BenchConfig,
    output: str | os.PathLike,
    *,
    reference_name: str = "reference",
    log=print,
) -> tuple[list[ModelRun], ReferenceObservables]:
    """Benchmark ``models`` (card names or paths) against labelled ``reference`` frames.

    Returns one :class:`ModelRun` per model with ``metrics`` filled in, and the reference
    observables they were compared with; trajectories go to
    ``output/<model>/replica_<i>.traj``. Raises before any simulation if the reference is not
    one system or not the protocol's system (formula, topology atom order), or a model misses
    the system's species.
    """
    from ase_mlmd.bench.metrics import ReferenceObservables, model_metrics
    from ase_mlmd.calculators.registry import load_calculator
    from ase_mlmd.data.splits import split_indices

    system = config.protocol
    reference = list(reference)
    check_reference(reference, reference_name)
    check_system(reference[0], system, reference_name)
    if config.topology is not None:
        check_topology(reference[0], config.topology, reference_name)
    split = split_indices(len(reference), config.split, seed=config.seed)
    test_frames = [reference[i] for i in split.test[: config.max_test_frames]]
    train_frames = [reference[i] for i in split.train] or reference
    calcs = {}
    for model in models:
        label = model_label(model)
        calc = load_calculator(model, device=config.device, trust=config.trust)
        check_model_species(calc, reference[0], label)
        calcs[label] = (str(model), calc)
    log(f"bench: {system.name}, {len(reference)} reference frames, {len(test_frames)} test frames")
    ref_obs = ReferenceObservables.compute(
        reference, system, topology=config.topology, reference_fes=config.reference_fes
    )
    indices = start_frames(split.test, config.replicas, config.seed)
    starts = [reference[i] for i in indices]
    out = Path(output)
    threads = config.threads
    if threads == "auto":
        threads = threads_for(len(reference[0]) * config.replicas)
    runs = []
    for label, (source, calc) in calcs.items():
        with thread_limit(threads):
            mae = test_force_mae(calc, test_frames)
            log(f"bench: {label}: test force MAE {mae:.1f} meV/Å; {config.replicas} replicas ...")
            replicas, wall = run_replicas(
                source, starts, indices, train_frames, config, out / "trajectories" / label
            )
        run = ModelRun(label, source, mae, replicas, wall)
        model_metrics(run, ref_obs, system, config)
        runs.append(run)
    return runs, ref_obs
