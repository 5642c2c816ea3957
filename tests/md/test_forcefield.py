"""ForceField: a model plus a Verlet neighbor list with a skin.

The reference is the same model with a fresh list at every call (``skin=0``): a skin list must
give exactly the same pairs, so forces agree to rounding at every step of a run, while the list
is rebuilt far less often than every step. Periodic cells smaller than twice the cutoff
(several images of one neighbor) must give the forces of an equivalent supercell.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from conftest import AR_LATTICE, make_ar_cluster, make_ar_crystal

from ase_mlmd import load_calculator
from ase_mlmd.md.forcefield import ForceField
from ase_mlmd.md.integrators import velocity_verlet
from ase_mlmd.md.state import MDState

FORCE_ATOL = 1e-11  # eV/Å: the same pairs summed in another order


@pytest.fixture(scope="module")
def lj():
    """The shipped LJ-argon model (cutoff 8.5 Å)."""
    return load_calculator("lj-argon").model


def hot(atoms, temperature: float, seed: int):
    """A copy with Maxwell–Boltzmann momenta at ``temperature`` K, centre of mass at rest."""
    atoms = atoms.copy()
    thermalize_momenta(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    return atoms


def test_skin_list_gives_the_forces_of_a_fresh_list_at_every_step(lj):
    # a hot crystal, a hot cluster and a cold crystal in one batch: the rebuilds are triggered
    # by the hot systems and must be taken for the whole batch
    structures = [
        hot(make_ar_crystal(seed=1), 300.0, 0),
        hot(make_ar_cluster(seed=2), 150.0, 1),
        hot(make_ar_crystal(seed=3), 5.0, 2),
    ]
    skin = 1.0
    forcefield = ForceField(lj, skin=skin)
    fresh = ForceField(lj, skin=0.0)
    integrator = velocity_verlet(forcefield, 5.0)
    state = integrator.init(MDState.from_atoms(structures))
    start = state.positions.clone()
    steps = 300
    max_error = 0.0
    for _ in range(steps):
        state = integrator.step(state)
        reference = fresh(state)
        max_error = max(max_error, float((state.forces - reference.forces).abs().max()))
        np.testing.assert_allclose(state.energy.numpy(), reference.energy.numpy(), rtol=1e-12)
    travelled = float((state.positions - start).norm(dim=1).max())
    print(
        f"\nskin list: {forcefield.n_builds} builds in {steps} steps, atoms moved up to "
        f"{travelled:.2f} Å (skin {skin} Å), max force difference {max_error:.1e} eV/Å"
    )
    assert max_error < FORCE_ATOL
    assert travelled > 3 * skin  # atoms moved well past the skin: rebuilds were needed
    assert 3 <= forcefield.n_builds <= steps // 10  # measured: 13
    assert fresh.n_builds == steps  # skin 0 rebuilds at every call


def test_rebuild_when_the_cell_or_the_atoms_change(lj):
    forcefield = ForceField(lj, skin=1.0)
    state = MDState.from_atoms([make_ar_crystal(seed=0), make_ar_cluster(seed=1)])
    forcefield(state)
    forcefield(state)
    assert forcefield.n_builds == 1
    # one atom of the cluster moves just under skin/2: no rebuild; just over: rebuild
    positions = state.positions.clone()
    positions[40, 0] += 0.49
    forcefield(state.replace(positions=positions))
    assert forcefield.n_builds == 1
    positions[40, 0] += 0.02
    moved = state.replace(positions=positions)
    assert torch.allclose(forcefield(moved).forces, ForceField(lj, 0.0)(moved).forces, atol=1e-12)
    assert forcefield.n_builds == 2
    # a strained cell
    cell = state.cell.clone()
    cell[0] *= 1.01
    strained = moved.replace(cell=cell)
    np.testing.assert_allclose(
        forcefield(strained).forces.numpy(), ForceField(lj, 0.0)(strained).forces.numpy()
    )
    assert forcefield.n_builds == 3
    # another set of atoms (one system only)
    single = strained.select([1])
    np.testing.assert_allclose(
        forcefield(single).forces.numpy(), ForceField(lj, 0.0)(single).forces.numpy()
    )
    assert forcefield.n_builds == 4
    forcefield.reset()
    forcefield(single)
    assert forcefield.n_builds == 5
    with pytest.raises(ValueError, match="skin"):
        ForceField(lj, skin=-0.1)


@pytest.mark.parametrize(
    "small, repeat",
    [
        (make_ar_crystal(repeat=2, seed=5), (2, 2, 2)),  # 10.5 Å cube, cutoff 8.5 Å
        (bulk("Ar", "fcc", a=AR_LATTICE), (5, 5, 5)),  # 1 atom, 3.7 Å primitive cell
    ],
    ids=["32-atom-cube", "primitive"],
)
def test_small_cell_gives_the_forces_of_a_supercell(lj, small, repeat):
    small = hot(small, 120.0, 3) if len(small) > 1 else small
    large = small.repeat(repeat)
    assert small.cell.lengths().min() < 2 * lj.cutoff < large.cell.lengths().min()
    copies = int(np.prod(repeat))
    forcefield = ForceField(lj, skin=0.5)
    state = forcefield(MDState.from_atoms(small))
    reference = forcefield(MDState.from_atoms(large))
    # ASE's repeat puts the copies of the small cell one after the other
    np.testing.assert_allclose(
        np.tile(state.forces.numpy(), (copies, 1)), reference.forces.numpy(), atol=1e-12
    )
    np.testing.assert_allclose(
        np.tile(state.energies.numpy(), copies), reference.energies.numpy(), atol=1e-13
    )
    assert float(reference.energy) == pytest.approx(copies * float(state.energy), rel=1e-12)
    if len(small) == 1:
        return
    # and along a run (with rebuilds of both lists) the supercell stays a tiling of the small cell
    integrator = velocity_verlet(ForceField(lj, skin=0.5), 5.0)
    both = integrator.init(MDState.from_atoms([small, large]))
    for _ in range(100):
        both = integrator.step(both)
    n = len(small)
    small_moved = both.positions[:n].numpy() - small.positions
    large_moved = both.positions[n:].numpy() - large.positions
    assert np.abs(small_moved).max() > 0.1
    np.testing.assert_allclose(np.tile(small_moved, (copies, 1)), large_moved, atol=1e-8)
    np.testing.assert_allclose(
        np.tile(both.momenta[:n].numpy(), (copies, 1)), both.momenta[n:].numpy(), atol=1e-8
    )


def test_unwrapped_positions_give_the_same_forces(lj):
    crystal = make_ar_crystal(seed=7)
    forcefield = ForceField(lj, skin=0.0)
    state = forcefield(MDState.from_atoms(crystal))
    rng = np.random.default_rng(0)
    shifts = rng.integers(-3, 4, size=(len(crystal), 3))  # whole lattice vectors
    unwrapped = crystal.copy()
    unwrapped.positions += shifts @ crystal.cell.array
    moved = ForceField(lj, skin=0.7)(MDState.from_atoms(unwrapped))
    np.testing.assert_allclose(moved.forces.numpy(), state.forces.numpy(), atol=1e-12)
    np.testing.assert_allclose(moved.energy.numpy(), state.energy.numpy(), rtol=1e-13)
