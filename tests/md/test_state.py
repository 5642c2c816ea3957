"""MDState: the batched state of the torch MD engine.

ASE is the reference for everything a state can be compared with: structures go in and come
back out unchanged, and kinetic energy and temperature are those ``ase.Atoms`` reports.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.md.velocitydistribution import thermalize_momenta
from conftest import make_ar_cluster, make_ar_crystal

from ase_mlmd import load_calculator
from ase_mlmd.errors import InvalidStructureError
from ase_mlmd.md.forcefield import ForceField
from ase_mlmd.md.integrators import langevin, nose_hoover_chain
from ase_mlmd.md.state import MDState


def thermal(atoms: Atoms, temperature: float, seed: int) -> Atoms:
    """A copy of ``atoms`` with Maxwell–Boltzmann momenta at ``temperature`` K."""
    atoms = atoms.copy()
    thermalize_momenta(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    return atoms


def mixed_structures() -> list[Atoms]:
    """Three systems of different sizes: periodic crystal (32), cluster (13), slab (32, with
    custom masses on two atoms)."""
    slab = make_ar_crystal(seed=4)
    slab.pbc = [True, True, False]
    slab.cell[2] = [0.0, 0.0, 25.0]
    masses = slab.get_masses()
    masses[[0, 5]] = [36.0, 40.5]  # other argon isotopes: masses must survive the round trip
    slab.set_masses(masses)
    return [
        thermal(make_ar_crystal(seed=2), 100.0, 0),
        thermal(make_ar_cluster(seed=3), 50.0, 1),
        thermal(slab, 200.0, 2),
    ]


def test_from_atoms_to_atoms_round_trip():
    structures = mixed_structures()
    state = MDState.from_atoms(structures)
    assert state.dtype == torch.float64
    assert state.n_systems == 3
    assert state.n_atoms.tolist() == [32, 13, 32]
    assert state.system_idx.tolist() == [0] * 32 + [1] * 13 + [2] * 32
    assert state.numbers.dtype == torch.int64 and state.system_idx.dtype == torch.int64
    assert state.pbc.dtype == torch.bool
    back = state.to_atoms()
    assert len(back) == 3
    for original, copy in zip(structures, back, strict=True):
        assert copy.calc is None  # no energy or forces yet
        np.testing.assert_array_equal(copy.numbers, original.numbers)
        np.testing.assert_array_equal(copy.positions, original.positions)
        np.testing.assert_array_equal(copy.get_momenta(), original.get_momenta())
        np.testing.assert_array_equal(copy.get_masses(), original.get_masses())
        np.testing.assert_array_equal(copy.cell.array, original.cell.array)
        np.testing.assert_array_equal(copy.pbc, original.pbc)


def test_energy_and_forces_are_attached_after_init():
    structures = mixed_structures()
    calc = load_calculator("lj-argon")
    integrator = langevin(ForceField(calc.model, skin=0.5), 2.0, 100.0)
    state = integrator.init(MDState.from_atoms(structures))
    back = state.to_atoms()
    for original, copy in zip(structures, back, strict=True):
        reference = original.copy()
        reference.calc = calc
        assert copy.get_potential_energy() == pytest.approx(
            reference.get_potential_energy(), rel=1e-12, abs=1e-12
        )
        np.testing.assert_allclose(copy.get_forces(), reference.get_forces(), atol=1e-12)
        np.testing.assert_allclose(
            copy.get_potential_energies(), reference.get_potential_energies(), atol=1e-12
        )
        # the attached results belong to these exact positions
        np.testing.assert_array_equal(copy.positions, original.positions)


def test_kinetic_energy_and_temperature_agree_with_ase():
    structures = mixed_structures()
    state = MDState.from_atoms(structures)
    np.testing.assert_allclose(
        state.kinetic_energy().numpy(),
        [a.get_kinetic_energy() for a in structures],
        rtol=1e-13,
    )
    np.testing.assert_allclose(
        state.temperature().numpy(), [a.get_temperature() for a in structures], rtol=1e-13
    )
    np.testing.assert_allclose(
        state.velocities.numpy(), np.concatenate([a.get_velocities() for a in structures])
    )
    with pytest.raises(ValueError, match="init"):
        state.total_energy()  # no potential energy before an integrator's init


def test_select_and_split_keep_per_system_thermostat_settings():
    structures = mixed_structures()
    model = load_calculator("lj-argon").model
    temperatures, frictions = [80.0, 120.0, 160.0], [0.01, 0.02, 0.03]
    state = langevin(ForceField(model), 2.0, temperatures, frictions).init(
        MDState.from_atoms(structures)
    )
    picked = state.select([2, 0])
    assert picked.n_systems == 2
    assert picked.n_atoms.tolist() == [32, 32]
    assert picked.system_idx.tolist() == [0] * 32 + [1] * 32
    np.testing.assert_array_equal(
        picked.positions.numpy(), np.concatenate([structures[2].positions, structures[0].positions])
    )
    np.testing.assert_array_equal(picked.masses[:32].numpy(), structures[2].get_masses())
    np.testing.assert_array_equal(picked.cell.numpy(), state.cell[[2, 0]].numpy())
    np.testing.assert_array_equal(picked.pbc.numpy(), state.pbc[[2, 0]].numpy())
    np.testing.assert_array_equal(picked.energy.numpy(), state.energy[[2, 0]].numpy())
    np.testing.assert_array_equal(picked.forces[32:].numpy(), state.forces[:32].numpy())
    assert picked.thermostat["temperature"].tolist() == [160.0, 80.0]
    np.testing.assert_allclose(
        picked.thermostat["friction"].numpy(), state.thermostat["friction"][[2, 0]].numpy()
    )
    parts = state.split()
    assert [p.n_systems for p in parts] == [1, 1, 1]
    for b, part in enumerate(parts):
        assert part.system_idx.tolist() == [0] * len(structures[b])
        assert part.thermostat["temperature"].tolist() == [temperatures[b]]
        np.testing.assert_array_equal(part.positions.numpy(), structures[b].positions)
        np.testing.assert_array_equal(part.kinetic_energy().numpy(), state.kinetic_energy()[[b]])
    assert state.select([]).n_systems == 0


def test_select_keeps_nose_hoover_chain_variables():
    structures = [thermal(make_ar_cluster(seed=s), 60.0, s) for s in range(3)]
    model = load_calculator("lj-argon").model
    integrator = nose_hoover_chain(ForceField(model), 2.0, [50.0, 70.0, 90.0], 20.0, 4)
    state = integrator.init(MDState.from_atoms(structures))
    for _ in range(5):
        state = integrator.step(state)
    picked = state.select(torch.tensor([1]))
    for key in ("eta", "eta_velocity", "eta_mass"):
        assert picked.thermostat[key].shape == (1, 4)
        np.testing.assert_array_equal(picked.thermostat[key].numpy(), state.thermostat[key][[1]])
    # the selected system goes on exactly as it would have in the batch
    np.testing.assert_allclose(
        integrator.step(picked).positions.numpy(),
        integrator.step(state).positions[13:26].numpy(),
        atol=1e-12,
    )


def test_to_float32_and_back():
    state = langevin(ForceField(load_calculator("lj-argon").model), 2.0, 100.0).init(
        MDState.from_atoms(mixed_structures())
    )
    single = state.to(dtype=torch.float32)
    for name in ("positions", "momenta", "masses", "cell", "forces", "energy", "energies"):
        assert getattr(single, name).dtype == torch.float32, name
        np.testing.assert_allclose(
            getattr(single, name).numpy(), getattr(state, name).numpy(), rtol=1e-6, atol=1e-6
        )
    for name in ("temperature", "friction"):
        assert single.thermostat[name].dtype == torch.float32
    assert single.numbers.dtype == torch.int64
    assert single.system_idx.dtype == torch.int64
    assert single.pbc.dtype == torch.bool
    assert single.dtype == torch.float32
    assert single.to(dtype=torch.float64).dtype == torch.float64
    # from_atoms takes the dtype directly
    assert MDState.from_atoms(make_ar_cluster(), dtype=torch.float32).momenta.dtype == (
        torch.float32
    )


def test_clone_is_independent():
    state = MDState.from_atoms(make_ar_cluster())
    copy = state.clone()
    copy.positions += 1.0
    assert not torch.equal(copy.positions, state.positions)


def test_pymatgen_structure_and_molecule_input():
    from pymatgen.io.ase import AseAtomsAdaptor as adaptor

    crystal, cluster = make_ar_crystal(), make_ar_cluster()
    structure = adaptor.get_structure(crystal)
    molecule = adaptor.get_molecule(cluster)
    state = MDState.from_atoms([structure, molecule])
    assert state.n_atoms.tolist() == [32, 13]
    np.testing.assert_allclose(state.positions[:32].numpy(), crystal.positions, atol=1e-10)
    np.testing.assert_allclose(state.positions[32:].numpy(), cluster.positions, atol=1e-10)
    np.testing.assert_allclose(state.cell[0].numpy(), crystal.cell.array, atol=1e-10)
    assert state.pbc.tolist() == [[True] * 3, [False] * 3]
    assert state.numbers.tolist() == [18] * 45
    # a single structure (not in a list) works too
    assert MDState.from_atoms(structure).n_systems == 1


def test_invalid_structures_raise():
    bad = thermal(make_ar_cluster(), 50.0, 0)
    momenta = bad.get_momenta()
    momenta[3, 1] = np.nan
    bad.set_momenta(momenta)
    with pytest.raises(InvalidStructureError, match="structure 1: velocities/momenta"):
        MDState.from_atoms([make_ar_cluster(), bad])
    nan_positions = make_ar_cluster()
    nan_positions.positions[0, 0] = np.inf
    with pytest.raises(InvalidStructureError, match="NaN or infinite"):
        MDState.from_atoms(nan_positions)
    with pytest.raises(InvalidStructureError, match="no atoms"):
        MDState.from_atoms(Atoms())
    with pytest.raises(InvalidStructureError, match="no structures"):
        MDState.from_atoms([])
    zero_mass = make_ar_cluster()
    zero_mass.set_masses([0.0] + [39.948] * 12)
    with pytest.raises(InvalidStructureError, match="masses must be positive"):
        MDState.from_atoms(zero_mass)
    with pytest.raises(TypeError, match="ase.Atoms"):
        MDState.from_atoms(["not a structure"])
