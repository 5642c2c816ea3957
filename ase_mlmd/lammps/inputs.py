"""A LAMMPS data file and an example NVE input for a structure and an exported model.

Periodic structures keep their cell (triclinic cells as LAMMPS' restricted triclinic box, via
ASE's writer); a molecule (no periodic axis) is centred in a box ``padding`` Å wider than it on
each side, with shrink-wrapped boundaries (``boundary s s s``). Atom types follow the order of
the model's element names present in the structure (bead type names for CG structures,
:mod:`ase_mlmd.beads`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write

from ase_mlmd.errors import LammpsInputError
from ase_mlmd.fileio import atomic_write_text
from ase_mlmd.lammps.model import LammpsModel
from ase_mlmd.structures import to_atoms


def structure_types(atoms: Atoms, model: LammpsModel) -> list[str]:
    """Element names of the atom types (model order, present in ``atoms`` only).

    Raises:
        LammpsInputError: the structure holds an element (or bead type) the model lacks.
    """
    numbers = set(int(z) for z in atoms.numbers)
    known = dict(zip(model.numbers, model.element_types, strict=True))
    unknown = sorted(numbers - set(known))
    if unknown:
        names = [atoms.get_chemical_symbols()[list(atoms.numbers).index(z)] for z in unknown]
        raise LammpsInputError(
            f"the structure contains {names}, which the model has no parameters for; it knows "
            f"{' '.join(model.element_types)} only"
        )
    return [name for z, name in known.items() if z in numbers]


def boxed(atoms: Atoms, padding: float) -> Atoms:
    """``atoms`` itself if periodic; a molecule centred in a box ``padding`` Å from each side."""
    if np.asarray(atoms.pbc).any():
        return atoms
    atoms = atoms.copy()
    atoms.center(vacuum=padding)
    return atoms


def data_file_text(atoms: Atoms, names: list[str], model: LammpsModel) -> str:
    """A LAMMPS ``atom_style atomic`` data file (units metal) for ``atoms``."""
    table = dict(zip(model.element_types, model.numbers, strict=True))
    type_of = {table[name]: k + 1 for k, name in enumerate(names)}
    masses = {
        type_of[int(z)]: float(m) for z, m in zip(atoms.numbers, atoms.get_masses(), strict=True)
    }
    out = io.StringIO()
    # ASE's writer orders types by `specorder`; give it the element names of our numbers
    proxy = atoms.copy()
    proxy.set_atomic_numbers([type_of[int(z)] for z in atoms.numbers])
    write(
        out,
        proxy,
        format="lammps-data",
        atom_style="atomic",
        units="metal",
        specorder=[Atoms(numbers=[k + 1]).get_chemical_symbols()[0] for k in range(len(names))],
    )
    lines = out.getvalue().splitlines()
    body = "\n".join(lines[1:])
    mass_lines = "\n".join(f"{t} {masses[t]:.8g}  # {names[t - 1]}" for t in sorted(masses))
    head = f"LAMMPS data file for {' '.join(names)} (ase_mlmd)\n"
    return head + body.replace("Atoms", f"Masses\n\n{mass_lines}\n\nAtoms", 1) + "\n"


def write_example(
    structure: object,
    model: LammpsModel,
    model_file: str | os.PathLike,
    folder: str | os.PathLike,
    name: str,
    temperature: float = 300.0,
    steps: int = 100,
    timestep_fs: float = 0.5,
    padding: float | None = None,
) -> tuple[Path, Path]:
    """Write ``data.<name>`` and ``in.<name>`` (NVE from ``temperature`` K) into ``folder``.

    Args:
        structure: ASE Atoms or pymatgen structure.
        model: the exported model (for element names and cutoff).
        model_file: the exported model file, as the input should name it.
        folder: where to write (created).
        name: file name suffix.
        temperature: initial velocities, K (seed 12345, zero momentum).
        steps: MD steps.
        timestep_fs: time step, fs.
        padding: vacuum around a molecule, Å (default: twice the model's receptive field).

    Returns:
        paths of the input and the data file.
    """
    atoms = to_atoms(structure)
    periodic = bool(np.asarray(atoms.pbc).all())
    if np.asarray(atoms.pbc).any() and not periodic:
        raise LammpsInputError(
            "the structure is periodic along some axes only; LAMMPS boxes here are fully "
            "periodic or a molecule in vacuum: set atoms.pbc to True or False on all axes"
        )
    atoms = boxed(atoms, padding if padding is not None else 2.0 * model.receptive_field)
    names = structure_types(atoms, model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = atomic_write_text(folder / f"data.{name}", data_file_text(atoms, names, model))
    boundary = "p p p" if periodic else "s s s"
    text = f"""# NVE run of {name} with an exported ase_mlmd model ({model_file}).
# Run: python -m ase_mlmd.lammps run in.{name} --trust-model   (mpirun -np 2 ... for 2 ranks)
# The model file is a pickle: loading it runs code, so only use files you trust.
units metal
atom_style atomic
boundary {boundary}
read_data data.{name}

pair_style mliap unified {model_file} 0
pair_coeff * * {" ".join(names)}

neighbor 1.0 bin
velocity all create {temperature:g} 12345 mom yes rot {"no" if periodic else "yes"} dist gaussian
timestep {timestep_fs / 1000:.10g}
fix nve all nve
thermo_style custom step temp pe ke etotal press
thermo {max(1, steps // 10)}
run {steps}
"""
    path = atomic_write_text(folder / f"in.{name}", text)
    return path, data
