"""The benchmark systems and their simulation protocols (METRICS.md §1, Fu et al. / MDsim).

A :class:`BenchSystem` holds what the protocol table of METRICS.md fixes for a system: the
thermostat, time step, temperature, length, how often frames are saved, which stability criterion
applies and which observables are compared. The full lengths are the paper's; ``short`` versions
(used by ``ase-mlmd demo``, tests and tutorials) keep every setting but the length, so the numbers
they give are the same metrics on shorter runs — documented as such in every report.
"""

from __future__ import annotations

import dataclasses

#: kinds of systems: which stability criterion and observables apply
MOLECULE, CONDENSED, PEPTIDE = "molecule", "condensed", "peptide"


@dataclasses.dataclass(frozen=True)
class BenchSystem:
    """Protocol of one benchmark system (units: fs, K, ps, 1/fs).

    Attributes:
        name: system name (``ethanol``, ``water``, ``ala2``, ``lj``, ...).
        kind: ``"molecule"`` (bond-deviation stability, h(r)), ``"condensed"`` (RDF-window
            stability, RDF, diffusivity) or ``"peptide"`` (bond stability, h(r), FES/PMF).
        ensemble: engine ensemble name (see :data:`ase_mlmd.md.simulate.ENSEMBLES`).
        timestep_fs, temperature_K: integration settings.
        length_ps: default simulated time per replica (the paper's).
        short_length_ps: length in short mode.
        save_every_ps: time between saved frames.
        ttime_steps: Nosé–Hoover ``ttime`` in steps (Q = 3 N kB T (ttime·dt)², MDsim).
        friction_per_fs: Langevin friction (peptide: 0.5 /ps).
        bond_threshold: Å, bond-deviation collapse threshold (molecules, peptide).
        rdf_threshold: RDF-window MAE collapse threshold (condensed phase).
        rdf_pairs: element pairs whose RDFs are compared (condensed phase).
        rdf_r_max: Å, RDF range; the RDF uses 500 bins on (0, r_max].
        diffusing_element: element whose diffusivity is compared (condensed phase).
        diffusivity_lag_ps: MSD lag spacing, ps; diffusivity_lags: number of lags used.
        rdf_window_ps: sliding window of the RDF stability criterion, ps.
        data_format: reader format of the default reference data, or None to infer it.
        formula: chemical formula of the system (molecules, peptide: exactly this one
            molecule) or of its repeat unit (condensed phases: any whole multiple of it, e.g.
            ``H2O`` for water); None for a generic protocol that accepts any composition.
    """

    name: str
    kind: str
    ensemble: str
    timestep_fs: float
    temperature_K: float
    length_ps: float
    short_length_ps: float
    save_every_ps: float
    ttime_steps: int = 20
    friction_per_fs: float = 0.0005
    bond_threshold: float = 0.5
    rdf_threshold: float = 3.0
    rdf_pairs: tuple[tuple[str, str], ...] = ()
    rdf_r_max: float = 6.0
    diffusing_element: str | None = None
    diffusivity_lag_ps: float = 1.0
    diffusivity_lags: int = 100
    rdf_window_ps: float = 1.0
    data_format: str | None = None
    formula: str | None = None

    def length(self, short: bool = False, length_ps: float | None = None) -> float:
        """Simulated time per replica, ps: ``length_ps`` if given, else the default or short."""
        if length_ps is not None:
            if not length_ps > 0:
                raise ValueError(f"length must be positive (ps), got {length_ps}")
            return float(length_ps)
        return self.short_length_ps if short else self.length_ps

    def steps(self, length_ps: float) -> int:
        """Number of MD steps for ``length_ps``."""
        return max(1, round(length_ps * 1000.0 / self.timestep_fs))

    @property
    def save_every_steps(self) -> int:
        """Steps between saved frames."""
        return max(1, round(self.save_every_ps * 1000.0 / self.timestep_fs))

    @property
    def tdamp_fs(self) -> float:
        """Nosé–Hoover time constant of MDsim: ttime · dt, fs."""
        return self.ttime_steps * self.timestep_fs

    def engine_settings(self) -> dict:
        """Keyword arguments of :func:`ase_mlmd.md.simulate` that this protocol fixes."""
        settings = {
            "ensemble": self.ensemble,
            "temperature": self.temperature_K,
            "timestep": self.timestep_fs,
            "save_every": self.save_every_steps,
        }
        if self.ensemble == "nvt-nose-hoover":
            settings.update(tdamp=self.tdamp_fs, chain_length=1)
        elif self.ensemble == "nvt-langevin":
            settings.update(friction=self.friction_per_fs)
        return settings


def _md17(name: str, formula: str | None) -> BenchSystem:
    return BenchSystem(
        name=name,
        formula=formula,
        kind=MOLECULE,
        ensemble="nvt-nose-hoover",
        timestep_fs=0.5,
        temperature_K=500.0,
        length_ps=300.0,
        short_length_ps=5.0,
        save_every_ps=0.05,
    )


#: MD17 molecules and their formulas; "md17" is the protocol for any other molecule
_MD17_FORMULAS = {
    "ethanol": "C2H6O",
    "aspirin": "C9H8O4",
    "naphthalene": "C10H8",
    "salicylic_acid": "C7H6O3",
    "md17": None,
}
SYSTEMS: dict[str, BenchSystem] = {name: _md17(name, f) for name, f in _MD17_FORMULAS.items()}
SYSTEMS["water"] = BenchSystem(
    name="water",
    kind=CONDENSED,
    ensemble="nvt-nose-hoover",
    timestep_fs=1.0,
    temperature_K=300.0,
    length_ps=500.0,
    short_length_ps=5.0,
    save_every_ps=0.1,
    rdf_pairs=(("O", "O"), ("H", "H"), ("H", "O")),
    diffusing_element="O",
    data_format="deepmd",
    formula="H2O",
)
SYSTEMS["ala2"] = BenchSystem(
    name="ala2",
    kind=PEPTIDE,
    ensemble="nvt-langevin",
    timestep_fs=2.0,
    temperature_K=300.0,
    length_ps=5000.0,
    short_length_ps=20.0,
    save_every_ps=1.0,
    friction_per_fs=0.0005,
    formula="C6H12N2O2",  # Ace-Ala-NMe, 22 atoms
)
# Liquid argon at Rahman's state point (94.4 K, 1.374 g/cm^3) — the same as `ase-mlmd demo`'s
# embedded LJ default; reference = the lj-argon card's own run.
SYSTEMS["lj"] = BenchSystem(
    name="lj",
    kind=CONDENSED,
    ensemble="nvt-nose-hoover",
    timestep_fs=5.0,
    temperature_K=94.4,
    length_ps=200.0,
    short_length_ps=10.0,
    save_every_ps=0.1,
    ttime_steps=20,
    rdf_pairs=(("Ar", "Ar"),),
    rdf_r_max=8.0,
    rdf_threshold=3.0,  # as water: a 1 ps window of 108 atoms is noisy (MAE ≈ 1 for a liquid)
    diffusing_element="Ar",
    diffusivity_lag_ps=0.5,
    diffusivity_lags=20,
    formula="Ar",
)


def get_system(name: str) -> BenchSystem:
    """The protocol of a named system; ``ValueError`` naming the known ones otherwise."""
    try:
        return SYSTEMS[name]
    except KeyError:
        raise ValueError(
            f"unknown benchmark system {name!r}; choose one of {sorted(SYSTEMS)}"
        ) from None
