"""CG evaluation: JS divergence and FES comparison against hand-computed values, internal
coordinates, region populations, and evaluate_runs/write_report on real ala2_cg frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.io import Trajectory

from ase_mlmd.cg.evaluate import evaluate_runs, read_replicas, region_populations
from ase_mlmd.cg.report import write_report
from ase_mlmd.errors import IncompatibleTrajectoriesError, TrajectoryTooShortError
from ase_mlmd.observables.fes_compare import compare_fes
from ase_mlmd.observables.internal import (
    compute_bond_angles,
    compute_bond_lengths,
    histogram,
    js_divergence,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ala2_cg"


def test_js_divergence_hand_values():
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(np.log(2))
    assert js_divergence([2, 2], [5, 5]) == pytest.approx(0.0)
    # p = (1/2, 1/2), q = (1, 0): m = (3/4, 1/4)
    expected = 0.5 * (0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25)) + 0.5 * np.log(1 / 0.75)
    assert js_divergence([1, 1], [1, 0]) == pytest.approx(expected)
    assert js_divergence([[1, 1], [0, 0]], [[1, 0], [0, 1]]) > 0
    with pytest.raises(ValueError, match="different shapes"):
        js_divergence([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        js_divergence([1, -1], [1, 1])


def test_compare_fes_hand_values():
    ref = np.array([[0.0, 1.0], [3.0, np.inf]])
    # same surface shifted by a constant: MAE 0 (free energies are defined up to one)
    same = compare_fes(ref + 2.0, ref)
    assert same.mae_kT == 0.0 and same.n_compared == 3 and same.n_missing == 0
    sim = np.array([[0.0, 2.0], [np.inf, 1.0]])
    c = compare_fes(sim, ref, threshold=4.0)
    # compared bins (0,0), (0,1): deltas 0, 1 → mean offset 0.5 → MAE 0.5
    assert c.mae_kT == pytest.approx(0.5)
    assert (c.n_compared, c.n_missing) == (2, 1)
    p_ref = np.exp(-np.array([0.0, 1.0, 3.0]))
    assert c.missing_population == pytest.approx(p_ref[2] / p_ref.sum())
    p_sim = np.exp(-np.array([0.0, 2.0, 1.0]))
    assert c.extra_population == pytest.approx(p_sim[2] / p_sim.sum())
    assert compare_fes(sim, ref, threshold=0.5).n_compared == 1


def test_internal_coordinates_and_histogram():
    pos = np.array([[[0, 0, 0], [1, 0, 0], [1, 2, 0]]], dtype=float)
    np.testing.assert_allclose(compute_bond_lengths(pos, [(0, 1), (1, 2)]), [[1.0, 2.0]])
    np.testing.assert_allclose(compute_bond_angles(pos, [(0, 1, 2)]), [[np.pi / 2]])
    assert histogram([0.1, 0.2, 0.6, 5.0], np.array([0, 0.5, 1.0])) == pytest.approx([0.5, 0.25])


def test_region_populations():
    phi = np.radians([-70, -70, -70, 60])
    psi = np.radians([150, -40, -170, 30])
    pops = region_populations(phi, psi)
    assert pops == {"beta/PPII": 0.5, "alpha_R": 0.25, "alpha_L": 0.25}


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/ala2_cg not present")
def test_evaluate_runs_and_report(tmp_path):
    from ase_mlmd.cg.data import read_cg_data

    frames = read_cg_data(DATA, "kcal/mol", stride=5)  # 2000 frames
    ref, first, second = frames[:1000], frames[1000:1500], frames[1500:]
    for name, part in (("a", first), ("b", second)):
        with Trajectory(tmp_path / f"replica_{name}.traj", "w") as traj:
            for atoms in part:
                traj.write(atoms.copy())
    positions, _, n = read_replicas(tmp_path, discard_fraction=0.2)
    assert n == 2 and len(positions) == 800
    # the data against itself: zero everywhere
    self_eval = evaluate_runs(ref, np.stack([a.positions for a in ref]), label="self")
    assert self_eval.js_phi_psi == pytest.approx(0.0, abs=1e-12)
    assert self_eval.comparison.mae_kT == pytest.approx(0.0, abs=1e-12)
    assert max(self_eval.js_bonds.values()) == pytest.approx(0.0, abs=1e-12)
    # a later part of the same trajectory: close, but not identical
    later = evaluate_runs(ref, tmp_path, discard_fraction=0.2, label="later")
    assert 0 < later.js_phi_psi < 0.3
    assert set(later.js_dihedrals) == {"0-1-2-3", "1-2-3-4"}
    assert later.populations_reference["beta/PPII"] > 0.3
    report = write_report({"later": later, "self": self_eval}, tmp_path / "report",
                          extra={"note": 1})  # fmt: skip
    text = report.read_text()
    assert "| later |" in text and "fes.png" in text
    assert (tmp_path / "report" / "fes.png").stat().st_size > 1000
    assert (tmp_path / "report" / "distributions.png").stat().st_size > 1000
    with pytest.raises(TrajectoryTooShortError):
        read_replicas(tmp_path / "report")
    with pytest.raises(IncompatibleTrajectoriesError, match="beads"):
        evaluate_runs(ref, np.zeros((3, 4, 3)))
