"""Array-layout datasets: MD17/rMD17 ``.npz`` files and deepmd ``set.NNN/*.npy`` systems.

MD17 (sGDML) npz keys: ``R`` (n, N, 3) Å, ``z`` (N,), ``E`` (n, 1) or (n,), ``F`` (n, N, 3);
rMD17 keys: ``coords``, ``nuclear_charges``, ``energies``, ``forces``. Both are kcal/mol and Å
but the files do not say so: the caller passes ``energy_unit="kcal/mol"``.

deepmd system directory: ``type.raw`` (one integer type per atom), ``type_map.raw`` (element of
each type), ``set.NNN/coord.npy`` (n, 3N), ``box.npy`` (n, 9), ``energy.npy`` (n,),
``force.npy`` (n, 3N); an empty file ``nopbc`` marks a non-periodic system. deepmd's units are
eV and Å. ``virial.npy`` is not read.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ase_mlmd.data.readers_common import RawFrame, numbers_from_symbols
from ase_mlmd.errors import DataFormatError

#: npz key names of the two MD17 layouts: positions, atomic numbers, energies, forces
MD17_LAYOUTS = {
    "MD17": ("R", "z", "E", "F"),
    "rMD17": ("coords", "nuclear_charges", "energies", "forces"),
}
_MD17_HINT = '; MD17 and rMD17 files are in kcal/mol and Å: pass energy_unit="kcal/mol"'
_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)


def natural_key(name: str) -> list:
    """Sort key ordering ``data_2`` before ``data_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def read_md17(path: Path) -> list[RawFrame]:
    """All frames of an MD17 or rMD17 npz file, in the file's units (kcal/mol, Å).

    Raises:
        DataFormatError: not an npz / corrupt archive, unknown key layout, or arrays whose
            frame or atom counts disagree (the message names the file and the keys).
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            layout = next((name for name, k in MD17_LAYOUTS.items() if k[0] in keys), None)
            if layout is None:
                raise DataFormatError(
                    f"{path}: not an MD17/rMD17 npz file: keys {sorted(keys)}; expected "
                    f"{MD17_LAYOUTS['MD17']} (MD17) or {MD17_LAYOUTS['rMD17']} (rMD17)"
                )
            r_key, z_key, e_key, f_key = MD17_LAYOUTS[layout]
            if z_key not in keys:
                raise DataFormatError(f"{path}: {layout} file without atomic numbers {z_key!r}")
            positions = np.asarray(npz[r_key], dtype=np.float64)
            numbers = np.asarray(npz[z_key])
            energies = np.asarray(npz[e_key], dtype=np.float64) if e_key in keys else None
            forces = np.asarray(npz[f_key], dtype=np.float64) if f_key in keys else None
    except DataFormatError:
        raise
    except _NPZ_ERRORS as err:
        raise DataFormatError(
            f"{path}: cannot read this npz file ({err}); it is truncated or corrupt"
        ) from err
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise DataFormatError(f"{path}: {r_key!r} has shape {positions.shape}, not (frames, N, 3)")
    n_frames, n_atoms = positions.shape[:2]
    if numbers.shape != (n_atoms,):
        raise DataFormatError(
            f"{path}: {z_key!r} has shape {numbers.shape} but {r_key!r} has {n_atoms} atoms"
        )
    if energies is not None:
        if energies.ndim == 2 and energies.shape[1] == 1:
            energies = energies[:, 0]
        if energies.shape != (n_frames,):
            raise DataFormatError(
                f"{path}: {e_key!r} has shape {energies.shape} but {r_key!r} has {n_frames} "
                "frames; the arrays do not match (corrupt or mixed-up file)"
            )
    if forces is not None and forces.shape != positions.shape:
        raise DataFormatError(
            f"{path}: {f_key!r} has shape {forces.shape} but {r_key!r} has {positions.shape}; "
            "the arrays do not match (corrupt or mixed-up file)"
        )
    numbers = numbers.astype(np.int64)
    missing = {"forces": f"no {f_key!r} array in the file", "energy": f"no {e_key!r} array"}
    return [
        RawFrame(
            numbers=numbers,
            positions=positions[i],
            source=f"{path}#{i}",
            energy=None if energies is None else energies[i],
            forces=None if forces is None else forces[i],
            default_energy_unit=None,
            hint=_MD17_HINT,
            missing=missing,
        )
        for i in range(n_frames)
    ]


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataFormatError(f"{path}: cannot read this npy file ({err}); truncated?") from err


def _read_type_files(system: Path) -> np.ndarray:
    """Atomic numbers of a deepmd system from ``type.raw`` and ``type_map.raw``."""
    type_file, map_file = system / "type.raw", system / "type_map.raw"
    try:
        types = np.array(type_file.read_text().split(), dtype=np.int64)
    except ValueError as err:
        raise DataFormatError(f"{type_file}: expected one integer type per atom") from err
    if not map_file.exists():
        raise DataFormatError(
            f"{map_file} is missing: without it the elements of types 0..{types.max()} are "
            "unknown; write the element symbols of the types into it (e.g. 'O H')"
        )
    type_map = map_file.read_text().split()
    if types.size == 0 or types.min() < 0 or types.max() >= len(type_map):
        raise DataFormatError(
            f"{type_file}: types must lie in 0..{len(type_map) - 1} (the {len(type_map)} names "
            f"in {map_file.name}), found {sorted(set(types.tolist()))}"
        )
    return numbers_from_symbols(type_map, str(map_file))[types]


def _set_frames(set_dir: Path, numbers: np.ndarray, periodic: bool) -> list[RawFrame]:
    n_atoms = len(numbers)
    coord_file = set_dir / "coord.npy"
    if not coord_file.exists():
        raise DataFormatError(f"{coord_file} is missing: every deepmd set needs coordinates")
    coord = _load_npy(coord_file)
    n = coord.shape[0] if coord.ndim == 2 else -1
    arrays = {}
    for name, width in (("box", 9), ("energy", 1), ("force", 3 * n_atoms)):
        file = set_dir / f"{name}.npy"
        if not file.exists():
            continue
        array = _load_npy(file)
        if array.ndim == 1 and width == 1:
            array = array.reshape(-1, 1)
        if array.ndim != 2 or array.shape[1] != width or array.shape[0] != n:
            raise DataFormatError(
                f"{file}: shape {array.shape} does not match {coord_file.name} "
                f"({coord.shape}, {n_atoms} atoms in type.raw): expected ({n}, {width}); "
                "the set is truncated or corrupt"
            )
        arrays[name] = array
    if coord.ndim != 2 or coord.shape[1] != 3 * n_atoms:
        raise DataFormatError(
            f"{coord_file}: shape {coord.shape}, expected (frames, {3 * n_atoms}) for the "
            f"{n_atoms} atoms of type.raw"
        )
    if periodic and "box" not in arrays:
        raise DataFormatError(
            f"{set_dir / 'box.npy'} is missing; for a non-periodic system put an empty file "
            f"'nopbc' in {set_dir.parent}"
        )
    missing = {"forces": f"no {set_dir / 'force.npy'}", "energy": f"no {set_dir / 'energy.npy'}"}
    frames = []
    for i in range(n):
        frames.append(
            RawFrame(
                numbers=numbers,
                positions=coord[i].reshape(n_atoms, 3),
                source=f"{set_dir}#{i}",
                cell=arrays["box"][i].reshape(3, 3) if periodic else None,
                pbc=periodic,
                energy=arrays["energy"][i, 0] if "energy" in arrays else None,
                forces=arrays["force"][i].reshape(n_atoms, 3) if "force" in arrays else None,
                default_energy_unit="eV",
                missing=missing,
            )
        )
    return frames


def deepmd_systems(path: Path) -> list[Path]:
    """The deepmd system directories at ``path``: itself if it holds ``type.raw``, otherwise
    every directory below it that does, in natural sort order."""
    if (path / "type.raw").exists():
        return [path]
    systems = {p.parent for p in path.rglob("type.raw")}
    return sorted(systems, key=lambda p: [natural_key(part) for part in p.relative_to(path).parts])


def read_deepmd(path: Path) -> list[RawFrame]:
    """All frames of a deepmd system directory, or of every system below ``path`` (systems in
    natural sort order, their ``set.NNN`` directories in order), in eV and Å.

    Raises:
        DataFormatError: no system, a missing ``type_map.raw`` / ``coord.npy`` / ``box.npy``,
            or npy files whose frame or atom counts disagree (the message names the file).
    """
    systems = deepmd_systems(path)
    if not systems:
        raise DataFormatError(f"{path}: no deepmd system (no type.raw in it or below it)")
    frames: list[RawFrame] = []
    for system in systems:
        numbers = _read_type_files(system)
        sets = sorted(
            (p for p in system.glob("set.*") if p.is_dir()), key=lambda p: natural_key(p.name)
        )
        if not sets:
            raise DataFormatError(f"{system}: deepmd system without set.* directories")
        periodic = not (system / "nopbc").exists()
        for set_dir in sets:
            frames.extend(_set_frames(set_dir, numbers, periodic))
    return frames
