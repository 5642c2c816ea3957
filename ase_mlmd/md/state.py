"""The batched MD state: many systems (replicas, or different structures) in one set of tensors.

Atom-scoped tensors have N rows (all atoms of all systems, system by system); system-scoped
tensors have B rows. Units are ASE's: Å, amu, eV, ASE time (``ase.units.fs`` per fs); momenta
are mass × velocity in amu·Å/ASE-time, so that E_kin = Σ p²/(2m) is in eV.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from ase_mlmd.batch import AtomsBatch, SystemSizes, check_structure, model_cell
from ase_mlmd.errors import InvalidStructureError
from ase_mlmd.models.interface import scatter_sum
from ase_mlmd.structures import is_single_structure, to_atoms

ATOM_FIELDS = ("positions", "momenta", "masses", "numbers", "system_idx", "forces", "energies")
SYSTEM_FIELDS = ("cell", "pbc", "energy")


@dataclasses.dataclass
class MDState(SystemSizes):
    """B systems with N atoms in total.

    Attributes:
        positions: (N, 3) Å.
        momenta: (N, 3) amu·Å/ASE-time.
        masses: (N,) amu.
        numbers: (N,) int64 atomic numbers.
        system_idx: (N,) int64, system of each atom (contiguous).
        cell: (B, 3, 3) Å, rows are lattice vectors.
        pbc: (B, 3) bool.
        forces: (N, 3) eV/Å at ``positions`` (set by integrators' init/step).
        energy: (B,) potential energy, eV.
        energies: (N,) per-atom potential energies when the model gives them (else None).
        thermostat: the integrator's own per-system variables, each (B, ...) (e.g. Nosé–Hoover
            chain positions and velocities); carried through select/clone/to and checkpoints.
    """

    positions: torch.Tensor
    momenta: torch.Tensor
    masses: torch.Tensor
    numbers: torch.Tensor
    system_idx: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    forces: torch.Tensor | None = None
    energy: torch.Tensor | None = None
    energies: torch.Tensor | None = None
    thermostat: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ physics
    @property
    def velocities(self) -> torch.Tensor:
        """(N, 3) Å/ASE-time."""
        return self.momenta / self.masses[:, None]

    def kinetic_energy(self) -> torch.Tensor:
        """(B,) kinetic energy per system, eV."""
        per_atom = 0.5 * (self.momenta**2).sum(dim=1) / self.masses
        return scatter_sum(per_atom, self.system_idx, self.n_systems)

    def temperature(self) -> torch.Tensor:
        """(B,) instantaneous temperature, K: E_kin / (3/2 N k_B), as ASE (3 N degrees)."""
        return self.kinetic_energy() / (1.5 * self.n_atoms.to(self.dtype) * units.kB)

    def total_energy(self) -> torch.Tensor:
        """(B,) potential + kinetic energy, eV."""
        if self.energy is None:
            raise ValueError("the state has no potential energy yet; run an integrator's init")
        return self.energy + self.kinetic_energy()

    # ------------------------------------------------------------------ structure
    def atoms_batch(self, edge_index: torch.Tensor, cell_shifts: torch.Tensor) -> AtomsBatch:
        """The model input for this state with the given neighbor list."""
        return AtomsBatch(
            self.positions,
            self.numbers,
            self.cell,
            self.pbc,
            self.system_idx,
            edge_index,
            cell_shifts,
        )

    def replace(self, **changes: Any) -> MDState:
        return dataclasses.replace(self, **changes)

    def clone(self) -> MDState:
        return self.map(lambda t: t.clone())

    def detach(self) -> MDState:
        return self.map(lambda t: t.detach())

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Move to a device; ``dtype`` applies to floating fields."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return self.map(move)

    def map(self, fn) -> MDState:
        """Apply ``fn`` to every tensor field, thermostat tensors included (None stays None)."""
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                fields[f.name] = None
            elif isinstance(value, dict):
                fields[f.name] = {k: fn(v) for k, v in value.items()}
            else:
                fields[f.name] = fn(value)
        return MDState(**fields)

    def select(self, systems: Sequence[int] | torch.Tensor) -> MDState:
        """A state with only the given systems (in the given order), renumbered 0..k-1."""
        systems = torch.as_tensor(systems, dtype=torch.long, device=self.device).reshape(-1)
        atom_masks = self.system_idx[None, :] == systems[:, None]  # (k, N)
        order = (
            torch.cat([mask.nonzero().reshape(-1) for mask in atom_masks])
            if len(systems)
            else torch.zeros(0, dtype=torch.long, device=self.device)
        )
        counts = atom_masks.sum(dim=1)
        new_idx = torch.repeat_interleave(torch.arange(len(systems), device=self.device), counts)
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                fields[f.name] = None
            elif f.name == "system_idx":
                fields[f.name] = new_idx
            elif f.name == "thermostat":
                fields[f.name] = {k: v[systems] for k, v in value.items()}
            elif f.name in SYSTEM_FIELDS:
                fields[f.name] = value[systems]
            else:
                fields[f.name] = value[order]
        return MDState(**fields)

    def split(self) -> list[MDState]:
        """One state per system."""
        return [self.select([b]) for b in range(self.n_systems)]

    # ------------------------------------------------------------------ ASE in and out
    @classmethod
    def from_atoms(
        cls,
        structures: Sequence[Any] | Any,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> MDState:
        """A state from ASE Atoms (or pymatgen structures); momenta are taken from the atoms.

        Raises:
            InvalidStructureError: NaN/inf positions or momenta, a degenerate periodic cell, an
                empty structure or non-positive masses.
        """
        if is_single_structure(structures):
            structures = [structures]
        atoms_list = [to_atoms(s) for s in structures]
        if not atoms_list:
            raise InvalidStructureError("no structures given; pass at least one ase.Atoms")
        for k, atoms in enumerate(atoms_list):
            where = f"structure {k}"
            if len(atoms) == 0:
                raise InvalidStructureError(f"{where} has no atoms")
            check_structure(atoms.positions, atoms.cell.array, atoms.pbc, where)
            momenta = atoms.get_momenta()
            if not np.isfinite(momenta).all():
                raise InvalidStructureError(
                    f"{where}: velocities/momenta contain NaN or inf; reset them (e.g. draw them "
                    "with a temperature) or fix the input file"
                )
            if (atoms.get_masses() <= 0).any():
                raise InvalidStructureError(f"{where}: masses must be positive")
        sizes = [len(a) for a in atoms_list]

        def cat(values: list[np.ndarray], kind=None) -> torch.Tensor:
            return torch.from_numpy(np.concatenate(values).astype(kind or np.float64))

        state = cls(
            positions=cat([a.positions for a in atoms_list]),
            momenta=cat([a.get_momenta() for a in atoms_list]),
            masses=cat([a.get_masses() for a in atoms_list]),
            numbers=cat([a.numbers for a in atoms_list], np.int64),
            system_idx=torch.from_numpy(np.repeat(np.arange(len(sizes)), sizes).astype(np.int64)),
            cell=torch.from_numpy(np.stack([model_cell(a) for a in atoms_list])),
            pbc=torch.from_numpy(np.stack([a.pbc for a in atoms_list])),
        )
        return state.to(device=device, dtype=dtype)

    def to_atoms(self) -> list[Atoms]:
        """One ASE Atoms per system, with momenta and (when known) energy and forces attached
        as a ``SinglePointCalculator``."""
        state = self.detach().to("cpu")
        out = []
        bounds = np.concatenate([[0], np.cumsum(state.n_atoms.numpy())])
        for b in range(state.n_systems):
            sl = slice(int(bounds[b]), int(bounds[b + 1]))
            atoms = Atoms(
                numbers=state.numbers[sl].numpy(),
                positions=state.positions[sl].numpy(),
                cell=state.cell[b].numpy(),
                pbc=state.pbc[b].numpy(),
                masses=state.masses[sl].numpy(),
            )
            atoms.set_momenta(state.momenta[sl].numpy())
            results = {}
            if state.energy is not None:
                results["energy"] = float(state.energy[b])
                results["free_energy"] = float(state.energy[b])
            if state.forces is not None:
                results["forces"] = state.forces[sl].numpy()
            if state.energies is not None:
                results["energies"] = state.energies[sl].numpy()
            if results:
                atoms.calc = SinglePointCalculator(atoms, **results)
            out.append(atoms)
        return out
