"""Autograin: the τ schedule, alignment, the least-squares decoder, and learning the obvious
grouping of a synthetic system of stiff dimers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ase_mlmd.cg.autograin import (
    AutograinConfig,
    align_frames,
    autograin,
    linear_decoder_rmsd,
    mean_force_noise,
    tau_schedule,
)
from ase_mlmd.cg.builders import from_groups
from ase_mlmd.cg.frames import read_trajectory
from ase_mlmd.errors import MappingError, MissingLabelsError

ALA2_FRAMES = Path(__file__).resolve().parents[2] / "benchmarks" / "cg_data" / "ala2_aa_200.extxyz"

#: atom pairs of the three dimers, interleaved in the atom order
DIMERS = [(0, 3), (1, 4), (2, 5)]


def _dimer_frames(n_frames: int = 120, seed: int = 0) -> list[Atoms]:
    """Three stiff O2-like dimers far apart, each moving on its own (translation ±1 Å, small
    bond vibration); forces from harmonic bonds only, so a dimer's summed force is zero."""
    rng = np.random.default_rng(seed)
    sites = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 9.0, 0.0]])
    axes = np.eye(3)
    frames = []
    for _ in range(n_frames):
        positions = np.zeros((6, 3))
        forces = np.zeros((6, 3))
        for k, (i, j) in enumerate(DIMERS):
            centre = sites[k] + rng.normal(scale=1.0, size=3)
            length = 1.2 + rng.normal(scale=0.03)
            positions[i] = centre - 0.5 * length * axes[k]
            positions[j] = centre + 0.5 * length * axes[k]
            force = -50.0 * (length - 1.2) * axes[k]  # on j; −force on i
            forces[j], forces[i] = force, -force
        atoms = Atoms("O6", positions=positions)
        atoms.calc = SinglePointCalculator(atoms, forces=forces)
        frames.append(atoms)
    return frames


def test_tau_schedule():
    assert tau_schedule(0, 100) == pytest.approx(4.2)
    assert tau_schedule(40, 100) == pytest.approx(4 * math.exp(-1) + 0.2)
    assert tau_schedule(100, 100) == pytest.approx(4 * math.exp(-2.5) + 0.2)


def test_alignment_removes_rotation_and_translation():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(7, 3))
    base -= base.mean(axis=0)
    frames, forces = [], []
    for _ in range(5):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        q *= np.sign(np.linalg.det(q))
        frames.append(base @ q + rng.normal(size=3))
        forces.append(base @ q)  # a vector field that rotates with the frame
    aligned, rotated = align_frames(np.array(frames), np.array(forces))
    assert np.allclose(aligned, aligned[0], atol=1e-10)
    assert np.allclose(rotated, aligned, atol=1e-10)


def test_least_squares_decoder_is_exact_for_one_bead_per_atom():
    rng = np.random.default_rng(2)
    positions = rng.normal(size=(10, 4, 3))
    _, rmsd = linear_decoder_rmsd(np.eye(4), positions)
    assert rmsd < 1e-10
    _, coarse = linear_decoder_rmsd(np.full((1, 4), 0.25), positions)
    assert coarse > 0.5


def test_autograin_finds_the_dimers_and_its_reconstruction_error_falls():
    frames = _dimer_frames()
    config = AutograinConfig(n_beads=3, rho=0.01, epochs=120, batch_size=40, seed=0)
    result = autograin(frames, config, progress=False)
    groups = sorted(tuple(m.tolist()) for m in result.mapping.members)
    assert groups == DIMERS
    history = [h["reconstruction"] for h in result.history]
    assert history[-1] < 0.2 * history[0]
    assert result.stop_reason == "epochs" and result.repaired_beads == []
    # the learned grouping reconstructs better and has less force noise than a wrong one
    wrong = from_groups(frames[0], [[0, 1], [2, 3], [4, 5]], weighting="geometry")
    positions, forces = align_frames(
        np.stack([f.positions for f in frames]), np.stack([f.get_forces() for f in frames])
    )
    _, wrong_rmsd = linear_decoder_rmsd(wrong.weights, positions)
    assert result.reconstruction_rmsd < 0.6 * wrong_rmsd
    assert result.force_noise < 1e-20 < mean_force_noise(wrong.weights, forces)
    # the mapped force of the learned map is the summed force of each dimer: zero
    beads = result.mapping.apply(frames[0])[0]
    assert np.allclose(beads.get_forces(), 0.0)


def test_autograin_on_alanine_dipeptide_returns_a_complete_mapping():
    frames = read_trajectory(ALA2_FRAMES, index=":100")
    config = AutograinConfig(n_beads=12, rho=0.1, epochs=15, batch_size=50, seed=3)
    result = autograin(frames, config, progress=False)
    members = result.mapping.members
    assert len(members) == 12 and all(len(m) for m in members)
    assert sorted(np.concatenate(members).tolist()) == list(range(22))
    assert result.mapping.scheme == "learned" and result.mapping.info["rho"] == 0.1


def test_bad_input():
    frames = _dimer_frames(4)
    with pytest.raises(MappingError, match="--beads 7"):
        autograin(frames, AutograinConfig(n_beads=7), progress=False)
    with pytest.raises(MappingError, match="at least 2 frames"):
        autograin(frames[:1], AutograinConfig(n_beads=3), progress=False)
    other = frames[:2] + [Atoms("O5", positions=np.zeros((5, 3)))]
    with pytest.raises(MappingError, match="frame 2 .* has other atoms"):
        autograin(other, AutograinConfig(n_beads=3), progress=False)
    bare = [f.copy() for f in frames]
    with pytest.raises(MissingLabelsError, match="frame 0 has no forces"):
        autograin(bare, AutograinConfig(n_beads=3, rho=0.1), progress=False)
    # without the force term no forces are needed
    result = autograin(bare, AutograinConfig(n_beads=3, rho=0.0, epochs=2), progress=False)
    assert math.isnan(result.force_noise)


def test_empty_beads_are_repaired_with_the_cheapest_atom():
    from ase_mlmd.cg.autograin import _hard_groups

    logits = np.array(
        [
            [5.0, 5.0, 5.0, 0.0],  # bead 0 wins atoms 0-2
            [0.0, 0.0, 0.0, 5.0],  # bead 1 wins atom 3
            [4.9, 1.0, 0.0, 4.0],  # bead 2 wins nothing; atom 0 is the cheapest to move
        ]
    )
    groups, repaired = _hard_groups(logits)
    assert repaired == [2]
    assert sorted(groups) == [[0], [1, 2], [3]]


def test_time_limit_and_hard_assignment():
    frames = _dimer_frames(60)
    config = AutograinConfig(n_beads=3, rho=0.01, epochs=1000, max_time=1e-6, seed=1)
    result = autograin(frames, config, progress=False)
    assert result.stop_reason == "max_time" and len(result.history) == 1
    hard = AutograinConfig(n_beads=3, rho=0.01, epochs=120, batch_size=20, hard=True, seed=0)
    result = autograin(frames, hard, progress=False)
    assert sorted(tuple(m.tolist()) for m in result.mapping.members) == DIMERS


def test_periodic_frames_are_made_whole_before_learning():
    frames = _dimer_frames(80)
    wrapped = []
    for atoms in frames:
        copy = atoms.copy()
        copy.set_cell([20.0, 20.0, 20.0])
        copy.pbc = True
        copy.positions[:, 0] -= copy.positions[[0, 3], 0].mean()  # dimer (0, 3) centred at x=0
        copy.wrap()  # so it is split across the x faces
        wrapped.append(copy)
    assert all(np.ptp(a.positions[[0, 3]], axis=0).max() > 10 for a in wrapped)
    config = AutograinConfig(n_beads=3, rho=0.0, epochs=100, batch_size=40, seed=0)
    result = autograin(wrapped, config, progress=False)
    assert sorted(tuple(m.tolist()) for m in result.mapping.members) == DIMERS
