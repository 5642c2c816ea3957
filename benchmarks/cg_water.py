"""Condensed-phase coarse-graining (issue 13, acceptance 5c; METRICS.md §3 last bullet, §2).

TIP3P water, one centre-of-mass bead per molecule, and three CG pair potentials on one system:
force matching (linear least squares on a spline, :mod:`ase_mlmd.cg.pair_matching`), IBI and
DiffSim (Gauss–Newton from the IBI result, :mod:`ase_mlmd.diffsim`), each judged by its CG RDF
against the mapped all-atom RDF (rdf_dev and the sampling noise floor), pressure and diffusivity.

Stages (``--stages``; each is skipped when ``stages.json`` in ``--outdir`` already holds it, so
a killed run resumes at the stage it was in):

* ``sample``: ``ase-mlmd sample start.extxyz --reference tip3p-water`` (OpenMM, PME, rigid TIP3P,
  Langevin 1/ps, 2 fs, 300 K) on ``--molecules`` (500) molecules at 0.9965 g/cm³ (the
  experimental density at 300 K), ``--steps`` 110 000 (220 ps), a frame every 0.5 ps →
  ``aa.extxyz`` (~110 MB, git-ignored).
* ``map``: one centre-of-mass bead "W" per molecule (``CGMapping`` from ``cg.builders.
  from_groups`` replicated over the box; summed forces) for the frames after ``--skip-ps`` →
  ``cg.npz``.
* ``target``: the mapped RDF on the DiffSim grid → ``target_rdf.csv``; the noise floor (rdf_dev
  between the halves of the run); the all-atom COM diffusivity; the molecular pressure.
* ``fm``: force matching (``ase_mlmd.cg.pair_matching``, exact least squares); ``ibi``: IBI
  (``ase_mlmd.diffsim``); ``newton``: DiffSim Gauss–Newton from the IBI card. Cards in
  ``fits/<method>/``. The DiffSim engine runs beads of 1 amu (it has no mass setting): the RDF
  of an NVT ensemble does not depend on the masses, only the time step does (``--dt`` 0.1 ASE
  time units ≈ 4.3 fs at 18 amu).
* ``eval``: CG MD of each card (batched engine, Langevin 1/ps, 4 fs, beads of 18.015 amu,
  ``--cg-equil-ps`` + ``--cg-ps``) → rdf_dev, pair-virial pressure, diffusivity at
  ``--d-lag-ps``; ``report``: ``report.md`` and ``rdf_potentials.png``.

Usage (the run recorded in BENCHMARKS.md; the two evals can run side by side):

    OMP_NUM_THREADS=1 python benchmarks/cg_water.py --stages sample map target fm
    OMP_NUM_THREADS=1 python benchmarks/cg_water.py --stages eval --methods fm
    OMP_NUM_THREADS=1 python benchmarks/cg_water.py --stages ibi newton eval --methods ibi newton
    OMP_NUM_THREADS=1 python benchmarks/cg_water.py --stages report
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units

from ase_mlmd.beads import make_cg_atoms
from ase_mlmd.diffsim.targets import RDFTarget, rdf_from_frames
from ase_mlmd.fileio import atomic_write_text
from ase_mlmd.neighbors import system_neighbors
from ase_mlmd.observables.differentiable import RDFGrid
from ase_mlmd.observables.dynamics import compute_diffusivity, diffusivity_to_si

STAGES = ("sample", "map", "target", "fm", "ibi", "newton", "eval", "report")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def stage_sample(args, out: Path, results: dict) -> None:
    from ase.io import write

    from ase_mlmd.data.openmm_water import water_box

    trajectory = out / "aa.extxyz"
    if trajectory.exists():
        log(f"sample: {trajectory} exists, kept")
        return
    start = out / "start.extxyz"
    write(start, water_box(args.molecules, seed=args.seed))
    command = [
        str(Path(sys.executable).with_name("ase-mlmd")),
        "sample",
        str(start),
        "--reference",
        "tip3p-water",
        "--temperature",
        "300",
        "--steps",
        str(args.steps),
        "--every",
        str(args.every),
        "--threads",
        "1",
        "--seed",
        str(args.seed),
        "-o",
        str(trajectory),
    ]
    log("sample: " + " ".join(command))
    started = time.perf_counter()
    subprocess.run(command, check=True)
    results["sample"] = {
        "command": " ".join(command),
        "wall_s": time.perf_counter() - started,
        "molecules": args.molecules,
        "steps": args.steps,
        "every": args.every,
    }


# -- constants of the case -------------------------------------------------------------------
TEMPERATURE = 300.0
KT = units.kB * TEMPERATURE  # eV
WATER_MASS = 18.015  # amu, one bead per molecule
CUTOFF = 9.0  # Å, all three CG potentials
R_ON = 8.1  # Å, start of the smooth switch (as IBI's splines: 0.9 r_c)
GRID = RDFGrid(2.0, 10.0, 161)  # DiffSim RDF grid: 0.05 Å spacing, past the cutoff
CG_TIMESTEP_FS = 4.0  # CG MD (beads of 18 amu)
FRICTION_PER_FS = 0.001  # 1/ps, as the all-atom thermostat
METHODS = ("fm", "ibi", "newton")
LABELS = {"fm": "force matching", "ibi": "IBI", "newton": "DiffSim (Newton from IBI)"}


def load_cg(out: Path) -> dict:
    data = np.load(out / "cg.npz")
    return {k: data[k] for k in data.files}


def cg_atoms(positions: np.ndarray, cell: np.ndarray) -> Atoms:
    return make_cg_atoms(
        positions, ["W"] * len(positions), ["W"], [WATER_MASS] * len(positions), cell, True
    )


def stage_map(args, out: Path, results: dict) -> None:
    from ase.io import read

    from ase_mlmd.cg.builders import from_groups

    target = out / "cg.npz"
    if target.exists():
        log(f"map: {target} exists, kept")
        return
    started = time.perf_counter()
    frames = read(out / "aa.extxyz", index=":")
    frames = [f for f in frames if f.info["time_fs"] >= args.skip_ps * 1000.0]
    log(
        f"map: {len(frames)} frames after {args.skip_ps} ps read in "
        f"{time.perf_counter() - started:.0f} s"
    )
    water = frames[0][:3]
    mapping = from_groups(
        water, [[0, 1, 2]], bead_types=["W"], bead_names=["W"], scheme="com-molecule"
    ).replicate(len(frames[0]) // 3)
    # OpenMM's positions are unwrapped and molecules whole: W r is the continuous COM path
    unwrapped = np.stack([mapping.weights @ f.positions for f in frames])
    forces = mapping.apply_forces(np.stack([f.get_forces() for f in frames]))
    cell = frames[0].cell.array
    wrapped = unwrapped - np.floor(unwrapped @ np.linalg.inv(cell)) @ cell
    check = mapping.apply(frames[-1])[0]  # the package's own map of one frame agrees
    shift = (check.positions - wrapped[-1]) @ np.linalg.inv(cell)
    assert np.allclose(shift, np.round(shift), atol=1e-6), "CGMapping disagrees with W r"
    assert np.allclose(check.get_forces(), forces[-1], atol=1e-10)
    times = np.array([f.info["time_fs"] for f in frames])
    energies = np.array([f.get_potential_energy() for f in frames])
    np.savez(
        target,
        unwrapped=unwrapped,
        wrapped=wrapped,
        forces=forces,
        cell=cell,
        times=times,
        aa_energy=energies,
    )
    results["map"] = {
        "frames": len(frames),
        "beads": int(unwrapped.shape[1]),
        "bead_mass_amu": float(mapping.bead_masses(frames[0].get_masses())[0]),
        "skip_ps": args.skip_ps,
        "frame_spacing_fs": float(times[1] - times[0]),
        "wall_s": time.perf_counter() - started,
    }


def rdf_of(positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    return rdf_from_frames([cg_atoms(p, cell) for p in positions], GRID).g


def rdf_dev(g: np.ndarray, g_ref: np.ndarray) -> float:
    return float(np.mean(np.abs(g - g_ref)))


def diffusivity(unwrapped: np.ndarray, dt_fs: float, lag_fs: float, n_lags: int) -> np.ndarray:
    """D(t) (10⁻⁹ m²/s) of continuous bead paths (T, N, 3) at lags k·lag_fs, k = 1..n_lags."""
    stride = int(round(lag_fs / dt_fs))
    t, d = compute_diffusivity(
        unwrapped, dt_fs, masses=np.ones(unwrapped.shape[1]), lag_stride=stride, n_lags=n_lags
    )
    return t, diffusivity_to_si(d)


def molecular_pressure(frames, n_molecules: int, delta: float = 2e-4) -> np.ndarray:
    """Pressure (bar) of rigid molecules per frame: N kT / V − dU/dV with the molecules moved
    rigidly as their centres of mass scale with the box (the molecular virial, as OpenMM's
    barostat scales them); dU/dV by central differences of the TIP3P energy at V(1 ± 3δ)."""
    from ase_mlmd.data.openmm_water import TIP3PWaterCalculator

    calc = TIP3PWaterCalculator(cutoff=CUTOFF, platform="CPU", threads=1)
    out = []
    for atoms in frames:
        masses = atoms.get_masses().reshape(-1, 3)
        positions = atoms.positions.reshape(-1, 3, 3)
        com = (masses[..., None] * positions).sum(1) / masses.sum(1)[:, None]
        energies = []
        for sign in (1.0, -1.0):
            scale = 1.0 + sign * delta
            probe = atoms.copy()
            probe.set_cell(atoms.cell.array * scale, scale_atoms=False)
            probe.positions = (positions + (scale - 1.0) * com[:, None, :]).reshape(-1, 3)
            energies.append(calc.get_potential_energy(probe))
        volume = atoms.get_volume()
        du_dv = (energies[0] - energies[1]) / (volume * ((1 + delta) ** 3 - (1 - delta) ** 3))
        out.append((n_molecules * KT / volume - du_dv) / units.bar)
    return np.array(out)


def pair_pressure(potential, positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Virial pressure (bar) per frame of a pair potential: N kT / V − Σ_pairs r φ'(r) / (3V)."""
    volume = abs(np.linalg.det(cell))
    out = []
    for frame in positions:
        edges, shifts = system_neighbors(frame, cell, [True] * 3, potential.cutoff)
        i, j = edges
        d = frame[j] - frame[i] + shifts @ cell
        r = torch.tensor(np.linalg.norm(d, axis=1)[i < j], requires_grad=True)
        (slope,) = torch.autograd.grad(potential.cut_pair_energy(r).sum(), r)
        virial = float((r.detach() * slope).sum())
        out.append((len(frame) * KT / volume - virial / (3.0 * volume)) / units.bar)
    return np.array(out)


def stage_target(args, out: Path, results: dict) -> None:
    if "target" in results:
        log("target: done, kept")
        return
    from ase.io import read

    started = time.perf_counter()
    data = load_cg(out)
    wrapped, cell = data["wrapped"], data["cell"]
    target = rdf_from_frames([cg_atoms(p, cell) for p in wrapped], GRID, temperature=KT)
    half = len(wrapped) // 2
    g1, g2 = rdf_of(wrapped[:half], cell), rdf_of(wrapped[half:], cell)
    dt_fs = float(data["times"][1] - data["times"][0])
    t, d = diffusivity(
        data["unwrapped"], dt_fs, 1000.0, min(100, (len(wrapped) - 1) * int(dt_fs) // 1000)
    )
    t_eval, d_eval = diffusivity(data["unwrapped"], dt_fs, 1000.0, args.d_lag_ps)
    rho = wrapped.shape[1] / abs(np.linalg.det(cell))
    np.savetxt(
        out / "target_rdf.csv",
        np.stack([target.r, target.g]),
        delimiter=",",
        header=f"mapped TIP3P COM RDF; density {rho:.6g} 1/A^3, kT {KT:.6g} eV",
        fmt="%.8g",
    )
    aa = read(out / "aa.extxyz", index=f"-{args.pressure_frames}:")
    pressure = molecular_pressure(aa, wrapped.shape[1])
    results["target"] = {
        "density_per_A3": rho,
        "kT_eV": KT,
        "frames": len(wrapped),
        "noise_floor_rdf_dev": rdf_dev(g1, g2),
        "D_aa_1e9_m2_s_at_last_lag": float(d[-1]),
        "D_aa_last_lag_ps": float(t[-1] / 1000),
        "D_aa_1e9_m2_s": float(d_eval[-1]),
        "D_lag_ps": float(t_eval[-1] / 1000),
        "pressure_aa_bar": float(pressure.mean()),
        "pressure_aa_sem_bar": float(pressure.std(ddof=1) / np.sqrt(len(pressure))),
        "pressure_frames": len(pressure),
        "wall_s": time.perf_counter() - started,
    }
    log(f"target: {results['target']}")


def thermo_state(results: dict):
    from ase_mlmd.diffsim.systems import ThermoState

    r, g = np.loadtxt(Path(results["_outdir"]) / "target_rdf.csv", delimiter=",")
    rho = results["target"]["density_per_A3"]
    target = RDFTarget(r=r, g=g, density=rho, temperature=KT, source="target_rdf.csv")
    return ThermoState(rho, KT, target, n_cells=5, name="tip3p_com_300K")


def stage_fm(args, out: Path, results: dict) -> None:
    from ase_mlmd.cg.pair_matching import SplineGrid, fit_pair_forces
    from ase_mlmd.diffsim.report import export_card

    card = out / "fits" / "fm" / "card.toml"
    if card.exists() and "fm" in results:
        log("fm: done, kept")
        return
    started = time.perf_counter()
    data = load_cg(out)
    wrapped, forces, cell = data["wrapped"], data["forces"], data["cell"]
    closest = min(_closest(p, cell) for p in wrapped[:: max(1, len(wrapped) // 50)])
    r_min = np.floor(closest / 0.05) * 0.05 - 0.05
    n_knots = int(round((CUTOFF - r_min) / args.fm_spacing)) + 1
    grid = SplineGrid(float(r_min), CUTOFF, n_knots, r_on=R_ON)
    frames = ((p, f, cell, [True] * 3) for p, f in zip(wrapped, forces, strict=True))
    result = fit_pair_forces(frames, grid, regularization=args.fm_regularization)
    wall = time.perf_counter() - started
    export_card(
        result.potential,
        card.parent,
        name="cg-water-fm",
        description="TIP3P water, one COM bead per molecule: pair potential by force "
        "matching (linear least squares on a natural spline)",
        provenance={
            "data": "benchmarks/cg_runs/water/aa.extxyz (mapped)",
            "command": "python benchmarks/cg_water.py --stages fm",
            "force_rmse_eV_A": result.force_rmse,
            "frames": result.n_frames,
        },
    )
    results["fm"] = {
        "card": str(card),
        "wall_s": wall,
        "r_min": float(r_min),
        "n_knots": n_knots,
        "force_rmse_eV_A": result.force_rmse,
        "force_rms_eV_A": result.force_rms,
        "frames": result.n_frames,
    }
    log(f"fm: {results['fm']}")


def _closest(positions: np.ndarray, cell: np.ndarray) -> float:
    edges, shifts = system_neighbors(positions, cell, [True] * 3, 3.5)
    d = positions[edges[1]] - positions[edges[0]] + shifts @ cell
    return float(np.linalg.norm(d, axis=1).min())


def fit_config(args, method: str, **extra):
    from ase_mlmd.diffsim.config import FitConfig
    from ase_mlmd.diffsim.engine import EngineConfig

    engine = EngineConfig(
        timestep=args.dt, equilibration=args.equilibration, seed=args.seed, nh_mass=args.nh_mass
    )
    return FitConfig(
        method=method,
        sample_every=10,
        production_steps=args.production_steps,
        engine=engine,
        **extra,
    )


def stage_ibi(args, out: Path, results: dict) -> None:
    from ase_mlmd.diffsim.fit import fit

    if "ibi" in results:
        log("ibi: done, kept")
        return
    state = thermo_state(results)
    config = fit_config(
        args,
        "ibi",
        ibi_iterations=args.ibi_iterations,
        ibi_steps=args.ibi_steps,
        ibi_alpha=args.ibi_alpha,
    )
    result = fit(
        None,
        [state],
        config,
        out_dir=out / "fits" / "ibi",
        cutoff=CUTOFF,
        name="cg-water-ibi",
        progress=False,
        log=log,
    )
    results["ibi"] = {
        "card": str(out / "fits" / "ibi" / "card.toml"),
        "wall_s": result.wall_time,
        "iterations": len(result.history),
        "fit_rdf_dev": result.rdf_dev[0],
    }
    log(f"ibi: {results['ibi']}")


def stage_newton(args, out: Path, results: dict) -> None:
    from ase_mlmd.calculators.cards import read_card
    from ase_mlmd.calculators.registry import model_from_card
    from ase_mlmd.diffsim.fit import fit

    if "newton" in results:
        log("newton: done, kept")
        return
    start = model_from_card(read_card(out / "fits" / "ibi" / "card.toml"))
    state = thermo_state(results)
    config = fit_config(
        args, "newton", newton_iterations=args.newton_iterations, newton_frames=args.newton_frames
    )
    result = fit(
        start,
        [state],
        config,
        out_dir=out / "fits" / "newton",
        cutoff=CUTOFF,
        name="cg-water-newton",
        progress=False,
        log=log,
    )
    results["newton"] = {
        "card": str(out / "fits" / "newton" / "card.toml"),
        "wall_s": result.wall_time,
        "iterations": len(result.history),
        "fit_rdf_dev": result.rdf_dev[0],
        "start": "IBI card",
    }
    log(f"newton: {results['newton']}")


def run_cg_md(potential, start: np.ndarray, cell: np.ndarray, args, seed: int):
    """NVT Langevin CG MD (batched engine, beads of 18.015 amu); positions every
    ``args.cg_every`` steps: (wrapped, unwrapped) arrays (T, N, 3)."""
    from ase_mlmd.md.forcefield import ForceField
    from ase_mlmd.md.integrators import make_integrator
    from ase_mlmd.md.simulate import maxwell_boltzmann_momenta
    from ase_mlmd.md.state import MDState

    state = MDState.from_atoms(cg_atoms(start, cell))
    state = state.replace(momenta=maxwell_boltzmann_momenta(state, [TEMPERATURE], seed))
    integrator = make_integrator(
        "nvt-langevin",
        ForceField(potential, skin=1.0),
        CG_TIMESTEP_FS,
        TEMPERATURE,
        FRICTION_PER_FS,
        seed=seed,
    )
    with torch.no_grad():
        state = integrator.init(state)
        n_equil = int(args.cg_equil_ps * 1000 / CG_TIMESTEP_FS)
        n_prod = int(args.cg_ps * 1000 / CG_TIMESTEP_FS)
        wrapped, temps = [], []
        for step in range(n_equil + n_prod):
            state = integrator.step(state)
            if step >= n_equil and (step - n_equil) % args.cg_every == 0:
                wrapped.append(state.positions.numpy().copy())
                temps.append(float(state.temperature()[0]))
            if step % 2000 == 0:
                temperature = float(state.temperature()[0])
                log(f"  CG MD step {step}/{n_equil + n_prod}, T = {temperature:.0f} K")
    wrapped = np.stack(wrapped)
    # continuous paths from minimum-image steps between frames
    inverse = np.linalg.inv(cell)
    steps = np.diff(wrapped, axis=0) @ inverse
    steps -= np.round(steps)
    unwrapped = np.concatenate([wrapped[:1], wrapped[:1] + np.cumsum(steps @ cell, axis=0)])
    return wrapped, unwrapped, np.array(temps)


def stage_eval(args, out: Path, results: dict) -> None:
    from ase_mlmd.calculators.cards import read_card
    from ase_mlmd.calculators.registry import model_from_card

    data = load_cg(out)
    cell = data["cell"]
    target = np.loadtxt(out / "target_rdf.csv", delimiter=",")[1]
    for method in args.methods:
        key = f"eval_{method}"
        saved = json.loads((out / "stages.json").read_text())  # another process may have run it
        results.update({k: v for k, v in saved.items() if k not in results})
        if key in results or method not in results:
            log(f"eval {method}: {'done' if key in results else 'no fit yet'}, skipped")
            continue
        started = time.perf_counter()
        potential = model_from_card(read_card(out / "fits" / method / "card.toml"))
        wrapped, unwrapped, temps = run_cg_md(potential, data["wrapped"][-1], cell, args, args.seed)
        dt_fs = CG_TIMESTEP_FS * args.cg_every
        g = rdf_of(wrapped, cell)
        t, d = diffusivity(unwrapped, dt_fs, 1000.0, args.d_lag_ps)
        pressure = pair_pressure(potential, wrapped[:: max(1, len(wrapped) // 50)], cell)
        np.save(out / f"rdf_{method}.npy", g)
        results[key] = {
            "rdf_dev": rdf_dev(g, target),
            "D_1e9_m2_s": float(d[-1]),
            "D_lag_ps": float(t[-1] / 1000),
            "pressure_bar": float(pressure.mean()),
            "pressure_sem_bar": float(pressure.std(ddof=1) / np.sqrt(len(pressure))),
            "mean_T_K": float(temps.mean()),
            "frames": len(wrapped),
            "cg_ps": args.cg_ps,
            "wall_s": time.perf_counter() - started,
        }
        log(f"eval {method}: {results[key]}")
        save_results(out, results)


def save_results(out: Path, results: dict) -> None:
    """Merge this run's results into stages.json (another stage may run in parallel)."""
    path = out / "stages.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(results)
    atomic_write_text(path, json.dumps(merged, indent=1, default=float))


def force_rmse(potential, frames: np.ndarray, data: dict) -> float:
    """RMS of F_CG − F_mapped (eV/Å) over the mapped frames ``frames`` (indices)."""
    from ase_mlmd.calculators.ml_calculator import MLCalculator

    calc = MLCalculator(potential)
    errors = []
    for k in frames:
        atoms = cg_atoms(data["wrapped"][k], data["cell"])
        errors.append(calc.get_forces(atoms) - data["forces"][k])
    return float(np.sqrt(np.mean(np.square(errors))))


def stage_report(args, out: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ase_mlmd.calculators.cards import read_card
    from ase_mlmd.calculators.registry import model_from_card

    path = out / "stages.json"
    results.update({k: v for k, v in json.loads(path.read_text()).items() if k not in results})
    r, target = np.loadtxt(out / "target_rdf.csv", delimiter=",")
    t = results["target"]
    floor = t["noise_floor_rdf_dev"]
    data = load_cg(out)
    window = int(round(args.cg_ps * 1000 / (data["times"][1] - data["times"][0])))
    short = rdf_dev(rdf_of(data["wrapped"][:window], data["cell"]), target)
    probe = np.linspace(0, len(data["wrapped"]) - 1, 20).astype(int)
    rms = float(np.sqrt(np.mean(data["forces"][probe] ** 2)))
    sampled = results.get("sample", {}).get("wall_s", float("nan"))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    rr = np.linspace(2.3, CUTOFF, 400)
    rows = [
        "| potential | rdf_dev | / floor (halves) | / floor (same length) | pressure (bar) | "
        f"D (10⁻⁹ m²/s) at {args.d_lag_ps} ps | force RMSE (eV/Å) | fit wall time (s) |",
        "|---|---|---|---|---|---|---|---|",
        f"| all-atom TIP3P, mapped (reference) | {floor:.4f} / {short:.4f} (floors) | 1 | 1 | "
        f"{t['pressure_aa_bar']:.0f} ± {t['pressure_aa_sem_bar']:.0f} (molecular virial) | "
        f"{t['D_aa_1e9_m2_s']:.2f} | (RMS {rms:.3f}) | sampling {sampled:.0f} |",
    ]
    for method in METHODS:
        ev = results.get(f"eval_{method}")
        if ev is None or method not in results:
            rows.append(f"| {LABELS[method]} | not run | | | | | | |")
            continue
        g = np.load(out / f"rdf_{method}.npy")
        ax1.plot(r, g, lw=1.2, label=f"{LABELS[method]} ({ev['rdf_dev']:.3f})")
        potential = model_from_card(read_card(out / "fits" / method / "card.toml"))
        with torch.no_grad():
            u = potential.cut_pair_energy(torch.tensor(rr)).numpy()
        ax2.plot(rr, u / KT, lw=1.2, label=LABELS[method])
        rows.append(
            f"| {LABELS[method]} | {ev['rdf_dev']:.4f} | {ev['rdf_dev'] / floor:.1f} | "
            f"{ev['rdf_dev'] / short:.1f} | "
            f"{ev['pressure_bar']:.0f} ± {ev['pressure_sem_bar']:.0f} | {ev['D_1e9_m2_s']:.2f} | "
            f"{force_rmse(potential, probe, data):.3f} | "
            f"{results[method]['wall_s']:.0f} |"
        )
    ax1.plot(r, target, "k--", lw=1.5, label="TIP3P mapped (COM), target", zorder=5)
    ax1.set(xlabel="r (Å)", ylabel="g(r)", xlim=(2.0, 10.0), title="COM RDF, 300 K")
    ax1.legend(fontsize=8)
    ax2.axhline(0, color="0.6", lw=0.8)
    ax2.set(xlabel="r (Å)", ylabel="U(r) / kT", ylim=(-2.5, 4), title="CG pair potentials")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rdf_potentials.png", dpi=120)
    fm = results.get("fm", {})
    explained = 1 - (fm.get("force_rmse_eV_A", 0) / fm.get("force_rms_eV_A", 1)) ** 2
    text = [
        "# CG water: force matching vs IBI vs DiffSim (one COM bead per TIP3P molecule)",
        "",
        f"{results['map']['beads']} TIP3P molecules (OpenMM, PME, rigid, Langevin 1/ps, 2 fs), "
        f"300 K, {t['density_per_A3'] * WATER_MASS / 0.602214076:.4f} g/cm³; "
        f"{results['map']['frames']} frames every {results['map']['frame_spacing_fs'] / 1000:g} ps "
        f"after {results['map']['skip_ps']:g} ps of equilibration; beads of "
        f"{results['map']['bead_mass_amu']:.3f} amu. CG potentials: cutoff {CUTOFF} Å, "
        f"smooth switch from {R_ON} Å. rdf_dev = mean |g − g_target| on {GRID.nbins} points "
        f"of [{GRID.start}, {GRID.end}] Å (DiffSim RDF, METRICS §2). CG MD: batched engine, "
        f"Langevin 1/ps, {CG_TIMESTEP_FS} fs, beads of {WATER_MASS} amu, "
        f"{args.cg_equil_ps:g} ps + {args.cg_ps:g} ps. Diffusivity: COM removed, all time "
        f"origins, D(t) = MSD/6t at t = {args.d_lag_ps} ps (all-atom at 100 ps: "
        f"{t['D_aa_1e9_m2_s_at_last_lag']:.2f}).",
        "",
        *rows,
        "",
        f"Noise floor: rdf_dev between the two halves of the all-atom run ({t['frames']} frames "
        f"in all); a {args.cg_ps:g} ps window of it (as long as each CG run) against the whole "
        f"gives {short:.4f}, the floor at the CG runs' sampling. Pressures: all-atom = the "
        "molecular virial (N kT/V − dU/dV with rigid molecules, their centres scaled with the "
        f"box; {t['pressure_frames']} frames, ± standard error), CG = pair virial; pair "
        "potentials fitted to structure (IBI, DiffSim) or forces (MS-CG) are known not to "
        "reproduce the pressure without a pressure correction, none is applied here. Force "
        "RMSE: F_CG − F_mapped over 20 evenly spaced mapped frames. DiffSim's wall time comes "
        "on top of IBI's (its start).",
        "",
        f"Force matching explains {explained:.0%} of the mapped-force variance over all "
        f"{results['map']['frames']} frames (RMSE {fm.get('force_rmse_eV_A', np.nan):.4f} eV/Å "
        f"vs RMS {fm.get('force_rms_eV_A', np.nan):.4f} eV/Å).",
        "",
        "![RDFs and potentials](rdf_potentials.png)",
        "",
    ]
    atomic_write_text(out / "report.md", "\n".join(text))
    log(f"report: {out / 'report.md'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--outdir", default="benchmarks/cg_runs/water")
    parser.add_argument("--molecules", type=int, default=500)
    parser.add_argument("--steps", type=int, default=110_000, help="all-atom MD steps (2 fs)")
    parser.add_argument("--every", type=int, default=250, help="all-atom frame interval, steps")
    parser.add_argument("--seed", type=int, default=0)
    add = parser.add_argument
    add("--skip-ps", type=float, default=20.0, help="all-atom equilibration left out, ps")
    add("--d-lag-ps", type=int, default=5, help="diffusivity compared at this lag, ps")
    add("--pressure-frames", type=int, default=20, help="all-atom frames for the pressure")
    add("--fm-spacing", type=float, default=0.1, help="force-matching knot spacing, Å")
    add("--fm-regularization", type=float, default=1e-3)
    add("--dt", type=float, default=0.1, help="DiffSim engine step (ASE time; beads of 1 amu)")
    add("--nh-mass", type=float, default=50.0, help="DiffSim engine Nosé-Hoover mass")
    add("--equilibration", type=int, default=1000, help="DiffSim engine equilibration, steps")
    add("--production-steps", type=int, default=2000, help="DiffSim evaluation run, steps")
    add("--ibi-iterations", type=int, default=8)
    add("--ibi-steps", type=int, default=1000)
    add("--ibi-alpha", type=float, default=0.2)
    add("--newton-iterations", type=int, default=3)
    add("--newton-frames", type=int, default=200)
    add("--cg-ps", type=float, default=15.0, help="CG MD production per potential, ps")
    add("--cg-equil-ps", type=float, default=3.0, help="CG MD equilibration, ps")
    add("--cg-every", type=int, default=50, help="CG MD frame interval, steps")
    add("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="eval these fits")
    args = parser.parse_args(argv)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    state_file = out / "stages.json"
    results = json.loads(state_file.read_text()) if state_file.exists() else {}
    results["_outdir"] = str(out)
    for name in args.stages:
        log(f"stage {name}")
        globals()[f"stage_{name}"](args, out, results)
        save_results(out, results)


if __name__ == "__main__":
    main()
