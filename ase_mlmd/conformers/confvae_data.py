"""Reference conformer ensembles for ConfVAE: reading, the split by molecule, batches.

* :func:`read_reference`: every ``*.extxyz`` under a folder is one molecule's ensemble (frames
  carrying ``info["mapped_smiles"]`` or ``info["smiles"]``, optionally ``mol_id`` and
  ``energy``), the layout ``ase-mlmd conformers reference`` writes;
* :func:`split_reference`: a folder with ``train/``, ``val/``, ``test/`` subfolders keeps that
  split (its held-out test molecules never enter training; without ``val/`` a seeded share of
  the training molecules validates); a flat folder is split with
  :func:`ase_mlmd.data.splits.split_indices`;
* :class:`ConformerSet`: the (molecule, conformer) pairs of one part, batched for the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_mlmd.conformers.confvae_features import MolGraph, collate
from ase_mlmd.data.splits import split_indices
from ase_mlmd.errors import DataFormatError, DatasetSplitError, StructureFileError


@dataclass
class ReferenceMolecule:
    """One molecule's reference ensemble: id, SMILES, its part (from the folder) or None, the
    RDKit Mol (explicit H), conformers (K, N, 3) Å and energies (K,) eV (NaN if absent)."""

    mol_id: str
    smiles: str
    part: str | None
    mol: Any
    conformers: np.ndarray
    energies: np.ndarray


def read_reference(folder: str | os.PathLike, max_conformers: int | None = None) -> list:
    """All ensembles under ``folder`` (every ``*.extxyz``, sorted by path).

    Raises:
        StructureFileError: the folder does not exist.
        DataFormatError: no ``*.extxyz`` ensemble in it (names the folder and how to make one).
        InvalidMoleculeError: frames without a SMILES or not matching it.
    """
    from ase.io import read

    from ase_mlmd.conformers.molecules import atoms_to_mol

    folder = Path(folder)
    if not folder.is_dir():
        raise StructureFileError(f"reference folder {str(folder)!r} not found (--reference)")
    files = sorted(folder.rglob("*.extxyz"))
    if not files:
        raise DataFormatError(
            f"the reference folder {str(folder)!r} holds no ensembles (*.extxyz); compute them "
            "first with: ase-mlmd conformers reference mols.smi --reference gfn2-xtb -o ref/"
        )
    molecules = []
    for path in files:
        frames = read(path, index=":")
        if not frames:
            continue
        energies = np.array([f.info.get("energy", np.nan) for f in frames], dtype=float)
        order = np.argsort(np.nan_to_num(energies, nan=np.inf), kind="stable")
        order = order[:max_conformers] if max_conformers else order
        frames = [frames[k] for k in order]
        mol = atoms_to_mol(frames)
        part = path.parent.name if path.parent.name in ("train", "val", "test") else None
        molecules.append(
            ReferenceMolecule(
                mol_id=str(frames[0].info.get("mol_id", path.stem)),
                smiles=str(frames[0].info.get("smiles", "")),
                part=part,
                mol=mol,
                conformers=np.stack([f.positions for f in frames]),
                energies=energies[order],
            )
        )
    return molecules


def split_reference(
    molecules: list, sizes: tuple = (0.8, 0.1, 0.1), seed: int = 123
) -> dict[str, list[int]]:
    """Molecule indices per part: the folders' split, else ``split_indices(sizes, seed)``
    (see the module docstring).

    Raises:
        DatasetSplitError: no training or no validation molecule.
    """
    labelled = {
        p: [k for k, m in enumerate(molecules) if m.part == p] for p in ("train", "val", "test")
    }
    if any(labelled.values()):
        parts = dict(labelled)
        parts["train"] += [k for k, m in enumerate(molecules) if m.part is None]
        if not parts["val"] and len(parts["train"]) > 1:
            f_train, f_val = float(sizes[0]), float(sizes[1])
            n_val = max(1, round(len(parts["train"]) * f_val / max(f_train + f_val, 1e-9)))
            order = np.random.default_rng(seed).permutation(len(parts["train"]))
            chosen = set(order[:n_val].tolist())
            parts["val"] = [k for r, k in enumerate(parts["train"]) if r in chosen]
            parts["train"] = [k for r, k in enumerate(parts["train"]) if r not in chosen]
    else:
        split = split_indices(len(molecules), tuple(sizes), seed=seed)
        parts = {p: split.indices(p) for p in ("train", "val", "test")}
    for part in ("train", "val"):
        if not parts[part]:
            raise DatasetSplitError(
                f"no {part} molecule: the reference has {len(molecules)} molecules "
                f"({ {p: len(v) for p, v in labelled.items()} } in train/val/test folders); "
                "compute more ensembles or change --split"
            )
    return parts


class ConformerSet:
    """(molecule, conformer) pairs of one part, with the molecules' graphs precomputed."""

    def __init__(self, molecules: list, indices: list[int], graphs: dict[int, MolGraph]) -> None:
        self.molecules, self.graphs = molecules, graphs
        self.items = [(m, k) for m in indices for k in range(len(molecules[m].conformers))]

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, chosen: list[int]):
        pairs = [self.items[i] for i in chosen]
        graphs = collate([self.graphs[m] for m, _ in pairs])
        positions = np.concatenate([self.molecules[m].conformers[k] for m, k in pairs])
        return graphs, torch.tensor(positions, dtype=torch.float32)
