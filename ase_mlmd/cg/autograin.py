"""Autograin: a CG mapping learned by an auto-encoder (Wang & Gómez-Bombarelli 2019;
METRICS.md §3).

Model, for one molecule of ``n`` atoms and ``N`` beads:

- encoder: assignment logits ``W`` (N, n); each atom's column is sampled with Gumbel-softmax
  over the beads at temperature ``τ(epoch) = 4 exp(−epoch / (0.4 · max_epoch)) + 0.2`` (τ is
  passed to the sampler), optionally hard (one-hot forward, soft gradient: straight-through);
  the sampled assignment ``A`` (N, n) is normalized per bead, ``E_Ii = A_Ii / Σ_j A_Ij``, so
  each bead's weights sum to 1, and ``x_CG = E x`` (N, 3);
- decoder: a linear map ``D`` (n, N), ``x_rec = D x_CG``;
- loss = ``⟨|x_rec − x|²⟩`` (mean over atoms and Cartesian components, Å²)
  ``+ ρ ⟨|Σ_i C_Ii f_i|²⟩`` (mean over frames and beads of the squared instantaneous mapped
  force, (eV/Å)², so ρ is in Å² / (eV/Å)²) ``+ w_bond ⟨(|x_rec,i − x_rec,j| − |x_i − x_j|)²⟩``
  over the bonds (optional).

The force map of the regularizer is ``C_Ii = E_Ii / Σ_j E_Ij²``. For a non-overlapping ``E``
it is the minimum-norm force map with ``C Eᵀ = 1`` (Noid et al. 2008), and for the hard,
centre-of-geometry assignment it is 1 on each bead's atoms: the summed force map that
:class:`~ase_mlmd.cg.mapping.CGMapping` uses. It rewards beads whose atoms' forces cancel
(stiff bonds inside a bead), i.e. a smoother mean force to learn.

Frames: molecules in a periodic cell are made whole (minimum image along the bond graph of the
first frame); each frame is centred on its centroid and rotated (Kabsch) onto a reference (the
first frame, then the mean structure, twice), forces rotated with it — the linear decoder
cannot undo overall rotations, and the original work trains on aligned frames.

Result: the hard argmax assignment as a :class:`CGMapping` (centre of geometry, like ``E``),
each atom in exactly one bead. A bead that no atom chooses at the argmax is given the atom
(from a bead of two or more) whose logit for it is closest to its current bead's, so no bead
is empty; the number of beads repaired is reported.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from ase_mlmd.cg.builders import from_groups
from ase_mlmd.cg.frames import bfs_levels, bond_graph, frame_forces, make_whole
from ase_mlmd.cg.mapping import CGMapping
from ase_mlmd.errors import MappingError

__all__ = ["AutograinConfig", "AutograinResult", "align_frames", "autograin",
           "linear_decoder_rmsd", "mean_force_noise", "tau_schedule"]  # fmt: skip


@dataclass
class AutograinConfig:
    """Settings of an Autograin run.

    Attributes:
        n_beads: number of beads N.
        rho: weight ρ of the mean-force regularizer, Å² / (eV/Å)² (0: reconstruction only).
        epochs: passes over the frames (the τ schedule spans them).
        batch_size: frames per optimizer step.
        lr: Adam learning rate of logits and decoder.
        hard: straight-through hard Gumbel-softmax (one-hot forward pass).
        bond_weight: weight of the reconstructed-bond-length term, 0 to leave it out.
        seed: seeds the initialization, batch order and Gumbel noise.
        max_time: wall-time limit in seconds (the run stops after the epoch that crosses it).
        align: centre and rotate the frames onto a reference (see the module doc).
        device: torch device.
    """

    n_beads: int
    rho: float = 0.1
    epochs: int = 300
    batch_size: int = 128
    lr: float = 0.02
    hard: bool = False
    bond_weight: float = 0.0
    seed: int = 0
    max_time: float | None = None
    align: bool = True
    device: str = "cpu"


@dataclass
class AutograinResult:
    """What :func:`autograin` returns.

    Attributes:
        mapping: the learned hard mapping.
        history: per epoch ``{"epoch", "tau", "loss", "reconstruction", "force"}`` (soft
            assignment, training batches averaged; reconstruction in Å², force in (eV/Å)²).
        reconstruction_rmsd: Å, of the hard mapping with its least-squares linear decoder, on
            the training frames.
        force_noise: ``⟨|Σ_i C_Ii f_i|²⟩`` of the hard mapping, (eV/Å)².
        repaired_beads: beads that were empty at the argmax and got an atom.
        stop_reason: ``"epochs"`` or ``"max_time"``.
    """

    mapping: CGMapping
    history: list[dict] = field(default_factory=list)
    reconstruction_rmsd: float = math.nan
    force_noise: float = math.nan
    repaired_beads: list[int] = field(default_factory=list)
    stop_reason: str = "epochs"


def tau_schedule(epoch: int | float, max_epoch: int) -> float:
    """Gumbel-softmax temperature ``4 exp(−epoch / (0.4 · max_epoch)) + 0.2``."""
    return 4.0 * math.exp(-epoch / (0.4 * max(max_epoch, 1))) + 0.2


def _kabsch(mobile: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation matrices (T, 3, 3) that best rotate centred ``mobile`` (T, n, 3) onto centred
    ``target`` (n, 3): ``mobile @ R``."""
    covariance = np.einsum("tni,nj->tij", mobile, target)
    u, _, vt = np.linalg.svd(covariance)
    sign = np.sign(np.linalg.det(u @ vt))
    u[:, :, -1] *= sign[:, None]
    return u @ vt


def align_frames(
    positions: np.ndarray, forces: np.ndarray | None = None, iterations: int = 2
) -> tuple[np.ndarray, np.ndarray | None]:
    """Centre frames (T, n, 3) Å on their centroids and rotate them onto a reference (the first
    frame, then the mean of the aligned frames, ``iterations`` times); forces (T, n, 3) are
    rotated with their frames. Returns the aligned positions and forces."""
    centred = positions - positions.mean(axis=1, keepdims=True)
    reference = centred[0]
    rotations = np.broadcast_to(np.eye(3), (len(centred), 3, 3))
    for _ in range(max(iterations, 1)):
        rotations = _kabsch(centred, reference)
        aligned = np.einsum("tni,tij->tnj", centred, rotations)
        reference = aligned.mean(axis=0)
    aligned = np.einsum("tni,tij->tnj", centred, rotations)
    rotated = None if forces is None else np.einsum("tni,tij->tnj", forces, rotations)
    return aligned, rotated


def linear_decoder_rmsd(
    weights: np.ndarray, train: np.ndarray, test: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Fit the linear decoder ``D`` (n_atoms, n_beads) by least squares on aligned frames
    ``train`` (T, n_atoms, 3) mapped with ``weights`` (n_beads, n_atoms), and return it with
    the reconstruction RMSD (Å; root of the mean over frames and atoms of |x_rec − x|²) on
    ``test`` (default: the training frames)."""
    test = train if test is None else test
    beads = np.einsum("ba,tax->tbx", weights, train)
    a = beads.transpose(1, 0, 2).reshape(weights.shape[0], -1)
    b = train.transpose(1, 0, 2).reshape(weights.shape[1], -1)
    decoder = np.linalg.lstsq(a.T, b.T, rcond=None)[0].T
    rebuilt = np.einsum("ab,tbx->tax", decoder, np.einsum("ba,tax->tbx", weights, test))
    return decoder, float(np.sqrt(((rebuilt - test) ** 2).sum(axis=2).mean()))


def mean_force_noise(weights: np.ndarray, forces: np.ndarray) -> float:
    """``⟨|Σ_i C_Ii f_i|²⟩`` with ``C_Ii = W_Ii / Σ_j W_Ij²``: mean over frames and beads of the
    squared mapped force, (force unit)², for forces (T, n_atoms, 3)."""
    force_map = weights / (weights**2).sum(axis=1, keepdims=True)
    mapped = np.einsum("ba,tax->tbx", force_map, forces)
    return float((mapped**2).sum(axis=2).mean())


def _frames_arrays(
    frames: Sequence[Atoms], need_forces: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    first = frames[0]
    for k, atoms in enumerate(frames):
        if len(atoms) != len(first) or (atoms.numbers != first.numbers).any():
            raise MappingError(
                f"frame {k} ({atoms.info.get('source', '')}) has other atoms than frame 0 "
                f"({atoms.get_chemical_formula()} vs {first.get_chemical_formula()}); Autograin "
                "learns one molecule from frames of that molecule"
            )
    positions = np.stack([a.get_positions() for a in frames])
    if first.pbc.any():  # a molecule in a periodic cell: make every frame whole first
        levels = bfs_levels(len(first), bond_graph(first))
        positions = np.stack(
            [
                make_whole(p, a.cell.array, a.pbc, levels)
                for p, a in zip(positions, frames, strict=True)
            ]
        )
    if not np.isfinite(positions).all():
        bad = int(np.flatnonzero(~np.isfinite(positions).all(axis=(1, 2)))[0])
        raise MappingError(f"frame {bad} has non-finite positions; drop it")
    forces = None
    if need_forces:
        forces = np.stack(
            [frame_forces(a, a.info.get("source", f"frame {k}")) for k, a in enumerate(frames)]
        )
    return positions, forces


def autograin(
    frames: Sequence[Atoms], config: AutograinConfig, progress: bool = True
) -> AutograinResult:
    """Learn a CG mapping of ``config.n_beads`` beads from all-atom frames (with forces when
    ``config.rho > 0``) of one molecule; see the module docstring for the model and loss.

    Raises:
        MappingError: fewer than 2 frames, frames of different molecules, NaN positions,
            more beads than atoms.
        MissingLabelsError: ``rho > 0`` and a frame has no forces (names the frame).
    """
    import torch

    from ase_mlmd.progress import progress_bar

    frames = list(frames)
    if len(frames) < 2:
        raise MappingError(f"Autograin needs at least 2 frames, got {len(frames)}")
    n_atoms = len(frames[0])
    if not 1 <= config.n_beads <= n_atoms:
        raise MappingError(
            f"--beads {config.n_beads}: a learned mapping needs 1 to {n_atoms} beads for "
            f"{n_atoms} atoms"
        )
    if config.epochs < 1 or config.batch_size < 1 or not config.lr > 0 or config.rho < 0:
        raise MappingError(
            "Autograin needs --epochs ≥ 1, a batch size ≥ 1, a positive learning rate and "
            f"--rho ≥ 0 (got epochs {config.epochs}, batch {config.batch_size}, lr "
            f"{config.lr}, rho {config.rho})"
        )
    positions, forces = _frames_arrays(frames, need_forces=config.rho > 0)
    if config.align:
        positions, forces = align_frames(positions, forces)
    bonds = bond_graph(frames[0])
    device, dtype = torch.device(config.device), torch.float64
    x_all = torch.as_tensor(positions, dtype=dtype, device=device)
    f_all = None if forces is None else torch.as_tensor(forces, dtype=dtype, device=device)
    bond_index = torch.as_tensor(bonds, dtype=torch.long, device=device)

    history: list[dict] = []
    stop_reason = "epochs"
    start = time.monotonic()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        logits = torch.nn.Parameter(
            0.01 * torch.randn(config.n_beads, n_atoms, dtype=dtype, device=device)
        )
        decoder = torch.nn.Parameter(
            0.1 * torch.randn(n_atoms, config.n_beads, dtype=dtype, device=device)
        )
        optimizer = torch.optim.Adam([logits, decoder], lr=config.lr)
        bar = progress_bar(range(config.epochs), desc="autograin", disable=not progress)
        for epoch in bar:
            tau = tau_schedule(epoch, config.epochs)
            order = torch.randperm(len(x_all), device=device)
            totals = np.zeros(3)
            for batch in order.split(config.batch_size):
                x = x_all[batch]
                assignment = torch.nn.functional.gumbel_softmax(
                    logits, tau=tau, hard=config.hard, dim=0
                )
                encoder = assignment / (assignment.sum(dim=1, keepdim=True) + 1e-12)
                rebuilt = torch.einsum("ab,tbx->tax", decoder, encoder @ x)
                reconstruction = ((rebuilt - x) ** 2).mean()
                loss = reconstruction
                force_term = torch.zeros((), dtype=dtype, device=device)
                if f_all is not None:
                    force_map = encoder / ((encoder**2).sum(dim=1, keepdim=True) + 1e-12)
                    force_term = ((force_map @ f_all[batch]) ** 2).sum(dim=2).mean()
                    loss = loss + config.rho * force_term
                if config.bond_weight > 0 and len(bond_index):
                    i, j = bond_index[:, 0], bond_index[:, 1]
                    length = (x[:, i] - x[:, j]).norm(dim=2)
                    rebuilt_length = (rebuilt[:, i] - rebuilt[:, j]).norm(dim=2)
                    loss = loss + config.bond_weight * ((rebuilt_length - length) ** 2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                totals += len(batch) * np.array(
                    [loss.item(), reconstruction.item(), force_term.item()]
                )
            totals /= len(x_all)
            history.append(
                {"epoch": epoch, "tau": tau, "loss": totals[0], "reconstruction": totals[1],
                 "force": totals[2]}
            )  # fmt: skip
            bar.set_postfix(tau=f"{tau:.2f}", recon=f"{totals[1]:.3g}", force=f"{totals[2]:.3g}")
            if config.max_time is not None and time.monotonic() - start > config.max_time:
                stop_reason = "max_time"
                break
        bar.close()
    final_logits = logits.detach().cpu().numpy()
    groups, repaired = _hard_groups(final_logits)
    mapping = from_groups(frames[0], groups, weighting="geometry", scheme="learned", bonds=bonds)
    mapping = dataclasses.replace(
        mapping,
        info={**mapping.info, "rho": config.rho, "epochs": len(history), "seed": config.seed,
              "hard": config.hard, "repaired_beads": repaired},
    )  # fmt: skip
    _, rmsd = linear_decoder_rmsd(mapping.weights, positions)
    noise = math.nan if forces is None else mean_force_noise(mapping.weights, forces)
    return AutograinResult(mapping, history, rmsd, noise, repaired, stop_reason)


def _hard_groups(logits: np.ndarray) -> tuple[list[list[int]], list[int]]:
    """Atoms of each bead at the argmax of the logits, with empty beads given an atom each
    (see the module docstring)."""
    n_beads, _ = logits.shape
    owner = logits.argmax(axis=0)
    repaired = []
    for bead in range(n_beads):
        if (owner == bead).any():
            continue
        counts = np.bincount(owner, minlength=n_beads)
        movable = np.flatnonzero(counts[owner] > 1)
        cost = logits[owner[movable], movable] - logits[bead, movable]
        owner[movable[np.argmin(cost)]] = bead
        repaired.append(bead)
    groups = [np.flatnonzero(owner == b).tolist() for b in range(n_beads)]
    order = sorted(range(n_beads), key=lambda b: groups[b][0])
    return [groups[b] for b in order], repaired
