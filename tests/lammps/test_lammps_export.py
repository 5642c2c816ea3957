"""LAMMPS through an exported model equals MLCalculator: energy, forces, virial (1 rank)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from lammps_models import (
    lammps_results,
    tiny_nequip,
    tiny_schnet,
    tiny_species_pair,
    water_box,
)

from ase_mlmd.calculators.ml_calculator import MLCalculator
from ase_mlmd.calculators.registry import find_card, model_from_card
from ase_mlmd.errors import LammpsExportError, LammpsInputError, UntrustedModelError
from ase_mlmd.lammps import export_mliap, load_exported, prepare_mliap
from ase_mlmd.lammps.model import VIRIAL_ORDER
from ase_mlmd.lammps.run import ModelRunner, run_input

MODELS = {"species-pair": tiny_species_pair, "nequip": tiny_nequip, "schnet": tiny_schnet}


def reference(model, atoms):
    """Energy, forces and virial (6,) LAMMPS order, eV, from MLCalculator."""
    atoms = atoms.copy()
    atoms.calc = MLCalculator(model)
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    virial = None
    if atoms.pbc.all():
        stress = atoms.get_stress(voigt=False)
        virial = np.array([-stress[a, b] * atoms.get_volume() for a, b in VIRIAL_ORDER])
    return energy, forces, virial


@pytest.mark.parametrize("kind", list(MODELS))
def test_periodic_box_matches_calculator(kind, tmp_path):
    model = MODELS[kind]()
    exported = prepare_mliap(model, dtype="float64")
    assert exported.n_layers == (1 if kind == "species-pair" else 2)
    atoms = water_box()
    ref_energy, ref_forces, ref_virial = reference(model, atoms)
    assert np.abs(ref_forces).max() > 1e-3  # a test of something
    for whole_box in (True, False):  # periodic cell on one rank / ghost atoms as on many ranks
        energy, forces, virial = lammps_results(exported, atoms, tmp_path, whole_box)
        assert energy == pytest.approx(ref_energy, abs=1e-8)
        np.testing.assert_allclose(forces, ref_forces, atol=1e-8)
        np.testing.assert_allclose(virial, ref_virial, atol=1e-8)


def test_card_molecule_in_box_matches_calculator(tmp_path):
    card = find_card("ethanol-nequip")  # a shipped float32 card, exported in float64
    exported = export_mliap(card, tmp_path / "ethanol.pt", dtype="float64")
    assert exported.element_types == ["H", "C", "O"] and exported.n_layers == 2
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=3)
    energy, forces, _ = lammps_results(exported, atoms, tmp_path)
    ref_energy, ref_forces, _ = reference(model_from_card(card).double(), atoms)
    assert energy == pytest.approx(ref_energy, abs=1e-8)
    np.testing.assert_allclose(forces, ref_forces, atol=1e-8)


def test_lennard_jones_card_needs_species_and_matches(tmp_path):
    with pytest.raises(LammpsExportError, match="species="):
        prepare_mliap("lj-argon")
    exported = prepare_mliap("lj-argon", species=["Ar"])
    from ase.build import bulk

    atoms = bulk("Ar", "fcc", 5.26, cubic=True)
    atoms.rattle(0.1, seed=2)
    energy, forces, virial = lammps_results(exported, atoms, tmp_path)
    ref = reference(model_from_card(find_card("lj-argon")), atoms)
    assert energy == pytest.approx(ref[0], abs=1e-8)
    np.testing.assert_allclose(forces, ref[1], atol=1e-8)
    np.testing.assert_allclose(virial, ref[2], atol=1e-8)


def test_float32_export_matches_to_float32_precision(tmp_path):
    model = tiny_species_pair()
    exported = prepare_mliap(model, dtype="float32")
    assert exported.dtype == __import__("torch").float32
    assert model.dtype == __import__("torch").float64  # the caller's model is left alone
    atoms = water_box(seed=2)
    energy, forces, _ = lammps_results(exported, atoms, tmp_path)
    ref_energy, ref_forces, _ = reference(model, atoms)  # the float64 original
    assert energy == pytest.approx(ref_energy, abs=1e-5)
    np.testing.assert_allclose(forces, ref_forces, atol=1e-5)
    assert np.abs(forces - ref_forces).max() > 0.0  # float32 really ran


def test_saved_file_loads_only_with_trust(tmp_path):
    path = tmp_path / "pair.pt"
    export_mliap(tiny_species_pair(), path)
    with pytest.raises(UntrustedModelError, match="trust"):
        load_exported(path)
    loaded = load_exported(path, trust=True)
    assert loaded.element_types == ["H", "O"]


def test_model_fixed_in_float32_cannot_export_float64():
    model = tiny_nequip().to(dtype=__import__("torch").float32)
    model.hyperparameters = None  # e.g. a packaged model: its precision is fixed
    with pytest.raises(LammpsExportError, match="float64"):
        prepare_mliap(model, dtype="float64")


def _input(tmp_path, model, pair_coeff: str, units: str = "metal") -> object:
    atoms = water_box()
    from ase_mlmd.lammps.inputs import write_example

    path, _ = write_example(atoms, model, "model.pt", tmp_path, "bad", temperature=0, steps=0)
    text = path.read_text()
    assert "pair_coeff * * H O\n" in text  # types in the model's order
    text = text.replace("pair_coeff * * H O", pair_coeff)
    path.write_text(text.replace("units metal", f"units {units}"))
    return path


@pytest.mark.parametrize(
    ("pair_coeff", "message"),
    [
        ("pair_coeff * * O C", r"\['C'\].*no parameters"),  # the model lacks C
        ("pair_coeff * * O", "2 atom types.*names 1 elements"),  # the data file has 2 types
    ],
)
def test_species_mismatch_is_refused(tmp_path, pair_coeff, message):
    model = prepare_mliap(tiny_species_pair())
    with pytest.raises(LammpsInputError, match=message):
        run_input(
            _input(tmp_path, model, pair_coeff),
            model=model,
            cmdargs=["-log", "none", "-screen", "none"],
        )


def test_units_other_than_metal_are_refused(tmp_path):
    model = prepare_mliap(tiny_species_pair())
    path = _input(tmp_path, model, "pair_coeff * * H O", units="real")
    with pytest.raises(LammpsInputError, match="units metal"):
        run_input(path, model=model, cmdargs=["-log", "none", "-screen", "none"])


class _Grid:
    """A stand-in LAMMPS instance that reports a 2x1x1 rank grid over a box."""

    def __init__(self, length: float) -> None:
        self.length = length

    def extract_global(self, name):
        return {"procgrid": [2, 1, 1], "boxlo": [0.0] * 3, "boxhi": [self.length] * 3}[name]

    def command(self, command):
        self.last = command


def test_subdomain_smaller_than_cutoff_is_refused():
    model = prepare_mliap(tiny_species_pair())
    runner = ModelRunner(_Grid(4.0), model=model)  # 2 ranks along x: 2 Å < 2.6 Å cutoff
    with pytest.raises(LammpsInputError, match="subdomain is 2 Å wide along x"):
        runner.prepare_run()
    wide = _Grid(6.0)
    ModelRunner(wide, model=model).prepare_run()
    assert wide.last == f"comm_modify cutoff {2.6 + 2.0:.10g}"  # 1 layer: cutoff + skin
