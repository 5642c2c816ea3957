"""The analytic-force path of pair potentials equals the autograd path (float64, 1e-10).

``evaluate(..., create_graph=True)`` takes the autograd path (energy graph, forces and stress by
differentiation); ``create_graph=False`` takes ``direct_evaluate`` (φ'(r) directly). In the MD
engine the direct path runs on a half skin list; a differentiable run (autograd, full list)
must give the same trajectory.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_ar_cluster, make_ar_crystal

from ase_mlmd import MLCalculator
from ase_mlmd.batch import batch_from_atoms
from ase_mlmd.md.forcefield import ForceField
from ase_mlmd.md.integrators import velocity_verlet
from ase_mlmd.md.state import MDState
from ase_mlmd.models.interface import evaluate
from ase_mlmd.models.neural_pair import NeuralPair
from ase_mlmd.models.pair import LennardJones, Morse, SoftSphere, Yukawa
from ase_mlmd.testing import check_calculator

ALL = ("energy", "energies", "forces", "stress")


def _potentials() -> dict[str, torch.nn.Module]:
    """Argon-scale potentials (Å, eV), every cutoff mode at least once."""
    return {
        "lj-shift": LennardJones(0.0104, 3.4, cutoff=8.5),
        "lj-smooth": LennardJones(0.0104, 3.4, cutoff=8.5, cutoff_mode="smooth"),
        "lj-none": LennardJones(0.0104, 3.4, cutoff=8.5, cutoff_mode="none"),
        "mie-9-6": LennardJones(0.0104, 3.4, cutoff=8.5, n=9.0, m=6.0),
        "lj-trainable": LennardJones(0.0104, 3.4, cutoff=8.5, trainable=True),
        "morse": Morse(0.0104, 3.8, 6.0, cutoff=8.5),
        "morse-shift": Morse(0.0104, 3.8, 6.0, cutoff=8.5, cutoff_mode="shift"),
        "yukawa": Yukawa(2.0, 0.5, cutoff=8.5),
        "soft-sphere": SoftSphere(0.0104, 3.4, n=10.0, cutoff=8.5, cutoff_mode="none"),
    }


def _perturbed(atoms, scale: float, seed: int):
    atoms = atoms.copy()
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(scale=scale, size=atoms.positions.shape)
    return atoms


@pytest.mark.parametrize("name", list(_potentials()))
def test_direct_equals_autograd_on_a_mixed_batch(name):
    model = _potentials()[name]
    assert model.direct_forces
    crystal = _perturbed(make_ar_crystal(), 0.15, 0)
    strained = _perturbed(make_ar_crystal(), 0.15, 1)
    strained.set_cell(strained.cell * 1.03, scale_atoms=True)
    batch = batch_from_atoms([crystal, strained], model.cutoff)
    direct = evaluate(model, batch, ALL)
    graph = {k: v.detach() for k, v in evaluate(model, batch, ALL, create_graph=True).items()}
    assert set(direct) == set(ALL)
    for key in ALL:
        scale = max(float(graph[key].abs().max()), 1e-3)
        error = float((direct[key] - graph[key].detach()).abs().max())
        assert error <= 1e-10 * scale, (key, error, scale)
    # a cluster: no periodic images, no stress
    cluster = batch_from_atoms([_perturbed(make_ar_cluster(), 0.1, 2)], model.cutoff)
    direct = evaluate(model, cluster, ("energy", "forces"))
    graph = evaluate(model, cluster, ("energy", "forces"), create_graph=True)
    torch.testing.assert_close(direct["forces"], graph["forces"].detach(), rtol=0, atol=1e-12)


def test_direct_path_passes_the_conformance_checks():
    """Finite differences, invariances, periodic images, batch == single, NVE drift."""
    calc = MLCalculator(Morse(0.0104, 3.8, 6.0, cutoff=8.5))
    molecule = _perturbed(make_ar_cluster(), 0.1, 3)
    periodic = _perturbed(make_ar_crystal(), 0.1, 4)
    report = check_calculator(calc, molecule, periodic)
    assert report["forces_periodic"] < 1e-5


def test_a_skin_list_beyond_the_cutoff_adds_nothing():
    model = LennardJones(0.0104, 3.4, cutoff=8.5)
    atoms = _perturbed(make_ar_crystal(), 0.1, 5)
    exact = evaluate(model, batch_from_atoms([atoms], model.cutoff), ALL)
    skin = evaluate(model, batch_from_atoms([atoms], model.cutoff + 1.5), ALL)
    assert (
        batch_from_atoms([atoms], model.cutoff + 1.5).edge_index.shape[1]
        > (batch_from_atoms([atoms], model.cutoff).edge_index.shape[1])
    )
    for key in ALL:
        torch.testing.assert_close(skin[key], exact[key], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["lj-shift", "morse", "yukawa"])
def test_half_list_md_follows_the_autograd_trajectory(name):
    """NVE on the half skin list (direct) vs the differentiable engine (autograd, full list)."""
    model = _potentials()[name]
    atoms = _perturbed(make_ar_crystal(), 0.1, 6)
    atoms.set_velocities(np.random.default_rng(7).normal(scale=5e-3, size=(len(atoms), 3)))
    trajectories = []
    for differentiable in (False, True):
        forcefield = ForceField(model, skin=0.5)
        integrator = velocity_verlet(forcefield, 5.0, differentiable=differentiable)
        state = integrator.init(MDState.from_atoms([atoms, atoms.copy()]))
        for _ in range(30):
            state = integrator.step(state).detach()
        trajectories.append(state)
        assert forcefield.n_builds >= 2  # the list was rebuilt on the way
    direct, graph = trajectories
    torch.testing.assert_close(direct.positions, graph.positions, rtol=0, atol=1e-10)
    torch.testing.assert_close(direct.forces, graph.forces, rtol=0, atol=1e-10)
    torch.testing.assert_close(direct.energy, graph.energy, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(direct.energies, graph.energies, rtol=0, atol=1e-10)


def test_half_list_counts_each_pair_once_including_self_images():
    """A small periodic cell whose atoms see their own images: the half list holds half the
    directed pairs of the full list, and gives the same forces."""
    model = LennardJones(0.0104, 3.4, cutoff=8.5)
    atoms = _perturbed(make_ar_crystal(repeat=1), 0.05, 8)  # one conventional cell, 5.3 Å
    state = MDState.from_atoms([atoms])
    forcefield = ForceField(model, skin=0.3)
    direct = forcefield(state)
    half = forcefield._half
    full, _ = ForceField(model, skin=0.3).neighbors(state)
    full_skin = batch_from_atoms([atoms], model.cutoff + 0.3).edge_index.shape[1]
    assert 2 * half.edge_index.shape[1] == full_skin
    assert full.shape[1] < full_skin
    graph = forcefield(state, create_graph=True)
    torch.testing.assert_close(direct.forces, graph.forces.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(direct.energy, graph.energy.detach(), rtol=1e-12, atol=0)


def test_float32_potential_in_a_float64_state():
    model = LennardJones(0.0104, 3.4, cutoff=8.5).float()
    atoms = _perturbed(make_ar_crystal(), 0.1, 9)
    state = MDState.from_atoms([atoms])
    out = ForceField(model, skin=0.3)(state)
    reference = ForceField(LennardJones(0.0104, 3.4, cutoff=8.5), skin=0.3)(state)
    assert out.forces.dtype == torch.float64
    torch.testing.assert_close(out.forces, reference.forces, rtol=0, atol=1e-5)
    assert not torch.equal(out.forces, reference.forces)


def test_potentials_without_a_derivative_keep_the_autograd_path():
    model = NeuralPair(cutoff=5.0)
    assert not model.direct_forces
    with pytest.raises(NotImplementedError, match="autograd"):
        model.direct_evaluate(batch_from_atoms([make_ar_cluster()], 5.0))
    atoms = make_ar_cluster()
    out = evaluate(model, batch_from_atoms([atoms], 5.0), ("energy", "forces"))
    assert out["forces"].shape == (len(atoms), 3)


def test_a_subclass_that_changes_the_energy_keeps_the_autograd_path():
    class Doubled(LennardJones):
        def pair_energy(self, r: torch.Tensor) -> torch.Tensor:
            return 2.0 * super().pair_energy(r)

    class Counting(LennardJones):
        def forward(self, batch):
            return super().forward(batch)

    assert LennardJones().direct_forces and not Doubled().direct_forces
    assert not Counting().direct_forces
    atoms = _perturbed(make_ar_crystal(), 0.1, 10)
    model, doubled = LennardJones(0.0104, 3.4, 8.5), Doubled(0.0104, 3.4, 8.5)
    batch = batch_from_atoms([atoms], 8.5)
    torch.testing.assert_close(
        evaluate(doubled, batch)["forces"], 2.0 * evaluate(model, batch)["forces"]
    )


def test_species_pair_mixture_direct_equals_autograd():
    from ase_mlmd.models.species_pair import SpeciesPairPotential

    mix = SpeciesPairPotential(
        {
            "Ar-Ar": LennardJones(0.0104, 3.4, cutoff=8.5),
            "Ar-Kr": Morse(0.012, 3.9, 6.0, cutoff=8.0),
            "Kr-Kr": LennardJones(0.014, 3.6, cutoff=9.0, cutoff_mode="smooth"),
        }
    )
    assert mix.direct_forces
    atoms = _perturbed(make_ar_crystal(), 0.1, 11)
    atoms.numbers[::3] = 36
    batch = batch_from_atoms([atoms], mix.cutoff)
    direct = evaluate(mix, batch, ALL)
    graph = {k: v.detach() for k, v in evaluate(mix, batch, ALL, create_graph=True).items()}
    for key in ALL:
        scale = float(graph[key].abs().max())
        assert float((direct[key] - graph[key]).abs().max()) <= 1e-10 * scale, key
    state = MDState.from_atoms([atoms])
    engine = ForceField(mix, skin=0.5)(state)
    torch.testing.assert_close(engine.forces, graph["forces"], rtol=0, atol=1e-12)
