"""Report of CG evaluations: a Markdown table and PNG plots (reference vs CG FES side by side,
bond/angle/dihedral distributions), written atomically into one folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ase_mlmd.cg.evaluate import CGEvaluation
from ase_mlmd.fileio import atomic_output, atomic_write_text

REPORT_FILE = "report.md"


def _fmt(value: float, digits: int = 3) -> str:
    return "inf" if not np.isfinite(value) else f"{value:.{digits}g}"


def summary_row(ev: CGEvaluation) -> dict[str, Any]:
    """The headline numbers of one evaluation (JSON-ready)."""
    c = ev.comparison
    return {
        "model": ev.label,
        "frames": ev.n_frames,
        "replicas": ev.n_replicas,
        "fes_mae_kT": c.mae_kT,
        "fes_bins_compared": c.n_compared,
        "fes_bins_missing": c.n_missing,
        "missing_population": c.missing_population,
        "extra_population": c.extra_population,
        "js_phi_psi": ev.js_phi_psi,
        "pmf_mae_phi_kT": ev.pmf_mae_phi,
        "pmf_mae_psi_kT": ev.pmf_mae_psi,
        "js_bonds_mean": float(np.mean(list(ev.js_bonds.values()) or [np.nan])),
        "js_angles_mean": float(np.mean(list(ev.js_angles.values()) or [np.nan])),
        "js_dihedrals_mean": float(np.mean(list(ev.js_dihedrals.values()) or [np.nan])),
        "populations": ev.populations,
        "populations_reference": ev.populations_reference,
    }


def markdown_table(evaluations: dict[str, CGEvaluation]) -> str:
    """One row per simulation: FES MAE, coverage, JS divergences, PMF MAE, region populations."""
    first = next(iter(evaluations.values()))
    regions = list(first.populations_reference)
    head = ["model", "frames", "FES MAE (kT, ref < 4 kT)", "bins compared / missing",
            "missing pop.", "extra pop.", "JS (φ,ψ)", "PMF MAE φ / ψ (kT)",
            "JS bonds / angles / dihedrals (mean)"] + [f"pop. {r}" for r in regions]  # fmt: skip
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref_pop = " / ".join(f"{first.populations_reference[r]:.3f}" for r in regions)
    for ev in evaluations.values():
        s = summary_row(ev)
        cells = [
            ev.label,
            str(ev.n_frames),
            _fmt(s["fes_mae_kT"]),
            f"{s['fes_bins_compared']} / {s['fes_bins_missing']}",
            _fmt(s["missing_population"]),
            _fmt(s["extra_population"]),
            _fmt(s["js_phi_psi"]),
            f"{_fmt(s['pmf_mae_phi_kT'])} / {_fmt(s['pmf_mae_psi_kT'])}",
            f"{_fmt(s['js_bonds_mean'])} / {_fmt(s['js_angles_mean'])} / "
            f"{_fmt(s['js_dihedrals_mean'])}",
        ] + [f"{ev.populations[r]:.3f}" for r in regions]
        rows.append("| " + " | ".join(cells) + " |")
    rows.append("")
    rows.append(f"Reference populations ({', '.join(regions)}): {ref_pop}.")
    return "\n".join(rows)


def _save(fig, path: Path) -> None:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def plot_fes(evaluations: dict[str, CGEvaluation], path: str | os.PathLike) -> Path:
    """Reference FES and each simulation's FES side by side (kT, capped at 8)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(evaluations.values()))
    panels = [("reference", first.fes_reference)] + [(k, e.fes) for k, e in evaluations.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    extent = np.degrees([-np.pi, np.pi, -np.pi, np.pi])
    for ax, (name, free) in zip(axes[0], panels, strict=True):
        shown = np.where(np.isfinite(free), np.minimum(free, 8.0), np.nan)
        image = ax.imshow(shown.T, origin="lower", extent=extent, vmin=0, vmax=8, cmap="viridis")
        ax.set(title=name, xlabel="φ (deg)", ylabel="ψ (deg)")
    fig.colorbar(image, ax=axes[0].tolist(), label="F (kT)")
    path = Path(path)
    _save(fig, path)
    plt.close(fig)
    return path


def plot_distributions(evaluations: dict[str, CGEvaluation], path: str | os.PathLike) -> Path:
    """Histograms of every bond, angle and dihedral: reference and each simulation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(evaluations.values()))
    kinds = [k for k in ("bonds", "angles", "dihedrals") if first.samples_reference[k].shape[1]]
    width = max(first.samples_reference[k].shape[1] for k in kinds)
    fig, axes = plt.subplots(len(kinds), width, figsize=(3.2 * width, 2.6 * len(kinds)),
                             squeeze=False)  # fmt: skip
    for row, kind in enumerate(kinds):
        ref = first.samples_reference[kind]
        for col in range(width):
            ax = axes[row][col]
            if col >= ref.shape[1]:
                ax.axis("off")
                continue
            values = [ref[:, col]] + [e.samples[kind][:, col] for e in evaluations.values()]
            lo = min(v.min() for v in values)
            hi = max(v.max() for v in values)
            edges = np.linspace(lo, hi, 80)
            ax.hist(ref[:, col], edges, density=True, histtype="step", color="k", label="ref")
            for name, ev in evaluations.items():
                ax.hist(ev.samples[kind][:, col], edges, density=True, histtype="step",
                        label=name)  # fmt: skip
            unit = "Å" if kind == "bonds" else "rad"
            ax.set(title=f"{kind[:-1]} {col}", xlabel=unit)
        axes[row][0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    _save(fig, path)
    plt.close(fig)
    return path


def write_report(
    evaluations: dict[str, CGEvaluation],
    directory: str | os.PathLike,
    extra: dict[str, Any] | None = None,
    title: str = "CG simulation vs reference",
) -> Path:
    """``report.md`` (table, plots, extra numbers), ``fes.png``, ``distributions.png`` and
    ``summary.json`` in ``directory``; returns the Markdown file's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plot_fes(evaluations, directory / "fes.png")
    plot_distributions(evaluations, directory / "distributions.png")
    summary = {
        "evaluations": [summary_row(e) for e in evaluations.values()],
        "extra": extra or {},
    }
    atomic_write_text(directory / "summary.json", json.dumps(summary, indent=2) + "\n")
    first = next(iter(evaluations.values()))
    lines = [
        f"# {title}",
        "",
        f"FES over the CG dihedrals {first.dihedral_pair[0]} (φ) and {first.dihedral_pair[1]} "
        "(ψ), 60 × 60 grid, F = −kT ln p in kT; MAE over the bins the reference populates "
        "below 4 kT, after removing the mean offset (free energies are defined up to a "
        "constant). JS: Jensen–Shannon divergence (natural log, max ln 2).",
        "",
        markdown_table(evaluations),
        "",
        "![FES](fes.png)",
        "",
        "![distributions](distributions.png)",
        "",
    ]
    if extra:
        lines += ["## Fit", "", "```json", json.dumps(extra, indent=2), "```", ""]
    return atomic_write_text(directory / REPORT_FILE, "\n".join(lines))
