"""PULCHRA as a card (``ase-mlmd backmap pulchra``): the card holds no weights, loads through
``load_backmapper`` and gives, on the committed chignolin Cα test frames, the coordinates of the
Python ``PulchraBackmapper``; options are kept (no Cα optimisation leaves Cα on the beads);
``--hydrogens amber14`` completes the molecule with its own hydrogens at force-field bond
lengths; bad input is refused with messages in CLI terms."""

from __future__ import annotations

import random
import tomllib
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from ase_mlmd.backmap.card import load_backmapper
from ase_mlmd.backmap.pulchra import PulchraBackmapper, protein_topology
from ase_mlmd.cg.mapping import CGMapping
from ase_mlmd.cli.main import main
from ase_mlmd.errors import BackmapError, CardError

CHIG = Path(__file__).resolve().parents[2] / "benchmarks" / "backmap_runs" / "chignolin"
PDB, MAP, CG = CHIG / "chignolin.pdb", CHIG / "map_ca.json", CHIG / "cg_test_ca.extxyz"


@pytest.fixture(scope="module")
def cg():
    return read(CG, ":2")  # two Cα frames of the 4b test block (340 K GBn2 MD)


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    out = tmp_path_factory.mktemp("pulchra_card") / "chig-pulchra"
    main(["backmap", "pulchra", "--topology", str(PDB), "--mapping", str(MAP), "-o", str(out)])
    return out / "card.toml"


def _xyz(structures):
    return np.stack([a.positions for a in structures])


def test_card_round_trip_gives_the_python_backmapper(card, cg, tmp_path, capsys):
    table = tomllib.loads(card.read_text())
    assert table["backend"] == "pulchra" and "weights" not in table  # nothing to verify/trust
    assert table["parameters"]["hydrogens"] == "none"
    loaded = load_backmapper(card)
    direct = PulchraBackmapper.from_pdb(PDB, CGMapping.from_json(MAP))
    assert loaded.sequence == direct.sequence == "GYDPETGTWG"
    ours, theirs = loaded.reconstruct(cg), direct.reconstruct(cg)
    assert np.array_equal(_xyz(ours), _xyz(theirs))
    assert np.array_equal(ours[0].arrays["reference_index"], direct.heavy)
    out = tmp_path / "aa.extxyz"
    main(["backmap", "run", str(card), str(CG), "--index", ":2", "--reconstruct", "-o", str(out)])
    assert "heavy atoms only (77 of 138 atoms" in capsys.readouterr().out
    back = read(out, ":")
    assert np.allclose(_xyz(back), _xyz(theirs), atol=1e-6)
    assert np.array_equal(back[1].arrays["reference_index"], direct.heavy)


def test_options_are_kept_no_ca_optimize_leaves_ca_on_the_beads(cg, tmp_path):
    out = tmp_path / "fixed"
    main(["backmap", "pulchra", "--topology", str(PDB), "--no-ca-optimize", "-o", str(out)])
    loaded = load_backmapper(out / "card.toml")
    assert loaded.options == {"ca_optimize": False}
    _, names, _, _ = protein_topology(PDB)
    ca = np.array(names)[loaded.heavy] == "CA"
    fixed = _xyz(loaded.reconstruct(cg))[:, ca]
    assert np.allclose(fixed, _xyz(cg), atol=1e-3)  # PULCHRA prints 3 decimals
    moved = _xyz(PulchraBackmapper.from_pdb(PDB).reconstruct(cg))[:, ca]
    shift = np.linalg.norm(moved - _xyz(cg), axis=-1)
    assert 0.0 < shift.max() <= 0.5 + 1e-3  # default: Cα moved, by at most ca_max_shift


def test_hydrogens_amber14_complete_the_molecule(cg, tmp_path, capsys):
    out = tmp_path / "withh"
    main(["backmap", "pulchra", "--topology", str(PDB), "--hydrogens", "amber14", "-o", str(out)])
    assert "hydrogens: amber14" in capsys.readouterr().out
    loaded = load_backmapper(out / "card.toml")
    state = random.getstate()
    full = loaded.reconstruct(cg[:1])[0]
    assert random.getstate() == state  # OpenMM's random start is seeded and restored
    reference, *_ = protein_topology(PDB)
    mapping = loaded.topology
    assert len(full) == mapping.n_atoms == 138
    assert np.array_equal(full.numbers, reference.numbers) and "reference_index" not in full.arrays
    heavy_only = PulchraBackmapper.from_pdb(PDB).reconstruct(cg[:1])[0]
    assert np.array_equal(full.positions[loaded.heavy], heavy_only.positions)  # heavy atoms fixed
    x, ref = full.positions, reference.positions
    h_bonds = np.array([b for b in mapping.bonds if (mapping.numbers[b] == 1).sum() == 1])
    d = np.linalg.norm(x[h_bonds[:, 0]] - x[h_bonds[:, 1]], axis=1)
    d_ref = np.linalg.norm(ref[h_bonds[:, 0]] - ref[h_bonds[:, 1]], axis=1)
    assert np.abs(d - d_ref).max() < 0.05  # amber14 X-H lengths (the PDB: minimized, amber14)
    hydrogens = np.flatnonzero(mapping.numbers == 1)
    heavy = np.flatnonzero(mapping.numbers > 1)
    nearest = heavy[np.argmin(np.linalg.norm(x[hydrogens, None] - x[None, heavy], axis=-1), 1)]
    parent = {int(h): int(p) for b in h_bonds for h, p in (b, b[::-1]) if mapping.numbers[h] == 1}
    assert [parent[int(h)] for h in hydrogens] == nearest.tolist()  # each H on its own atom
    again = loaded.sample(cg[:1], 2, seed=5)[0]
    assert np.array_equal(again[1].positions, full.positions)


def test_bad_input_is_refused(card, cg, tmp_path, capsys):
    from conftest import cli_fails, shared_file

    from ase_mlmd.cg.builders import girvan_newman

    atoms, *_ = protein_topology(PDB)
    girvan_newman(atoms, 10).to_json(tmp_path / "gn.json")
    err = cli_fails(["backmap", "pulchra", "--topology", str(PDB), "--mapping",
                     str(tmp_path / "gn.json"), "-o", str(tmp_path / "a")], capsys)  # fmt: skip
    assert "BackmapError" in err and "one bead per residue on its CA atom" in err
    assert "--scheme ca" in err
    ala2 = shared_file("ala2/ala2.pdb")
    err = cli_fails(["backmap", "pulchra", "--topology", str(ala2), "-o", str(tmp_path / "b")],
                    capsys)  # fmt: skip
    assert "residue ACE1 has no CA atom" in err
    (tmp_path / "junk.pdb").write_text("not a pdb\n")
    err = cli_fails(["backmap", "pulchra", "--topology", str(tmp_path / "junk.pdb"), "-o",
                     str(tmp_path / "c")], capsys)  # fmt: skip
    assert "DataFormatError" in err
    err = cli_fails(["backmap", "pulchra", "--topology", str(PDB), "--hydrogens", "all", "-o",
                     str(tmp_path / "d")], capsys)  # fmt: skip
    assert "invalid choice: 'all'" in err
    err = cli_fails(["backmap", "run", str(card), str(CG), "--samples", "0", "-o",
                     str(tmp_path / "e.extxyz")], capsys)  # fmt: skip
    assert "--samples" in err
    loaded = load_backmapper(card)
    with pytest.raises(BackmapError, match="has 9 beads"):
        loaded.reconstruct(cg[0][:9])
    with pytest.raises(BackmapError, match="unknown PULCHRA option"):
        PulchraBackmapper.from_pdb(PDB, ca_optimise=False)
    broken = tmp_path / "broken.toml"
    text = card.read_text()
    broken.write_text(text.replace('hydrogens = "none"', 'hydrogens = "all"'))
    with pytest.raises(CardError, match="hydrogens must be one of"):
        load_backmapper(broken)
    broken.write_text(text.replace("atom_names = [", "names = ["))
    with pytest.raises(CardError, match="atom_names"):
        load_backmapper(broken)
