"""Forces and virial stress of a pair potential from φ'(r), without autograd.

For a pair (i, j) with r_ij = x_j − x_i + shift and r = |r_ij|, the force on j is
``-φ'(r) r_ij / r`` and the force on i its opposite; the stress is
``(1/V) Σ_pairs φ'(r) r_ij ⊗ r_ij / r`` (ASE's sign: (1/V) dE/dε). The per-atom energy of an atom
is half of φ over its pairs, as on the autograd path.

On a half list each pair appears once and both atoms get its force; on a full list (every pair
both ways, the layer contract) each directed edge gives the force on its centre only, so the
reverse edge supplies the other half and the work per pair is the same.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ase_mlmd.batch import AtomsBatch, cartesian_shifts
from ase_mlmd.models.interface import scatter_sum, system_energy

PairTerms = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def pair_forces_and_stress(
    pair_terms: PairTerms,
    batch: AtomsBatch,
    stress: bool = False,
    half_list: bool = False,
    shift_vectors: torch.Tensor | None = None,
    flat_index: tuple[torch.Tensor, torch.Tensor] | None = None,
    centre_counts: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Evaluate a pair potential on ``batch`` from its energies and derivatives.

    The work is done component by component on (3, E) arrays (faster on CPU than (E, 3) rows:
    no strided reductions), gathering and scattering through flat (3N,) indices.

    Args:
        pair_terms: maps squared distances (E,) Å² to ``(φ, -φ'(r)/r)`` (E,), eV and eV/Å²,
            both zero beyond the cutoff (so a skin list may be passed as is).
        batch: the systems and their pairs.
        stress: also return the (B, 3, 3) stress, eV/Å^3 (fully periodic systems only).
        half_list: each pair is listed once (otherwise in both directions).
        shift_vectors: (E, 3) Cartesian image shifts, Å (computed from the batch if None);
            fastest as the transpose of a contiguous (3, E) tensor.
        flat_index: :func:`flat_component_index` of the two rows of ``batch.edge_index`` if
            already known.
        centre_counts: (N,) number of edges of each centre atom, given when the edges are
            sorted by centre: the centre-side sums are then segment sums (faster than a
            scatter on CPU).

    Returns:
        dict with energy (B,), energies (N,), forces (N, 3) and, if asked, stress (B, 3, 3).
    """
    with torch.no_grad():
        i, j = batch.edge_index
        n_atoms = batch.positions.shape[0]
        n_edges = i.shape[0]
        if shift_vectors is None:
            edge_system = batch.system_idx.index_select(0, i)
            shift_vectors = cartesian_shifts(batch.cell_shifts, batch.cell.detach(), edge_system)
        if flat_index is None:
            flat_index = (flat_component_index(i, n_atoms), flat_component_index(j, n_atoms))
        flat_i, flat_j = flat_index
        coordinates = batch.positions.detach().t().reshape(-1)  # (3N,): x..., y..., z...
        vectors = coordinates.index_select(0, flat_j)
        vectors -= coordinates.index_select(0, flat_i)
        vectors = vectors.view(3, n_edges)
        vectors += shift_vectors.t()
        x, y, z = vectors.unbind(0)
        r2 = torch.addcmul(torch.addcmul(x * x, y, y), z, z)
        phi, scaled = pair_terms(r2)
        pair_forces = vectors * scaled  # (3, E): force on j
        half_phi = 0.5 * phi
        if centre_counts is None:
            energies = scatter_sum(half_phi, i, n_atoms)
            forces = coordinates.new_zeros(3 * n_atoms)
            forces.index_add_(0, flat_i, pair_forces.reshape(-1), alpha=-1.0)
        else:
            energies = torch.segment_reduce(half_phi, "sum", lengths=centre_counts)
            lengths = centre_counts.expand(3, n_atoms).contiguous()
            forces = torch.segment_reduce(pair_forces, "sum", lengths=lengths, axis=1)
            forces = forces.reshape(-1).neg_()
        if half_list:
            energies.index_add_(0, j, half_phi)
            forces.index_add_(0, flat_j, pair_forces.reshape(-1))
        forces = forces.view(3, n_atoms).t()
        out = {"energy": system_energy(batch, energies), "energies": energies, "forces": forces}
        if stress:
            weight = -1.0 if half_list else -0.5  # each pair once, or twice
            if batch.n_systems == 1:
                virial = (pair_forces @ vectors.t())[None]
            else:
                outer = (pair_forces[:, None, :] * vectors[None, :, :]).reshape(9, n_edges)
                edge_system = batch.system_idx.index_select(0, i)
                virial = scatter_sum(outer.t(), edge_system, batch.n_systems).view(-1, 3, 3)
            volumes = torch.linalg.det(batch.cell.detach()).abs()
            out["stress"] = virial * weight / volumes[:, None, None]
    return out


def flat_component_index(atom_index: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """(3E,) positions ``c N + a`` of the components c of atoms a (E,) in a flat (3N,) array
    that holds all x, then all y, then all z."""
    return torch.cat([atom_index, atom_index + n_atoms, atom_index + 2 * n_atoms])
