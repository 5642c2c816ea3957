"""Differentiable observables in torch: a Gaussian-smeared RDF and the VACF (for DiffSim).

RDF (METRICS.md §2, the definition of Wang et al. 2023 / mdgrad, which the ``lj_rdf`` target
files follow exactly):

* ``nbins`` Gaussians with centres r_k = linspace(start, end, nbins) and width w = the centre
  spacing (r_k is the r column of a target file);
* each unordered pair (minimum image) adds exp(−(d − r_k)² / (2 w²)) to bin k (terms further than
  6 w, < 1.6e-8 of a peak, are skipped);
* ``normalization="mdgrad"``: per frame, counts / Σ counts × V / ΔV_k with ΔV_k the shells
  between the edges linspace(start, end, nbins + 1) and V = 4/3 π end³. This is self-normalized
  (Σ_k g_k ΔV_k = V exactly, which the target files satisfy to 1e-7) and needs no density; the
  centres are not the shell mid-points (a quirk of the original, kept so that targets and
  simulations are compared on the same definition), so an ideal gas gives g from 0.977 at 0.75
  to 1.017 at 3.3 rather than 1;
* ``normalization="density"``: the textbook g_k = n_k / (N/2 · ρ · ΔV_k^c), with n_k the
  smeared count per frame (each Gaussian integrates to one bin), ΔV_k^c the shell of width Δr
  centred on r_k and ρ = N / V_cell; g → 1 for an ideal gas.

Frames are averaged after normalization. Distances use the minimum image through fractional
coordinates, exact for orthorhombic cells (the DiffSim boxes are cubic); for a general cell it is
exact only for distances below half the smallest cell height.

VACF: c(t) = ⟨v(t₀) · v(t₀ + t)⟩ averaged over atoms and every time origin of the window;
``reduce="component"`` (default, as the ``vacf_*.csv`` targets: c(0) = k_B T / m) averages over
the three Cartesian components, ``reduce="dot"`` sums them (METRICS.md §1, 3× larger).
"""

from __future__ import annotations

import dataclasses
import math

import torch

#: Gaussians further than this many widths from a distance (< 1.6e-8 of the peak) are skipped
SMEAR_RANGE = 6.0
NORMALIZATIONS = ("mdgrad", "density")
#: frames per block when selecting pairs, and pairs per block when smearing (bound the memory)
FRAME_CHUNK = 8
PAIR_CHUNK = 1 << 17


@dataclasses.dataclass(frozen=True)
class RDFGrid:
    """The r-grid of a smeared RDF.

    Attributes:
        start, end: first and last Gaussian centre, Å.
        nbins: number of centres.
        width: Gaussian width, Å (default: the centre spacing).
    """

    start: float = 0.75
    end: float = 3.3
    nbins: int = 100
    width: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end or self.nbins < 2:
            raise ValueError(
                f"need 0 <= start < end and nbins >= 2, got {self.start}, {self.end}, {self.nbins}"
            )
        if self.width is not None and not self.width > 0:
            raise ValueError(f"the smearing width must be positive, got {self.width}")

    @property
    def spacing(self) -> float:
        """Distance between centres, Å."""
        return (self.end - self.start) / (self.nbins - 1)

    @property
    def sigma(self) -> float:
        """Gaussian width actually used, Å."""
        return self.spacing if self.width is None else float(self.width)

    @property
    def reach(self) -> float:
        """Distances beyond ``end + reach`` (or below ``start - reach``) are skipped, Å."""
        return SMEAR_RANGE * self.sigma

    def centres(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """(nbins,) Gaussian centres r_k, Å."""
        return torch.linspace(self.start, self.end, self.nbins, dtype=dtype, device=device)

    def shell_volumes(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """(nbins,) ΔV_k between edges linspace(start, end, nbins + 1) (mdgrad), Å³."""
        edges = torch.linspace(self.start, self.end, self.nbins + 1, dtype=dtype, device=device)
        return 4.0 / 3.0 * math.pi * (edges[1:] ** 3 - edges[:-1] ** 3)

    def centred_shell_volumes(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """(nbins,) shells of width Δr centred on each r_k (for ``"density"``), Å³."""
        r = self.centres(dtype, device)
        lo = (r - 0.5 * self.spacing).clamp_min(0.0)
        return 4.0 / 3.0 * math.pi * ((r + 0.5 * self.spacing) ** 3 - lo**3)


def pair_distances(positions: torch.Tensor, cell: torch.Tensor, r_max: float) -> torch.Tensor:
    """Minimum-image distances of the unordered pairs closer than ``r_max`` in one frame.

    Args:
        positions: (N, 3) Å.
        cell: (3, 3) Å, rows are lattice vectors (periodic along all three).
        r_max: largest distance kept, Å.

    Returns:
        (P,) distances, Å, differentiable in positions and cell.
    """
    distances, _ = frame_pair_distances(positions[None], cell[None], r_max)
    return distances


def species_pairs(numbers: torch.Tensor, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The unordered atom pairs (i < j) whose elements are {a, b} (for a partial RDF g_ab).

    Args:
        numbers: (N,) atomic numbers. a, b: the two elements (equal for a like pair).

    Returns:
        (i, j), each (P,) int64: N_a (N_a − 1) / 2 pairs for a = b, N_a N_b otherwise.
    """
    numbers = torch.as_tensor(numbers)
    n = numbers.shape[0]
    i, j = torch.triu_indices(n, n, offset=1, device=numbers.device)
    zi, zj = numbers[i], numbers[j]
    keep = ((zi == a) & (zj == b)) | ((zi == b) & (zj == a))
    return i[keep], j[keep]


def frame_pair_distances(
    frames: torch.Tensor,
    cells: torch.Tensor,
    r_max: float,
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-image distances of the unordered pairs closer than ``r_max`` in several frames.

    Args:
        frames: (F, N, 3) positions, Å. cells: (F, 3, 3) cells, Å. r_max: Å.
        pairs: only these atom pairs (i, j), e.g. :func:`species_pairs` (default: all i < j).

    Returns:
        the distances (P,), Å, and the frame of each (P,) int64.
    """
    n = frames.shape[1]
    if pairs is None:
        i, j = torch.triu_indices(n, n, offset=1, device=frames.device)
    else:
        i, j = (p.to(frames.device) for p in pairs)
    # select the pairs without a graph, a few frames at a time (the dense F × N²/2 arrays are
    # the largest in the whole computation), then differentiate only the selected ones
    frame_parts, pair_parts, shift_parts = [], [], []
    with torch.no_grad():
        for first in range(0, frames.shape[0], FRAME_CHUNK):
            block = slice(first, first + FRAME_CHUNK)
            c = cells[block]
            frac = torch.linalg.solve(c.transpose(1, 2), frames[block].transpose(1, 2))
            frac = frac.transpose(1, 2)
            delta = frac[:, j] - frac[:, i]
            image = torch.round(delta)
            d = torch.linalg.norm(torch.bmm(delta - image, c), dim=2)  # (f, P)
            f, pair = (d < r_max).nonzero(as_tuple=True)
            frame_parts.append(f + first)
            pair_parts.append(pair)
            shift_parts.append(image[f, pair])
    frame, pair, shift = torch.cat(frame_parts), torch.cat(pair_parts), torch.cat(shift_parts)
    a, b = i[pair], j[pair]
    if cells.requires_grad:
        offsets = torch.bmm(shift.unsqueeze(1), cells[frame]).squeeze(1)
    else:  # the usual case (fixed box): no per-pair copy of the cell in the graph
        with torch.no_grad():
            offsets = torch.bmm(shift.unsqueeze(1), cells[frame]).squeeze(1)
    return torch.linalg.norm(frames[frame, b] - frames[frame, a] - offsets, dim=1), frame


class _SmearedCounts(torch.autograd.Function):
    """Banded Gaussian histogram. Distance m adds exp(−(d_m − c)² / 2w²) at the centres
    c = start + (nearest_m + o) Δr, o = −half … half, to bins ``base_m + o`` of a flat
    padded array. Pairs are processed in blocks and backward recomputes the Gaussians, so the
    memory is O(pairs), not O(pairs × band)."""

    @staticmethod
    def forward(ctx, d, nearest, base, grid_args, size):
        start, spacing, sigma, half = grid_args
        ctx.save_for_backward(d, nearest, base)
        ctx.grid_args = grid_args
        out = torch.zeros(size, dtype=d.dtype, device=d.device)
        offsets = torch.arange(-half, half + 1, device=d.device)
        for block in range(0, d.shape[0], PAIR_CHUNK):
            sl = slice(block, block + PAIR_CHUNK)
            centres = start + (nearest[sl, None] + offsets).to(d.dtype) * spacing
            weights = torch.exp(-0.5 * ((d[sl, None] - centres) / sigma) ** 2)
            index = base[sl, None] + offsets
            out.index_add_(0, index.reshape(-1), weights.reshape(-1))
        return out

    @staticmethod
    def backward(ctx, grad_counts):
        d, nearest, base = ctx.saved_tensors
        start, spacing, sigma, half = ctx.grid_args
        offsets = torch.arange(-half, half + 1, device=d.device)
        grad_d = torch.empty_like(d)
        for block in range(0, d.shape[0], PAIR_CHUNK):
            sl = slice(block, block + PAIR_CHUNK)
            centres = start + (nearest[sl, None] + offsets).to(d.dtype) * spacing
            x = (d[sl, None] - centres) / sigma
            slope = -torch.exp(-0.5 * x**2) * x / sigma
            grad_d[sl] = (slope * grad_counts[base[sl, None] + offsets]).sum(dim=1)
        return grad_d, None, None, None, None


def smeared_counts(
    distances: torch.Tensor,
    grid: RDFGrid,
    frame: torch.Tensor | None = None,
    n_frames: int = 1,
) -> torch.Tensor:
    """Σ_pairs exp(−(d − r_k)² / (2 w²)): the Gaussian-smeared histogram.

    Each distance is spread over the centres within ``SMEAR_RANGE`` widths of it (a band of a
    few bins instead of all of them: the same to 1e-8 relative, many times cheaper).

    Args:
        distances: (P,) pair distances, Å.
        grid: the r-grid.
        frame: (P,) frame of each distance (default: all in frame 0).
        n_frames: number of frames.

    Returns:
        (nbins,) counts, or (n_frames, nbins) when ``frame`` is given.
    """
    d_ = distances.detach()
    keep = (d_ > grid.start - grid.reach) & (d_ < grid.end + grid.reach)
    d = distances[keep]
    half = int(math.ceil(grid.reach / grid.spacing)) + 1
    nearest = torch.round((d.detach() - grid.start) / grid.spacing).long()
    # a row of nbins bins padded by 2 half on both sides per frame (nearest lies within half of
    # the grid, its band within another half): no bounds checks; the pads are cut off
    pad = 2 * half
    width = grid.nbins + 2 * pad
    base = nearest + pad  # bin of each distance's nearest centre in the padded row
    if frame is not None:
        base = base + frame[keep] * width
    grid_args = (grid.start, grid.spacing, grid.sigma, half)
    counts = _SmearedCounts.apply(d, nearest, base, grid_args, n_frames * width)
    counts = counts.reshape(n_frames, width)[:, pad : pad + grid.nbins]
    return counts if frame is not None else counts[0]


def compute_rdf_torch(
    positions: torch.Tensor,
    cell: torch.Tensor,
    grid: RDFGrid | None = None,
    normalization: str = "mdgrad",
    per_frame: bool = False,
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Gaussian-smeared radial distribution function of one periodic system, differentiable.

    Args:
        positions: (F, N, 3) frames or (N, 3) one frame, Å.
        cell: (3, 3) or (F, 3, 3) cell, Å.
        grid: the r-grid (default: 100 centres on [0.75, 3.3] Å, width = spacing).
        normalization: ``"mdgrad"`` (self-normalized, as the DiffSim targets) or ``"density"``
            (g → 1 for an ideal gas); see the module docstring.
        per_frame: return (F, nbins) instead of the frame average.
        pairs: count only these atom pairs (i, j) — :func:`species_pairs` gives a partial RDF
            g_ab; with ``"density"`` the ideal-gas reference is then their number P per volume
            (P / V ΔV_k instead of N ρ / 2 ΔV_k), so g_ab → 1 for an ideal mixture too.

    Returns:
        (nbins,) g(r_k) averaged over frames (or (F, nbins)).
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    grid = RDFGrid() if grid is None else grid
    frames = positions[None] if positions.dim() == 2 else positions
    n_frames, n_atoms = frames.shape[0], frames.shape[1]
    if n_frames < 1 or n_atoms < 2:
        raise ValueError(f"an RDF needs at least one frame of two atoms, got {n_frames} frames")
    cells = (cell.expand(n_frames, 3, 3) if cell.dim() == 2 else cell).to(frames.dtype)
    distances, frame = frame_pair_distances(frames, cells, grid.end + grid.reach, pairs)
    n_pairs = None if pairs is None else len(pairs[0])
    g = rdf_from_distances(distances, frame, cells, grid, normalization, n_atoms, n_pairs)
    return g if per_frame else g.mean(dim=0)


def rdf_from_distances(
    distances: torch.Tensor,
    frame: torch.Tensor,
    cells: torch.Tensor,
    grid: RDFGrid,
    normalization: str,
    n_atoms: int,
    n_pairs: int | None = None,
) -> torch.Tensor:
    """Per-frame g(r) (F, nbins) from pair distances, as :func:`compute_rdf_torch` does it.

    Args:
        distances: (P,) pair distances, Å (those outside the grid's reach are ignored, so a
            list from a longer ``r_max`` gives the same RDF). frame: (P,) frame of each.
        cells: (F, 3, 3) cells, Å. grid, normalization: see :func:`compute_rdf_torch`.
        n_atoms: atoms per frame. n_pairs: the number of atom pairs counted when they are a
            subset (``pairs`` of :func:`compute_rdf_torch`; None: all pairs) — the
            ``"density"`` reference per shell is then n_pairs / V instead of N ρ / 2.
    """
    n_frames = cells.shape[0]
    dtype, device = distances.dtype, distances.device
    counts = smeared_counts(distances, grid, frame, n_frames)  # (F, nbins)
    if normalization == "mdgrad":
        total = counts.sum(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        volume = 4.0 / 3.0 * math.pi * grid.end**3
        return counts / total * (volume / grid.shell_volumes(dtype, device))
    # a unit-area Gaussian has height 1/(w√2π): n_k = counts · Δr / (w√2π) per bin
    n_k = counts * (grid.spacing / (grid.sigma * math.sqrt(2.0 * math.pi)))
    volumes = torch.linalg.det(cells).abs()  # (F,)
    shells = grid.centred_shell_volumes(dtype, device)
    reference = 0.5 * n_atoms * (n_atoms / volumes) if n_pairs is None else n_pairs / volumes
    return n_k / (reference[:, None] * shells)


def compute_vacf_torch(
    velocities: torch.Tensor, max_lag: int, reduce: str = "component", normalize: bool = False
) -> torch.Tensor:
    """Velocity autocorrelation over a window of consecutive frames, differentiable.

    Args:
        velocities: (T, N, 3) velocities of consecutive steps, Å/ASE-time.
        max_lag: number of lags (0 … max_lag − 1), at most T.
        reduce: ``"component"`` (mean over x, y, z: c(0) = k_B T / m) or ``"dot"`` (sum).
        normalize: divide by c(0).

    Returns:
        (max_lag,) c(t) for lags of 0 … max_lag − 1 frames.
    """
    if velocities.dim() != 3 or velocities.shape[-1] != 3:
        raise ValueError(f"velocities must be (T, N, 3), got {tuple(velocities.shape)}")
    n_steps = velocities.shape[0]
    if not 1 <= max_lag <= n_steps:
        raise ValueError(f"max_lag must be in [1, {n_steps}] for {n_steps} frames, got {max_lag}")
    if reduce not in ("component", "dot"):
        raise ValueError(f"reduce must be 'component' or 'dot', got {reduce!r}")
    scale = 3.0 if reduce == "dot" else 1.0
    values = [(velocities * velocities).mean()]
    for lag in range(1, max_lag):
        values.append((velocities[lag:] * velocities[:-lag]).mean())
    vacf = torch.stack(values) * scale
    return vacf / vacf[0] if normalize else vacf
