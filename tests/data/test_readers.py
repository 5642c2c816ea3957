"""Dataset readers against the raw files in the shared data folder, parsed independently here
(np.load, line splitting, ASE's own parsers), with units checked against ase.units."""

from __future__ import annotations

import re

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db import connect
from conftest import shared_file

from ase_mlmd.data import ENERGY_UNITS, infer_format, read_datasets, read_frames
from ase_mlmd.errors import DataFormatError, MissingLabelsError

KCAL = units.kcal / units.mol  # eV per kcal/mol
WATER_SETS = ["data_0/set.000", "data_1/set.000", "data_1/set.001", "data_2/set.000"]
WATER_SETS += ["data_3/set.000"]


def _water_raw(name: str) -> np.ndarray:
    return np.concatenate(
        [np.load(shared_file(f"water_dft/{s}/{name}.npy")) for s in WATER_SETS], axis=0
    )


def _parse_plain_xyz(text: str) -> list[tuple[list[str], float, np.ndarray]]:
    """(symbols, energy, (n, 6) positions+forces) per frame, by plain line splitting."""
    lines, frames, pos = text.splitlines(), [], 0
    while pos < len(lines):
        n = int(lines[pos])
        rows = [line.split() for line in lines[pos + 2 : pos + 2 + n]]
        values = np.array([[float(v) for v in row[1:]] for row in rows])
        frames.append(([row[0] for row in rows], float(lines[pos + 1]), values))
        pos += n + 2
    return frames


def test_energy_units_against_ase():
    assert ENERGY_UNITS["kcal/mol"] == pytest.approx(0.0433641, rel=1e-5)
    assert ENERGY_UNITS["Hartree"] == units.Hartree
    assert ENERGY_UNITS["kJ/mol"] == pytest.approx(units.kJ / units.mol)
    assert ENERGY_UNITS["Ry"] == pytest.approx(units.Hartree / 2)
    assert ENERGY_UNITS["meV"] == 1e-3


def test_water_deepmd_matches_the_npy_files():
    root = shared_file("water_dft")
    frames = read_frames(root)
    assert infer_format(root) == "deepmd"
    assert len(frames) == 400
    energies, forces = _water_raw("energy"), _water_raw("force")
    coords, boxes = _water_raw("coord"), _water_raw("box")
    np.testing.assert_allclose([a.get_potential_energy() for a in frames], energies, rtol=0)
    types = np.loadtxt(root / "data_0/type.raw", dtype=int)
    names = (root / "data_0/type_map.raw").read_text().split()
    for k in (0, 85, 170, 399):  # one frame from each kind of set, incl. data_1/set.001
        atoms = frames[k]
        assert atoms.get_chemical_symbols() == [names[t] for t in types]
        np.testing.assert_allclose(atoms.get_forces(), forces[k].reshape(-1, 3), rtol=1e-7)
        np.testing.assert_allclose(atoms.positions, coords[k].reshape(-1, 3), rtol=1e-7)
        np.testing.assert_allclose(atoms.cell[:], boxes[k].reshape(3, 3), rtol=1e-7)
        assert atoms.pbc.all()
        assert isinstance(atoms.calc, SinglePointCalculator)
    assert frames[170].info["source"].endswith("data_1/set.001#10")
    assert frames[0].get_chemical_formula() == "H128O64"
    one_system = read_frames(root / "data_1", index="-1")
    np.testing.assert_allclose(one_system[0].get_forces(), frames[239].get_forces())


def test_aspirin_extxyz_in_kcal_per_mol():
    path = shared_file("aspirin/aspirin.xyz")
    assert infer_format(path) == "extxyz"
    raw = ase.io.read(path, ":")  # ASE's parser, values as written (kcal/mol)
    frames = read_frames(path, energy_unit="kcal/mol")
    assert len(frames) == len(raw) == 15
    first_energy = float(re.search(r"energy=(\S+)", path.read_text().splitlines()[1]).group(1))
    assert frames[0].get_potential_energy() == pytest.approx(first_energy * KCAL, rel=1e-12)
    for atoms, ref in zip(frames, raw, strict=True):
        e_ref = ref.get_potential_energy() * units.kcal / units.mol
        assert atoms.get_potential_energy() == pytest.approx(e_ref, rel=1e-12)
        np.testing.assert_allclose(atoms.get_forces(), ref.get_forces() * KCAL, rtol=1e-12)
        np.testing.assert_array_equal(atoms.positions, ref.positions)
    # extended XYZ follows ASE's convention (eV) when no unit is given
    as_ev = read_frames(path, index=0)[0]
    assert as_ev.get_potential_energy() == raw[0].get_potential_energy()


def test_ethanol_plain_xyz_against_a_line_split_parse():
    path = shared_file("ethanol/ethanol_snip.xyz")
    assert infer_format(path) == "xyz"
    reference = _parse_plain_xyz(path.read_text())
    frames = read_frames(path, energy_unit="kcal/mol")
    assert len(frames) == len(reference) == 3
    for k, (atoms, (symbols, energy, values)) in enumerate(zip(frames, reference, strict=True)):
        assert atoms.get_chemical_symbols() == symbols
        assert atoms.get_potential_energy() == pytest.approx(energy * KCAL, rel=1e-12)
        np.testing.assert_allclose(atoms.positions, values[:, :3], rtol=1e-12)
        np.testing.assert_allclose(atoms.get_forces(), values[:, 3:] * KCAL, rtol=1e-12)
        assert atoms.info["source"] == f"{path}#{k}"
    db_frames = read_frames(shared_file("ethanol/test_ethanol.db"), energy_unit="kcal/mol")
    assert {a.get_chemical_formula() for a in db_frames} == {frames[0].get_chemical_formula()}
    assert frames[0].get_chemical_formula() == "C2H6O"


def test_ethanol_db_labels_in_row_data_need_a_unit():
    path = shared_file("ethanol/test_ethanol.db")
    with pytest.raises(DataFormatError, match=r"test_ethanol\.db#0.*energy_unit"):
        read_frames(path)
    frames = read_frames(path, energy_unit="kcal/mol")
    assert len(frames) == 20
    with connect(path) as db:
        rows = list(db.select(sort="id"))
    for atoms, row in zip(frames, rows, strict=True):
        assert atoms.get_potential_energy() == pytest.approx(row.data["energy"][0] * KCAL)
        np.testing.assert_allclose(atoms.get_forces(), row.data["forces"] * KCAL, rtol=1e-12)
        np.testing.assert_array_equal(atoms.numbers, row.numbers)


def _labelled(atoms: Atoms, energy: float, seed: int) -> Atoms:
    atoms = atoms.copy()
    forces = np.random.default_rng(seed).normal(size=(len(atoms), 3))
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def test_db_with_calculator_results_is_in_ev(tmp_path, ethanol):
    written = [_labelled(ethanol, -10.0 - k, k) for k in range(3)]
    with connect(tmp_path / "calc.db") as db:
        for atoms in written:
            db.write(atoms)
    frames = read_frames(tmp_path / "calc.db")
    for atoms, ref in zip(frames, written, strict=True):
        assert atoms.get_potential_energy() == ref.get_potential_energy()
        np.testing.assert_array_equal(atoms.get_forces(), ref.get_forces())


def test_db_declared_units_convert_and_conflict(tmp_path, ethanol):
    path = tmp_path / "declared.db"
    with connect(path) as db:
        db.write(ethanol, data={"energy": -100.0, "forces": np.ones((9, 3))})
        db.metadata = {"_property_unit_dict": {"energy": "kcal/mol", "forces": "kcal/mol/Ang"}}
    atoms = read_frames(path)[0]
    assert atoms.get_potential_energy() == pytest.approx(-100.0 * KCAL)
    np.testing.assert_allclose(atoms.get_forces(), KCAL)
    with pytest.raises(DataFormatError, match=r"declared\.db#0.*kcal/mol.*mixed units"):
        read_frames(path, energy_unit="eV")


def test_extxyz_round_trip_and_label_keys(tmp_path, ethanol):
    written = [_labelled(ethanol, -5.0 * k, k) for k in range(4)]
    ase.io.write(tmp_path / "frames.extxyz", written)
    frames = read_frames(tmp_path / "frames.extxyz")
    for atoms, ref in zip(frames, written, strict=True):
        assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy())
        np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), atol=1e-8)  # %.8f
    # labels kept as frame info / per-atom arrays under other names
    plain = ethanol.copy()
    plain.info["E"] = -3.0
    plain.arrays["F"] = np.full((len(plain), 3), 2.0)
    ase.io.write(tmp_path / "keys.xyz", plain, format="extxyz")
    atoms = read_frames(tmp_path / "keys.xyz", energy_unit="Hartree")[0]
    assert atoms.get_potential_energy() == pytest.approx(-3.0 * units.Hartree)
    np.testing.assert_allclose(atoms.get_forces(), 2.0 * units.Hartree)
    assert "E" not in atoms.info and "F" not in atoms.arrays  # no unconverted copies left


def test_length_units_scale_positions_cell_and_forces(tmp_path, ethanol):
    periodic = ethanol.copy()
    periodic.cell = np.diag([10.0, 11.0, 12.0])
    periodic.pbc = True
    atoms = _labelled(periodic, -7.0, 3)
    bohr = atoms.copy()  # the same frame written in Bohr and Hartree/Bohr
    bohr.positions /= units.Bohr
    bohr.cell = atoms.cell[:] / units.Bohr
    e_ha, f_ha = -7.0 / units.Hartree, atoms.get_forces() / units.Hartree * units.Bohr
    bohr.calc = SinglePointCalculator(bohr, energy=e_ha, forces=f_ha)
    ase.io.write(tmp_path / "bohr.extxyz", bohr)
    back = read_frames(tmp_path / "bohr.extxyz", energy_unit="Ha", length_unit="Bohr")[0]
    np.testing.assert_allclose(back.positions, atoms.positions, atol=1e-7)
    np.testing.assert_allclose(back.cell[:], atoms.cell[:], atol=1e-7)
    np.testing.assert_allclose(back.get_forces(), atoms.get_forces(), atol=1e-6)  # 8 decimals
    assert back.get_potential_energy() == pytest.approx(-7.0, rel=1e-12)


@pytest.mark.parametrize("layout", ["MD17", "rMD17"])
def test_md17_npz_round_trip(tmp_path, layout):
    path = shared_file("ethanol/ethanol_snip.xyz")
    reference = _parse_plain_xyz(path.read_text())
    symbols = reference[0][0]
    z = np.array([{"C": 6, "O": 8, "H": 1}[s] for s in symbols])
    R = np.stack([values[:, :3] for _, _, values in reference])
    F = np.stack([values[:, 3:] for _, _, values in reference])
    E = np.array([energy for _, energy, _ in reference])
    npz = tmp_path / f"{layout}.npz"
    if layout == "MD17":
        np.savez(npz, R=R, z=z, E=E[:, None], F=F, name="ethanol", theory="test")
    else:
        np.savez(npz, coords=R, nuclear_charges=z, energies=E, forces=F)
    with pytest.raises(DataFormatError, match=rf"{layout}\.npz.*energy_unit=\"kcal/mol\""):
        read_frames(npz)
    frames = read_frames(npz, energy_unit="kcal/mol")
    assert len(frames) == 3
    for k, atoms in enumerate(frames):
        assert atoms.get_chemical_symbols() == symbols
        assert atoms.get_potential_energy() == pytest.approx(E[k] * KCAL, rel=1e-12)
        np.testing.assert_allclose(atoms.get_forces(), F[k] * KCAL, rtol=1e-12)
        np.testing.assert_allclose(atoms.positions, R[k], rtol=1e-12)
        assert not atoms.pbc.any()
    assert read_frames(npz, energy_unit="kcal/mol", index="1:")[0].info["source"] == f"{npz}#1"


def test_read_datasets_converts_each_file_with_its_unit(tmp_path):
    snip = shared_file("ethanol/ethanol_snip.xyz")
    water = shared_file("water_dft/data_0")
    frames = read_datasets([snip, water], energy_unit=["kcal/mol", None])
    assert len(frames) == 3 + 80
    np.testing.assert_allclose(
        frames[3].get_potential_energy(), np.load(water / "set.000/energy.npy")[0]
    )
    with pytest.raises(DataFormatError, match=r"ethanol_snip\.xyz#0.*energy_unit"):
        read_datasets([water, snip])


# ---- bad input: each error is specific and names the file (and frame) -------------------------


def test_truncated_plain_xyz_names_file_and_frame(tmp_path):
    lines = shared_file("ethanol/ethanol_snip.xyz").read_text().splitlines()
    cut = tmp_path / "cut.xyz"
    cut.write_text("\n".join(lines[:25]) + "\n")  # frame 2 has 3 of its 9 atom lines
    with pytest.raises(DataFormatError, match=r"cut\.xyz#2.*truncated"):
        read_frames(cut, energy_unit="kcal/mol")
    lines[24] = lines[24][:20]  # an atom line cut short (a damaged, not a truncated, file)
    cut.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"cut\.xyz#2 \(line 25\)"):
        read_frames(cut, energy_unit="kcal/mol")


def test_corrupt_plain_xyz_line(tmp_path):
    lines = shared_file("ethanol/ethanol_snip.xyz").read_text().splitlines()
    lines[14] = lines[14].replace("0.", "x.", 1)
    bad = tmp_path / "bad.xyz"
    bad.write_text("\n".join(lines))
    with pytest.raises(DataFormatError, match=r"bad\.xyz#1 \(line 15\).*non-numeric"):
        read_frames(bad, energy_unit="kcal/mol")


def test_truncated_extxyz_names_the_frame(tmp_path):
    text = shared_file("aspirin/aspirin.xyz").read_text().splitlines()
    cut = tmp_path / "cut.extxyz"
    cut.write_text("\n".join(text[: 23 * 3 + 10]) + "\n")  # 3 whole frames of 21 atoms, then 8
    with pytest.raises(DataFormatError, match=r"cut\.extxyz#3"):
        read_frames(cut, energy_unit="kcal/mol")


def test_frames_without_forces(tmp_path, ethanol):
    path = tmp_path / "noforces.xyz"
    symbols = ethanol.get_chemical_symbols()
    rows = [f"{s} {x} {y} {z}" for s, (x, y, z) in zip(symbols, ethanol.positions, strict=True)]
    path.write_text(f"{len(ethanol)}\n-12.5\n" + "\n".join(rows) + "\n")
    with pytest.raises(MissingLabelsError, match=r"noforces\.xyz#0 has no forces"):
        read_frames(path, energy_unit="eV")
    atoms = read_frames(path, energy_unit="eV", require=("energy",))[0]
    assert atoms.get_potential_energy() == -12.5
    np.testing.assert_allclose(atoms.positions, ethanol.positions)


def test_npz_with_mismatched_lengths(tmp_path):
    npz = tmp_path / "mismatch.npz"
    np.savez(npz, R=np.zeros((4, 3, 3)), z=[8, 1, 1], E=np.zeros((3, 1)), F=np.zeros((4, 3, 3)))
    with pytest.raises(DataFormatError, match=r"mismatch\.npz.*'E'.*4 frames"):
        read_frames(npz, energy_unit="kcal/mol")
    truncated = tmp_path / "truncated.npz"
    np.savez(truncated, R=np.zeros((4, 3, 3)), z=[8, 1, 1])
    truncated.write_bytes(truncated.read_bytes()[:150])
    with pytest.raises(DataFormatError, match=r"truncated\.npz"):
        read_frames(truncated, energy_unit="kcal/mol")


def _write_water_system(dest, drop=(), n_frames=4, force_frames=None):
    """A copy of the first frames of water_dft/data_0, with files dropped or cut."""
    src = shared_file("water_dft/data_0")
    (dest / "set.000").mkdir(parents=True)
    for name in ("type.raw", "type_map.raw"):
        (dest / name).write_text((src / name).read_text())
    for name in ("coord", "box", "energy", "force"):
        if name not in drop:
            rows = force_frames if name == "force" and force_frames else n_frames
            np.save(dest / "set.000" / f"{name}.npy", np.load(src / f"set.000/{name}.npy")[:rows])
    return dest


def test_deepmd_missing_force_file(tmp_path):
    system = _write_water_system(tmp_path / "sys", drop=("force",))
    with pytest.raises(MissingLabelsError, match=r"sys/set\.000#0 has no forces.*force\.npy"):
        read_frames(system)
    frames = read_frames(system, require=("energy",))
    assert len(frames) == 4 and "forces" not in frames[0].calc.results


def test_deepmd_coord_force_count_mismatch(tmp_path):
    system = _write_water_system(tmp_path / "sys", force_frames=3)
    with pytest.raises(DataFormatError, match=r"sys/set\.000/force\.npy.*\(4, 576\)"):
        read_frames(system)


def test_deepmd_missing_type_map(tmp_path):
    system = _write_water_system(tmp_path / "sys")
    (system / "type_map.raw").unlink()
    with pytest.raises(DataFormatError, match=r"type_map\.raw is missing"):
        read_frames(system)


def test_unknown_format_and_unit(tmp_path):
    odd = tmp_path / "frames.dat"
    odd.write_text("1\n")
    with pytest.raises(DataFormatError, match=r"frames\.dat.*format="):
        read_frames(odd)
    with pytest.raises(DataFormatError, match=r"unknown dataset format 'pdb'.*frames\.dat"):
        read_frames(odd, format="pdb")
    with pytest.raises(DataFormatError, match=r"unknown energy unit 'kcal'"):
        read_frames(shared_file("ethanol/ethanol_snip.xyz"), energy_unit="kcal")
    with pytest.raises(FileNotFoundError, match=r"nothere\.xyz"):
        read_frames(tmp_path / "nothere.xyz")


def test_missing_energy_unit_for_plain_xyz():
    with pytest.raises(DataFormatError, match=r"ethanol_snip\.xyz#0.*pass energy_unit="):
        read_frames(shared_file("ethanol/ethanol_snip.xyz"))


def test_mixed_units_in_extxyz(tmp_path, ethanol):
    frames = [_labelled(ethanol, -1.0, k) for k in range(3)]
    for atoms in frames:
        atoms.info["energy_unit"] = "kcal/mol"
    ase.io.write(tmp_path / "declared.extxyz", frames)
    read = read_frames(tmp_path / "declared.extxyz")
    assert read[0].get_potential_energy() == pytest.approx(-KCAL)
    with pytest.raises(DataFormatError, match=r"declared\.extxyz#0 declares.*kcal/mol.*'eV'"):
        read_frames(tmp_path / "declared.extxyz", energy_unit="eV")
    frames[2].info["energy_unit"] = "eV"
    ase.io.write(tmp_path / "mixed.extxyz", frames)
    with pytest.raises(DataFormatError, match=r"mixed\.extxyz mixes energy units.*#2: eV"):
        read_frames(tmp_path / "mixed.extxyz")
