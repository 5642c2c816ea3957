"""A faster forward pass of schnetpack's SchNet representation, with the model's own modules.

What it replicates: ``schnetpack.representation.SchNet.forward`` (schnetpack 2.1) and
``schnetpack.atomistic.PairwiseDistances``. Distances ``d_ij = |R_j - R_i + offset_ij|``, the
radial basis ``f_ij``, the cutoff ``rcut_ij``, the nuclear embedding ``x``, then for each
interaction block ``x <- x + f2out(Σ_j in2f(x)_j * filter_network(f_ij) * rcut_ij)``. Every
learned or configurable part — embedding, radial basis, cutoff function, ``in2f``,
``filter_network``, ``f2out`` (with their activations) — is the model's own module, called as
schnetpack calls it; nothing is copied or re-parametrised, so the weights are the model's.

Why it is faster, two changes, both exact:

1. Gathers by ``index_select``. schnetpack gathers the neighbor features with advanced
   indexing, ``x[idx_j]`` (and ``R[idx_j]`` in ``PairwiseDistances``), whose backward is an
   accumulating ``index_put_``: on CPU that took about a fifth of a batched SchNet MD step
   (forces need that backward at every step). ``index_select``'s backward is ``index_add_``,
   several times faster. The sums over neighbors are ``index_add``, as in schnetpack.
2. One filter per pair. The filter ``filter_network(f(d_ij)) * rcut(d_ij)`` depends on the
   distance only, and a full neighbor list holds every pair twice, (i, j, s) and (j, i, -s),
   with bitwise equal distances. When :func:`symmetric_pairs` confirms that the list is such a
   full list, distances, radial basis, cutoff and the filter networks (the bulk of SchNet's
   work: an MLP per edge and interaction, and its backward) are evaluated once per pair and
   used for both directions of the messages. The energy is the same function of the positions;
   only the order of floating-point sums differs. A list that is not full (a half list, a
   filtered one) gets one filter per edge, as in schnetpack.

Energies, forces and stress agree with schnetpack's forward to rounding (about 1e-15 relative
in float64, tests/models/test_schnet_fast.py).

When it is used: :func:`fast_schnet_supported` accepts a representation that is exactly
``schnetpack.representation.SchNet`` (not a subclass, which may override ``forward``) without
electronic embeddings, whose interaction blocks are exactly ``SchNetInteraction``. Anything else
(PaiNN, SO3net, a SchNet with charge/spin embeddings, custom subclasses) runs schnetpack's own
``forward``. :class:`~ase_mlmd.models.backends.schnetpack.SchNetPackModel` asks for filters per
pair only when its input modules leave the neighbor list as it gave it (``PairwiseDistances``,
``Strain``; not e.g. ``FilterShortRange``).
"""

from __future__ import annotations

import torch

#: where SchNet leaves the atom features (as ``SchNet.forward`` does)
REPRESENTATION_KEY = "scalar_representation"


def fast_schnet_supported(representation: torch.nn.Module) -> bool:
    """Whether :func:`schnet_representation` reproduces ``representation``'s forward."""
    from schnetpack.representation import SchNet
    from schnetpack.representation.schnet import SchNetInteraction

    if type(representation) is not SchNet:
        return False
    if len(getattr(representation, "electronic_embeddings", ())) > 0:
        return False
    blocks = getattr(representation, "interactions", None)
    if not isinstance(blocks, torch.nn.ModuleList):
        return False
    return all(type(block) is SchNetInteraction for block in blocks)


def is_pairwise_distances(module: torch.nn.Module) -> bool:
    """Whether ``module`` is exactly schnetpack's ``PairwiseDistances`` input module."""
    from schnetpack.atomistic import PairwiseDistances

    return type(module) is PairwiseDistances


def pairwise_vectors(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``PairwiseDistances``: ``Rij = R[idx_j] - R[idx_i] + offsets``, gathered by index_select."""
    from schnetpack import properties as p

    positions = inputs[p.R]
    idx_i, idx_j = inputs[p.idx_i].long(), inputs[p.idx_j].long()
    vectors = positions.index_select(0, idx_j) - positions.index_select(0, idx_i)
    inputs[p.Rij] = vectors + inputs[p.offsets]
    return inputs


#: the last :func:`symmetric_pairs` answer with the tensors it was computed from (kept alive,
#: so that their memory cannot be reused by another list while the entry stands)
_last_pairs: list = []


def _signature(t: torch.Tensor) -> tuple:
    """Memory, layout and version (in-place changes count up) of a tensor — no device sync."""
    return (t.device, t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, t._version)


def symmetric_pairs(
    idx_i: torch.Tensor, idx_j: torch.Tensor, cell_shifts: torch.Tensor, n_atoms: int
) -> torch.Tensor | None:
    """:func:`find_symmetric_pairs`, remembered for the last list: the MD engine passes the same
    list at every step between rebuilds, and finding the pairs synchronises with the device."""
    inputs = (idx_i, idx_j, cell_shifts)
    signature = (n_atoms, *(_signature(t) for t in inputs))
    if _last_pairs and _last_pairs[0] == signature:
        return _last_pairs[2]
    pairs = find_symmetric_pairs(idx_i, idx_j, cell_shifts, n_atoms)
    _last_pairs[:] = [signature, inputs, pairs]
    return pairs


def find_symmetric_pairs(
    idx_i: torch.Tensor, idx_j: torch.Tensor, cell_shifts: torch.Tensor, n_atoms: int
) -> torch.Tensor | None:
    """One edge of each pair of a full neighbor list, or None if the list is not one.

    Edge (i, j, s) and edge (j, i, -s) are the two directions of a pair. Returns the indices
    (H,) of the edges that are the smaller of their pair by the key (i, j, s) when every edge's
    reverse is in the list (as a multiset, so E = 2H) and no edge is its own reverse; None
    otherwise (a half list, a filtered list, keys that would overflow int64).

    Args:
        idx_i, idx_j: (E,) centre and neighbor atoms.
        cell_shifts: (E, 3) integer image shifts.
        n_atoms: number of atoms N (indices are below it).
    """
    n_edges = idx_i.numel()
    if n_edges == 0 or n_edges % 2:
        return None
    reach = int(cell_shifts.abs().max()) if cell_shifts.numel() else 0
    base = 2 * reach + 1
    if n_atoms * n_atoms * base**3 >= 2**62:
        return None
    s = cell_shifts.long() + reach
    r = reach - cell_shifts.long()
    shift_key = (s[:, 0] * base + s[:, 1]) * base + s[:, 2]
    reverse_shift_key = (r[:, 0] * base + r[:, 1]) * base + r[:, 2]
    cube = base**3
    key = (idx_i * n_atoms + idx_j) * cube + shift_key
    reverse_key = (idx_j * n_atoms + idx_i) * cube + reverse_shift_key
    if not torch.equal(torch.sort(key).values, torch.sort(reverse_key).values):
        return None
    if bool((key == reverse_key).any()):
        return None
    return (key < reverse_key).nonzero().reshape(-1)


def _interaction(
    block: torch.nn.Module,
    x: torch.Tensor,
    w_ij: torch.Tensor,
    source: torch.Tensor,
    target: torch.Tensor,
) -> torch.Tensor:
    """``SchNetInteraction.forward`` without its filter: gather by index_select, sum by index_add.

    ``w_ij`` (H, F) is the cut filter of H pairs, used for both directions when
    ``source``/``target`` list 2H edges (then the messages are (2, H, F)).
    """
    h = block.in2f(x)
    gathered = h.index_select(0, source)
    messages = (gathered.view(-1, *w_ij.shape) * w_ij).view(gathered.shape)
    summed = h.new_zeros(h.shape).index_add(0, target, messages)
    return block.f2out(summed)


def schnet_representation(
    representation: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    pairs: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``SchNet.forward(inputs)``: sets ``inputs["scalar_representation"]`` (N, n_atom_basis).

    Args:
        representation: a SchNet that passes :func:`fast_schnet_supported`.
        inputs: schnetpack's input dict with ``Rij``, ``idx_i``, ``idx_j``.
        pairs: from :func:`symmetric_pairs` for these edges: the filters are then computed once
            per pair and used for both directions; None: once per edge.
    """
    from schnetpack import properties as p

    idx_i, idx_j = inputs[p.idx_i], inputs[p.idx_j]
    r_ij = inputs[p.Rij]
    if pairs is not None:
        first, second = idx_i.index_select(0, pairs), idx_j.index_select(0, pairs)
        r_ij = r_ij.index_select(0, pairs)
        source, target = torch.cat([second, first]), torch.cat([first, second])
    else:
        source, target = idx_j, idx_i
    d_ij = torch.norm(r_ij, dim=1)
    f_ij = representation.radial_basis(d_ij)
    rcut_ij = representation.cutoff_fn(d_ij)
    x = representation.embedding(inputs[p.Z])
    for block in representation.interactions:
        w_ij = block.filter_network(f_ij) * rcut_ij[:, None]
        x = x + _interaction(block, x, w_ij, source, target)
    inputs[REPRESENTATION_KEY] = x
    return inputs
