"""Bonded prior energy of coarse-grained molecules (CGnet / mlcg convention).

One molecule topology (bead count, bonds, angles, dihedrals, non-bonded pairs) with its own
parameters; a system of the batch holds one or several copies of that molecule, bead after bead
(system size a multiple of ``n_beads``). Terms, all in eV with lengths in Å and angles in
radians:

* bonds: ``½ k (r − r₀)²`` per bonded pair;
* angles: ``½ k (θ − θ₀)²`` per bonded triple (θ at the middle bead);
* dihedrals: ``Σₙ aₙ cos(nφ) + bₙ sin(nφ)``, n = 1 … n_harmonics, per bonded quadruple, φ in
  (−π, π] with the IUPAC sign (the same as mdtraj);
* repulsion: ``ε (σ / r)⁶`` between beads of a molecule more than a given number of bonds apart.

Terms act within a molecule only (no neighbour list: the model's ``cutoff`` is only declared).
Displacements inside a periodic cell use the minimum image of the fractional coordinates, valid
while bonded distances stay below half the shortest cell width.
Forces and stress come from the shared autograd path (:func:`ase_mlmd.models.interface.evaluate`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ase_mlmd.batch import AtomsBatch
from ase_mlmd.errors import InvalidStructureError
from ase_mlmd.models.interface import EnergyModel, scatter_sum

#: prior terms by name, as the CLI (``--priors``) and cards write them
TERMS = ("bonds", "angles", "dihedrals", "repulsion")


def _index_buffer(values: np.ndarray | Sequence, width: int) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.int64).reshape(-1, width))


def _param(values: np.ndarray | Sequence | torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64).reshape(shape))


class BondedPrior(EnergyModel):
    """Harmonic bonds and angles, Fourier dihedrals and (σ/r)⁶ repulsion of one CG molecule.

    Args:
        n_beads: beads per molecule.
        bonds: (n_b, 2) bead indices; bond_k (n_b,) eV/Å², bond_r0 (n_b,) Å.
        angles: (n_a, 3) bead indices, apex in the middle; angle_k (n_a,) eV/rad²,
            angle_theta0 (n_a,) rad.
        dihedrals: (n_d, 4) bead indices; dihedral_cos, dihedral_sin (n_d, n_harmonics) eV.
        pairs: (n_p, 2) non-bonded bead indices; repulsion_sigma (n_p,) Å;
            repulsion_epsilon: eV (one value).
        cutoff: declared cutoff, Å (for a sum with a network; the prior needs no neighbours).
        species: pseudo atomic numbers the model accepts (None: any).
        dtype: floating dtype of the parameters.
    """

    def __init__(
        self,
        n_beads: int,
        bonds: np.ndarray | Sequence = (),
        bond_k: np.ndarray | Sequence = (),
        bond_r0: np.ndarray | Sequence = (),
        angles: np.ndarray | Sequence = (),
        angle_k: np.ndarray | Sequence = (),
        angle_theta0: np.ndarray | Sequence = (),
        dihedrals: np.ndarray | Sequence = (),
        dihedral_cos: np.ndarray | Sequence = (),
        dihedral_sin: np.ndarray | Sequence = (),
        pairs: np.ndarray | Sequence = (),
        repulsion_sigma: np.ndarray | Sequence = (),
        repulsion_epsilon: float = 0.0,
        cutoff: float = 0.0,
        species: Sequence[int] | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(cutoff=cutoff, species=species)
        self.n_beads = int(n_beads)
        self.register_buffer("bonds", _index_buffer(bonds, 2))
        self.register_buffer("angles", _index_buffer(angles, 3))
        self.register_buffer("dihedrals", _index_buffer(dihedrals, 4))
        self.register_buffer("pairs", _index_buffer(pairs, 2))
        n_b, n_a, n_d = len(self.bonds), len(self.angles), len(self.dihedrals)
        n_h = int(np.asarray(dihedral_cos).reshape(n_d, -1).shape[1]) if n_d else 0
        floats = {
            "bond_k": _param(bond_k, (n_b,)),
            "bond_r0": _param(bond_r0, (n_b,)),
            "angle_k": _param(angle_k, (n_a,)),
            "angle_theta0": _param(angle_theta0, (n_a,)),
            "dihedral_cos": _param(dihedral_cos, (n_d, n_h)),
            "dihedral_sin": _param(dihedral_sin, (n_d, n_h)),
            "repulsion_sigma": _param(repulsion_sigma, (len(self.pairs),)),
            "repulsion_epsilon": _param([repulsion_epsilon], (1,)),
        }
        for name, value in floats.items():
            self.register_buffer(name, value.to(dtype))
        for name, idx in (("bonds", self.bonds), ("angles", self.angles),
                          ("dihedrals", self.dihedrals), ("pairs", self.pairs)):  # fmt: skip
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.n_beads):
                raise ValueError(f"{name} refer to beads outside 0 … {self.n_beads - 1}")

    @property
    def dtype(self) -> torch.dtype:
        return self.bond_k.dtype

    def parameters_dict(self) -> dict[str, list]:
        """The topology and parameters as plain lists (for a card's ``[parameters]``)."""
        return {name: buf.tolist() for name, buf in self.named_buffers()}

    # ------------------------------------------------------------------ geometry
    def _molecule_starts(self, batch: AtomsBatch) -> torch.Tensor:
        """(M,) index of the first bead of every molecule in the batch."""
        sizes = batch.n_atoms
        bad = torch.nonzero(sizes % self.n_beads).flatten()
        if bad.numel():
            k = int(bad[0])
            raise InvalidStructureError(
                f"system {k} has {int(sizes[k])} beads, not a multiple of the {self.n_beads} "
                "beads of this prior's molecule; give whole molecules in the topology's bead order"
            )
        first = torch.cumsum(sizes, 0) - sizes
        local = torch.arange(len(batch.system_idx), device=batch.device) - first[batch.system_idx]
        return torch.nonzero(local % self.n_beads == 0).flatten()

    @staticmethod
    def _displacement(
        batch: AtomsBatch, i: torch.Tensor, j: torch.Tensor, system: torch.Tensor
    ) -> torch.Tensor:
        """(..., 3) x_j − x_i, minimum image along periodic axes."""
        d = batch.positions[j] - batch.positions[i]
        if not bool(batch.pbc.any()):
            return d
        cell = batch.cell[system]  # (..., 3, 3)
        pbc = batch.pbc[system].to(d.dtype)
        frac = torch.linalg.solve(cell.transpose(-1, -2), d.unsqueeze(-1)).squeeze(-1)
        frac = frac - torch.round(frac) * pbc
        return (frac.unsqueeze(-2) @ cell).squeeze(-2)

    def forward(self, batch: AtomsBatch) -> dict[str, torch.Tensor]:
        starts = self._molecule_starts(batch)
        system = batch.system_idx[starts]  # (M,)
        energy = torch.zeros(len(starts), dtype=batch.dtype, device=batch.device)

        def vec(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            # (M, n, 3) displacement bead b − bead a for local indices a, b (n,)
            ia, ib = starts[:, None] + a[None], starts[:, None] + b[None]
            return self._displacement(batch, ia, ib, system[:, None].expand_as(ia))

        if len(self.bonds):
            r = vec(self.bonds[:, 0], self.bonds[:, 1]).norm(dim=-1)
            energy = energy + (0.5 * self.bond_k * (r - self.bond_r0) ** 2).sum(-1)
        if len(self.angles):
            u = vec(self.angles[:, 1], self.angles[:, 0])
            v = vec(self.angles[:, 1], self.angles[:, 2])
            theta = bond_angle(u, v)
            energy = energy + (0.5 * self.angle_k * (theta - self.angle_theta0) ** 2).sum(-1)
        if len(self.dihedrals) and self.dihedral_cos.shape[1]:
            b0 = vec(self.dihedrals[:, 1], self.dihedrals[:, 0])
            b1 = vec(self.dihedrals[:, 1], self.dihedrals[:, 2])
            b2 = vec(self.dihedrals[:, 2], self.dihedrals[:, 3])
            phi = dihedral_angle(-b0, b1, b2)
            n = torch.arange(1, self.dihedral_cos.shape[1] + 1, dtype=phi.dtype, device=phi.device)
            nphi = phi.unsqueeze(-1) * n
            terms = self.dihedral_cos * torch.cos(nphi) + self.dihedral_sin * torch.sin(nphi)
            energy = energy + terms.sum((-1, -2))
        if len(self.pairs):
            r = vec(self.pairs[:, 0], self.pairs[:, 1]).norm(dim=-1)
            energy = energy + (self.repulsion_epsilon * (self.repulsion_sigma / r) ** 6).sum(-1)
        return {"energy": scatter_sum(energy, system, batch.n_systems)}


def bond_angle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(...,) angle between vectors u and v (..., 3), radians in [0, π] (atan2 form, smooth)."""
    cross = torch.linalg.cross(u, v).norm(dim=-1)
    return torch.atan2(cross, (u * v).sum(-1))


def dihedral_angle(b0: torch.Tensor, b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """(...,) dihedral angle of bond vectors b0 = x₁ − x₀, b1 = x₂ − x₁, b2 = x₃ − x₂ (..., 3),
    radians in (−π, π], IUPAC sign (positive clockwise looking along b1)."""
    n1 = torch.linalg.cross(b0, b1)
    n2 = torch.linalg.cross(b1, b2)
    m = torch.linalg.cross(n1, b1 / b1.norm(dim=-1, keepdim=True))
    return -torch.atan2((m * n2).sum(-1), (n1 * n2).sum(-1))
