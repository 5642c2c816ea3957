"""DiffSim targets: a radial distribution function (and optionally a VACF) to reproduce.

Targets come from CSV files in the layout of mdgrad's ``data/LJ_data`` (and ``../shared/data/
lj_rdf``): an RDF file has two rows, r (Å, = σ in reduced units) and g(r), on a uniform grid of
Gaussian centres (see :mod:`ase_mlmd.observables.differentiable`); a VACF file has one row (or
column) of c(t) at consecutive steps, possibly padded with NaN. They can also be computed from a
reference trajectory (any ASE-readable file or list of ``Atoms``) with the same RDF definition.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from ase_mlmd.errors import DataFormatError
from ase_mlmd.observables.differentiable import RDFGrid, compute_rdf_torch

STATE_PATTERN = re.compile(r"rho(?P<rho>[0-9]*\.?[0-9]+)_T(?P<T>[0-9]*\.?[0-9]+)")


@dataclasses.dataclass
class RDFTarget:
    """A target g(r) on a uniform grid of centres.

    Attributes:
        r: (nbins,) centres, Å. g: (nbins,) g(r).
        density: number density of the state it describes, 1/Å³ (None if unknown).
        temperature: k_B T of that state, eV (reduced temperature; None if unknown).
        source: where it came from (file name), for reports.
        normalization: the RDF definition it follows ("mdgrad" or "density").
    """

    r: np.ndarray
    g: np.ndarray
    density: float | None = None
    temperature: float | None = None
    source: str = ""
    normalization: str = "mdgrad"

    @property
    def grid(self) -> RDFGrid:
        """The smearing grid of this target (width = spacing)."""
        return RDFGrid(float(self.r[0]), float(self.r[-1]), len(self.r))

    def g_tensor(self, dtype=torch.float64, device=None) -> torch.Tensor:
        return torch.as_tensor(self.g, dtype=dtype, device=device)

    def check_cutoff(self, cutoff: float) -> None:
        """Raise :class:`DataFormatError` unless the grid covers the potential's range.

        The RDF is the only information about φ(r): a potential that acts beyond the last r of
        the target is unconstrained there, and one that starts beyond the first r could not be
        fitted to it.
        """
        if self.r[-1] < cutoff:
            raise DataFormatError(
                f"target {self.source or 'RDF'}: its r-grid ends at {self.r[-1]:.4g} Å, inside "
                f"the potential's cutoff {cutoff:.4g} Å, so the potential between them would "
                "not be fitted. Use a target that extends past the cutoff, or a smaller --cutoff"
            )
        if self.r[0] >= cutoff:
            raise DataFormatError(
                f"target {self.source or 'RDF'}: its r-grid starts at {self.r[0]:.4g} Å, beyond "
                f"the cutoff {cutoff:.4g} Å; it says nothing about the potential"
            )


@dataclasses.dataclass
class VACFTarget:
    """A target velocity autocorrelation c(t) at lags 0, 1, … steps (per-component mean)."""

    values: np.ndarray
    source: str = ""

    @property
    def max_lag(self) -> int:
        return len(self.values)


def state_from_name(path: str | os.PathLike) -> tuple[float | None, float | None]:
    """(density, temperature) from a file name like ``rdf_rho0.845_T1.0_dt0.01.csv``."""
    match = STATE_PATTERN.search(Path(path).name)
    if match is None:
        return None, None
    return float(match["rho"]), float(match["T"])


def _load_csv(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataFormatError(f"target file {path} does not exist")
    try:
        data = np.loadtxt(path, delimiter=",", ndmin=2)
    except ValueError as err:
        raise DataFormatError(
            f"{path}: not a comma-separated table of numbers ({err}). An RDF target has two "
            "rows: r, then g(r)"
        ) from None
    return data


def read_rdf_csv(
    path: str | os.PathLike,
    density: float | None = None,
    temperature: float | None = None,
    layout: str = "rows",
) -> RDFTarget:
    """Read a target RDF: row 1 = r (Å), row 2 = g(r) (``layout="columns"``: two columns).

    Density and temperature default to those in the file name (``rho…_T…``).

    Raises:
        DataFormatError: missing file, not numeric, not two rows (the message says when the
            file looks like two columns instead), fewer than 3 points, non-finite values, a
            negative g, or an r-grid that is not increasing and uniform.
    """
    path = Path(path)
    data = _load_csv(path)
    if layout == "columns":
        data = data.T
    elif layout != "rows":
        raise ValueError(f"layout must be 'rows' or 'columns', got {layout!r}")
    if data.shape[0] != 2:
        hint = ""
        if data.ndim == 2 and data.shape[1] == 2 and data.shape[0] > 2:
            hint = (
                " It has two columns instead: it looks like the transposed layout; pass "
                "layout='columns' (CLI: --target-layout columns) or transpose the file"
            )
        raise DataFormatError(
            f"{path}: an RDF target has 2 rows (r, then g(r)); found a table of shape "
            f"{data.shape}.{hint}"
        )
    r, g = data
    if len(r) < 3:
        raise DataFormatError(f"{path}: only {len(r)} points; an RDF target needs at least 3")
    if not (np.isfinite(r).all() and np.isfinite(g).all()):
        raise DataFormatError(f"{path}: contains NaN or inf values")
    if (g < 0).any():
        raise DataFormatError(f"{path}: g(r) is negative at r = {r[np.argmax(g < 0)]:.4g}")
    steps = np.diff(r)
    if (steps <= 0).any() or not np.allclose(steps, steps.mean(), rtol=1e-4, atol=0):
        raise DataFormatError(
            f"{path}: the r row must increase in equal steps (the RDF definition puts Gaussian "
            f"centres on a uniform grid); steps range from {steps.min():.4g} to {steps.max():.4g}"
        )
    if r[0] < 0:
        raise DataFormatError(f"{path}: r starts at a negative distance {r[0]}")
    name_rho, name_t = state_from_name(path)
    return RDFTarget(
        r=r.astype(np.float64),
        g=g.astype(np.float64),
        density=name_rho if density is None else float(density),
        temperature=name_t if temperature is None else float(temperature),
        source=path.name,
    )


def read_vacf_csv(path: str | os.PathLike) -> VACFTarget:
    """Read a target VACF (one row or one column; a trailing NaN padding is dropped)."""
    path = Path(path)
    data = _load_csv(path)
    if min(data.shape) != 1:
        raise DataFormatError(
            f"{path}: a VACF target is a single row or column of values; found {data.shape}"
        )
    values = data.reshape(-1)
    finite = np.isfinite(values)
    n = len(values) if finite.all() else int(np.argmin(finite))
    if n < 2 or not finite[:n].all():
        raise DataFormatError(f"{path}: needs at least 2 finite values before any NaN padding")
    return VACFTarget(values=values[:n].astype(np.float64), source=path.name)


def rdf_from_frames(
    frames: Sequence[Atoms] | str | os.PathLike,
    grid: RDFGrid | None = None,
    normalization: str = "mdgrad",
    temperature: float | None = None,
) -> RDFTarget:
    """A target computed from a reference trajectory (a file readable by ``ase.io.read`` or a
    list of periodic ``Atoms`` with a constant number of atoms), with the DiffSim RDF."""
    source = ""
    if isinstance(frames, str | os.PathLike):
        from ase.io import read

        source = Path(frames).name
        frames = read(frames, index=":")
    frames = list(frames)
    if not frames:
        raise DataFormatError(f"reference trajectory {source or ''} has no frames")
    if not all(a.pbc.all() for a in frames):
        raise DataFormatError("an RDF target needs periodic frames (pbc on all three axes)")
    if len({len(a) for a in frames}) != 1:
        raise DataFormatError("all reference frames must have the same number of atoms")
    grid = RDFGrid() if grid is None else grid
    positions = torch.as_tensor(np.stack([a.positions for a in frames]))
    cells = torch.as_tensor(np.stack([a.cell.array for a in frames]))
    with torch.no_grad():
        g = compute_rdf_torch(positions, cells, grid, normalization).numpy()
    density = float(np.mean([len(a) / a.get_volume() for a in frames]))
    return RDFTarget(
        r=grid.centres().numpy(),
        g=g,
        density=density,
        temperature=temperature,
        source=source or f"{len(frames)} reference frames",
        normalization=normalization,
    )
