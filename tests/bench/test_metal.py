"""The materials benchmark on EMT copper, checked against independent references: energy
curvatures for the elastic constants, ASE's own phonon module, a direct vacancy relaxation,
(C11 + 2 C12)/3 for the EOS bulk modulus; the report with EMT as its own "model"."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.optimize import BFGS

from ase_mlmd.bench.metal import MetalBenchConfig, metal_benchmark
from ase_mlmd.bench.metal_crystal import (
    cubic_elastic_constants,
    relax_lattice,
    vacancy_formation_energy,
)
from ase_mlmd.bench.metal_liquid import LiquidConfig
from ase_mlmd.bench.metal_phonons import fcc_phonons
from ase_mlmd.data.sampling import labelled_copy
from ase_mlmd.errors import DataFormatError, PhononSupercellError

TINY_LIQUID = LiquidConfig(
    repeat=2, melt_ps=0.04, equilibration_ps=0.02, production_ps=0.2, melt_temperature=3000.0
)


@pytest.fixture(scope="module")
def relaxed_cu():
    """EMT copper at its EOS minimum (conventional cell) and the EOS."""
    return relax_lattice(bulk("Cu", "fcc", a=3.6, cubic=True), EMT())


def reference_frames(n: int = 12):
    """Rattled 32-atom Cu crystals labelled by EMT (named like sampled frames)."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        frames.append(labelled_copy(atoms, EMT(), {"reference": "emt", "config_type": "crys"}))
    return frames


@pytest.fixture(scope="module")
def emt_bench(tmp_path_factory):
    """The benchmark with EMT as the model (the reference is EMT too): every model property
    must equal the reference's."""
    out = tmp_path_factory.mktemp("metal_report")
    model = EMT()
    model.model_name = "emt-model"
    config = MetalBenchConfig(liquid=TINY_LIQUID, vacancy_min_atoms=30, progress=False)
    report, results = metal_benchmark([model], reference_frames(), out, config, log=lambda m: None)
    return out, report, results


def energy_curvature(crystal, strain_of, amplitude: float = 0.006, points: int = 7) -> float:
    """d²(E/V)/dx² at x = 0 of E(x) under the deformation strain_of(x), GPa (quadratic fit)."""
    xs = np.linspace(-amplitude, amplitude, points)
    energies = []
    for x in xs:
        atoms = crystal.copy()
        atoms.set_cell(crystal.cell.array @ (np.eye(3) + strain_of(x)), scale_atoms=True)
        atoms.calc = EMT()
        energies.append(atoms.get_potential_energy())
    quartic = np.polyfit(xs, np.array(energies) / crystal.get_volume(), 4)
    return 2 * quartic[2] / units.GPa


def test_elastic_constants_equal_energy_curvatures(relaxed_cu):
    crystal, _ = relaxed_cu
    c = cubic_elastic_constants(crystal, EMT())

    def uniaxial(x):
        return np.diag([x, 0.0, 0.0])

    def biaxial(x):
        return np.diag([x, x, 0.0])

    def shear(x):
        return np.array([[0, 0, 0], [0, 0, x / 2], [0, x / 2, 0]])

    # E/V = C11 εxx²/2; (C11 + C12) ε² for εxx = εyy = ε; C44 γ²/2 for the engineering shear γ
    assert c["C11"] == pytest.approx(energy_curvature(crystal, uniaxial), rel=5e-3)
    assert c["C11"] + c["C12"] == pytest.approx(energy_curvature(crystal, biaxial) / 2, rel=5e-3)
    assert c["C44"] == pytest.approx(energy_curvature(crystal, shear), rel=5e-3)
    # the ±0.5 % and ±1 % central differences agree with each other (harmonic regime)
    by = c["by_strain"]
    assert by["0.005"]["C44"] == pytest.approx(by["0.01"]["C44"], rel=5e-3)


def test_eos_bulk_modulus_equals_elastic_one(relaxed_cu):
    crystal, eos = relaxed_cu
    assert eos.bulk_modulus > 0
    c = cubic_elastic_constants(crystal, EMT())
    assert eos.bulk_modulus == pytest.approx((c["C11"] + 2 * c["C12"]) / 3, rel=0.01)
    # the relaxed cell is at the minimum: its pressure vanishes
    atoms = crystal.copy()
    atoms.calc = EMT()
    assert np.abs(atoms.get_stress()[:3]).max() / units.GPa < 0.1
    assert eos.a0 == pytest.approx(crystal.cell.lengths()[0], rel=1e-6)


def test_vacancy_energy_equals_direct_ase_relaxation(relaxed_cu):
    crystal, _ = relaxed_cu
    ours = vacancy_formation_energy(crystal, EMT(), min_atoms=100)
    assert ours["n_atoms"] == 108
    perfect = bulk("Cu", "fcc", a=crystal.cell.lengths()[0], cubic=True).repeat((3, 3, 3))
    perfect.calc = EMT()
    e_bulk = perfect.get_potential_energy()
    vac = perfect.copy()
    del vac[13]  # any atom: all are equivalent
    vac.calc = EMT()
    BFGS(vac, logfile=None).run(fmax=0.001)
    direct = vac.get_potential_energy() - 107 / 108 * e_bulk
    assert ours["E_vac_eV"] == pytest.approx(direct, abs=2e-3)
    assert 0 < ours["E_vac_eV"] < ours["E_vac_unrelaxed_eV"]


def test_phonons_agree_with_ase_phonons(emt_bench, tmp_path, monkeypatch):
    from ase.phonons import Phonons

    ref = emt_bench[2]["emt"]["phonons"]
    freqs = np.array(ref["frequencies_THz"])
    assert ref["supercell_repeat"] == 3 and ref["supercell_width_A"] >= 10.0
    assert np.abs(freqs[0, :3]).max() < 1e-3  # acoustic modes at Γ
    assert ref["labels"] == ["Γ", "X", "U|K", "Γ", "L", "W", "X"]
    # ASE's finite-displacement phonons of the primitive cell (6x6x6 supercell) at X and L
    monkeypatch.chdir(tmp_path)
    a0 = emt_bench[2]["emt"]["eos"]["a0_A"]
    ph = Phonons(bulk("Cu", "fcc", a=a0), EMT(), supercell=(6, 6, 6), delta=0.01, name="ph")
    ph.run()
    ph.read(acoustic=True)
    energies = ph.band_structure([[0.5, 0.0, 0.5], [0.5, 0.5, 0.5]])  # X, L; eV
    thz = np.sort(energies, axis=1) / (units._hplanck / units._e) / 1e12
    n = len(freqs) // 6  # q points per straight piece: Γ-X, X-U, K-Γ, Γ-L, L-W, W-X
    np.testing.assert_allclose(freqs[n - 1], thz[0], rtol=5e-3)  # X
    np.testing.assert_allclose(freqs[4 * n - 1], thz[1], rtol=5e-3)  # L


def test_phonon_supercell_smaller_than_cutoff_is_refused(relaxed_cu):
    crystal, _ = relaxed_cu
    with pytest.raises(PhononSupercellError, match="--phonon-supercell 3"):
        fcc_phonons(crystal, EMT(), repeat=2)
    with pytest.raises(PhononSupercellError, match="twice the calculator's cutoff"):
        fcc_phonons(crystal, EMT(), repeat=1, cutoff=4.5)


def test_report_with_emt_as_model(emt_bench):
    from pymatgen.core import Structure

    out, report, results = emt_bench
    ref, model = results["emt"], results["emt-model"]
    for key in ("C11", "C12", "C44"):
        assert model["elastic"][key] == pytest.approx(ref["elastic"][key], rel=1e-9)
    assert model["phonon_mae_THz"] == pytest.approx(0.0, abs=1e-9)
    assert model["rdf_mae"] == pytest.approx(0.0, abs=1e-9)
    assert model["test"]["force_mae_meV_per_A"] < 1e-6
    assert model["eos"]["bulk_modulus_GPa"] == pytest.approx(ref["elastic"]["B_elastic"], rel=0.01)
    text = report.read_text()
    assert "| emt (reference) |" in text and "| emt-model |" in text
    for name in ("eos.png", "phonon_bands.png", "phonon_dos.png", "rdf.png", "metrics.json"):
        assert (out / name).stat().st_size > 0
    # pymatgen out: the relaxed crystal's lattice constant is the EOS one
    cif = Structure.from_file(str(out / model["relaxed_cif"]))
    assert cif.lattice.a == pytest.approx(model["eos"]["a0_A"], rel=1e-5)
    assert ref["liquid"]["final_msd_A2"] > 0


def test_rerun_reuses_cached_results(emt_bench):
    out, _, results = emt_bench

    class Exploding(EMT):
        def calculate(self, *args, **kwargs):
            raise AssertionError("a cached result was recomputed")

    model = Exploding()
    model.model_name = "emt-model"
    config = MetalBenchConfig(liquid=TINY_LIQUID, vacancy_min_atoms=30, progress=False)
    frames = reference_frames()
    _, again = metal_benchmark(
        [model], frames, out, config, reference_calc=_named_emt(), log=lambda m: None
    )
    assert again["emt-model"]["elastic"] == results["emt-model"]["elastic"]


def _named_emt():
    from ase_mlmd.data.reference import reference_calculator

    return reference_calculator("emt")


def test_bad_reference_frames_are_refused(tmp_path):
    frames = reference_frames(2)
    mixed = frames[0].copy()
    mixed.symbols[0] = "Ni"
    with pytest.raises(DataFormatError, match="one fcc element"):
        metal_benchmark([EMT()], [frames[1], mixed], tmp_path)
    unnamed = [f.copy() for f in frames]
    for f in unnamed:
        f.info.pop("reference")
    with pytest.raises(DataFormatError, match="name their reference"):
        metal_benchmark([EMT()], unnamed, tmp_path)


def test_cli_phonon_supercell_too_small(tmp_path, monkeypatch, capsys):
    from ase.io import write

    from ase_mlmd.cli.main import main

    monkeypatch.chdir(tmp_path)
    write("ref.extxyz", reference_frames(3))
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "bench", "--system", "metal", "--models", "lj-argon", "--reference",
                "ref.extxyz", "--phonon-supercell", "2", "-o", "rep",
            ]
        )  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--phonon-supercell 3" in err and "Traceback" not in err


def test_cli_model_without_the_element(tmp_path, monkeypatch, capsys):
    from ase.io import write

    from ase_mlmd.cli.main import main

    monkeypatch.chdir(tmp_path)
    write("ref.extxyz", reference_frames(3))
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "bench", "--system", "metal", "--models", "ethanol-nequip", "--reference",
                "ref.extxyz", "-o", "rep",
            ]
        )  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "not trained on Cu" in err and "Traceback" not in err
