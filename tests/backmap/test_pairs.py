"""BackmapPairs and the shared CG-frame check: bead positions, assignment, bad input."""

from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from ase_mlmd.backmap.base import check_cg_frames, check_n_samples
from ase_mlmd.backmap.pairs import BackmapPairs, assignment_of
from ase_mlmd.cg.builders import girvan_newman, heavy_atom
from ase_mlmd.errors import BackmapError, InvalidStructureError, MappingError

DATA = Path(__file__).parents[2] / "benchmarks" / "cg_data" / "ala2_aa_200.extxyz"


@pytest.fixture(scope="module")
def frames():
    return read(DATA, ":20")


def test_cg_is_the_centre_of_geometry(frames):
    mapping = heavy_atom(frames[0])  # centre of mass: the geometric option must override it
    pairs = BackmapPairs.from_frames(frames, mapping, centre="geometry")
    for bead, members in enumerate(mapping.members):
        np.testing.assert_allclose(pairs.cg[:, bead], frames_mean(frames, members), atol=1e-12)
    mass = BackmapPairs.from_frames(frames, mapping)  # default keeps the mapping's weights
    cg = mapping.apply_positions(frames)
    np.testing.assert_allclose(mass.cg, np.stack([c.positions for c in cg]), atol=1e-12)


def frames_mean(frames, members):
    return np.stack([f.positions[members].mean(axis=0) for f in frames])


def test_unmapped_atoms_go_to_the_nearest_bead_along_bonds(frames):
    atoms = frames[0].copy()
    from ase_mlmd.cg.frames import bond_graph

    bonds = bond_graph(atoms)
    heavy = np.flatnonzero(atoms.numbers > 1)
    from ase_mlmd.cg.builders import from_groups

    mapping = from_groups(atoms, [[int(heavy[0])], [int(heavy[-1])]], "geometry",
                          allow_unmapped=True)  # fmt: skip
    owner = assignment_of(mapping)
    import networkx as nx

    graph = nx.Graph([tuple(b) for b in bonds.tolist()])
    for atom in range(len(atoms)):
        d = [nx.shortest_path_length(graph, atom, int(h)) for h in (heavy[0], heavy[-1])]
        if d[0] != d[1]:
            assert owner[atom] == int(np.argmin(d))


def test_bad_input(frames):
    mapping = girvan_newman(frames[0], 4)
    with pytest.raises(MappingError, match="atom 0"):  # data of another atom order
        swapped = [f[[1, 0] + list(range(2, len(f)))] for f in frames[:2]]
        BackmapPairs.from_frames(swapped, mapping)
    cg = mapping.apply_positions(frames[:3])
    with pytest.raises(BackmapError, match="3 beads but .* has 4"):
        check_cg_frames(cg[0][:3], mapping)
    types = mapping.bead_types
    other = next(b for b in range(1, 4) if types[b] != types[0])  # two beads of other types
    order = [other] + [b for b in range(4) if b != other]
    with pytest.raises(BackmapError, match="another order"):
        check_cg_frames(cg[1][order], mapping)
    nan = cg[2].copy()
    nan.positions[1, 0] = np.nan
    with pytest.raises(InvalidStructureError, match="bead 1"):
        check_cg_frames([cg[0], nan], mapping)
    with pytest.raises(BackmapError, match="CG frames for"):
        BackmapPairs.from_frames(frames[:3], mapping, cg_frames=cg[:2])
    for bad in (0, -3, 1.5):
        with pytest.raises(BackmapError, match="--samples"):
            check_n_samples(bad)
