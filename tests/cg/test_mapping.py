"""CGMapping and its builders: centres of mass, the force map (Noid consistency by finite
differences), periodic molecules, JSON, Girvan–Newman, water boxes, trajectories, bad input."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import shared_file

from ase_mlmd.beads import bead_types_of, type_list_of
from ase_mlmd.cg.builders import (
    backbone,
    build_mapping,
    from_groups,
    girvan_newman,
    heavy_atom,
    read_groups_file,
)
from ase_mlmd.cg.frames import bond_graph, read_trajectory
from ase_mlmd.cg.mapping import CGMapping
from ase_mlmd.errors import (
    DataFormatError,
    InvalidStructureError,
    MappingError,
    MissingLabelsError,
)

ROOT = Path(__file__).resolve().parents[2]
#: 200 all-atom alanine-dipeptide frames with forces (OpenMM, see BENCHMARKS.md)
ALA2_FRAMES = ROOT / "benchmarks" / "cg_data" / "ala2_aa_200.extxyz"


@pytest.fixture(scope="module")
def ala2_frames() -> list[Atoms]:
    return read_trajectory(ALA2_FRAMES, index=":20")


@pytest.fixture(scope="module")
def ala2_pdb() -> Atoms:
    return read_trajectory(shared_file("ala2/alanine-dipeptide-implicit.pdb"))[0]


def test_heavy_atom_beads_are_centres_of_mass(ala2_frames):
    mapping = heavy_atom(ala2_frames[0])
    assert mapping.n_beads == 10  # alanine dipeptide: 10 heavy atoms
    cg = mapping.apply_positions(ala2_frames[:3])
    for atoms, beads in zip(ala2_frames[:3], cg, strict=True):
        for bead, group in enumerate(mapping.members):
            assert np.allclose(beads.positions[bead], atoms[group].get_center_of_mass())
            assert beads.get_masses()[bead] == pytest.approx(atoms[group].get_masses().sum())
        assert bead_types_of(beads) == list(mapping.bead_types)
    # every hydrogen sits in the bead of the heavy atom it is bonded to (nearest heavy atom)
    symbols = ala2_frames[0].get_chemical_symbols()
    for group in mapping.members:
        assert sum(symbols[i] != "H" for i in group) == 1


def test_geometry_weighting_is_the_plain_mean(ala2_frames):
    groups = [list(range(0, 8)), list(range(8, 15)), list(range(15, 22))]
    mapping = from_groups(ala2_frames[0], groups, weighting="geometry")
    beads = mapping.apply_positions(ala2_frames[1])
    for bead, group in enumerate(groups):
        assert np.allclose(beads.positions[bead], ala2_frames[1].positions[group].mean(axis=0))


def _bead_energy(positions: np.ndarray) -> float:
    """A potential of bead coordinates only: harmonic chain + a nonlinear external term."""
    bonds = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    return float(
        np.sum(3.0 * (bonds - 1.5) ** 2) + np.sum(np.sin(positions[:, 0]) * positions[:, 1])
    )


def test_summed_force_map_gives_minus_the_bead_gradient(ala2_frames):
    """Noid consistency: for U(R(r)), mapping the atom forces −∂U/∂r (finite differences in
    atom coordinates) gives −∂U/∂R (finite differences in bead coordinates)."""
    mapping = heavy_atom(ala2_frames[0])
    positions = ala2_frames[0].get_positions()
    h = 1e-5
    atom_forces = np.zeros_like(positions)
    for index in np.ndindex(positions.shape):
        plus, minus = positions.copy(), positions.copy()
        plus[index] += h
        minus[index] -= h
        atom_forces[index] = -(
            _bead_energy(mapping.weights @ plus) - _bead_energy(mapping.weights @ minus)
        ) / (2 * h)
    beads = mapping.weights @ positions
    bead_forces = np.zeros_like(beads)
    for index in np.ndindex(beads.shape):
        plus, minus = beads.copy(), beads.copy()
        plus[index] += h
        minus[index] -= h
        bead_forces[index] = -(_bead_energy(plus) - _bead_energy(minus)) / (2 * h)
    assert np.abs(bead_forces).max() > 0.1
    assert np.allclose(mapping.apply_forces(atom_forces), bead_forces, atol=1e-6)
    # a batch of frames maps frame by frame
    stacked = mapping.apply_forces(np.stack([atom_forces, 2 * atom_forces]))
    assert np.allclose(stacked[1], 2 * bead_forces, atol=1e-6)


def test_mapped_frames_carry_summed_forces(ala2_frames):
    mapping = girvan_newman(ala2_frames[0], 4)
    cg = mapping.apply(ala2_frames[:2])
    for atoms, beads in zip(ala2_frames[:2], cg, strict=True):
        forces = atoms.get_forces()
        expected = [forces[group].sum(axis=0) for group in mapping.members]
        assert np.allclose(beads.get_forces(), expected)
        assert beads.info["aa_energy"] == pytest.approx(atoms.get_potential_energy())


def test_overlapping_mapping_maps_positions_but_refuses_forces(ala2_frames):
    weights = np.zeros((2, 22))
    weights[0, :12] = 1 / 12
    weights[1, 10:] = 1 / 12  # atoms 10 and 11 in both beads
    with pytest.raises(MappingError, match="atom 10 .* is in beads \\[0, 1\\]"):
        CGMapping(weights, ["A", "B"], ["a", "b"], ala2_frames[0].numbers, np.zeros((0, 2)))
    mapping = CGMapping(
        weights, ["A", "B"], ["a", "b"], ala2_frames[0].numbers, np.zeros((0, 2)),
        allow_overlap=True,
    )  # fmt: skip
    beads = mapping.apply_positions(ala2_frames[0])
    assert np.allclose(beads.positions[1], ala2_frames[0].positions[10:].mean(axis=0))
    with pytest.raises(MappingError, match="atom 10 in several beads"):
        mapping.apply_forces(ala2_frames[0].get_forces())
    assert mapping.topology().bonds.tolist() == [[0, 1]]  # beads sharing atoms are bonded


def test_periodic_molecule_broken_across_the_boundary_maps_like_the_whole_one(ala2_frames):
    mapping = heavy_atom(ala2_frames[0])
    whole = ala2_frames[0].copy()
    whole.set_cell([12.0, 13.0, 14.0])
    whole.pbc = True
    whole.positions += 6.0 - whole.get_center_of_mass()  # inside the box, whole
    broken = whole.copy()
    broken.positions += [5.5, -6.0, 3.0]
    broken.wrap()
    assert np.ptp(broken.positions[:, 0]) > 8.0  # really split across the boundary
    moved = whole.copy()
    moved.positions += [5.5, -6.0, 3.0]  # the same molecule, whole, centre outside the box
    cg_moved = mapping.apply_positions(moved)
    cg_broken = mapping.apply_positions(broken)
    assert np.allclose(cg_broken.positions, cg_moved.positions, atol=1e-10)
    # both are the plain centres of mass of the whole molecule, up to one lattice vector
    shift = cg_broken.positions - mapping.weights @ moved.positions
    frac = np.linalg.solve(whole.cell.array.T, shift.T).T
    assert np.allclose(frac, np.round(frac[0]), atol=1e-9)
    assert (cg_broken.get_scaled_positions(wrap=False)[:, 0] < 1.2).all()
    # without the shift into the cell, a whole molecule maps to plain W r
    plain = mapping.apply_positions(moved, wrap=False)
    assert np.allclose(plain.positions, mapping.weights @ moved.positions)
    assert cg_broken.pbc.all() and np.allclose(cg_broken.cell.array, whole.cell.array)


def _water_box(n_side: int = 3, spacing: float = 3.1, seed: int = 0) -> tuple[Atoms, np.ndarray]:
    """A periodic box of randomly rotated waters, wrapped (molecules broken at the faces); also
    returns each molecule's centre of mass before wrapping."""
    rng = np.random.default_rng(seed)
    water = molecule("H2O")
    box, centres = Atoms(), []
    for corner in np.ndindex(n_side, n_side, n_side):
        one = water.copy()
        one.rotate(rng.uniform(0, 360), rng.normal(size=3), center="COM")
        one.positions += np.array(corner) * spacing + 0.2 - one.get_center_of_mass()
        centres.append(one.get_center_of_mass())
        box += one
    box.set_cell(np.eye(3) * n_side * spacing)
    box.pbc = True
    box.wrap()
    return box, np.array(centres)


def test_water_box_maps_to_one_bead_per_molecule():
    box, centres = _water_box()
    water = molecule("H2O")
    one = from_groups(water, [[0, 1, 2]], bead_types=["W"])
    mapping = one.replicate(box)
    assert mapping.n_beads == 27
    cg = mapping.apply_positions(box)
    delta = cg.positions - centres
    frac = np.linalg.solve(box.cell.array.T, delta.T).T
    assert np.allclose(frac - np.round(frac), 0.0, atol=1e-9)  # COM up to a lattice vector
    assert (cg.get_scaled_positions(wrap=False) >= 0).all()
    assert (cg.get_scaled_positions(wrap=False) < 1).all()
    assert set(bead_types_of(cg)) == {"W"} and np.allclose(
        cg.get_masses(), water.get_masses().sum()
    )
    # a repeat count gives the same mapping when molecules are stored one after the other
    assert np.array_equal(one.replicate(27).weights, mapping.weights)
    assert np.array_equal(one.replicate(27).bonds, mapping.bonds)
    # a box whose atom order differs inside a molecule is refused, naming the molecule
    swapped = box[[1, 0, 2] + list(range(3, len(box)))]
    with pytest.raises(MappingError, match="molecule 0 of the box"):
        one.replicate(swapped)


def test_json_round_trip(tmp_path, ala2_frames):
    mapping = girvan_newman(ala2_frames[0], 5)
    path = mapping.to_json(tmp_path / "map.json") and tmp_path / "map.json"
    again = CGMapping.from_json(path)
    assert np.array_equal(again.weights, mapping.weights)
    assert again.bead_types == mapping.bead_types and again.bead_names == mapping.bead_names
    assert np.array_equal(again.bonds, mapping.bonds) and again.scheme == "girvan-newman"
    cg1, cg2 = mapping.apply(ala2_frames[3]), again.apply(ala2_frames[3])
    assert np.array_equal(cg1[0].positions, cg2[0].positions)
    assert type_list_of(cg1[0]) == type_list_of(cg2[0])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file
    (tmp_path / "bad.json").write_text('{"format": "ase_mlmd.cg_mapping", "beads": 3}')
    with pytest.raises(DataFormatError, match="bad.json"):
        CGMapping.from_json(tmp_path / "bad.json")
    (tmp_path / "truncated.json").write_text(mapping.to_json()[:100])
    with pytest.raises(DataFormatError, match="truncated.json is not valid JSON"):
        CGMapping.from_json(tmp_path / "truncated.json")


@pytest.mark.parametrize("n_beads", [3, 4, 6, 8, 12])
def test_girvan_newman_gives_connected_beads_covering_all_atoms(ala2_frames, n_beads):
    mapping = girvan_newman(ala2_frames[0], n_beads)
    graph = nx.Graph(list(map(tuple, bond_graph(ala2_frames[0]))))
    members = mapping.members
    assert len(members) == n_beads
    assert sorted(np.concatenate(members).tolist()) == list(range(22))
    for group in members:
        assert nx.is_connected(graph.subgraph(group.tolist()))
        assert np.allclose(mapping.weights[mapping.weights > 0].reshape(-1)[:0], 0)
    for bead, group in enumerate(members):  # centre of geometry by default
        assert np.allclose(mapping.weights[bead, group], 1 / len(group))
    assert nx.is_connected(nx.Graph(list(map(tuple, mapping.topology().bonds))))


def test_backbone_of_alanine_dipeptide_matches_the_ala2_cg_beads(
    ala2_pdb, ala2_frames, shared_file
):
    mapping = backbone(ala2_pdb)
    assert mapping.bead_types == ("C", "N", "CA", "C", "N")  # as ../shared/data/ala2_cg
    assert mapping.topology().bonds.tolist() == [[0, 1], [1, 2], [2, 3], [3, 4]]
    beads = mapping.apply(ala2_frames[0])[0]
    assert np.allclose(beads.get_forces(), ala2_frames[0].get_forces()[mapping.members].squeeze(1))
    reference = np.load(shared_file("ala2_cg/ala2_coordinates.npy"), mmap_mode="r")[0]
    bonds = np.linalg.norm(np.diff(beads.positions, axis=0), axis=1)
    assert np.allclose(bonds, np.linalg.norm(np.diff(reference, axis=0), axis=1), atol=0.1)
    ca = build_mapping("ca", ala2_pdb)  # bead types are residue names when the PDB has them
    assert ca.bead_types == ("ALA",) and ca.bead_names == ("ALA2",) and ca.scheme == "ca"
    unnamed = ala2_frames[0].copy()
    unnamed.set_array("atom_name", ala2_pdb.arrays["atom_name"])
    assert build_mapping("ca", unnamed).bead_types == ("CA",)


def test_groups_file(tmp_path, ala2_frames):
    path = tmp_path / "groups.txt"
    path.write_text("# bead type, atoms\nACE 0-5\nALA 6-15  # the residue\nNME 16-21\n")
    groups, types = read_groups_file(path)
    assert types == ["ACE", "ALA", "NME"] and groups[1] == list(range(6, 16))
    mapping = build_mapping(f"com-groups:{path}", ala2_frames[0])
    assert np.allclose(
        mapping.apply_positions(ala2_frames[0]).positions[2],
        ala2_frames[0][16:].get_center_of_mass(),
    )
    path.write_text("ACE 0-5\nALA 5-15\nNME 16-21\n")  # atom 5 twice
    with pytest.raises(MappingError, match=f"groups file {path}: atom 5 .* in beads \\[0, 1\\]"):
        build_mapping(f"com-groups:{path}", ala2_frames[0])
    path.write_text("ACE 0-5\nNME 16-21\n")  # atoms 6-15 left out
    with pytest.raises(MappingError, match="atoms \\[6, 7, 8.*belong to no bead"):
        build_mapping(f"com-groups:{path}", ala2_frames[0])
    path.write_text("ACE 0-x\n")
    with pytest.raises(DataFormatError, match="line 1: '0-x'"):
        read_groups_file(path)


def test_bad_input(ala2_frames):
    atoms = ala2_frames[0]
    with pytest.raises(MappingError, match="--beads 23"):
        girvan_newman(atoms, 23)
    with pytest.raises(MappingError, match="23 beads for 22 atoms"):
        from_groups(atoms, [[i] for i in range(22)] + [[0]])
    mapping = heavy_atom(atoms)
    with pytest.raises(MappingError, match="has 21 atoms but the mapping was built for 22"):
        mapping.apply_positions(atoms[:-1])
    swapped = atoms[[1, 0] + list(range(2, 22))]
    with pytest.raises(
        MappingError, match="atom 0 of the structure is C but the mapping expects H"
    ):
        mapping.apply_positions(swapped)
    nan = atoms.copy()
    nan.positions[4] = np.nan
    with pytest.raises(
        InvalidStructureError, match="frame 1 .*has non-finite positions \\(atom 4\\)"
    ):
        mapping.apply_positions([atoms, nan])
    bare = atoms.copy()
    bare.calc = None
    with pytest.raises(MissingLabelsError, match="has no forces"):
        mapping.apply([bare])
    with pytest.raises(MappingError, match="bead 1 .* has no atoms"):
        CGMapping(np.eye(2, 22)[[0, 1]] * [[1], [0]], ["A", "B"], ["a", "b"], atoms.numbers, [])
    with pytest.raises(MappingError, match="sum to 0.5"):
        CGMapping(0.5 * np.eye(1, 22), ["A"], ["a"], atoms.numbers, [], allow_unmapped=True)
    with pytest.raises(MappingError, match="white space"):
        from_groups(atoms, [list(range(22))], bead_types=["Ala dipeptide"])
    with pytest.raises(MappingError, match="unknown mapping scheme 'martini'"):
        build_mapping("martini", atoms)
    with pytest.raises(MappingError, match="need atom names .*--topology"):
        backbone(atoms)


def test_mdtraj_trajectory_is_read_in_angstrom(tmp_path, shared_file):
    import mdtraj

    pdb = shared_file("ala2/alanine-dipeptide-implicit.pdb")
    traj = mdtraj.load_pdb(str(pdb), standard_names=False)
    traj.xyz = np.concatenate([traj.xyz, traj.xyz + 0.1])
    traj.unitcell_vectors = np.repeat(traj.unitcell_vectors, 2, axis=0)
    traj.save_dcd(str(tmp_path / "t.dcd"))
    frames = read_trajectory(tmp_path / "t.dcd", topology=pdb)
    reference = read_trajectory(pdb)[0]
    assert len(frames) == 2
    assert np.allclose(frames[1].positions, reference.positions + 1.0, atol=1e-3)
    assert frames[0].get_chemical_symbols() == reference.get_chemical_symbols()
    with pytest.raises(DataFormatError, match="give its topology"):
        read_trajectory(tmp_path / "t.dcd")


def test_forces_of_a_singlepoint_frame_and_the_mapped_calculator(ala2_frames):
    atoms = ala2_frames[0].copy()
    forces = np.random.default_rng(0).normal(size=(22, 3))
    atoms.calc = SinglePointCalculator(atoms, forces=forces)
    mapping = heavy_atom(atoms)
    beads = mapping.apply(atoms)[0]
    assert np.allclose(beads.get_forces().sum(axis=0), forces.sum(axis=0))  # total force kept
    assert "aa_energy" not in beads.info


def test_beads_joined_through_unmapped_atoms_are_bonded():
    """A Cα-trace-like partial mapping: beads on atoms 0, 3 and 6 of a chain; atoms 1-2 and 4-5
    (no bead) join them, a side group 7-8 hangs on atom 3 only."""
    chain = Atoms("C9", positions=np.arange(27, dtype=float).reshape(9, 3))
    bonds = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (3, 7), (7, 8)]
    mapping = from_groups(
        chain, [[0], [3], [6]], bead_types=["CA"] * 3, allow_unmapped=True, bonds=bonds
    )
    assert mapping.topology().bonds.tolist() == [[0, 1], [1, 2]]
    assert mapping.topology().angles.tolist() == [[0, 1, 2]]


def test_big_boxes_keep_sparse_weights_and_map_the_same(monkeypatch, tmp_path):
    import scipy.sparse

    import ase_mlmd.cg.mapping as mapping_module

    box, _ = _water_box()
    one = from_groups(molecule("H2O"), [[0, 1, 2]], bead_types=["W"])
    dense = one.replicate(box)
    monkeypatch.setattr(mapping_module, "DENSE_LIMIT", 100)
    big = one.replicate(box)
    assert scipy.sparse.issparse(big.weights) and isinstance(dense.weights, np.ndarray)
    assert np.allclose(big.apply_positions(box).positions, dense.apply_positions(box).positions)
    forces = np.random.default_rng(0).normal(size=(2, len(box), 3))
    assert np.allclose(big.apply_forces(forces), dense.apply_forces(forces))
    assert np.allclose(big.apply_forces(forces[0]), dense.apply_forces(forces)[0])
    again = CGMapping.from_json(big.to_json(tmp_path / "box.json") and tmp_path / "box.json")
    assert scipy.sparse.issparse(again.weights)
    assert np.allclose(again.weights.toarray(), dense.weights)
    assert big.topology().n_beads == 27 and len(big.topology().bonds) == 0


def test_json_with_inconsistent_beads_names_the_file_and_bead(tmp_path, ala2_frames):
    import json

    data = heavy_atom(ala2_frames[0]).to_dict()
    data["beads"][3]["weights"] = data["beads"][3]["weights"][:-1]
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    with pytest.raises(MappingError, match="mapping file .*edited.json: bead 3 lists 2 atoms"):
        CGMapping.from_json(path)
