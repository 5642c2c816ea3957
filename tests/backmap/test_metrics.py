"""Backmapping metrics (METRICS.md §4) against independent computations: ASE's neighbour list
for the bond graph, networkx for bond separations, mdtraj for bond lengths and angles, OpenMM
through the package's ASE calculator for energies; hand-built cases for validity, graph-edit
ratios and clashes; invariances of the unaligned RMSD."""

from __future__ import annotations

from pathlib import Path

import mdtraj
import networkx as nx
import numpy as np
import pytest
from ase.data import vdw_radii
from ase.io import read
from ase.neighborlist import natural_cutoffs, neighbor_list
from conftest import shared_file
from scipy.spatial.transform import Rotation

from ase_mlmd.backmap.metrics import (
    adjacency,
    angle_triples,
    backmap_metrics,
    bond_separation,
    clash_mask,
    graph_edit,
    internal_errors,
    openmm_energies,
    rmsd,
    select_atoms,
)
from ase_mlmd.cg.frames import bond_graph
from ase_mlmd.errors import IncompatibleTrajectoriesError, InvalidStructureError

ALA2_FRAMES = Path(__file__).resolve().parents[2] / "benchmarks" / "cg_data" / "ala2_aa_200.extxyz"


@pytest.fixture(scope="module")
def ala2():
    frames = read(ALA2_FRAMES, "::20")  # 10 frames, 20 ps apart
    positions = np.array([a.positions for a in frames])
    return positions, frames[0].numbers, bond_graph(frames[0])


def noisy(ref, n_samples=3, scale=0.1, seed=0):
    rng = np.random.default_rng(seed)
    return ref[:, None] + rng.normal(scale=scale, size=(len(ref), n_samples, *ref.shape[1:]))


def test_rmsd_of_a_uniform_shift_is_its_length_and_heavy_atoms_select_z_above_1(ala2):
    ref, numbers, _ = ala2
    shift = np.array([0.3, -0.4, 1.2])
    assert np.allclose(rmsd(ref, ref + shift), np.linalg.norm(shift))
    gen = ref.copy()
    hydrogens = numbers == 1
    gen[:, hydrogens] += [1.0, 0.0, 0.0]  # only hydrogens moved
    heavy = select_atoms(numbers, heavy=True)
    assert np.allclose(rmsd(ref, gen, heavy), 0.0)
    assert np.allclose(rmsd(ref, gen), np.sqrt(hydrogens.mean()))


def test_unaligned_rmsd_is_invariant_to_frame_order_and_a_rigid_motion_of_both(ala2):
    ref, _, _ = ala2
    gen = noisy(ref)
    base = rmsd(ref, gen)
    order = np.random.default_rng(1).permutation(len(ref))
    assert np.allclose(rmsd(ref[order], gen[order]), base[order])
    rot = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    t = np.array([5.0, -2.0, 0.7])
    assert np.allclose(rmsd(ref @ rot.T + t, gen @ rot.T + t), base)
    # a rigid motion of one side only is not forgiven (unaligned), and mdtraj's aligned RMSD
    # is never larger than the unaligned one
    assert (rmsd(ref, gen @ rot.T) > base + 1.0).all()
    aligned = [
        10 * mdtraj.rmsd(mdtraj.Trajectory(gen[f] / 10, None), mdtraj.Trajectory(ref[f] / 10, None))
        for f in range(len(ref))
    ]
    assert (np.array(aligned) <= base + 1e-4).all()


def test_adjacency_matches_ase_neighbour_list_with_13_covalent_radii(ala2):
    ref, numbers, _ = ala2
    frames = read(ALA2_FRAMES, "::20")
    gen = noisy(ref, scale=0.15)
    for f in (0, 5):
        atoms = frames[f].copy()
        atoms.positions = gen[f, 0]
        i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=1.3))
        expected = np.zeros((len(atoms), len(atoms)), bool)
        expected[i, j] = True
        assert np.array_equal(adjacency(gen[f, 0], numbers), expected)


def test_graph_edit_counts_missing_and_extra_bonds_absolute_and_signed(ala2):
    ref, numbers, bonds = ala2
    one = ref[:1]
    n_ref = adjacency(one[0], numbers).sum()
    # stretch one C-H bond: a missing bond only
    h = int(np.flatnonzero(numbers == 1)[0])
    partner = int(bonds[(bonds == h).any(1)][0].sum() - h)
    stretched = one.copy()
    stretched[0, h] += 2.0 * (one[0, h] - one[0, partner])
    valid, absolute, signed = graph_edit(one, stretched, numbers)
    assert not valid[0, 0]
    assert absolute[0, 0] == pytest.approx(2 / n_ref)  # both triangles of A
    assert signed[0, 0] == pytest.approx(2 / n_ref)
    # hand-built: an H hops from one carbon to another 4 Å away: one bond missing, one extra
    numbers_ch = np.array([6, 1, 6])
    before = np.array([[[0.0, 0, 0], [1.09, 0, 0], [4.0, 0, 0]]])
    after = np.array([[[0.0, 0, 0], [2.91, 0, 0], [4.0, 0, 0]]])
    valid, absolute, signed = graph_edit(before, after, numbers_ch)
    assert not valid[0, 0] and absolute[0, 0] == 2.0 and signed[0, 0] == 0.0
    valid, absolute, _ = graph_edit(ref, ref, numbers)
    assert valid.all() and (absolute == 0).all()


def test_bond_separation_matches_networkx(ala2):
    _, numbers, bonds = ala2
    sep = bond_separation(len(numbers), bonds)
    graph = nx.Graph([tuple(b) for b in bonds.tolist()])
    lengths = dict(nx.all_pairs_shortest_path_length(graph))
    for i in range(len(numbers)):
        for j in range(len(numbers)):
            assert sep[i, j] == lengths[i][j]


def test_clash_needs_more_than_three_bonds_and_08_of_the_vdw_sum():
    # hand-built chain C0-C1-C2-C3-C4 (the topology decides separations, not the geometry)
    numbers = np.full(5, 6)
    bonds = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
    limit = 0.8 * 2 * vdw_radii[6]
    base = np.array([[0.0, 0, 0], [0, 10, 0], [0, 20, 0], [10, 20, 0], [10, 0, 0]])
    cases = []
    for distance in (0.95 * limit, 1.05 * limit):
        x = base.copy()
        x[4] = [distance, 0, 0]  # C0-C4: four bonds apart
        cases.append(x)
    x = base.copy()
    x[3] = [0.5, 0, 0]  # C0-C3: three bonds apart, never a clash
    cases.append(x)
    mask = clash_mask(np.array(cases), numbers, bonds)[:, 0]
    assert mask.tolist() == [True, False, False]


def test_clash_ratio_of_md_frames_is_reported_as_the_floor(ala2):
    ref, numbers, bonds = ala2
    frames = read(ALA2_FRAMES, ":")
    every = np.array([a.positions for a in frames])
    mask = clash_mask(every, numbers, bonds)[:, 0]
    # hydrogen bonds and 1-5 H...H contacts: a few MD frames fall below 0.8 x vdW
    assert 0 < mask.mean() < 0.2
    out = backmap_metrics(every, every, numbers, bonds)
    assert out["clash_ratio"] == out["clash_ratio_reference"] == pytest.approx(mask.mean())


def test_bond_and_angle_errors_match_mdtraj(ala2):
    ref, _, bonds = ala2
    gen = noisy(ref, n_samples=2, scale=0.05)
    triples = angle_triples(bonds)
    degree = np.bincount(bonds.ravel(), minlength=22)
    assert len(triples) == (degree * (degree - 1) // 2).sum()
    t_ref = mdtraj.Trajectory(ref / 10, None)
    d_ref = mdtraj.compute_distances(t_ref, bonds) * 10
    a_ref = np.degrees(mdtraj.compute_angles(t_ref, triples))
    d_err, a_err = [], []
    for s in range(2):
        t = mdtraj.Trajectory(gen[:, s] / 10, None)
        d_err.append(np.abs(mdtraj.compute_distances(t, bonds) * 10 - d_ref))
        a_err.append(np.abs(np.degrees(mdtraj.compute_angles(t, triples)) - a_ref))
    out = internal_errors(ref, gen, bonds)
    assert out["bond_mae"] == pytest.approx(np.mean(d_err), rel=1e-4)
    assert out["angle_mae"] == pytest.approx(np.mean(a_err), rel=1e-3)
    same = internal_errors(ref, ref, bonds)
    assert same["bond_mae"] == 0 and same["bond_js"] == 0 and same["angle_js"] == 0
    assert 0 < out["bond_js"] <= np.log(2)


def test_openmm_energies_match_the_package_calculator(ala2):
    from ase_mlmd.data.openmm_reference import KJ_PER_MOL, OpenMMCalculator, build_amber_system

    ref, numbers, _ = ala2
    prmtop = shared_file("ala2/alanine-dipeptide-implicit.prmtop")
    _, system = build_amber_system(prmtop, "OBC2", None)
    energies = openmm_energies(system, ref[:3])
    frames = read(ALA2_FRAMES, "::20")[:3]
    calc = OpenMMCalculator(prmtop)
    expected = [calc.get_potential_energy(a) / KJ_PER_MOL for a in frames]
    assert np.allclose(energies, expected, atol=1e-2)


def test_backmap_metrics_perfect_reconstruction_and_noise(ala2):
    ref, numbers, bonds = ala2
    perfect = backmap_metrics(ref, ref, numbers, bonds)
    assert perfect["rmsd_all"] == 0 and perfect["validity_all"] == 1
    assert perfect["ged_all"] == 0
    assert perfect["clash_ratio"] == perfect["clash_ratio_reference"]
    assert perfect["valid_clash_free"] == 1 - perfect["clash_ratio"]
    worse = backmap_metrics(ref, noisy(ref, scale=0.3), numbers, bonds)
    assert worse["validity_all"] < 1 and worse["ged_all"] > 0 and worse["rmsd_all"] > 0.4


def test_bad_input_is_refused(ala2):
    ref, numbers, bonds = ala2
    with pytest.raises(IncompatibleTrajectoriesError, match="reference frames"):
        rmsd(ref, ref[:3])
    with pytest.raises(IncompatibleTrajectoriesError, match="atoms"):
        rmsd(ref, ref[:, :10])
    bad = ref.copy()
    bad[2, 4, 1] = np.nan
    with pytest.raises(InvalidStructureError, match="NaN"):
        backmap_metrics(ref, bad, numbers, bonds)
    with pytest.raises(InvalidStructureError, match="no frames"):
        rmsd(ref[:0], ref[:0])
    with pytest.raises(IncompatibleTrajectoriesError, match="atomic numbers"):
        backmap_metrics(ref, ref, numbers[:-1], bonds)


def test_heavy_atom_clash_ratio_ignores_hydrogens(ala2):
    ref, numbers, bonds = ala2
    sep = bond_separation(len(numbers), bonds)
    h = int(np.flatnonzero(numbers == 1)[0])
    far = int(np.flatnonzero((sep[h] > 4) & (numbers > 1))[0])
    moved = ref.copy()
    moved[:, h] = ref[:, far] + [0.6, 0.0, 0.0]  # an H pushed onto a distant heavy atom
    out = backmap_metrics(ref, moved, numbers, bonds)
    assert out["clash_ratio"] == 1.0
    assert out["clash_ratio_heavy"] == out["clash_ratio_heavy_reference"]
