"""``ase-mlmd cg map`` / ``cg autograin`` through their argument parsers (the ``cg`` command
itself is wired into ``ase-mlmd`` by ``ase_mlmd.cli.cg``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule
from ase.io import read, write
from conftest import shared_file

from ase_mlmd.beads import bead_types_of
from ase_mlmd.cg.mapping import CGMapping
from ase_mlmd.cli import cg_map
from ase_mlmd.errors import DataFormatError, MappingError

ALA2_FRAMES = Path(__file__).resolve().parents[2] / "benchmarks" / "cg_data" / "ala2_aa_200.extxyz"


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="ase-mlmd cg")
    cg_map.add_subcommands(parser.add_subparsers(dest="action"))
    args = parser.parse_args(argv)
    args.cg_run(args)


@pytest.fixture(scope="module")
def frames_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "ala2.extxyz"
    write(path, read(ALA2_FRAMES, index=":10"))
    return path


def test_map_girvan_newman_and_apply(tmp_path, frames_file, capsys):
    out, cg = tmp_path / "map.json", tmp_path / "cg.extxyz"
    run(["map", str(frames_file), "--scheme", "girvan-newman", "--beads", "6", "-o", str(out),
         "--apply", str(frames_file), "--output-cg", str(cg)])  # fmt: skip
    mapping = CGMapping.from_json(out)
    assert mapping.n_beads == 6 and mapping.scheme == "girvan-newman"
    beads = read(cg, index=":")
    atoms = read(frames_file, index=":")
    assert len(beads) == 10
    assert np.allclose(beads[4].get_forces(), mapping.apply_forces(atoms[4].get_forces()))
    assert np.allclose(beads[4].positions, mapping.weights @ atoms[4].positions)
    assert bead_types_of(beads[4]) == list(mapping.bead_types)
    assert "10 CG frames (6 beads, positions and summed forces)" in capsys.readouterr().out
    # the written mapping applies again through --mapping
    again = tmp_path / "again.extxyz"
    run(["map", "--mapping", str(out), "--apply", str(frames_file), "--output-cg", str(again)])
    assert np.allclose(read(again, index=3).positions, beads[3].positions)


def test_map_backbone_with_topology(tmp_path, frames_file):
    out = tmp_path / "bb.json"
    pdb = shared_file("ala2/alanine-dipeptide-implicit.pdb")
    run(["map", str(frames_file), "--scheme", "backbone", "--topology", str(pdb), "-o", str(out)])
    assert CGMapping.from_json(out).bead_types == ("C", "N", "CA", "C", "N")
    run(["map", str(frames_file), "--scheme", "ca", "--topology", str(pdb), "-o", str(out)])
    assert CGMapping.from_json(out).bead_names == ("ALA2",)
    water = tmp_path / "water.xyz"
    write(water, molecule("H2O"))
    with pytest.raises(DataFormatError, match="has 22 atoms .* but the structure has 3"):
        run(["map", str(water), "--scheme", "ca", "--topology", str(pdb), "-o", str(out)])


def test_map_water_box_with_molecules_auto(tmp_path):
    from test_mapping import _water_box

    box, centres = _water_box()
    box_file, groups = tmp_path / "box.extxyz", tmp_path / "water.txt"
    write(box_file, box)
    groups.write_text("W 0-2\n")
    out, cg = tmp_path / "water.json", tmp_path / "water_cg.extxyz"
    run(["map", str(box_file), "--scheme", f"com-groups:{groups}", "--molecules", "auto",
         "-o", str(out), "--apply", str(box_file), "--output-cg", str(cg)])  # fmt: skip
    assert CGMapping.from_json(out).n_beads == 1  # one molecule's mapping is written
    beads = read(cg)
    assert len(beads) == 27
    frac = np.linalg.solve(box.cell.array.T, (beads.positions - centres).T)
    assert np.allclose(frac, np.round(frac), atol=1e-6)
    assert (beads.get_scaled_positions(wrap=False) >= 0).all()
    # --no-wrap: the same box moved by a cell vector (not wrapped) maps to beads moved with it
    shifted = box.copy()
    shifted.positions += box.cell[0]
    write(box_file, shifted)
    run(["map", "--mapping", str(out), "--molecules", "27", "--apply", str(box_file),
         "--output-cg", str(cg), "--no-wrap"])  # fmt: skip
    assert np.allclose(read(cg).positions, beads.positions + box.cell[0])
    run(["map", "--mapping", str(out), "--molecules", "27", "--apply", str(box_file),
         "--output-cg", str(cg)])  # fmt: skip
    assert np.allclose(read(cg).positions, beads.positions)


def test_autograin_command(tmp_path, capsys):
    out = tmp_path / "learned.json"
    run(["autograin", str(ALA2_FRAMES), "--index", ":60", "--beads", "4", "--epochs", "5",
         "--no-progress", "-o", str(out)])  # fmt: skip
    mapping = CGMapping.from_json(out)
    assert mapping.n_beads == 4 and mapping.scheme == "learned"
    assert "60 frames, 5 epochs (epochs)" in capsys.readouterr().out


def test_bad_flags(tmp_path, frames_file):
    with pytest.raises(MappingError, match="--apply TRAJ needs --output-cg"):
        run(["map", str(frames_file), "--scheme", "heavy-atom", "--apply", str(frames_file)])
    with pytest.raises(MappingError, match="girvan-newman scheme needs a bead count \\(--beads"):
        run(["map", str(frames_file), "--scheme", "girvan-newman", "-o", str(tmp_path / "m")])
    with pytest.raises(MappingError, match="--molecules takes 'auto' or a count"):
        run(["map", str(frames_file), "--scheme", "heavy-atom", "--molecules", "x", "-o", "m"])
    with pytest.raises(MappingError, match="--beads 40"):
        run(["autograin", str(frames_file), "--beads", "40", "-o", str(tmp_path / "l.json")])
    assert not (tmp_path / "l.json").exists()


def test_through_the_ase_mlmd_command(tmp_path, frames_file, monkeypatch, capsys):
    from ase_mlmd.cli import main as cli_main

    if not any(name == "cg" for name, _ in cli_main.COMMANDS):
        monkeypatch.setattr(cli_main, "COMMANDS", [*cli_main.COMMANDS, ("cg", "ase_mlmd.cli.cg")])
    out = tmp_path / "map.json"
    cli_main.main(["cg", "map", str(frames_file), "--scheme", "heavy-atom", "-o", str(out)])
    assert CGMapping.from_json(out).n_beads == 10
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main(["cg", "map", str(frames_file), "--scheme", "girvan-newman", "--beads", "30",
                       "-o", str(tmp_path / "bad.json")])  # fmt: skip
    assert exit_info.value.code != 0
    assert "MappingError: --beads 30" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.json"]  # no lock or temp left
