"""Labelled frames as precomputed graphs, collated into batches without touching ASE again.

Positions do not move during training, so each frame's neighbour list is built once
(:func:`ase_mlmd.batch.batch_from_atoms`) and kept, with its labels, as tensors on the training
device. A batch is then a handful of ``torch.cat`` calls (edge indices offset by the atoms
before them): no Python loop over atoms or edges, no neighbour search per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError

from ase_mlmd.batch import AtomsBatch, batch_from_atoms
from ase_mlmd.errors import MissingLabelsError
from ase_mlmd.progress import progress_bar


@dataclass
class LabelledBatch:
    """A batch of systems with reference labels.

    Attributes:
        batch: the systems with their neighbour list (float64 positions, Å).
        energy: (B,) reference energies, eV.
        forces: (N, 3) reference forces, eV/Å.
        n_atoms: (B,) atoms per system (float64, for per-atom normalisation).
    """

    batch: AtomsBatch
    energy: torch.Tensor
    forces: torch.Tensor
    n_atoms: torch.Tensor


def frame_labels(atoms: Atoms, where: str, require_energy: bool = True) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces (n, 3) eV/Å of a labelled frame.

    With ``require_energy=False`` a frame with forces only (e.g. mapped CG forces) gives energy
    NaN; a force-only fit then sets ``energy_weight=0``.

    Raises:
        MissingLabelsError: the frame has no calculator results for energy or forces.
    """
    try:
        if atoms.calc is None:
            raise PropertyNotImplementedError
        forces = np.asarray(atoms.get_forces(), dtype=np.float64)
        if require_energy or "energy" in atoms.calc.results:
            energy = float(atoms.get_potential_energy())
        else:
            energy = float("nan")
    except PropertyNotImplementedError:
        raise MissingLabelsError(
            f"{where} has no energy and forces; training needs frames labelled with both (read "
            "them with ase_mlmd.data.readers.read_frames, or attach a SinglePointCalculator)"
        ) from None
    return energy, forces


class GraphDataset:
    """Frames with labels and neighbour lists, stored once as tensors on ``device``.

    Args:
        frames: labelled ASE frames (a ``SinglePointCalculator`` with energy and forces).
        cutoff: neighbour cutoff, Å.
        device: where the tensors live (the training device).
        names: one name per frame for error messages (default ``frame {k}``).
        progress: show a progress bar while building neighbour lists.
        require_energy: refuse frames without energy (False: their energy is NaN).
    """

    def __init__(
        self,
        frames: Sequence[Atoms],
        cutoff: float,
        device: torch.device | str = "cpu",
        names: Sequence[str] | None = None,
        progress: bool = False,
        require_energy: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self._graphs: list[AtomsBatch] = []
        energies, forces = [], []
        for k, atoms in enumerate(
            progress_bar(frames, desc="graphs", disable=not progress, leave=False)
        ):
            where = names[k] if names is not None else f"frame {k}"
            energy, frame_forces = frame_labels(atoms, where, require_energy)
            energies.append(energy)
            forces.append(torch.from_numpy(frame_forces).to(self.device))
            self._graphs.append(batch_from_atoms([atoms], cutoff).to(device=self.device))
        self._energy = torch.tensor(energies, dtype=torch.float64, device=self.device)
        self._forces = forces
        self._n_atoms = torch.tensor(
            [len(g.numbers) for g in self._graphs], dtype=torch.long, device=self.device
        )

    def __len__(self) -> int:
        return len(self._graphs)

    @property
    def n_atoms(self) -> torch.Tensor:
        """(n_frames,) atoms per frame."""
        return self._n_atoms

    @property
    def n_edges(self) -> int:
        """Total number of directed edges over all frames."""
        return sum(int(g.edge_index.shape[1]) for g in self._graphs)

    def collate(self, indices: Sequence[int] | torch.Tensor) -> LabelledBatch:
        """The frames ``indices`` as one batch, in that order."""
        idx = [int(i) for i in indices]
        graphs = [self._graphs[i] for i in idx]
        sizes = self._n_atoms[idx]
        starts = torch.cumsum(sizes, 0) - sizes
        edge_index = torch.cat(
            [g.edge_index + start for g, start in zip(graphs, starts.tolist(), strict=True)], dim=1
        )
        system_idx = torch.repeat_interleave(torch.arange(len(idx), device=self.device), sizes)
        batch = AtomsBatch(
            positions=torch.cat([g.positions for g in graphs]),
            numbers=torch.cat([g.numbers for g in graphs]),
            cell=torch.cat([g.cell for g in graphs]),
            pbc=torch.cat([g.pbc for g in graphs]),
            system_idx=system_idx,
            edge_index=edge_index,
            cell_shifts=torch.cat([g.cell_shifts for g in graphs]),
        )
        return LabelledBatch(
            batch=batch,
            energy=self._energy[idx],
            forces=torch.cat([self._forces[i] for i in idx]),
            n_atoms=sizes.to(torch.float64),
        )

    def batches(self, indices: Sequence[int], batch_size: int) -> list[list[int]]:
        """``indices`` cut into consecutive chunks of at most ``batch_size``."""
        indices = [int(i) for i in indices]
        return [indices[k : k + batch_size] for k in range(0, len(indices), batch_size)]
