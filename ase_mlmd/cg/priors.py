"""Prior parameters by Boltzmann inversion of mapped CG distributions (CGnet / mlcg convention).

For an internal coordinate x sampled at temperature T, the potential of mean force is
U(x) = −kT ln(p(x) / J(x)) + const, with the Jacobian J = r² for a distance, sin θ for a bond
angle and 1 for a dihedral. The priors fit simple forms to it:

* bonds and angles: ``½ k (x − x₀)²``, a least-squares quadratic through U over the bins with
  at least ``min_count`` samples, each bin weighted by its count (the statistical weight of
  −kT ln p); for a Gaussian this is k = kT / variance, x₀ = mean;
* dihedrals: ``Σₙ aₙ cos nφ + bₙ sin nφ`` (n = 1 … n_harmonics), the same weighted
  least squares on a periodic histogram;
* repulsion ``ε (σ/r)⁶`` between beads more than ``exclusion`` bonds apart: σ is the smallest
  distance of that pair seen in the data and ε = kT, so the wall costs kT at the closest observed
  approach and rises steeply inside it.

The result is a :class:`~ase_mlmd.models.bonded.BondedPrior` (eV, Å, radians).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import units

from ase_mlmd.cg.topology import CGTopology
from ase_mlmd.errors import DataFormatError
from ase_mlmd.models.bonded import TERMS, BondedPrior
from ase_mlmd.observables.internal import (
    compute_bond_angles,
    compute_bond_lengths,
    compute_dihedral_angles,
)


@dataclass
class PriorSettings:
    """How priors are fitted.

    Attributes:
        terms: subset of ``("bonds", "angles", "dihedrals", "repulsion")``.
        temperature_K: temperature of the data, K.
        n_harmonics: Fourier terms per dihedral.
        exclusion: repulsion acts between beads more than this many bonds apart.
        bins: histogram bins for bonds/angles (over the observed range) and dihedrals (2π).
        min_count: bins with fewer samples are left out of the fits.
        skip_unfittable_angles: leave out of the prior (with a warning; the network carries
            them) the bond angles whose Boltzmann-inverted profile has no harmonic minimum,
            e.g. an angle at a hub bead that turns with a backbone dihedral; otherwise such an
            angle is an error naming it.
    """

    terms: tuple[str, ...] = ("bonds", "angles", "repulsion")
    temperature_K: float = 300.0
    n_harmonics: int = 3
    exclusion: int = 3
    bins: int = 60
    min_count: int = 5
    skip_unfittable_angles: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.terms) - set(TERMS))
        if unknown:
            raise ValueError(f"unknown prior terms {unknown}; choose from {', '.join(TERMS)}")


def parse_terms(text: str) -> tuple[str, ...]:
    """``"bonds,angles"`` → ("bonds", "angles"); raises ValueError naming an unknown term."""
    terms = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = sorted(set(terms) - set(TERMS))
    if unknown or not terms:
        raise ValueError(
            f"--priors {text!r}: unknown or no terms {unknown}; choose from {', '.join(TERMS)}"
        )
    return terms


def _weighted_polyfit(x: np.ndarray, y: np.ndarray, w: np.ndarray, design) -> np.ndarray:
    a = design(x) * np.sqrt(w)[:, None]
    coef, *_ = np.linalg.lstsq(a, y * np.sqrt(w), rcond=None)
    return coef


def fit_harmonic(
    values: np.ndarray,
    kT: float,
    jacobian: str = "none",
    bins: int = 60,
    min_count: int = 5,
) -> tuple[float, float]:
    """(k, x₀) of ``½ k (x − x₀)²`` by Boltzmann inversion of samples ``values``.

    Args:
        values: samples of one coordinate (Å or radians).
        kT: energy unit of k (eV → k in eV/Å² or eV/rad²).
        jacobian: "r2" (distances), "sin" (bond angles) or "none".
        bins: histogram bins over the observed range.
        min_count: least samples for a bin to enter the fit.

    Raises:
        DataFormatError: too few populated bins, or a fit without a minimum (k ≤ 0).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    counts, edges = np.histogram(values, bins=bins)
    centers = 0.5 * (edges[1:] + edges[:-1])
    keep = counts >= min_count
    if keep.sum() < 3:
        raise DataFormatError(
            f"only {int(keep.sum())} histogram bins hold >= {min_count} samples; too few data "
            "for Boltzmann inversion"
        )
    x, c = centers[keep], counts[keep].astype(float)
    jac = {"r2": x**2, "sin": np.sin(x), "none": np.ones_like(x)}[jacobian]
    u = -kT * np.log(c / jac)
    mean = float(np.average(x, weights=c))
    a2, a1, _ = _weighted_polyfit(x - mean, u, c, lambda t: np.stack([t**2, t, np.ones_like(t)], 1))
    x0 = mean - a1 / (2 * a2) if a2 > 0 else np.nan
    if not x[0] <= x0 <= x[-1]:
        # a broad or one-sided profile: the free parabola's vertex lies outside the sampled
        # range (for an angle even outside [0, π]); put the minimum where the profile is
        # lowest at the edge of the data instead and fit only the stiffness around it
        x0 = float(x[0] if u[0] <= u[-1] else x[-1])
        a2, _ = _weighted_polyfit(x - x0, u, c, lambda t: np.stack([t**2, np.ones_like(t)], 1))
    if not a2 > 0:
        raise DataFormatError("the Boltzmann-inverted profile has no minimum; no harmonic fit")
    return float(2 * a2), float(x0)


def fit_fourier(
    angles: np.ndarray, kT: float, n_harmonics: int = 3, bins: int = 60, min_count: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """(aₙ, bₙ), n = 1 … n_harmonics, of ``Σ aₙ cos nφ + bₙ sin nφ`` ≈ −kT ln p(φ) + const.

    Raises:
        DataFormatError: fewer populated bins than coefficients.
    """
    angles = np.asarray(angles, dtype=np.float64).ravel()
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    counts, _ = np.histogram(np.mod(angles + np.pi, 2 * np.pi) - np.pi, bins=edges)
    centers = 0.5 * (edges[1:] + edges[:-1])
    keep = counts >= min_count
    if keep.sum() < 2 * n_harmonics + 1:
        raise DataFormatError(
            f"only {int(keep.sum())} dihedral bins hold >= {min_count} samples; too few for "
            f"{n_harmonics} Fourier terms"
        )
    x, c = centers[keep], counts[keep].astype(float)
    n = np.arange(1, n_harmonics + 1)

    def design(t: np.ndarray) -> np.ndarray:
        return np.concatenate([np.cos(np.outer(t, n)), np.sin(np.outer(t, n)),
                               np.ones((len(t), 1))], axis=1)  # fmt: skip

    coef = _weighted_polyfit(x, -kT * np.log(c), c, design)
    return coef[:n_harmonics], coef[n_harmonics : 2 * n_harmonics]


def fit_priors(
    positions: np.ndarray,
    topology: CGTopology,
    settings: PriorSettings | None = None,
    species: Sequence[int] | None = None,
    cutoff: float = 0.0,
) -> tuple[BondedPrior, dict]:
    """A :class:`BondedPrior` for ``topology`` from mapped positions by Boltzmann inversion.

    Args:
        positions: (T, n_beads, 3) mapped bead positions, Å (molecules whole).
        topology: bonds (angles and dihedrals derived from them).
        settings: which terms, temperature, fit details.
        species: pseudo atomic numbers the prior accepts; cutoff: declared cutoff, Å.

    Returns:
        the prior (float64) and a summary (per term: indices and fitted values, JSON-ready).
    """
    settings = settings or PriorSettings()
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[1] != topology.n_beads:
        raise DataFormatError(
            f"positions {positions.shape} do not match the {topology.n_beads}-bead topology"
        )
    kT = units.kB * settings.temperature_K
    fit = {"bins": settings.bins, "min_count": settings.min_count}
    kwargs: dict = {}
    summary: dict = {"temperature_K": settings.temperature_K, "terms": list(settings.terms)}
    if "bonds" in settings.terms and len(topology.bonds):
        r = compute_bond_lengths(positions, topology.bonds)
        k, r0 = _fit_each_harmonic("bond", topology.bonds, r, kT, "r2", fit)
        kwargs.update(bonds=topology.bonds, bond_k=k, bond_r0=r0)
        summary["bonds"] = {"k_eV_per_A2": list(k), "r0_A": list(r0)}
    if "angles" in settings.terms and len(topology.angles):
        th = compute_bond_angles(positions, topology.angles)
        angles, dropped = topology.angles, []
        if settings.skip_unfittable_angles:
            fittable = _fittable_angles(topology.angles, th, kT, fit)
            angles, th = topology.angles[fittable], th[:, fittable]
            dropped = topology.angles[~fittable].tolist()
        if len(angles):
            k, t0 = _fit_each_harmonic("angle", angles, th, kT, "sin", fit)
            kwargs.update(angles=angles, angle_k=k, angle_theta0=t0)
            summary["angles"] = {"k_eV_per_rad2": list(k), "theta0_rad": list(t0)}
        if dropped:
            summary.setdefault("angles", {})["left_out"] = dropped
    if "dihedrals" in settings.terms and len(topology.dihedrals):
        phi = compute_dihedral_angles(positions, topology.dihedrals)
        coefs = [_named(fit_fourier, "dihedral", topology.dihedrals[d], phi[:, d], kT,
                        settings.n_harmonics, **fit) for d in range(phi.shape[1])]  # fmt: skip
        kwargs.update(
            dihedrals=topology.dihedrals,
            dihedral_cos=np.array([c for c, _ in coefs]),
            dihedral_sin=np.array([s for _, s in coefs]),
        )
        summary["dihedrals"] = {"n_harmonics": settings.n_harmonics}
    if "repulsion" in settings.terms:
        excluded = topology.excluded_pairs(settings.exclusion)
        pairs = [(i, j) for i in range(topology.n_beads) for j in range(i + 1, topology.n_beads)
                 if (i, j) not in excluded]  # fmt: skip
        if pairs:
            sigma = compute_bond_lengths(positions, np.array(pairs)).min(axis=0)
            kwargs.update(pairs=pairs, repulsion_sigma=sigma, repulsion_epsilon=kT)
            summary["repulsion"] = {"pairs": pairs, "sigma_A": sigma.tolist(), "epsilon_eV": kT}
    prior = BondedPrior(topology.n_beads, cutoff=cutoff, species=species, **kwargs)
    return prior, summary


def _named(fit, term: str, beads: np.ndarray, *args, **kwargs):
    """``fit(*args, **kwargs)``; a failed fit names the prior term and its beads."""
    try:
        return fit(*args, **kwargs)
    except DataFormatError as err:
        only = (
            ", or leave out only such angles (cg fit --skip-unfittable-angles; "
            "PriorSettings(skip_unfittable_angles=True))"
            if term == "angle"
            else ""
        )
        raise DataFormatError(
            f"{term} prior of beads {tuple(int(b) for b in beads)}: {err} (too few or too "
            f"broadly spread frames for Boltzmann inversion: use more frames, or leave the "
            f"{term}s out of the prior terms{only})"
        ) from err


def _fittable_angles(angles: np.ndarray, theta: np.ndarray, kT: float, fit: dict) -> np.ndarray:
    """(n_angles,) bool: the angles (rows of ``angles``, samples in the columns of ``theta``)
    whose profile has a harmonic fit; a warning names each of the others."""
    fittable = np.ones(len(angles), dtype=bool)
    for t, angle in enumerate(angles):
        try:
            fit_harmonic(theta[:, t], kT, "sin", **fit)
        except DataFormatError as err:
            fittable[t] = False
            warnings.warn(
                f"angle prior of beads {tuple(int(b) for b in angle)} left out ({err}); the "
                "network carries that angle",
                stacklevel=3,
            )
    return fittable


def _fit_each_harmonic(
    term: str, indices: np.ndarray, values: np.ndarray, kT: float, jacobian: str, fit: dict
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(k per term, x₀ per term) of :func:`fit_harmonic` over the columns of ``values`` (T,
    n_terms), one column per row of ``indices``."""
    fits = [_named(fit_harmonic, term, indices[t], values[:, t], kT, jacobian, **fit)
            for t in range(values.shape[1])]  # fmt: skip
    return tuple(k for k, _ in fits), tuple(x0 for _, x0 in fits)
