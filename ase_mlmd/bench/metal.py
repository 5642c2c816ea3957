"""The materials benchmark (METRICS.md §6): models against a reference on an fcc metal.

``metal_benchmark(models, reference_frames, output)`` takes the element from the labelled
reference frames (e.g. from :func:`ase_mlmd.data.materials.sample_metal_dataset`) and the
reference calculator from their ``info["reference"]`` (``emt``), and computes for the
reference and every model:

* the test-set energy and force errors (the frames' seeded 80/10/10 split, seed 123 — the
  split ``ase-mlmd train`` uses by default — per configuration type);
* the equation of state and the relaxed lattice (:mod:`ase_mlmd.bench.metal_crystal`); the
  relaxed crystal is also written as a CIF through pymatgen;
* C11, C12, C44 from central stress differences; the vacancy formation energy (≥ 100 atoms);
* phonon bands and DOS with phonopy (:mod:`ase_mlmd.bench.metal_phonons`) and the frequency
  MAE against the reference;
* the liquid RDF and diffusivity (:mod:`ase_mlmd.bench.metal_liquid`), every run starting from
  one liquid melted with the reference.

Each calculator's results are cached in ``output/results/<label>.json`` as soon as they are
computed: an interrupted benchmark run again with the same settings continues where it
stopped. The report (``report.md``, ``metrics.json``, PNGs) is written by
:mod:`ase_mlmd.bench.metal_report`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from ase_mlmd.bench.metal_crystal import (
    ELASTIC_STRAINS,
    cubic_elastic_constants,
    relax_lattice,
    to_pymatgen,
    vacancy_formation_energy,
)
from ase_mlmd.bench.metal_liquid import LiquidConfig, liquid_observables, liquid_run, melt
from ase_mlmd.bench.metal_phonons import (
    calculator_cutoff,
    fcc_phonons,
    frequency_mae,
    phonon_repeat,
)
from ase_mlmd.errors import DataFormatError
from ase_mlmd.fileio import atomic_write_text

#: version of the cached per-calculator results (bump when their content changes)
RESULTS_VERSION = 1


@dataclasses.dataclass
class MetalBenchConfig:
    """Settings of the materials benchmark.

    Attributes:
        liquid: the liquid runs (:class:`~ase_mlmd.bench.metal_liquid.LiquidConfig`).
        phonon_repeat: phonon supercell repeat of the conventional cell (default: every side
            ≥ 10 Å and ≥ 2 × cutoff).
        vacancy_min_atoms: smallest vacancy supercell (perfect crystal atoms).
        elastic_strains: strain amplitudes of the central differences.
        split_seed: seed of the 80/10/10 split whose test part gives the force errors.
        max_test_frames: at most this many test frames.
        device, trust: how model cards are loaded.
        threads: torch/OpenMP threads (None: leave them).
        progress: progress lines.
    """

    liquid: LiquidConfig = dataclasses.field(default_factory=LiquidConfig)
    phonon_repeat: int | None = None
    vacancy_min_atoms: int = 100
    elastic_strains: tuple[float, ...] = ELASTIC_STRAINS
    split_seed: int = 123
    max_test_frames: int = 200
    device: str = "cpu"
    trust: bool = False
    threads: int | None = None
    progress: bool = True

    def fingerprint(self) -> dict[str, Any]:
        """The settings a cached result must have been computed with."""
        return {
            "version": RESULTS_VERSION,
            "liquid": dataclasses.asdict(self.liquid),
            "phonon_repeat": self.phonon_repeat,
            "vacancy_min_atoms": self.vacancy_min_atoms,
            "elastic_strains": list(self.elastic_strains),
            "split_seed": self.split_seed,
            "max_test_frames": self.max_test_frames,
        }


def metal_element(frames: Sequence[Atoms], where: str) -> str:
    """The one element of the reference frames.

    Raises:
        DataFormatError: no frames, or more than one element.
    """
    if not frames:
        raise DataFormatError(f"{where} holds no frames; give labelled frames of an fcc metal")
    symbols = {s for f in frames for s in f.get_chemical_symbols()}
    if len(symbols) != 1:
        raise DataFormatError(
            f"the metal benchmark is for one fcc element, but {where} holds "
            f"{', '.join(sorted(symbols))}; give frames of one metal (ase-mlmd sample ELEMENT "
            "--reference emt --materials)"
        )
    return symbols.pop()


def reference_of(frames: Sequence[Atoms], where: str) -> BaseCalculator:
    """The reference calculator named by the frames' ``info["reference"]`` (e.g. ``emt``).

    Raises:
        DataFormatError: the frames do not say which reference labelled them.
    """
    from ase_mlmd.data.reference import reference_calculator

    names = {f.info.get("reference") for f in frames}
    if len(names) != 1 or None in names:
        raise DataFormatError(
            f"the frames of {where} must all name their reference (info 'reference', e.g. "
            f"emt; found {sorted(map(str, names))}); label them with ase-mlmd label --reference"
        )
    return reference_calculator(names.pop())


def test_errors(calc: BaseCalculator, frames: Sequence[Atoms]) -> dict[str, Any]:
    """Energy (meV/atom) and force (meV/Å) MAE of ``calc`` on labelled frames, overall and per
    ``info["config_type"]``."""
    groups: dict[str, list[tuple[float, float]]] = {}
    e_err, f_err = [], []
    for frame in frames:
        atoms = frame.copy()
        atoms.calc = calc
        de = abs(atoms.get_potential_energy() - frame.get_potential_energy()) / len(frame)
        df = np.abs(atoms.get_forces() - frame.get_forces()).ravel()
        e_err.append(de)
        f_err.append(df)
        kind = str(frame.info.get("config_type", "all")).split("_")[0]
        groups.setdefault(kind, []).append((de, float(df.mean())))
    return {
        "energy_mae_meV_per_atom": 1000 * float(np.mean(e_err)),
        "force_mae_meV_per_A": 1000 * float(np.mean(np.concatenate(f_err))),
        "n_frames": len(frames),
        "by_type": {
            k: {
                "energy_mae_meV_per_atom": 1000 * float(np.mean([e for e, _ in v])),
                "force_mae_meV_per_A": 1000 * float(np.mean([f for _, f in v])),
                "n_frames": len(v),
            }
            for k, v in sorted(groups.items())
        },
    }


def calculator_properties(
    crystal: Atoms,
    calc: BaseCalculator,
    liquid_start: Atoms,
    config: MetalBenchConfig,
    *,
    label: str,
    test_frames: Sequence[Atoms] = (),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every §6 property of one calculator (dict, JSON-ready apart from numpy arrays)."""
    start = time.monotonic()
    out: dict[str, Any] = {"label": label}
    if test_frames:
        log(f"metal bench: {label}: errors on {len(test_frames)} test frames")
        out["test"] = test_errors(calc, test_frames)
    log(f"metal bench: {label}: equation of state and relaxed lattice")
    relaxed, eos = relax_lattice(crystal, calc)
    out["relaxed_cell"] = relaxed.cell.array.tolist()
    out["eos"] = eos.summary()
    log(f"metal bench: {label}: elastic constants")
    out["elastic"] = cubic_elastic_constants(relaxed, calc, config.elastic_strains)
    log(f"metal bench: {label}: vacancy formation energy")
    out["vacancy"] = vacancy_formation_energy(relaxed, calc, config.vacancy_min_atoms)
    log(f"metal bench: {label}: phonons")
    cutoff = calculator_cutoff(calc, relaxed)
    phonons = fcc_phonons(relaxed, calc, repeat=config.phonon_repeat, cutoff=cutoff)
    out["phonons"] = {
        **phonons.summary(),
        "cutoff_A": cutoff,
        "distances": phonons.distances.tolist(),
        "frequencies_THz": phonons.frequencies.tolist(),
        "ticks": phonons.ticks,
        "labels": phonons.labels,
        "dos_frequencies_THz": phonons.dos_frequencies.tolist(),
        "dos": phonons.dos.tolist(),
    }
    log(f"metal bench: {label}: liquid at {config.liquid.temperature:g} K")
    run = liquid_run(liquid_start, calc, config.liquid, progress=config.progress, label=label)
    liquid = liquid_observables(run, config.liquid)
    out["liquid"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in liquid.items()}
    out["wall_time_s"] = time.monotonic() - start
    return out


def _cached(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("settings") == fingerprint else None


def _label(model: str | os.PathLike | BaseCalculator) -> str:
    from ase_mlmd.bench.protocol import model_label

    if isinstance(model, BaseCalculator):
        return getattr(model, "model_name", None) or type(model).__name__
    return model_label(model)


def metal_benchmark(
    models: Sequence[str | os.PathLike | BaseCalculator],
    reference: str | os.PathLike | Sequence[Atoms],
    output: str | os.PathLike,
    config: MetalBenchConfig | None = None,
    *,
    structure: Any = None,
    reference_calc: BaseCalculator | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Run the materials benchmark and write the report; returns (report.md, results by label).

    Args:
        models: card names/paths, or ASE calculators (tests: EMT as a "model").
        reference: labelled frames of one fcc metal, or a file of them.
        output: report folder.
        config: settings (default :class:`MetalBenchConfig`).
        structure: the crystal (cubic fcc cell: ``Atoms``, pymatgen ``Structure``, or a file
            pymatgen reads); default ``ase.build.bulk(element, "fcc", cubic=True)``.
        reference_calc: the reference calculator (default: by the frames' ``reference``).

    Raises:
        DataFormatError: frames of several elements or without a reference name.
        UnsupportedSpeciesError: a model card without the element.
        PhononSupercellError: ``config.phonon_repeat`` too small for a calculator's cutoff.
    """
    from ase_mlmd.bench.metal_report import write_metal_report
    from ase_mlmd.bench.protocol import check_model_species
    from ase_mlmd.calculators.registry import load_calculator
    from ase_mlmd.data.materials import fcc_crystal, read_crystal
    from ase_mlmd.data.readers import read_frames
    from ase_mlmd.data.splits import split_indices
    from ase_mlmd.threads import thread_limit

    config = config or MetalBenchConfig()
    where = str(reference) if isinstance(reference, str | os.PathLike) else "the reference"
    frames = read_frames(reference) if isinstance(reference, str | os.PathLike) else reference
    frames = list(frames)
    element = metal_element(frames, where)
    ref_calc = reference_calc or reference_of(frames, where)
    ref_label = getattr(ref_calc, "reference_name", None) or type(ref_calc).__name__
    if isinstance(structure, str | os.PathLike):
        structure = read_crystal(structure)
    crystal = fcc_crystal(element if structure is None else structure)
    # a too small phonon supercell fails before any work (reference first, then each model)
    phonon_repeat(crystal, calculator_cutoff(ref_calc, crystal), config.phonon_repeat)
    calcs: dict[str, BaseCalculator] = {}
    for model in models:
        label = _label(model)
        if isinstance(model, BaseCalculator):
            calc = model
        else:
            calc = load_calculator(model, device=config.device, trust=config.trust)
            check_model_species(calc, crystal, label)
        phonon_repeat(crystal, calculator_cutoff(calc, crystal), config.phonon_repeat)
        calcs[label] = calc
    split = split_indices(len(frames), (0.8, 0.1, 0.1), seed=config.split_seed)
    test = [frames[i] for i in split.test[: config.max_test_frames]]
    out = Path(output)
    fingerprint = {**config.fingerprint(), "element": element, "reference": ref_label}
    results: dict[str, dict[str, Any]] = {}
    with thread_limit(config.threads):
        ref_path = out / "results" / "reference.json"
        ref = _cached(ref_path, fingerprint)
        if ref is None:
            ref_relaxed, _ = relax_lattice(crystal, ref_calc)
            log(f"metal bench: melting {element} with {ref_label} (the common liquid start)")
            start = melt(ref_relaxed, ref_calc, config.liquid)
            ref = calculator_properties(crystal, ref_calc, start, config, label=ref_label, log=log)
            ref["liquid_start"] = {
                "positions": start.positions.tolist(),
                "momenta": start.get_momenta().tolist(),
                "cell": start.cell.array.tolist(),
            }
            _save(ref_path, ref, fingerprint)
        results[ref_label] = ref
        start = crystal.repeat(config.liquid.repeat)
        start.set_cell(ref["liquid_start"]["cell"])
        start.positions = np.array(ref["liquid_start"]["positions"])
        start.set_momenta(np.array(ref["liquid_start"]["momenta"]))
        for label, calc in calcs.items():
            path = out / "results" / f"{_safe(label)}.json"
            result = _cached(path, fingerprint)
            if result is None:
                result = calculator_properties(
                    crystal, calc, start, config, label=label, test_frames=test, log=log
                )
                _save(path, result, fingerprint)
            results[label] = result
    for label, result in results.items():
        cell = np.array(result["relaxed_cell"])
        relaxed = crystal.copy()
        relaxed.set_cell(cell, scale_atoms=True)
        cif = out / "structures" / f"{_safe(label)}_relaxed.cif"
        atomic_write_text(cif, to_pymatgen(relaxed).to(fmt="cif"))
        result["relaxed_cif"] = str(cif.relative_to(out))
    for label, result in results.items():
        if label != ref_label:
            result["phonon_mae_THz"] = frequency_mae_of(result, ref)
    report = write_metal_report(out, results, ref_label, element, config)
    return report, results


def frequency_mae_of(result: dict[str, Any], reference: dict[str, Any]) -> float:
    """Phonon frequency MAE (THz) of two cached results (same path)."""
    from ase_mlmd.bench.metal_phonons import PhononResult

    def bands(r: dict[str, Any]) -> PhononResult:
        p = r["phonons"]
        empty = np.zeros(0)
        return PhononResult(
            np.array(p["distances"]), np.array(p["frequencies_THz"]), [], [], empty, empty, 0, 0.0
        )

    return frequency_mae(bands(result), bands(reference))


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def _save(path: Path, result: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps({**result, "settings": fingerprint}, indent=1))


__all__ = [
    "MetalBenchConfig",
    "calculator_properties",
    "metal_benchmark",
    "metal_element",
    "reference_of",
    "test_errors",
]
