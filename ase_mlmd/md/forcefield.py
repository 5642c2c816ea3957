"""A model plus a Verlet neighbor list with a skin: forces for a batched MD state.

The list is built at ``cutoff + skin`` and reused while no atom has moved more than ``skin/2``
since the last build (then no pair can have entered the cutoff unseen). Each call keeps only the
pairs inside ``cutoff``, so the model sees exactly the pairs a fresh list would give. The
rebuild decision is taken for the whole batch: if any atom of any system moved too far, or a
cell or the set of atoms changed, everything is rebuilt — no pair is ever dropped.

Between builds a pair's distance changes by at most ``skin`` (each atom moves at most
``skin/2``). So a pair closer than ``cutoff - skin`` at the build stays inside the cutoff until
the next build, and only the pairs of the shell between ``cutoff - skin`` and ``cutoff + skin``
are measured at each call; when none of them crossed the cutoff since the previous call, the
previous call's list is returned as is.

On CPU, a large batch is evaluated in groups of consecutive systems of about
:data:`CPU_CHUNK_EDGES` edges each (a system is never split): systems do not interact, so the
results are those of one call, while the tensors of each group stay small enough for the CPU
caches (for an 864-atom Lennard-Jones box, 64 replicas in one call take about twice as long per
atom as one replica). On a GPU the whole batch is one call.

Analytic pair potentials (``model.direct_forces``, e.g. Lennard-Jones) take a faster path when
no graph is wanted: the list is built once per rebuild as a *half* list (each pair once) with
its Cartesian image shifts, and every call hands the whole skin list to the potential, which
gives φ and φ' zero beyond the cutoff: no autograd graph, no filtering, and no host
synchronisation between rebuilds except the rebuild decision itself (one per call). On the CPU,
a potential with a row in the compiled pair loop (:mod:`ase_mlmd.models.pair_kernel`: Lennard-
Jones, Morse, Yukawa, soft sphere and species-pair mixtures of them) is evaluated by that loop,
on the half list as built (the compiled cell list for large periodic cells, else vesin's; no
filtering, sorting or Cartesian shifts at the rebuild).
"""

from __future__ import annotations

import torch

from ase_mlmd.batch import AtomsBatch, cartesian_shifts, check_cutoff_images
from ase_mlmd.errors import DeviceMismatchError, UnsupportedSpeciesError
from ase_mlmd.md.state import MDState
from ase_mlmd.models.backends import as_energy_model
from ase_mlmd.models.interface import EnergyModel, evaluate
from ase_mlmd.models.pair_direct import flat_component_index
from ase_mlmd.models.pair_kernel import KernelTable, PairList, kernel_evaluate
from ase_mlmd.neighbors import batch_neighbors

#: on CPU, systems are evaluated in groups of about this many edges ("auto"). Measured on a
#: 2-core CPU (benchmarks/md_throughput.py models): SchNet (128 features) runs fastest at 2-4k
#: edges per call, NequIP (32 features, 3 layers; a larger fixed cost per call) at 4-8k, and
#: Lennard-Jones one 864-atom box (67k edges) per call rather than several at once
CPU_CHUNK_EDGES = 6144
PROPERTIES = ("energy", "forces", "energies")


class ForceField:
    """Evaluates an energy model on :class:`MDState` batches, with a skin neighbor list.

    Args:
        model: an energy model (or a nequip / schnetpack model, wrapped automatically).
        skin: Verlet skin, Å; 0 rebuilds the list at every call.
        chunk_edges: evaluate a batch of E edges in ceil(E / chunk_edges) groups of
            consecutive systems with about equal numbers of edges (a system is never split);
            ``None``: one call for the whole batch; ``"auto"``: :data:`CPU_CHUNK_EDGES` on
            CPU, one call on other devices.

    Attributes:
        n_builds: how many times the neighbor list was built (for monitoring / tests).
    """

    def __init__(
        self, model: torch.nn.Module, skin: float = 1.0, chunk_edges: int | str | None = "auto"
    ) -> None:
        if skin < 0:
            raise ValueError(f"skin must be >= 0 Å, got {skin}")
        if chunk_edges != "auto" and chunk_edges is not None:
            if isinstance(chunk_edges, str) or int(chunk_edges) < 1:
                raise ValueError(f"chunk_edges must be 'auto', None or >= 1, got {chunk_edges!r}")
            chunk_edges = int(chunk_edges)
        self.chunk_edges = chunk_edges
        self._plan: tuple[torch.Tensor, int, list[_Chunk]] | None = None
        self.model: EnergyModel = as_energy_model(model)
        self.skin = float(skin)
        self.n_builds = 0
        self._reference: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._edges: tuple[torch.Tensor, torch.Tensor] | None = None
        self._shell: _Shell | None = None
        self._current: tuple[torch.Tensor, torch.Tensor] | None = None
        self._current_inside: torch.Tensor | None = None
        self._half: _HalfList | None = None

    @property
    def cutoff(self) -> float:
        return self.model.cutoff

    def check(self, state: MDState) -> None:
        """Raise before any step if the model cannot evaluate the state (species, device).

        A model on another device than the state is refused rather than followed: a model
        without tensors (an analytic potential) would otherwise compute wherever the state is,
        e.g. on the CPU when it was moved to CUDA.
        """
        try:
            self.model.check_species(state.numbers)
        except UnsupportedSpeciesError as err:
            raise UnsupportedSpeciesError(f"cannot run MD with this model: {err}") from None
        counts = torch.bincount(state.system_idx, minlength=state.n_systems).tolist()
        for k, (n, cell, pbc) in enumerate(zip(counts, state.cell, state.pbc, strict=True)):
            check_cutoff_images(
                n, cell.detach().cpu().numpy(), pbc.cpu().numpy(), self.cutoff + self.skin,
                f"system {k}",
            )  # fmt: skip
        model_device = self.model.device
        if model_device.type != state.device.type:
            raise DeviceMismatchError(
                f"the model is on {model_device} but the MD state is on {state.device}; move "
                f"one of them (model.to({str(state.device)!r}) or state.to({str(model_device)!r}))"
            )

    def reset(self) -> None:
        """Forget the neighbor list (the next call rebuilds it)."""
        self._reference = None
        self._edges = None
        self._shell = None
        self._current = None
        self._current_inside = None
        self._plan = None
        self._half = None

    def _needs_build(self, state: MDState) -> bool:
        if self._reference is None or self.skin == 0:
            return True
        positions, cell, system_idx = self._reference
        if positions.shape != state.positions.shape:
            return True
        if state.system_idx is not system_idx and not torch.equal(system_idx, state.system_idx):
            return True
        # one host synchronisation: cell change and displacement decided together on device
        moved = (state.positions.detach() - positions).square().sum(dim=1).max()
        rebuild = (moved > (0.5 * self.skin) ** 2) | (cell != state.cell.detach()).any()
        return bool(rebuild)

    def _kernel_table(self, state: MDState) -> KernelTable | None:
        """The model's rows for the compiled pair loop when it runs this state, or None."""
        table = getattr(self.model, "kernel_table", None)
        if table is None or state.device.type != "cpu":
            return None
        if self.model.dtype not in (torch.float32, torch.float64):
            return None
        return table()

    def _build_half(self, state: MDState, compiled: bool = False) -> None:
        """Build the half list at ``cutoff + skin`` (for the analytic pair path); for the
        ``compiled`` pair loop only the pairs and their integer shifts are needed."""
        positions = state.positions.detach()
        cell = state.cell.detach()
        if compiled:
            edge_index, shifts = batch_neighbors(
                positions, cell, state.pbc, state.system_idx, self.cutoff + self.skin,
                full_list=False,
            )  # fmt: skip
            pairs = PairList.from_tensors(edge_index, shifts)
            self._half = _HalfList(edge_index, shifts, pairs=pairs)
            self._after_build(positions, cell, state)
            return
        edge_index, shifts = batch_neighbors(
            positions, cell, state.pbc, state.system_idx, self.cutoff + self.skin
        )
        i, j = edge_index
        s0, s1, s2 = shifts.unbind(dim=1)
        # each unordered pair once: i < j, or an atom and its own image with the first
        # nonzero component of the shift positive
        positive = (s0 > 0) | ((s0 == 0) & ((s1 > 0) | ((s1 == 0) & (s2 > 0))))
        keep = (i < j) | ((i == j) & positive)
        edge_index = edge_index[:, keep]
        shifts = shifts[keep]
        # sorted by centre: the centre-side sums become segment sums
        order = torch.sort(edge_index[0], stable=True).indices
        edge_index = edge_index[:, order]
        shifts = shifts[order]
        edge_system = state.system_idx.index_select(0, edge_index[0])
        n_atoms = positions.shape[0]
        self._half = _HalfList(
            edge_index=edge_index,
            shifts=shifts,
            # (E, 3) view of a contiguous (3, E) array: the layout the pair kernel works in
            shift_vectors=cartesian_shifts(shifts, cell, edge_system).t().contiguous().t(),
            flat_index=(
                flat_component_index(edge_index[0], n_atoms),
                flat_component_index(edge_index[1], n_atoms),
            ),
            centre_counts=torch.bincount(edge_index[0], minlength=n_atoms),
        )
        self._after_build(positions, cell, state)

    def _after_build(self, positions: torch.Tensor, cell: torch.Tensor, state: MDState) -> None:
        self._reference = (positions.clone(), cell.clone(), state.system_idx)
        self._edges = None
        self._shell = None
        self._current = None
        self._plan = None
        self.n_builds += 1

    def _direct(self, state: MDState) -> MDState:
        """Energy and forces of an analytic pair potential on the half skin list."""
        table = self._kernel_table(state)
        compiled = table is not None
        half = self._half
        if half is None or half.compiled != compiled or self._needs_build(state):
            self._build_half(state, compiled)
        half = self._half
        model_dtype = self.model.dtype
        positions = state.positions.detach().to(model_dtype)
        cell = state.cell.detach().to(model_dtype)
        if compiled:
            out = kernel_evaluate(
                table, positions, state.numbers, cell, state.system_idx, state.n_systems,
                half.pairs, half_list=True,
            )  # fmt: skip
        else:
            shift_vectors = half.shift_vectors
            if model_dtype != state.dtype:
                shift_vectors = shift_vectors.t().to(model_dtype).t()
            batch = AtomsBatch(
                positions, state.numbers, cell, state.pbc, state.system_idx, half.edge_index,
                half.shifts,
            )  # fmt: skip
            out = self.model.direct_evaluate(
                batch,
                ("energy", "forces"),
                half_list=True,
                shift_vectors=shift_vectors,
                flat_index=half.flat_index,
                # segment sums on CPU; on a GPU the scatter (atomic adds) needs no host work
                centre_counts=half.centre_counts if positions.device.type == "cpu" else None,
            )
        if model_dtype != state.dtype:
            out = {k: v.to(state.dtype) for k, v in out.items()}
        return state.replace(forces=out["forces"], energy=out["energy"], energies=out["energies"])

    def _build(self, state: MDState) -> None:
        """Build the list at ``cutoff + skin`` and sort its pairs into sure ones and the shell."""
        positions = state.positions.detach()
        cell = state.cell.detach()
        edge_index, shifts = batch_neighbors(
            positions, cell, state.pbc, state.system_idx, self.cutoff + self.skin
        )
        self._edges = (edge_index, shifts)
        self._half = None
        self._reference = (positions.clone(), cell.clone(), state.system_idx)
        self.n_builds += 1
        self._current = None
        if self.skin == 0:
            self._shell = None
            return
        shift_vectors = None
        if bool(shifts.any()):
            shift_vectors = cartesian_shifts(shifts, cell, state.system_idx[edge_index[0]])
        d2 = _squared_lengths(positions, edge_index, shift_vectors)
        sure_radius = self.cutoff - self.skin
        # a relative margin well above rounding: sure pairs must stay inside in this dtype too
        margin = 1.0 - 1000.0 * torch.finfo(d2.dtype).eps
        sure = (
            d2 < (sure_radius * margin) ** 2
            if sure_radius > 0
            else torch.zeros_like(d2, dtype=torch.bool)
        )
        index = (~sure).nonzero().reshape(-1)
        self._shell = _Shell(
            sure=sure,
            index=index,
            edge_index=edge_index.index_select(1, index),
            shift_vectors=None if shift_vectors is None else shift_vectors[index],
        )

    def neighbors(self, state: MDState) -> tuple[torch.Tensor, torch.Tensor]:
        """Edges (2, E) and integer cell shifts (E, 3) of all pairs within the cutoff."""
        if self._edges is None or self._needs_build(state):
            self._build(state)
        edge_index, shifts = self._edges
        if self.skin == 0:
            return edge_index, shifts
        shell = self._shell
        with torch.no_grad():
            d2 = _squared_lengths(state.positions.detach(), shell.edge_index, shell.shift_vectors)
            inside = d2 < self.cutoff**2
        if self._current is not None and torch.equal(inside, self._current_inside):
            return self._current
        keep = shell.sure.clone()
        keep[shell.index] = inside
        self._current = (edge_index[:, keep], shifts[keep])
        self._current_inside = inside
        return self._current

    def __call__(self, state: MDState, create_graph: bool = False) -> MDState:
        """The state with ``forces``, ``energy`` (and ``energies`` if given) at its positions.

        Args:
            state: the batched state.
            create_graph: keep the graph through the forces (differentiable MD).
        """
        if not create_graph and getattr(self.model, "direct_forces", False):
            return self._direct(state)
        edge_index, shifts = self.neighbors(state)
        chunks = self._chunks(state, edge_index, shifts)
        if chunks is None:
            batch = state.atoms_batch(edge_index, shifts)
            out = evaluate(self.model, batch, PROPERTIES, create_graph=create_graph)
            energies = out.get("energies")
        else:
            outs = [
                evaluate(self.model, c.batch(state), PROPERTIES, create_graph=create_graph)
                for c in chunks
            ]
            out = {key: torch.cat([o[key] for o in outs]) for key in ("energy", "forces")}
            has_energies = all("energies" in o for o in outs)
            energies = torch.cat([o["energies"] for o in outs]) if has_energies else None
        return state.replace(forces=out["forces"], energy=out["energy"], energies=energies)

    def _chunk_limit(self, state: MDState) -> int | None:
        if self.chunk_edges == "auto":
            return CPU_CHUNK_EDGES if state.device.type == "cpu" else None
        return self.chunk_edges

    def _chunks(
        self, state: MDState, edge_index: torch.Tensor, shifts: torch.Tensor
    ) -> list[_Chunk] | None:
        """Groups of consecutive systems of about ``chunk_edges`` edges, or None for one call.

        The plan is kept while the neighbor list (the same tensor) is returned again.
        """
        limit = self._chunk_limit(state)
        if limit is None or edge_index.shape[1] <= limit or state.n_systems == 1:
            return None
        if self._plan is not None and self._plan[0] is edge_index and self._plan[1] == limit:
            return self._plan[2]
        device = state.device
        bounds = torch.arange(state.n_systems + 1, device=device)
        # edges are grouped by system in batch order (batch_neighbors; filtering keeps order)
        edge_system = state.system_idx.index_select(0, edge_index[0])
        edge_bounds = torch.searchsorted(edge_system, bounds)
        atom_bounds = torch.searchsorted(state.system_idx, bounds).tolist()
        # balanced groups: cut at the system boundaries nearest to multiples of E / n_groups
        n_edges = edge_index.shape[1]
        n_groups = -(-n_edges // limit)
        targets = torch.arange(1, n_groups, device=device) * (n_edges / n_groups)
        cuts = torch.searchsorted(edge_bounds.to(targets.dtype), targets).tolist()
        cuts = sorted({0, state.n_systems, *(min(max(c, 1), state.n_systems) for c in cuts)})
        edge_bounds = edge_bounds.tolist()
        chunks = []
        for first, end in zip(cuts[:-1], cuts[1:], strict=True):
            atoms = slice(atom_bounds[first], atom_bounds[end])
            edges = slice(edge_bounds[first], edge_bounds[end])
            chunks.append(
                _Chunk(
                    systems=slice(first, end),
                    atoms=atoms,
                    system_idx=state.system_idx[atoms] - first,
                    edge_index=edge_index[:, edges] - atoms.start,
                    shifts=shifts[edges],
                )
            )
        if len(chunks) == 1:
            chunks = None
        self._plan = (edge_index, limit, chunks)
        return chunks


class _Chunk:
    """A group of consecutive systems of a batch and their part of the neighbor list."""

    __slots__ = ("systems", "atoms", "system_idx", "edge_index", "shifts")

    def __init__(
        self,
        systems: slice,
        atoms: slice,
        system_idx: torch.Tensor,
        edge_index: torch.Tensor,
        shifts: torch.Tensor,
    ) -> None:
        self.systems = systems
        self.atoms = atoms
        self.system_idx = system_idx  # numbered from 0 within the group
        self.edge_index = edge_index  # atom indices from 0 within the group
        self.shifts = shifts

    def batch(self, state: MDState) -> AtomsBatch:
        """The model input for this group of ``state``'s systems."""
        return AtomsBatch(
            state.positions[self.atoms],
            state.numbers[self.atoms],
            state.cell[self.systems],
            state.pbc[self.systems],
            self.system_idx,
            self.edge_index,
            self.shifts,
        )


class _HalfList:
    """A half skin list: each pair within ``cutoff + skin`` once, with its image shift; the
    torch pair path also keeps the Cartesian shifts, flat component indices and centre counts
    (``compiled``: a list for the compiled loop, which needs none of them)."""

    __slots__ = ("edge_index", "shifts", "shift_vectors", "flat_index", "centre_counts", "pairs")

    def __init__(
        self,
        edge_index: torch.Tensor,
        shifts: torch.Tensor,
        shift_vectors: torch.Tensor | None = None,
        flat_index: tuple[torch.Tensor, torch.Tensor] | None = None,
        centre_counts: torch.Tensor | None = None,
        pairs: PairList | None = None,
    ) -> None:
        self.edge_index = edge_index  # (2, E)
        self.pairs = pairs  # the compact pairs of the compiled loop
        self.shifts = shifts  # (E, 3) integer image shifts
        self.shift_vectors = shift_vectors  # (E, 3) Å, at the cell of the build
        self.flat_index = flat_index  # ((3E,), (3E,)) flat force components of i and j
        self.centre_counts = centre_counts  # (N,) edges per centre (edges sorted by centre)

    @property
    def compiled(self) -> bool:
        return self.pairs is not None


class _Shell:
    """The pairs of a skin list that may cross the cutoff before the next build."""

    __slots__ = ("sure", "index", "edge_index", "shift_vectors")

    def __init__(
        self,
        sure: torch.Tensor,
        index: torch.Tensor,
        edge_index: torch.Tensor,
        shift_vectors: torch.Tensor | None,
    ) -> None:
        self.sure = sure  # (E,) bool: inside the cutoff until the next build
        self.index = index  # (S,) positions of the shell pairs in the list
        self.edge_index = edge_index  # (2, S)
        self.shift_vectors = shift_vectors  # (S, 3) Å, or None when every shift is zero


def _squared_lengths(
    positions: torch.Tensor, edge_index: torch.Tensor, shift_vectors: torch.Tensor | None
) -> torch.Tensor:
    """(E,) squared edge lengths |x_j - x_i + shift|², Å²."""
    vectors = positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0])
    if shift_vectors is not None:
        vectors = vectors + shift_vectors
    return vectors.square().sum(dim=1)
