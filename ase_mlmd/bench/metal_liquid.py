"""Liquid-metal MD for the materials benchmark: RDF and self-diffusivity (METRICS.md §6, as §1).

:func:`melt` makes the common start: an expanded crystal melted with the *reference*
(Langevin, ``melt_ps`` at ``melt_temperature``, then ``melt_ps`` at ``temperature``; a perfect
periodic crystal superheats, so it is melted well above the target first). :func:`liquid_run`
takes that liquid with each calculator (model or reference): Langevin at ``temperature`` for
``equilibration_ps``, then Bussi velocity rescaling for ``production_ps`` (weak coupling so
that the dynamics stay close to Newtonian), with ASE's integrators
(:func:`ase_mlmd.md.ase_md.make_dynamics`); it keeps the unwrapped positions of the production
frames. A model thus never sees the melting temperature, only the liquid at ``temperature``.
:func:`liquid_observables` computes the RDF (:func:`ase_mlmd.observables.compute_rdf`) and D
from the MSD (:func:`ase_mlmd.observables.dynamics.compute_diffusivity`, lag up to half the
run).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator


@dataclasses.dataclass
class LiquidConfig:
    """Settings of the liquid runs.

    Attributes:
        temperature: K, above the reference's melting point (EMT Cu melts near 1300 K).
        melt_temperature: K, of the first half of the reference's melting run.
        melt_ps: ps at ``melt_temperature`` and again at ``temperature`` (reference only).
        repeat: conventional cells per side (3 → 108 fcc atoms).
        expansion: lattice scale of the start relative to the reference's relaxed crystal
            (1.03 = +9 % volume, about the liquid density at the melting point).
        timestep_fs: fs. equilibration_ps: equilibration of each run, discarded, ps.
        production_ps: ps kept. save_every_fs: frame spacing, fs.
        friction_per_fs: Langevin friction of the equilibration, 1/fs.
        tdamp_fs: Bussi time constant of the production, fs.
        seed: velocities and thermostat noise.
    """

    temperature: float = 2000.0
    melt_temperature: float = 3500.0
    melt_ps: float = 0.3
    repeat: int = 3
    expansion: float = 1.03
    timestep_fs: float = 2.0
    equilibration_ps: float = 0.5
    production_ps: float = 4.0
    save_every_fs: float = 10.0
    friction_per_fs: float = 0.01
    tdamp_fs: float = 100.0
    seed: int = 0

    def __post_init__(self) -> None:
        every = self.save_every_fs / self.timestep_fs
        if not (self.timestep_fs > 0 and every >= 1 and abs(every - round(every)) < 1e-9):
            raise ValueError(
                f"save_every_fs ({self.save_every_fs}) must be a multiple of timestep_fs "
                f"({self.timestep_fs}) > 0"
            )
        if self.production_ps * 1000 < 20 * self.save_every_fs:
            raise ValueError("the production run must hold at least 20 frames")

    def steps(self, ps: float) -> int:
        return int(round(ps * 1000.0 / self.timestep_fs))

    @property
    def every(self) -> int:
        return int(round(self.save_every_fs / self.timestep_fs))


def _langevin(atoms: Atoms, config: LiquidConfig, temperature: float, steps: int, rng):
    from ase_mlmd.md.ase_md import AseMDConfig, make_dynamics

    md = AseMDConfig(
        "nvt-langevin",
        temperature,
        config.timestep_fs,
        steps,
        friction_per_fs=config.friction_per_fs,
    )
    return make_dynamics(atoms, md, rng)


def melt(crystal: Atoms, reference: BaseCalculator, config: LiquidConfig) -> Atoms:
    """The common liquid start: ``crystal`` repeated ``config.repeat`` times, lattice scaled by
    ``config.expansion``, melted with ``reference`` at ``melt_temperature`` and brought to
    ``temperature`` (``melt_ps`` each); returned with its momenta, without a calculator. Pass
    the reference's relaxed cell so that every run has the reference's density."""
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    from ase_mlmd.data.materials import deformed

    atoms = deformed(crystal.repeat(config.repeat), (config.expansion - 1.0) * np.eye(3))
    atoms.calc = reference
    rng = np.random.default_rng(config.seed)
    thermalize_momenta(atoms, temperature_K=config.melt_temperature, rng=rng)
    Stationary(atoms)
    steps = config.steps(config.melt_ps)
    for temperature in (config.melt_temperature, config.temperature):
        _langevin(atoms, config, temperature, steps, rng).run(steps)
    out = atoms.copy()
    out.calc = None
    return out


def liquid_run(
    start: Atoms,
    calc: BaseCalculator,
    config: LiquidConfig,
    *,
    progress: bool = False,
    label: str = "",
) -> dict[str, np.ndarray]:
    """Equilibrate and run the liquid from ``start`` (positions and momenta, see :func:`melt`);
    returns ``positions`` (T, N, 3) Å unwrapped, ``cell`` (3, 3), ``numbers`` (N,),
    ``temperature`` (T,) K of the production frames.

    Raises:
        SimulationUnstableError: NaN positions or a temperature above 100 000 K.
    """
    from ase_mlmd.errors import SimulationUnstableError
    from ase_mlmd.md.ase_md import AseMDConfig, make_dynamics
    from ase_mlmd.progress import progress_bar

    atoms = start.copy()
    atoms.calc = calc
    rng = np.random.default_rng(config.seed + 1)
    n_eq, n_prod = config.steps(config.equilibration_ps), config.steps(config.production_ps)
    equilibrate = _langevin(atoms, config, config.temperature, n_eq, rng)
    prod = make_dynamics(
        atoms,
        AseMDConfig(
            "nvt-bussi", config.temperature, config.timestep_fs, n_prod, tdamp_fs=config.tdamp_fs
        ),
        rng,
    )
    positions, temperatures = [], []
    bar = progress_bar(
        total=n_eq + n_prod, unit="step", disable=not progress, desc=f"liquid {label}"
    )
    try:
        for _ in equilibrate.irun(n_eq):  # irun yields before the first step too
            bar.update(equilibrate.nsteps - bar.n)
        for _ in prod.irun(n_prod):
            bar.update(n_eq + prod.nsteps - bar.n)
            if prod.nsteps % config.every == 0:
                t = atoms.get_temperature()
                if not (np.isfinite(atoms.positions).all() and t < 1e5):
                    raise SimulationUnstableError(
                        f"the liquid run of {label or 'the model'} blew up (T = {t:.0f} K at "
                        f"production step {prod.nsteps}); the model is unstable in the liquid"
                    )
                positions.append(atoms.positions.copy())
                temperatures.append(t)
    finally:
        bar.close()
    return {
        "positions": np.asarray(positions),
        "cell": atoms.cell.array.copy(),
        "numbers": atoms.numbers.copy(),
        "temperature": np.asarray(temperatures),
    }


def liquid_observables(run: dict[str, np.ndarray], config: LiquidConfig) -> dict[str, Any]:
    """RDF (r Å, g), the MSD-based diffusivity D (10⁻⁹ m²/s) at a lag of half the production
    run, the mean temperature (K) and the final MSD (Å²; ≫ 1 Å² means the crystal melted)."""
    from ase_mlmd.observables import compute_rdf
    from ase_mlmd.observables.dynamics import compute_diffusivity, compute_msd, diffusivity_to_si
    from ase_mlmd.observables.rdf import RDF_R_MAX
    from ase_mlmd.observables.trajectory import perpendicular_widths

    positions, cell, numbers = run["positions"], run["cell"], run["numbers"]
    width = float(perpendicular_widths(cell).min())
    r_max = min(RDF_R_MAX, 0.5 * width - 1e-6)
    cells = np.broadcast_to(cell, (len(positions), 3, 3))
    r, g = compute_rdf(positions, cells, numbers, pairs="all", r_max=r_max, n_bins=200)
    n_lags = (len(positions) - 1) // 2
    t, d = compute_diffusivity(positions, config.save_every_fs, numbers=numbers, n_lags=n_lags)
    msd = compute_msd(positions, numbers=numbers)
    return {
        "r": r,
        "g": g["all"],
        "r_max": r_max,
        "diffusivity": float(diffusivity_to_si(d[-1])),
        "diffusivity_lag_ps": float(t[-1] / 1000.0),
        "mean_temperature_K": float(run["temperature"].mean()),
        "final_msd_A2": float(msd[-1]),
    }


__all__ = ["LiquidConfig", "liquid_observables", "liquid_run", "melt"]
