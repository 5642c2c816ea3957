"""Evaluation of backmapped frames against all-atom reference frames: pairing, metrics, and a
report (Markdown table, ``metrics.json``, PNG plots) written atomically into one folder.

Pairing (:func:`pair_frames`): generated frame ``g`` belongs to reference frame
``info["cg_frame"]`` (what ``ase-mlmd backmap run`` writes); without that key, the generated
frames are read as consecutive blocks of S samples per reference frame (``len(generated)``
must then be a multiple of ``len(reference)``). Every reference frame needs the same number of
samples. A generated structure has the reference molecule's atoms in its order, or a subset of
them named by ``arrays["reference_index"]`` (PULCHRA builds heavy atoms only): the comparison
is then over that subset.

Bonds for clashes and bond/angle errors: the geometric bond graph of the first reference frame
(:func:`ase_mlmd.cg.frames.bond_graph`, 1.2 × ASE's natural cutoffs), restricted to the atoms
compared.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ase_mlmd.backmap.metrics import backmap_metrics, metric_names, subset_bonds
from ase_mlmd.cg.frames import bond_graph
from ase_mlmd.errors import DataFormatError, IncompatibleTrajectoriesError
from ase_mlmd.fileio import atomic_output, atomic_write_text

REPORT_FILE = "report.md"

#: headline metrics in the table and the per-resolution plot, with their labels
HEADLINE = {
    "rmsd_heavy": "RMSD heavy (Å)",
    "rmsd_all": "RMSD all (Å)",
    "rmsd_sample_heavy": "RMSD_sample heavy (Å)",
    "validity_heavy": "valid heavy",
    "validity_all": "valid all",
    "ged_heavy": "GED heavy abs. (signed)",
    "ged_all": "GED all abs. (signed)",
    "clash_ratio": "clash ratio (ref.)",
    "clash_ratio_heavy": "clash heavy (ref.)",
    "valid_clash_free": "valid & clash-free",
    "bond_mae": "bond MAE (Å) / JS",
    "angle_mae": "angle MAE (°) / JS",
    "energy_median": "ΔE median / p90 (kJ/mol)",
}


@dataclass(frozen=True)
class PairedFrames:
    """Reference (F, K, 3) and generated (F, S, K, 3) positions (Å) over the K atoms compared
    (``atoms``: their indices in the reference molecule), numbers (K,), bonds among them."""

    reference: np.ndarray
    generated: np.ndarray
    numbers: np.ndarray
    atoms: np.ndarray
    bonds: np.ndarray


def pair_frames(reference: Sequence[Atoms], generated: Sequence[Atoms]) -> PairedFrames:
    """Group generated frames by the reference frame they belong to (module docstring).

    Raises:
        DataFormatError: no frames; ``cg_frame`` out of range; unequal sample counts.
        IncompatibleTrajectoriesError: another molecule or atom order (names the first atom
            that differs), or generated frames of different atom sets.
    """
    if len(reference) == 0:
        raise DataFormatError("the reference file has no frames (--reference)")
    if len(generated) == 0:
        raise DataFormatError("the generated file has no frames (--generated)")
    n_ref, numbers = len(reference[0]), np.asarray(reference[0].numbers)
    for k, atoms in enumerate(reference):
        if len(atoms) != n_ref or not np.array_equal(atoms.numbers, numbers):
            raise IncompatibleTrajectoriesError(
                f"reference frame {k} is another molecule than reference frame 0"
            )
    first = generated[0]
    if "reference_index" not in first.arrays and len(first) != n_ref:
        raise IncompatibleTrajectoriesError(
            f"generated frame 0 has {len(first)} atoms, the reference {n_ref}: the files hold "
            "different molecules; backmap the CG frames of the --reference molecule"
        )
    atoms_idx = np.asarray(first.arrays.get("reference_index", np.arange(len(first))), dtype=int)
    if atoms_idx.size and (atoms_idx.min() < 0 or atoms_idx.max() >= n_ref):
        raise IncompatibleTrajectoriesError(
            f"generated frames name reference atoms up to {atoms_idx.max()}, but the reference "
            f"has {n_ref} atoms: is --reference the backmapped molecule?"
        )
    expected = numbers[atoms_idx]
    for g, atoms in enumerate(generated):
        idx = np.asarray(atoms.arrays.get("reference_index", np.arange(len(atoms))), dtype=int)
        if len(atoms) != len(atoms_idx) or not np.array_equal(idx, atoms_idx):
            raise IncompatibleTrajectoriesError(
                f"generated frame {g} has {len(atoms)} atoms, the reference {n_ref} (generated "
                f"frame 0: {len(atoms_idx)}): the files hold different molecules; backmap the "
                "CG frames of the --reference molecule"
            )
        differ = np.flatnonzero(atoms.numbers != expected)
        if differ.size:
            i = int(differ[0])
            raise IncompatibleTrajectoriesError(
                f"atom {i} of generated frame {g} is {atoms.get_chemical_symbols()[i]} but "
                f"{Atoms(numbers=expected[i : i + 1]).get_chemical_symbols()[0]} in the "
                "reference: the molecule or the atom order differs from --reference"
            )
    owners = [a.info.get("cg_frame") for a in generated]
    if all(o is not None for o in owners):
        owners = np.asarray(owners, dtype=int)
        if owners.min() < 0 or owners.max() >= len(reference):
            raise DataFormatError(
                f"generated frames refer to CG frame {owners.max()}, but --reference has "
                f"{len(reference)} frames: give the reference frames the CG frames came from "
                "(the same --index)"
            )
    elif len(generated) % len(reference):
        raise DataFormatError(
            f"{len(generated)} generated frames without info['cg_frame'] cannot be split into "
            f"equal blocks for {len(reference)} reference frames"
        )
    else:
        owners = np.repeat(np.arange(len(reference)), len(generated) // len(reference))
    counts = np.bincount(owners, minlength=len(reference))
    if counts.min() != counts.max():
        raise DataFormatError(
            f"reference frames have between {counts.min()} and {counts.max()} generated "
            "samples; every reference frame needs the same number (use --index to select the "
            "reference frames that were backmapped)"
        )
    order = np.argsort(owners, kind="stable")
    gen = np.stack([generated[i].get_positions() for i in order])
    gen = gen.reshape(len(reference), counts[0], len(atoms_idx), 3)
    ref = np.stack([a.get_positions() for a in reference])
    bonds = subset_bonds(bond_graph(reference[0]), atoms_idx, n_ref)
    return PairedFrames(ref[:, atoms_idx], gen, expected, atoms_idx, bonds)


def evaluate(paired: PairedFrames, system=None, energy_frames: int | None = 200) -> dict:
    """:func:`~ase_mlmd.backmap.metrics.backmap_metrics` of paired frames; ``system`` (OpenMM,
    for the whole molecule) adds energies when all atoms are compared."""
    if system is not None and len(paired.atoms) != system.getNumParticles():
        system = None  # energies need every atom
    out = backmap_metrics(
        paired.reference,
        paired.generated,
        paired.numbers,
        paired.bonds,
        system=system,
        energy_frames=energy_frames,
    )
    out["n_atoms_compared"] = len(paired.atoms)
    return out


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(value)
    return "nan" if not np.isfinite(value) else f"{value:.{digits}g}"


def markdown_table(results: dict[str, dict]) -> str:
    """One row per run: the headline metrics (signed GED, reference clash floor, JS beside)."""
    head = ["run", "frames × samples", "atoms"] + list(HEADLINE.values())
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, m in results.items():
        cells = [label, f"{m['n_frames']} × {m['n_samples']}", str(m["n_atoms_compared"])]
        for key in HEADLINE:
            value = _fmt(m.get(key))
            if key.startswith("ged_"):
                value += f" ({_fmt(m.get(key.replace('ged_', 'ged_signed_')))})"
            elif key.startswith("clash_ratio"):
                value += f" ({_fmt(m.get(key + '_reference'))})"
            elif key in ("bond_mae", "angle_mae"):
                value += f" / {_fmt(m.get(key.replace('mae', 'js')))}"
            elif key == "energy_median" and "energy_p90" in m:
                value += f" / {_fmt(m['energy_p90'])}"
            cells.append(value)
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _pyplot().close(fig)
    return path


def plot_resolution(results: dict[str, dict], resolutions: Sequence[float] | None, path) -> Path:
    """Headline metrics against resolution (beads) or run order, one panel per metric."""
    plt = _pyplot()
    keys = ["rmsd_heavy", "rmsd_all", "validity_heavy", "ged_heavy", "clash_ratio_heavy"]
    keys.append("bond_mae")
    labels = list(results)
    x = list(resolutions) if resolutions else list(range(len(labels)))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 3.0))
    for ax, key in zip(axes, keys, strict=True):
        ax.plot(x, [results[k].get(key, np.nan) for k in labels], "o-" if resolutions else "o")
        ax.set(title=HEADLINE.get(key, key).split(" (")[0], xlabel="beads" if resolutions else "")
        if not resolutions:
            ax.set_xticks(x, labels, rotation=45, fontsize=7)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_overlay(paired: PairedFrames, label: str, path, frame: int = 0) -> Path:
    """Reference frame ``frame`` (black) and its generated samples (coloured), bonds drawn,
    projected on the reference's two principal axes."""
    plt = _pyplot()
    ref = paired.reference[frame]
    centre = ref.mean(axis=0)
    _, _, axes = np.linalg.svd(ref - centre)
    project = lambda x: (x - centre) @ axes[:2].T  # noqa: E731
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for s, x in enumerate(paired.generated[frame][:5]):
        p = project(x)
        for i, j in paired.bonds:
            ax.plot(*p[[i, j]].T, color=f"C{s}", lw=1, alpha=0.7)
    p = project(ref)
    for i, j in paired.bonds:
        ax.plot(*p[[i, j]].T, color="k", lw=2)
    ax.set(title=f"{label}: frame {frame} (black: reference)", xlabel="PC1 (Å)", ylabel="PC2 (Å)")
    ax.set_aspect("equal")
    return _save(fig, Path(path))


def write_report(
    results: dict[str, dict],
    paired: dict[str, PairedFrames],
    directory: str | os.PathLike,
    resolutions: Sequence[float] | None = None,
    title: str = "Backmapping vs reference",
    notes: Sequence[str] = (),
) -> Path:
    """``report.md``, ``metrics.json``, ``overlay_<run>.png`` per run and, with several runs,
    ``resolution.png``; returns the Markdown file's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# {title}",
        "",
        "Definitions: METRICS.md §4 and ase_mlmd.backmap.metrics. RMSD unaligned; bond graph "
        "d < 1.3 (r_cov,i + r_cov,j) (ASE covalent radii); GED = Σ|A_ref − A_gen| / ΣA_ref with "
        "the signed Σ(A_ref − A_gen) / ΣA_ref (CGVAE's code) in brackets; clash = a pair > 3 "
        "bonds apart closer than 0.8 × (r_vdW,i + r_vdW,j) (ASE/Bondi radii), the reference "
        "frames' own ratio in brackets; bond/angle MAE paired by frame, JS of pooled "
        "histograms; ΔE = E(generated) − E(reference frame) under the reference force field.",
        "",
        markdown_table(results),
        "",
        *notes,
        "",
    ]
    for label, pairs in paired.items():
        name = f"overlay_{_safe(label)}.png"
        plot_overlay(pairs, label, directory / name)
        lines += [f"![{label}]({name})", ""]
    if len(results) > 1:
        plot_resolution(results, resolutions, directory / "resolution.png")
        lines += ["![per-resolution metrics](resolution.png)", ""]
    clean = {k: {m: results[k][m] for m in metric_names(list(results[k]))} for k in results}
    atomic_write_text(directory / "metrics.json", json.dumps(clean, indent=2) + "\n")
    return atomic_write_text(directory / REPORT_FILE, "\n".join(lines))


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
