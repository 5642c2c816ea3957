"""What a fit leaves behind: a model card + weights, the loss curve, g(r) and U(r) overlays, and
a Markdown report.

``out_dir/`` gets ``card.toml`` (+ ``weights.safetensors`` for neural and spline potentials),
``loss.png``, ``rdf_<state>.png`` (target vs simulated g(r)), ``potential.png`` (U(r), with the
true potential when known), ``history.csv``, ``summary.json`` and ``report.md``. Every file is
written atomically (temporary file in the same folder, then renamed). The card loads with
``ase_mlmd.load_calculator(out_dir / "card.toml")`` and runs with ``ase-mlmd run card.toml ...``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_mlmd.calculators.cards import sha256_of, write_card
from ase_mlmd.diffsim.config import FitConfig, FitResult
from ase_mlmd.fileio import atomic_write_bytes, atomic_write_text
from ase_mlmd.models.neural_pair import NeuralPair
from ase_mlmd.models.pair import LennardJones, Morse, PairPotential, SoftSphere, Yukawa
from ase_mlmd.models.species_pair import SpeciesPairPotential
from ase_mlmd.models.spline_pair import SplinePair

WEIGHTS_FILE = "weights.safetensors"
#: r range (Å = σ) on which U(r) is compared with the true potential
U_COMPARE_RANGE = (1.0, 2.5)
_ANALYTIC = {
    LennardJones: ("lennard-jones", ("epsilon", "sigma", "n", "m")),
    Morse: ("morse", ("epsilon", "r0", "rho0")),
    Yukawa: ("yukawa", ("amplitude", "kappa")),
    SoftSphere: ("soft-sphere", ("epsilon", "sigma", "n")),
}


def _save_figure(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def _float(value: Any) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def card_table(potential: PairPotential, name: str, description: str) -> tuple[dict, bool]:
    """The card's TOML table for a pair potential and whether it needs a weights file.

    A :class:`SpeciesPairPotential` becomes backend ``species-pair`` with one
    ``[parameters.pairs."A-B"]`` table (backend + parameters) per species pair; its weights
    file holds every pair's tensors (keys ``potentials.<k>.…``, k in the order of the pairs).
    """
    table: dict[str, Any] = {
        "name": name,
        "description": description,
        "species": ["*"],
        "cutoff": float(potential.cutoff),
        "dtype": "float64" if potential.dtype == torch.float64 else "float32",
        "citation": "W. Wang, Z. Wu, J. C. B. Dietschreit, R. Gómez-Bombarelli, "
        "J. Chem. Phys. 158, 044113 (2023)",
        "units": {"energy": "eV", "length": "Å"},
    }
    if isinstance(potential, SpeciesPairPotential):
        pairs, needs_weights = {}, False
        for label, pair_potential in potential.items():
            backend, params, weights = _backend_and_parameters(pair_potential)
            pairs[label] = {"backend": backend, "parameters": params}
            needs_weights = needs_weights or weights
        table["species"] = sorted({s for label in pairs for s in label.split("-")})
        table["backend"] = "species-pair"
        table["parameters"] = {"pairs": pairs}
        return table, needs_weights
    table["backend"], table["parameters"], needs_weights = _backend_and_parameters(potential)
    return table, needs_weights


def _backend_and_parameters(potential: PairPotential) -> tuple[str, dict, bool]:
    """(card backend, [parameters], whether tensors must go to a weights file)."""
    if isinstance(potential, NeuralPair | SplinePair):
        backend = "neural-pair" if isinstance(potential, NeuralPair) else "spline-pair"
        return backend, potential.hyperparameters(), True
    for cls, (backend, names) in _ANALYTIC.items():
        if isinstance(potential, cls):
            params = {k: _float(getattr(potential, k)) for k in names}
            params["cutoff"] = float(potential.cutoff)
            params["cutoff_mode"] = potential.cutoff_mode
            if potential.cutoff_mode == "smooth":
                params["r_on"] = float(potential.r_on)
            return backend, params, False
    raise TypeError(f"no card backend for {type(potential).__name__}")


def export_card(
    potential: PairPotential,
    out_dir: str | Path,
    name: str = "diffsim-fit",
    description: str = "pair potential fitted by DiffSim",
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write ``card.toml`` (+ ``weights.safetensors``) for ``potential``; return the card path.

    Raises:
        ValueError: the potential has non-finite parameters (NaN weights are never written).
    """
    from safetensors.torch import save

    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in potential.state_dict().items()}
    if not all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()):
        raise ValueError("refusing to export a potential with NaN/inf parameters")
    table, needs_weights = card_table(potential, name, description)
    if needs_weights:
        atomic_write_bytes(out_dir / WEIGHTS_FILE, save(state))
        table["weights"] = {
            "file": WEIGHTS_FILE,
            "sha256": sha256_of(out_dir / WEIGHTS_FILE),
            "format": "safetensors",
        }
    if provenance:
        table["provenance"] = provenance
    return write_card(table, out_dir / "card.toml")


def pair_components(potential: Any) -> list[tuple[str, PairPotential]]:
    """(label, φ) per species pair of a :class:`SpeciesPairPotential`, else ``[("all", φ)]``."""
    if isinstance(potential, SpeciesPairPotential):
        return potential.items()
    return [("all", potential)]


def potential_curve(potential: PairPotential, r: np.ndarray) -> np.ndarray:
    """U(r) with the potential's cutoff treatment, eV."""
    with torch.no_grad():
        rr = torch.as_tensor(r, dtype=potential.dtype)
        return potential.cut_pair_energy(rr).cpu().numpy()


def true_curve(potential: PairPotential, r: np.ndarray) -> np.ndarray:
    """φ(r) of a reference potential without its cutoff treatment, eV."""
    with torch.no_grad():
        return potential.pair_energy(torch.as_tensor(r, dtype=torch.float64)).numpy()


def u_errors(
    potential: Any,
    true_potential: Any,
    r_range: tuple[float, float] = U_COMPARE_RANGE,
    n: int = 301,
) -> dict[str, float]:
    """max |U(r) − U_true(r)| over ``r_range`` (U_true without cutoff treatment), eV, per
    species pair (key "all" for single-component potentials)."""
    r = np.linspace(*r_range, n)
    truth = dict(pair_components(true_potential))
    out = {}
    for label, phi in pair_components(potential):
        if label in truth:
            out[label] = float(np.abs(potential_curve(phi, r) - true_curve(truth[label], r)).max())
    if not out:
        raise ValueError("the true potential has none of the fitted potential's species pairs")
    return out


def u_error(
    potential: Any,
    true_potential: Any,
    r_range: tuple[float, float] = U_COMPARE_RANGE,
    n: int = 301,
) -> float:
    """The largest of :func:`u_errors` (max |U − U_true| over ``r_range`` and all pairs), eV."""
    return max(u_errors(potential, true_potential, r_range, n).values())


def write_report(
    result: FitResult,
    out_dir: str | Path,
    true_potential: PairPotential | None = None,
    name: str = "diffsim-fit",
    config: FitConfig | None = None,
) -> dict[str, Any]:
    """Write card, plots, history and ``report.md`` for a fit; return the summary dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "method": result.method,
        "states": result.states,
        "rdf_dev": dict(zip(result.states, result.rdf_dev, strict=False)),
        "epochs": len(result.history),
        "wall_time_s": result.wall_time,
        "messages": result.messages,
    }
    if result.selection:
        summary["kept_iterate"] = result.selection
    if true_potential is not None:
        per_pair = u_errors(result.potential, true_potential)
        summary["u_error_max"] = max(per_pair.values())
        summary["u_error_range"] = list(U_COMPARE_RANGE)
        if len(per_pair) > 1 or "all" not in per_pair:
            summary["u_error_per_pair"] = per_pair
    provenance = {
        "method": result.method,
        "targets": ", ".join(result.states),
        "rdf_dev": ", ".join(
            f"{s}: {d:.4g}" for s, d in zip(result.states, result.rdf_dev, strict=False)
        ),
        "epochs": len(result.history),
    }
    if result.selection.get("kept_epoch") is not None:
        provenance["kept_epoch"] = result.selection["kept_epoch"]
        provenance["kept_because"] = result.selection["reason"]
    export_card(
        result.potential,
        out,
        name,
        f"pair potential fitted by DiffSim ({result.method})",
        provenance,
    )

    if result.history:
        keys = sorted({k for row in result.history for k in row})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(result.history)
        atomic_write_text(out / "history.csv", buffer.getvalue())
        fig, ax = plt.subplots(figsize=(5, 3.5))
        epochs = [row["epoch"] for row in result.history]
        ax.semilogy(epochs, [max(row["loss"], 1e-12) for row in result.history])
        if result.selection.get("kept_epoch") is not None:
            ax.axvline(result.selection["kept_epoch"], color="grey", ls=":", label="kept")
            ax.legend()
        ax.set_xlabel("iteration" if result.method == "ibi" else "epoch (optimizer step)")
        ax.set_ylabel("loss")
        ax.set_title(f"{result.method}: loss")
        _save_figure(fig, out / "loss.png")
        plt.close(fig)

    for state, r, g_t, g in zip(
        result.states, result.r, result.g_target, result.g_final, strict=False
    ):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(r, g_t, "k--", lw=1.5, label="target")
        ax.plot(r, g, lw=2, alpha=0.7, label=f"{result.method} (fitted)")
        ax.set_xlabel("r (σ)")
        ax.set_ylabel("g(r)")
        ax.set_title(state)
        ax.legend()
        _save_figure(fig, out / f"rdf_{state}.png")
        plt.close(fig)

    r = np.linspace(0.85, float(result.potential.cutoff), 300)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    truth = dict(pair_components(true_potential)) if true_potential is not None else {}
    for k, (label, phi) in enumerate(pair_components(result.potential)):
        suffix = "" if label == "all" else f" {label}"
        ax.plot(r, potential_curve(phi, r), lw=2, alpha=0.7, color=f"C{k}", label=f"fitted{suffix}")
        if label in truth:
            ax.plot(
                r,
                true_curve(truth[label], r),
                "--",
                color="k" if label == "all" else f"C{k}",
                lw=1.2,
                label=f"true{suffix}",
            )
    ax.set_ylim(-2.0, 4.0)
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_xlabel("r (σ)")
    ax.set_ylabel("U(r) (ε)")
    ax.legend()
    _save_figure(fig, out / "potential.png")
    plt.close(fig)

    lines = [
        f"# DiffSim fit ({result.method})",
        "",
        "| state | rdf_dev (mean abs Δg) |",
        "|---|---|",
        *[f"| {s} | {d:.4g} |" for s, d in zip(result.states, result.rdf_dev, strict=False)],
        "",
        f"- iterations: {len(result.history)}; fit wall time: {result.wall_time:.1f} s",
    ]
    if result.selection:
        lines.append(f"- kept iterate: {result.selection['reason']}")
    if "u_error_max" in summary:
        lo, hi = U_COMPARE_RANGE
        lines.append(f"- max |U − U_true| on [{lo}, {hi}] σ: {summary['u_error_max']:.3g} ε")
        for label, err in summary.get("u_error_per_pair", {}).items():
            lines.append(f"  - {label}: {err:.3g} ε")
    if config is not None and config.method == "newton":
        lines.append(
            f"- settings: {config.newton_iterations} Gauss–Newton iterations of "
            f"{config.newton_frames} frames (every {config.sample_every} steps), knots every "
            f"{config.newton_knot_bins} RDF bins, λ {config.newton_regularization:g}, damping "
            f"{config.newton_damping:g}, production {config.production_steps} steps"
        )
    elif config is not None:
        lines.append(
            f"- settings: lr {config.lr}, window {config.window}, epochs ≤ {config.epochs}, "
            f"production {config.production_steps} steps"
        )
        if config.heldout_every > 0:
            lines.append(
                f"- best iterate by a held-out run of {config.heldout_equilibration} + "
                f"{config.heldout_steps} steps every {config.heldout_every} epochs; back-off "
                f"when above {config.divergence_factor:g}× the best for "
                f"{config.divergence_patience} evaluation(s) in a row"
            )
    lines += ["", "Messages:", *[f"- {m}" for m in result.messages], ""]
    lines += ["Files: card.toml, loss.png, rdf_*.png, potential.png, history.csv, summary.json", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
