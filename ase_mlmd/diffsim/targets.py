"""DiffSim targets: a radial distribution function (and optionally a VACF) to reproduce.

Targets come from CSV files in the layout of mdgrad's ``data/LJ_data`` (and ``../shared/data/
lj_rdf``): an RDF file has two rows, r (Å, = σ in reduced units) and g(r), on a uniform grid of
Gaussian centres (see :mod:`ase_mlmd.observables.differentiable`); a VACF file has one row (or
column) of c(t) at consecutive steps, possibly padded with NaN. They can also be computed from a
reference trajectory (any ASE-readable file or list of ``Atoms``) with the same RDF definition.

Mixtures (fits over compositions): a *partial-RDF* file holds the r row followed by one row of
g_ab(r) per species pair, and names them in ``# key: value`` header lines::

    # pairs: Ar-Ar,Ar-Kr,Kr-Kr
    # composition: Ar:0.75,Kr:0.25
    # density: 0.75
    # temperature: 1.2
    0.7,0.726,...          <- r
    0.0,0.0,...            <- g_ArAr
    ...

:func:`read_partial_rdf_csv` reads it, :func:`write_partial_rdf_csv` writes it (atomically) and
:func:`read_targets` reads either layout.
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
from ase_mlmd.fileio import atomic_write_text
from ase_mlmd.models.species_pair import PairKey, pair_label, parse_pair
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
        pair: the species pair of a partial RDF g_ab ("Ar-Kr"), None for the RDF of all atoms.
    """

    r: np.ndarray
    g: np.ndarray
    density: float | None = None
    temperature: float | None = None
    source: str = ""
    normalization: str = "mdgrad"
    pair: str | None = None

    @property
    def species(self) -> PairKey | None:
        """The sorted (Z_a, Z_b) of :attr:`pair`, None for the RDF of all atoms."""
        return None if self.pair is None else parse_pair(self.pair)

    @property
    def label(self) -> str:
        """The pair ("Ar-Kr") or "all"."""
        return self.pair or "all"

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


def _check_rdf_rows(path: Path, r: np.ndarray, gs: np.ndarray, places: list[str]) -> None:
    """Validate an r row and the g rows on it (shared by both target layouts).

    ``places`` names where each row is in the file, r first (``"line 3"``, or ``"column 1"``
    for the column layout), so that every message points at 1-based file positions.
    """
    if len(r) < 3:
        raise DataFormatError(f"{path}: only {len(r)} points; an RDF target needs at least 3")
    for row, place in zip([r, *gs], places, strict=True):
        if not np.isfinite(row).all():
            k = int(np.argmin(np.isfinite(row)))
            raise DataFormatError(
                f"{path}, {place}: value {k + 1} is {row[k]} (NaN or inf); a target holds "
                "finite numbers only"
            )
    for g, place in zip(gs, places[1:], strict=True):
        if (g < 0).any():
            k = int(np.argmax(g < 0))
            raise DataFormatError(
                f"{path}, {place}: g(r) is negative ({g[k]:.4g}) at value {k + 1}, r = {r[k]:.4g}"
            )
    steps = np.diff(r)
    if (steps <= 0).any() or not np.allclose(steps, steps.mean(), rtol=1e-4, atol=0):
        raise DataFormatError(
            f"{path}, {places[0]}: the r row must increase in equal steps (the RDF definition "
            "puts Gaussian centres on a uniform grid); steps range from "
            f"{steps.min():.4g} to {steps.max():.4g}"
        )
    if r[0] < 0:
        raise DataFormatError(f"{path}, {places[0]}: r starts at a negative distance {r[0]}")


def _header(path: Path) -> dict[str, str]:
    """``# key: value`` lines at the top of a target file."""
    header = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            key, sep, value = line[1:].partition(":")
            if sep:
                header[key.strip().lower()] = value.strip()
    return header


def parse_composition(text: str) -> dict[str, float]:
    """``"Ar:0.75,Kr:0.25"`` → ``{"Ar": 0.75, "Kr": 0.25}`` (mole fractions, summing to 1)."""
    from ase.data import atomic_numbers

    composition: dict[str, float] = {}
    for part in text.replace(" ", "").split(","):
        symbol, sep, value = part.partition(":")
        try:
            fraction = float(value)
        except ValueError:
            fraction = float("nan")
        if not sep or symbol not in atomic_numbers or not fraction > 0:
            raise DataFormatError(
                f"composition {text!r}: write it as element:fraction pairs, e.g. "
                "'Ar:0.75,Kr:0.25' (positive fractions)"
            )
        composition[symbol] = fraction
    if abs(sum(composition.values()) - 1.0) > 1e-6:
        raise DataFormatError(
            f"composition {text!r}: the mole fractions sum to {sum(composition.values()):.6g}, "
            "not 1"
        )
    return composition


def format_composition(composition: dict[str, float]) -> str:
    """Inverse of :func:`parse_composition`."""
    return ",".join(f"{k}:{v:g}" for k, v in composition.items())


def _load_csv(path: Path) -> tuple[np.ndarray, list[int]]:
    """The numbers of a comma-separated target file and the 1-based file line of each row
    (``#`` header lines and blank lines are skipped but counted)."""
    if not path.is_file():
        raise DataFormatError(f"target file {path} does not exist")
    rows: list[list[float]] = []
    lines: list[int] = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, text in enumerate(handle, start=1):
            text = text.strip()
            if not text or text.startswith("#"):
                continue
            values = []
            for column, field in enumerate(text.split(","), start=1):
                try:
                    values.append(float(field))
                except ValueError:
                    raise DataFormatError(
                        f"{path}, line {number}, column {column}: {field.strip()!r} is not a "
                        "number; a target file is a comma-separated table of numbers (an RDF "
                        "target has two rows: r, then g(r); '#' starts a header line)"
                    ) from None
            if rows and len(values) != len(rows[0]):
                raise DataFormatError(
                    f"{path}, line {number}: {len(values)} values, but line {lines[0]} has "
                    f"{len(rows[0])}; every row of a target must have the same length"
                )
            rows.append(values)
            lines.append(number)
    if not rows:
        raise DataFormatError(f"{path}: no numbers in the file; an RDF target has rows r, g(r)")
    return np.array(rows, dtype=np.float64), lines


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
    data, lines = _load_csv(path)
    places = [f"line {n}" for n in lines]
    if layout == "columns":
        data = data.T
        places = [f"column {k + 1}" for k in range(data.shape[0])]
    elif layout != "rows":
        raise ValueError(f"layout must be 'rows' or 'columns', got {layout!r}")
    if data.shape[0] != 2:
        hint = ""
        if data.shape[0] > 2:
            hint = (
                " For partial RDFs of a mixture (one g row per species pair) name the rows in a "
                "'# pairs: A-A,A-B,B-B' header line"
            )
        if data.ndim == 2 and data.shape[1] == 2 and data.shape[0] > 2:
            hint = (
                " It has two columns instead: it looks like the transposed layout; pass "
                "layout='columns' (CLI: --target-layout columns) or transpose the file"
            )
        raise DataFormatError(
            f"{path}: an RDF target has 2 rows (r, then g(r)); found a table of shape "
            f"{data.shape}.{hint}"
        )
    if "pairs" in _header(path):
        raise DataFormatError(
            f"{path}: a partial-RDF (mixture) file with a '# pairs:' header; read it with "
            "read_partial_rdf_csv / read_targets"
        )
    r, g = data
    _check_rdf_rows(path, r, g[None], places)
    name_rho, name_t = state_from_name(path)
    return RDFTarget(
        r=r.astype(np.float64),
        g=g.astype(np.float64),
        density=name_rho if density is None else float(density),
        temperature=name_t if temperature is None else float(temperature),
        source=path.name,
    )


def read_partial_rdf_csv(
    path: str | os.PathLike,
    density: float | None = None,
    temperature: float | None = None,
) -> tuple[list[RDFTarget], dict[str, float]]:
    """Read a partial-RDF target of a mixture (see the module docstring for the layout).

    Density and temperature come from the arguments, else the ``# density:`` /
    ``# temperature:`` header lines, else the file name (``rho…_T…``).

    Returns:
        one :class:`RDFTarget` per species pair (``pair`` set), and the composition
        ``{element: mole fraction}``.

    Raises:
        DataFormatError: no ``# pairs:`` or ``# composition:`` header, a row count that does not
            match the pairs, a pair of an element not in the composition, or bad numbers.
    """

    path = Path(path)
    data, lines = _load_csv(path)
    header = _header(path)
    if "pairs" not in header or "composition" not in header:
        raise DataFormatError(
            f"{path}: a partial-RDF target needs '# pairs: A-A,A-B,B-B' and '# composition: "
            "A:x,B:1-x' header lines naming its g rows and the mixture"
        )
    composition = parse_composition(header["composition"])
    try:
        pairs = [pair_label(parse_pair(p)) for p in header["pairs"].replace(" ", "").split(",")]
    except ValueError as err:
        raise DataFormatError(f"{path}: bad '# pairs:' header ({err})") from None
    if data.shape[0] != len(pairs) + 1:
        raise DataFormatError(
            f"{path}: {len(pairs)} pairs in the header need {len(pairs) + 1} rows (r, then one "
            f"g row per pair); found {data.shape[0]} (lines {lines[0]}-{lines[-1]})"
        )
    for pair in pairs:
        unknown = set(pair.split("-")) - set(composition)
        if unknown:
            raise DataFormatError(
                f"{path}: pair {pair} has elements {sorted(unknown)} that are not in the "
                f"composition {header['composition']}"
            )
    r, gs = data[0], data[1:]
    _check_rdf_rows(path, r, gs, [f"line {n}" for n in lines])
    name_rho, name_t = state_from_name(path)
    rho = density if density is not None else float(header.get("density", name_rho or "nan"))
    temp = temperature if temperature is not None else header.get("temperature", name_t)
    targets = [
        RDFTarget(
            r=r.astype(np.float64),
            g=g.astype(np.float64),
            density=None if not np.isfinite(rho) else float(rho),
            temperature=None if temp is None else float(temp),
            source=f"{path.name}[{pair}]",
            pair=pair,
        )
        for pair, g in zip(pairs, gs, strict=True)
    ]
    return targets, composition


def write_partial_rdf_csv(
    path: str | os.PathLike,
    targets: Sequence[RDFTarget],
    composition: dict[str, float],
    density: float,
    temperature: float,
) -> Path:
    """Write partial RDFs (same grid, ``pair`` set) in the layout :func:`read_partial_rdf_csv`
    reads; atomic."""
    if not targets or any(t.pair is None for t in targets):
        raise ValueError("every target of a partial-RDF file needs its species pair")
    rows = [targets[0].r, *[t.g for t in targets]]
    lines = [
        f"# pairs: {','.join(t.pair for t in targets)}",
        f"# composition: {format_composition(composition)}",
        f"# density: {density:g}",
        f"# temperature: {temperature:g}",
        *[",".join(f"{v:.10g}" for v in row) for row in rows],
    ]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_targets(
    path: str | os.PathLike,
    density: float | None = None,
    temperature: float | None = None,
    layout: str = "rows",
) -> tuple[list[RDFTarget], dict[str, float] | None]:
    """Read a target file of either layout: (targets, composition) for a partial-RDF file,
    ([target], None) for a plain two-row RDF."""
    path = Path(path)
    if path.is_file() and "pairs" in _header(path):
        return read_partial_rdf_csv(path, density, temperature)
    return [read_rdf_csv(path, density, temperature, layout)], None


def read_vacf_csv(path: str | os.PathLike) -> VACFTarget:
    """Read a target VACF (one row or one column; a trailing NaN padding is dropped)."""
    path = Path(path)
    data, _ = _load_csv(path)
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
