"""PULCHRA backmapper on a peptide built by the package (chignolin, extended chain): the
backbone follows the Cα trace, atoms come back in the reference order with their elements,
the heavy-atom bond graph is (nearly) the reference's, Cα frames of another mapping, NaN and
sample counts are refused."""

from __future__ import annotations

import numpy as np
import pytest

from ase_mlmd.backmap.metrics import graph_edit, rmsd
from ase_mlmd.backmap.pulchra import PulchraBackmapper, protein_topology
from ase_mlmd.cg.builders import girvan_newman
from ase_mlmd.data.openmm_peptide import build_peptide, write_topology_pdb
from ase_mlmd.errors import BackmapError, InvalidStructureError


@pytest.fixture(scope="module")
def peptide(tmp_path_factory):
    topology, positions = build_peptide("GYDPETGTWG")
    pdb = tmp_path_factory.mktemp("pulchra") / "chignolin.pdb"
    write_topology_pdb(topology, positions, pdb)
    return pdb


@pytest.fixture(scope="module")
def backmapper(peptide):
    return PulchraBackmapper.from_pdb(peptide)


def test_heavy_atoms_in_reference_order_backbone_on_the_trace(peptide, backmapper):
    atoms, names, _, residue = protein_topology(peptide)
    assert backmapper.sequence == "GYDPETGTWG"
    assert backmapper.topology.n_beads == 10
    cg = backmapper.topology.apply_positions(atoms)
    out = backmapper.reconstruct(cg)[0]
    heavy = np.flatnonzero(atoms.numbers > 1)
    assert np.array_equal(out.arrays["reference_index"], heavy)
    assert np.array_equal(out.numbers, atoms.numbers[heavy])  # elements match by name
    names = np.array(names)[heavy]
    inner = (np.array(residue)[heavy] > 0) & (np.array(residue)[heavy] < 9)
    for name in ("N", "CA", "C"):  # backbone of inner residues: placed from the trace
        pick = (names == name) & inner
        d = np.linalg.norm(out.positions[pick] - atoms.positions[heavy][pick], axis=1)
        assert d.max() < 1.0, name
    valid, absolute, _ = graph_edit(atoms.positions[None, heavy], out.positions[None], out.numbers)
    assert absolute[0, 0] < 0.05  # side chains rebuilt with the right covalent bonds
    backbone = np.isin(names, ["N", "CA", "C", "O"]) & inner
    assert rmsd(atoms.positions[None, heavy[backbone]], out.positions[None, backbone])[0, 0] < 0.7


def test_deterministic_samples_and_bad_input(peptide, backmapper):
    atoms, *_ = protein_topology(peptide)
    cg = backmapper.topology.apply_positions(atoms)
    samples = backmapper.sample([cg], 2, seed=3)
    assert np.array_equal(samples[0][0].positions, samples[0][1].positions)
    assert samples[0][1].info == {"cg_frame": 0, "sample": 1}
    with pytest.raises(BackmapError, match="--samples"):
        backmapper.sample([cg], 0)
    bad = cg.copy()
    bad.positions[4] = np.nan
    with pytest.raises(InvalidStructureError, match="non-finite"):
        backmapper.reconstruct(bad)
    with pytest.raises(BackmapError, match="has 9 beads"):
        backmapper.reconstruct(cg[:9])
    with pytest.raises(BackmapError, match="one bead per residue on its CA"):
        PulchraBackmapper.from_pdb(peptide, mapping=girvan_newman(atoms, 10))
