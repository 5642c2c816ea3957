"""Report of the materials benchmark: ``report.md`` (tables), ``metrics.json`` and PNG plots
(equation of state, phonon bands model vs reference, phonon DOS, liquid RDF).

Uses the shared helpers of :mod:`ase_mlmd.bench.report` (number formatting, curve plots).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ase_mlmd.bench.report import _fmt, _plot_curves
from ase_mlmd.fileio import atomic_write_text

#: (header, function of a result dict -> value) of the properties table
COLUMNS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("a₀ (Å)", lambda r: r["eos"]["a0_A"]),
    ("V₀ (Å³/atom)", lambda r: r["eos"]["v0_A3_per_atom"]),
    ("E₀ (eV/atom)", lambda r: r["eos"]["e0_eV_per_atom"]),
    ("B (GPa)", lambda r: r["eos"]["bulk_modulus_GPa"]),
    ("C11 (GPa)", lambda r: r["elastic"]["C11"]),
    ("C12 (GPa)", lambda r: r["elastic"]["C12"]),
    ("C44 (GPa)", lambda r: r["elastic"]["C44"]),
    ("(C11+2C12)/3 (GPa)", lambda r: r["elastic"]["B_elastic"]),
    ("E_vac (eV)", lambda r: r["vacancy"]["E_vac_eV"]),
    ("ν_max (THz)", lambda r: r["phonons"]["max_frequency_THz"]),
    ("phonon MAE (THz)", lambda r: r.get("phonon_mae_THz")),
    ("RDF MAE", lambda r: r.get("rdf_mae")),
    ("D (1e-9 m²/s)", lambda r: r["liquid"]["diffusivity"]),
    ("T_liq (K)", lambda r: r["liquid"]["mean_temperature_K"]),
]


def _value(fn: Callable[[dict[str, Any]], Any], result: dict[str, Any]) -> Any:
    try:
        return fn(result)
    except (KeyError, TypeError):
        return None


def properties_table(results: dict[str, dict[str, Any]], reference: str) -> str:
    """One row per calculator (reference first) and one row of relative errors per model."""
    header = ["calculator", *(h for h, _ in COLUMNS), "test E MAE (meV/atom)", "test F MAE (meV/Å)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    ref = results[reference]
    for label, result in results.items():
        cells = [f"{label} (reference)" if label == reference else label]
        cells += [_fmt(_value(fn, result), 4) for _, fn in COLUMNS]
        test = result.get("test", {})
        cells += [
            _fmt(test.get("energy_mae_meV_per_atom")),
            _fmt(test.get("force_mae_meV_per_A")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if label == reference:
            continue
        errors = [f"{label} − ref (%)"]
        for header_text, fn in COLUMNS:
            a, b = _value(fn, result), _value(fn, ref)
            relative = header_text.split(" ")[0] not in ("phonon", "RDF", "T_liq", "E₀")
            if relative and isinstance(a, float) and isinstance(b, float) and b != 0:
                errors.append(f"{100 * (a - b) / abs(b):+.1f}")
            else:
                errors.append("")
        lines.append("| " + " | ".join(errors + ["", ""]) + " |")
    return "\n".join(lines)


def test_table(results: dict[str, dict[str, Any]]) -> str:
    """Test-set force MAE (meV/Å) by configuration type, one row per model."""
    kinds = sorted({k for r in results.values() for k in r.get("test", {}).get("by_type", {})})
    if not kinds:
        return ""
    lines = [
        "| model | " + " | ".join(f"{k} F / E" for k in kinds) + " |",
        "|---|" + "|".join("---" for _ in kinds) + "|",
    ]
    for label, result in results.items():
        by_type = result.get("test", {}).get("by_type")
        if not by_type:
            continue
        cells = []
        for k in kinds:
            g = by_type.get(k)
            cells.append(
                ""
                if g is None
                else f"{g['force_mae_meV_per_A']:.1f} / "
                f"{g['energy_mae_meV_per_atom']:.2f} ({g['n_frames']})"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _styles(results: dict[str, Any], reference: str) -> dict[str, str]:
    colors = iter(["C0", "C1", "C2", "C3", "C4", "C5"])
    return {label: ("k--" if label == reference else f"{next(colors)}-") for label in results}


def write_metal_plots(out: Path, results: dict[str, dict[str, Any]], reference: str) -> list[Path]:
    """eos.png, phonon_bands.png, phonon_dos.png, rdf.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase.eos import birchmurnaghan
    from ase.units import GPa

    styles = _styles(results, reference)
    paths = []
    curves = {}
    for label, r in results.items():
        e = r["eos"]
        v = np.linspace(min(e["volumes_A3_per_atom"]), max(e["volumes_A3_per_atom"]), 100)
        bm = birchmurnaghan(
            v, e["e0_eV_per_atom"], e["bulk_modulus_GPa"] * GPa, e["b_prime"], e["v0_A3_per_atom"]
        )
        curves[f"{label} (B = {e['bulk_modulus_GPa']:.0f} GPa)"] = (v, bm, styles[label])
        curves[f"{label} points"] = (
            e["volumes_A3_per_atom"],
            e["energies_eV_per_atom"],
            styles[label].rstrip("-") + "o",
        )
    paths.append(out / "eos.png")
    _plot_curves(paths[-1], "Equation of state", "V (Å³/atom)", "E (eV/atom)", curves)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, r in sorted(results.items(), key=lambda item: item[0] == reference):
        p = r["phonons"]
        freqs = np.array(p["frequencies_THz"])
        for b in range(freqs.shape[1]):
            ax.plot(
                p["distances"], freqs[:, b], styles[label], lw=1.2, label=label if b == 0 else None
            )
    ref_p = results[reference]["phonons"]
    for x in ref_p["ticks"]:
        ax.axvline(x, color="0.7", lw=0.6)
    ax.set_xticks(ref_p["ticks"], ref_p["labels"])
    ax.set(title="Phonon bands", ylabel="frequency (THz)", xlim=(0, ref_p["distances"][-1]))
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "phonon_bands.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    curves = {
        label: (r["phonons"]["dos_frequencies_THz"], r["phonons"]["dos"], styles[label])
        for label, r in results.items()
    }
    paths.append(out / "phonon_dos.png")
    _plot_curves(paths[-1], "Phonon DOS", "frequency (THz)", "DOS (states/THz)", curves)

    curves = {
        label: (r["liquid"]["r"], r["liquid"]["g"], styles[label]) for label, r in results.items()
    }
    t = results[reference]["liquid"]["mean_temperature_K"]
    paths.append(out / "rdf.png")
    _plot_curves(paths[-1], f"Liquid RDF (~{t:.0f} K)", "r (Å)", "g(r)", curves)
    return paths


def write_metal_report(
    out: Path, results: dict[str, dict[str, Any]], reference: str, element: str, config
) -> Path:
    """report.md, metrics.json and the plots in ``out``; returns report.md's path."""
    from ase_mlmd.observables.rdf import rdf_mae

    ref = results[reference]
    for label, r in results.items():
        if label != reference:
            r["rdf_mae"] = float(
                rdf_mae(
                    np.array(r["liquid"]["g"]), np.array(ref["liquid"]["g"]), ref["liquid"]["r_max"]
                )
            )
    out.mkdir(parents=True, exist_ok=True)
    plots = write_metal_plots(out, results, reference)
    liquid = config.liquid
    strains = ", ±".join(f"{100 * s:g}" for s in config.elastic_strains)
    text = [
        f"# Materials benchmark: {element} (fcc), models vs {reference}",
        "",
        "METRICS.md §6. EOS: Birch–Murnaghan fit (ase.eos) over V₀(1 ± 6 %); elastic constants "
        f"from central stress differences at ±{strains} % "
        "(fourth-order combination); vacancy in a "
        f"{ref['vacancy']['n_atoms']}-atom supercell, relaxed at fixed cell; phonons by phonopy "
        f"(0.01 Å, {ref['phonons']['supercell_repeat']}³ conventional cells, "
        f"{ref['phonons']['supercell_width_A']:.1f} Å), path Γ–X–U|K–Γ–L–W–X, frequency MAE over "
        f"the path; liquid: {len(ref['liquid_start']['positions'])} atoms at "
        f"{liquid.temperature:g} K, density of the reference crystal × {liquid.expansion:g}⁻³, "
        f"common start melted with {reference}, {liquid.equilibration_ps:g} ps equilibration + "
        f"{liquid.production_ps:g} ps production (Bussi, {liquid.timestep_fs:g} fs); RDF MAE as "
        f"METRICS §1 over (0, {ref['liquid']['r_max']:.2f}] Å; D from the MSD at a lag of "
        f"{ref['liquid']['diffusivity_lag_ps']:g} ps. Test errors: frames of the seeded "
        f"80/10/10 split (seed {config.split_seed}).",
        "",
        properties_table(results, reference),
        "",
    ]
    tests = test_table(results)
    if tests:
        text += ["Test force MAE (meV/Å) / energy MAE (meV/atom) (frames) by configuration:", ""]
        text += [tests, ""]
    text += [f"![{p.stem}]({p.name})" for p in plots]
    text += ["", "Relaxed structures (pymatgen CIF): "]
    text += [f"- {label}: `{r['relaxed_cif']}`" for label, r in results.items()]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(text) + "\n")
    summary = {
        "element": element,
        "reference": reference,
        "settings": {**dataclasses.asdict(config), "liquid": dataclasses.asdict(liquid)},
        "results": {
            label: {k: v for k, v in r.items() if k not in ("liquid_start",)}
            for label, r in results.items()
        },
    }
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=1, default=str))
    return report


__all__ = ["properties_table", "test_table", "write_metal_plots", "write_metal_report"]
