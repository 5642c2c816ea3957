"""Monitors: per-replica stop conditions checked after every MD step.

A monitor looks at a batched :class:`~ase_mlmd.md.state.MDState` and returns a (B,) bool tensor,
True for each system that has collapsed. Everything is vectorized in torch on the state's
device; the MD driver (:func:`ase_mlmd.md.simulate`) does one device → host transfer per step
for all monitors together, takes the collapsed systems out of the batch and records which
monitor fired and when. The other systems continue.

Monitors never change the state. ``measure(state)`` gives the monitored quantity per system
(for the record of a collapse), ``prepare(state)`` validates a monitor against the starting
state before any step runs, and ``describe()`` is a short text that identifies the monitor and
its settings (it goes into the checkpoint fingerprint).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from ase_mlmd.md.state import MDState


def _any_per_system(atom_flags: torch.Tensor, state: MDState) -> torch.Tensor:
    """(B,) bool: does any atom of the system have its flag set? ``atom_flags``: (N,) bool."""
    counts = torch.zeros(state.n_systems, dtype=torch.int64, device=state.device)
    return counts.index_add_(0, state.system_idx, atom_flags.to(torch.int64)) > 0


def _max_per_system(values: torch.Tensor, state: MDState) -> torch.Tensor:
    """(B,) maximum of the per-atom ``values`` (N,) over each system's atoms."""
    out = torch.full((state.n_systems,), -torch.inf, dtype=values.dtype, device=state.device)
    return out.scatter_reduce(0, state.system_idx, values, reduce="amax", include_self=True)


class Monitor:
    """Base class of stop conditions. Subclasses implement :meth:`measure` and
    :meth:`__call__`; :meth:`prepare` may validate the monitor against the starting state."""

    #: name recorded for a replica this monitor stopped
    name: str = "Monitor"

    def prepare(self, state: MDState) -> None:
        """Raise (before any step) if this monitor cannot watch ``state``."""

    def measure(self, state: MDState) -> torch.Tensor:
        """(B,) the monitored quantity per system (float)."""
        raise NotImplementedError

    def __call__(self, state: MDState) -> torch.Tensor:
        """(B,) bool, True where the system has collapsed."""
        raise NotImplementedError

    def describe(self) -> str:
        """Name and settings, e.g. ``"MaxForce(limit=10.0)"``."""
        return self.name

    def explain(self, value: float) -> str:
        """Why a system with monitored quantity ``value`` was stopped, in words."""
        return f"{self.name}: {value:.6g}"


class NaNMonitor(Monitor):
    """Stops a system whose positions, momenta, forces or energy contain NaN or inf.

    Always on in :func:`~ase_mlmd.md.simulate` (checked first). ``measure`` is the number of
    non-finite values in the system.
    """

    name = "NaNMonitor"

    def _bad_atoms(self, state: MDState) -> torch.Tensor:
        bad = ~torch.isfinite(state.positions).all(dim=1) | ~torch.isfinite(state.momenta).all(1)
        if state.forces is not None:
            bad = bad | ~torch.isfinite(state.forces).all(dim=1)
        return bad

    def measure(self, state: MDState) -> torch.Tensor:
        count = torch.zeros(state.n_systems, dtype=state.dtype, device=state.device)
        per_atom = (~torch.isfinite(state.positions)).sum(1) + (~torch.isfinite(state.momenta)).sum(
            1
        )
        if state.forces is not None:
            per_atom = per_atom + (~torch.isfinite(state.forces)).sum(1)
        count.index_add_(0, state.system_idx, per_atom.to(state.dtype))
        if state.energy is not None:
            count = count + (~torch.isfinite(state.energy)).to(state.dtype)
        return count

    def explain(self, value: float) -> str:
        return f"{int(value)} non-finite values in positions, momenta, forces or energy"

    def __call__(self, state: MDState) -> torch.Tensor:
        collapsed = _any_per_system(self._bad_atoms(state), state)
        if state.energy is not None:
            collapsed = collapsed | ~torch.isfinite(state.energy)
        return collapsed


class MaxForce(Monitor):
    """Stops a system when the largest force on any of its atoms exceeds ``limit``.

    Args:
        limit: eV/Å. ``measure`` is max_i |F_i| per system, eV/Å.
    """

    name = "MaxForce"

    def __init__(self, limit: float) -> None:
        if not limit > 0:
            raise ValueError(f"MaxForce limit must be a positive force in eV/Å, got {limit}")
        self.limit = float(limit)

    def measure(self, state: MDState) -> torch.Tensor:
        if state.forces is None:
            raise ValueError("MaxForce needs forces on the state; run the integrator's init")
        return _max_per_system(torch.linalg.norm(state.forces, dim=1), state)

    def __call__(self, state: MDState) -> torch.Tensor:
        return self.measure(state) > self.limit

    def describe(self) -> str:
        return f"MaxForce(limit={self.limit!r})"

    def explain(self, value: float) -> str:
        return f"max force {value:.4g} eV/Å > {self.limit:.4g} eV/Å"


class TemperatureBounds(Monitor):
    """Stops a system whose instantaneous temperature leaves [low, high] (MDsim: 0.1 K and
    100 000 K). Temperature as :meth:`MDState.temperature` (E_kin / (3/2 N k_B)).

    Args:
        low: K. high: K. ``measure`` is the temperature, K.
    """

    name = "TemperatureBounds"

    def __init__(self, low: float = 0.1, high: float = 100_000.0) -> None:
        if not 0 <= low < high:
            raise ValueError(f"TemperatureBounds needs 0 <= low < high, got {low}, {high}")
        self.low, self.high = float(low), float(high)

    def measure(self, state: MDState) -> torch.Tensor:
        return state.temperature()

    def __call__(self, state: MDState) -> torch.Tensor:
        temperature = self.measure(state)
        return (temperature < self.low) | (temperature > self.high)

    def describe(self) -> str:
        return f"TemperatureBounds(low={self.low!r}, high={self.high!r})"

    def explain(self, value: float) -> str:
        return f"temperature {value:.4g} K outside [{self.low:.4g}, {self.high:.4g}] K"


def find_bonds(atoms: Atoms, mult: float = 1.0, skin: float = 0.3) -> np.ndarray:
    """(n_bonds, 2) atom pairs i < j that ASE's ``NeighborList(natural_cutoffs(atoms))`` connects:
    closer than the sum of their covalent radii × ``mult`` plus ``skin`` (Å; ASE's default
    0.3 Å, which MDsim's bond definition keeps), each pair once."""
    from ase.neighborlist import NeighborList, natural_cutoffs

    nl = NeighborList(natural_cutoffs(atoms, mult=mult), skin=skin, self_interaction=False)
    nl.update(atoms)
    i, j = nl.get_connectivity_matrix(sparse=True).nonzero()
    pairs = {(min(a, b), max(a, b)) for a, b in zip(i.tolist(), j.tolist(), strict=True) if a != b}
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def bond_lengths(frames: Sequence[Atoms], bonds: np.ndarray) -> np.ndarray:
    """(n_frames, n_bonds) bond lengths, Å, minimum image along periodic axes."""
    from ase.geometry import find_mic

    out = []
    for atoms in frames:
        vectors = atoms.positions[bonds[:, 1]] - atoms.positions[bonds[:, 0]]
        if atoms.pbc.any():
            vectors, _ = find_mic(vectors, atoms.cell, atoms.pbc)
        out.append(np.linalg.norm(vectors, axis=1))
    return np.asarray(out).reshape(len(frames), len(bonds))


class BondDeviation(Monitor):
    """Stops a molecule when a bond has stretched or shrunk by more than ``threshold``.

    The stability criterion of Fu et al. (MDsim): bonds are the pairs that ASE's
    ``NeighborList(natural_cutoffs(...))`` connects on the first reference frame (see
    :func:`find_bonds`); the reference length of each bond is its
    mean over the reference frames; a system collapses when max over bonds |d(t) − d_ref| >
    ``threshold``. Every monitored system must have the reference's atoms in the same order
    (replicas of one molecule). Periodic systems use the minimum image along periodic axes.

    Args:
        reference: one Atoms, or a list of frames (e.g. the training set) of the same molecule.
        threshold: Å (MDsim: 0.5).
        mult: multiplier of the covalent radii (``natural_cutoffs(mult=...)``).

    Attributes:
        bonds: (n_bonds, 2) atom pairs. reference_lengths: (n_bonds,) Å.

    ``measure`` is max |d − d_ref| per system, Å.
    """

    name = "BondDeviation"

    def __init__(
        self, reference: Atoms | Sequence[Atoms], threshold: float = 0.5, mult: float = 1.0
    ) -> None:
        frames = [reference] if isinstance(reference, Atoms) else list(reference)
        if not frames:
            raise ValueError("BondDeviation needs at least one reference frame")
        if not threshold > 0:
            raise ValueError(f"BondDeviation threshold must be positive (Å), got {threshold}")
        first = frames[0]
        for k, atoms in enumerate(frames):
            if not np.array_equal(atoms.numbers, first.numbers):
                raise ValueError(
                    f"reference frame {k} has different atoms than frame 0; pass frames of one "
                    "molecule with the atoms in the same order"
                )
        self.bonds = find_bonds(first, mult)
        if len(self.bonds) == 0:
            raise ValueError(
                "the reference frame has no bonds within natural_cutoffs; check the structure "
                "or raise mult"
            )
        self.reference_lengths = bond_lengths(frames, self.bonds).mean(axis=0)
        self.numbers = first.numbers.copy()
        self.threshold = float(threshold)
        self.mult = float(mult)
        self._cache: dict = {}

    def prepare(self, state: MDState) -> None:
        n_atoms = state.n_atoms.tolist()
        numbers = state.numbers.cpu().numpy()
        start = 0
        for b, n in enumerate(n_atoms):
            if n != len(self.numbers) or not np.array_equal(
                numbers[start : start + n], self.numbers
            ):
                raise ValueError(
                    f"BondDeviation: system {b} ({n} atoms) is not the reference molecule "
                    f"({len(self.numbers)} atoms, same elements in the same order); monitor "
                    "replicas of the reference molecule only"
                )
            start += n

    def _tensors(self, state: MDState) -> tuple[torch.Tensor, torch.Tensor]:
        key = (state.device, state.dtype)
        if key not in self._cache:
            self._cache[key] = (
                torch.as_tensor(self.bonds, device=state.device),
                torch.as_tensor(self.reference_lengths, device=state.device, dtype=state.dtype),
            )
        return self._cache[key]

    def measure(self, state: MDState) -> torch.Tensor:
        bonds, reference = self._tensors(state)
        n_mol = len(self.numbers)
        offsets = torch.arange(state.n_systems, device=state.device) * n_mol  # (B,)
        i = offsets[:, None] + bonds[None, :, 0]  # (B, n_bonds)
        j = offsets[:, None] + bonds[None, :, 1]
        vectors = state.positions[j] - state.positions[i]  # (B, n_bonds, 3)
        if bool(state.pbc.any()):
            inverse = torch.linalg.pinv(state.cell)  # (B, 3, 3); zero rows of unused axes are ok
            fractional = torch.einsum("bkx,bxy->bky", vectors, inverse)
            fractional = fractional - torch.round(fractional) * state.pbc[:, None, :]
            vectors = torch.einsum("bky,byx->bkx", fractional, state.cell)
        deviation = (torch.linalg.norm(vectors, dim=2) - reference).abs()
        return deviation.max(dim=1).values

    def __call__(self, state: MDState) -> torch.Tensor:
        return self.measure(state) > self.threshold

    def explain(self, value: float) -> str:
        return f"bond length off its reference by {value:.4g} Å > {self.threshold:.4g} Å"

    def describe(self) -> str:
        digest = np.round(self.reference_lengths, 6).tolist()
        return (
            f"BondDeviation(threshold={self.threshold!r}, mult={self.mult!r}, "
            f"bonds={self.bonds.tolist()}, reference={digest})"
        )
