"""ConfVAE: conformer generation by a conditional VAE over distances + differentiable DG.

After Xu et al., "An End-to-End Framework for Molecular Conformation Generation via Bilevel
Programming" (ICML 2021). The model, for a molecule graph G (RDKit features on the extended
1…k-hop graph, :mod:`.confvae_features`) and a conformer R (N, 3) Å:

* graph encoder: message passing over G (edge-conditioned MLP messages, residual updates,
  layer norm) → atom embeddings h (N, H);
* conformation encoder: the same kind of network whose edge inputs also carry the conformer's
  distances on the extended edges (Gaussian radial basis) — distances only, so it is invariant
  to rotations, translations and reflections of R — giving per atom the mean and
  log-variance of a Gaussian posterior q(z_i | R, G), z_i in R^L (one latent vector per atom,
  as in CVGAE-style models: a single vector per molecule was measured to collapse, the decoder
  could not tie its entries to particular torsions), sampled by reparameterisation; the prior
  is N(0, I) for every atom;
* decoder (distances on the extended graph, up to ``max_hops`` bonds apart; 6 by default):
  message passing over G on (h_i, z_i) (``latent_layers`` layers), then an MLP per
  extended edge (i, j) of (g_i + g_j, g_i * g_j, edge features, z_i + z_j, z_i * z_j) → distance
  d_ij = 0.5 Å + softplus(·);
* coordinates by distance geometry (:func:`.distance_geometry.embed`): the inner problem, a
  weighted stress min_X sum_e w_e (|x_i − x_j| − d_e)² with w_e by the pair's bond count
  (``dg_weights``: bonds 100, 1-3 pairs 30, longer pairs 1 by default, so that predicted
  long-range distances that do not fit together bend torsions, not bonds), solved by
  preconditioned descent (MDS start + seeded noise, 4D then 3D; the weights act in the second
  half of the 3D steps); the outer loss is differentiated through the last ``unrolled`` inner
  steps (truncated back-propagation, the bilevel approximation used here), in training and in
  sampling alike.

Loss per molecule (Å², summed over the batch mean)::

    MSD_aligned(X_DG, R) + distance_weight * mean_e (d_e − |r_i − r_j|)² + beta * KL(q || p)

where MSD_aligned is over all atoms (hydrogens included; they are placed by the same DG) after
the optimal superposition *with reflection allowed* (distances cannot encode chirality; at
sampling time the chirality of specified stereocentres is restored by mirroring, see
:func:`sample_conformers`).

Bonds and 1-3 pairs enter the DG *inside the loss* as constants (gradient-free): they are
learned from the distance term alone, and the bilevel MSD term shapes the longer-range
distances. Without this the decoded distances came out *shorter* than the reference (bonds
−0.16 Å, 1-3 pairs −0.22 Å on average for the first FreeSolv card; bonds −0.26 Å after 6
epochs of a run with the weighted DG): the aligned MSD rewards a shrunken average structure when the
torsions are uncertain, its gradient reached the bonds through the DG, and a weighted DG then
reproduces the wrong bonds faithfully (BENCHMARKS.md, issue 15). The distance mean is plain by
default (``weighted_distances=True``: weighted by ``dg_weights`` as the stress is; measured
worse: the longer-range pairs then get almost no direct signal and came out 0.6 Å short).

Cards: ``card.toml`` (backend ``confvae``, not an energy calculator) + safetensors weights with
their sha256; :func:`load_confvae` needs no trust. :func:`sample_conformers` is the public entry.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ase_mlmd.conformers.confvae_features import (
    GraphBatch,
    atom_feature_size,
    collate,
    edge_feature_size,
    mol_graph,
)
from ase_mlmd.conformers.distance_geometry import aligned_msd, edge_lengths, embed, hop_weights
from ase_mlmd.errors import CardError

CONFVAE_BACKEND = "confvae"
#: default DG stress weights by bond count: bonds, 1-3 pairs, all longer pairs
DG_WEIGHTS = (100.0, 30.0, 1.0)
CITATION = (
    "M. Xu, W. Wang, S. Luo, C. Shi, Y. Bengio, R. Gomez-Bombarelli, J. Tang, An End-to-End "
    "Framework for Molecular Conformation Generation via Bilevel Programming, ICML 2021"
)


@dataclasses.dataclass
class ConfVAESettings:
    """Architecture and inner-solver settings (stored in the card).

    Attributes:
        vocabulary: element symbols the model knows (sorted).
        hidden: width of the embeddings; layers: message-passing layers per encoder.
        latent: size of each atom's z; latent_layers: decoder message-passing layers over
            (h, z); max_hops: extended-graph hops (3: bonds, angles, torsions up to their
            sign; the default 6 also fixes the signs and most of the shape of FreeSolv-sized
            molecules: DG from exact distances of the reference conformers of 31 FreeSolv
            molecules came within 0.01 Å all-atom RMSD with 6 hops, 0.5-0.7 Å with 3).
        n_rbf: radial basis functions of the conformation encoder (0–8 Å).
        steps_4d, steps, unrolled: inner DG steps in 4D, in 3D, and the unrolled last 3D steps.
        noise: Å, standard deviation of the DG start noise.
        dg_weights: stress weight of a pair by its bond count (bonds, 1-3 pairs, ...; the last
            entry for all longer pairs); ``[1.0]`` weighs every pair alike (cards written
            before the weights existed load with this).
    """

    vocabulary: list[str]
    hidden: int = 64
    layers: int = 3
    latent: int = 4
    latent_layers: int = 2
    max_hops: int = 6
    n_rbf: int = 16
    steps_4d: int = 150
    steps: int = 150
    unrolled: int = 10
    noise: float = 0.3
    dg_weights: list[float] = dataclasses.field(default_factory=lambda: list(DG_WEIGHTS))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_out))


class MessagePassing(nn.Module):
    """One edge-conditioned message-passing layer with a residual update and layer norm."""

    def __init__(self, hidden: int, edge_dim: int) -> None:
        super().__init__()
        self.message = _mlp(2 * hidden + edge_dim, hidden, hidden)
        self.update = _mlp(2 * hidden, hidden, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h: torch.Tensor, edges: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        i, j = edges
        to_i = self.message(torch.cat([h[i], h[j], e], -1))
        to_j = self.message(torch.cat([h[j], h[i], e], -1))
        agg = torch.zeros_like(h).index_add(0, i, to_i).index_add(0, j, to_j)
        return self.norm(h + self.update(torch.cat([h, agg], -1)))


class GraphNetwork(nn.Module):
    """Atom embedding + ``layers`` message-passing layers → (N, hidden).

    ``edge_input=True`` adds to each atom's initial embedding the mean over its edges of an
    embedding of the edge inputs, so that edge information (the conformer's distances in the
    conformation encoder) enters every atom at full strength before any message passing (fed
    only through the messages it was attenuated ~100x by three residual + layer-norm layers at
    initialisation, and the posterior collapsed).
    """

    def __init__(
        self, n_atom: int, n_edge: int, hidden: int, layers: int, edge_input: bool = False
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(n_atom, hidden)
        self.edge_input = _mlp(n_edge, hidden, hidden) if edge_input else None
        self.layers = nn.ModuleList(MessagePassing(hidden, n_edge) for _ in range(layers))

    def forward(self, x: torch.Tensor, edges: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        if self.edge_input is not None:
            i, j = edges
            m = self.edge_input(e)
            total = torch.zeros_like(h).index_add(0, i, m).index_add(0, j, m)
            count = torch.zeros(h.shape[0], dtype=h.dtype).index_add(0, i, torch.ones_like(m[:, 0]))
            count = count.index_add(0, j, torch.ones_like(m[:, 0])).clamp(min=1.0)
            h = h + total / count[:, None]
        for layer in self.layers:
            h = layer(h, edges, e)
        return h


class ConfVAE(nn.Module):
    """The ConfVAE network (see the module docstring); float32, CPU."""

    def __init__(self, settings: ConfVAESettings) -> None:
        super().__init__()
        self.settings = settings
        s = settings
        n_atom, n_edge = atom_feature_size(s.vocabulary), edge_feature_size(s.max_hops)
        self.graph_encoder = GraphNetwork(n_atom, n_edge, s.hidden, s.layers)
        self.conf_encoder = GraphNetwork(n_atom, n_edge + s.n_rbf, s.hidden, s.layers, True)
        self.posterior = _mlp(s.hidden, s.hidden, 2 * s.latent)
        with torch.no_grad():  # start with a narrow posterior (std e^-2): a posterior that
            # starts at std 1 drowns the encoder's small initial signal in noise and the decoder
            # learns to ignore z before the encoder learns to fill it (posterior collapse)
            self.posterior[-1].bias[s.latent :] = -4.0
        self.latent_network = GraphNetwork(s.hidden + s.latent, n_edge, s.hidden, s.latent_layers)
        self.edge_embed = nn.Linear(n_edge, s.hidden)
        self.decoder = nn.Sequential(
            nn.Linear(3 * s.hidden + 2 * s.latent, s.hidden),
            nn.SiLU(),
            nn.Linear(s.hidden, s.hidden),
            nn.SiLU(),
            nn.Linear(s.hidden, 1),
        )
        self.register_buffer("rbf_centres", torch.linspace(0.0, 8.0, s.n_rbf))

    def rbf(self, distances: torch.Tensor) -> torch.Tensor:
        """Gaussian radial basis (E, n_rbf) of distances (E,) in Å."""
        width = (
            float(self.rbf_centres[1] - self.rbf_centres[0]) if len(self.rbf_centres) > 1 else 1.0
        )
        return torch.exp(-(((distances[:, None] - self.rbf_centres) / width) ** 2))

    def encode(
        self, batch: GraphBatch, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance per atom (N_tot, L) from conformers ``positions``
        (N_tot, 3) Å."""
        d = edge_lengths(positions, batch.edges)
        e = torch.cat([batch.edge_features, self.rbf(d)], -1)
        h = self.conf_encoder(batch.atom_features, batch.edges, e)
        mean, log_var = self.posterior(h).chunk(2, -1)
        return mean, log_var.clamp(-10.0, 10.0)

    def decode(self, batch: GraphBatch, z: torch.Tensor) -> torch.Tensor:
        """Predicted distances (E_tot,) Å on the extended edges for per-atom latents ``z``
        (N_tot, L)."""
        h = self.graph_encoder(batch.atom_features, batch.edges, batch.edge_features)
        h = self.latent_network(torch.cat([h, z], -1), batch.edges, batch.edge_features)
        i, j = batch.edges
        inputs = [h[i] + h[j], h[i] * h[j], self.edge_embed(batch.edge_features)]
        inputs += [z[i] + z[j], z[i] * z[j]]  # a direct path from the latents to each distance
        return 0.5 + nn.functional.softplus(self.decoder(torch.cat(inputs, -1))[:, 0])

    def pair_weights(self, batch: GraphBatch, dtype: torch.dtype) -> torch.Tensor | None:
        """Per-edge weights (E_tot,) of the DG stress and of the distance loss from
        ``dg_weights``; None when all pairs weigh alike."""
        table = self.settings.dg_weights
        return None if len(set(table)) == 1 else hop_weights(batch.hops, table, dtype)

    def coordinates(
        self, batch: GraphBatch, distances: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Distance geometry (N_tot, 3) Å from predicted ``distances`` (gradient: last steps)."""
        s, weights = self.settings, self.pair_weights(batch, distances.dtype)
        return embed(distances, batch.edges, batch.counts, generator, s.steps_4d, s.steps,
                     s.unrolled, s.noise, weights=weights)  # fmt: skip

    def loss(
        self,
        batch: GraphBatch,
        positions: torch.Tensor,
        beta: float,
        distance_weight: float,
        generator: torch.Generator | None = None,
        sample: bool = True,
        weighted_distances: bool = False,
    ) -> dict[str, torch.Tensor]:
        """The training objective and its terms for reference conformers ``positions``.

        Args:
            batch: B molecule graphs; positions: (N_tot, 3) reference coordinates, Å.
            beta: KL weight; distance_weight: weight of the direct distance term.
            generator: seeds z noise and the DG start (None: torch's global RNG).
            sample: draw z from the posterior (False: its mean, for validation).
            weighted_distances: weigh the distance term by the DG pair weights (False: plain
                mean over the pairs).

        Returns:
            ``loss`` (scalar), ``msd`` (aligned MSD, Å², batch mean), ``distance`` (Å²),
            ``kl`` (nats per molecule, summed over its atoms).
        """
        mean, log_var = self.encode(batch, positions)
        z = mean
        if sample:
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * log_var) * eps
        distances = self.decode(batch, z)
        reference = edge_lengths(positions, batch.edges)
        # bonds and 1-3 pairs enter the DG as constants here: they are taught by the distance
        # term only (the MSD gradient through them shrank every decoded bond, see above)
        local = batch.hops <= 2
        x = self.coordinates(batch, torch.where(local, distances.detach(), distances), generator)
        xp, mask = batch.pad(x)
        rp, _ = batch.pad(positions)
        msd = aligned_msd(xp, rp, mask, reflection=True).mean()
        weights = self.pair_weights(batch, distances.dtype) if weighted_distances else None
        error = (distances - reference) ** 2
        dist = error.mean() if weights is None else (weights * error).sum() / weights.sum()
        kl_atom = 0.5 * (mean**2 + log_var.exp() - 1.0 - log_var).sum(-1)
        kl = kl_atom.sum() / batch.n_molecules
        total = msd + distance_weight * dist + beta * kl
        return {"loss": total, "msd": msd, "distance": dist, "kl": kl}

    @torch.no_grad()
    def sample(self, batch: GraphBatch, generator: torch.Generator) -> torch.Tensor:
        """Conformers (N_tot, 3) Å with every atom's z from the prior N(0, I)."""
        z = torch.randn(batch.atom_features.shape[0], self.settings.latent, generator=generator)
        return self.coordinates(batch, self.decode(batch, z), generator)


def export_confvae_card(
    model: ConfVAE,
    directory: str | os.PathLike,
    name: str,
    *,
    provenance: dict[str, Any] | None = None,
    card_file: str = "card.toml",
) -> Path:
    """Write ``NAME.safetensors`` then the card (both atomically); return the card's path."""
    from safetensors.torch import save_file

    from ase_mlmd.calculators.cards import sha256_of, write_card

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    weights = directory / f"{name}.safetensors"
    tmp = weights.with_name(f".{weights.name}.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, weights)
    table = {
        "name": name,
        "description": "ConfVAE conformer generator (not an energy calculator; cutoff unused): "
        "SMILES/Mol -> conformers via ase_mlmd.conformers.confvae.sample_conformers",
        "backend": CONFVAE_BACKEND,
        "species": sorted(model.settings.vocabulary),
        "cutoff": 0.0,
        "dtype": "float32",
        "citation": CITATION,
        "units": {"energy": "eV", "length": "Å"},
        "parameters": model.settings.as_dict(),
        "weights": {"file": weights.name, "sha256": sha256_of(weights), "format": "safetensors"},
        "provenance": dict(provenance or {}),
    }
    return write_card(table, directory / card_file)


def load_confvae(card_path: str | os.PathLike) -> ConfVAE:
    """The model of a ConfVAE card (safetensors weights, sha256 checked; no trust needed).

    Raises:
        ModelFileError, ChecksumMismatchError: missing, corrupt or altered weights.
        CardError: not a ConfVAE card, or weights that do not fit its parameters.
    """
    from ase_mlmd.calculators.cards import load_state_dict, read_card

    card = read_card(card_path)
    if card.backend != CONFVAE_BACKEND:
        raise CardError(
            f"{card.path} is a {card.backend!r} card, not a ConfVAE card (backend "
            f"{CONFVAE_BACKEND!r}); train one with ase-mlmd conformers train"
        )
    if card.weights is None or card.weights.format != "safetensors":
        raise CardError(f"{card.path}: a ConfVAE card needs [weights] in safetensors format")
    parameters = {"dg_weights": [1.0], **card.parameters}  # older cards: unweighted DG
    try:
        settings = ConfVAESettings(**parameters)
        model = ConfVAE(settings)
        model.load_state_dict(load_state_dict(card))
    except (TypeError, RuntimeError) as err:
        raise CardError(f"{card.path}: parameters and weights do not fit ({err})") from None
    return model.eval()


@functools.lru_cache(maxsize=4)
def _cached_model(path: str, mtime_ns: int) -> ConfVAE:
    return load_confvae(path)


def _mirror_for_stereo(mol: Any, positions: np.ndarray) -> np.ndarray:
    """``positions`` reflected (x → −x) when that matches more of the molecule's specified
    tetrahedral centres (CIP labels recomputed from 3D) than it breaks; else unchanged."""
    from rdkit import Chem

    wanted = dict(
        Chem.FindMolChiralCenters(mol, includeUnassigned=False, useLegacyImplementation=False)
    )
    if not wanted:
        return positions

    def matches(coords: np.ndarray) -> int:
        copy = Chem.Mol(mol)
        copy.RemoveAllConformers()
        conf = Chem.Conformer(copy.GetNumAtoms())
        for k, xyz in enumerate(coords):
            conf.SetAtomPosition(k, xyz.tolist())
        copy.AddConformer(conf, assignId=True)
        Chem.AssignStereochemistryFrom3D(copy)
        found = dict(
            Chem.FindMolChiralCenters(copy, includeUnassigned=False, useLegacyImplementation=False)
        )
        return sum(found.get(k) == label for k, label in wanted.items())

    mirrored = positions * np.array([-1.0, 1.0, 1.0])
    return mirrored if matches(mirrored) > matches(positions) else positions


def sample_conformers(card_path: str | os.PathLike, mol: Any, n: int, seed: int = 0) -> list:
    """``n`` conformers of ``mol`` from a ConfVAE card, as ASE ``Atoms`` in the Mol's atom order.

    The conformers are as distance geometry leaves them, not relaxed. With the weighted DG
    (``dg_weights``) of cards trained since issue 15 few samples have a bond more than 0.2 Å
    off; the first FreeSolv card (plain stress) had one in 96 % of them (BENCHMARKS.md). For
    minima, relax them: ``generate_conformers(..., method="confvae", relax=True)``.

    Args:
        card_path: a ConfVAE card (``ase-mlmd conformers train`` writes ``OUTPUT/card.toml``).
        mol: RDKit ``Mol`` with explicit hydrogens (every atom is generated, hydrogens by the
            same distance geometry as heavy atoms).
        n: number of conformers (>= 1).
        seed: seeds z and the DG starts; the same card, molecule, n and seed give the same
            coordinates.

    Returns:
        ``n`` Atoms (positions in Å, centred) with ``info`` smiles, mapped_smiles (bonds, see
        :mod:`.molecules`), ``method = "confvae"`` and ``seed``.

    Raises:
        ValueError: n < 1 (names the value).
        UnsupportedSpeciesError: an element the card's vocabulary does not have.
        ModelFileError, ChecksumMismatchError, CardError: an unusable card.
    """
    from ase import Atoms
    from rdkit import Chem

    from ase_mlmd.conformers.molecules import mapped_smiles

    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"the number of conformers must be an integer >= 1 (-n), got {n!r}")
    if sum(atom.GetTotalNumHs() for atom in mol.GetAtoms()) > 0:
        mol = Chem.AddHs(mol)  # implicit hydrogens: ConfVAE generates every atom
    path = Path(card_path)
    stat = path.stat() if path.is_file() else None
    model = _cached_model(str(path.resolve()), stat.st_mtime_ns) if stat else load_confvae(path)
    graph = mol_graph(mol, model.settings.vocabulary, model.settings.max_hops)
    batch = collate([graph] * int(n))
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        coords = model.sample(batch, generator).double().numpy().reshape(int(n), -1, 3)
    numbers = [atom.GetAtomicNum() for atom in mol.GetAtoms()]
    smiles, mapped = Chem.MolToSmiles(Chem.RemoveHs(mol)), mapped_smiles(mol)
    out = []
    for xyz in coords:
        xyz = _mirror_for_stereo(mol, xyz - xyz.mean(0))
        atoms = Atoms(numbers=numbers, positions=xyz)
        atoms.info.update(smiles=smiles, mapped_smiles=mapped, method="confvae", seed=int(seed))
        out.append(atoms)
    return out
