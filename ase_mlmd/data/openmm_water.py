"""A periodic box of TIP3P water through OpenMM: start boxes, an ASE calculator and native MD.

The condensed-phase coarse-graining case (METRICS.md §3, one bead per molecule) needs an
all-atom water reference with forces. :func:`water_box` builds ``n`` rigid TIP3P molecules
(O–H 0.9572 Å, H–O–H 104.52°) at a given mass density, randomly oriented on a cubic lattice;
:class:`TIP3PWaterCalculator` evaluates a box with OpenMM (an ASE calculator, any positions);
:func:`water_reference_trajectory` runs NVT Langevin MD with OpenMM's own integrator and rigid
molecules and writes labelled ASE frames (what ``ase-mlmd sample --reference tip3p-water`` runs).

The system is OpenMM's ``tip3p.xml`` with particle-mesh Ewald electrostatics and a real-space /
Lennard-Jones cutoff (default 9 Å, long-range dispersion correction on). Atoms come as
molecules O, H, H, O, H, H, ... in a 3D-periodic cell whose vectors OpenMM accepts (a along x,
b in the xy plane: every orthorhombic cell).

Rigid water and forces: with ``rigidWater`` OpenMM turns the O–H and H–H distances into
constraints and leaves the (constrained) bond and angle terms out of the force field, so the
energy is the intermolecular non-bonded energy only and the reported forces are its exact
negative gradient, *without* constraint forces. For a centre-of-mass bead per molecule the
force-matching target is the sum of the atomic forces of the molecule; constraint forces are
internal to the molecule and sum to zero over it, so leaving them out changes no bead force.

Units at the boundary: OpenMM works in nm, ps, kJ/mol; ASE frames hold Å, eV, eV/Å, amu and
momenta in amu·Å/(ASE time unit).
"""

from __future__ import annotations

import os

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ase_mlmd.data.openmm_reference import (
    KJ_PER_MOL,
    KJ_PER_MOL_NM,
    _platform,
    openmm_frames,
)
from ase_mlmd.errors import InvalidStructureError

#: TIP3P geometry: O–H distance (Å) and H–O–H angle (degrees)
TIP3P_OH = 0.9572
TIP3P_HOH = 104.52
#: mass density of liquid water at 300 K and 1 bar, g/cm³ (experiment; TIP3P's own NPT
#: density at 300 K is about 0.98)
WATER_DENSITY_300K = 0.9965
#: default real-space / Lennard-Jones cutoff, Å
WATER_CUTOFF = 9.0
#: Å³ per (g/cm³ · amu): V = M / (ρ N_A)
_A3_PER_AMU_AT_1G_CM3 = 1e24 / 6.02214076e23


def water_box(n_molecules: int = 500, density: float = WATER_DENSITY_300K, seed: int = 0) -> Atoms:
    """A cubic box of ``n_molecules`` rigid TIP3P molecules at mass density ``density`` (g/cm³).

    Molecules are randomly oriented, centred on randomly chosen sites of the smallest cubic
    lattice with at least ``n_molecules`` sites (seeded); an energy minimization (done by
    :func:`water_reference_trajectory`) removes the remaining strain. Atoms O, H, H per
    molecule, ASE's standard masses (18.015 amu per molecule), pbc True.

    Raises:
        InvalidStructureError: fewer than 1 molecule or a non-positive density.
    """
    if n_molecules < 1 or not (np.isfinite(density) and density > 0):
        raise InvalidStructureError(
            f"a water box needs n_molecules >= 1 and a positive density in g/cm³ "
            f"(got {n_molecules}, {density})"
        )
    rng = np.random.default_rng(seed)
    template = Atoms("OH2").get_masses().sum()
    length = (n_molecules * template * _A3_PER_AMU_AT_1G_CM3 / density) ** (1.0 / 3.0)
    per_edge = int(np.ceil(n_molecules ** (1.0 / 3.0) - 1e-9))
    grid = np.stack(np.meshgrid(*[np.arange(per_edge)] * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = (grid[rng.choice(len(grid), n_molecules, replace=False)] + 0.5) * (length / per_edge)
    half = np.radians(TIP3P_HOH) / 2.0
    local = np.array(
        [[0.0, 0.0, 0.0], [np.sin(half), np.cos(half), 0.0], [-np.sin(half), np.cos(half), 0.0]]
    )
    local = local * TIP3P_OH
    local -= local.mean(axis=0)
    positions = []
    for site in sites:
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # a random orthogonal matrix
        positions.append(site + local @ q.T)
    return Atoms(
        "OH2" * n_molecules,
        positions=np.concatenate(positions),
        cell=[length] * 3,
        pbc=True,
    )


def check_water(atoms: Atoms) -> None:
    """Raise unless ``atoms`` are water molecules O, H, H, ... in a 3D-periodic cell OpenMM
    accepts (a along x, b in the xy plane, c with positive z; every orthorhombic cell).

    Raises:
        UnsupportedSpeciesError: the atoms are not O, H, H repeated.
        InvalidStructureError: not periodic in 3D, or a cell OpenMM cannot take.
    """
    from ase_mlmd.errors import UnsupportedSpeciesError

    numbers = np.asarray(atoms.numbers)
    if len(numbers) == 0 or len(numbers) % 3 or (numbers.reshape(-1, 3) != [8, 1, 1]).any():
        raise UnsupportedSpeciesError(
            f"tip3p-water needs water molecules as atoms O, H, H, O, H, H, ... (got "
            f"{atoms.get_chemical_formula()} in another order); build the box with "
            "ase_mlmd.data.openmm_water.water_box"
        )
    if not atoms.pbc.all():
        raise InvalidStructureError("tip3p-water needs a box periodic in x, y and z (pbc True)")
    cell = atoms.cell.array
    if abs(cell[0, 1]) + abs(cell[0, 2]) + abs(cell[1, 2]) > 1e-8 or (np.diag(cell) <= 0).any():
        raise InvalidStructureError(
            f"tip3p-water: OpenMM needs cell vectors a = (ax, 0, 0), b = (bx, by, 0), c with "
            f"positive diagonal; got {cell.tolist()}. Use an orthorhombic cell or "
            "atoms.cell.standard_form()"
        )


def build_water_system(atoms: Atoms, cutoff: float = WATER_CUTOFF, ewald_tolerance: float = 5e-4):
    """The OpenMM ``(Topology, System)`` of the water box ``atoms``: ``tip3p.xml``, PME with
    real-space cutoff ``cutoff`` (Å; at most half the shortest box height), rigid molecules.

    Raises:
        UnsupportedSpeciesError, InvalidStructureError: see :func:`check_water`; also a cutoff
            longer than half the box.
    """
    from openmm import Vec3, app, unit

    check_water(atoms)
    heights = atoms.cell.volume / np.linalg.norm(
        np.cross(atoms.cell.array[[1, 2, 0]], atoms.cell.array[[2, 0, 1]]), axis=1
    )
    if not 0 < cutoff < 0.5 * heights.min():
        raise InvalidStructureError(
            f"tip3p-water: the cutoff ({cutoff} Å) must be positive and shorter than half the "
            f"box ({0.5 * heights.min():.2f} Å); use more molecules or -p cutoff=SMALLER"
        )
    topology = app.Topology()
    chain = topology.addChain()
    oxygen, hydrogen = app.Element.getBySymbol("O"), app.Element.getBySymbol("H")
    for _ in range(len(atoms) // 3):
        residue = topology.addResidue("HOH", chain)
        o = topology.addAtom("O", oxygen, residue)
        topology.addBond(o, topology.addAtom("H1", hydrogen, residue))
        topology.addBond(o, topology.addAtom("H2", hydrogen, residue))
    cell_nm = atoms.cell.array / 10.0
    topology.setPeriodicBoxVectors([Vec3(*row) for row in cell_nm] * unit.nanometer)
    forcefield = app.ForceField("tip3p.xml")
    system = forcefield.createSystem(
        topology,
        nonbondedMethod=app.PME,
        nonbondedCutoff=cutoff / 10.0 * unit.nanometer,
        rigidWater=True,
        ewaldErrorTolerance=ewald_tolerance,
    )
    return topology, system


def _platform_with_threads(name: str, threads: int | None):
    platform = _platform(name)
    properties = {}
    if threads and name == "CPU":
        properties["Threads"] = str(int(threads))
    return platform, properties


class TIP3PWaterCalculator(Calculator):
    """Energy and forces of a TIP3P water box from OpenMM (PME), as an ASE calculator.

    Any positions are evaluated (the molecules need not be rigid: with rigid water the force
    field has no intramolecular terms); the cell may change between calls (a new box is set).

    Args:
        cutoff: real-space and Lennard-Jones cutoff, Å.
        platform: OpenMM platform; ``"Reference"`` is double precision (slow, exact),
            ``"CPU"`` mixed precision.
        ewald_tolerance: OpenMM's ``ewaldErrorTolerance`` (relative PME force error).
        threads: CPU-platform threads (None: OpenMM's default).

    Properties: ``energy``/``free_energy`` (eV), ``forces`` (N, 3) eV/Å.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(
        self,
        *,
        cutoff: float = WATER_CUTOFF,
        platform: str = "CPU",
        ewald_tolerance: float = 5e-4,
        threads: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.cutoff = float(cutoff)
        self.platform = platform
        self.ewald_tolerance = float(ewald_tolerance)
        self.threads = threads
        self._context = None
        self._key = None

    def check_atoms(self, atoms: Atoms) -> None:
        """Raise if ``atoms`` are not a water box this calculator can evaluate (see
        :func:`check_water`)."""
        check_water(atoms)

    def _context_for(self, atoms: Atoms):
        import openmm

        key = (len(atoms), tuple(np.round(atoms.cell.array.ravel(), 10)))
        if self._context is None or key != self._key:
            _, system = build_water_system(atoms, self.cutoff, self.ewald_tolerance)
            integrator = openmm.VerletIntegrator(0.001)  # never stepped: a context needs one
            platform, properties = _platform_with_threads(self.platform, self.threads)
            self._context = openmm.Context(system, integrator, platform, properties)
            self._integrator, self._key = integrator, key
        return self._context

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        from openmm import unit

        positions = np.asarray(self.atoms.positions, dtype=float) / 10.0
        if not np.isfinite(positions).all():
            raise InvalidStructureError("positions contain NaN or infinite values")
        context = self._context_for(self.atoms)
        context.setPositions(unit.Quantity(positions, unit.nanometer))
        state = context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * KJ_PER_MOL
        forces = state.getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer
        )
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["forces"] = np.asarray(forces, dtype=float) * KJ_PER_MOL_NM


def water_density(atoms: Atoms) -> float:
    """Mass density of ``atoms`` in g/cm³."""
    return float(atoms.get_masses().sum() * _A3_PER_AMU_AT_1G_CM3 / atoms.get_volume())


def water_reference_trajectory(
    start: Atoms,
    *,
    temperature: float = 300.0,
    timestep_fs: float = 2.0,
    friction_per_ps: float = 1.0,
    steps: int = 100_000,
    every: int = 250,
    seed: int = 0,
    output: str | os.PathLike | None = None,
    cutoff: float = WATER_CUTOFF,
    platform: str = "CPU",
    threads: int | None = None,
    progress: bool = True,
    minimize: bool = True,
    flush_seconds: float = 60.0,
) -> list[Atoms]:
    """NVT Langevin MD of a rigid TIP3P box with OpenMM's own integrator, as labelled frames.

    OpenMM's ``LangevinMiddleIntegrator`` at ``temperature`` with friction ``friction_per_ps``
    (default 1/ps: weak enough that the diffusivity is close to Newtonian dynamics, see the
    report where it is compared) and rigid molecules (SETTLE), 2 fs steps; the box volume stays
    that of ``start`` (build it at the density wanted, e.g. :func:`water_box`). The energy is
    minimized first, then velocities are drawn at ``temperature``; frames from step 0 on are
    written, so discard the first picoseconds as equilibration when analysing.

    Frames (``steps // every + 1``): positions in Å *unwrapped* (continuous in time: molecules
    stay whole and displacements give diffusivities), cell and pbc of ``start``, masses (amu),
    momenta, ``energy`` (eV) and ``forces`` (eV/Å, without constraint forces; see the module
    docstring); info ``step``, ``time_fs``, ``temperature_K`` (kinetic, over 6 degrees of
    freedom per rigid molecule minus 3), ``reference`` ("tip3p-water"), ``density_g_cm3``.

    Args:
        start: water box (atoms O, H, H, ...; see :func:`check_water`).
        temperature: K. timestep_fs: fs. friction_per_ps: 1/ps.
        steps, every: MD steps and frame interval in steps.
        seed: velocities and integrator noise (given to OpenMM as seed + 1; 0 means random
            there).
        output: extended XYZ file, written atomically at most every ``flush_seconds`` and at
            the end (overwritten); None: frames are only returned.
        cutoff: real-space cutoff, Å. platform, threads: OpenMM platform and CPU threads.
        progress: tqdm progress bar. minimize: minimize the energy first.

    Raises:
        SimulationUnstableError: a NaN energy or position; the frames before stay in ``output``.
    """
    import openmm
    from openmm import unit

    if steps < 0 or every < 1:
        raise ValueError(f"steps must be >= 0 and every >= 1 (got {steps}, {every})")
    _, system = build_water_system(start, cutoff)
    integrator = openmm.LangevinMiddleIntegrator(
        temperature * unit.kelvin, friction_per_ps / unit.picosecond, timestep_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(seed + 1)
    platform, properties = _platform_with_threads(platform, threads)
    context = openmm.Context(system, integrator, platform, properties)
    context.setPositions(unit.Quantity(start.positions / 10.0, unit.nanometer))
    context.applyConstraints(1e-8)
    if minimize:
        openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, seed + 1)
    return openmm_frames(
        context,
        system,
        start.numbers,
        timestep_fs=timestep_fs,
        steps=steps,
        every=every,
        info={"reference": "tip3p-water", "density_g_cm3": water_density(start)},
        unstable="OpenMM water trajectory blew up",
        hint="use a smaller timestep",
        cell=np.array(start.cell),
        output=output,
        flush_seconds=flush_seconds,
        progress=progress,
        desc="OpenMM water",
    )
