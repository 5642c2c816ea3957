"""compute_rdf / compute_hr / rdf_mae against mdtraj, a brute-force ASE neighbour list, the
ideal gas and np.histogram."""

from __future__ import annotations

import mdtraj as md
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.neighborlist import neighbor_list

from ase_mlmd.errors import (
    IncompatibleTrajectoriesError,
    InvalidStructureError,
    TrajectoryTooShortError,
)
from ase_mlmd.observables import RDF_MIN_FRAMES, compute_hr, compute_rdf, hr_mae, rdf_mae

WATER_PAIRS = {"O-O": ("O", "O"), "H-H": ("H", "H"), "H-O": ("H", "O")}


def load_water(shared_file, folder: str = "data_0", subset: str = "set.000"):
    """(positions (T, 192, 3) Å, cells (T, 3, 3) Å, numbers (192,)) of the DFT water data."""
    base = shared_file(f"water_dft/{folder}")
    x = np.load(base / subset / "coord.npy").reshape(-1, 192, 3).astype(np.float64)
    box = np.load(base / subset / "box.npy").reshape(-1, 3, 3).astype(np.float64)
    types = np.loadtxt(base / "type.raw", dtype=int)
    type_map = (base / "type_map.raw").read_text().split()
    symbols = [type_map[t] for t in types]
    return x, box, np.array([{"O": 8, "H": 1}[s] for s in symbols])


def mdtraj_rdfs(x, box, numbers, r_max=6.0, n_bins=500):
    """mdtraj.compute_rdf for O-O, H-H, H-O (positions and cells converted to nm)."""
    top = md.Topology()
    chain = top.add_chain()
    for z in numbers:
        element = md.element.oxygen if z == 8 else md.element.hydrogen
        top.add_atom(element.symbol, element, top.add_residue("W", chain))
    traj = md.Trajectory(x / 10.0, top)
    traj.unitcell_vectors = box / 10.0
    out = {}
    for key, (a, b) in WATER_PAIRS.items():
        pairs = top.select_pairs(f"element {a}", f"element {b}")
        r, g = md.compute_rdf(traj, pairs, r_range=(0.0, r_max / 10.0), n_bins=n_bins)
        out[key] = (r * 10.0, g, len(pairs))
    return out


def test_rdf_matches_mdtraj_on_dft_water(shared_file):
    x, box, numbers = load_water(shared_file)
    # NPT-like: scale every frame (positions and cell) by its own factor, so that the
    # per-frame volume normalisation (sum of 1/V_t) is exercised too
    factors = np.linspace(0.985, 1.0, len(x))[:, None, None]
    x, box = x * factors, box * factors
    r, g = compute_rdf(x, box, numbers)
    assert sorted(g) == ["H-H", "H-O", "O-O"]
    reference = mdtraj_rdfs(x, box, numbers)
    edges = np.linspace(0.0, 6.0, 501)
    shells = 4 / 3 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    for key, (r_md, g_md, n_pairs) in reference.items():
        np.testing.assert_allclose(r, r_md, rtol=1e-12)
        # mdtraj works in float32 nm, we in float32 fractional coordinates: a pair whose
        # distance lies within ~1e-6 Å of a bin edge may land in the neighbouring bin. Compare
        # pair counts: equal totals, differences only between neighbouring bins (running sums
        # within two pairs), and at most 1e-4 of all pairs moved.
        one_pair = 1.0 / (n_pairs * np.sum(1.0 / np.abs(np.linalg.det(box))) * shells)
        ours, theirs = g[key] / one_pair, g_md / one_pair
        moved = ours - theirs
        assert np.sum(ours) == pytest.approx(np.sum(theirs), abs=1e-6), key
        assert np.abs(np.cumsum(moved)).max() <= 2 + 1e-6, key
        assert np.abs(moved).sum() / 2 <= 1e-4 * np.sum(theirs), key  # pairs moved
        assert np.mean(np.abs(moved) < 1e-6) > 0.95, key
        assert rdf_mae(g[key], g_md) < 1e-3


@pytest.mark.parametrize("varying", [False, True], ids=["fixed-cell", "cell-per-frame"])
def test_rdf_triclinic_cell_matches_brute_force_neighbour_list(varying):
    rng = np.random.default_rng(3)
    base = np.array([[9.0, 0.0, 0.0], [3.1, 8.5, 0.0], [-2.2, 1.7, 9.4]])
    numbers = np.array([8] * 40 + [1] * 60)
    frames = []
    for k in range(3):
        cell = base + (
            0.3 * k * np.array([[0.0, 0.0, 0.0], [1.0, 0.2, 0.0], [0.5, -0.4, 0.3]])
            if varying
            else 0.0
        )
        frac = rng.random((len(numbers), 3)) * 3.0 - 1.0  # also outside the cell
        frames.append(Atoms(numbers=numbers, positions=frac @ cell, cell=cell, pbc=True))
    widths = [1.0 / np.linalg.norm(np.linalg.inv(a.cell.array), axis=0) for a in frames]
    r_max, n_bins = 0.49 * np.min(widths), 60
    r, g = compute_rdf(frames, r_max=r_max, n_bins=n_bins)
    # brute force: ASE's neighbour list searches all periodic images within r_max
    counts = {key: np.zeros(n_bins) for key in g}
    for atoms in frames:
        i, j, d = neighbor_list("ijd", atoms, r_max)
        for key, (a, b) in WATER_PAIRS.items():
            za, zb = {"O": 8, "H": 1}[a], {"O": 8, "H": 1}[b]
            mask = (numbers[i] == za) & (numbers[j] == zb)
            hist, _ = np.histogram(d[mask], bins=n_bins, range=(0.0, r_max))
            counts[key] += hist / (2 if za == zb else 1)  # full list: same pair both ways
    edges = np.linspace(0.0, r_max, n_bins + 1)
    shells = 4 / 3 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    inverse_volumes = sum(1.0 / atoms.get_volume() for atoms in frames)
    n_o, n_h = 40, 60
    n_pairs = {"O-O": n_o * (n_o - 1) / 2, "H-H": n_h * (n_h - 1) / 2, "H-O": n_o * n_h}
    for key in g:
        expected = counts[key] / (n_pairs[key] * inverse_volumes * shells)
        np.testing.assert_allclose(g[key], expected, rtol=1e-10, atol=1e-12, err_msg=key)


def test_rdf_of_an_ideal_gas_is_one():
    rng = np.random.default_rng(0)
    box = 12.44
    x = rng.random((300, 192, 3)) * box
    numbers = np.array([8] * 64 + [1] * 128)
    r, g = compute_rdf(x, np.eye(3) * box, numbers, n_bins=50)
    far = r > 2.0
    for key, values in g.items():
        assert abs(values[far].mean() - 1.0) < 0.01, key
        assert np.all(np.abs(values[far] - 1.0) < 0.12), key


def test_rdf_from_frames_equals_rdf_from_arrays(shared_file):
    x, box, numbers = load_water(shared_file)
    frames = [
        Atoms(numbers=numbers, positions=p, cell=c, pbc=True)
        for p, c in zip(x[:5], box[:5], strict=True)
    ]
    r1, g1 = compute_rdf(frames, pairs=["O-H", ("O", "O")])
    r2, g2 = compute_rdf(x[:5], box[0], numbers, pairs=["H-O", "O-O"])
    assert sorted(g1) == sorted(g2) == ["H-O", "O-O"]
    for key in g1:
        np.testing.assert_array_equal(g1[key], g2[key])
    _, g_all = compute_rdf(x[:5], box[0], numbers, pairs="all")
    assert list(g_all) == ["all"]


def test_rdf_rejects_bad_input(shared_file):
    x, box, numbers = load_water(shared_file)
    with pytest.raises(InvalidStructureError, match="half the smallest perpendicular width"):
        compute_rdf(x[:2], box[0], numbers, r_max=7.0)
    with pytest.raises(InvalidStructureError, match="periodic cell"):
        compute_rdf(x[:2], None, numbers)
    with pytest.raises(IncompatibleTrajectoriesError, match="Li-Li"):
        compute_rdf(x[:2], box[0], numbers, pairs=["Li-Li"])
    with pytest.raises(TrajectoryTooShortError, match="at least 10 frames"):
        compute_rdf(x[:3], box[0], numbers, min_frames=RDF_MIN_FRAMES)
    bad = x[:3].copy()
    bad[1, 5, 0] = np.nan
    with pytest.raises(InvalidStructureError, match="frame 1"):
        compute_rdf(bad, box[0], numbers)


def test_rdf_mae_definition_and_mismatches():
    ones, zeros = np.ones(500), np.zeros(500)
    assert rdf_mae(ones, zeros) == pytest.approx(6.0)  # mean |Δg| × 6
    assert hr_mae(ones, zeros) == pytest.approx(10.0)  # mean |Δh| × 10
    assert rdf_mae({"O-O": ones}, {"O-O": ones}) == {"O-O": 0.0}
    with pytest.raises(IncompatibleTrajectoriesError, match="different element pairs"):
        rdf_mae({"O-O": ones, "H-H": ones}, {"O-O": ones, "Li-Li": ones})
    with pytest.raises(ValueError, match="different bins"):
        rdf_mae(ones, np.ones(100))


def test_hr_is_a_normalised_density_of_intramolecular_distances():
    rng = np.random.default_rng(1)
    ethanol = molecule("CH3CH2OH")
    x = ethanol.positions[None] + rng.normal(scale=0.05, size=(40, len(ethanol), 3))
    r, h = compute_hr(x)
    assert r.shape == h.shape == (500,)
    assert np.sum(h) * (10.0 / 500) == pytest.approx(1.0)
    i, j = np.triu_indices(len(ethanol), 1)
    distances = np.linalg.norm(x[:, i] - x[:, j], axis=2).ravel()
    expected, _ = np.histogram(distances, bins=500, range=(0.0, 10.0), density=True)
    np.testing.assert_allclose(h, expected, atol=1e-9)
