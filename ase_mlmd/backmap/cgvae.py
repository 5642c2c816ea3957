"""CGVAE: a rotation-equivariant variational auto-encoder that restores all-atom coordinates
from CG coordinates (after Wang, Xu, Cai, Gómez-Bombarelli, ICML 2022; METRICS.md §4).

For one molecule with ``N`` atoms and a mapping of ``n`` beads (weights ``W``, atom → bead
``a(i)`` from :func:`~ase_mlmd.backmap.pairs.assignment_of`):

- encoder q(z | x, X): equivariant message passing (:mod:`ase_mlmd.backmap.cgvae_layers`):
  every bead gathers messages from every atom (atom → bead vectors, learned atom embeddings),
  then beads exchange messages; the invariant features of each bead give the mean and
  log-variance of its latent ``z_I`` (``latent`` numbers);
- prior p(z | X): the same kind of network over the beads alone;
- decoder: equivariant message passing over the beads, bead features seeded with ``z``; atom
  ``i`` gets the offset ``d_i = Σ_c k_ic V_{a(i)c}`` (``V`` the bead's vector channels,
  ``k_i`` invariant coefficients from the bead's features and a learned atom embedding), and
  ``x_i = X_{a(i)} + d_i − Σ_j W_{a(i)j} d_j``: re-centred per bead, so that ``W x = X``
  exactly (the CG input is reproduced whatever the network outputs);
- loss = MSE(x̂, x) (Å² per atom) + β KL(q ‖ p) (nats per bead) + γ MSE of bond lengths (Å²)
  + γ_angle MSE of 1–3 distances (Å², off by default)
  + δ steric penalty (Å², off by default: CGVAE's loss has none): for every pair of atoms more
  than 3 bonds apart, ``relu(f (r_vdW,i + r_vdW,j) − d)²`` summed over pairs and averaged over
  structures, with ``f = clash_factor`` (0.8: the clash rule of the metrics, METRICS §4), as
  the steric loss of later backmapping models (GenZProt). With ``sample_terms`` the bond, 1–3 and
  steric terms also judge one structure decoded from a draw of the prior p(z | X) per frame
  (what ``sample`` returns), not only the reconstruction.

Rotating the CG input rotates every sample (same seed); translating it translates them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms
from torch import nn

from ase_mlmd.backmap.base import aa_atoms, check_cg_frames, check_n_samples
from ase_mlmd.backmap.cgvae_layers import EquivariantLayer, EquivariantStack, gaussian_kl, mlp
from ase_mlmd.backmap.metrics import angle_triples, clash_pairs
from ase_mlmd.backmap.pairs import assignment_of
from ase_mlmd.cg.mapping import CGMapping
from ase_mlmd.errors import InvalidStructureError

__all__ = ["CGVAE", "CGVAEBackmapper", "CGVAEHyper"]


@dataclasses.dataclass(frozen=True)
class CGVAEHyper:
    """Architecture and loss settings.

    Attributes:
        features: invariant / vector channels per point.
        latent: latent numbers per bead.
        encoder_layers, prior_layers, decoder_layers: message-passing layers of each network.
        n_rbf: radial basis functions; cutoff: interaction cutoff, Å (all pairs inside it).
        beta: weight of the KL term; gamma: weight of the bond-length MSE.
        delta: weight of the steric penalty (0: none, CGVAE's loss); clash_factor: its onset
            as a fraction of the sum of van der Waals radii.
        gamma_angle: weight of the MSE of 1–3 distances (the two ends of every bond angle),
            Å² (0: none, CGVAE's loss); a collapsed angle makes a bond the graph lacks.
        sample_terms: apply the bond (γ), 1–3 (``gamma_angle``) and steric (δ) terms also
            to one structure decoded from a draw of the prior p(z | X), not only to the
            reconstruction (False: CGVAE's loss), so that what ``sample`` returns is trained
            on them too.
    """

    features: int = 32
    latent: int = 8
    encoder_layers: int = 2
    prior_layers: int = 2
    decoder_layers: int = 3
    n_rbf: int = 16
    cutoff: float = 12.0
    beta: float = 0.01
    gamma: float = 1.0
    delta: float = 0.0
    clash_factor: float = 0.8
    sample_terms: bool = False
    gamma_angle: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CGVAEHyper:
        """Settings from a dict; unknown keys raise ValueError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown CGVAE settings {unknown}; known: {sorted(known)}")
        hyper = cls(**data)
        for name in ("features", "latent", "n_rbf", "decoder_layers"):
            if int(getattr(hyper, name)) < 1:
                raise ValueError(f"CGVAE setting {name} must be ≥ 1, got {getattr(hyper, name)}")
        if hyper.cutoff <= 0 or min(hyper.beta, hyper.gamma, hyper.delta, hyper.gamma_angle) < 0:
            raise ValueError("CGVAE cutoff must be > 0 and beta, gamma, gamma_angle, delta ≥ 0")
        if not 0 < hyper.clash_factor <= 2:
            raise ValueError(f"CGVAE clash_factor must be in (0, 2], got {hyper.clash_factor}")
        return hyper


class CGVAE(nn.Module):
    """The network of one molecule and mapping (see the module docstring).

    Args:
        weights: (n, N) mapping weights; assignment: (N,) bead of each atom;
        bonds: (n_bonds, 2) atom pairs of the bond graph; hyper: :class:`CGVAEHyper`;
        numbers: (N,) atomic numbers (needed for the steric penalty, ``hyper.delta > 0``).
    """

    def __init__(
        self,
        weights: np.ndarray,
        assignment: np.ndarray,
        bonds: np.ndarray,
        hyper: CGVAEHyper | None = None,
        seed: int = 0,
        numbers: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        hyper = hyper or CGVAEHyper()
        self.hyper = hyper
        n_beads, n_atoms = np.shape(weights)
        self.n_beads, self.n_atoms = int(n_beads), int(n_atoms)
        torch.manual_seed(seed)
        f, z = hyper.features, hyper.latent
        self.register_buffer("weights", torch.as_tensor(np.asarray(weights), dtype=torch.float32))
        self.register_buffer(
            "assignment", torch.as_tensor(np.asarray(assignment), dtype=torch.long)
        )
        self.register_buffer("bonds", torch.as_tensor(np.reshape(bonds, (-1, 2)), dtype=torch.long))
        pairs, limits = steric_pairs(self.n_atoms, bonds, numbers, hyper)
        self.register_buffer("steric_pairs", pairs, persistent=False)  # not in the weights
        self.register_buffer("steric_limits", limits, persistent=False)
        ends = angle_triples(bonds)[:, [0, 2]] if hyper.gamma_angle > 0 else np.zeros((0, 2))
        self.register_buffer(
            "angle_ends", torch.as_tensor(ends, dtype=torch.long), persistent=False
        )
        self.atom_embedding = nn.Embedding(n_atoms, f)
        self.encoder_beads = nn.Embedding(n_beads, f)
        self.prior_beads = nn.Embedding(n_beads, f)
        self.decoder_beads = nn.Embedding(n_beads, f)
        self.decoder_atoms = nn.Embedding(n_atoms, f)
        stack = {"n_rbf": hyper.n_rbf, "cutoff": hyper.cutoff}
        self.gather = EquivariantLayer(f, **stack)
        self.encoder = EquivariantStack(f, hyper.encoder_layers, **stack)
        self.prior = EquivariantStack(f, hyper.prior_layers, **stack)
        self.decoder = EquivariantStack(f, hyper.decoder_layers, **stack)
        self.encoder_head = mlp(f, f, 2 * z)
        self.prior_head = mlp(f, f, 2 * z)
        self.latent_in = nn.Linear(z, f)
        self.coefficients = mlp(f, f, f)

    # -- the three networks ---------------------------------------------------------------
    def _zeros(self, cg: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.hyper.features
        return cg.new_zeros(cg.shape[0], n, f), cg.new_zeros(cg.shape[0], n, 3, f)

    def encode(self, cg: torch.Tensor, aa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x, X): mean and log-variance (B, n, latent) from cg (B, n, 3), aa (B, N, 3):
        every bead receives messages from every atom (atom embeddings, atom → bead vectors),
        then the beads pass messages among themselves (``encoder_layers``)."""
        s, v = self._zeros(cg, self.n_beads)
        atoms_s, atoms_v = self._zeros(cg, self.n_atoms)
        senders = (atoms_s + self.atom_embedding.weight, atoms_v, aa)
        s, v = self.gather(s + self.encoder_beads.weight, v, cg, senders=senders)
        s, v = self.encoder(s, v, cg)
        mu, logvar = self.encoder_head(s).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 6.0)

    def prior_of(self, cg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z | X): mean and log-variance (B, n, latent) from cg (B, n, 3)."""
        s, v = self._zeros(cg, self.n_beads)
        s, v = self.prior(s + self.prior_beads.weight, v, cg)
        mu, logvar = self.prior_head(s).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 6.0)

    def decode(self, cg: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """All-atom positions (B, N, 3) Å from cg (B, n, 3) and latents z (B, n, latent);
        ``W x = cg`` holds exactly (re-centring, module docstring)."""
        return cg[:, self.assignment] + self.decode_offsets(cg, z)

    def decode_offsets(self, cg: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Re-centred atom offsets ``x_i − X_a(i)`` (B, N, 3) Å: for every bead
        ``Σ_i W_Ii (x_i − X_a(i)) = 0`` (up to rounding of the offsets alone)."""
        s, v = self._zeros(cg, self.n_beads)
        s, v = self.decoder(s + self.decoder_beads.weight + self.latent_in(z), v, cg)
        owner = self.assignment
        coefficients = self.coefficients(s[:, owner] * self.decoder_atoms.weight)  # (B, N, F)
        offsets = torch.einsum("bif,bixf->bix", coefficients, v[:, owner])
        bead_shift = torch.einsum("ni,bix->bnx", self.weights.to(cg.dtype), offsets)
        return offsets - bead_shift[:, owner]

    # -- training -------------------------------------------------------------------------
    def loss(
        self,
        cg: torch.Tensor,
        aa: torch.Tensor,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of a batch cg (B, n, 3), aa (B, N, 3): MSE + β KL + γ bond MSE (+ δ steric
        penalty), and its parts (``mse`` Å² per atom, ``kl`` nats per bead, ``bond`` Å², and
        ``clash`` Å² per structure when δ > 0). The latent is drawn from
        q(z | x, X) (and, with ``sample_terms``, from p(z | X)) with ``generator``, or is the
        mean when ``deterministic``."""
        mu_q, logvar_q = self.encode(cg, aa)
        mu_p, logvar_p = self.prior_of(cg)
        x = self.decode(cg, draw(mu_q, logvar_q, generator, deterministic))
        mse = ((x - aa) ** 2).sum(-1).mean()
        kl = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p).mean()
        decoded = [x]
        if self.hyper.sample_terms:  # also a structure decoded from a draw of the prior
            decoded.append(self.decode(cg, draw(mu_p, logvar_p, generator, deterministic)))
        bond = distance_mse(decoded, aa, self.bonds)
        total = mse + self.hyper.beta * kl + self.hyper.gamma * bond
        parts = {"mse": mse.detach(), "kl": kl.detach(), "bond": bond.detach()}
        if self.hyper.gamma_angle > 0:
            angle = distance_mse(decoded, aa, self.angle_ends)
            total = total + self.hyper.gamma_angle * angle
            parts["angle"] = angle.detach()
        if self.hyper.delta > 0:
            both = torch.cat(decoded)
            clash = steric_penalty(both, self.steric_pairs, self.steric_limits).mean()
            total = total + self.hyper.delta * clash
            parts["clash"] = clash.detach()
        return total, {k: float(v) for k, v in parts.items()}


def bond_lengths(x: torch.Tensor, bonds: torch.Tensor) -> torch.Tensor:
    """(B, n_bonds) lengths, Å, of ``bonds`` in positions x (B, N, 3)."""
    if len(bonds) == 0:
        return x.new_zeros(x.shape[0], 0)
    delta = x[:, bonds[:, 0]] - x[:, bonds[:, 1]]
    return torch.sqrt((delta * delta).sum(-1) + 1e-12)


def draw(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    generator: torch.Generator | None = None,
    deterministic: bool = False,
) -> torch.Tensor:
    """A latent ``mu + exp(logvar / 2) ε`` with ε ~ N(0, 1) from ``generator`` (the global RNG
    when None), or ``mu`` when ``deterministic``."""
    if deterministic:
        return mu
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def distance_mse(
    decoded: list[torch.Tensor], aa: torch.Tensor, pairs: torch.Tensor
) -> torch.Tensor:
    """MSE (Å²) of the ``pairs`` distances of each structure batch in ``decoded`` (B, N, 3)
    against those of ``aa``, averaged over the batches."""
    ref = bond_lengths(aa, pairs)
    return torch.stack([((bond_lengths(y, pairs) - ref) ** 2).mean() for y in decoded]).mean()


def steric_pairs(
    n_atoms: int, bonds: np.ndarray, numbers: np.ndarray | None, hyper: CGVAEHyper
) -> tuple[torch.Tensor, torch.Tensor]:
    """The atom pairs (P, 2) more than 3 bonds apart and their onsets (P,) Å,
    ``clash_factor`` × (r_vdW,i + r_vdW,j) (``ase.data.vdw_radii``, as the clash metric);
    empty when ``hyper.delta`` is 0.

    Raises:
        ValueError: ``delta > 0`` without atomic numbers, or an element without a vdW radius.
    """
    if hyper.delta == 0:
        return torch.zeros((0, 2), dtype=torch.long), torch.zeros(0)
    if numbers is None:
        raise ValueError("the CGVAE steric penalty (delta > 0) needs the atomic numbers")
    try:
        i, j, limits = clash_pairs(numbers, bonds, hyper.clash_factor)
    except InvalidStructureError as err:
        raise ValueError(
            f"the CGVAE steric penalty: {err}; set delta to 0 for this molecule"
        ) from None
    return (torch.as_tensor(np.stack([i, j], 1), dtype=torch.long),
            torch.as_tensor(limits, dtype=torch.float32))  # fmt: skip


def steric_penalty(x: torch.Tensor, pairs: torch.Tensor, limits: torch.Tensor) -> torch.Tensor:
    """(B,) ``Σ_pairs relu(limit − d)²`` (Å²) of positions x (B, N, 3) Å."""
    if len(pairs) == 0:
        return x.new_zeros(x.shape[0])
    return torch.relu(limits.to(x.dtype) - bond_lengths(x, pairs)).square().sum(-1)


class CGVAEBackmapper:
    """A trained :class:`CGVAE` with its mapping, as a :class:`~ase_mlmd.backmap.base.Backmapper`.

    Args:
        model: the network (evaluated in float32 on the CPU).
        mapping: the mapping it was trained with (bead positions are ``W r`` of its weights).
    """

    def __init__(self, model: CGVAE, mapping: CGMapping, batch_size: int = 256) -> None:
        self.model = model.eval()
        self.mapping = mapping
        self.batch_size = int(batch_size)

    @classmethod
    def new(
        cls, mapping: CGMapping, hyper: CGVAEHyper | None = None, seed: int = 0
    ) -> CGVAEBackmapper:
        """An untrained backmapper for ``mapping``."""
        weights = mapping.weights
        weights = np.asarray(weights.todense()) if hasattr(weights, "todense") else weights
        model = CGVAE(weights, assignment_of(mapping), mapping.bonds, hyper, seed=seed,
                      numbers=mapping.numbers)  # fmt: skip
        return cls(model, mapping)

    @property
    def topology(self) -> CGMapping:
        return self.mapping

    @property
    def dtype(self) -> torch.dtype:
        """The model's precision (float32 as trained; ``model.double()`` for float64)."""
        return next(self.model.parameters()).dtype

    def _chunks(self, cg: np.ndarray):
        for start in range(0, len(cg), self.batch_size):
            beads = np.asarray(cg[start : start + self.batch_size], dtype=float)
            yield start, beads, torch.as_tensor(beads, dtype=self.dtype)

    def _decode(self, beads: np.ndarray, chunk: torch.Tensor, z: torch.Tensor) -> np.ndarray:
        """Positions (B, N, 3) Å, float64: the bead positions as given (float64) plus the
        re-centred offsets, so that ``W x`` reproduces the CG input to float64 rounding."""
        offsets = self.model.decode_offsets(chunk, z).double().numpy()
        return beads[:, self.model.assignment.numpy()] + offsets

    @torch.no_grad()
    def sample(
        self, cg: Atoms | Sequence[Atoms], n_samples: int, seed: int = 0
    ) -> list[list[Atoms]]:
        """Per CG frame, ``n_samples`` structures decoded from z ~ p(z | X) (Å)."""
        n_samples = check_n_samples(n_samples)
        positions = check_cg_frames(cg, self.mapping)
        generator = torch.Generator().manual_seed(int(seed))
        out: list[list[Atoms]] = [[] for _ in range(len(positions))]
        for start, beads, chunk in self._chunks(positions):
            mu, logvar = self.model.prior_of(chunk)
            for k in range(n_samples):
                x = self._decode(beads, chunk, draw(mu, logvar, generator))
                for j, frame in enumerate(x):
                    out[start + j].append(
                        aa_atoms(frame, self.mapping, cg_frame=start + j, sample=k)
                    )
        return out

    @torch.no_grad()
    def reconstruct(self, cg: Atoms | Sequence[Atoms]) -> list[Atoms]:
        """Per CG frame, the structure decoded from the prior mean (deterministic)."""
        positions = check_cg_frames(cg, self.mapping)
        out = []
        for start, beads, chunk in self._chunks(positions):
            x = self._decode(beads, chunk, self.model.prior_of(chunk)[0])
            out += [aa_atoms(f, self.mapping, cg_frame=start + j) for j, f in enumerate(x)]
        return out

    @torch.no_grad()
    def autoencode(self, cg: np.ndarray, aa: np.ndarray) -> np.ndarray:
        """(F, N, 3) Å decoded from the posterior mean of q(z | x, X): the VAE reconstruction
        that CGVAE's RMSD_recon measures. cg (F, n, 3), aa (F, N, 3) Å."""
        out = []
        for start, beads, chunk in self._chunks(np.asarray(cg)):
            ref = torch.as_tensor(aa[start : start + len(chunk)], dtype=self.dtype)
            out.append(self._decode(beads, chunk, self.model.encode(chunk, ref)[0]))
        return np.concatenate(out)
