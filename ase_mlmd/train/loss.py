"""The training loss and the error metrics (energy and force MAE) of a model on labelled frames.

Metrics follow METRICS.md: the force MAE is the mean of |F_pred - F_ref| over all Cartesian
components of all atoms of all frames; the energy MAE is reported per atom (mean over frames
of |E_pred - E_ref| / n_atoms) and per frame (mean |E_pred - E_ref|).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ase_mlmd.models.interface import evaluate
from ase_mlmd.train.batches import GraphDataset, LabelledBatch


@dataclass
class Errors:
    """Mean absolute errors of a model on a set of frames (eV units).

    Attributes:
        energy_mae_per_atom: mean over frames of |ΔE| / n_atoms, eV/atom.
        energy_mae: mean over frames of |ΔE|, eV.
        force_mae: mean over all force components of |ΔF|, eV/Å.
        n_frames: frames evaluated.
    """

    energy_mae_per_atom: float
    energy_mae: float
    force_mae: float
    n_frames: int

    def in_mev(self) -> dict[str, float]:
        """The errors in meV/atom, meV and meV/Å, keyed as in the CSV log and the card."""
        return {
            "energy_mae_meV_per_atom": 1e3 * self.energy_mae_per_atom,
            "energy_mae_meV": 1e3 * self.energy_mae,
            "force_mae_meV_per_A": 1e3 * self.force_mae,
        }


def batch_loss(
    model: torch.nn.Module,
    data: LabelledBatch,
    energy_weight: float,
    force_weight: float,
    totals: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``energy_weight * MSE(ΔE / n_atoms) + force_weight * MSE(ΔF)`` in eV units (scalar).

    Forces are ``-dE/dx`` with the graph kept (``create_graph``), so the loss can be
    differentiated with respect to the weights.

    Args:
        totals: (frames, force components) the means divide by; default those of ``data``.
            A data-parallel rank passes the global batch's counts, so that the ranks' losses
            (and gradients) add up to the loss of the whole batch.
    """
    n_frames, n_components = totals or (len(data.energy), data.forces.numel())
    wanted = ("energy", "forces") if force_weight > 0 else ("energy",)
    out = evaluate(model, data.batch, wanted, create_graph=force_weight > 0)
    loss = out["energy"].new_zeros(())
    if energy_weight > 0:  # force-only fits (no energies: NaN labels) leave the term out
        per_atom = (out["energy"] - data.energy) / data.n_atoms
        loss = loss + energy_weight * (per_atom**2).sum() / n_frames
    if force_weight > 0:
        loss = loss + force_weight * ((out["forces"] - data.forces) ** 2).sum() / n_components
    return loss


def compute_errors(
    model: torch.nn.Module, dataset: GraphDataset, batch_size: int, indices: Sequence[int] = ()
) -> Errors:
    """Energy and force MAE of ``model`` on ``dataset`` (all frames, or ``indices``).

    Raises:
        ValueError: no frames to evaluate.
    """
    chosen = list(indices) or list(range(len(dataset)))
    if not chosen:
        raise ValueError("no frames to evaluate")
    e_atom = e_total = f_abs = 0.0
    components = 0
    for chunk in dataset.batches(chosen, batch_size):
        data = dataset.collate(chunk)
        out = evaluate(model, data.batch, ("energy", "forces"))
        delta = (out["energy"] - data.energy).abs()
        e_atom += float((delta / data.n_atoms).sum())
        e_total += float(delta.sum())
        f_abs += float((out["forces"] - data.forces).abs().sum())
        components += data.forces.numel()
    n = len(chosen)
    return Errors(e_atom / n, e_total / n, f_abs / max(components, 1), n)
