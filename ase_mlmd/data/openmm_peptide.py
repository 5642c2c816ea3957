"""Small peptides built from a sequence and simulated with OpenMM amber14 in GBn2 solvent.

The backmapping benchmark on chignolin (METRICS.md §4; issue 14, benchmark 4b) needs all-atom
frames of a protein with its residue topology (residue names, atom names: a Cα trace and a
per-residue mapping come from them). :func:`build_peptide` builds an extended chain from a
one-letter sequence with PyPI ``PeptideBuilder`` (heavy atoms), then adds the missing terminal
oxygen (OXT) and the hydrogens at pH 7 with ``pdbfixer`` (charged termini NH3+ / COO-, protonation
states by pdbfixer's pKa rules: Asp/Glu charged, Lys/Arg charged, His neutral).
:func:`peptide_reference_trajectory` minimizes it and runs Langevin MD with OpenMM's
``amber14-all.xml`` + ``implicit/gbn2.xml`` (no cutoff, bonds to hydrogen constrained), and
streams labelled ASE frames (the same stepping loop as the alanine-dipeptide and water
references, :func:`~ase_mlmd.data.openmm_reference.openmm_frames`).

The topology is written beside the frames as a PDB file (``topology_pdb``): the ASE frames keep
elements and positions only, the PDB keeps residue and atom names in the same atom order.

Units at the boundary: OpenMM works in nm, ps, kJ/mol; ASE frames hold Å, eV, eV/Å.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from ase import Atoms

from ase_mlmd.data.openmm_reference import _platform, openmm_frames, topology_numbers
from ase_mlmd.errors import InvalidStructureError

#: chignolin (PDB 1UAO / CLN025's parent): GYDPETGTWG
CHIGNOLIN = "GYDPETGTWG"
#: force-field files of OpenMM's own distribution used for peptides
PEPTIDE_FORCEFIELD = ("amber14-all.xml", "implicit/gbn2.xml")

_ONE_LETTER = set("ACDEFGHIKLMNPQRSTVWY")


def build_peptide(sequence: str):
    """An extended peptide of one-letter ``sequence`` with hydrogens and charged termini.

    Returns:
        ``(topology, positions)``: an OpenMM ``Topology`` and positions (N, 3) in Å, atoms in
        the order pdbfixer writes them (residue by residue).

    Raises:
        InvalidStructureError: an empty sequence or a letter that is not one of the 20 amino
            acids.
    """
    from Bio.PDB import PDBIO
    from openmm import unit
    from pdbfixer import PDBFixer
    from PeptideBuilder import PeptideBuilder

    sequence = sequence.strip().upper()
    bad = sorted(set(sequence) - _ONE_LETTER)
    if not sequence or bad:
        raise InvalidStructureError(
            f"a peptide sequence is one-letter amino-acid codes {''.join(sorted(_ONE_LETTER))}; "
            f"got {sequence!r}" + (f" (unknown letters {bad})" if bad else "")
        )
    structure = PeptideBuilder.make_extended_structure(sequence)
    buffer = io.StringIO()
    writer = PDBIO()
    writer.set_structure(structure)
    writer.save(buffer)
    fixer = PDBFixer(pdbfile=io.StringIO(buffer.getvalue()))
    fixer.findMissingResidues()
    fixer.findMissingAtoms()
    fixer.addMissingAtoms()
    fixer.addMissingHydrogens(7.0)
    positions = np.asarray(fixer.positions.value_in_unit(unit.angstrom), dtype=float)
    return fixer.topology, positions


def build_peptide_system(topology, constraints: str | None = "HBonds"):
    """The OpenMM ``System`` of ``topology`` with amber14 + GBn2 (no cutoff)."""
    from openmm import app

    forcefield = app.ForceField(*PEPTIDE_FORCEFIELD)
    return forcefield.createSystem(
        topology,
        nonbondedMethod=app.NoCutoff,
        constraints=None if constraints is None else getattr(app, constraints),
    )


def write_topology_pdb(topology, positions: np.ndarray, path: str | os.PathLike) -> None:
    """Write ``topology`` with ``positions`` (Å) as a PDB file (atomically)."""
    from openmm import app, unit

    from ase_mlmd.fileio import atomic_write_text

    buffer = io.StringIO()
    app.PDBFile.writeFile(topology, unit.Quantity(positions / 10.0, unit.nanometer), buffer)
    atomic_write_text(Path(path), buffer.getvalue())


def peptide_reference_trajectory(
    sequence: str = CHIGNOLIN,
    *,
    temperature: float = 340.0,
    timestep_fs: float = 2.0,
    friction_per_ps: float = 1.0,
    steps: int = 500_000,
    every: int = 1000,
    seed: int = 0,
    output: str | os.PathLike | None = None,
    topology_pdb: str | os.PathLike | None = None,
    platform: str = "CPU",
    threads: int | None = 1,
    progress: bool = True,
    flush_seconds: float = 30.0,
) -> list[Atoms]:
    """Langevin MD of the peptide ``sequence`` (amber14 + GBn2, ``temperature`` K) as frames.

    Built by :func:`build_peptide` (extended chain), energy-minimized, velocities drawn at
    ``temperature``; OpenMM's ``LangevinMiddleIntegrator`` (``friction_per_ps``, ``timestep_fs``
    with bonds to H constrained). Frames at step 0 and every ``every`` steps (default 2 ps) with
    energy (eV) and forces (eV/Å) as in
    :func:`~ase_mlmd.data.openmm_reference.ala2_reference_trajectory`; info ``reference``
    (``"amber14-gbn2"``) and ``sequence``. Frames from the start are written: discard an
    equilibration stretch when analysing (the chain starts extended).

    Args:
        output: extended XYZ streamed atomically (every ``flush_seconds``); overwritten.
        topology_pdb: the minimized structure with residue and atom names, written before MD.
        threads: OpenMM CPU-platform threads (None: OpenMM's default).

    Raises:
        InvalidStructureError: see :func:`build_peptide`.
        SimulationUnstableError: NaN energy or positions (frames before stay in ``output``).
    """
    import openmm
    from openmm import unit

    if steps < 0 or every < 1:
        raise ValueError(f"steps must be >= 0 and every >= 1 (got {steps}, {every})")
    topology, positions = build_peptide(sequence)
    system = build_peptide_system(topology)
    integrator = openmm.LangevinMiddleIntegrator(
        temperature * unit.kelvin, friction_per_ps / unit.picosecond, timestep_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(seed + 1)
    name = "CPU" if platform is None else platform
    properties = {"Threads": str(int(threads))} if threads and name == "CPU" else {}
    context = openmm.Context(system, integrator, _platform(name), properties)
    context.setPositions(unit.Quantity(positions / 10.0, unit.nanometer))
    context.applyConstraints(1e-8)
    openmm.LocalEnergyMinimizer.minimize(context)
    minimized = context.getState(getPositions=True).getPositions(asNumpy=True)
    if topology_pdb is not None:
        start = np.asarray(minimized.value_in_unit(unit.angstrom))
        write_topology_pdb(topology, start, topology_pdb)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, seed + 1)
    return openmm_frames(
        context,
        system,
        topology_numbers(topology),
        timestep_fs=timestep_fs,
        steps=steps,
        every=every,
        info={"reference": "amber14-gbn2", "sequence": sequence},
        unstable=f"OpenMM trajectory of {sequence} blew up",
        hint="use a smaller timestep",
        output=output,
        flush_seconds=flush_seconds,
        progress=progress,
        desc=f"OpenMM {sequence}",
    )
