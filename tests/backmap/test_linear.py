"""The linear backmapper: least-squares optimality, exactness when every atom is a bead,
rotation/translation equivariance, deterministic samples, cards (round trip, sha256, loaded
through the shared loader), bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.io import read
from scipy.spatial.transform import Rotation

from ase_mlmd.backmap.card import load_backmapper
from ase_mlmd.backmap.linear import LinearBackmapper
from ase_mlmd.backmap.metrics import rmsd, select_atoms
from ase_mlmd.backmap.pairs import BackmapPairs
from ase_mlmd.cg.builders import girvan_newman
from ase_mlmd.errors import BackmapError, ChecksumMismatchError, InvalidStructureError

DATA = Path(__file__).parents[2] / "benchmarks" / "cg_data" / "ala2_aa_200.extxyz"


@pytest.fixture(scope="module")
def frames():
    return read(DATA, ":100")


@pytest.fixture(scope="module")
def pairs6(frames):
    return BackmapPairs.from_frames(frames, girvan_newman(frames[0], 6), centre="geometry")


def test_fit_is_the_least_squares_optimum(pairs6):
    model = LinearBackmapper.fit(pairs6)
    centre = pairs6.cg.mean(axis=1, keepdims=True)
    y, z = pairs6.aa - centre, pairs6.cg - centre
    residual = np.einsum("ab,fbx->fax", model.decoder, z) - y
    gradient = np.einsum("fax,fbx->ab", residual, z)  # d loss / d D (over 2)
    assert np.abs(gradient).max() < 1e-8 * np.abs(np.einsum("fax,fbx->ab", y, z)).max()
    loss = (residual**2).sum()
    bumped = model.decoder + 1e-3 * np.random.default_rng(0).normal(size=model.decoder.shape)
    assert ((np.einsum("ab,fbx->fax", bumped, z) - y) ** 2).sum() > loss


def test_every_atom_a_bead_reconstructs_exactly(frames):
    mapping = girvan_newman(frames[0], len(frames[0]))
    pairs = BackmapPairs.from_frames(frames[:20], mapping, centre="geometry")
    model = LinearBackmapper.fit(pairs)
    cg = [pairs.cg_atoms(k) for k in range(len(pairs))]
    out = np.array([a.positions for a in model.reconstruct(cg)])
    assert np.abs(out - pairs.aa).max() < 1e-9


def test_equivariant_and_better_than_the_bead_centres_on_held_out_frames(frames, pairs6):
    model = LinearBackmapper.fit(pairs6.subset(range(80)))
    test = pairs6.subset(range(80, 100))
    cg = [test.cg_atoms(k) for k in range(len(test))]
    out = np.array([a.positions for a in model.reconstruct(cg)])
    rot = Rotation.from_euler("zyx", [1.0, 0.4, -2.2]).as_matrix()
    shift = np.array([3.0, -1.0, 8.0])
    moved = [test.cg_atoms(k) for k in range(len(test))]
    for atoms in moved:
        atoms.positions = atoms.positions @ rot.T + shift
    out_moved = np.array([a.positions for a in model.reconstruct(moved)])
    assert np.abs(out_moved - (out @ rot.T + shift)).max() < 1e-9
    heavy = select_atoms(frames[0].numbers, heavy=True)
    error = rmsd(test.aa, out, heavy).mean()
    owner = test.assignment  # each atom placed on its bead: the trivial baseline
    trivial = rmsd(test.aa, test.cg[:, owner], heavy).mean()
    assert error < 0.6 * trivial and error < 0.6  # CGVAE's table: linear 0.384 Å at N = 6


def test_samples_are_identical_copies_with_frame_and_sample_info(pairs6):
    model = LinearBackmapper.fit(pairs6)
    cg = [pairs6.cg_atoms(k) for k in range(3)]
    samples = model.sample(cg, 4, seed=7)
    assert [len(s) for s in samples] == [4, 4, 4]
    for k, per_frame in enumerate(samples):
        for s, atoms in enumerate(per_frame):
            assert atoms.info == {"cg_frame": k, "sample": s}
            assert np.array_equal(atoms.positions, per_frame[0].positions)
            assert np.array_equal(atoms.numbers, pairs6.numbers)
    with pytest.raises(BackmapError, match="--samples"):
        model.sample(cg, 0)


def test_card_round_trip_through_the_shared_loader(tmp_path, pairs6):
    model = LinearBackmapper.fit(pairs6)
    card = model.save(tmp_path / "lin", "ala2-linear-6")
    loaded = load_backmapper(card)
    assert isinstance(loaded, LinearBackmapper)
    assert np.array_equal(loaded.decoder, model.decoder)
    assert loaded.topology.bead_types == model.topology.bead_types
    cg = pairs6.cg_atoms(0)
    assert np.array_equal(loaded.reconstruct(cg)[0].positions, model.reconstruct(cg)[0].positions)
    weights = tmp_path / "lin" / "ala2-linear-6.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        load_backmapper(card)


def test_cg_frames_of_another_mapping_or_with_nan_are_refused(frames, pairs6):
    model = LinearBackmapper.fit(pairs6)
    other = BackmapPairs.from_frames(frames[:2], girvan_newman(frames[0], 5), centre="geometry")
    with pytest.raises(BackmapError, match="has 5 beads but the backmapper's mapping has 6"):
        model.reconstruct(other.cg_atoms(0))
    bad = pairs6.cg_atoms(0)
    bad.positions[2, 0] = np.nan
    with pytest.raises(InvalidStructureError, match="non-finite"):
        model.reconstruct(bad)
    with pytest.raises(BackmapError, match="no training pairs"):
        LinearBackmapper.fit(pairs6.subset([]))


def test_cli_fits_on_the_training_block_and_the_card_runs(tmp_path, frames, capsys):
    from ase.io import write

    from ase_mlmd.cli.main import main

    mapping = girvan_newman(frames[0], 6)
    mapping.to_json(tmp_path / "map.json")
    write(tmp_path / "aa.extxyz", frames[:50])
    out = tmp_path / "lin"
    main(["backmap", "linear", "--data", str(tmp_path / "aa.extxyz"), "--mapping",
          str(tmp_path / "map.json"), "--split", "time:0.8,0.1,0.1", "-o", str(out)])  # fmt: skip
    loaded = load_backmapper(out / "card.toml")
    expected = LinearBackmapper.fit(BackmapPairs.from_frames(frames[:40], mapping))
    assert np.allclose(loaded.decoder, expected.decoder)
    printed = capsys.readouterr().out
    assert "test RMSD (5 frames)" in printed
    cg = mapping.apply_positions(frames[45:50])
    x = np.array([a.positions for a in expected.reconstruct(cg)])
    heavy = select_atoms(frames[0].numbers, heavy=True)
    ref = np.array([a.positions for a in frames[45:50]])
    assert f"heavy atoms {rmsd(ref, x, heavy).mean():.3f} Å" in printed


def test_cli_refuses_a_mapping_of_another_molecule(tmp_path, frames, capsys):
    from ase.build import molecule
    from ase.io import write
    from conftest import cli_fails

    girvan_newman(molecule("CH3CH2OH"), 3).to_json(tmp_path / "ethanol.json")
    write(tmp_path / "aa.extxyz", frames[:10])
    args = ["--data", str(tmp_path / "aa.extxyz"), "--mapping", str(tmp_path / "ethanol.json")]
    err = cli_fails(["backmap", "linear", *args, "-o", str(tmp_path / "x")], capsys)
    assert "MappingError" in err and "has 22 atoms but the mapping was built for 9" in err
