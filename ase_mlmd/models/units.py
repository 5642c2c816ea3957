"""Wrapping a model that works in other units (kcal/mol, nm, ...) so it speaks eV and Å."""

from __future__ import annotations

import torch

from ase_mlmd.batch import AtomsBatch
from ase_mlmd.models.interface import EnergyModel


class UnitConvertedModel(EnergyModel):
    """Evaluate ``inner`` (which works in its own units) on a batch in Å; return eV.

    Args:
        inner: energy model whose inputs are in ``length_unit`` and outputs in ``energy_unit``.
        energy_to_ev: eV per inner energy unit (e.g. 0.0433641 for kcal/mol).
        length_to_angstrom: Å per inner length unit (e.g. 10 for nm).
    """

    def __init__(self, inner: EnergyModel, energy_to_ev: float, length_to_angstrom: float):
        super().__init__(cutoff=inner.cutoff * length_to_angstrom, species=inner.species)
        self.inner = inner
        self.provides = inner.provides
        self.energy_to_ev = float(energy_to_ev)
        self.length_to_angstrom = float(length_to_angstrom)

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    def forward(self, batch: AtomsBatch) -> dict[str, torch.Tensor]:
        scale = 1.0 / self.length_to_angstrom
        out = self.inner(batch.replace(positions=batch.positions * scale, cell=batch.cell * scale))
        converted = {}
        for key, value in out.items():
            if key in ("energy", "energies"):
                converted[key] = value * self.energy_to_ev
            elif key == "forces":
                converted[key] = value * (self.energy_to_ev / self.length_to_angstrom)
            elif key == "stress":
                converted[key] = value * (self.energy_to_ev / self.length_to_angstrom**3)
            else:
                converted[key] = value
        return converted
