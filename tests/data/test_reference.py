"""Reference calculators by name: the right method behind each name, checked against the
libraries called directly, analytic results and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from tblite.ase import TBLite

from ase_mlmd import load_calculator
from ase_mlmd.data.reference import (
    REFERENCES,
    XTB_ACCURACY,
    check_species,
    reference_calculator,
)
from ase_mlmd.errors import UnknownCalculatorError, UnsupportedSpeciesError


def _energy_forces(calc, atoms: Atoms) -> tuple[float, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces()


@pytest.mark.parametrize(("name", "method"), [("gfn2-xtb", "GFN2-xTB"), ("GFN1-xTB", "GFN1-xTB")])
def test_xtb_names_give_that_method(name, method):
    atoms = molecule("CH3CH2OH")
    energy, forces = _energy_forces(reference_calculator(name), atoms)
    direct_e, direct_f = _energy_forces(
        TBLite(method=method, accuracy=XTB_ACCURACY, verbosity=0), atoms
    )
    assert energy == pytest.approx(direct_e, abs=1e-9)
    np.testing.assert_allclose(forces, direct_f, atol=1e-9)
    other = "GFN1-xTB" if method == "GFN2-xTB" else "GFN2-xTB"
    assert abs(energy - _energy_forces(TBLite(method=other, verbosity=0), atoms)[0]) > 1.0


def test_xtb_charge_and_multiplicity_reach_tblite():
    atoms = molecule("CH3CH2OH")
    cation = reference_calculator("gfn2-xtb", charge=1, multiplicity=2)
    energy, _ = _energy_forces(cation, atoms)
    direct, _ = _energy_forces(
        TBLite(charge=1, multiplicity=2, accuracy=XTB_ACCURACY, verbosity=0), atoms
    )
    neutral, _ = _energy_forces(reference_calculator("gfn2-xtb"), atoms)
    assert energy == pytest.approx(direct, abs=1e-9)
    assert energy - neutral > 5.0  # ionization costs ~10 eV
    assert cation.reference_name == "gfn2-xtb(charge=1, multiplicity=2)"


def test_xtb_forces_are_the_energy_gradient():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, rng=np.random.default_rng(3))
    calc = reference_calculator("gfn2-xtb")
    _, forces = _energy_forces(calc, atoms)
    h = 1e-4
    for atom, axis in [(0, 0), (2, 1), (8, 2)]:
        shifted = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * h
            shifted.append(_energy_forces(calc, moved)[0])
        numeric = -(shifted[0] - shifted[1]) / (2 * h)
        assert forces[atom, axis] == pytest.approx(numeric, abs=2e-4)


def test_xtb_labels_do_not_depend_on_the_previous_call():
    """tblite restarts the SCF from the last density; the references converge tightly enough
    that the same positions give the same forces after any history (tblite's default accuracy
    leaves ~3e-4 eV/Å)."""
    atoms = molecule("CH3CH2OH")
    calc = reference_calculator("gfn2-xtb")
    rng = np.random.default_rng(5)
    for _ in range(3):  # walk away and back
        moved = atoms.copy()
        moved.rattle(0.05, rng=rng)
        _energy_forces(calc, moved)
    energy, forces = _energy_forces(calc, atoms)
    fresh_e, fresh_f = _energy_forces(reference_calculator("gfn2-xtb"), atoms)
    assert energy == pytest.approx(fresh_e, abs=1e-8)
    np.testing.assert_allclose(forces, fresh_f, atol=2e-5)


def test_emt_is_ases_emt():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.rattle(0.02, rng=np.random.default_rng(0))
    energy, forces = _energy_forces(reference_calculator("emt"), atoms)
    direct_e, direct_f = _energy_forces(EMT(), atoms)
    assert energy == pytest.approx(direct_e, abs=1e-12)
    np.testing.assert_allclose(forces, direct_f, atol=1e-12)


def test_lj_matches_the_analytic_shifted_pair_energy():
    sigma, epsilon, rc, r = 3.4, 0.0104, 8.5, 3.9
    dimer = Atoms("Ar2", positions=[[0, 0, 0], [0, 0, r]])
    energy, forces = _energy_forces(
        reference_calculator("lj", sigma=sigma, epsilon=epsilon, rc=rc), dimer
    )

    def pair(d):
        return 4 * epsilon * ((sigma / d) ** 12 - (sigma / d) ** 6)

    assert energy == pytest.approx(pair(r) - pair(rc), rel=1e-12)
    dudr = 4 * epsilon * (-12 * sigma**12 / r**13 + 6 * sigma**6 / r**7)
    np.testing.assert_allclose(forces[1], [0, 0, -dudr], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(forces[0], -forces[1], atol=1e-15)


def test_other_names_are_model_cards():
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True)
    atoms.rattle(0.05, rng=np.random.default_rng(1))
    energy, forces = _energy_forces(reference_calculator("lj-argon"), atoms)
    direct_e, direct_f = _energy_forces(load_calculator("lj-argon"), atoms)
    assert energy == pytest.approx(direct_e, rel=1e-12)
    np.testing.assert_allclose(forces, direct_f, atol=1e-12)


def test_unknown_reference_lists_the_choices():
    with pytest.raises(UnknownCalculatorError) as info:
        reference_calculator("dft-please")
    message = str(info.value)
    for name in REFERENCES:
        assert name in message
    assert "lj-argon" in message  # the cards too


def test_unknown_option_is_refused():
    with pytest.raises(TypeError, match="sigmaa"):
        reference_calculator("lj", sigmaa=3.4)
    with pytest.raises(TypeError, match="prmtop"):
        reference_calculator("amber-implicit")


@pytest.mark.parametrize(
    ("name", "symbols", "bad"),
    [("emt", "FeCu", "Fe"), ("emt", "Ar2", "Ar"), ("gfn2-xtb", "FrH", "Fr")],
)
def test_species_the_reference_cannot_handle(name, symbols, bad):
    atoms = Atoms(symbols, positions=[[0, 0, 0], [0, 0, 2.5]])
    with pytest.raises(UnsupportedSpeciesError, match=bad):
        check_species(reference_calculator(name), atoms)


def test_supported_species_pass():
    check_species(reference_calculator("emt"), bulk("Pt"))
    check_species(reference_calculator("gfn2-xtb"), Atoms("RnH", positions=[[0, 0, 0], [0, 0, 2]]))
    check_species(reference_calculator("lj"), Atoms("FeU", positions=[[0, 0, 0], [0, 0, 2]]))
