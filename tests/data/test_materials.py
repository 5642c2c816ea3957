"""The fcc-metal data set: segments (strains, vacancy, liquid density), EMT labels checked
against ASE, resume, pymatgen structures in, and ``ase-mlmd sample --materials``."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read

from ase_mlmd.data.materials import (
    MetalDatasetConfig,
    fcc_crystal,
    frames_of_type,
    metal_segments,
    sample_metal_dataset,
)
from ase_mlmd.errors import InvalidStructureError

TINY = dict(
    crystal_temperatures=(300.0,),
    iso_strains=(-0.03,),
    shear_samples=1,
    vacancy_temperatures=(300.0,),
    steps=4,
    every=2,
)


def test_segments_have_the_asked_strains_vacancy_and_density():
    config = MetalDatasetConfig(seed=3)
    segments = {name: (atoms, t, dt) for name, atoms, t, dt in metal_segments("Cu", config)}
    crystal = bulk("Cu", "fcc", cubic=True).repeat(2)
    v0 = crystal.get_volume()
    assert len(segments) == 5 + 4 + 6 + 2 + 1
    assert segments["crystal_1200K"][1] == 1200.0
    for s in config.iso_strains:
        atoms = segments[f"iso_{100 * s:+g}%"][0]
        assert atoms.get_volume() == pytest.approx(v0 * (1 + s) ** 3)
        # atoms follow the cell: the crystal is still perfect (no forces)
        atoms.calc = EMT()
        assert np.abs(atoms.get_forces()).max() < 1e-8
    for i in range(6):
        cell = segments[f"shear_{i}"][0].cell.array
        strain = np.linalg.solve(crystal.cell.array, cell) - np.eye(3)
        np.testing.assert_allclose(strain, strain.T, atol=1e-12)  # symmetric, no rotation
        assert np.abs(strain).max() <= config.shear_max
    vacancy, _, _ = segments["vacancy_300K"]
    assert len(vacancy) == len(crystal) - 1
    liquid, temperature, dt = segments["liquid_2000K"]
    assert liquid.get_volume() == pytest.approx(v0 * 1.03**3)
    assert temperature == 2000.0 and dt == config.timestep / 2


def test_pymatgen_structure_in_and_bad_crystals():
    from pymatgen.core import Lattice, Structure

    fcc = Structure(Lattice.cubic(3.52), ["Ni"] * 4, [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5],
                                                     [0.5, 0.5, 0]])  # fmt: skip
    atoms = fcc_crystal(fcc)
    reference = bulk("Ni", "fcc", a=3.52, cubic=True)
    np.testing.assert_allclose(atoms.cell.array, reference.cell.array, atol=1e-10)
    assert sorted(map(tuple, np.round(atoms.get_scaled_positions(), 6))) == sorted(
        map(tuple, np.round(reference.get_scaled_positions(), 6))
    )
    with pytest.raises(InvalidStructureError, match="cubic"):
        fcc_crystal(bulk("Cu", "fcc"))  # the primitive cell is not cubic
    with pytest.raises(InvalidStructureError, match="element symbol"):
        fcc_crystal("Qx")


def test_dataset_labels_equal_emt_and_resume(tmp_path):
    config = MetalDatasetConfig(**TINY)
    out = tmp_path / "cu.extxyz"
    frames = sample_metal_dataset("Cu", "emt", out, config, progress=False)
    assert len(frames) == 5 * (config.steps // config.every + 1)
    assert {f.info["config_type"] for f in frames} == {
        "crystal_300K", "iso_-3%", "shear_0", "vacancy_300K", "liquid_2000K",
    }  # fmt: skip
    read_back = read(out, ":")
    assert [f.info["config_type"] for f in read_back] == [f.info["config_type"] for f in frames]
    for frame in read_back[::3]:
        plain = frame.copy()
        plain.calc = EMT()
        assert frame.get_potential_energy() == pytest.approx(plain.get_potential_energy())
        np.testing.assert_allclose(frame.get_forces(), plain.get_forces(), atol=1e-6)
        np.testing.assert_allclose(frame.get_stress(), plain.get_stress(), atol=1e-8)
    assert len(frames_of_type(read_back, "liquid")) == config.steps // config.every + 1
    assert len(frames_of_type(read_back, "vacancy")[0]) == 31
    # a second run resumes: the finished segments are read back, not recomputed
    parts = sorted((tmp_path / "cu.extxyz.parts").glob("*.extxyz"))
    stamps = [p.stat().st_mtime_ns for p in parts]
    again = sample_metal_dataset("Cu", "emt", out, config, progress=False)
    assert [p.stat().st_mtime_ns for p in parts] == stamps
    np.testing.assert_allclose(again[-1].positions, frames[-1].positions)


def test_cli_sample_materials_from_cif(tmp_path, monkeypatch, capsys):
    from pymatgen.io.ase import AseAtomsAdaptor

    from ase_mlmd.cli.main import main

    monkeypatch.chdir(tmp_path)
    AseAtomsAdaptor.get_structure(bulk("Al", "fcc", cubic=True)).to(filename="al.cif")
    main(
        [
            "sample", "al.cif", "--reference", "emt", "--materials", "--steps", "2",
            "--every", "2", "--no-progress", "-o", "al.extxyz",
        ]
    )  # fmt: skip
    frames = read("al.extxyz", ":")
    assert len(frames) == 18 * 2
    assert set(frames[0].get_chemical_symbols()) == {"Al"}
    assert "frames: al.extxyz" in capsys.readouterr().out


def test_cli_sample_materials_bad_element(tmp_path, monkeypatch, capsys):
    from ase_mlmd.cli.main import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "Qx", "--reference", "emt", "--materials", "-o", "x.extxyz"])
    assert exit_info.value.code == 2
    assert "element symbol such as Cu" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [("not a crystal\n", "cannot read a crystal"), (None, "periodic cubic")],
    ids=["unreadable", "primitive-cell"],
)
def test_cli_sample_materials_bad_crystal_file(tmp_path, monkeypatch, capsys, content, message):
    from pymatgen.io.ase import AseAtomsAdaptor

    from ase_mlmd.cli.main import main

    monkeypatch.chdir(tmp_path)
    if content is None:  # a valid CIF, but of the 1-atom primitive cell
        AseAtomsAdaptor.get_structure(bulk("Cu", "fcc")).to(filename="bad.cif")
    else:
        (tmp_path / "bad.cif").write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "bad.cif", "--reference", "emt", "--materials", "-o", "x.extxyz"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
