"""The peptide reference (ase_mlmd.data.openmm_peptide): chignolin built with PeptideBuilder +
pdbfixer has the composition RDKit gives for the zwitterion with charged Asp and Glu, net
charge −2 in the amber14 system, a topology whose bonds are the geometric bond graph, and a
short GBn2 run writes labelled frames and the topology PDB."""

from __future__ import annotations

import numpy as np
import pytest
from ase.io import read
from rdkit import Chem
from rdkit.Chem.rdMolDescriptors import CalcMolFormula

from ase_mlmd.cg.frames import bond_graph
from ase_mlmd.data.openmm_peptide import (
    CHIGNOLIN,
    build_peptide,
    build_peptide_system,
    peptide_reference_trajectory,
)
from ase_mlmd.errors import InvalidStructureError


def test_chignolin_composition_charge_and_bonds():
    topology, positions = build_peptide(CHIGNOLIN)
    numbers = [a.element.atomic_number for a in topology.atoms()]
    neutral = Chem.AddHs(Chem.MolFromSequence(CHIGNOLIN))
    counts = {}
    for atom in neutral.GetAtoms():
        counts[atom.GetAtomicNum()] = counts.get(atom.GetAtomicNum(), 0) + 1
    counts[1] -= 2  # Asp and Glu deprotonated; NH3+ / COO- termini cancel
    assert {z: numbers.count(z) for z in set(numbers)} == counts
    assert CalcMolFormula(neutral).startswith("C")
    import openmm

    system = build_peptide_system(topology, constraints=None)
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    charge = sum(nonbonded.getParticleParameters(i)[0]._value for i in range(len(numbers)))
    assert charge == pytest.approx(-2.0, abs=1e-4)
    assert positions.shape == (len(numbers), 3)


def test_short_run_writes_frames_and_topology(tmp_path):
    out, pdb = tmp_path / "chig.extxyz", tmp_path / "chig.pdb"
    frames = peptide_reference_trajectory(
        CHIGNOLIN, steps=40, every=20, output=out, topology_pdb=pdb, progress=False
    )
    assert len(frames) == 3 and pdb.is_file()
    back = read(out, ":")
    assert len(back) == 3 and len(back[0]) == 138
    assert back[-1].info["time_fs"] == 80.0 and back[-1].info["sequence"] == CHIGNOLIN
    assert np.isfinite(back[-1].get_forces()).all()
    # the minimized structure's geometric bond graph is the force field's topology
    from openmm import app

    topology = app.PDBFile(str(pdb)).topology
    bonds = {tuple(sorted((b[0].index, b[1].index))) for b in topology.bonds()}
    assert bonds == {tuple(b) for b in bond_graph(back[0]).tolist()}


def test_unknown_letters_are_refused():
    with pytest.raises(InvalidStructureError, match="unknown letters"):
        build_peptide("GYDPXTG")
    with pytest.raises(InvalidStructureError, match="one-letter"):
        build_peptide("")
