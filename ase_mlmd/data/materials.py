"""Training data for fcc metals: crystal, strained crystal, vacancy and liquid, by reference MD.

:func:`metal_segments` builds the start structures of a materials data set from one fcc
crystal (an element symbol, built with ``ase.build.bulk``, or any cubic fcc ``Atoms`` /
pymatgen ``Structure``); :func:`sample_metal_dataset` runs one reference MD per segment with
:func:`ase_mlmd.data.sampling.sample_reference` (each segment its own resumable file in
``OUTPUT.parts/``) and writes all frames into one extended-XYZ file, each frame tagged with
``info["config_type"]`` (the segment's name: ``crystal_300K``, ``iso_-3%``, ``shear_2``,
``vacancy_900K``, ``liquid_2000K``).

Segments (default :class:`MetalDatasetConfig`, 2×2×2 conventional cells = 32 atoms):

* ``crystal_<T>``: the perfect crystal at 100, 300, 600, 900 and 1200 K;
* ``iso_<s>``: the lattice scaled by 1 + s (s = −3, −1.5, +1.5, +3 %) at 600 K — covers the
  ±6 % volume range of the equation of state;
* ``shear_<i>``: random symmetric strains (components uniform in ±3 %) at 300 K — the shear
  response that C44 needs;
* ``vacancy_<T>``: one atom removed, at 300 and 900 K;
* ``liquid_<T>``: the lattice expanded by 3 % (liquid density) at 2000 K, far above EMT's
  melting point of Cu (~1300 K), so it melts within the first picosecond.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from ase_mlmd.errors import InvalidStructureError

#: per-segment info key naming the kind of configuration
CONFIG_TYPE_KEY = "config_type"


@dataclasses.dataclass
class MetalDatasetConfig:
    """Which segments a materials data set has and how long each runs.

    Attributes:
        repeat: conventional cubic cells per side of the supercell (2 → 32 atoms for fcc).
        crystal_temperatures: K, one crystal segment each.
        iso_strains: fractional lattice strains, one segment each at ``strain_temperature``.
        shear_samples: number of random symmetric strains (components in ±``shear_max``).
        shear_max: largest strain component of the random strains (fraction).
        strain_temperature: K, of the isotropic strain segments; shear segments run at 300 K.
        vacancy_temperatures: K, one vacancy segment each.
        liquid_temperatures: K, one liquid segment each.
        liquid_expansion: lattice scale of the liquid start (1.03 = +9 % volume).
        steps: MD steps per segment.
        every: a frame every this many steps (steps // every + 1 frames per segment).
        timestep: fs (1 fs below 1500 K ... 2 fs is stable for Cu/Al/Ni with EMT; the liquid
            segments use half of it).
        friction: Langevin friction, 1/fs.
        seed: seed of velocities, thermostat and random strains.
    """

    repeat: int = 2
    crystal_temperatures: tuple[float, ...] = (100.0, 300.0, 600.0, 900.0, 1200.0)
    iso_strains: tuple[float, ...] = (-0.03, -0.015, 0.015, 0.03)
    shear_samples: int = 6
    shear_max: float = 0.03
    strain_temperature: float = 600.0
    vacancy_temperatures: tuple[float, ...] = (300.0, 900.0)
    liquid_temperatures: tuple[float, ...] = (2000.0,)
    liquid_expansion: float = 1.03
    steps: int = 2000
    every: int = 20
    timestep: float = 2.0
    friction: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.repeat < 1:
            raise ValueError(f"repeat must be >= 1 cell per side, got {self.repeat}")
        if not 0 <= self.shear_max < 0.2:
            raise ValueError(f"shear_max must be a strain in [0, 0.2), got {self.shear_max}")
        if self.steps < self.every or self.every < 1:
            raise ValueError(
                f"steps ({self.steps}) must be >= every ({self.every}) >= 1 for frames to be "
                "written"
            )


def fcc_crystal(structure: Any, a: float | None = None) -> Atoms:
    """The conventional cubic fcc cell (4 atoms) of an element symbol (``ase.build.bulk``,
    ASE's lattice constant unless ``a`` in Å), or a cubic fcc crystal given as ``Atoms`` or
    pymatgen ``Structure`` (returned as ``Atoms``, unchanged).

    Raises:
        InvalidStructureError: an unknown element without ``a``, a non-periodic or non-cubic
            structure.
    """
    from ase.build import bulk

    from ase_mlmd.structures import to_atoms

    if isinstance(structure, str):
        try:
            return bulk(structure, "fcc", a=a, cubic=True)
        except (ValueError, KeyError) as err:
            raise InvalidStructureError(
                f"cannot build an fcc crystal of {structure!r} ({err}); give an element "
                "symbol such as Cu, or a crystal structure file"
            ) from None
    atoms = to_atoms(structure).copy()
    cell = atoms.cell.array
    lengths = np.linalg.norm(cell, axis=1)
    if not atoms.pbc.all() or not np.allclose(cell, np.diag(lengths), atol=1e-6):
        raise InvalidStructureError(
            "the materials data set needs a periodic cubic (orthogonal, axis-aligned) fcc "
            f"cell; got pbc={atoms.pbc.tolist()} and cell {np.round(cell, 4).tolist()} — use "
            "ase.build.bulk(element, 'fcc', cubic=True) or a conventional-cell CIF"
        )
    return atoms


def read_crystal(path: str | os.PathLike):
    """A crystal file (CIF, POSCAR, ... — anything pymatgen reads) as a pymatgen ``Structure``.

    Raises:
        StructureFileError: the file is missing or pymatgen cannot read it.
    """
    from pymatgen.core import Structure

    from ase_mlmd.errors import StructureFileError

    try:
        return Structure.from_file(os.fspath(path))
    except Exception as err:  # pymatgen raises ValueError, FileNotFoundError, ...
        raise StructureFileError(
            f"cannot read a crystal from {path} with pymatgen ({type(err).__name__}: {err}); "
            "give a CIF or POSCAR of the conventional cubic cell, or an element symbol"
        ) from None


def deformed(atoms: Atoms, strain: np.ndarray) -> Atoms:
    """A copy of ``atoms`` whose cell is deformed by the strain tensor ``strain`` (3, 3):
    cell → cell · (1 + strain), the atoms following (scaled positions kept)."""
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    return out


def metal_segments(
    structure: Any, config: MetalDatasetConfig | None = None
) -> list[tuple[str, Atoms, float, float]]:
    """The start structures of the data set: ``(name, atoms, temperature K, timestep fs)``.

    Args:
        structure: element symbol or cubic fcc cell (see :func:`fcc_crystal`).
        config: the segments (default :class:`MetalDatasetConfig`).
    """
    config = config or MetalDatasetConfig()
    crystal = fcc_crystal(structure).repeat(config.repeat)
    rng = np.random.default_rng(config.seed)
    dt = config.timestep
    segments = [(f"crystal_{t:g}K", crystal, t, dt) for t in config.crystal_temperatures]
    for s in config.iso_strains:
        name = f"iso_{100 * s:+g}%"
        segments.append((name, deformed(crystal, s * np.eye(3)), config.strain_temperature, dt))
    for i in range(config.shear_samples):
        e = rng.uniform(-config.shear_max, config.shear_max, (3, 3))
        segments.append((f"shear_{i}", deformed(crystal, (e + e.T) / 2), 300.0, dt))
    vacancy = crystal.copy()
    del vacancy[0]
    segments += [(f"vacancy_{t:g}K", vacancy, t, dt) for t in config.vacancy_temperatures]
    liquid = deformed(crystal, (config.liquid_expansion - 1.0) * np.eye(3))
    segments += [(f"liquid_{t:g}K", liquid, t, dt / 2) for t in config.liquid_temperatures]
    return segments


def sample_metal_dataset(
    structure: Any,
    reference: str | BaseCalculator,
    output: str | os.PathLike,
    config: MetalDatasetConfig | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    threads: int | None = None,
) -> list[Atoms]:
    """Run the reference MD of every segment and write all frames to ``output``.

    Each segment's frames go to ``OUTPUT.parts/<segment>.extxyz`` first (resumable: running
    again continues unfinished segments and skips finished ones); then ``output`` (extended
    XYZ) is written atomically with all frames, each with ``info["config_type"]``.

    Args:
        structure: element symbol (``"Cu"``) or cubic fcc cell (``Atoms``/pymatgen).
        reference: reference name (``"emt"``) or ASE calculator.
        output: frames file.
        config: segments and MD settings.
        resume, progress, threads: as in :func:`~ase_mlmd.data.sampling.sample_reference`.

    Returns:
        All frames (energy eV, forces eV/Å, stress eV/Å³), segment by segment.
    """
    from ase.io import write

    from ase_mlmd.data.sampling import SamplingConfig, sample_reference
    from ase_mlmd.fileio import atomic_output
    from ase_mlmd.outdir import lock_file

    config = config or MetalDatasetConfig()
    output = Path(output)
    parts = output.parent / f"{output.name}.parts"
    frames: list[Atoms] = []
    with lock_file(output, "frames file"):
        segments = metal_segments(structure, config)
        for k, (name, atoms, temperature, timestep) in enumerate(segments):
            if progress:
                print(f"segment {k + 1}/{len(segments)}: {name} ({len(atoms)} atoms)", flush=True)
            md = SamplingConfig(
                temperature=temperature,
                timestep=timestep,
                steps=config.steps,
                every=config.every,
                friction=config.friction,
                seed=config.seed + k,
            )
            part = sample_reference(
                atoms,
                reference,
                md,
                parts / f"{name}.extxyz",
                resume=resume,
                progress=progress,
                threads=threads,
            )
            for frame in part:
                frame.info[CONFIG_TYPE_KEY] = name
            frames += part
        with atomic_output(output) as tmp:
            write(tmp, frames, format="extxyz")
    return frames


def frames_of_type(frames: list[Atoms], prefix: str) -> list[Atoms]:
    """The frames whose ``info["config_type"]`` starts with ``prefix`` (e.g. ``"liquid"``)."""
    return [f for f in frames if str(f.info.get(CONFIG_TYPE_KEY, "")).startswith(prefix)]


__all__ = [
    "CONFIG_TYPE_KEY",
    "MetalDatasetConfig",
    "deformed",
    "fcc_crystal",
    "frames_of_type",
    "read_crystal",
    "metal_segments",
    "sample_metal_dataset",
]
