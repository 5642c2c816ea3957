"""Ensemble mean of CGnet CG force fields as one ordinary CG card (issue 13, acceptance 5b).

K prior + CGnet cards fitted to the same frames with different seeds share the prior (the
Boltzmann inversion does not depend on the seed) and the feature standardisation (the same
training sample). Their mean energy ``E_prior + (1/K) Σ_k E_k`` is then itself a prior + CGnet
model: one MLP whose hidden layers are the K members' layers side by side (block-diagonal
weights, so the members do not mix) and whose output layer is the members' output layers,
each divided by K. The merged card is used like any other (``ase-mlmd md --calc``); this
script checks that its energies and forces equal the mean of the members' on given frames.

Usage::

    python benchmarks/cg_cgnet_ensemble.py out/cg_learned_46ns/cgnet{,_s2,_s3}/card.toml \\
        --check out/cg_learned_46ns/cg_all.extxyz -o out/cg_learned_46ns/cgnet_ens
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def load_cg_model(card_path: Path):
    """The :class:`CGForceField` of a ``cg-prior-network`` card."""
    from ase_mlmd.calculators.cards import load_state_dict, read_card
    from ase_mlmd.models.cg_model import cg_model_from_card

    card = read_card(card_path)
    return card, cg_model_from_card(card, load_state_dict(card))


def merge_cgnets(networks: list) -> torch.nn.Module:
    """One CGnet network whose energy is the mean of ``networks`` (same features and widths)."""
    from ase_mlmd.models.cg_features import CGnetNetwork

    first = networks[0]
    for net in networks[1:]:
        for name in ("pairs", "angles", "dihedrals", "feature_mean", "feature_std"):
            if not torch.equal(getattr(net, name), getattr(first, name)):
                raise ValueError(f"ensemble members differ in {name}; fit them to the same data")
        if net.hidden != first.hidden or net.activation != first.activation:
            raise ValueError("ensemble members differ in architecture")
    k = len(networks)
    dtype = first.feature_mean.dtype
    merged = CGnetNetwork(
        first.n_beads,
        angles=first.angles.numpy(),
        dihedrals=first.dihedrals.numpy(),
        hidden=[k * h for h in first.hidden],
        activation=first.activation,
        cutoff=first.cutoff,
        species=first.species,
        dtype=dtype,
        seed=0,
    )
    linears = [i for i, m in enumerate(first.mlp) if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        merged.feature_mean.copy_(first.feature_mean)
        merged.feature_std.copy_(first.feature_std)
        for n, i in enumerate(linears):
            target = merged.mlp[i]
            target.weight.zero_()
            target.bias.zero_()
            last = n == len(linears) - 1
            for j, net in enumerate(networks):
                src = net.mlp[i]
                rows, cols = src.weight.shape
                r0 = 0 if last else j * rows
                c0 = 0 if n == 0 else j * cols
                scale = 1.0 / k if last else 1.0
                target.weight[r0 : r0 + rows, c0 : c0 + cols] += scale * src.weight
                target.bias[r0 : r0 + rows] += scale * src.bias
    return merged


def main() -> None:
    from ase.io import read

    from ase_mlmd.batch import batch_from_atoms
    from ase_mlmd.models.cg_model import CGForceField, export_cg_card
    from ase_mlmd.models.interface import evaluate

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cards", nargs="+", type=Path, help="prior + CGnet cards (card.toml)")
    parser.add_argument("--check", type=Path, help="CG frames (extxyz) to check the mean on")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = [load_cg_model(p)[1] for p in args.cards]
    first = models[0]
    for m in models[1:]:
        a, b = first.prior.state_dict(), m.prior.state_dict()
        if a.keys() != b.keys() or any(not torch.equal(a[x], b[x]) for x in a):
            raise ValueError("ensemble members have different priors; fit them to the same data")
    merged = CGForceField(
        first.prior, merge_cgnets([m.network for m in models]), first.bead_types, first.topology
    )
    check = {}
    if args.check:
        frames = read(args.check, index=":")
        frames = frames[:: max(1, len(frames) // 200)]
        batch = batch_from_atoms(frames, merged.cutoff)
        outs = [evaluate(m, batch, ("energy", "forces")) for m in [*models, merged]]
        mean_f = np.mean([o["forces"].numpy() for o in outs[:-1]], axis=0)
        mean_e = np.mean([o["energy"].numpy() for o in outs[:-1]], axis=0)
        merged_f, merged_e = outs[-1]["forces"].numpy(), outs[-1]["energy"].numpy()
        check = {
            "frames": len(frames),
            "max_force_deviation_eV_per_A": float(np.abs(merged_f - mean_f).max()),
            "max_energy_deviation_eV": float(np.abs(merged_e - mean_e).max()),
            "member_force_spread_rms_eV_per_A": float(
                np.sqrt(np.mean([(o["forces"].numpy() - mean_f) ** 2 for o in outs[:-1]]))
            ),
        }
        print(json.dumps(check, indent=2))
        if check["max_force_deviation_eV_per_A"] > 1e-4:  # float32 sums
            raise SystemExit("merged network does not reproduce the ensemble mean")
    card = export_cg_card(
        merged,
        args.output,
        args.output.name,
        description=f"CG prior + mean of {len(models)} CGnet networks over {first.bead_types}",
        provenance={
            "members": [str(p) for p in args.cards],
            "check": check,
            "command": "benchmarks/cg_cgnet_ensemble.py",
        },  # fmt: skip
        card_file="card.toml",
    )
    print(f"wrote {card}")


if __name__ == "__main__":
    main()
