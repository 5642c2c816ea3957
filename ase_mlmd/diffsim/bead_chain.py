"""A bead chain as an energy model: harmonic bonds, WCA excluded volume, optional learned control.

The model of the helix-folding control demo (:mod:`ase_mlmd.diffsim.control`), after Wang,
Axelrod & Gómez-Bombarelli, "Differentiable Molecular Simulations for Control and Learning"
(2020). :class:`BeadChain` is an ordinary :class:`~ase_mlmd.models.interface.EnergyModel`: it
runs in the batched engine and, through ``MLCalculator``, as an ASE calculator. Its terms:

* bonds: ½ k (r − r₀)² between consecutive beads;
* excluded volume: WCA, 4ε[(σ/r)¹² − (σ/r)⁶] + ε for r < 2^(1/6) σ, between beads that are not
  bonded (|i − j| ≥ 2), through the neighbor list;
* control: Σ_w MLP(f_w) over every window w of five consecutive beads. The features f_w are the
  six distances between non-bonded beads of the window (separations 2, 3 and 4) and the two
  triple products b₁·(b₂×b₃) of its consecutive bond vectors (the sign of a dihedral angle).
  Distances alone cannot tell a helix from its mirror image; the triple products are chiral,
  so the learned potential can pick the handedness. All features are smooth functions of the
  coordinates (no angle singularities when three beads are collinear, as in an extended
  chain) and invariant under translations and rotations.

The chain's bonds and windows are defined by atom order within each system (atoms i and i + 1
are bonded), so the model is, by design, not invariant under permutations of the atoms. Chains
have open boundaries: bonded and control terms use plain coordinate differences.

Also here: the helix and extended-chain structures of the demo (Å; reduced units σ = 1 Å).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from ase import Atoms

from ase_mlmd.batch import AtomsBatch
from ase_mlmd.models.interface import EnergyModel, scatter_sum

#: pairs of a five-bead window whose distances are control features (separations 2, 3, 4)
WINDOW_PAIRS = ((0, 2), (1, 3), (2, 4), (0, 3), (1, 4), (0, 4))
WINDOW = 5
N_FEATURES = len(WINDOW_PAIRS) + 2


# ---------------------------------------------------------------------------- structures
def helix_bond_length(radius: float, pitch: float, beads_per_turn: float) -> float:
    """Distance between consecutive beads of a helix, Å: sqrt((2R sin(π/n))² + (p/n)²)."""
    chord = 2.0 * radius * math.sin(math.pi / beads_per_turn)
    return math.hypot(chord, pitch / beads_per_turn)


def helix_positions(
    n_beads: int, radius: float, pitch: float, beads_per_turn: float = 3.6
) -> np.ndarray:
    """(n_beads, 3) beads on a right-handed helix along z, centred at the origin, Å.

    Bead i sits at (R cos iθ, R sin iθ, i p/n) with θ = 2π/n, n = ``beads_per_turn`` and p
    the pitch (rise per turn).
    """
    i = np.arange(n_beads, dtype=float)
    angle = 2.0 * np.pi * i / beads_per_turn
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle), pitch * i / beads_per_turn], 1)
    return x - x.mean(axis=0)


def extended_chain(
    n_beads: int, bond_length: float, bond_angle: float = 160.0, noise: float = 0.0, seed: int = 0
) -> np.ndarray:
    """(n_beads, 3) a planar zig-zag chain along x with the given bond angle (degrees), beads
    displaced by Gaussian noise of width ``noise`` (seeded), centred at the origin, Å."""
    half = math.radians(bond_angle) / 2.0
    i = np.arange(n_beads, dtype=float)
    x = np.stack(
        [i * bond_length * math.sin(half), (i % 2) * bond_length * math.cos(half), 0.0 * i], 1
    )
    x = x + np.random.default_rng(seed).normal(scale=noise, size=x.shape)
    return x - x.mean(axis=0)


def chain_atoms(positions: np.ndarray, symbol: str = "C") -> Atoms:
    """An open-boundary ASE ``Atoms`` of beads of mass 1 amu at ``positions`` (n, 3) Å."""
    atoms = Atoms(f"{symbol}{len(positions)}", positions=positions, pbc=False)
    atoms.set_masses(np.ones(len(atoms)))
    return atoms


# ---------------------------------------------------------------------------- the model
def _topology(system_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First beads of the bonds (M,) and of the five-bead windows (W,) of contiguous chains."""
    bonds = (system_idx[1:] == system_idx[:-1]).nonzero().reshape(-1)
    windows = (system_idx[WINDOW - 1 :] == system_idx[: 1 - WINDOW]).nonzero().reshape(-1)
    return bonds, windows


def window_features(windows: torch.Tensor) -> torch.Tensor:
    """(W, 8) control features of five-bead windows (W, 5, 3): six distances (Å) between beads
    two, three and four apart, then the triple products b₁·(b₂×b₃) of bonds 1-3 and 2-4 (Å³)."""
    first, second = zip(*WINDOW_PAIRS, strict=True)
    distances = torch.linalg.norm(windows[:, list(second)] - windows[:, list(first)], dim=-1)
    b = windows[:, 1:] - windows[:, :-1]
    triple = (b[:, :-2] * torch.linalg.cross(b[:, 1:-1], b[:, 2:], dim=-1)).sum(dim=-1)
    return torch.cat([distances, triple], dim=1)


class ControlNet(torch.nn.Module):
    """The control potential of one five-bead window: MLP(8 → hidden → hidden → 1), SiLU, eV.

    Args:
        hidden: hidden width.
        seed: seed of the weight initialization (PyTorch's default Linear init).
        zero_output: start with a zero last layer, i.e. no control (the default for training).
        dtype: parameter dtype.
    """

    def __init__(
        self,
        hidden: int = 32,
        seed: int = 0,
        zero_output: bool = True,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.mlp = torch.nn.Sequential(
                torch.nn.Linear(N_FEATURES, hidden),
                torch.nn.SiLU(),
                torch.nn.Linear(hidden, hidden),
                torch.nn.SiLU(),
                torch.nn.Linear(hidden, 1),
            ).to(dtype)
        if zero_output:
            torch.nn.init.zeros_(self.mlp[-1].weight)
            torch.nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(W,) energies, eV, of windows (W, 5, 3)."""
        return self.mlp(window_features(windows)).reshape(-1)


class BeadChain(EnergyModel):
    """Harmonic bonds + WCA excluded volume + an optional learned control potential.

    Every system of a batch is one chain; its atoms, in order, are the beads.

    Args:
        bond_k: spring constant k, eV/Å².
        bond_length: r₀, Å.
        wca_epsilon: ε of the WCA repulsion, eV.
        wca_sigma: σ of the WCA repulsion, Å; the cutoff is 2^(1/6) σ.
        control: the control network (``None``: the plain chain).
        dtype: floating dtype when there is no control network.
    """

    provides: tuple[str, ...] = ()

    def __init__(
        self,
        bond_k: float = 100.0,
        bond_length: float = 1.0,
        wca_epsilon: float = 1.0,
        wca_sigma: float = 1.0,
        control: ControlNet | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(cutoff=2.0 ** (1.0 / 6.0) * wca_sigma, species=None)
        self.bond_k = float(bond_k)
        self.bond_length = float(bond_length)
        self.wca_epsilon = float(wca_epsilon)
        self.wca_sigma = float(wca_sigma)
        self._dtype = dtype
        self.control = control

    def forward(self, batch: AtomsBatch) -> dict[str, torch.Tensor]:
        x = batch.positions
        n_systems = batch.n_systems
        bonds, windows = _topology(batch.system_idx)
        r = torch.linalg.norm(x[bonds + 1] - x[bonds], dim=1)
        bond_energy = 0.5 * self.bond_k * (r - self.bond_length) ** 2
        energy = scatter_sum(bond_energy, batch.system_idx[bonds], n_systems)

        i, j = batch.edge_index
        keep = (i - j).abs() >= 2  # not bonded (edges never join two systems)
        d = torch.linalg.norm(batch.edge_vectors()[keep], dim=1)
        s6 = (self.wca_sigma / d) ** 6
        wca = 4.0 * self.wca_epsilon * (s6 * s6 - s6) + self.wca_epsilon
        wca = torch.where(d < self.cutoff, wca, torch.zeros_like(wca))
        energy = energy + scatter_sum(0.5 * wca, batch.system_idx[i[keep]], n_systems)

        if self.control is not None and len(windows):
            index = windows[:, None] + torch.arange(WINDOW, device=x.device)
            control = self.control(x[index])
            energy = energy + scatter_sum(control, batch.system_idx[windows], n_systems)
        return {"energy": energy}

    def extra_repr(self) -> str:
        return (
            f"bond_k={self.bond_k}, bond_length={self.bond_length:.4f}, "
            f"wca_epsilon={self.wca_epsilon}, wca_sigma={self.wca_sigma}"
        )
