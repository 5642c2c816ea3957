"""The benchmark report: ``report.md`` (one table), ``metrics.json`` and PNG plots.

The table puts force MAE next to the simulation metrics (stability, h(r)/RDF MAE, diffusivity
error, PMF MAE) so the point of Fu et al. is visible at a glance: a lower force error does not
by itself make a model stable or its observables right.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ase_mlmd.bench.metrics import PMF_CLIP_KJ_PER_MOL, ReferenceObservables
from ase_mlmd.bench.protocol import BenchConfig, ModelRun
from ase_mlmd.bench.systems import CONDENSED, MOLECULE, PEPTIDE
from ase_mlmd.fileio import atomic_write_text


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _mean_std(values: Sequence[float]) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3g} ± {values.std():.2g}"


def table_columns(kind: str, runs: Sequence[ModelRun]) -> list[tuple[str, Any]]:
    """(header, function of a ModelRun -> cell text) for the system kind's table."""
    columns: list[tuple[str, Any]] = [
        ("model", lambda r: r.name),
        ("force MAE (meV/Å)", lambda r: f"{r.force_mae_meV_A:.1f}"),
        ("stability (ps)", lambda r: _mean_std(r.metrics["stability_ps"])),
        ("collapsed", lambda r: f"{r.metrics['n_collapsed']}/{len(r.replicas)}"),
    ]
    if kind in (MOLECULE, PEPTIDE):
        columns.append(("h(r) MAE", lambda r: _fmt(r.metrics.get("hr_mae"))))
    if kind == CONDENSED:
        pairs = sorted({p for r in runs for p in r.metrics.get("rdf_mae", {})})
        for pair in pairs:
            columns.append(
                (f"RDF MAE {pair}", lambda r, p=pair: _fmt(r.metrics.get("rdf_mae", {}).get(p)))
            )
        columns.append(("D (1e-9 m²/s)", lambda r: _fmt(r.metrics.get("diffusivity"))))
        columns.append(("D error (1e-9 m²/s)", lambda r: _fmt(r.metrics.get("diffusivity_error"))))
    if kind == PEPTIDE:
        cap = f"≤ {PMF_CLIP_KJ_PER_MOL:g}"
        columns.append((f"PMF φ MAE (kJ/mol, {cap})", lambda r: _fmt(r.metrics.get("pmf_phi_mae"))))
        columns.append((f"PMF ψ MAE (kJ/mol, {cap})", lambda r: _fmt(r.metrics.get("pmf_psi_mae"))))
    columns.append(("wall (s)", lambda r: f"{r.wall_time_s:.0f}"))
    return columns


def markdown_table(kind: str, runs: Sequence[ModelRun]) -> str:
    """The report's table, one row per model."""
    columns = table_columns(kind, runs)
    lines = [
        "| " + " | ".join(h for h, _ in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for run in runs:
        lines.append("| " + " | ".join(f(run) for _, f in columns) + " |")
    return "\n".join(lines)


def metrics_json(
    runs: Sequence[ModelRun], config: BenchConfig, reference: ReferenceObservables
) -> dict:
    """JSON-ready record of the run: settings, reference facts and every model's metrics."""
    system = config.protocol
    length = system.length(config.short, config.length_ps)
    return {
        "system": system.name,
        "protocol": {
            "ensemble": system.ensemble,
            "timestep_fs": system.timestep_fs,
            "temperature_K": system.temperature_K,
            "length_ps": length,
            "save_every_ps": system.save_every_ps,
            "replicas": config.replicas,
            "seed": config.seed,
            "short": config.short,
        },
        "reference": reference.summary(),
        "models": [
            {
                "name": r.name,
                "source": r.source,
                "force_mae_meV_A": r.force_mae_meV_A,
                "wall_time_s": r.wall_time_s,
                "replicas": [
                    {
                        "replica": rep.index,
                        "start_frame": rep.start_frame,
                        "status": rep.status,
                        "collapse_time_ps": rep.collapse_time_ps,
                        "frames": len(rep.frames),
                        "trajectory": str(rep.trajectory),
                        "message": rep.message,
                    }
                    for rep in r.replicas
                ],
                **r.metrics,
            }
            for r in runs
        ],
    }


def _plot_curves(path: Path, title: str, xlabel: str, ylabel: str, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (x, y, style) in curves.items():
        ax.plot(x, y, style, label=label, lw=1.5)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plots(
    out: Path, runs: Sequence[ModelRun], reference: ReferenceObservables, kind: str
) -> list[Path]:
    """PNG overlays (h(r) / RDF / PMF per model vs reference) and stability per replica."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if kind in (MOLECULE, PEPTIDE) and reference.hr is not None:
        curves = {"reference": (*reference.hr, "k-")}
        for run in runs:
            if "hr" in run.curves:
                curves[run.name] = (*run.curves["hr"], "-")
        path = out / "hr.png"
        _plot_curves(path, "h(r): intramolecular distances", "r (Å)", "h(r) (1/Å)", curves)
        written.append(path)
    if kind == CONDENSED and reference.rdf is not None:
        r, g_ref = reference.rdf
        for pair, g in g_ref.items():
            curves = {"reference": (r, g, "k-")}
            for run in runs:
                if "rdf" in run.curves and pair in run.curves["rdf"][1]:
                    curves[run.name] = (run.curves["rdf"][0], run.curves["rdf"][1][pair], "-")
            path = out / f"rdf_{pair}.png"
            _plot_curves(path, f"RDF {pair}", "r (Å)", "g(r)", curves)
            written.append(path)
    if kind == PEPTIDE and reference.pmf is not None:
        for name in ("phi", "psi"):
            grid, pmf = reference.pmf[name]
            curves = {"reference": (np.degrees(grid), pmf, "k-")}
            for run in runs:
                if f"pmf_{name}" in run.curves:
                    curves[run.name] = (np.degrees(grid), run.curves[f"pmf_{name}"], "-")
            path = out / f"pmf_{name}.png"
            _plot_curves(path, f"PMF {name}", f"{name} (degrees)", "PMF (kJ/mol)", curves)
            written.append(path)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / max(len(runs), 1)
    for k, run in enumerate(runs):
        values = run.metrics["stability_ps"]
        ax.bar(np.arange(len(values)) + k * width, values, width=width, label=run.name)
    ax.set(xlabel="replica", ylabel="stable time (ps)", title="stability per replica")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "stability.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
    return written


def write_report(
    output: str | os.PathLike,
    runs: Sequence[ModelRun],
    config: BenchConfig,
    reference: ReferenceObservables,
    *,
    reference_name: str = "reference",
) -> Path:
    """Write ``report.md``, ``metrics.json`` and the plots into ``output``; return report.md."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    system = config.protocol
    record = metrics_json(runs, config, reference)
    atomic_write_text(out / "metrics.json", json.dumps(record, indent=2, default=float) + "\n")
    plots = write_plots(out, runs, reference, system.kind)
    length = system.length(config.short, config.length_ps)
    lines = [
        f"# MD benchmark: {system.name}",
        "",
        f"Reference: `{reference_name}` ({reference.n_frames} frames). "
        f"Protocol: {system.ensemble}, "
        f"{system.temperature_K:g} K, dt {system.timestep_fs:g} fs, {length:g} ps per replica"
        f"{' (short mode)' if config.short else ''}, {config.replicas} replicas from test frames, "
        f"seed {config.seed}. Definitions: METRICS.md §1 (Fu et al., MDsim).",
        "",
        markdown_table(system.kind, runs),
        "",
    ]
    notes = sorted({n for r in runs for n in r.metrics.get("notes", [])})
    if notes:
        lines += ["Notes:", *[f"- {n}" for n in notes], ""]
    lines += ["Plots:", *[f"- ![{p.stem}]({p.name})" for p in plots], ""]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    return report
