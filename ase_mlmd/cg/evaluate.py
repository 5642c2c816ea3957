"""Evaluation of CG simulations against mapped reference data (METRICS.md §3).

For a CG molecule (one topology), compares simulated frames with reference frames:

* 2-D free energy F = −kT ln p over two CG dihedrals (default the first two of the topology;
  for the alanine dipeptide backbone φ = (0,1,2,3), ψ = (1,2,3,4)) on a 60 × 60 periodic grid,
  in kT; MAE over the bins the reference populates below 4 kT (others reported as missing /
  extra population), :func:`ase_mlmd.observables.fes_compare.compare_fes`;
* Jensen–Shannon divergence of the 2-D (φ, ψ) histograms and of every bond, angle and dihedral
  distribution (bonds and angles: 100 bins over the range both data sets span; dihedrals: 60
  bins on (−π, π]);
* 1-D PMFs of both dihedrals and their MAE (× 2π, as METRICS §1, here in kT);
* populations of the backbone regions of :data:`REGIONS` (β/PPII, α_R, α_L by φ, ψ).

Simulated frames come from a folder of ASE trajectories (one per replica, e.g. written by
``ase-mlmd md`` or :func:`ase_mlmd.md.simulate`), a list of files, or arrays; the first
``discard_fraction`` of every replica is dropped as equilibration.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from ase_mlmd.beads import bead_types_of
from ase_mlmd.cg.topology import CGTopology
from ase_mlmd.errors import IncompatibleTrajectoriesError, TrajectoryTooShortError
from ase_mlmd.observables.fes import FES_BINS, compute_fes, compute_pmf, pmf_mae
from ase_mlmd.observables.fes_compare import FESComparison, compare_fes
from ase_mlmd.observables.internal import (
    compute_bond_angles,
    compute_bond_lengths,
    compute_dihedral_angles,
    histogram,
    js_divergence,
)

#: backbone regions by (φ, ψ) in degrees: name → (φ range, ψ ranges); ψ ranges may wrap
REGIONS = {
    "beta/PPII": ((-180.0, 0.0), ((50.0, 180.0), (-180.0, -150.0))),
    "alpha_R": ((-180.0, 0.0), ((-150.0, 50.0),)),
    "alpha_L": ((0.0, 180.0), ((-180.0, 180.0),)),
}


@dataclass
class CGEvaluation:
    """One simulation compared with the reference.

    Attributes:
        label: name of the simulated model.
        n_frames: simulated frames used (after discarding equilibration); n_replicas: files.
        fes, fes_reference: (60, 60) F in kT over (φ, ψ) (inf where empty), minimum 0.
        comparison: FES MAE over the reference's populated bins, missing/extra population.
        js_phi_psi: JS divergence of the (φ, ψ) histograms.
        js_bonds, js_angles, js_dihedrals: per internal coordinate (name → JS).
        pmf_mae_phi, pmf_mae_psi: 1-D PMF MAE × 2π, kT (PMFs capped at 8 kT on both sides).
        populations, populations_reference: fraction of frames per region of :data:`REGIONS`.
        dihedral_pair: bead quartets of the two dihedrals.
    """

    label: str
    n_frames: int
    n_replicas: int
    fes: np.ndarray
    fes_reference: np.ndarray
    comparison: FESComparison
    js_phi_psi: float
    js_bonds: dict[str, float] = field(default_factory=dict)
    js_angles: dict[str, float] = field(default_factory=dict)
    js_dihedrals: dict[str, float] = field(default_factory=dict)
    pmf_mae_phi: float = float("nan")
    pmf_mae_psi: float = float("nan")
    populations: dict[str, float] = field(default_factory=dict)
    populations_reference: dict[str, float] = field(default_factory=dict)
    dihedral_pair: tuple[tuple[int, ...], tuple[int, ...]] = ()
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    samples_reference: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def region_populations(phi: np.ndarray, psi: np.ndarray) -> dict[str, float]:
    """Fraction of samples in each region of :data:`REGIONS` (angles in radians)."""
    phi_d, psi_d = np.degrees(phi), np.degrees(psi)
    out = {}
    for name, ((lo, hi), psi_ranges) in REGIONS.items():
        in_phi = (phi_d >= lo) & (phi_d < hi)
        in_psi = np.zeros_like(in_phi)
        for a, b in psi_ranges:
            in_psi |= (psi_d >= a) & (psi_d < b)
        out[name] = float(np.mean(in_phi & in_psi))
    return out


def read_replicas(
    simulated: str | os.PathLike | Sequence[str | os.PathLike],
    discard_fraction: float = 0.1,
    pattern: str = "*.traj",
) -> tuple[np.ndarray, list[str], int]:
    """Positions (T, n_beads, 3) of all replicas, their bead types, and the replica count.

    Raises:
        TrajectoryTooShortError: no trajectory or no frame left after discarding.
        IncompatibleTrajectoriesError: replicas with different beads.
    """
    from ase.io import read

    if isinstance(simulated, str | os.PathLike):
        path = Path(simulated)
        files = sorted(path.glob(pattern)) if path.is_dir() else [path]
    else:
        files = [Path(p) for p in simulated]
    if not files:
        raise TrajectoryTooShortError(f"no trajectories ({pattern}) in {simulated}")
    if not 0 <= discard_fraction < 1:
        raise ValueError(f"discard fraction must be in [0, 1), got {discard_fraction}")
    chunks, beads = [], None
    for file in files:
        frames = read(file, index=":")
        kept = frames[int(discard_fraction * len(frames)) :]
        if not kept:
            continue
        types = bead_types_of(kept[0]) if "bead_type" in kept[0].arrays else None
        names = types or [str(z) for z in kept[0].numbers]
        if beads is None:
            beads = names
        elif names != beads:
            raise IncompatibleTrajectoriesError(f"{file} has beads {names}, others {beads}")
        chunks.append(np.stack([a.positions for a in kept]))
    if not chunks:
        raise TrajectoryTooShortError(f"no frames left in {simulated} after discarding")
    return np.concatenate(chunks), beads, len(files)


def _edges(a: np.ndarray, b: np.ndarray, bins: int = 100) -> np.ndarray:
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    pad = 1e-9 + 1e-6 * (hi - lo)
    return np.linspace(lo - pad, hi + pad, bins + 1)


def evaluate_runs(
    reference: Sequence[Atoms] | np.ndarray,
    simulated: str | os.PathLike | Sequence | np.ndarray,
    topology: CGTopology | None = None,
    *,
    discard_fraction: float = 0.1,
    dihedral_pair: tuple[int, int] = (0, 1),
    label: str = "CG",
    fes_threshold: float = 4.0,
) -> CGEvaluation:
    """Compare simulated CG frames with reference CG frames (see module docstring).

    Args:
        reference: reference frames (CG Atoms) or positions (T, n_beads, 3), Å.
        simulated: a folder of replica trajectories, a list of files, or positions.
        topology: bonds (default: a chain in bead order).
        discard_fraction: share of every replica dropped as equilibration.
        dihedral_pair: which two dihedrals of the topology span the FES.
        label: name of the simulation in the report.
        fes_threshold: reference bins below this (kT) enter the FES MAE.
    """
    if isinstance(reference, np.ndarray):
        ref_pos, n_beads = reference, reference.shape[1]
        beads = [str(k) for k in range(n_beads)]
    else:
        ref_pos = np.stack([a.positions for a in reference])
        beads = bead_types_of(reference[0])
    if isinstance(simulated, np.ndarray):
        sim_pos, n_rep = simulated, 1
    else:
        sim_pos, _, n_rep = read_replicas(simulated, discard_fraction)
    if sim_pos.shape[1] != ref_pos.shape[1]:
        raise IncompatibleTrajectoriesError(
            f"simulated frames have {sim_pos.shape[1]} beads, the reference {ref_pos.shape[1]}"
        )
    topology = topology or CGTopology.chain(beads)
    coords = {}
    for key, data in (("ref", ref_pos), ("sim", sim_pos)):
        coords[key] = {
            "bonds": compute_bond_lengths(data, topology.bonds),
            "angles": compute_bond_angles(data, topology.angles),
            "dihedrals": compute_dihedral_angles(data, topology.dihedrals),
        }
    if len(topology.dihedrals) < 2:
        raise IncompatibleTrajectoriesError("the topology has fewer than two dihedrals")
    a, b = dihedral_pair
    fes = {}
    for key in ("ref", "sim"):
        d = coords[key]["dihedrals"]
        fes[key] = compute_fes(d[:, a], d[:, b], n_bins=FES_BINS, kT=1.0)[2]
    p_ref, p_sim = np.exp(-fes["ref"]), np.exp(-fes["sim"])
    pmf_ref, pmf_sim = compute_pmf(fes["ref"], 1.0), compute_pmf(fes["sim"], 1.0)

    def js_of(kind: str, index: np.ndarray) -> dict[str, float]:
        out = {}
        for k, idx in enumerate(index):
            r, s = coords["ref"][kind][:, k], coords["sim"][kind][:, k]
            edges = np.linspace(-np.pi, np.pi, 61) if kind == "dihedrals" else _edges(r, s)
            name = "-".join(str(int(i)) for i in idx)
            out[name] = js_divergence(histogram(r, edges), histogram(s, edges))
        return out

    d_ref, d_sim = coords["ref"]["dihedrals"], coords["sim"]["dihedrals"]
    return CGEvaluation(
        label=label,
        n_frames=len(sim_pos),
        n_replicas=n_rep,
        fes=fes["sim"],
        fes_reference=fes["ref"],
        comparison=compare_fes(fes["sim"], fes["ref"], fes_threshold),
        js_phi_psi=js_divergence(p_ref, p_sim),
        js_bonds=js_of("bonds", topology.bonds),
        js_angles=js_of("angles", topology.angles),
        js_dihedrals=js_of("dihedrals", topology.dihedrals),
        pmf_mae_phi=pmf_mae(pmf_ref[0], pmf_sim[0], clip=8.0),
        pmf_mae_psi=pmf_mae(pmf_ref[1], pmf_sim[1], clip=8.0),
        populations=region_populations(d_sim[:, a], d_sim[:, b]),
        populations_reference=region_populations(d_ref[:, a], d_ref[:, b]),
        dihedral_pair=(
            tuple(int(i) for i in topology.dihedrals[a]),
            tuple(int(i) for i in topology.dihedrals[b]),
        ),
        samples={k: v for k, v in coords["sim"].items()},
        samples_reference={k: v for k, v in coords["ref"].items()},
    )
