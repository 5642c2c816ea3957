"""Radial distribution functions g(r) (condensed phase) and pair-distance densities h(r)
(molecules), and their range-scaled MAEs (Fu et al., MDsim; METRICS.md §1).

RDF: element-resolved, minimum image in any triclinic cell, by default 500 bins on (0, 6] Å::

    g(r) = n(r) / (N_pairs · Σ_t 1/V_t · 4/3 π (r₂³ − r₁³))

n(r) counts every pair once per frame. For two different elements N_pairs = n₁ n₂, which is
METRICS.md's ρ = n_frames n₁ n₂ / V. For one element each unordered pair i ≠ j is counted once
and N_pairs = n (n − 1) / 2: the normalisation of ``mdtraj.compute_rdf`` with
``Topology.select_pairs``, and the one whose ideal-gas limit is g = 1 (taking n₁ n₂ = n² with
ordered pairs, as the literal formula would, gives g → (n − 1)/n, 1.6 % low for 64 oxygens).
Σ_t 1/V_t equals n_frames / V for a fixed cell and handles NPT cells as mdtraj does.

r_max must not exceed half the smallest perpendicular width of the cell; above that minimum
image misses pairs and :class:`~ase_mlmd.errors.InvalidStructureError` is raised (analyse a
repeated cell instead).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from ase_mlmd.errors import IncompatibleTrajectoriesError, InvalidStructureError
from ase_mlmd.observables.pairs import PairGroup, pair_counts
from ase_mlmd.observables.trajectory import check_minimum_image, require_frames, resolve_trajectory

#: RDF settings of the MD benchmark: 500 bins on (0, 6] Å
RDF_R_MAX, RDF_BINS = 6.0, 500
#: h(r) settings of the MD benchmark: 500 bins on (0, 10] Å
HR_R_MAX, HR_BINS = 10.0, 500
#: the benchmark reports an RDF only from at least this many stable frames
RDF_MIN_FRAMES = 10

#: key of the all-atom RDF (species ignored), e.g. LiPS
ALL_ATOMS = "all"


def bin_centers(r_max: float, n_bins: int) -> np.ndarray:
    """(n_bins,) centres of the bins [k Δ, (k + 1) Δ), Δ = r_max / n_bins, Å."""
    return (np.arange(n_bins) + 0.5) * (r_max / n_bins)


def shell_volumes(r_max: float, n_bins: int) -> np.ndarray:
    """(n_bins,) 4/3 π (r₂³ − r₁³) of each bin, Å³."""
    edges = np.linspace(0.0, r_max, n_bins + 1)
    return 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)


def _element(symbol: str) -> int:
    if symbol not in atomic_numbers:
        raise ValueError(f"unknown element {symbol!r} in an RDF pair; write pairs like 'O-H'")
    return atomic_numbers[symbol]


def pair_key(a: str | int, b: str | int) -> str:
    """Canonical name of an element pair: symbols ordered by atomic number, e.g. ``'H-O'``."""
    za = a if isinstance(a, int | np.integer) else _element(a)
    zb = b if isinstance(b, int | np.integer) else _element(b)
    za, zb = sorted((int(za), int(zb)))
    return f"{chemical_symbols[za]}-{chemical_symbols[zb]}"


def parse_pair(pair: str | tuple[str, str]) -> str:
    """Canonical key of a pair written "A-B", ("A", "B") or "all"."""
    if pair == ALL_ATOMS:
        return ALL_ATOMS
    parts = pair.split("-") if isinstance(pair, str) else list(pair)
    if len(parts) != 2:
        raise ValueError(f"an RDF pair is 'A-B' (element symbols) or 'all', got {pair!r}")
    return pair_key(*parts)


def element_pairs(numbers: np.ndarray) -> list[str]:
    """All element pairs of a composition, canonical keys in order, e.g. ``['H-H', 'H-O',
    'O-O']``; an element with a single atom gets no same-element pair."""
    zs = sorted({int(z) for z in numbers})
    counts = {z: int(np.sum(numbers == z)) for z in zs}
    return [pair_key(a, b) for i, a in enumerate(zs) for b in zs[i:] if a != b or counts[a] > 1]


def rdf_groups(numbers: np.ndarray, pairs: Sequence[str]) -> list[PairGroup]:
    """The :class:`PairGroup` of each canonical pair key for atoms ``numbers`` (N,).

    Raises:
        IncompatibleTrajectoriesError: an element of a pair is not in the trajectory (e.g. a
            reference RDF of another system).
        ValueError: a same-element pair with fewer than two atoms.
    """
    groups = []
    for key in pairs:
        if key == ALL_ATOMS:
            a = b = np.arange(len(numbers))
        else:
            za, zb = (atomic_numbers[s] for s in key.split("-"))
            a, b = np.flatnonzero(numbers == za), np.flatnonzero(numbers == zb)
            if len(a) == 0 or len(b) == 0:
                present = sorted({chemical_symbols[int(z)] for z in numbers})
                raise IncompatibleTrajectoriesError(
                    f"RDF pair {key} needs atoms the trajectory does not have (it has "
                    f"{', '.join(present)}); compare RDFs of the same system"
                )
        group = PairGroup(a, b, same=key == ALL_ATOMS or za == zb)
        if group.n_pairs == 0:
            raise ValueError(f"RDF pair {key} needs at least two atoms of the element")
        groups.append(group)
    return groups


def compute_rdf(
    trajectory: np.ndarray | Atoms | Iterable[Atoms],
    cells: np.ndarray | None = None,
    numbers: np.ndarray | None = None,
    *,
    pairs: Sequence[str | tuple[str, str]] | str | None = None,
    r_max: float = RDF_R_MAX,
    n_bins: int = RDF_BINS,
    min_frames: int = 1,
    chunk_frames: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Element-resolved radial distribution functions over a trajectory.

    Args:
        trajectory: positions (T, N, 3) Å, or ASE frames (then cells and numbers default to
            theirs).
        cells: (3, 3) or (T, 3, 3) Å, any triclinic cell, all three axes periodic.
        numbers: (N,) atomic numbers.
        pairs: element pairs as ``'O-H'`` or ``('O', 'H')``, or ``'all'`` for the all-atom
            RDF; default every element pair of the composition.
        r_max: Å, at most half the smallest perpendicular cell width. n_bins: bins on (0, r_max].
        min_frames: raise :class:`~ase_mlmd.errors.TrajectoryTooShortError` below this many
            frames (the benchmark uses :data:`RDF_MIN_FRAMES`).
        chunk_frames: frames per vectorized chunk (default: by memory). progress: tqdm bar.

    Returns:
        r (n_bins,) bin centres, Å, and a dict canonical pair key (``'H-O'``: elements in order
        of atomic number; ``'all'``) -> g (n_bins,), dimensionless.

    Raises:
        InvalidStructureError: no periodic cell, or r_max beyond half the cell width.
        IncompatibleTrajectoriesError: a requested pair has elements the trajectory lacks.
        TrajectoryTooShortError: fewer than ``min_frames`` frames.
    """
    positions, cells, numbers = resolve_trajectory(trajectory, cells, numbers)
    if cells is None:
        raise InvalidStructureError(
            "an RDF needs a periodic cell (all three axes periodic); for a molecule use compute_hr"
        )
    if numbers is None:
        raise ValueError("compute_rdf needs the atomic numbers (numbers=...) of the atoms")
    if n_bins < 1 or not r_max > 0:
        raise ValueError(f"need n_bins >= 1 and r_max > 0, got {n_bins}, {r_max}")
    require_frames(len(positions), max(min_frames, 1), "the RDF")
    check_minimum_image(cells, r_max, "compute_rdf")
    if pairs is None:
        keys = element_pairs(numbers)
    elif isinstance(pairs, str):
        keys = [parse_pair(pairs)]
    else:
        keys = [parse_pair(p) for p in pairs]
    groups = rdf_groups(numbers, keys)
    counts = pair_counts(
        positions, cells, groups, r_max, n_bins, chunk_frames=chunk_frames, progress=progress
    )
    inverse_volume = float(np.sum(1.0 / np.abs(np.linalg.det(cells))))
    shells = shell_volumes(r_max, n_bins)
    g = {
        key: counts[p] / (group.n_pairs * inverse_volume * shells)
        for p, (key, group) in enumerate(zip(keys, groups, strict=True))
    }
    return bin_centers(r_max, n_bins), g


def compute_hr(
    trajectory: np.ndarray | Atoms | Iterable[Atoms],
    *,
    atoms: np.ndarray | None = None,
    r_max: float = HR_R_MAX,
    n_bins: int = HR_BINS,
    chunk_frames: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """h(r): the normalised histogram (a density, 1/Å) of all intramolecular pair distances.

    Every pair i < j of the molecule's atoms in every frame, open boundaries (no minimum
    image). Distances beyond r_max are left out and the density is normalised over those in
    range (``np.histogram(density=True)``), so Σ h Δr = 1.

    Args:
        trajectory: positions (T, N, 3) Å or ASE frames of one molecule (e.g. the frames
            before collapse). atoms: indices of the atoms to use (default all).
        r_max: Å. n_bins: bins on (0, r_max].

    Returns:
        r (n_bins,) bin centres, Å; h (n_bins,), 1/Å.
    """
    positions, _, _ = resolve_trajectory(trajectory)
    index = np.arange(positions.shape[1]) if atoms is None else np.asarray(atoms)
    if len(index) < 2:
        raise ValueError("h(r) needs at least two atoms")
    group = PairGroup(index, index, same=True)
    counts = pair_counts(
        positions, None, [group], r_max, n_bins, chunk_frames=chunk_frames, progress=progress
    )[0]
    total = counts.sum()
    if total == 0:
        raise ValueError(f"no pair distance of the molecule is below r_max = {r_max} Å")
    return bin_centers(r_max, n_bins), counts / (total * (r_max / n_bins))


def range_scaled_mae(a: np.ndarray, b: np.ndarray, span: float) -> float:
    """mean |a − b| × span: the MDsim MAE of two curves on the same bins over a range ``span``
    (≈ the integrated absolute difference)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(
            f"the two curves have different bins ({a.shape} vs {b.shape}); compute both with "
            "the same r_max and n_bins"
        )
    return float(np.mean(np.abs(a - b)) * span)


def rdf_mae(
    g_a: np.ndarray | Mapping[str, np.ndarray],
    g_b: np.ndarray | Mapping[str, np.ndarray],
    r_max: float = RDF_R_MAX,
) -> float | dict[str, float]:
    """RDF MAE = mean |g_a − g_b| × r_max (METRICS.md: × 6 for (0, 6] Å).

    Args:
        g_a, g_b: two RDFs (n_bins,), or two dicts from :func:`compute_rdf`.

    Returns:
        a float, or a dict pair key -> float for dicts.

    Raises:
        IncompatibleTrajectoriesError: the dicts cover different element pairs.
    """
    if isinstance(g_a, Mapping) or isinstance(g_b, Mapping):
        if not (isinstance(g_a, Mapping) and isinstance(g_b, Mapping)):
            raise TypeError("rdf_mae compares two arrays or two dicts of RDFs")
        if set(g_a) != set(g_b):
            raise IncompatibleTrajectoriesError(
                f"the RDFs cover different element pairs ({sorted(g_a)} vs {sorted(g_b)}); "
                "compare trajectories of the same species"
            )
        return {key: range_scaled_mae(g_a[key], g_b[key], r_max) for key in g_a}
    return range_scaled_mae(g_a, g_b, r_max)


def hr_mae(h_a: np.ndarray, h_b: np.ndarray, r_max: float = HR_R_MAX) -> float:
    """h(r) MAE = mean |h_a − h_b| × r_max (METRICS.md: × 10 for (0, 10] Å)."""
    return range_scaled_mae(h_a, h_b, r_max)
