"""Time correlations: mean squared displacement, diffusivity and velocity autocorrelation,
each averaged over atoms and over all time origins, computed with FFTs (O(T log T) per atom,
no loop over origins or lags).

Units: positions Å, frame spacing ``dt_fs`` in fs, D in Å²/fs (:func:`diffusivity_to_si`
converts to the 10⁻⁹ m²/s of METRICS.md); velocities in whatever unit they come (ASE: Å per ASE
time unit), the VACF in that unit squared.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from ase import Atoms

from ase_mlmd.observables.trajectory import (
    masses_of,
    require_frames,
    resolve_trajectory,
    trajectory_arrays,
    unwrap_positions,
)

#: 1 Å²/fs in units of 10⁻⁹ m²/s (1e-20 m² / 1e-15 s = 1e-5 m²/s)
A2_PER_FS_IN_1E9_M2_PER_S = 1.0e4
#: water protocol (METRICS.md): oxygen diffusivity at 1 ps lag spacing over the first 100 lags
WATER_DIFFUSIVITY_LAGS, WATER_DIFFUSIVITY_SPACING_FS = 100, 1000.0

#: time series (atom × component) transformed at once (bounds FFT memory)
_SERIES_PER_FFT = 48


def diffusivity_to_si(d_a2_per_fs: float | np.ndarray) -> float | np.ndarray:
    """A diffusivity in Å²/fs expressed in 10⁻⁹ m²/s (× 10⁴)."""
    return d_a2_per_fs * A2_PER_FS_IN_1E9_M2_PER_S


def _fft_length(n: int) -> int:
    """Smallest power of two ≥ 2n (zero padding so the circular correlation is linear)."""
    return 1 << int(np.ceil(np.log2(max(2 * n, 2))))


def _summed_autocorrelation(series: np.ndarray, max_lag: int) -> np.ndarray:
    """Σ over columns of Σ_k x(k) x(k + m), m = 0 … max_lag; series (T, M) float64."""
    n = len(series)
    length = _fft_length(n)
    total = np.zeros(length)
    for c0 in range(0, series.shape[1], _SERIES_PER_FFT):
        spectrum = np.fft.rfft(series[:, c0 : c0 + _SERIES_PER_FFT], n=length, axis=0)
        total += np.fft.irfft((spectrum * spectrum.conj()).real.sum(axis=1), n=length)
    return total[: max_lag + 1]


def _max_lag(n_frames: int, max_lag: int | None, what: str) -> int:
    if max_lag is None:
        return n_frames - 1
    require_frames(n_frames, max_lag + 1, f"{what} up to lag {max_lag} frames")
    return int(max_lag)


def compute_msd(
    trajectory: np.ndarray | Atoms | Iterable[Atoms],
    *,
    numbers: np.ndarray | None = None,
    masses: np.ndarray | None = None,
    atoms: np.ndarray | None = None,
    cells: np.ndarray | None = None,
    max_lag: int | None = None,
) -> np.ndarray:
    """Mean squared displacement after removing the centre-of-mass motion.

    MSD(m) = ⟨|r̃ᵢ(t₀ + m) − r̃ᵢ(t₀)|²⟩ over the selected atoms i and all time origins t₀,
    r̃ = r − R_COM(t) with the centre of mass of *all* atoms (masses, or standard masses of
    ``numbers``, or equal masses).

    Args:
        trajectory: positions (T, N, 3) Å, continuous (not wrapped into the cell), or frames.
        numbers: (N,) atomic numbers (for standard masses). masses: (N,) amu, overrides.
        atoms: indices of the atoms averaged over (e.g. the oxygens); default all.
        cells: (3, 3) or (T, 3, 3): positions were wrapped into these cells; unwrap them
            first (minimum-image steps between frames). Leave None for continuous positions.
        max_lag: largest lag in frames (default T − 1).

    Returns:
        (max_lag + 1,) MSD, Å², at lags 0 … max_lag frames.
    """
    positions, _, numbers = resolve_trajectory(trajectory, None, numbers)
    if cells is not None:
        positions = unwrap_positions(positions, cells)
    n_frames, n_atoms = positions.shape[:2]
    lag = _max_lag(n_frames, max_lag, "the MSD")
    m = masses_of(numbers, masses, n_atoms)
    com = np.einsum("tnj,n->tj", positions, m) / m.sum()
    selected = np.arange(n_atoms) if atoms is None else np.asarray(atoms)
    x = positions[:, selected, :] - com[:, None, :]
    x -= x.mean(axis=0)  # per-atom offset: MSD is unchanged, FFT round-off is smaller
    series = x.reshape(n_frames, -1)
    squared = np.einsum("tm,tm->t", series, series)  # Σ over atoms and components, (T,)
    prefix = np.concatenate([[0.0], np.cumsum(squared)])
    lags = np.arange(lag + 1)
    origins = n_frames - lags
    # Σ_k |r(k+m) − r(k)|² = Σ_{k<T−m} |r(k)|² + Σ_{k≥m} |r(k)|² − 2 Σ_k r(k)·r(k+m)
    s1 = prefix[origins] + (prefix[-1] - prefix[lags])
    s2 = _summed_autocorrelation(series, lag)
    msd = (s1 - 2.0 * s2) / (origins * len(selected))
    return np.maximum(msd, 0.0)


def compute_diffusivity(
    trajectory: np.ndarray | Atoms | Iterable[Atoms],
    dt_fs: float,
    *,
    numbers: np.ndarray | None = None,
    masses: np.ndarray | None = None,
    atoms: np.ndarray | None = None,
    cells: np.ndarray | None = None,
    lag_stride: int = 1,
    n_lags: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Time-dependent self-diffusivity D(t) = MSD(t) / (6 t) (Einstein relation, 3-D).

    The MSD is :func:`compute_msd` (centre of mass removed, all time origins at full frame
    resolution), read at lags k · ``lag_stride`` frames, k = 1 … n_lags. Water protocol
    (METRICS.md): oxygens, 1 ps lag spacing, 100 lags, compare D at the last lag; frames every
    0.1 ps give ``lag_stride=10, n_lags=100`` and need ≥ 1001 frames (100 ps).

    Args:
        trajectory, numbers, masses, atoms, cells: as :func:`compute_msd`.
        dt_fs: time between saved frames, fs.
        lag_stride: frames per lag step. n_lags: number of lags (default all that fit).

    Returns:
        t (n_lags,) fs and D (n_lags,) Å²/fs (× 10⁴ for 10⁻⁹ m²/s, :func:`diffusivity_to_si`).

    Raises:
        TrajectoryTooShortError: fewer than n_lags · lag_stride + 1 frames.
    """
    if not dt_fs > 0 or lag_stride < 1:
        raise ValueError(f"need dt_fs > 0 and lag_stride >= 1, got {dt_fs}, {lag_stride}")
    positions, _, numbers = resolve_trajectory(trajectory, None, numbers)
    n_frames = len(positions)
    if n_lags is None:
        n_lags = (n_frames - 1) // lag_stride
    needed = n_lags * lag_stride + 1
    require_frames(
        n_frames,
        max(needed, 1 + lag_stride),
        f"the diffusivity over {n_lags} lags of {lag_stride} frames ({lag_stride * dt_fs:g} fs)",
    )
    msd = compute_msd(
        positions,
        numbers=numbers,
        masses=masses,
        atoms=atoms,
        cells=cells,
        max_lag=n_lags * lag_stride,
    )
    lags = np.arange(1, n_lags + 1) * lag_stride
    t = lags * float(dt_fs)
    return t, msd[lags] / (6.0 * t)


def compute_vacf(
    velocities: np.ndarray | Atoms | Iterable[Atoms],
    *,
    atoms: np.ndarray | None = None,
    max_lag: int | None = None,
    normalize: bool = False,
) -> np.ndarray:
    """Velocity autocorrelation ⟨vᵢ(t₀) · vᵢ(t₀ + m)⟩ over atoms i and all time origins t₀.

    Args:
        velocities: (T, N, 3) in any unit, or ASE frames (their ``get_velocities()``, Å per ASE
            time unit).
        atoms: indices of the atoms averaged over (default all).
        max_lag: largest lag in frames (default T − 1).
        normalize: divide by the t = 0 value (compare shapes).

    Returns:
        (max_lag + 1,) VACF at lags 0 … max_lag frames, velocity unit squared (or
        dimensionless when normalized).
    """
    if not isinstance(velocities, np.ndarray):
        velocities = trajectory_arrays(velocities, velocities=True).velocities
    v = np.asarray(velocities, dtype=np.float64)
    if v.ndim != 3 or v.shape[2] != 3:
        raise ValueError(f"velocities must have shape (n_frames, n_atoms, 3), got {v.shape}")
    if atoms is not None:
        v = v[:, np.asarray(atoms), :]
    n_frames, n_atoms = v.shape[:2]
    lag = _max_lag(n_frames, max_lag, "the VACF")
    vacf = _summed_autocorrelation(v.reshape(n_frames, -1), lag)
    vacf /= (n_frames - np.arange(lag + 1)) * n_atoms
    if normalize:
        if not vacf[0] > 0:
            raise ValueError("the velocities are all zero; the VACF cannot be normalized")
        vacf = vacf / vacf[0]
    return vacf
