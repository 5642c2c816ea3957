"""Rotation-equivariant message passing on small dense point sets (one molecule per sample).

Each point carries invariant features ``s`` (B, n, F) and vector features ``v`` (B, n, 3, F).
A layer (PaiNN-like, Schütt et al. 2021, written here for dense all-pairs graphs) does:

- message: from every other point ``j`` within ``cutoff`` (or from every point of another set:
  atoms → beads), a filter of the distance
  ``W(rbf(d_ij)) · f_cut(d_ij)`` times ``φ(s_j)`` splits into ``a, b, c`` (B, n, n, F):
  ``Δs_i = Σ_j a_ij``, ``Δv_i = Σ_j b_ij v_j + c_ij û_ij`` (``û_ij`` the unit vector i → j);
- update: ``U v, V v`` (channel mixing, no bias), ``Δv = a_vv U v + U v × V v``,
  ``Δs = a_ss + a_sv ⟨U v, V v⟩`` with ``a_*`` from an MLP of ``[s, |V v|]``.

Vectors enter only linearly, scaled by invariants, or through cross products, so rotating
every input position rotates every output vector and leaves the invariants unchanged (the cross
product makes the layer rotation- but not reflection-equivariant, so chirality is visible).
Translations change nothing (only differences of positions enter). Lengths in Å.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    """A two-layer perceptron with SiLU."""
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_out))


class RadialBasis(nn.Module):
    """Sine radial basis ``sin(k π d / r_c) / d`` times a cosine cutoff: (…,) → (…, n_rbf)."""

    def __init__(self, n_rbf: int, cutoff: float) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.register_buffer("k", torch.arange(1, n_rbf + 1, dtype=torch.float32) * math.pi)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        x = (d / self.cutoff).unsqueeze(-1)
        envelope = 0.5 * (torch.cos(math.pi * x.clamp(max=1.0)) + 1.0) * (x < 1.0)
        return torch.sin(self.k * x) / (x + 1e-6) * envelope


class EquivariantLayer(nn.Module):
    """One message + update step over all ordered pairs (i ≠ j) of the points (see module)."""

    def __init__(self, n_features: int, n_rbf: int, cutoff: float) -> None:
        super().__init__()
        f = n_features
        self.rbf = RadialBasis(n_rbf, cutoff)
        self.filter = nn.Linear(n_rbf, 3 * f)
        self.phi = mlp(f, f, 3 * f)
        self.mix = nn.Linear(f, 2 * f, bias=False)
        self.update_mlp = mlp(2 * f, f, 3 * f)
        self.n_features = f

    def forward(
        self,
        s: torch.Tensor,
        v: torch.Tensor,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        senders: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """s (B, n, F), v (B, n, 3, F), x (B, n, 3) Å of the receiving points; ``senders``
        (s', v', x') of another point set (B, m, ...) whose messages they receive instead of
        each other's; ``mask`` (n, m) bool: pairs that talk (default: all, i ≠ j within one
        set). Returns the updated (s, v) of the receivers."""
        f = self.n_features
        s_in, v_in, x_in = (s, v, x) if senders is None else senders
        r = x_in.unsqueeze(1) - x.unsqueeze(2)  # r[b, i, j] = x'_j - x_i
        d = torch.sqrt((r * r).sum(-1) + 1e-12)
        if mask is None and senders is None:
            mask = ~torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
        u = r / d.unsqueeze(-1)
        w = self.filter(self.rbf(d))  # (B, n, m, 3F)
        if mask is not None:
            w = w * mask.unsqueeze(-1).to(s.dtype)
        a, b, c = (w * self.phi(s_in).unsqueeze(1)).split(f, dim=-1)
        s = s + a.sum(2)
        v = v + torch.einsum("bijf,bjxf->bixf", b, v_in) + torch.einsum("bijf,bijx->bixf", c, u)
        uv, vv = self.mix(v).split(f, dim=-1)
        norm = torch.sqrt((vv * vv).sum(-2) + 1e-8)
        a_vv, a_sv, a_ss = self.update_mlp(torch.cat([s, norm], dim=-1)).split(f, dim=-1)
        cross = torch.linalg.cross(uv, vv, dim=-2)
        v = v + a_vv.unsqueeze(-2) * uv + cross
        s = s + a_ss + a_sv * (uv * vv).sum(-2)
        return s, v


class EquivariantStack(nn.Module):
    """``n_layers`` :class:`EquivariantLayer` s with layer-normalised invariants in between."""

    def __init__(self, n_features: int, n_layers: int, n_rbf: int, cutoff: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EquivariantLayer(n_features, n_rbf, cutoff) for _ in range(n_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(n_features) for _ in range(n_layers))

    def forward(
        self, s: torch.Tensor, v: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for layer, norm in zip(self.layers, self.norms, strict=True):
            s, v = layer(norm(s), v, x, mask)
        return s, v


def gaussian_kl(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL(q ‖ p) of diagonal Gaussians, summed over the last axis (nats)::

    ½ Σ [log σ_p² − log σ_q² + (σ_q² + (μ_q − μ_p)²) / σ_p² − 1]
    """
    return 0.5 * (
        logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0
    ).sum(-1)
