"""``ase-mlmd backmap eval`` and the report: pairing by info['cg_frame'] or blocks, the table
agrees with the metric functions, several runs give the per-resolution plot, PULCHRA-style
heavy-atom subsets; bad input (other molecule, other atom order, empty files, unequal samples,
NaN) fails cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write
from conftest import cli_fails

from ase_mlmd.backmap.linear import LinearBackmapper
from ase_mlmd.backmap.metrics import rmsd
from ase_mlmd.backmap.pairs import BackmapPairs
from ase_mlmd.backmap.report import pair_frames
from ase_mlmd.cg.builders import girvan_newman
from ase_mlmd.cli.main import main
from ase_mlmd.errors import DataFormatError, IncompatibleTrajectoriesError

DATA = Path(__file__).parents[2] / "benchmarks" / "cg_data" / "ala2_aa_200.extxyz"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval")
    frames = read(DATA, ":60")
    train, test = frames[:50], frames[50:]
    write(folder / "test.extxyz", test)
    paths = {}
    for n in (3, 6):
        mapping = girvan_newman(frames[0], n)
        model = LinearBackmapper.fit(BackmapPairs.from_frames(train, mapping))
        cg = mapping.apply_positions(test)
        samples = [a for per in model.sample(cg, 2) for a in per]
        paths[n] = folder / f"lin{n}.extxyz"
        write(paths[n], samples[::-1])  # order must not matter: info cg_frame pairs them
    return folder, test, paths


def test_eval_cli_writes_a_report_whose_numbers_are_the_metrics(setup, capsys):
    folder, test, paths = setup
    out = folder / "report"
    main(["backmap", "eval", "--reference", str(folder / "test.extxyz"), "--generated",
          str(paths[3]), str(paths[6]), "--labels", "N3", "N6", "--resolutions", "3", "6",
          "-o", str(out)])  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"N3", "N6"}
    gen = read(paths[6], ":")
    by_frame = sorted(gen, key=lambda a: (a.info["cg_frame"], a.info["sample"]))
    x = np.array([a.positions for a in by_frame]).reshape(10, 2, 22, 3)
    ref = np.array([a.positions for a in test])
    heavy = np.flatnonzero(test[0].numbers > 1)
    assert metrics["N6"]["rmsd_heavy"] == pytest.approx(rmsd(ref, x, heavy).mean())
    assert metrics["N6"]["rmsd_heavy"] < metrics["N3"]["rmsd_heavy"]  # finer map, better
    for name in ("report.md", "resolution.png", "overlay_N3.png", "overlay_N6.png"):
        assert (out / name).stat().st_size > 0
    assert "| N6 | 10 × 2 | 22 |" in (out / "report.md").read_text()


def test_blocks_without_cg_frame_and_heavy_atom_subsets(setup):
    _, test, _ = setup
    plain = [a.copy() for a in test for _ in range(3)]
    for a in plain:
        a.info.clear()
    paired = pair_frames(test, plain)
    assert paired.generated.shape == (10, 3, 22, 3)
    assert np.array_equal(paired.generated[4, 2], test[4].positions)
    heavy = np.flatnonzero(test[0].numbers > 1)
    subset = []
    for a in test:
        b = a[heavy]
        b.arrays["reference_index"] = heavy
        subset.append(b)
    paired = pair_frames(test, subset)
    assert paired.reference.shape == (10, len(heavy), 3) and len(paired.bonds) == len(heavy) - 1


def eval_fails(capsys, tmp_path, reference, generated, *extra):
    args = ["backmap", "eval", "--reference", str(reference), "--generated", str(generated)]
    return cli_fails([*args, *extra, "-o", str(tmp_path / "r")], capsys)


def test_bad_input(setup, capsys, tmp_path):
    folder, test, paths = setup
    ref = folder / "test.extxyz"
    # another molecule
    write(tmp_path / "water.extxyz", [read(DATA, "0")[[0, 1, 2]]])
    err = eval_fails(capsys, tmp_path, ref, tmp_path / "water.extxyz")
    assert "IncompatibleTrajectoriesError" in err and "different molecules" in err
    # same atoms, another order
    swapped = [a[[1, 0] + list(range(2, 22))] for a in test]
    with pytest.raises(IncompatibleTrajectoriesError, match="atom 0 of generated frame 0 is C"):
        pair_frames(test, swapped)
    # empty files
    (tmp_path / "empty.extxyz").write_text("")
    err = eval_fails(capsys, tmp_path, ref, tmp_path / "empty.extxyz")
    assert "has no frames" in err
    err = eval_fails(capsys, tmp_path, tmp_path / "empty.extxyz", paths[3])
    assert "--reference" in err and "has no frames" in err
    # a reference selection that does not contain the backmapped frames
    err = eval_fails(capsys, tmp_path, ref, paths[3], "--index", ":4")
    assert "refer to CG frame 9" in err
    with pytest.raises(DataFormatError, match="same number"):
        pair_frames(test, read(paths[3], ":")[1:])
    # NaN coordinates
    nan = read(paths[3], ":")
    nan[3].positions[5] = np.nan
    write(tmp_path / "nan.extxyz", nan)
    err = eval_fails(capsys, tmp_path, ref, tmp_path / "nan.extxyz")
    assert "InvalidStructureError" in err and "NaN" in err
    err = eval_fails(capsys, tmp_path, ref, paths[3], "--labels", "a", "b")
    assert "--labels gives 2 names for 1 files" in err
