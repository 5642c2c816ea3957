"""Evaluation report of generated conformers against reference ensembles: Markdown + CSV + PNG.

``write_report(rows, folder)`` writes ``metrics.csv`` (one row per molecule), ``report.md``
(mean and median over molecules of COV-R, MAT-R, COV-P, MAT-P, and of the energies above the
reference minimum when the rows carry them) and ``cov_mat.png`` (per-molecule distributions).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ase_mlmd.conformers.metrics import DELTA, METRIC_NAMES, summarize
from ase_mlmd.fileio import atomic_output, atomic_write_text

__all__ = ["summary_table", "write_report"]

_LABELS = {
    "cov_r": ("COV-R", "%", 100.0),
    "mat_r": ("MAT-R", "Å", 1.0),
    "cov_p": ("COV-P", "%", 100.0),
    "mat_p": ("MAT-P", "Å", 1.0),
    "e_min": ("lowest E above ref. min", "kcal/mol", 1.0),
    "e_median": ("median E above ref. min", "kcal/mol", 1.0),
}


def summary_table(summaries: Mapping[str, Mapping[str, float]], delta: float = DELTA) -> str:
    """Markdown table, one row per method: mean / median of each metric present."""
    names = [n for n in _LABELS if any(f"{n}_mean" in s for s in summaries.values())]
    head = ["method", "molecules"] + [
        f"{_LABELS[n][0]} ({_LABELS[n][1]}) mean / median" for n in names
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, s in summaries.items():
        cells = [method, str(int(s.get("n_molecules", 0)))]
        for n in names:
            scale = _LABELS[n][2]
            if f"{n}_mean" in s:
                cells.append(f"{scale * s[f'{n}_mean']:.3g} / {scale * s[f'{n}_median']:.3g}")
            else:
                cells.append("—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nδ = {delta} Å (COV), heavy atoms, symmetry-aware RMSD.\n"


def write_report(
    rows: Sequence[Mapping],
    folder: str | os.PathLike,
    *,
    title: str = "Conformer evaluation",
    delta: float = DELTA,
    method: str = "generated",
) -> dict[str, float]:
    """Write ``metrics.csv``, ``report.md`` and ``cov_mat.png`` into ``folder``; returns the
    summary (:func:`~.metrics.summarize`, energies included when present)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(METRIC_NAMES) + [
        n for n in ("e_min", "e_mean", "e_median") if rows and n in rows[0]
    ]
    summary = summarize(rows, names)
    columns = sorted({k for r in rows for k in r}, key=lambda k: (k != "id", k))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(folder / "metrics.csv", buf.getvalue())
    missing = [r["id"] for r in rows if r.get("missing")]
    text = [f"# {title}\n", summary_table({method: summary}, delta)]
    if missing:
        text.append(f"\nMolecules without generated structures ({len(missing)}): "
                    f"{', '.join(missing)}\n")  # fmt: skip
    text.append("\nPer molecule: metrics.csv. Distributions: ![COV/MAT](cov_mat.png)\n")
    atomic_write_text(folder / "report.md", "".join(text))
    _plot(rows, folder / "cov_mat.png", delta)
    return summary


def _plot(rows: Sequence[Mapping], path: Path, delta: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [r for r in rows if not r.get("missing")]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for ax, name in zip(axes, METRIC_NAMES, strict=True):
        label, unit, scale = _LABELS[name]
        values = scale * np.array([r[name] for r in present], dtype=float)
        ax.hist(values, bins=20, color="C0" if name.endswith("_r") else "C1")
        ax.set_xlabel(f"{label} ({unit})")
        ax.set_ylabel("molecules")
    fig.suptitle(f"per-molecule coverage and matching (δ = {delta} Å)")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
