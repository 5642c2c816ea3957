"""Molecular graphs for ConfVAE: RDKit atom/bond features on the extended (1…k-hop) graph.

A molecule (RDKit ``Mol`` with explicit hydrogens, atom order kept) becomes a
:class:`MolGraph`:

* atom features (N, F): one-hot element over the model's *vocabulary* (the elements seen in
  training), one-hot degree 0–5, formal charge −1/0/+1, aromatic, in ring, one-hot
  hybridisation (sp, sp2, sp3, sp3d, sp3d2, other), one-hot total hydrogen count 0–4;
* extended edges (2, E), i < j: every atom pair at most ``max_hops`` bonds apart (topological
  distance from RDKit's ``GetDistanceMatrix``); 1-hop edges are bonds, 2-hop pairs fix bond
  angles, 3-hop pairs fix torsions (up to their sign);
* edge features (E, 6 + max_hops): one-hot bond type (single, double, triple, aromatic; zero
  for non-bonds), conjugated, in ring, one-hot hop count 1…max_hops.

Several graphs are concatenated into a :class:`GraphBatch` (atom indices offset per molecule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rdkit import Chem

from ase_mlmd.errors import UnsupportedSpeciesError

_HYBRIDISATION = (
    Chem.HybridizationType.SP,
    Chem.HybridizationType.SP2,
    Chem.HybridizationType.SP3,
    Chem.HybridizationType.SP3D,
    Chem.HybridizationType.SP3D2,
)
_BONDS = (
    Chem.BondType.SINGLE,
    Chem.BondType.DOUBLE,
    Chem.BondType.TRIPLE,
    Chem.BondType.AROMATIC,
)


def _one_hot(value, choices: Sequence) -> list[float]:
    """One-hot over ``choices`` with a last 'other' slot when the value is not among them."""
    out = [0.0] * (len(choices) + 1)
    out[choices.index(value) if value in choices else len(choices)] = 1.0
    return out


def atom_feature_size(vocabulary: Sequence[str]) -> int:
    """Length of an atom's feature vector for this element vocabulary."""
    return len(vocabulary) + 7 + 4 + 2 + 6 + 6


def edge_feature_size(max_hops: int) -> int:
    """Length of an edge's feature vector for this hop count."""
    return len(_BONDS) + 2 + max_hops


@dataclass
class MolGraph:
    """One molecule's extended graph.

    Attributes:
        atom_features: (N, F) float32.
        edges: (2, E) int64, atom pairs i < j at most ``max_hops`` bonds apart.
        edge_features: (E, 6 + max_hops) float32.
        hops: (E,) int64, topological distance of each edge.
        heavy: (N,) bool, non-hydrogen atoms.
    """

    atom_features: torch.Tensor
    edges: torch.Tensor
    edge_features: torch.Tensor
    hops: torch.Tensor
    heavy: torch.Tensor

    @property
    def n_atoms(self) -> int:
        return int(self.atom_features.shape[0])


def check_vocabulary(mol: Chem.Mol, vocabulary: Sequence[str], what: str = "the model") -> None:
    """Raise :class:`UnsupportedSpeciesError` if ``mol`` has an element outside ``vocabulary``."""
    symbols = {atom.GetSymbol() for atom in mol.GetAtoms()}
    unknown = sorted(symbols - set(vocabulary))
    if unknown:
        raise UnsupportedSpeciesError(
            f"{Chem.MolToSmiles(Chem.RemoveHs(mol))} contains {', '.join(unknown)}, which "
            f"{what} was never trained on (its elements: {', '.join(vocabulary)}); use "
            "--method etkdg for this molecule, or train a ConfVAE card on data with these elements"
        )


def mol_graph(mol: Chem.Mol, vocabulary: Sequence[str], max_hops: int = 6) -> MolGraph:
    """The :class:`MolGraph` of ``mol`` (explicit hydrogens expected, atom order kept).

    Raises:
        UnsupportedSpeciesError: an element outside ``vocabulary``.
        ValueError: ``max_hops`` < 1 or a molecule without atoms.
    """
    if max_hops < 1:
        raise ValueError(f"max_hops must be >= 1, got {max_hops}")
    if mol.GetNumAtoms() == 0:
        raise ValueError("the molecule has no atoms")
    check_vocabulary(mol, vocabulary)
    vocabulary = list(vocabulary)
    rows = []
    for atom in mol.GetAtoms():
        rows.append(
            _one_hot(atom.GetSymbol(), vocabulary)[:-1]
            + _one_hot(atom.GetDegree(), (0, 1, 2, 3, 4, 5))
            + _one_hot(atom.GetFormalCharge(), (-1, 0, 1))
            + [float(atom.GetIsAromatic()), float(atom.IsInRing())]
            + _one_hot(atom.GetHybridization(), _HYBRIDISATION)
            + _one_hot(atom.GetTotalNumHs(), (0, 1, 2, 3, 4))
        )
    topo = np.asarray(Chem.GetDistanceMatrix(mol))
    n = mol.GetNumAtoms()
    upper = np.arange(n)[:, None] < np.arange(n)[None, :]
    i, j = np.nonzero(upper & (topo >= 1) & (topo <= max_hops))
    hops = topo[i, j].astype(np.int64)
    edge_rows = []
    for a, b, h in zip(i.tolist(), j.tolist(), hops.tolist(), strict=True):
        bond = mol.GetBondBetweenAtoms(a, b) if h == 1 else None
        kind = _one_hot(bond.GetBondType(), _BONDS)[:-1] if bond else [0.0] * len(_BONDS)
        flags = [float(bond.GetIsConjugated()), float(bond.IsInRing())] if bond else [0.0, 0.0]
        edge_rows.append(kind + flags + [float(h == k) for k in range(1, max_hops + 1)])
    n_edge = edge_feature_size(max_hops)
    return MolGraph(
        atom_features=torch.tensor(rows, dtype=torch.float32),
        edges=torch.tensor(np.stack([i, j]), dtype=torch.int64).reshape(2, -1),
        edge_features=torch.tensor(edge_rows, dtype=torch.float32).reshape(-1, n_edge),
        hops=torch.from_numpy(hops),
        heavy=torch.tensor([a.GetAtomicNum() > 1 for a in mol.GetAtoms()]),
    )


@dataclass
class GraphBatch:
    """Several :class:`MolGraph` concatenated.

    Attributes:
        atom_features: (N_tot, F); edges: (2, E_tot) into the concatenation;
        edge_features: (E_tot, Fe); atom_mol: (N_tot,) molecule of each atom;
        edge_mol: (E_tot,) molecule of each edge; counts: atoms per molecule (B,);
        heavy: (N_tot,) bool; hops: (E_tot,) bonds between the atoms of each edge.
    """

    atom_features: torch.Tensor
    edges: torch.Tensor
    edge_features: torch.Tensor
    atom_mol: torch.Tensor
    edge_mol: torch.Tensor
    counts: torch.Tensor
    heavy: torch.Tensor
    hops: torch.Tensor

    @property
    def n_molecules(self) -> int:
        return int(self.counts.shape[0])

    def pad(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-atom ``values`` (N_tot, D) as padded (B, N_max, D) and the (B, N_max) mask."""
        n_max = int(self.counts.max())
        starts = torch.cumsum(self.counts, 0) - self.counts
        slot = torch.arange(values.shape[0]) - starts[self.atom_mol]
        out = values.new_zeros(self.n_molecules, n_max, values.shape[1])
        out[self.atom_mol, slot] = values
        mask = torch.zeros(self.n_molecules, n_max, dtype=torch.bool)
        mask[self.atom_mol, slot] = True
        return out, mask


def collate(graphs: Sequence[MolGraph]) -> GraphBatch:
    """Concatenate graphs (atom indices of edges offset by the atoms before)."""
    counts = torch.tensor([g.n_atoms for g in graphs], dtype=torch.int64)
    offsets = torch.cumsum(counts, 0) - counts
    n_edges = torch.tensor([g.edges.shape[1] for g in graphs], dtype=torch.int64)
    return GraphBatch(
        atom_features=torch.cat([g.atom_features for g in graphs]),
        edges=torch.cat([g.edges + o for g, o in zip(graphs, offsets.tolist(), strict=True)], 1),
        edge_features=torch.cat([g.edge_features for g in graphs]),
        atom_mol=torch.repeat_interleave(torch.arange(len(graphs)), counts),
        edge_mol=torch.repeat_interleave(torch.arange(len(graphs)), n_edges),
        counts=counts,
        heavy=torch.cat([g.heavy for g in graphs]),
        hops=torch.cat([g.hops for g in graphs]),
    )
