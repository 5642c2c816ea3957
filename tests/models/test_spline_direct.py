"""Analytic forces of spline tables (``SplinePair.pair_terms``) equal the autograd path.

A :class:`SplinePair` knows φ'(r) from its Hermite cubics, so ``evaluate(create_graph=False)`` and
the engine's no-graph runs take the direct path (half skin list, no graph), while differentiable
runs (``create_graph=True``, BPTT through the table) keep autograd. Checked here: energies, forces
and stress against autograd (float64, 1e-10 relative) for several tables and the cutoff edges,
φ' against finite differences, an NVE trajectory, a species-pair mixture of tables, and the
gradient of a differentiable run with respect to the table.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from conftest import make_ar_cluster, make_ar_crystal

from ase_mlmd.batch import batch_from_atoms
from ase_mlmd.md.forcefield import ForceField
from ase_mlmd.md.integrators import velocity_verlet
from ase_mlmd.md.state import MDState
from ase_mlmd.models.interface import evaluate
from ase_mlmd.models.pair import LennardJones
from ase_mlmd.models.species_pair import SpeciesPairPotential
from ase_mlmd.models.spline_pair import SplinePair, spline_from_potential

ALL = ("energy", "energies", "forces", "stress")
CUTOFF = 8.5


class AutogradSpline(SplinePair):
    """The same table forced onto the autograd path (a subclass with its own ``forward``)."""

    def forward(self, batch):
        return super().forward(batch)


def _wiggle(n: int, seed: int, scale: float = 0.01) -> torch.Tensor:
    """(n,) smooth-ish random knot values, eV."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, n)
    shape = np.cos(7.0 * x + rng.uniform(0, 6)) * (1.0 - x) + 0.1 * rng.normal(size=n)
    return torch.tensor(scale * shape)


def _tables() -> dict[str, SplinePair]:
    """Argon-scale tables (Å, eV): Hermite and natural, r_max at and below the cutoff, every
    cutoff mode, a first knot beyond the nearest neighbours (linear continuation), 2 knots."""
    lj = LennardJones(0.0104, 3.4, cutoff=CUTOFF)
    return {
        "lj-hermite": spline_from_potential(lj, 3.0, 200),
        "natural-rmax-below-cutoff": SplinePair(3.3, CUTOFF, 40, _wiggle(40, 0), r_max=7.0),
        "hermite-own-derivatives": SplinePair(
            3.2, CUTOFF, 25, _wiggle(25, 1), derivatives=_wiggle(25, 2, 0.05)
        ),
        "wall-below-r_min": SplinePair(4.0, CUTOFF, 30, _wiggle(30, 3)),
        "shift": SplinePair(3.3, CUTOFF, 30, _wiggle(30, 4), cutoff_mode="shift"),
        "smooth": SplinePair(3.3, CUTOFF, 30, _wiggle(30, 5), cutoff_mode="smooth", r_on=6.5),
        "trainable": SplinePair(3.3, CUTOFF, 30, _wiggle(30, 6), trainable=True),
        "two-knots": SplinePair(3.0, CUTOFF, 2, [0.02, 0.0], derivatives=[-0.05, 0.0]),
    }


def _autograd_twin(table: SplinePair) -> AutogradSpline:
    twin = AutogradSpline(**table.hyperparameters(), trainable=table.trainable)
    twin.load_state_dict(table.state_dict())
    return twin


def _perturbed(atoms: Atoms, scale: float, seed: int) -> Atoms:
    atoms = atoms.copy()
    atoms.positions += np.random.default_rng(seed).normal(scale=scale, size=atoms.positions.shape)
    return atoms


def _assert_close_relative(direct: dict, graph: dict, keys=ALL, rtol: float = 1e-10) -> None:
    for key in keys:
        scale = max(float(graph[key].detach().abs().max()), 1e-6)
        error = float((direct[key] - graph[key].detach()).abs().max())
        assert error <= rtol * scale, (key, error, scale)


@pytest.mark.parametrize("name", list(_tables()))
def test_spline_direct_equals_autograd(name):
    table = _tables()[name]
    assert table.direct_forces
    crystal = _perturbed(make_ar_crystal(), 0.15, 0)
    strained = _perturbed(make_ar_crystal(), 0.15, 1)
    strained.set_cell(strained.cell * 1.03, scale_atoms=True)
    batch = batch_from_atoms([crystal, strained], CUTOFF)
    direct = evaluate(table, batch, ALL)
    graph = evaluate(table, batch, ALL, create_graph=True)
    assert set(direct) == set(ALL) and float(graph["forces"].detach().abs().max()) > 1e-4
    _assert_close_relative(direct, graph)
    # the autograd-only twin: same table, no analytic path at all
    twin = _autograd_twin(table)
    assert not twin.direct_forces
    _assert_close_relative(direct, evaluate(twin, batch, ALL))


def test_spline_terms_at_the_table_and_cutoff_edges():
    """Dimers at exactly r_min, a knot, r_max (< cutoff), the cutoff, and just inside it."""
    natural = SplinePair(3.3, CUTOFF, 41, _wiggle(41, 7), r_max=7.3)  # knots every 0.1 Å
    full = SplinePair(3.3, CUTOFF, 41, _wiggle(41, 8), derivatives=_wiggle(41, 9, 0.05))
    for table in (natural, full):
        for d in (3.0, 3.3, 4.5, 7.3, 7.3 + 1e-9, 8.5 - 1e-9, 8.5):
            dimer = Atoms("Ar2", positions=[[0.0, 0.0, 0.0], [d, 0.0, 0.0]])
            batch = batch_from_atoms([dimer], CUTOFF + 0.5)  # a skin beyond the cutoff
            direct = evaluate(table, batch, ("energy", "energies", "forces"))
            graph = evaluate(table, batch, ("energy", "energies", "forces"), create_graph=True)
            for key in ("energy", "energies", "forces"):
                torch.testing.assert_close(direct[key], graph[key], rtol=1e-12, atol=1e-15)
            if d >= CUTOFF or (table is natural and d > 7.3):
                assert float(direct["forces"].abs().max()) == 0.0
                assert float(direct["energy"].abs().max()) == 0.0
            else:
                assert float(direct["forces"].abs().max()) > 0.0


def test_spline_derivative_matches_finite_differences():
    for table in _tables().values():
        rng = np.random.default_rng(10)
        r = torch.tensor(rng.uniform(table.r_min - 0.5, table.r_max - 1e-3, 200))
        h = 1e-6
        fd = ((table.pair_energy(r + h) - table.pair_energy(r - h)) / (2 * h)).detach()
        analytic = table.pair_derivative(r).detach()
        scale = float(analytic.abs().max())
        assert float((fd - analytic).abs().max()) <= 1e-6 * scale + 1e-10


def test_spline_forces_are_minus_the_energy_gradient():
    """Direct-path forces against central differences of the direct-path energy (a cluster)."""
    table = _tables()["natural-rmax-below-cutoff"]
    atoms = _perturbed(make_ar_cluster(), 0.1, 11)
    forces = evaluate(table, batch_from_atoms([atoms], CUTOFF))["forces"]
    h = 1e-5
    for atom, axis in [(0, 0), (3, 1), (7, 2), (12, 0)]:
        energies = []
        for sign in (1.0, -1.0):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * h
            energies.append(float(evaluate(table, batch_from_atoms([moved], CUTOFF))["energy"][0]))
        fd = -(energies[0] - energies[1]) / (2 * h)
        assert abs(fd - float(forces[atom, axis])) <= 1e-6 * float(forces.abs().max())


def test_spline_half_list_md_follows_the_autograd_trajectory():
    """30 NVE steps on the engine's half skin list (direct path) equal the same steps on the
    autograd path: the differentiable engine, and the autograd-only twin without a graph."""
    table = _tables()["lj-hermite"]
    atoms = _perturbed(make_ar_crystal(), 0.1, 12)
    atoms.set_velocities(np.random.default_rng(13).normal(scale=5e-3, size=(len(atoms), 3)))
    runs = {}
    for label, model, differentiable in [
        ("direct", table, False),
        ("graph", table, True),
        ("twin", _autograd_twin(table), False),
    ]:
        forcefield = ForceField(model, skin=0.5)
        integrator = velocity_verlet(forcefield, 5.0, differentiable=differentiable)
        state = integrator.init(MDState.from_atoms([atoms, atoms.copy()]))
        for _ in range(30):
            state = integrator.step(state).detach()
        assert forcefield.n_builds >= 2  # the list was rebuilt on the way
        assert (forcefield._half is not None) == (label == "direct")  # the path taken
        runs[label] = state
    for label in ("graph", "twin"):
        for name in ("positions", "momenta", "forces", "energies"):
            ours, theirs = getattr(runs["direct"], name), getattr(runs[label], name)
            assert float((ours - theirs).abs().max()) <= 1e-10, (label, name)
        torch.testing.assert_close(runs["direct"].energy, runs[label].energy, rtol=1e-10, atol=0)


def test_species_pair_mixture_of_splines_direct_equals_autograd():
    mix = SpeciesPairPotential(
        {
            "Ar-Ar": spline_from_potential(LennardJones(0.0104, 3.4, cutoff=CUTOFF), 3.0, 120),
            "Ar-Kr": SplinePair(3.3, 8.0, 30, _wiggle(30, 14)),
            "Kr-Kr": SplinePair(3.5, CUTOFF, 30, _wiggle(30, 15), r_max=7.5),
        }
    )
    assert mix.direct_forces
    atoms = _perturbed(make_ar_crystal(), 0.1, 16)
    atoms.numbers[::3] = 36
    batch = batch_from_atoms([atoms], mix.cutoff)
    direct = evaluate(mix, batch, ALL)
    graph = evaluate(mix, batch, ALL, create_graph=True)
    _assert_close_relative(direct, graph)
    engine = ForceField(mix, skin=0.5)(MDState.from_atoms([atoms]))
    torch.testing.assert_close(engine.forces, graph["forces"].detach(), rtol=0, atol=1e-12)


def _rollout_loss(table: SplinePair, atoms: Atoms, differentiable: bool) -> torch.Tensor:
    """A function of the trajectory: Σ x_final · w after 8 velocity-Verlet steps."""
    forcefield = ForceField(table, skin=0.5)
    integrator = velocity_verlet(forcefield, 5.0, differentiable=differentiable)
    with torch.set_grad_enabled(differentiable):
        state = integrator.init(MDState.from_atoms([atoms]))
        for _ in range(8):
            state = integrator.step(state)
    weights = torch.linspace(-1.0, 1.0, 3 * len(atoms), dtype=torch.float64).reshape(-1, 3)
    return (state.positions * weights).sum()


def test_bptt_gradient_through_the_table_is_unchanged():
    """A differentiable run keeps autograd: its gradient with respect to the table equals the
    autograd-only twin's and central differences of no-graph (direct-path) runs."""
    base = _tables()["lj-hermite"]
    atoms = _perturbed(make_ar_crystal(), 0.1, 17)
    atoms.set_velocities(np.random.default_rng(18).normal(scale=5e-3, size=(len(atoms), 3)))
    grads = []
    for cls in (SplinePair, AutogradSpline):
        table = cls(base.r_min, CUTOFF, base.n_knots, natural=False)
        values = base.values.clone().requires_grad_(True)
        derivatives = base.derivatives.clone().requires_grad_(True)
        table.set_table(values, derivatives)
        loss = _rollout_loss(table, atoms, differentiable=True)
        grads.append(torch.autograd.grad(loss, [values, derivatives]))
    for ours, twin in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(ours, twin, rtol=1e-12, atol=1e-18)
    # the knots the pairs reach: the largest gradient entries
    knot = int(grads[0][0].abs().argmax())
    assert float(grads[0][0][knot].abs()) > 0
    h = 1e-7  # eV; the loss is far from linear at 1e-5 (an outer-shell knot of ~5e-4 eV)
    losses = []
    for sign in (1.0, -1.0):
        table = spline_from_potential(LennardJones(0.0104, 3.4, cutoff=CUTOFF), 3.0, 200)
        table.values[knot] += sign * h
        assert table.direct_forces
        losses.append(float(_rollout_loss(table, atoms, differentiable=False)))
    fd = (losses[0] - losses[1]) / (2 * h)
    assert abs(fd - float(grads[0][0][knot])) <= 1e-6 * abs(float(grads[0][0][knot]))
