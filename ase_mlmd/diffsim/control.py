"""Control by differentiable simulation: a bead chain learns a potential that folds it into a helix.

After Wang, Axelrod & Gómez-Bombarelli, "Differentiable Molecular Simulations for Control and
Learning" (2020): a chain of 22 beads with harmonic bonds and excluded volume gets an extra,
learned *control potential* (:class:`~ase_mlmd.diffsim.bead_chain.BeadChain`, where the model
and its features are described); Langevin dynamics from an extended chain is differentiated
with respect to the control network's parameters so that the chain ends up in a target helix.
The loss compares bond lengths, bond angles, dihedral angles and all pair distances with the
helix.

Units are reduced Lennard-Jones units, which are ASE units with σ = 1 Å, ε = 1 eV, m = 1 amu
(time τ = 1 ASE time unit ≈ 10.18 fs, temperature T* = k_B T / ε).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from ase import units

from ase_mlmd.diffsim.bead_chain import (
    WINDOW,
    BeadChain,
    ControlNet,
    chain_atoms,
    extended_chain,
    helix_bond_length,
    helix_positions,
)
from ase_mlmd.diffsim.geometry import (
    bond_angles,
    bond_lengths,
    dihedral_angles,
    kabsch_rmsd,
    pair_distances,
)
from ase_mlmd.diffsim.recovery import ParameterGuard
from ase_mlmd.diffsim.systems import temperature_kelvin, timestep_fs
from ase_mlmd.errors import SimulationUnstableError
from ase_mlmd.md.differentiable import rollout, truncated_bptt
from ase_mlmd.md.forcefield import ForceField
from ase_mlmd.md.integrators import make_integrator
from ase_mlmd.md.state import MDState

__all__ = [
    "LOSS_TERMS",
    "BeadChain",
    "ControlConfig",
    "ControlNet",
    "ControlResult",
    "Episode",
    "build_chain_model",
    "chain_atoms",
    "control_loss",
    "extended_chain",
    "helix_positions",
    "run_episode",
    "start_chain",
    "target_helix",
    "train_control",
]

LOSS_TERMS = ("bond", "angle", "dihedral", "pair")


@dataclasses.dataclass
class ControlConfig:
    """Settings of the folding demo, in reduced units (σ, ε, m = 1; τ; T* = k_B T / ε).

    The default target is an α-helix-like helix (3.6 beads per turn, radius 0.605 σ, rise
    0.395 σ per bead: the Cα trace of an α-helix scaled to 1 σ bonds). The bond length r₀ is
    that of the helix.

    Attributes:
        n_beads: chain length.
        helix_radius, helix_pitch, beads_per_turn: the target helix (pitch = rise per turn).
        bond_k: bond spring constant, ε/σ².
        wca_epsilon, wca_sigma: excluded-volume strength and size.
        start_bond_angle: bond angle of the extended zig-zag start, degrees.
        start_noise: Gaussian displacement of the start beads, σ.
        hidden: width of the control network's two hidden layers.
        temperature: T* of the Langevin bath.
        friction: Langevin friction γ, 1/τ.
        timestep: Δt, τ.
        steps: MD steps per episode (one trajectory from the start to the fold).
        window: steps per truncated-BPTT window (``steps`` must be a multiple of it).
        replicas: trajectories per episode (independent noise), run as one batch.
        epochs: training episodes (one Adam step each).
        lr: Adam learning rate at the start; it decays along a cosine to
            ``lr * lr_final_fraction`` at the last epoch.
        grad_clip: maximum gradient norm (clipped before each Adam step).
        max_failures: blown-up episodes in a row before training gives up; after each, the
            last good parameters are restored and the learning rate is halved.
        loss_from: fraction of the trajectory after which the windows enter the objective
            (rounded down to whole windows); 0 counts every window. Counting only the second
            half asks for a chain that *is* folded at the end, not one that folds as fast as
            possible (early windows reward steep potentials that distort the helix).
        log_loss: differentiate the mean over windows of log(window loss) instead of the
            window losses themselves, so that the small losses of the late, nearly folded
            windows weigh as much as the large ones of the early windows.
        weights: loss weight of each term (bond, angle, dihedral, pair).
        seed: seed of the network initialization, start structure and noise.
        skin: neighbor-list skin, σ.
    """

    n_beads: int = 22
    helix_radius: float = 0.605
    helix_pitch: float = 1.422
    beads_per_turn: float = 3.6
    bond_k: float = 100.0
    wca_epsilon: float = 1.0
    wca_sigma: float = 1.0
    start_bond_angle: float = 160.0
    start_noise: float = 0.05
    hidden: int = 32
    temperature: float = 0.05
    friction: float = 1.0
    timestep: float = 0.01
    steps: int = 400
    window: int = 200
    replicas: int = 8
    epochs: int = 300
    lr: float = 3e-3
    lr_final_fraction: float = 0.05
    grad_clip: float = 10.0
    max_failures: int = 5
    loss_from: float = 0.5
    log_loss: bool = True
    weights: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"bond": 1.0, "angle": 1.0, "dihedral": 1.0, "pair": 1.0}
    )
    seed: int = 0
    skin: float = 0.5

    def __post_init__(self) -> None:
        if self.n_beads < WINDOW:
            raise ValueError(
                f"n_beads must be >= {WINDOW} (one control window), got {self.n_beads}"
            )
        if self.window < 1 or self.steps < self.window or self.steps % self.window:
            raise ValueError(
                f"steps ({self.steps}) must be a positive multiple of window ({self.window})"
            )
        if not 0.0 <= self.loss_from < 1.0:
            raise ValueError(f"loss_from must lie in [0, 1), got {self.loss_from}")
        unknown = set(self.weights) - set(LOSS_TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; choose from {LOSS_TERMS}")

    @property
    def loss_windows(self) -> int:
        """Number of (final) windows in the objective."""
        n_windows = self.steps // self.window
        return n_windows - int(self.loss_from * n_windows)

    @property
    def bond_length(self) -> float:
        """r₀ of the bonds = the bond length of the target helix, σ."""
        return helix_bond_length(self.helix_radius, self.helix_pitch, self.beads_per_turn)


# ---------------------------------------------------------------------------- the loss
def control_loss(
    positions: torch.Tensor, target: torch.Tensor, weights: dict[str, float] | None = None
) -> dict[str, torch.Tensor]:
    """Mean squared deviations of internal coordinates from the target chain.

    Args:
        positions: (..., n, 3) chains, Å.
        target: (n, 3) the target chain, Å.
        weights: weight of each term in ``"total"`` (default 1 each).

    Returns:
        dict of (...) tensors: ``"bond"`` (Å², bond lengths), ``"angle"`` (rad², bond angles),
        ``"dihedral"`` (mean of 2(1 − cos Δφ), which is Δφ² for small Δφ and smooth across
        ±π), ``"pair"`` (Å², all pair distances j − i ≥ 2) and ``"total"`` = Σ w · term.
        All are invariant under rigid motions of either chain; the dihedral term tells a helix
        from its mirror image.
    """
    target = target.to(positions)
    terms = {
        "bond": (bond_lengths(positions) - bond_lengths(target)).square().mean(dim=-1),
        "angle": (bond_angles(positions) - bond_angles(target)).square().mean(dim=-1),
        "dihedral": (
            2.0 * (1.0 - torch.cos(dihedral_angles(positions) - dihedral_angles(target)))
        ).mean(dim=-1),
        "pair": (pair_distances(positions, 2) - pair_distances(target, 2)).square().mean(dim=-1),
    }
    weights = {name: 1.0 for name in LOSS_TERMS} if weights is None else weights
    terms["total"] = sum(weights.get(name, 0.0) * terms[name] for name in LOSS_TERMS)
    return terms


# ---------------------------------------------------------------------------- episodes
def build_chain_model(config: ControlConfig) -> BeadChain:
    """The chain of ``config`` with a fresh (zero-output, seeded) control network."""
    control = ControlNet(config.hidden, seed=config.seed)
    return BeadChain(
        config.bond_k, config.bond_length, config.wca_epsilon, config.wca_sigma, control
    )


def target_helix(config: ControlConfig) -> np.ndarray:
    """(n_beads, 3) the target helix of ``config``, Å."""
    return helix_positions(
        config.n_beads, config.helix_radius, config.helix_pitch, config.beads_per_turn
    )


def start_chain(config: ControlConfig) -> np.ndarray:
    """(n_beads, 3) the extended start chain of ``config`` (the same for every episode), Å."""
    return extended_chain(
        config.n_beads,
        config.bond_length,
        config.start_bond_angle,
        config.start_noise,
        seed=config.seed,
    )


@dataclasses.dataclass
class Episode:
    """One controlled trajectory of every replica.

    Attributes:
        objective: the loss averaged over the frames of the counted windows (see
            ``ControlConfig.loss_from``) and over the replicas.
        final_terms: each loss term at the last frame, (B,) per replica.
        final_positions: (B, n, 3) the chains at the last frame, Å.
        rmsd: (B,) Kabsch RMSD of the last frame to the target, Å.
    """

    objective: float
    final_terms: dict[str, np.ndarray]
    final_positions: np.ndarray
    rmsd: np.ndarray


def run_episode(model: BeadChain, config: ControlConfig, seed: int, train: bool = False) -> Episode:
    """Run ``config.replicas`` Langevin trajectories from the start chain.

    With ``train=True`` the gradient of the objective is accumulated into the ``.grad`` of the
    model's parameters by truncated backpropagation through time over windows of
    ``config.window`` steps (each window's loss is differentiated with its start state held
    fixed; see :func:`~ase_mlmd.md.differentiable.truncated_bptt`); the caller takes the
    optimizer step. ``seed`` fixes the initial Maxwell–Boltzmann velocities and the noise.
    """
    n, replicas = config.n_beads, config.replicas
    target = torch.from_numpy(target_helix(config))
    rng = np.random.default_rng(seed)
    structures = []
    for _ in range(replicas):
        atoms = chain_atoms(start_chain(config))
        momenta = rng.normal(scale=math.sqrt(config.temperature), size=(n, 3))  # m = 1
        atoms.set_momenta(momenta - momenta.mean(axis=0))
        structures.append(atoms)
    forcefield = ForceField(model, skin=config.skin)
    integrator = make_integrator(
        "nvt-langevin",
        forcefield,
        timestep_fs(config.timestep),
        temperature_K=temperature_kelvin(config.temperature),
        friction_per_fs=config.friction * units.fs,
        seed=seed,
        differentiable=train,
    )
    n_windows = config.loss_windows
    free_steps = config.steps - n_windows * config.window  # before the loss counts

    window_means: list[float] = []

    def window_loss(frames: torch.Tensor) -> torch.Tensor:  # (w, B·n, 3) -> scalar
        chains = frames.reshape(len(frames), replicas, n, 3)
        mean = control_loss(chains, target, config.weights)["total"].mean()
        window_means.append(float(mean.detach()))
        if config.log_loss:
            return torch.log(mean) / n_windows
        return mean / n_windows

    state = integrator.init(MDState.from_atoms(structures))
    if free_steps:
        with torch.no_grad():
            state = rollout(integrator, state, free_steps, observable=None).state
    if train:
        result = truncated_bptt(
            integrator,
            state,
            config.window,
            n_windows,
            lambda window: window_loss(window.rollout.values),
            forcefield=forcefield,
        )
        final = result.state
    else:
        with torch.no_grad():
            out = rollout(integrator, state, n_windows * config.window)
        for frames in out.values.split(config.window):
            window_loss(frames)
        final = out.state
    chains = final.positions.detach().reshape(replicas, n, 3)
    if not (torch.isfinite(chains).all() and np.isfinite(window_means).all()):
        raise SimulationUnstableError(
            f"the controlled chain blew up (non-finite positions or loss) in the episode with "
            f"seed {seed}: the control potential became too steep for the time step "
            f"{config.timestep} τ; lower the learning rate (lr={config.lr}) or the time step"
        )
    terms = control_loss(chains, target, config.weights)
    target_np = target.numpy()
    return Episode(
        objective=float(np.mean(window_means)),
        final_terms={k: v.numpy() for k, v in terms.items()},
        final_positions=chains.numpy(),
        rmsd=np.array([kabsch_rmsd(c, target_np) for c in chains.numpy()]),
    )


# ---------------------------------------------------------------------------- training
@dataclasses.dataclass
class ControlResult:
    """What :func:`train_control` returns (losses as :func:`control_loss` totals, RMSD in Å).

    Attributes:
        config: the settings.
        model: the trained chain (an energy model: ``MLCalculator(result.model)``).
        initial: the evaluation episode before training (no control).
        final: the evaluation episode after training (same seed as ``initial``).
        history: per completed epoch: ``epoch``, ``objective``, ``final_loss`` and ``rmsd``
            (replica means of the training episode).
        log: messages about blown-up episodes and recoveries (empty when there were none).
        target: (n, 3) the target helix, Å.
        start: (n, 3) the start chain, Å.
        wall_time_s: training and evaluation time.
        files: written files by kind (with ``output_dir``).
    """

    config: ControlConfig
    model: BeadChain
    initial: Episode
    final: Episode
    history: list[dict[str, float]]
    target: np.ndarray
    start: np.ndarray
    wall_time_s: float
    log: list[str] = dataclasses.field(default_factory=list)
    files: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        """Loss of the last frame of the evaluation run, mean over replicas."""
        return float(self.final.final_terms["total"].mean())

    @property
    def rmsd(self) -> float:
        """Kabsch RMSD of the last frame to the helix, mean over replicas, Å (σ)."""
        return float(self.final.rmsd.mean())

    def table(self) -> str:
        """A Markdown table: loss terms and RMSD before and after training."""
        rows = ["| | " + " | ".join([*LOSS_TERMS, "total", "RMSD (σ)"]) + " |"]
        rows.append("|---" * (len(LOSS_TERMS) + 3) + "|")
        for name, episode in (("no control", self.initial), ("learned control", self.final)):
            values = [f"{episode.final_terms[t].mean():.4g}" for t in (*LOSS_TERMS, "total")]
            rmsd = f"{episode.rmsd.mean():.3f} ± {episode.rmsd.std():.3f}"
            rows.append(f"| {name} | " + " | ".join([*values, rmsd]) + " |")
        return "\n".join(rows)


def train_control(
    config: ControlConfig | None = None,
    output_dir: str | None = None,
    progress: bool = True,
) -> ControlResult:
    """Learn a control potential that folds the extended chain into the target helix.

    Each epoch runs one episode (``config.replicas`` trajectories of ``config.steps`` steps
    with fresh noise), accumulates the truncated-BPTT gradient of the objective (loss averaged
    over all frames; :func:`run_episode`) and takes one Adam step. Before and after training,
    an evaluation episode with a held-out seed measures the loss and the Kabsch RMSD of the
    final frames. Deterministic for a given config (seeded network, start chain and noise).

    Args:
        config: settings (default :class:`ControlConfig`).
        output_dir: if given, write ``control_chain.png`` (folded chain vs helix),
            ``control_loss.png`` (training curve), ``control.md`` (table) and
            ``control_final.extxyz`` (final chains, then the target).
        progress: show a progress bar.
    """
    import time

    from ase_mlmd.progress import progress_bar

    config = config or ControlConfig()
    started = time.perf_counter()
    model = build_chain_model(config)
    eval_seed = 2**31 - 1 - config.seed  # never a training seed
    initial = run_episode(model, config, eval_seed)
    optimizer = torch.optim.Adam(model.control.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, max(config.epochs, 1), eta_min=config.lr * config.lr_final_fraction
    )
    history = []
    log: list[str] = []
    guard = ParameterGuard(model, optimizer, config.max_failures, log.append)
    bar = progress_bar(range(config.epochs), desc="control", unit="epoch", disable=not progress)
    for epoch in bar:
        optimizer.zero_grad()
        try:
            episode = run_episode(model, config, config.seed + 1 + epoch, train=True)
        except SimulationUnstableError as error:
            guard.recover(str(error), epoch)
            continue
        norm = torch.nn.utils.clip_grad_norm_(model.control.parameters(), config.grad_clip)
        if not torch.isfinite(norm):
            guard.recover("the gradient is not finite", epoch)
            continue
        guard.succeeded()
        optimizer.step()
        schedule.step()
        guard.save()
        record = {
            "epoch": epoch,
            "objective": episode.objective,
            "final_loss": float(episode.final_terms["total"].mean()),
            "rmsd": float(episode.rmsd.mean()),
        }
        history.append(record)
        bar.set_postfix(loss=f"{record['final_loss']:.3g}", rmsd=f"{record['rmsd']:.2f}")
    final = run_episode(model, config, eval_seed)
    result = ControlResult(
        config=config,
        model=model,
        initial=initial,
        final=final,
        history=history,
        target=target_helix(config),
        start=start_chain(config),
        wall_time_s=time.perf_counter() - started,
        log=log,
    )
    if output_dir is not None:
        from ase_mlmd.diffsim.control_report import write_control_report

        result.files = write_control_report(result, output_dir)
    return result
