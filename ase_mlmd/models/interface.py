"""The energy-model contract and the one shared path that derives forces and stress.

An energy model is a ``torch.nn.Module`` whose ``forward(batch)`` takes an
:class:`~ase_mlmd.batch.AtomsBatch` and returns a dict with

* ``"energy"``: (B,) total energy per system, eV (always);
* ``"energies"``: (N,) per-atom energies, eV (optional);
* ``"forces"``: (N, 3) eV/Å and ``"stress"``: (B, 3, 3) eV/Å^3 (optional: only backends that
  cannot expose an energy graph, e.g. compiled models, return them).

It declares ``cutoff`` (Å), ``species`` (the atomic numbers it accepts, or ``None`` for an
element-agnostic model such as a pair potential) and its floating ``dtype``.

Forces and stress that a model does not return are derived here, in :func:`evaluate`, by
autograd: forces are ``-dE/dx`` and the stress is ``(1/V) dE/dε`` for a symmetric strain ε that
deforms positions and cell together, which is ASE's sign and convention. A model with
``direct_forces = True`` (analytic pair potentials) gives them itself through
``direct_evaluate(batch, properties)`` when no graph is wanted (``create_graph=False``).

A model's ``device`` is that of its first parameter or buffer; a model without tensors (an
analytic potential) records the device it was moved to, so asking for CUDA is never answered by
a CPU computation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from ase.data import chemical_symbols

from ase_mlmd.batch import AtomsBatch
from ase_mlmd.errors import UnsupportedSpeciesError

PROPERTIES = ("energy", "energies", "forces", "stress")


class EnergyModel(torch.nn.Module):
    """Base class for energy models.

    Subclasses implement :meth:`forward` and set ``cutoff`` and ``species`` in ``__init__``.

    Args:
        cutoff: interaction cutoff, Å; the neighbor list is built at this radius.
        species: atomic numbers the model was trained on; ``None`` accepts every element.
    """

    #: what :meth:`forward` returns besides "energy"
    provides: tuple[str, ...] = ("energies",)

    def __init__(self, cutoff: float, species: Iterable[int] | None = None) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.species = None if species is None else tuple(sorted({int(z) for z in species}))
        self._device = torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype the model computes in (from its first floating parameter or buffer).

        Cached (a model call asks for it every time) and refreshed by ``.to()`` / ``.double()``.
        """
        cached = self.__dict__.get("_cached_dtype")
        if cached is None:
            cached = getattr(self, "_dtype", torch.float64)
            for tensor in self._tensors():
                if tensor.is_floating_point():
                    cached = tensor.dtype
                    break
            self.__dict__["_cached_dtype"] = cached
        return cached

    @property
    def device(self) -> torch.device:
        """Device of the first parameter or buffer; for a model without tensors, the device
        it was last moved to with ``.to()`` / ``.cuda()`` (CPU at construction)."""
        for tensor in self._tensors():
            return tensor.device
        return self.__dict__.get("_device", torch.device("cpu"))

    def _tensors(self) -> Iterable[torch.Tensor]:
        yield from self.parameters()
        yield from self.buffers()

    def _apply(self, fn, recurse: bool = True):  # called by .to(), .float(), .cuda(), ...
        self.__dict__.pop("_cached_dtype", None)
        if "_dtype" in self.__dict__:  # models without tensors (analytic) follow casts too
            self._dtype = fn(torch.zeros(0, dtype=self._dtype)).dtype
        device = self.__dict__.get("_device", torch.device("cpu"))
        try:
            self._device = fn(torch.zeros(0, device=device)).device
        except NotImplementedError:  # out of "meta": no data to copy, the probe moves from CPU
            self._device = fn(torch.zeros(0)).device
        return super()._apply(fn, recurse)

    def check_species(self, numbers: Sequence[int] | torch.Tensor) -> None:
        """Raise :class:`UnsupportedSpeciesError` if ``numbers`` holds an element not in species."""
        if self.species is None:
            return
        present = {int(z) for z in torch.as_tensor(numbers).unique().tolist()}
        unknown = sorted(present - set(self.species))
        if unknown:
            names = ", ".join(chemical_symbols[z] for z in unknown)
            known = ", ".join(chemical_symbols[z] for z in self.species)
            raise UnsupportedSpeciesError(
                f"the model was trained on {known} only; the structure also contains {names}. "
                "Use a model whose card lists these elements, or remove those atoms"
            )

    def forward(self, batch: AtomsBatch) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError


def _symmetric_strain(batch: AtomsBatch) -> tuple[torch.Tensor, AtomsBatch]:
    """Apply a zero symmetric strain ε (B,3,3) to positions and cell; return ε and the batch."""
    strain = torch.zeros_like(batch.cell, requires_grad=True)
    sym = 0.5 * (strain + strain.transpose(1, 2))
    deformation = torch.eye(3, dtype=batch.dtype, device=batch.device) + sym
    positions = torch.einsum("ni,nij->nj", batch.positions, deformation[batch.system_idx])
    cell = torch.bmm(batch.cell, deformation)
    return strain, batch.replace(positions=positions, cell=cell)


def evaluate(
    model: torch.nn.Module,
    batch: AtomsBatch,
    properties: Iterable[str] = ("energy", "forces"),
    create_graph: bool = False,
) -> dict[str, torch.Tensor]:
    """Evaluate ``model`` on ``batch``; derive forces and stress by autograd where needed.

    The batch is cast to the model's dtype for the call and results are cast back to the
    batch's dtype (MD state float64, model possibly float32).

    Args:
        model: an :class:`EnergyModel` (or any module following the contract).
        batch: B systems; stress needs every system fully periodic.
        properties: subset of ``("energy", "energies", "forces", "stress")``.
        create_graph: keep the graph of the derivatives (for gradients through forces, e.g.
            differentiable MD or force-matching losses).

    Returns:
        dict with the requested properties: energy (B,), energies (N,), forces (N, 3),
        stress (B, 3, 3), in eV, eV/Å and eV/Å^3.
    """
    wanted = set(properties)
    unknown = wanted - set(PROPERTIES)
    if unknown:
        raise ValueError(f"unknown properties {sorted(unknown)}; choose from {PROPERTIES}")
    out_dtype = batch.dtype
    model_dtype = getattr(model, "dtype", out_dtype)
    work = batch.to(dtype=model_dtype) if model_dtype != out_dtype else batch
    need_forces = "forces" in wanted and "forces" not in getattr(model, "provides", ())
    need_stress = "stress" in wanted and "stress" not in getattr(model, "provides", ())
    if "stress" in wanted and not bool(batch.pbc.all()):
        raise ValueError("stress is defined only for fully periodic systems (pbc on all axes)")
    if not create_graph and getattr(model, "direct_forces", False):
        out = model.direct_evaluate(work, wanted)
        return {k: out[k].to(out_dtype) for k in PROPERTIES if k in wanted and k in out}

    inputs: list[torch.Tensor] = []
    strain = None
    with torch.enable_grad():
        if need_forces:
            positions = work.positions
            if not positions.requires_grad:
                positions = positions.detach().requires_grad_(True)
            work = work.replace(positions=positions)
            inputs.append(positions)
        if need_stress:
            strain, work = _symmetric_strain(work)
            inputs.append(strain)
        out = model(work)
        energy = out["energy"]
        results: dict[str, torch.Tensor] = {"energy": energy}
        if "energies" in wanted and "energies" in out:
            results["energies"] = out["energies"]
        if "forces" in wanted and not need_forces:
            results["forces"] = out["forces"]
        if "stress" in wanted and not need_stress:
            results["stress"] = out["stress"]
        if inputs:
            grads = torch.autograd.grad(
                energy.sum(),
                inputs,
                create_graph=create_graph,
                allow_unused=True,
            )
            grads = [
                torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)
            ]
            if need_forces:
                results["forces"] = -grads[0]
            if need_stress:
                volumes = torch.linalg.det(work.cell).abs()
                results["stress"] = grads[-1] / volumes[:, None, None]
    if not create_graph:
        results = {k: v.detach() for k, v in results.items()}
    return {k: v.to(out_dtype) for k, v in results.items()}


def scatter_sum(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum rows of ``values`` (M, ...) into ``size`` bins given by ``index`` (M,)."""
    out = torch.zeros((size, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add_(0, index, values)


def system_energy(batch: AtomsBatch, atom_energies: torch.Tensor) -> torch.Tensor:
    """(B,) total energies from (N,) per-atom energies."""
    return scatter_sum(atom_energies, batch.system_idx, batch.n_systems)
