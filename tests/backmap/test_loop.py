"""The loop (CG MD → backmap → all-atom FES): backbone φ/ψ found from the bond graph agree
with mdtraj's; a tiny run through ``ase-mlmd cg loop`` (5-bead backbone prior card of the
repository, linear backmapper, a few steps) writes a report whose numbers are recomputed
independently from its backmapped frames; mismatched CG model / backmapper / molecule fail."""

from __future__ import annotations

import json
from pathlib import Path

import mdtraj
import numpy as np
import pytest
from ase.io import read, write
from conftest import cli_fails, shared_file

from ase_mlmd.backmap.linear import LinearBackmapper
from ase_mlmd.backmap.loop import backbone_dihedrals
from ase_mlmd.backmap.pairs import BackmapPairs
from ase_mlmd.cg.builders import backbone, girvan_newman
from ase_mlmd.cg.frames import read_trajectory
from ase_mlmd.cli.main import main
from ase_mlmd.observables.fes import compute_fes
from ase_mlmd.observables.fes_compare import compare_fes

ROOT = Path(__file__).parents[2]
DATA = ROOT / "benchmarks" / "cg_data" / "ala2_aa_200.extxyz"
PRIOR = ROOT / "benchmarks" / "cg_runs" / "ala2" / "prior" / "card.toml"  # 5 backbone beads


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loop")
    frames = read(DATA, ":100")
    pdb = read_trajectory(shared_file("ala2/alanine-dipeptide-implicit.pdb"))[0]
    mapping = backbone(pdb)
    card = LinearBackmapper.fit(BackmapPairs.from_frames(frames, mapping)).save(
        folder / "lin5", "ala2-linear-backbone"
    )
    write(folder / "ref.extxyz", frames)
    return folder, frames, card, mapping


def test_backbone_dihedrals_match_mdtraj(setup):
    _, frames, _, mapping = setup
    phi_q, psi_q = backbone_dihedrals(mapping.numbers, mapping.bonds)
    assert phi_q.shape == psi_q.shape == (1, 4)
    top = mdtraj.load_topology(str(shared_file("ala2/alanine-dipeptide-implicit.pdb")))
    traj = mdtraj.Trajectory(np.array([a.positions for a in frames[:10]]) / 10, top)
    idx_phi, phi = mdtraj.compute_phi(traj)
    idx_psi, psi = mdtraj.compute_psi(traj)
    assert idx_phi.tolist() == phi_q.tolist() and idx_psi.tolist() == psi_q.tolist()
    assert np.isfinite(phi).all() and np.isfinite(psi).all()


def test_tiny_loop_report_matches_an_independent_recomputation(setup, capsys):
    folder, frames, card, mapping = setup
    out = folder / "loop"
    main(["cg", "loop", "--cg-model", str(PRIOR), "--backmapper", str(card), "--reference",
          str(folder / "ref.extxyz"), "--replicas", "2", "--steps", "20", "--save-every", "5",
          "--timestep", "1", "--discard", "0", "--no-progress", "-o", str(out)])  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    backmapped = read(out / "backmapped.extxyz", ":")
    assert summary["n_backmapped"] == len(backmapped) == 2 * 5  # frames 0, 5, ..., 20 per replica
    assert summary["cg_md"]["collapsed"] == 0
    top = mdtraj.load_topology(str(shared_file("ala2/alanine-dipeptide-implicit.pdb")))

    def fes_of(atoms_list):
        traj = mdtraj.Trajectory(np.array([a.positions for a in atoms_list]) / 10, top)
        return compute_fes(mdtraj.compute_phi(traj)[1][:, 0], mdtraj.compute_psi(traj)[1][:, 0],
                           kT=1.0)[2]  # fmt: skip

    expected = compare_fes(fes_of(backmapped), fes_of(frames))
    assert summary["fes_mae_kT"] == pytest.approx(expected.mae_kT, abs=1e-9)
    assert summary["fes_bins_missing"] == expected.n_missing
    assert 0 <= summary["valid_clash_free"] <= summary["valid"] <= 1
    # the backmapper alone: the mapped reference frames reconstructed (linear: deterministic)
    model = LinearBackmapper.fit(BackmapPairs.from_frames(frames, mapping))
    alone = model.reconstruct(mapping.apply_positions(frames))
    expected = compare_fes(fes_of(alone), fes_of(frames))
    assert summary["backmapper_only"]["fes_mae_kT"] == pytest.approx(expected.mae_kT, abs=1e-9)
    for name in ("report.md", "fes.png", "pmf.png"):
        assert (out / name).stat().st_size > 0


def test_mismatched_inputs_fail(setup, capsys, tmp_path):
    folder, frames, card, _ = setup
    six = LinearBackmapper.fit(BackmapPairs.from_frames(frames, girvan_newman(frames[0], 6)))
    six_card = six.save(tmp_path / "six", "six")
    five = LinearBackmapper.fit(BackmapPairs.from_frames(frames, girvan_newman(frames[0], 5)))
    five_card = five.save(tmp_path / "five", "five")
    base = ["cg", "loop", "--cg-model", str(PRIOR), "--reference", str(folder / "ref.extxyz"),
            "--steps", "5", "--replicas", "1", "-o", str(tmp_path / "r")]  # fmt: skip
    err = cli_fails([*base, "--backmapper", str(six_card)], capsys)
    assert "has 5 beads but the backmapper's mapping has 6" in err
    err = cli_fails([*base, "--backmapper", str(five_card)], capsys)
    assert "bead types" in err and "same mapping" in err
    write(tmp_path / "water.extxyz", [frames[0][[0, 1, 2]]])
    base[base.index("--reference") + 1] = str(tmp_path / "water.extxyz")
    err = cli_fails([*base, "--backmapper", str(card)], capsys)
    assert "BackmapError" in err and "not the molecule" in err
    err = cli_fails([*base[:-2], "--backmapper", str(card), "--steps", "0", "-o", "x"], capsys)
    assert "--steps must be ≥ 1" in err
