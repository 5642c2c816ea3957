"""Angle priors without a harmonic minimum: an error naming the angle, or (opt-in) left to the
network with a warning — the hub angle of the learned alanine-dipeptide mapping is one."""

from __future__ import annotations

import numpy as np
import pytest

from ase_mlmd.cg.priors import PriorSettings, fit_priors
from ase_mlmd.cg.topology import CGTopology
from ase_mlmd.cli.main import main
from ase_mlmd.errors import DataFormatError

TOPOLOGY = CGTopology.chain(["A", "B", "B", "A"])  # angles (0, 1, 2) and (1, 2, 3)


def _frames(n: int = 6000, seed: int = 0) -> np.ndarray:
    """(n, 4, 3) chains: bonds 1.5 Å, angle 0-1-2 one well at 1.9 rad, angle 1-2-3 on [1.2,
    2.6] rad with U(θ) = −kT ((θ − 1.9)/0.35)², a barrier: the profile has no minimum inside."""
    rng = np.random.default_rng(seed)
    theta1 = rng.normal(1.9, 0.05, n)
    candidates = rng.uniform(1.2, 2.6, 20 * n)
    weight = np.sin(candidates) * np.exp(((candidates - 1.9) / 0.35) ** 2)
    theta2 = candidates[rng.uniform(size=candidates.size) < weight / weight.max()][:n]
    assert theta2.size == n
    twist = rng.uniform(-np.pi, np.pi, n)
    frames = np.zeros((n, 4, 3))
    frames[:, 1] = [1.5, 0.0, 0.0]
    frames[:, 2] = frames[:, 1] + 1.5 * np.stack(
        [-np.cos(theta1), np.sin(theta1), np.zeros(n)], axis=1
    )
    # bead 3 at angle theta2 from the 2->1 direction, rotated by `twist` about that bond
    u = (frames[:, 1] - frames[:, 2]) / 1.5
    v = np.cross(u, [0.0, 0.0, 1.0])
    v /= np.linalg.norm(v, axis=1)[:, None]
    w = np.cross(u, v)
    direction = np.cos(theta2)[:, None] * u + np.sin(theta2)[:, None] * (
        np.cos(twist)[:, None] * v + np.sin(twist)[:, None] * w
    )
    frames[:, 3] = frames[:, 2] + 1.5 * direction
    return frames + rng.normal(0, 0.01, frames.shape)


def test_an_angle_without_a_minimum_is_an_error_naming_it():
    with pytest.raises(DataFormatError, match=r"angle prior of beads \(1, 2, 3\)") as err:
        fit_priors(_frames(), TOPOLOGY, PriorSettings(terms=("bonds", "angles")))
    assert "--skip-unfittable-angles" in str(err.value)


def test_skip_unfittable_angles_leaves_it_to_the_network():
    settings = PriorSettings(terms=("bonds", "angles"), skip_unfittable_angles=True)
    with pytest.warns(UserWarning, match=r"angle prior of beads \(1, 2, 3\) left out"):
        prior, summary = fit_priors(_frames(), TOPOLOGY, settings)
    assert prior.angles.tolist() == [[0, 1, 2]]
    assert summary["angles"]["left_out"] == [[1, 2, 3]]
    assert summary["angles"]["theta0_rad"][0] == pytest.approx(1.9, abs=0.02)
    # a fittable topology is untouched by the option
    frames = _frames()
    frames[:, 3] = frames[:, 2] + (frames[:, 1] - frames[:, 0])  # angle 1-2-3 = angle 0-1-2
    plain, _ = fit_priors(frames, TOPOLOGY, PriorSettings(terms=("bonds", "angles")))
    skip, _ = fit_priors(frames, TOPOLOGY, settings)
    assert skip.angles.tolist() == plain.angles.tolist() == [[0, 1, 2], [1, 2, 3]]


def test_cg_fit_offers_the_option(capsys):
    with pytest.raises(SystemExit) as done:
        main(["cg", "fit", "--help"])
    assert done.value.code == 0
    assert "--skip-unfittable-angles" in capsys.readouterr().out
