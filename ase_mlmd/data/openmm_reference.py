"""AMBER force fields through OpenMM as reference labels: an ASE calculator and native MD.

The alanine-dipeptide benchmark (Fu et al.; METRICS.md §1) needs reference trajectories of the
peptide in implicit solvent at 300 K. :class:`OpenMMCalculator` evaluates an AMBER topology
(``.prmtop``) with OpenMM as an ASE calculator, so any ASE tool can use it;
:func:`ala2_reference_trajectory` runs the trajectory with OpenMM's own integrator (native
speed, bond constraints) and writes ASE frames.

Units at the boundary: OpenMM works in nm, ps, kJ/mol; ASE frames hold Å, eV, eV/Å and
momenta in amu·Å/(ASE time unit).

Both use the system as OpenMM builds it from the prmtop: no cutoff (``NoCutoff``), no periodic
images (the atoms' cell and pbc are ignored), generalized-Born implicit solvent (``OBC2`` by
default, i.e. AMBER's ``igb=5``; the radii are those stored in the prmtop).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator

from ase_mlmd.errors import InvalidStructureError, ModelFileError, UnsupportedSpeciesError

#: eV per kJ/mol
KJ_PER_MOL = units.kJ / units.mol
#: eV/Å per kJ/mol/nm (1 nm = 10 Å)
KJ_PER_MOL_NM = KJ_PER_MOL / 10.0
#: ASE velocity (Å per ASE time unit) of 1 nm/ps = 10 Å / 1000 fs
NM_PER_PS = 0.01 / units.fs

IMPLICIT_SOLVENTS = ("OBC2", "OBC1", "GBn", "GBn2", "HCT", None)
CONSTRAINTS = ("HBonds", "AllBonds", "HAngles", None)


def build_amber_system(
    prmtop: str | os.PathLike,
    implicit_solvent: str | None = "OBC2",
    constraints: str | None = None,
):
    """The OpenMM ``(AmberPrmtopFile, System)`` of an AMBER topology in implicit solvent.

    Args:
        prmtop: AMBER topology/parameter file.
        implicit_solvent: one of ``IMPLICIT_SOLVENTS`` (``None``: vacuum).
        constraints: ``None`` (all bonds flexible: what a calculator for arbitrary positions
            needs), ``"HBonds"`` (bonds to hydrogen rigid: needed for 2 fs steps), ...

    Raises:
        ModelFileError: the file is missing or not an AMBER prmtop.
    """
    from openmm import app

    if implicit_solvent not in IMPLICIT_SOLVENTS:
        raise ValueError(f"implicit_solvent must be one of {IMPLICIT_SOLVENTS}")
    if constraints not in CONSTRAINTS:
        raise ValueError(f"constraints must be one of {CONSTRAINTS}")
    path = Path(prmtop)
    if not path.is_file():
        raise ModelFileError(f"AMBER topology {path} does not exist; pass prmtop=PATH.prmtop")
    try:
        topology_file = app.AmberPrmtopFile(str(path))
    except Exception as err:  # OpenMM raises plain Exceptions for malformed files
        raise ModelFileError(f"{path} is not a readable AMBER prmtop file: {err}") from None
    system = topology_file.createSystem(
        nonbondedMethod=app.NoCutoff,
        constraints=None if constraints is None else getattr(app, constraints),
        implicitSolvent=None if implicit_solvent is None else getattr(app, implicit_solvent),
    )
    return topology_file, system


def topology_numbers(topology) -> np.ndarray:
    """Atomic numbers (N,) of an OpenMM topology, in atom order."""
    return np.array([atom.element.atomic_number for atom in topology.atoms()], dtype=int)


def _platform(name: str):
    import openmm

    try:
        return openmm.Platform.getPlatformByName(name)
    except Exception:
        known = [
            openmm.Platform.getPlatform(i).getName()
            for i in range(openmm.Platform.getNumPlatforms())
        ]
        raise ValueError(
            f"OpenMM platform {name!r} is not available here; use one of {known}"
        ) from None


class OpenMMCalculator(Calculator):
    """Energy and forces of a fixed AMBER topology from OpenMM, as an ASE calculator.

    The atoms must be the topology's atoms in the topology's order (checked: count and
    elements). Positions are taken in Å; cell and pbc are ignored (no periodic images).

    Args:
        prmtop: AMBER topology/parameter file (e.g. ``alanine-dipeptide-implicit.prmtop``).
        implicit_solvent: generalized-Born model (default ``"OBC2"``; ``None`` for vacuum).
        platform: OpenMM platform name; ``"Reference"`` evaluates in double precision (slow,
            exact), ``"CPU"`` in mixed single/double precision (fast; forces agree to ~1e-5
            relative).

    Properties: ``energy``/``free_energy`` (eV), ``forces`` (N, 3) eV/Å.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(
        self,
        prmtop: str | os.PathLike,
        *,
        implicit_solvent: str | None = "OBC2",
        platform: str = "CPU",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        import openmm

        self.prmtop = Path(prmtop)
        self.implicit_solvent = implicit_solvent
        topology_file, self.system = build_amber_system(prmtop, implicit_solvent, None)
        self.topology = topology_file.topology
        self.numbers = topology_numbers(self.topology)
        self.masses = np.array(
            [
                self.system.getParticleMass(i).value_in_unit(openmm.unit.dalton)
                for i in range(self.system.getNumParticles())
            ]
        )
        integrator = openmm.VerletIntegrator(0.001)  # never stepped: the context needs one
        self.context = openmm.Context(self.system, integrator, _platform(platform))
        self._integrator = integrator

    def check_atoms(self, atoms: Atoms) -> None:
        """Raise if ``atoms`` are not the topology's atoms in its order.

        Raises:
            InvalidStructureError: another number of atoms.
            UnsupportedSpeciesError: same count, but other elements (or order).
        """
        n_top = len(self.numbers)
        if len(atoms) != n_top:
            raise InvalidStructureError(
                f"the structure has {len(atoms)} atoms but the topology {self.prmtop.name} has "
                f"{n_top}; give the structure that belongs to this prmtop (same atoms, same order)"
            )
        wrong = np.flatnonzero(np.asarray(atoms.numbers) != self.numbers)
        if wrong.size:
            i = int(wrong[0])
            raise UnsupportedSpeciesError(
                f"atom {i} is {atoms.get_chemical_symbols()[i]} in the structure but "
                f"{self.topology_symbol(i)} in the topology {self.prmtop.name} "
                f"({wrong.size} atoms differ); the atoms must follow the prmtop's order. "
                "(ASE's PDB reader guesses elements from atom names when the element column is "
                "empty, e.g. CA -> Ca: build the atoms with topology_atoms(prmtop, pdb))"
            )

    def topology_symbol(self, index: int) -> str:
        """Element symbol of topology atom ``index``."""
        from ase.data import chemical_symbols

        return chemical_symbols[int(self.numbers[index])]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        from openmm import unit

        self.check_atoms(self.atoms)
        positions = np.asarray(self.atoms.positions, dtype=float) / 10.0  # Å -> nm
        if not np.isfinite(positions).all():
            raise InvalidStructureError("positions contain NaN or infinite values")
        self.context.setPositions(unit.Quantity(positions, unit.nanometer))
        state = self.context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces = state.getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer
        )
        self.results["energy"] = energy * KJ_PER_MOL
        self.results["free_energy"] = self.results["energy"]
        self.results["forces"] = np.asarray(forces, dtype=float) * KJ_PER_MOL_NM


def _initial_positions(structure, n_atoms: int) -> np.ndarray:
    """Starting positions (N, 3) in Å from Atoms, a PDB file (read by OpenMM) or any file ASE
    reads (its last frame)."""
    if isinstance(structure, Atoms):
        positions = structure.positions
    elif str(structure).lower().endswith(".pdb"):
        from openmm import app, unit

        pdb = app.PDBFile(str(structure))
        positions = pdb.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    else:
        from ase.io import read

        positions = read(structure).positions
    positions = np.asarray(positions, dtype=float)
    if positions.shape != (n_atoms, 3):
        raise InvalidStructureError(
            f"the starting structure has {len(positions)} atoms, the topology {n_atoms}"
        )
    return positions


def topology_atoms(prmtop: str | os.PathLike, structure: str | os.PathLike | Atoms) -> Atoms:
    """ASE atoms of an AMBER system: elements and masses from the prmtop, positions (Å) from
    ``structure`` (a PDB file read by OpenMM, any ASE-readable file, or Atoms); no cell, pbc
    False."""
    topology_file, system = build_amber_system(prmtop, None, None)
    numbers = topology_numbers(topology_file.topology)
    masses = [system.getParticleMass(i)._value for i in range(len(numbers))]  # dalton
    positions = _initial_positions(structure, len(numbers))
    return Atoms(numbers=numbers, positions=positions, masses=masses, pbc=False)


def ala2_reference_trajectory(
    prmtop: str | os.PathLike,
    pdb: str | os.PathLike | Atoms,
    *,
    temperature: float = 300.0,
    timestep_fs: float = 2.0,
    friction_per_ps: float = 0.5,
    steps: int = 2_500_000,
    every: int = 500,
    seed: int = 0,
    output: str | os.PathLike | None = None,
    platform: str = "CPU",
    progress: bool = True,
    implicit_solvent: str | None = "OBC2",
    constraints: str | None = "HBonds",
    minimize: bool = True,
    flush_seconds: float = 5.0,
) -> list[Atoms]:
    """Reference MD of an AMBER system (alanine dipeptide) with OpenMM's own integrator.

    Defaults follow the benchmark protocol (METRICS.md §1): Langevin (OpenMM's
    ``LangevinMiddleIntegrator``), friction 0.5/ps, 2 fs, 300 K, 5 ns (2.5 M steps), a frame
    every 1 ps (500 steps). Bonds to hydrogen are constrained (``constraints="HBonds"``),
    which 2 fs steps need; the stored forces are the full force-field forces (without
    constraint forces), i.e. the labels an ML force field learns.

    Frames (step 0 included, so ``steps // every + 1`` of them): positions Å, masses from the
    prmtop, momenta amu·Å/(ASE time), ``energy`` (eV) and ``forces`` (eV/Å) readable with
    ``get_potential_energy()``/``get_forces()``; info ``step``, ``time_fs``, ``temperature_K``
    (kinetic temperature over 3N − constraints − 3 degrees of freedom, as OpenMM counts them),
    ``reference`` ("amber-implicit"), ``prmtop`` (file name). No cell, pbc False.

    Args:
        prmtop: AMBER topology file.
        pdb: starting structure: a PDB file, any ASE-readable file or ``Atoms`` (Å), with the
            topology's atoms in its order.
        temperature: K (thermostat and initial Maxwell–Boltzmann velocities).
        timestep_fs: fs.
        friction_per_ps: Langevin friction, 1/ps.
        steps: number of MD steps; every: frame interval in steps.
        seed: random seed; OpenMM reads 0 as "pick at random", so seed s is given to OpenMM as
            s + 1 (velocities and integrator noise; the CPU platform may still not be bitwise
            reproducible across thread counts).
        output: extended XYZ file written atomically (temp file + ``os.replace``, at most every
            ``flush_seconds``), overwritten; None: frames are only returned.
        platform: OpenMM platform ("CPU", "Reference", "CUDA", ...).
        progress: progress over steps (a bar on a terminal, plain lines otherwise).
        implicit_solvent: see :func:`build_amber_system`.
        constraints: see :func:`build_amber_system`.
        minimize: minimize the energy (OpenMM's L-BFGS) before drawing velocities.

    Returns:
        The frames, in order.
    """
    import openmm
    from openmm import unit

    if steps < 0 or every < 1:
        raise ValueError(f"steps must be >= 0 and every >= 1 (got {steps}, {every})")
    topology_file, system = build_amber_system(prmtop, implicit_solvent, constraints)
    numbers = topology_numbers(topology_file.topology)
    n = len(numbers)
    integrator = openmm.LangevinMiddleIntegrator(
        temperature * unit.kelvin,
        friction_per_ps / unit.picosecond,
        timestep_fs * unit.femtosecond,
    )
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(system, integrator, _platform(platform))
    context.setPositions(unit.Quantity(_initial_positions(pdb, n) / 10.0, unit.nanometer))
    context.applyConstraints(1e-8)
    if minimize:
        openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, seed + 1)

    return openmm_frames(
        context,
        system,
        numbers,
        timestep_fs=timestep_fs,
        steps=steps,
        every=every,
        info={"reference": "amber-implicit", "prmtop": Path(prmtop).name},
        unstable=f"OpenMM trajectory of {Path(prmtop).name} blew up",
        hint="use a smaller timestep or keep the HBonds constraints",
        output=output,
        flush_seconds=flush_seconds,
        progress=progress,
        desc="OpenMM MD",
    )


def openmm_frames(
    context,
    system,
    numbers: np.ndarray,
    *,
    timestep_fs: float,
    steps: int,
    every: int,
    info: dict,
    unstable: str,
    hint: str,
    cell: np.ndarray | None = None,
    output: str | os.PathLike | None = None,
    flush_seconds: float = 5.0,
    progress: bool = True,
    desc: str = "OpenMM MD",
) -> list[Atoms]:
    """Step an OpenMM ``context`` (its integrator) ``steps`` times and return a frame at step 0
    and every ``every`` steps: positions (Å), momenta (amu·Å/ASE time), ``energy`` (eV) and
    ``forces`` (eV/Å) in a ``SinglePointCalculator``, info ``step``, ``time_fs``,
    ``temperature_K`` (kinetic, over 3N − constraints − 3 with a centre-of-mass remover) and
    ``info``. ``cell`` (Å) makes the frames periodic. Frames stream to ``output`` (extended XYZ,
    atomic, at most every ``flush_seconds``).

    Raises:
        SimulationUnstableError: a NaN energy or position (``unstable`` at step N; ``hint``);
            the frames before stay in ``output``.
    """
    import openmm
    from openmm import unit

    from ase_mlmd.data.sampling import FrameFileWriter
    from ase_mlmd.errors import SimulationUnstableError
    from ase_mlmd.progress import progress_bar

    n = len(numbers)
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n)])
    removes_cm = any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())
    dof = 3 * n - system.getNumConstraints() - (3 if removes_cm else 0)
    integrator = context.getIntegrator()

    def frame(step: int) -> Atoms:
        state = context.getState(
            getPositions=True, getVelocities=True, getEnergy=True, getForces=True
        )
        positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
        velocities = state.getVelocities(asNumpy=True).value_in_unit(
            unit.nanometer / unit.picosecond
        )
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * KJ_PER_MOL
        forces = (
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
            * KJ_PER_MOL_NM
        )
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) * KJ_PER_MOL
        if not np.isfinite(energy) or not np.isfinite(positions).all():
            raise SimulationUnstableError(f"{unstable} at step {step} (NaN); {hint}")
        atoms = Atoms(numbers=numbers, positions=positions, masses=masses, cell=cell,
                      pbc=cell is not None)  # fmt: skip
        atoms.set_momenta(masses[:, None] * np.asarray(velocities) * NM_PER_PS)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.asarray(forces))
        atoms.info.update(
            step=step,
            time_fs=step * timestep_fs,
            temperature_K=2.0 * kinetic / (dof * units.kB),
            **info,
        )
        return atoms

    frames = [frame(0)]
    writer = FrameFileWriter(output, append=False, flush_seconds=flush_seconds) if output else None
    bar = progress_bar(total=steps, unit="step", disable=not progress, desc=desc, mininterval=1.0)
    try:
        if writer:
            writer.add(frames[0])
        done = 0
        while done < steps:
            chunk = min(every - done % every, steps - done)
            integrator.step(chunk)
            done += chunk
            bar.update(chunk)
            if done % every == 0:
                frames.append(frame(done))
                bar.set_postfix(T=f"{frames[-1].info['temperature_K']:.0f}K")
                if writer:
                    writer.add(frames[-1])
    finally:
        bar.close()
        if writer:
            writer.close()
    return frames
