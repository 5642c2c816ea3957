"""Every metric of the MD benchmark that applies to a system, from saved replica frames.

Reference observables are computed once from the reference data (:class:`ReferenceObservables`);
:func:`model_metrics` fills a :class:`~ase_mlmd.bench.protocol.ModelRun`'s ``metrics`` (numbers
for the table and ``metrics.json``) and ``curves`` (for the plots). All definitions are those of
:mod:`ase_mlmd.observables` (METRICS.md §1). Frames after a replica's collapse never enter an
observable; a metric that cannot be computed (too few stable frames, a reference without time
information) is ``None`` with the reason in ``metrics["notes"]`` — never silently dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

from ase_mlmd.bench.systems import CONDENSED, MOLECULE, PEPTIDE, BenchSystem
from ase_mlmd.errors import TrajectoryTooShortError
from ase_mlmd.observables import (
    RDF_MIN_FRAMES,
    compute_diffusivity,
    compute_fes,
    compute_hr,
    compute_phi_psi,
    compute_pmf,
    compute_rdf,
    diffusivity_to_si,
    hr_mae,
    pmf_mae,
    rdf_mae,
    rdf_window_stability,
)

if TYPE_CHECKING:
    from ase_mlmd.bench.protocol import BenchConfig, ModelRun, ReplicaRun

#: the peptide PMF MAE caps both PMFs at this free energy (kJ/mol, ≈ 8 kT at 300 K): a plain
#: run of n frames cannot resolve free energies above ≈ kT ln n (METRICS.md allows plain runs
#: in place of metadynamics), so regions above the cap count as agreeing, and a region the
#: reference reaches below the cap but the model never visits costs (cap − reference PMF)
PMF_CLIP_KJ_PER_MOL = 20.0


@dataclasses.dataclass
class ReferenceObservables:
    """Observables of the reference data that every model is compared with.

    Attributes:
        n_frames: reference frames. hr: (r, h) of the molecule (molecules, peptide).
        rdf: (r, {pair: g}) element-resolved RDFs (condensed phase).
        diffusivity: reference D, 1e-9 m²/s, or None (reference not a time series).
        pmf: {"phi": (grid, PMF), "psi": (grid, PMF)} kJ/mol (peptide, from the reference FES).
        notes: why a reference observable is missing.
    """

    n_frames: int
    hr: tuple[np.ndarray, np.ndarray] | None = None
    rdf: tuple[np.ndarray, dict[str, np.ndarray]] | None = None
    diffusivity: float | None = None
    pmf: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    topology: Any = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def compute(
        cls,
        reference: Sequence[Atoms],
        system: BenchSystem,
        *,
        topology: str | Path | None = None,
        reference_fes: str | Path | None = None,
    ) -> ReferenceObservables:
        """Reference observables for ``system`` from the reference frames (and, for the
        peptide, the topology for φ/ψ and a reference FES grid such as ``fes.dat``)."""
        obs = cls(n_frames=len(reference))
        if system.kind in (MOLECULE, PEPTIDE):
            obs.hr = compute_hr(reference)
        if system.kind == CONDENSED:
            obs.rdf = compute_rdf(reference, pairs=system.rdf_pairs, r_max=system.rdf_r_max)
            dt = _frame_spacing_fs(reference)
            if dt is None:
                obs.notes.append(
                    "reference diffusivity: the reference frames carry no times (not a time "
                    "series), so the diffusivity error is not computed"
                )
            else:
                obs.diffusivity, note = _diffusivity(reference, dt, system)
                if note:
                    obs.notes.append(f"reference {note}")
        if system.kind == PEPTIDE:
            import mdtraj

            if topology is None:
                raise ValueError("the peptide benchmark needs a topology (PDB) for φ/ψ")
            obs.topology = mdtraj.load_topology(str(topology))
            if reference_fes is not None:
                from ase_mlmd.data.plumed import read_plumed_fes

                grid, _, free = read_plumed_fes(reference_fes)
            else:
                phi, psi = compute_phi_psi(reference, obs.topology)
                grid, _, free = compute_fes(phi, psi)
            pmf_phi, pmf_psi = compute_pmf(free - np.min(free))
            obs.pmf = {"phi": (grid, pmf_phi), "psi": (grid, pmf_psi)}
        return obs

    def summary(self) -> dict[str, Any]:
        return {"n_frames": self.n_frames, "diffusivity": self.diffusivity, "notes": self.notes}


def _frame_spacing_fs(frames: Sequence[Atoms]) -> float | None:
    """Time between consecutive frames from their ``info["time_fs"]``, if regular."""
    times = [a.info.get("time_fs") for a in frames]
    if len(times) < 2 or any(t is None for t in times):
        return None
    steps = np.diff(np.asarray(times, dtype=float))
    if not np.allclose(steps, steps[0]) or steps[0] <= 0:
        return None
    return float(steps[0])


def _diffusivity(
    frames: Sequence[Atoms], dt_fs: float, system: BenchSystem
) -> tuple[float | None, str]:
    """D at the last lag of the system's protocol, 1e-9 m²/s, or (None, why)."""
    stride = max(1, round(system.diffusivity_lag_ps * 1000.0 / dt_fs))
    numbers = frames[0].numbers
    atoms = np.flatnonzero(np.array(frames[0].get_chemical_symbols()) == system.diffusing_element)
    cells = np.array([a.cell.array for a in frames])
    try:
        _, d = compute_diffusivity(
            frames,
            dt_fs,
            numbers=numbers,
            atoms=atoms,
            cells=cells,
            lag_stride=stride,
            n_lags=system.diffusivity_lags,
        )
    except TrajectoryTooShortError as err:
        return None, f"diffusivity not computed: {err}"
    return float(diffusivity_to_si(d[-1])), ""


def frame_times_ps(replica: ReplicaRun, system: BenchSystem) -> np.ndarray:
    """(n_frames,) simulated time of each saved frame of a replica, ps."""
    return np.arange(len(replica.frames)) * system.save_every_steps * system.timestep_fs / 1000


def stable_frames(replica: ReplicaRun, system: BenchSystem, collapse_ps: float | None):
    """The replica's frames strictly before its collapse (all when it never collapsed)."""
    if collapse_ps is None:
        return list(replica.frames)
    times = frame_times_ps(replica, system)
    return [f for f, t in zip(replica.frames, times, strict=True) if t < collapse_ps - 1e-9]


def _rdf_collapse_ps(
    replica: ReplicaRun, reference: ReferenceObservables, system: BenchSystem
) -> float | None:
    """Time of the first frame whose sliding-window RDF MAE exceeds the threshold, ps."""
    window = max(1, round(system.rdf_window_ps / system.save_every_ps))
    if len(replica.frames) < window:
        return None
    dev, _ = rdf_window_stability(
        replica.frames, reference=reference.rdf[1], window=window, r_max=system.rdf_r_max
    )
    above = np.flatnonzero(np.nan_to_num(dev, nan=-np.inf) > system.rdf_threshold)
    return None if len(above) == 0 else float(frame_times_ps(replica, system)[above[0]])


def model_metrics(
    run: ModelRun, reference: ReferenceObservables, system: BenchSystem, config: BenchConfig
) -> None:
    """Fill ``run.metrics`` and ``run.curves`` with every metric that applies to ``system``."""
    length = system.length(config.short, config.length_ps)
    notes: list[str] = []
    collapse: list[float | None] = []
    for rep in run.replicas:
        when = rep.collapse_time_ps
        if system.kind == CONDENSED and reference.rdf is not None:
            rdf_when = _rdf_collapse_ps(rep, reference, system)
            if rdf_when is not None and (when is None or rdf_when < when):
                when = rdf_when
                rep.status, rep.collapse_time_ps = "collapsed", rdf_when
                rep.message = rep.message or "RDF window MAE above the threshold"
        collapse.append(when)
    run.metrics["stability_ps"] = [length if c is None else c for c in collapse]
    run.metrics["n_collapsed"] = sum(c is not None for c in collapse)
    stable = [stable_frames(rep, system, c) for rep, c in zip(run.replicas, collapse, strict=True)]
    pooled = [f for frames in stable for f in frames]
    if system.kind in (MOLECULE, PEPTIDE):
        if len(pooled) >= 2 and reference.hr is not None:
            r, h = compute_hr(pooled)
            run.curves["hr"] = (r, h)
            run.metrics["hr_mae"] = hr_mae(h, reference.hr[1])
        else:
            run.metrics["hr_mae"] = None
            notes.append(f"{run.name}: h(r) needs at least 2 stable frames")
    if system.kind == CONDENSED:
        _condensed_metrics(run, reference, system, stable, pooled, notes)
    if system.kind == PEPTIDE and reference.pmf is not None:
        if pooled:
            phi, psi = compute_phi_psi(pooled, reference.topology)
            _, _, free = compute_fes(phi, psi)
            pmf_phi, pmf_psi = compute_pmf(free)
            run.curves["pmf_phi"], run.curves["pmf_psi"] = pmf_phi, pmf_psi
            clip = PMF_CLIP_KJ_PER_MOL
            run.metrics["pmf_phi_mae"] = pmf_mae(pmf_phi, reference.pmf["phi"][1], clip)
            run.metrics["pmf_psi_mae"] = pmf_mae(pmf_psi, reference.pmf["psi"][1], clip)
        else:
            run.metrics["pmf_phi_mae"] = run.metrics["pmf_psi_mae"] = None
    run.metrics["notes"] = notes


def _condensed_metrics(
    run: ModelRun,
    reference: ReferenceObservables,
    system: BenchSystem,
    stable: list[list[Atoms]],
    pooled: list[Atoms],
    notes: list[str],
) -> None:
    if len(pooled) >= RDF_MIN_FRAMES:
        r, g = compute_rdf(pooled, pairs=system.rdf_pairs, r_max=system.rdf_r_max)
        run.curves["rdf"] = (r, g)
        run.metrics["rdf_mae"] = rdf_mae(g, reference.rdf[1], system.rdf_r_max)
    else:
        run.metrics["rdf_mae"] = {}
        notes.append(f"{run.name}: RDF needs ≥ {RDF_MIN_FRAMES} stable frames, got {len(pooled)}")
    values = []
    for frames in stable:
        if len(frames) < 2:
            continue
        d, why = _diffusivity(frames, system.save_every_ps * 1000.0, system)
        if d is None:
            notes.append(f"{run.name}: {why}")
        else:
            values.append(d)
    run.metrics["diffusivity"] = float(np.mean(values)) if values else None
    if values and reference.diffusivity is not None:
        run.metrics["diffusivity_error"] = abs(run.metrics["diffusivity"] - reference.diffusivity)
    else:
        run.metrics["diffusivity_error"] = None
