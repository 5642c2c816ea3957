"""Observables of MD trajectories: pure functions on arrays (positions (T, N, 3) Å, cells
(T, 3, 3) Å, atomic numbers (N,)) or ASE frames. No file I/O and no plotting here.

Definitions follow METRICS.md §1 (Fu et al., "Forces are not Enough"; MDsim): RDF and h(r)
with their range-scaled MAEs, ADF, VACF, MSD and diffusivity, bond-deviation and RDF-window
stability, alanine-dipeptide φ/ψ (mdtraj), FES and PMF, force MAE.

Large trajectories are processed in vectorized chunks (no Python loop over frames or pairs):
the RDF of 100 000 frames of 192 atoms takes about 16 s of one CPU core
(``benchmarks/observables_scale.py``). ``ase_mlmd.data.plumed.read_plumed_fes`` reads the
PLUMED reference surface that :func:`find_basins` and :func:`compute_pmf` analyse.
"""

from ase_mlmd.observables.angles import compute_adf
from ase_mlmd.observables.dihedrals import compute_dihedrals, compute_phi_psi
from ase_mlmd.observables.dynamics import (
    compute_diffusivity,
    compute_msd,
    compute_vacf,
    diffusivity_to_si,
)
from ase_mlmd.observables.fes import (
    KT_300K,
    Basin,
    angle_grid,
    compute_fes,
    compute_pmf,
    find_basins,
    pmf_mae,
)
from ase_mlmd.observables.force import force_mae
from ase_mlmd.observables.rdf import (
    RDF_MIN_FRAMES,
    compute_hr,
    compute_rdf,
    hr_mae,
    range_scaled_mae,
    rdf_mae,
)
from ase_mlmd.observables.stability import (
    BOND_DEVIATION_THRESHOLD,
    LIPS_RDF_THRESHOLD,
    RDF_WINDOW_FS,
    WATER_RDF_THRESHOLD,
    bond_deviation,
    collapse_frame,
    rdf_window_stability,
    reference_bonds,
    stability_time,
)
from ase_mlmd.observables.trajectory import (
    TrajectoryArrays,
    check_same_atoms,
    trajectory_arrays,
    unwrap_positions,
)

__all__ = [
    "BOND_DEVIATION_THRESHOLD",
    "KT_300K",
    "LIPS_RDF_THRESHOLD",
    "RDF_MIN_FRAMES",
    "RDF_WINDOW_FS",
    "WATER_RDF_THRESHOLD",
    "Basin",
    "TrajectoryArrays",
    "angle_grid",
    "bond_deviation",
    "check_same_atoms",
    "collapse_frame",
    "compute_adf",
    "compute_dihedrals",
    "compute_diffusivity",
    "compute_fes",
    "compute_hr",
    "compute_msd",
    "compute_phi_psi",
    "compute_pmf",
    "compute_rdf",
    "compute_vacf",
    "diffusivity_to_si",
    "find_basins",
    "force_mae",
    "hr_mae",
    "pmf_mae",
    "range_scaled_mae",
    "rdf_mae",
    "rdf_window_stability",
    "reference_bonds",
    "stability_time",
    "trajectory_arrays",
    "unwrap_positions",
]
