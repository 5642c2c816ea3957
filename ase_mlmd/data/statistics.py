"""Dataset statistics used to normalise a model: energy shifts, force scale, neighbour count.

Per-species energy shifts are the least-squares fit ``E_k ≈ Σ_s c_ks · shift_s`` of the total
energies ``E_k`` to the element counts ``c_ks`` of each frame (``numpy.linalg.lstsq``). When the
frames do not determine the shifts — all frames have the same composition (one molecule in
MD17, a fixed-stoichiometry liquid), or compositions proportional to each other — the system
is rank-deficient and ``lstsq`` returns the minimum-norm solution: the shifts are then not
"energies of isolated atoms", but ``Σ_s c_s · shift_s`` still equals the mean total energy of
each composition, which is all a shift has to do (nequip's per-species shifts behave the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.data import chemical_symbols

from ase_mlmd.errors import MissingLabelsError
from ase_mlmd.neighbors import system_neighbors
from ase_mlmd.progress import progress_bar


@dataclass
class DatasetStatistics:
    """Summary numbers of a labelled dataset (all in ASE units).

    Attributes:
        species: element symbols present, by atomic number.
        energy_shifts: eV per atom of each element, least-squares fit (see module docstring).
        energy_residual_rms: RMS over frames of (E - Σ shifts) / n_atoms, eV/atom.
        force_rms: RMS of all force components, eV/Å (NaN when no frame has forces).
        avg_num_neighbors: mean number of neighbours within ``cutoff`` per atom (periodic
            images counted), over all atoms of all frames.
        n_frames: number of frames.
        cutoff: neighbour cutoff used, Å.
    """

    species: tuple[str, ...]
    energy_shifts: dict[str, float]
    energy_residual_rms: float
    force_rms: float
    avg_num_neighbors: float
    n_frames: int
    cutoff: float

    def as_dict(self) -> dict:
        """Plain dict (for model cards and JSON)."""
        data = asdict(self)
        data["species"] = list(self.species)
        return data


def _label(atoms: Atoms, name: str):
    """``energy`` or ``forces`` of a frame from its calculator, or None if it has none."""
    if atoms.calc is None:
        return None
    try:
        if name == "energy":
            return atoms.get_potential_energy()
        return atoms.get_forces()
    except PropertyNotImplementedError:
        return None


def _where(atoms: Atoms, k: int) -> str:
    source = atoms.info.get("source")
    return f"frame {k}" + (f" ({source})" if source else "")


def energy_shifts(frames: Sequence[Atoms]) -> tuple[dict[str, float], float]:
    """Least-squares per-species energy shifts and the RMS per-atom residual.

    Returns:
        ``{symbol: eV}`` and the RMS of ``(E_k - Σ_s c_ks shift_s) / n_k`` in eV/atom.

    Raises:
        MissingLabelsError: a frame has no energy (names the frame and its source).
    """
    numbers = sorted({int(z) for atoms in frames for z in atoms.numbers})
    column = {z: c for c, z in enumerate(numbers)}
    counts = np.zeros((len(frames), len(numbers)))
    energies = np.empty(len(frames))
    for k, atoms in enumerate(frames):
        energy = _label(atoms, "energy")
        if energy is None:
            raise MissingLabelsError(f"{_where(atoms, k)} has no energy; energy shifts need one")
        energies[k] = energy
        for z, n in zip(*np.unique(atoms.numbers, return_counts=True), strict=True):
            counts[k, column[int(z)]] = n
    shifts = np.linalg.lstsq(counts, energies, rcond=None)[0]
    residual = (energies - counts @ shifts) / counts.sum(axis=1)
    table = {chemical_symbols[z]: float(s) for z, s in zip(numbers, shifts, strict=True)}
    return table, float(np.sqrt(np.mean(residual**2)))


def force_rms(frames: Sequence[Atoms]) -> float:
    """RMS of all force components over all frames, eV/Å; NaN when no frame has forces.

    Raises:
        MissingLabelsError: some frames have forces and others do not (names a frame without).
    """
    squares, components, missing = 0.0, 0, None
    for k, atoms in enumerate(frames):
        forces = _label(atoms, "forces")
        if forces is None:
            missing = missing if missing is not None else k
            continue
        squares += float(np.sum(np.square(forces)))
        components += forces.size
    if components == 0:
        return float("nan")
    if missing is not None:
        raise MissingLabelsError(
            f"{_where(frames[missing], missing)} has no forces while other frames do; read the "
            "dataset with require=('energy', 'forces') or drop frames without forces"
        )
    return float(np.sqrt(squares / components))


def avg_num_neighbors(frames: Sequence[Atoms], cutoff: float, progress: bool = False) -> float:
    """Mean number of neighbours within ``cutoff`` (Å) per atom, periodic images included,
    over all atoms of all frames (the full neighbour list of :mod:`ase_mlmd.neighbors`)."""
    edges, atoms_total = 0, 0
    for atoms in progress_bar(frames, desc="neighbours", disable=not progress):
        edge_index, _ = system_neighbors(atoms.positions, np.asarray(atoms.cell), atoms.pbc, cutoff)
        edges += edge_index.shape[1]
        atoms_total += len(atoms)
    return edges / atoms_total


def dataset_statistics(
    frames: Sequence[Atoms], cutoff: float, progress: bool = False
) -> DatasetStatistics:
    """Energy shifts, force RMS and average neighbour count of labelled frames.

    Args:
        frames: ``Atoms`` with energies (and forces) in their calculators, as the readers of
            :mod:`ase_mlmd.data.readers` return them.
        cutoff: neighbour cutoff of the model, Å.
        progress: show a progress bar over frames for the neighbour counts.

    Raises:
        ValueError: no frames, or a cutoff that is not positive.
        MissingLabelsError: a frame without energy, or forces on only some frames.
    """
    if len(frames) == 0:
        raise ValueError("dataset_statistics needs at least one frame, got none")
    if not cutoff > 0:
        raise ValueError(f"cutoff must be > 0 Å, got {cutoff}")
    shifts, residual = energy_shifts(frames)
    return DatasetStatistics(
        species=tuple(shifts),
        energy_shifts=shifts,
        energy_residual_rms=residual,
        force_rms=force_rms(frames),
        avg_num_neighbors=avg_num_neighbors(frames, cutoff, progress),
        n_frames=len(frames),
        cutoff=float(cutoff),
    )
