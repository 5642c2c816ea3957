"""Force-matched CG force fields: Boltzmann-inverted priors plus a network correction.

``fit_cg_forcefield(frames, output_dir)``:

1. checks that every frame is a CG frame with mapped forces;
2. splits the frames with the package's split (``ordered_split=True``: time-ordered blocks);
3. fits the priors (:mod:`ase_mlmd.cg.priors`) on the *training* frames only;
4. builds a SchNet/PaiNN network over bead types, or a CGnet-style MLP over internal coordinates
   (distances, angles, cos/sin of dihedrals; ``config.model = "cgnet"``), whose last layer is
   scaled to the RMS of the residual force F − F_prior (so it starts at the residual's scale);
5. trains prior + network with THE training loop (:func:`ase_mlmd.train.train`, force matching:
   ``energy_weight = 0``, loss ⟨|F_CG − M_F F|²⟩; EMA, early stopping, checkpoint/resume, CSV
   log) and writes the card (backend ``cg-prior-network``) with the prior-only and
   prior + network test force-matching losses in its provenance.

``network=False`` fits and exports the prior alone (the baseline of METRICS §3).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms

from ase_mlmd.batch import batch_from_atoms
from ase_mlmd.beads import bead_types_of, type_list_of
from ase_mlmd.cg.data import positions_of, require_forces
from ase_mlmd.cg.priors import PriorSettings, fit_priors
from ase_mlmd.cg.topology import CGTopology
from ase_mlmd.errors import DataFormatError
from ase_mlmd.models.cg_model import CGForceField, export_cg_card
from ase_mlmd.models.interface import evaluate
from ase_mlmd.train.config import TrainConfig, TrainResult
from ase_mlmd.train.models import CARD_FILE
from ase_mlmd.train.trainer import make_split, train

#: kcal/mol/Å per eV/Å (for losses reported in the units of CG data such as ala2_cg)
KCAL_PER_EV = 23.060548


@dataclasses.dataclass
class CGFitResult:
    """What a CG fit produced.

    Attributes:
        card_path: the card.
        prior_summary: the Boltzmann-inverted prior parameters.
        test_loss_prior, test_loss: test force-matching loss ⟨|ΔF|²⟩ per component of the
            prior alone and of prior + network, (eV/Å)² (the same for a prior-only fit).
        train: the training loop's result (None for a prior-only fit).
        model: the fitted model.
    """

    card_path: Path
    prior_summary: dict
    test_loss_prior: float
    test_loss: float
    n_train: int
    n_test: int
    train: TrainResult | None = None
    model: CGForceField | None = None


def force_matching_loss(model: torch.nn.Module, frames: Sequence[Atoms], chunk: int = 256) -> float:
    """⟨|F_model − F_mapped|²⟩ per Cartesian component over ``frames``, (eV/Å)²."""
    reference = require_forces(frames)
    total, count = 0.0, 0
    for start in range(0, len(frames), chunk):
        part = list(frames[start : start + chunk])
        batch = batch_from_atoms(part, model.cutoff)
        forces = evaluate(model, batch, ("energy", "forces"))["forces"].numpy()
        delta = forces - reference[start : start + len(part)].reshape(-1, 3)
        total += float((delta**2).sum())
        count += delta.size
    return total / count


def _check_frames(frames: Sequence[Atoms]) -> tuple[list[str], list[str]]:
    if not frames:
        raise DataFormatError("no CG frames to fit")
    types, beads = type_list_of(frames[0]), bead_types_of(frames[0])
    for k, atoms in enumerate(frames):
        if bead_types_of(atoms) != beads or type_list_of(atoms) != types:
            where = atoms.info.get("source", f"frame {k}")
            raise DataFormatError(f"{where} has other beads than frame 0 ({beads}); one molecule")
    require_forces(frames)
    return types, beads


def build_network(
    config: TrainConfig,
    n_types: int,
    residual_rms: float,
    *,
    topology: CGTopology | None = None,
    frames: Sequence[Atoms] | None = None,
) -> torch.nn.Module:
    """A network over pseudo numbers 1 … n_types, last layer scaled to the data.

    ``config.model``: ``schnet``/``painn`` (schnetpack over bead types) or ``cgnet`` (MLP over
    the internal coordinates of ``topology``: all bead-pair distances, its angles, cos and sin
    of its dihedrals; features standardised over ``frames``, the training frames; hidden
    layers from the hyperparameters ``hidden`` = [widths] or ``width`` and ``depth``; optional
    ``lipschitz`` = λ, CGnet's spectral-norm bound on every layer).
    """
    if config.model == "cgnet":
        return _build_cgnet(config, n_types, residual_rms, topology, frames)
    if config.model not in ("schnet", "painn"):
        raise ValueError(
            f"--model {config.model}: CG networks are schnet, painn or cgnet for now (nequip CG "
            "cards are not implemented)"
        )
    from ase_mlmd.models.backends.schnetpack import SchNetPackModel, build_schnet_model

    nnp = build_schnet_model(
        cutoff=config.cutoff,
        seed=config.seed,
        dtype=getattr(torch, config.dtype),
        representation=config.model,
        **config.model_hyperparameters(),
    )
    with torch.no_grad():
        last = nnp.output_modules[0].outnet[-1]
        last.weight.mul_(residual_rms)
        last.bias.zero_()
    return SchNetPackModel(nnp, species=range(1, n_types + 1), cutoff=config.cutoff)


def _build_cgnet(
    config: TrainConfig,
    n_types: int,
    residual_rms: float,
    topology: CGTopology | None,
    frames: Sequence[Atoms] | None,
) -> torch.nn.Module:
    from ase_mlmd.models.cg_features import CGnetNetwork

    if topology is None or not frames:
        raise ValueError("a cgnet network needs the CG topology and the training frames")
    hyper = config.model_hyperparameters()
    hidden = hyper.get("hidden", (128, 128, 128, 128))
    if "width" in hyper or "depth" in hyper:  # the CLI's --hyper width=64,depth=3
        hidden = [int(hyper.get("width", hidden[0]))] * int(hyper.get("depth", len(hidden)))
    network = CGnetNetwork(
        len(frames[0]),
        angles=topology.angles,
        dihedrals=topology.dihedrals,
        hidden=hidden,
        activation=hyper.get("activation", "tanh"),
        lipschitz=hyper.get("lipschitz"),
        cutoff=config.cutoff,
        species=range(1, n_types + 1),
        dtype=getattr(torch, config.dtype),
        seed=config.seed,
    )
    network.set_normalisation(batch_from_atoms(list(frames), config.cutoff))
    with torch.no_grad():  # standardised features: 0.1 × residual starts near the prior's loss
        last = network.mlp[-1]
        last.weight.mul_(0.1 * residual_rms)
        last.bias.zero_()
    return network


def fit_cg_forcefield(
    frames: Sequence[Atoms],
    output_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    priors: PriorSettings | None = None,
    topology: CGTopology | None = None,
    network: bool = True,
    *,
    data_info: dict[str, Any] | None = None,
    command: str | None = None,
    progress: bool = True,
) -> CGFitResult:
    """Fit priors (+ network by force matching) to CG frames and export ``output_dir/card.toml``.

    Args:
        frames: CG frames with mapped forces (eV/Å), one molecule type, in time order.
        output_dir: folder for card, weights, checkpoint, log and split.
        config: training settings (model schnet/painn/cgnet, cutoff, split, ordered_split, max_time,
            ...); ``energy_weight`` is set to 0 (force matching).
        priors: prior terms and temperature; topology: bonds (default: a chain in bead order).
        network: False fits the prior only.
        data_info: description of the data source for the card's provenance.

    Raises:
        DataFormatError, MissingLabelsError: frames that are not CG frames with forces.
    """
    config = dataclasses.replace(config or TrainConfig(model="schnet"), energy_weight=0.0)
    priors = priors or PriorSettings()
    types, beads = _check_frames(frames)
    topology = topology or CGTopology.chain(beads)
    split = make_split(frames, config)
    train_frames = split.frames(frames, "train")
    test_frames = split.frames(frames, "test")
    species = range(1, len(types) + 1)
    prior, summary = fit_priors(
        positions_of(train_frames), topology, priors, species=species, cutoff=config.cutoff
    )
    prior_only = CGForceField(prior, None, types, topology.to_dict())
    loss_prior = force_matching_loss(prior_only, test_frames)
    name = config.name or Path(output_dir).resolve().name or "cg-model"
    base = {
        **(data_info or {}),
        "prior": summary,
        "beads": beads,
        "test_force_matching_loss_prior_eV2_per_A2": loss_prior,
    }
    if not network:
        card = export_cg_card(
            prior_only,
            output_dir,
            name,
            description=f"CG prior ({', '.join(priors.terms)}) over beads {beads}",
            provenance={**base, "command": command or "fit_cg_forcefield(network=False)"},
            card_file=CARD_FILE,
        )
        return CGFitResult(card, summary, loss_prior, loss_prior, len(train_frames),
                           len(test_frames), None, prior_only)  # fmt: skip
    residual = _residual_rms(prior_only, train_frames[:: max(1, len(train_frames) // 500)])
    sample = train_frames[:: max(1, len(train_frames) // 2000)]
    net = build_network(config, len(types), residual, topology=topology, frames=sample)
    model = CGForceField(prior, net, types, topology.to_dict())
    losses: dict[str, float] = {}

    def export(fitted, directory, card_name, provenance):
        losses["test"] = force_matching_loss(fitted, test_frames)
        provenance = {**provenance, **base, "test_force_matching_loss_eV2_per_A2": losses["test"]}
        return export_cg_card(
            fitted,
            directory,
            card_name,
            description=f"CG prior ({', '.join(priors.terms)}) + {config.model} over {beads}",
            provenance=provenance,
            card_file=CARD_FILE,
        )

    result = train(
        list(frames),
        config,
        output_dir,
        progress=progress,
        command=command,
        model=model,
        export=export,
    )
    return CGFitResult(
        result.card_path,
        summary,
        loss_prior,
        losses["test"],
        len(train_frames),
        len(test_frames),
        result,
        result.model,
    )


def _residual_rms(prior: CGForceField, frames: Sequence[Atoms]) -> float:
    """RMS of F_mapped − F_prior over ``frames``, eV/Å (1 if zero)."""
    forces = evaluate(prior, batch_from_atoms(list(frames), prior.cutoff), ("energy", "forces"))
    delta = forces["forces"].numpy() - require_forces(frames).reshape(-1, 3)
    rms = float(np.sqrt(np.mean(delta**2)))
    return rms if rms > 0 else 1.0
