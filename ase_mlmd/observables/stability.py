"""Stability of a simulation (Fu et al., MDsim; METRICS.md §1), measured after the fact on its
saved frames.

Molecules: bond-length deviation. Bonds are the pairs ASE's ``NeighborList(natural_cutoffs)``
connects on the first reference frame (the same definition as the live
:class:`~ase_mlmd.md.monitors.BondDeviation` monitor, whose functions are reused here);
dev(t) = max over bonds |d(t) − mean reference length|; collapse at the first frame with
dev > 0.5 Å.

Condensed phase: RDF MAE over a sliding window of frames against a reference RDF; water
collapses when max(MAE_OO, MAE_HH, MAE_HO) > 3.0, the all-atom RDF of LiPS when MAE > 1.0.

Both give a per-frame series; :func:`collapse_frame` and :func:`stability_time` read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from ase import Atoms

from ase_mlmd.errors import IncompatibleTrajectoriesError, InvalidStructureError
from ase_mlmd.observables.pairs import iter_pair_counts
from ase_mlmd.observables.rdf import (
    RDF_BINS,
    RDF_R_MAX,
    parse_pair,
    rdf_groups,
    shell_volumes,
)
from ase_mlmd.observables.trajectory import (
    as_cells,
    as_positions,
    check_minimum_image,
    require_frames,
    resolve_trajectory,
)

#: collapse thresholds of the MD benchmark: bond deviation (Å), water RDF MAE, LiPS RDF MAE
BOND_DEVIATION_THRESHOLD = 0.5
WATER_RDF_THRESHOLD = 3.0
LIPS_RDF_THRESHOLD = 1.0
#: RDF stability window of the benchmark, fs
RDF_WINDOW_FS = 1000.0


def reference_bonds(
    reference: Atoms | Sequence[Atoms], mult: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Bonds of a molecule and their mean lengths over reference frames.

    Args:
        reference: one ``Atoms`` or reference frames (e.g. the training set) of one molecule.
        mult: multiplier of ASE's covalent radii.

    Returns:
        bonds (B, 2) atom pairs i < j (from the first frame), lengths (B,) mean over the
        frames, Å.

    Raises:
        IncompatibleTrajectoriesError: the frames hold different atoms.
        ValueError: no bond found.
    """
    from ase_mlmd.md.monitors import bond_lengths, find_bonds

    frames = [reference] if isinstance(reference, Atoms) else list(reference)
    if not frames:
        raise ValueError("reference_bonds needs at least one reference frame")
    for k, atoms in enumerate(frames):
        if not np.array_equal(atoms.numbers, frames[0].numbers):
            raise IncompatibleTrajectoriesError(
                f"reference frame {k} holds other atoms than frame 0; pass frames of one "
                "molecule with its atoms in the same order"
            )
    bonds = find_bonds(frames[0], mult)
    if len(bonds) == 0:
        raise ValueError("the reference has no bonds within natural_cutoffs; raise mult")
    return bonds, bond_lengths(frames, bonds).mean(axis=0)


def bond_deviation(
    trajectory: np.ndarray | Atoms | Iterable[Atoms],
    bonds: np.ndarray,
    reference_lengths: np.ndarray,
    cells: np.ndarray | None = None,
) -> np.ndarray:
    """Largest bond-length deviation from the reference, per frame.

    Args:
        trajectory: positions (T, N, 3) Å, or frames (their cells count when periodic).
        bonds: (B, 2) atom pairs (:func:`reference_bonds`).
        reference_lengths: (B,) Å.
        cells: (3, 3) or (T, 3, 3) Å for periodic systems (minimum image), else None.

    Returns:
        dev (T,), Å: max over bonds |d(t) − reference|; ``inf`` for a frame with non-finite
        positions (a blown-up simulation counts as collapsed).
    """
    if isinstance(trajectory, np.ndarray):
        positions = np.asarray(trajectory, dtype=np.float64)
        positions = positions[None] if positions.ndim == 2 else positions
        if cells is not None:
            cells = as_cells(cells, len(positions))
    else:
        positions, cells, _ = resolve_trajectory(trajectory, cells)
    bonds = np.asarray(bonds, dtype=np.intp).reshape(-1, 2)
    reference = np.asarray(reference_lengths, dtype=np.float64)
    if reference.shape != (len(bonds),):
        raise IncompatibleTrajectoriesError(
            f"{len(bonds)} bonds but {reference.shape} reference lengths; take both from "
            "reference_bonds of the same molecule"
        )
    if positions.ndim != 3 or bonds.size and bonds.max() >= positions.shape[1]:
        raise IncompatibleTrajectoriesError(
            f"bonds refer to atom {int(bonds.max())} but the trajectory has shape "
            f"{positions.shape}; the reference molecule and the simulation differ"
        )
    vectors = positions[:, bonds[:, 1]] - positions[:, bonds[:, 0]]  # (T, B, 3)
    if cells is not None:
        frac = np.einsum("tbj,tjk->tbk", vectors, np.linalg.inv(cells))
        frac -= np.rint(frac)
        vectors = np.einsum("tbk,tkj->tbj", frac, cells)
    deviation = np.abs(np.linalg.norm(vectors, axis=2) - reference).max(axis=1)
    deviation[~np.isfinite(deviation)] = np.inf
    return deviation


def collapse_frame(dev: np.ndarray, threshold: float = BOND_DEVIATION_THRESHOLD) -> int | None:
    """Index of the first frame whose dev exceeds ``threshold`` (NaN never does, ``inf``
    always), or None when the run never collapsed."""
    above = np.flatnonzero(np.asarray(dev) > threshold)
    return int(above[0]) if len(above) else None


def stability_time(
    dev: np.ndarray, threshold: float = BOND_DEVIATION_THRESHOLD, *, dt_fs: float
) -> float:
    """Simulated time before collapse, fs (frame k is at time k · dt_fs).

    ``dev`` from :func:`bond_deviation` (threshold 0.5 Å, the default) or
    :func:`rdf_window_stability` (water: :data:`WATER_RDF_THRESHOLD`).

    The time of the first frame with dev > threshold, or that of the last frame,
    (T − 1) · dt_fs, when the run never collapsed (its full length).
    """
    frame = collapse_frame(dev, threshold)
    return float((len(dev) - 1 if frame is None else frame) * dt_fs)


def rdf_window_stability(
    trajectory: np.ndarray | Atoms | Iterable[Atoms],
    cells: np.ndarray | None = None,
    numbers: np.ndarray | None = None,
    *,
    reference: Mapping[str, np.ndarray],
    window: int,
    r_max: float = RDF_R_MAX,
    n_bins: int = RDF_BINS,
    chunk_frames: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """RDF MAE against a reference over a sliding window, for every frame.

    For the window of ``window`` frames ending at frame t, the RDF of each pair in
    ``reference`` (same definition as :func:`~ase_mlmd.observables.compute_rdf`) is compared
    with the reference: MAE = mean |g − g_ref| × r_max. Water: windows of 1 ps (10 frames at
    0.1 ps), collapse when the max over O–O, H–H, H–O exceeds :data:`WATER_RDF_THRESHOLD`.

    Args:
        trajectory: positions (T, N, 3) Å or frames. reference: pair key -> g (n_bins,), e.g.
            from compute_rdf on the reference data. window: frames per window.
        cells, numbers, r_max, n_bins, chunk_frames, progress: as compute_rdf.

    Returns:
        dev (T,): max over pairs of the window MAE, NaN for the first window − 1 frames; and
        a dict pair key -> (T,) MAE per pair.

    Raises:
        TrajectoryTooShortError: fewer frames than one window.
        IncompatibleTrajectoriesError: reference pairs the trajectory lacks, or other bins.
    """
    positions, cells, numbers = resolve_trajectory(trajectory, cells, numbers)
    positions = as_positions(positions)
    if cells is None or numbers is None:
        raise InvalidStructureError("rdf_window_stability needs periodic cells and numbers")
    if window < 1:
        raise ValueError(f"window must be at least one frame, got {window}")
    require_frames(len(positions), window, f"an RDF window of {window} frames")
    check_minimum_image(cells, r_max, "rdf_window_stability")
    keys = [parse_pair(key) for key in reference]
    ref = np.stack([np.asarray(reference[key], dtype=np.float64) for key in reference])
    if ref.shape[1] != n_bins:
        raise IncompatibleTrajectoriesError(
            f"the reference RDFs have {ref.shape[1]} bins, this analysis {n_bins}; compute "
            "both with the same r_max and n_bins"
        )
    groups = rdf_groups(numbers, keys)
    n_pairs = np.array([g.n_pairs for g in groups], dtype=np.float64)
    shells = shell_volumes(r_max, n_bins)
    inverse_volume = 1.0 / np.abs(np.linalg.det(cells))
    n_frames = len(positions)
    mae = np.full((n_frames, len(keys)), np.nan)
    carry_counts = np.zeros((0, len(keys), n_bins), np.int64)
    carry_volume = np.zeros(0)
    for start, counts in iter_pair_counts(
        positions,
        cells,
        groups,
        r_max,
        n_bins,
        per_frame=True,
        chunk_frames=chunk_frames,
        progress=progress,
    ):
        stop = start + len(counts)
        ext = np.concatenate([carry_counts, counts])  # frames first .. stop − 1
        ext_volume = np.concatenate([carry_volume, inverse_volume[start:stop]])
        first = stop - len(ext)
        summed = np.concatenate([np.zeros((1, *ext.shape[1:]), np.int64), np.cumsum(ext, 0)])
        volume = np.concatenate([[0.0], np.cumsum(ext_volume)])
        ends = np.arange(max(window - 1, len(carry_counts)), len(ext))  # window end, in ext
        if len(ends):
            in_window = summed[ends + 1] - summed[ends + 1 - window]  # (E, P, n_bins)
            norm = (volume[ends + 1] - volume[ends + 1 - window])[:, None, None]
            g = in_window / (norm * n_pairs[None, :, None] * shells)
            mae[first + ends] = np.abs(g - ref).mean(axis=2) * r_max
        keep = window - 1
        carry_counts = ext[len(ext) - keep :] if keep else ext[:0]
        carry_volume = ext_volume[len(ext_volume) - keep :] if keep else ext_volume[:0]
    per_pair = {key: mae[:, p] for p, key in enumerate(keys)}
    with np.errstate(invalid="ignore"):
        dev = np.full(n_frames, np.nan)
        valid = ~np.isnan(mae).any(axis=1)
        dev[valid] = mae[valid].max(axis=1)
    return dev, per_pair
