"""A model plus a Verlet neighbor list with a skin: forces for a batched MD state.

The list is built at ``cutoff + skin`` and reused while no atom has moved more than ``skin/2``
since the last build (then no pair can have entered the cutoff unseen). Each call keeps only the
pairs inside ``cutoff``, so the model sees exactly the pairs a fresh list would give. The
rebuild decision is taken for the whole batch: if any atom of any system moved too far, or a
cell or the set of atoms changed, everything is rebuilt — no pair is ever dropped.
"""

from __future__ import annotations

import torch

from ase_mlmd.errors import UnsupportedSpeciesError
from ase_mlmd.md.state import MDState
from ase_mlmd.models.backends import as_energy_model
from ase_mlmd.models.interface import EnergyModel, evaluate
from ase_mlmd.neighbors import batch_neighbors


class ForceField:
    """Evaluates an energy model on :class:`MDState` batches, with a skin neighbor list.

    Args:
        model: an energy model (or a nequip / schnetpack model, wrapped automatically).
        skin: Verlet skin, Å; 0 rebuilds the list at every call.

    Attributes:
        n_builds: how many times the neighbor list was built (for monitoring / tests).
    """

    def __init__(self, model: torch.nn.Module, skin: float = 1.0) -> None:
        if skin < 0:
            raise ValueError(f"skin must be >= 0 Å, got {skin}")
        self.model: EnergyModel = as_energy_model(model)
        self.skin = float(skin)
        self.n_builds = 0
        self._reference: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._edges: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def cutoff(self) -> float:
        return self.model.cutoff

    def check(self, state: MDState) -> None:
        """Raise before any step if the model cannot evaluate the state (species, device)."""
        try:
            self.model.check_species(state.numbers)
        except UnsupportedSpeciesError as err:
            raise UnsupportedSpeciesError(f"cannot run MD with this model: {err}") from None

    def reset(self) -> None:
        """Forget the neighbor list (the next call rebuilds it)."""
        self._reference = None
        self._edges = None

    def _needs_build(self, state: MDState) -> bool:
        if self._reference is None or self.skin == 0:
            return True
        positions, cell, system_idx = self._reference
        if positions.shape != state.positions.shape or not torch.equal(
            system_idx, state.system_idx
        ):
            return True
        if not torch.equal(cell, state.cell.detach()):
            return True
        moved = (state.positions.detach() - positions).square().sum(dim=1).max()
        return bool(moved > (0.5 * self.skin) ** 2)

    def neighbors(self, state: MDState) -> tuple[torch.Tensor, torch.Tensor]:
        """Edges (2, E) and integer cell shifts (E, 3) of all pairs within the cutoff."""
        if self._needs_build(state):
            positions = state.positions.detach()
            self._edges = batch_neighbors(
                positions,
                state.cell.detach(),
                state.pbc,
                state.system_idx,
                self.cutoff + self.skin,
            )
            self._reference = (positions.clone(), state.cell.detach().clone(), state.system_idx)
            self.n_builds += 1
        edge_index, shifts = self._edges
        if self.skin == 0:
            return edge_index, shifts
        with torch.no_grad():
            i, j = edge_index
            cell = state.cell.detach()
            vectors = (
                state.positions.detach()[j]
                - state.positions.detach()[i]
                + torch.einsum("ek,ekl->el", shifts.to(cell.dtype), cell[state.system_idx[i]])
            )
            inside = vectors.square().sum(dim=1) < self.cutoff**2
        return edge_index[:, inside], shifts[inside]

    def __call__(self, state: MDState, create_graph: bool = False) -> MDState:
        """The state with ``forces``, ``energy`` (and ``energies`` if given) at its positions.

        Args:
            state: the batched state.
            create_graph: keep the graph through the forces (differentiable MD).
        """
        edge_index, shifts = self.neighbors(state)
        batch = state.atoms_batch(edge_index, shifts)
        properties = ("energy", "forces", "energies")
        out = evaluate(self.model, batch, properties, create_graph=create_graph)
        return state.replace(
            forces=out["forces"], energy=out["energy"], energies=out.get("energies")
        )
