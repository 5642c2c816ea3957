"""A tabulated pair potential: cubic spline through values on a uniform grid of distances.

φ(r) is tabulated at K knots r_k = r_min + k h (k = 0 … K−1, r_{K−1} = r_max ≤ cutoff). Between
knots it is the cubic Hermite polynomial through (u_k, u'_k) and (u_{k+1}, u'_{k+1}), so energy
and force are continuous everywhere. The knot derivatives u'_k are either given (e.g. exact
derivatives of a potential that was tabulated) or, when left out, those of the *natural* cubic
spline through the values (C², zero curvature at both ends), obtained from the values by a fixed
linear map, so that trainable values stay differentiable. Below r_min φ continues linearly with
slope u'_0 (a wall when u'_0 < 0); beyond r_max it is zero.

The table is stored in two buffers (or parameters, with ``trainable=True``), ``values`` and
``derivatives`` (the latter only when given), so a table round-trips through a ``state_dict`` /
safetensors file. Like the other pair potentials the same φ acts between every pair of atoms.

Forces without autograd: φ'(r) is the derivative of the interval's cubic
(:func:`hermite_spline_and_derivative`), so ``direct_forces`` is True and runs that want no graph
(the engine's sampling, production and evaluation runs) take the analytic half-list path of
:meth:`~ase_mlmd.models.pair.PairPotential.direct_evaluate`; differentiable runs
(``create_graph=True``, BPTT) keep autograd through the table.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ase_mlmd.models.pair import PairPotential


def natural_spline_derivative_map(n_knots: int, spacing: float) -> torch.Tensor:
    """(K, K) matrix M with u' = M u: knot derivatives of the natural cubic spline through u.

    From continuity of the second derivative at interior knots
    (u'_{k−1} + 4 u'_k + u'_{k+1} = 3 (u_{k+1} − u_{k−1}) / h) and zero curvature at the ends
    (2 u'_0 + u'_1 = 3 (u_1 − u_0) / h, and the mirror image at the last knot).
    """
    if n_knots < 2:
        raise ValueError(f"a spline needs at least 2 knots, got {n_knots}")
    k = n_knots
    a = torch.zeros((k, k), dtype=torch.float64)
    b = torch.zeros((k, k), dtype=torch.float64)
    idx = torch.arange(1, k - 1)
    a[idx, idx - 1] = 1.0
    a[idx, idx] = 4.0
    a[idx, idx + 1] = 1.0
    b[idx, idx + 1] = 3.0 / spacing
    b[idx, idx - 1] = -3.0 / spacing
    a[0, 0], a[0, 1] = 2.0, 1.0
    b[0, 0], b[0, 1] = -3.0 / spacing, 3.0 / spacing
    a[-1, -1], a[-1, -2] = 2.0, 1.0
    b[-1, -1], b[-1, -2] = 3.0 / spacing, -3.0 / spacing
    return torch.linalg.solve(a, b)


def hermite_spline(
    r: torch.Tensor, r_min: float, spacing: float, values: torch.Tensor, derivatives: torch.Tensor
) -> torch.Tensor:
    """Evaluate the cubic Hermite spline with knot values and derivatives at distances ``r``.

    Args:
        r: (M,) distances, Å.
        r_min: first knot, Å. spacing: knot spacing h, Å.
        values: (K,) φ at the knots, eV. derivatives: (K,) dφ/dr at the knots, eV/Å.

    Returns:
        (M,) φ(r): the spline on [r_min, r_min + (K−1) h], linear continuation below r_min and
        the last value above (callers cut at the cutoff).
    """
    n = values.shape[0]
    t = (r - r_min) / spacing
    # NaN distances (an exploding run) index knot 0 and stay NaN through s
    k = torch.nan_to_num(torch.floor(t.detach()), nan=0.0).clamp(0, n - 2).long()
    s = (t - k.to(t.dtype)).clamp(0.0, 1.0)
    u0, u1 = values[k], values[k + 1]
    d0, d1 = derivatives[k] * spacing, derivatives[k + 1] * spacing
    s2 = s * s
    s3 = s2 * s
    inside = (2 * s3 - 3 * s2 + 1) * u0 + (s3 - 2 * s2 + s) * d0
    inside = inside + (-2 * s3 + 3 * s2) * u1 + (s3 - s2) * d1
    below = values[0] + derivatives[0] * (r - r_min)
    return torch.where(t < 0, below, inside)


def hermite_spline_and_derivative(
    r: torch.Tensor, r_min: float, spacing: float, values: torch.Tensor, derivatives: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """φ(r) of :func:`hermite_spline` and its derivative dφ/dr, without autograd.

    On each interval the Hermite cubic is written in powers of s = (r − r_k)/h,
    φ = u_k + d_k s + c_k s² + e_k s³ with d = h u', c = 3(u_{k+1} − u_k) − 2 d_k − d_{k+1},
    e = 2(u_k − u_{k+1}) + d_k + d_{k+1}; so dφ/dr = (d_k + 2 c_k s + 3 e_k s²)/h.

    Args:
        r: (M,) distances, Å.
        r_min: first knot, Å. spacing: knot spacing h, Å.
        values: (K,) φ at the knots, eV. derivatives: (K,) dφ/dr at the knots, eV/Å.

    Returns:
        (φ (M,) eV, dφ/dr (M,) eV/Å): linear continuation below r_min (slope u'_0), the last
        interval's cubic at s = 1 above the last knot (callers cut there).
    """
    n = values.shape[0]
    t = (r - r_min) / spacing
    k = torch.nan_to_num(torch.floor(t), nan=0.0).clamp(0, n - 2).long()
    s = (t - k.to(t.dtype)).clamp(0.0, 1.0)
    u0, u1 = values[:-1], values[1:]
    d0, d1 = derivatives[:-1] * spacing, derivatives[1:] * spacing
    c = 3.0 * (u1 - u0) - 2.0 * d0 - d1
    e = 2.0 * (u0 - u1) + d0 + d1
    # one (4, K−1) table, gathered row by row: contiguous (M,) coefficient arrays
    table = torch.stack([u0, d0, c, e])
    a0, a1, a2, a3 = (row.index_select(0, k) for row in table)
    phi = a0 + s * (a1 + s * (a2 + s * a3))
    dphi = (a1 + s * (2.0 * a2 + 3.0 * s * a3)) / spacing
    below = t < 0
    phi = torch.where(below, values[0] + derivatives[0] * (r - r_min), phi)
    dphi = torch.where(below, derivatives[0], dphi)
    return phi, dphi


def hermite_energy_basis(
    r: torch.Tensor,
    r_min: float,
    spacing: float,
    n_knots: int,
    groups: torch.Tensor | None = None,
    n_groups: int = 1,
) -> torch.Tensor:
    """Coefficients that make Σ_pairs φ(r) a linear function of the table.

    Σ_m φ(r_m) = B · concat(values, derivatives) for the spline of :func:`hermite_spline`, with
    B = Σ_m of each distance's Hermite weights. Distances must lie below the last knot.

    Args:
        r: (M,) distances, Å.
        r_min, spacing, n_knots: the grid.
        groups: (M,) group (e.g. frame) of each distance; then one row per group.
        n_groups: number of groups.

    Returns:
        (2K,) or (n_groups, 2K) coefficients B.
    """
    t = (r - r_min) / spacing
    k = torch.nan_to_num(torch.floor(t), nan=0.0).clamp(0, n_knots - 2).long()
    s = (t - k.to(t.dtype)).clamp(0.0, 1.0)
    s2, s3 = s * s, s * s * s
    below = t < 0
    w_u0 = torch.where(below, torch.ones_like(s), 2 * s3 - 3 * s2 + 1)
    w_d0 = torch.where(below, r - r_min, (s3 - 2 * s2 + s) * spacing)
    w_u1 = torch.where(below, torch.zeros_like(s), -2 * s3 + 3 * s2)
    w_d1 = torch.where(below, torch.zeros_like(s), (s3 - s2) * spacing)
    index = torch.stack([k, n_knots + k, k + 1, n_knots + k + 1], dim=1)
    weights = torch.stack([w_u0, w_d0, w_u1, w_d1], dim=1)
    if groups is not None:
        index = index + (groups * 2 * n_knots)[:, None]
    basis = torch.zeros(n_groups * 2 * n_knots, dtype=r.dtype, device=r.device)
    basis.index_add_(0, index.reshape(-1), weights.reshape(-1))
    return basis.reshape(n_groups, 2 * n_knots) if groups is not None else basis


class SplinePair(PairPotential):
    """Pair potential tabulated on a uniform grid and interpolated by a cubic spline.

    Args:
        r_min: first knot, Å (distances below it get the linear continuation).
        cutoff: r_c, Å; also the last knot unless ``r_max`` is given.
        n_knots: number of knots K (at least 2).
        values: (K,) φ at the knots, eV (default zeros, e.g. before ``load_state_dict``).
        derivatives: (K,) dφ/dr at the knots, eV/Å; ``None`` uses the natural cubic spline.
        natural: ``False`` builds a Hermite spline (own derivatives, zeros if not given, e.g.
            before ``load_state_dict``); default: natural exactly when no derivatives are given.
        r_max: last knot, Å (≤ cutoff; default the cutoff).
        cutoff_mode: ``"none"`` (default: the table itself should reach 0 at r_c), ``"shift"``
            or ``"smooth"`` (see :class:`~ase_mlmd.models.pair.PairPotential`).
        trainable: register the table as ``nn.Parameter`` (for fitting the table directly).
    """

    def __init__(
        self,
        r_min: float,
        cutoff: float,
        n_knots: int,
        values: torch.Tensor | Iterable[float] | None = None,
        derivatives: torch.Tensor | Iterable[float] | None = None,
        r_max: float | None = None,
        natural: bool | None = None,
        cutoff_mode: str = "none",
        r_on: float | None = None,
        species: Iterable[int] | None = None,
        dtype: torch.dtype = torch.float64,
        trainable: bool = False,
    ) -> None:
        super().__init__(cutoff, cutoff_mode, r_on, species, dtype)
        r_max = self.cutoff if r_max is None else float(r_max)
        n_knots = int(n_knots)
        if not 0 < r_min < r_max <= self.cutoff:
            raise ValueError(
                f"need 0 < r_min < r_max <= cutoff, got r_min={r_min}, r_max={r_max}, "
                f"cutoff={self.cutoff}"
            )
        if n_knots < 2:
            raise ValueError(f"a spline needs at least 2 knots, got n_knots={n_knots}")
        self.r_min, self.r_max, self.n_knots = float(r_min), r_max, n_knots
        self.spacing = (r_max - self.r_min) / (n_knots - 1)
        self.trainable = bool(trainable)
        self.natural = derivatives is None if natural is None else bool(natural)
        if self.natural and derivatives is not None:
            raise ValueError("a natural spline computes its derivatives; do not pass them")
        self._store("values", values)
        if self.natural:
            m = natural_spline_derivative_map(n_knots, self.spacing).to(dtype)
            self.register_buffer("derivative_map", m, persistent=False)
        else:
            self._store("derivatives", derivatives)

    def _store(self, name: str, data) -> None:
        if data is None:
            tensor = torch.zeros(self.n_knots, dtype=self._dtype)
        else:
            tensor = torch.as_tensor(data, dtype=self._dtype).detach().clone().reshape(-1)
        if tensor.shape != (self.n_knots,):
            raise ValueError(f"{name} must have {self.n_knots} entries, got {tuple(tensor.shape)}")
        if self.trainable:
            self.register_parameter(name, torch.nn.Parameter(tensor))
        else:
            self.register_buffer(name, tensor)

    @property
    def knots(self) -> torch.Tensor:
        """(K,) knot positions, Å."""
        return torch.linspace(
            self.r_min, self.r_max, self.n_knots, dtype=self.values.dtype, device=self.values.device
        )

    def knot_derivatives(self) -> torch.Tensor:
        """(K,) dφ/dr at the knots, eV/Å (given, or from the natural spline)."""
        if self.natural:
            return self.derivative_map.to(self.values.dtype) @ self.values
        return self.derivatives

    def set_table(self, values: torch.Tensor, derivatives: torch.Tensor | None = None) -> None:
        """Use these tensors as the table (no copy: a tensor that requires grad stays the same
        leaf, so gradients of anything computed with the spline collect in its ``.grad``)."""
        if values.shape != (self.n_knots,):
            raise ValueError(f"values must have {self.n_knots} entries, got {tuple(values.shape)}")
        if (derivatives is None) != self.natural:
            kind = "natural (no derivatives)" if self.natural else "Hermite (with derivatives)"
            raise ValueError(f"this spline was built as {kind}; pass the table the same way")
        if self.trainable:
            raise ValueError("set_table replaces buffers; a trainable spline owns its parameters")
        self.values = values
        if derivatives is not None:
            self.derivatives = derivatives

    def hyperparameters(self) -> dict:
        """The constructor arguments that shape the table (the table itself is the weights)."""
        out = {
            "r_min": self.r_min,
            "cutoff": self.cutoff,
            "n_knots": self.n_knots,
            "r_max": self.r_max,
            "natural": self.natural,
            "cutoff_mode": self.cutoff_mode,
        }
        if self.cutoff_mode == "smooth":
            out["r_on"] = self.r_on
        return out

    def pair_energy(self, r: torch.Tensor) -> torch.Tensor:
        phi = hermite_spline(r, self.r_min, self.spacing, self.values, self.knot_derivatives())
        return torch.where(r <= self.r_max, phi, torch.zeros_like(phi))

    def pair_derivative(self, r: torch.Tensor) -> torch.Tensor:
        """dφ/dr (eV/Å) at r (Å) from the table: the cubic's derivative on the knots' interval,
        u'_0 below r_min, 0 beyond r_max (the derivative of :meth:`pair_energy`)."""
        _, dphi = hermite_spline_and_derivative(
            r, self.r_min, self.spacing, self.values, self.knot_derivatives()
        )
        return torch.where(r <= self.r_max, dphi, torch.zeros_like(dphi))

    def pair_terms(self, r2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`PairPotential.pair_terms`; without a cutoff treatment (the DiffSim
        tables) φ and φ' in one pass over the table."""
        if self.cutoff_mode != "none":
            return super().pair_terms(r2)
        r = torch.sqrt(r2)
        phi, dphi = hermite_spline_and_derivative(
            r, self.r_min, self.spacing, self.values, self.knot_derivatives()
        )
        inside = (r <= self.r_max) & (r2 < self.cutoff**2)
        return torch.where(inside, phi, 0.0), torch.where(inside, -dphi / r, 0.0)

    def extra_repr(self) -> str:
        kind = "natural" if self.natural else "hermite"
        return (
            f"r_min={self.r_min}, r_max={self.r_max}, n_knots={self.n_knots}, {kind}, "
            f"{self._cutoff_repr()}"
        )


def tabulate(
    potential: PairPotential, r_min: float, n_knots: int, with_graph: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """φ (cutoff treatment included) and dφ/dr of a pair potential on a uniform grid.

    Args:
        potential: any pair potential.
        r_min: first knot, Å; the last is the potential's cutoff.
        n_knots: number of knots.
        with_graph: keep the graph to the potential's parameters (for pushing gradients of the
            table back into them).

    Returns:
        (values (K,), derivatives (K,)) in eV and eV/Å, in the potential's dtype.
    """
    dtype = potential.dtype
    grid = torch.linspace(r_min, potential.cutoff, n_knots, dtype=dtype, device=potential.device)
    with torch.enable_grad():
        r = grid.clone().requires_grad_(True)
        # just inside the cutoff at the last knot: the cut potential is 0 there, and its one-sided
        # derivative from below is the one the spline needs
        r_eval = torch.where(r >= potential.cutoff, r - 1e-12 * potential.cutoff, r)
        values = potential.cut_pair_energy(r_eval)
        (derivatives,) = torch.autograd.grad(values.sum(), r, create_graph=with_graph)
    if not with_graph:
        values, derivatives = values.detach(), derivatives.detach()
    return values, derivatives


def spline_from_potential(potential: PairPotential, r_min: float, n_knots: int) -> SplinePair:
    """A Hermite :class:`SplinePair` that tabulates ``potential`` (exact values and
    derivatives at the knots; error O(h⁴ φ'''') between them)."""
    values, derivatives = tabulate(potential, r_min, n_knots)
    return SplinePair(
        r_min,
        potential.cutoff,
        n_knots,
        values,
        derivatives,
        species=potential.species,
        dtype=potential.dtype,
    )
