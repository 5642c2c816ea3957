"""Stability metrics: bond deviation flags a broken bond at the right frame; the RDF window
criterion against RDFs recomputed window by window; stability time."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from test_rdf import load_water

from ase_mlmd.errors import IncompatibleTrajectoriesError, TrajectoryTooShortError
from ase_mlmd.observables import (
    BOND_DEVIATION_THRESHOLD,
    WATER_RDF_THRESHOLD,
    bond_deviation,
    collapse_frame,
    compute_rdf,
    rdf_mae,
    rdf_window_stability,
    reference_bonds,
    stability_time,
)


def rattled(atoms: Atoms, n_frames: int, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return atoms.positions[None] + rng.normal(scale=scale, size=(n_frames, len(atoms), 3))


def test_ethanol_bonds_are_the_eight_chemical_bonds():
    ethanol = molecule("CH3CH2OH")
    bonds, lengths = reference_bonds(ethanol)
    symbols = np.array(ethanol.get_chemical_symbols())
    kinds = sorted("".join(sorted(symbols[list(b)])) for b in bonds)
    assert kinds == sorted(["CC", "CO", "HO"] + ["CH"] * 5)
    direct = np.linalg.norm(ethanol.positions[bonds[:, 1]] - ethanol.positions[bonds[:, 0]], axis=1)
    np.testing.assert_allclose(lengths, direct)


def test_bond_deviation_flags_a_broken_bond_at_the_right_frame():
    ethanol = molecule("CH3CH2OH")
    reference = [ethanol.copy() for _ in range(10)]
    for k, atoms in enumerate(reference):
        atoms.positions = rattled(ethanol, 1, 0.01, k)[0]
    bonds, lengths = reference_bonds(reference)
    x = rattled(ethanol, 40, 0.01, 99)
    oxygen, hydrogen = next(b for b in bonds if set(ethanol.numbers[b]) == {1, 8})
    if ethanol.numbers[oxygen] != 8:
        oxygen, hydrogen = hydrogen, oxygen
    along = ethanol.positions[hydrogen] - ethanol.positions[oxygen]
    along /= np.linalg.norm(along)
    # the O-H bond stretched by 0.2 Å from frame 20 (below the threshold), broken (+1 Å)
    # from frame 27 on
    x[20:, hydrogen] += 0.2 * along
    x[27:, hydrogen] += 0.8 * along
    dev = bond_deviation(x, bonds, lengths)
    assert dev.shape == (40,)
    assert np.all(dev[:20] < 0.1)
    assert np.all((dev[20:27] > 0.15) & (dev[20:27] < 0.3))
    assert collapse_frame(dev, BOND_DEVIATION_THRESHOLD) == 27
    assert stability_time(dev, BOND_DEVIATION_THRESHOLD, dt_fs=0.5) == pytest.approx(13.5)
    # never collapsed: the full length; a NaN frame (blow-up) counts as collapsed
    assert stability_time(dev[:20], BOND_DEVIATION_THRESHOLD, dt_fs=0.5) == pytest.approx(9.5)
    x[5, 0, 0] = np.nan
    assert collapse_frame(bond_deviation(x, bonds, lengths), BOND_DEVIATION_THRESHOLD) == 5


def test_bond_deviation_uses_the_minimum_image_in_periodic_cells():
    ethanol = molecule("CH3CH2OH")
    bonds, lengths = reference_bonds(ethanol)
    cell = np.array([[8.0, 0.0, 0.0], [2.0, 7.0, 0.0], [0.5, 1.0, 9.0]])
    x = rattled(ethanol, 5, 0.02, 1)
    frac = x @ np.linalg.inv(cell)
    wrapped = (frac - np.floor(frac)) @ cell  # the molecule split across the cell faces
    np.testing.assert_allclose(
        bond_deviation(wrapped, bonds, lengths, cells=cell), bond_deviation(x, bonds, lengths)
    )
    frames = [Atoms(ethanol.numbers, p, cell=cell, pbc=True) for p in wrapped]
    np.testing.assert_allclose(
        bond_deviation(frames, bonds, lengths), bond_deviation(x, bonds, lengths)
    )
    with pytest.raises(IncompatibleTrajectoriesError, match="reference lengths"):
        bond_deviation(x, bonds, lengths[:-1])
    with pytest.raises(IncompatibleTrajectoriesError, match="differ"):
        bond_deviation(x[:, :5], bonds, lengths)


def test_rdf_window_stability_detects_a_destroyed_liquid(shared_file):
    x, box, numbers = load_water(shared_file)
    _, reference = compute_rdf(x, box, numbers)
    rng = np.random.default_rng(0)
    gas = rng.random((25, 192, 3)) @ box[0]  # structure destroyed from frame 60 on
    traj = np.concatenate([x[:60], gas])
    window = 10
    dev, per_pair = rdf_window_stability(traj, box[0], numbers, reference=reference, window=window)
    assert np.isnan(dev[: window - 1]).all()
    # independent path: the RDF of each window by compute_rdf, compared by rdf_mae
    for end in (window - 1, 33, 59, 64, 84):
        _, g = compute_rdf(traj[end - window + 1 : end + 1], box[0], numbers)
        mae = rdf_mae(g, reference)
        for key in mae:
            assert per_pair[key][end] == pytest.approx(mae[key], rel=1e-9)
        assert dev[end] == pytest.approx(max(mae.values()), rel=1e-9)
    assert np.all(dev[window - 1 : 60] < 1.0)  # the DFT liquid stays close to its own RDF
    frame = collapse_frame(dev, WATER_RDF_THRESHOLD)
    assert frame is not None and 60 < frame < 60 + window
    assert stability_time(dev, WATER_RDF_THRESHOLD, dt_fs=100.0) == pytest.approx(frame * 100.0)


def test_rdf_window_stability_bad_input(shared_file):
    x, box, numbers = load_water(shared_file)
    _, reference = compute_rdf(x[:10], box[0], numbers)
    with pytest.raises(TrajectoryTooShortError, match="at least 10 frames"):
        rdf_window_stability(x[:5], box[0], numbers, reference=reference, window=10)
    with pytest.raises(IncompatibleTrajectoriesError, match="Li"):
        rdf_window_stability(
            x[:10], box[0], numbers, reference={"Li-Li": reference["O-O"]}, window=5
        )
    with pytest.raises(IncompatibleTrajectoriesError, match="bins"):
        rdf_window_stability(x[:10], box[0], numbers, reference={"O-O": np.ones(100)}, window=5)
