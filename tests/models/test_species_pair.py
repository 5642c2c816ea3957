"""Species-pair potentials (one φ per pair of elements) against a numpy reference, the
conformance checks of ``ase_mlmd.testing``, card round trips and bad input.

Reference: a binary Lennard-Jones mixture (σ_AA 0.9, σ_AB 1.0, σ_BB 1.1, ε = 1, shifted at
2.5 Å) summed in numpy over ASE's ``neighbor_list`` with σ looked up per pair of elements.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list
from conftest import assert_matches, make_ar_cluster, make_ar_crystal, results

from ase_mlmd import MLCalculator, load_calculator
from ase_mlmd.diffsim.report import export_card
from ase_mlmd.errors import UnsupportedSpeciesError
from ase_mlmd.models.neural_pair import NeuralPair
from ase_mlmd.models.pair import LennardJones
from ase_mlmd.models.species_pair import SpeciesPairPotential, parse_pair
from ase_mlmd.testing import check_calculator

SIGMA = {"Ar-Ar": 0.9, "Ar-Kr": 1.0, "Kr-Kr": 1.1}
RC = 2.5
SCALE = 1.1 / 3.72  # argon geometry scaled to reduced units (neighbours near 1.1 Å)


def mixed(atoms: Atoms, seed: int = 0) -> Atoms:
    """Scaled copy with about half the atoms turned into Kr."""
    atoms = atoms.copy()
    if atoms.pbc.any():
        atoms.set_cell(atoms.cell * SCALE, scale_atoms=True)
    else:
        atoms.positions *= SCALE
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[np.random.default_rng(seed).permutation(len(atoms))[: len(atoms) // 2]] = "Kr"
    atoms.set_chemical_symbols(symbols.tolist())
    return atoms


CRYSTAL = mixed(make_ar_crystal(repeat=2, rattle=0.1))
CLUSTER = mixed(make_ar_cluster(rattle=0.1))


def lj_mixture(**kw) -> SpeciesPairPotential:
    return SpeciesPairPotential(
        {pair: LennardJones(1.0, s, cutoff=RC, **kw) for pair, s in SIGMA.items()}
    )


def reference(atoms: Atoms) -> dict:
    """Energy, forces and stress of the shifted LJ mixture, in numpy."""
    i, j, d, vec = neighbor_list("ijdD", atoms, RC)
    z = atoms.numbers
    sigma = np.array(
        [SIGMA["-".join(map(str, _labels(a, b)))] for a, b in zip(z[i], z[j], strict=True)]
    )

    def phi(r):
        return 4 * ((sigma / r) ** 12 - (sigma / r) ** 6)

    e = phi(d) - phi(np.full_like(d, RC))
    de = 4 * (-12 * sigma**12 / d**13 + 6 * sigma**6 / d**7)
    pair_forces = (de / d)[:, None] * vec
    forces = np.stack(
        [np.bincount(i, weights=pair_forces[:, k], minlength=len(atoms)) for k in range(3)], 1
    )
    out = {"energy": 0.5 * e.sum(), "forces": forces}
    if atoms.pbc.all():
        out["stress"] = (0.5 * vec.T @ pair_forces / atoms.get_volume()).flat[[0, 4, 8, 5, 2, 1]]
    return out


def _labels(a: int, b: int) -> tuple[str, str]:
    from ase.data import chemical_symbols

    return tuple(chemical_symbols[z] for z in parse_pair((int(a), int(b))))


@pytest.mark.parametrize("atoms", [CRYSTAL, CLUSTER], ids=["crystal", "cluster"])
def test_lj_mixture_equals_numpy_reference(atoms):
    assert {"Ar", "Kr"} <= set(atoms.get_chemical_symbols())
    assert_matches(results(MLCalculator(lj_mixture()), atoms), reference(atoms), 1e-12)


def test_each_pair_uses_its_own_potential():
    """A dimer's energy is φ of its own species pair, whatever the order of the atoms."""
    model = lj_mixture()
    for symbols, sigma in (("ArAr", 0.9), ("ArKr", 1.0), ("KrAr", 1.0), ("KrKr", 1.1)):
        atoms = Atoms(symbols, positions=[[0, 0, 0], [0, 0, 1.3]])
        atoms.calc = MLCalculator(model)
        expected = 4 * ((sigma / 1.3) ** 12 - (sigma / 1.3) ** 6)
        expected -= 4 * ((sigma / RC) ** 12 - (sigma / RC) ** 6)
        assert atoms.get_potential_energy() == pytest.approx(expected, rel=1e-12)


def test_neural_mixture_passes_the_calculator_checks():
    model = SpeciesPairPotential(
        {pair: NeuralPair(cutoff=RC, hidden=16, layers=2, seed=k) for k, pair in enumerate(SIGMA)}
    )
    # reduced units (ε = 1 eV): a short step, as for the single neural pair
    report = check_calculator(
        MLCalculator(model), CLUSTER, CRYSTAL, timestep_fs=0.05, temperature_K=3000.0
    )
    assert {"forces_periodic", "stress_periodic", "nve_drift_molecule"} <= set(report)


@pytest.mark.parametrize("kind", ["analytic", "neural"])
def test_card_round_trip(tmp_path, kind):
    if kind == "analytic":
        model = lj_mixture(cutoff_mode="smooth")
    else:
        model = SpeciesPairPotential(
            {p: NeuralPair(cutoff=RC, hidden=8, layers=1, seed=k) for k, p in enumerate(SIGMA)}
        )
    card = export_card(model, tmp_path, name=f"mix-{kind}")
    assert (tmp_path / "weights.safetensors").exists() == (kind == "neural")
    loaded = load_calculator(card)
    assert_matches(results(loaded, CRYSTAL), results(MLCalculator(model), CRYSTAL), 1e-13)
    with pytest.raises(UnsupportedSpeciesError, match="Xe"):
        results(loaded, Atoms("ArXe", positions=[[0, 0, 0], [0, 0, 1.2]]))


def test_bad_definitions_are_refused():
    with pytest.raises(ValueError, match="Ar-Kr"):
        SpeciesPairPotential({"Ar-Ar": LennardJones(), "Kr-Kr": LennardJones()})
    with pytest.raises(ValueError, match="twice"):
        SpeciesPairPotential({"Ar-Kr": LennardJones(), "Kr-Ar": LennardJones()})
    with pytest.raises(ValueError, match="element symbol"):
        SpeciesPairPotential({"Ar-Qq": LennardJones()})
    with pytest.raises(TypeError, match="PairPotential"):
        SpeciesPairPotential({"Ar-Ar": object()})
