"""``MLCalculator``: an ASE calculator over any energy model."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from ase_mlmd.batch import batch_from_atoms
from ase_mlmd.errors import DeviceNotAvailableError, UnknownParameterError
from ase_mlmd.models.backends import as_energy_model
from ase_mlmd.models.interface import EnergyModel, evaluate
from ase_mlmd.structures import to_atoms

#: keyword arguments of ASE's ``Calculator`` that MLCalculator passes on; anything else would be
#: stored by ASE as an unused parameter, so it is refused instead
ASE_CALCULATOR_ARGUMENTS = ("restart", "ignore_bad_restart_file", "label", "atoms", "directory")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" → CUDA when available, else CPU; raise if CUDA is asked for but absent."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceNotAvailableError(
            f"device {str(device)!r} was requested but torch sees no CUDA GPU on this machine; "
            "use device='cpu' (or 'auto' to pick the GPU when there is one)"
        )
    return device


class MLCalculator(Calculator):
    """An ASE calculator for any energy model (pair potential, nequip, schnetpack, ...).

    Properties: ``energy``, ``free_energy`` (= energy), ``energies`` (per atom, when the model
    gives them), ``forces`` (eV/Å) and ``stress`` (Voigt order xx yy zz yz xz xy, eV/Å^3, ASE
    sign; fully periodic systems only). Results are cached by ASE's ``check_state``: asking again
    for the same structure does not call the model.

    Args:
        model: an :class:`~ase_mlmd.models.interface.EnergyModel`, or a nequip ``GraphModel`` /
            schnetpack ``NeuralNetworkPotential`` in memory (wrapped automatically).
        device: "cpu", "cuda", "cuda:1", or "auto".
        dtype: dtype of the model (None keeps the model's own); coordinates are always passed
            in float64 and cast at the model call.
        **kwargs: passed to ASE's ``Calculator`` (e.g. ``directory``).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    nolabel = True  # `ase run` must not pass a label
    default_parameters: dict[str, Any] = {}

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device | None = "cpu",
        dtype: torch.dtype | str | None = None,
        **kwargs: Any,
    ) -> None:
        unknown = sorted(set(kwargs) - set(ASE_CALCULATOR_ARGUMENTS))
        if unknown:
            raise UnknownParameterError(
                f"{type(self).__name__} has no parameter {', '.join(map(repr, unknown))}; its "
                f"parameters are device, dtype and ASE's {', '.join(ASE_CALCULATOR_ARGUMENTS)} "
                "(command line: -p dtype=float32, --device; card parameters are set in the card)"
            )
        super().__init__(**kwargs)
        self.device = resolve_device(device)
        model = as_energy_model(model)
        if dtype is not None:
            dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
            model = model.to(dtype=dtype)
        self.model: EnergyModel = model.to(self.device).eval()
        self.model_name = type(self.model).__name__

    @property
    def cutoff(self) -> float:
        return self.model.cutoff

    def _evaluate(self, structures: Sequence[Atoms], properties: Iterable[str]) -> dict:
        check_atoms = getattr(self.model, "check_atoms", None)  # e.g. CG models: bead types
        for atoms in structures:
            self.model.check_species(atoms.numbers)
            if check_atoms is not None:
                check_atoms(atoms)
        batch = batch_from_atoms(structures, self.model.cutoff, device=self.device)
        return evaluate(self.model, batch, properties)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        wanted = {"energy", "forces"}
        if "energies" in properties:
            wanted.add("energies")
        if "stress" in properties:
            if not self.atoms.pbc.all():
                raise PropertyNotImplementedError(
                    "stress is defined only for fully periodic systems; set atoms.pbc = True "
                    "and a cell, or do not ask for stress"
                )
            wanted.add("stress")
        out = self._evaluate([self.atoms], wanted)
        energy = float(out["energy"][0])
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["forces"] = out["forces"].cpu().numpy()
        if "energies" in out:
            self.results["energies"] = out["energies"].cpu().numpy()
        elif "energies" in properties:
            raise PropertyNotImplementedError(
                f"{type(self.model).__name__} does not provide per-atom energies"
            )
        if "stress" in out:
            self.results["stress"] = full_3x3_to_voigt_6_stress(out["stress"][0].cpu().numpy())

    def calculate_batch(
        self,
        structures: Sequence[Any],
        properties: Sequence[str] = ("energy", "forces"),
    ) -> tuple:
        """Evaluate many structures (of any sizes) in one forward pass.

        Args:
            structures: ASE Atoms (or pymatgen structures).
            properties: any of "energy", "forces", "stress", "energies", in the order wanted.

        Returns:
            A tuple with one entry per requested property, in the order of ``properties``:
            energy → (B,) array, eV; forces → list of (n_b, 3) arrays, eV/Å; stress → (B, 6)
            Voigt array, eV/Å^3; energies → list of (n_b,) arrays, eV.
        """
        atoms_list = [to_atoms(s) for s in structures]
        out = self._evaluate(atoms_list, properties)
        sizes = [len(a) for a in atoms_list]
        results = []
        for prop in properties:
            if prop not in out:
                raise PropertyNotImplementedError(
                    f"{type(self.model).__name__} does not provide {prop!r}"
                )
            value = out[prop].cpu().numpy()
            if prop == "energy":
                results.append(value)
            elif prop == "stress":
                results.append(np.stack([full_3x3_to_voigt_6_stress(s) for s in value]))
            else:
                results.append(list(np.split(value, np.cumsum(sizes)[:-1])))
        return tuple(results)
