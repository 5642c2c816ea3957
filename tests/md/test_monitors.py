"""Monitors: each flags exactly the systems that break its condition, and in a run the replica
that collapses stops at the step its condition is first broken while the others go on, with
the same trajectories as in a run without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.io import read
from conftest import make_ar_cluster

from ase_mlmd import load_calculator
from ase_mlmd.md import (
    BondDeviation,
    ForceField,
    MaxForce,
    MDState,
    NaNMonitor,
    TemperatureBounds,
    simulate,
)
from ase_mlmd.models.interface import scatter_sum
from ase_mlmd.models.pair import Morse

# a stiff N2-like Morse bond: 2 eV deep at 1.1 Å (natural cutoffs of N: 1.42 Å)
N2_MORSE = dict(epsilon=2.0, r0=1.1, rho0=3.0, cutoff=3.0)


def n2(momentum_along_bond: float = 0.0) -> Atoms:
    """An N2 molecule along x in vacuum; the atoms move apart with ±``momentum`` (amu·Å/t)."""
    atoms = Atoms("N2", positions=[[0.0, 0.0, 0.0], [1.1, 0.05, 0.0]])
    atoms.set_momenta([[-momentum_along_bond, 0, 0], [momentum_along_bond, 0, 0]])
    return atoms


def thermal(atoms: Atoms, temperature: float, seed: int) -> Atoms:
    """``atoms`` with Maxwell–Boltzmann momenta (centre of mass at rest)."""
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    atoms = atoms.copy()
    thermalize_momenta(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    return atoms


def momentum_for(kinetic_eV: float, mass: float) -> float:
    """|p| of each of two equal atoms moving apart with total kinetic energy ``kinetic_eV``."""
    return float(np.sqrt(kinetic_eV * mass))


def first_step(frames: list[Atoms], broken) -> int:
    """Index of the first frame (= step with save_every=1) for which ``broken(atoms)``."""
    for k, atoms in enumerate(frames):
        if k > 0 and broken(atoms):
            return k
    raise AssertionError("the condition is never broken in these frames")


def state_of(structures: list[Atoms], model=None) -> MDState:
    state = MDState.from_atoms(structures)
    if model is not None:
        state = ForceField(model, skin=0.0)(state)
    return state


# --- the monitors on a given state -------------------------------------------------------------


def test_nan_monitor_flags_exactly_the_systems_with_non_finite_values():
    lj = load_calculator("lj-argon").model
    state = state_of([make_ar_cluster(seed=s) for s in range(4)], lj)
    positions, forces, energy = state.positions.clone(), state.forces.clone(), state.energy.clone()
    positions[13 + 5, 1] = float("nan")  # system 1
    forces[2 * 13 + 3, 0] = float("inf")  # system 2
    energy[3] = float("nan")  # system 3
    bad = state.replace(positions=positions, forces=forces, energy=energy)
    monitor = NaNMonitor()
    assert monitor(state).tolist() == [False] * 4
    assert monitor(bad).tolist() == [False, True, True, True]
    assert monitor.measure(bad).tolist() == [0.0, 1.0, 1.0, 1.0]


def test_max_force_is_the_largest_atomic_force_of_each_system():
    lj = load_calculator("lj-argon").model
    squeezed = make_ar_cluster()
    squeezed.positions *= 0.9
    state = state_of([make_ar_cluster(seed=1), squeezed, make_ar_cluster(seed=3)], lj)
    forces = state.forces.numpy().reshape(3, 13, 3)
    expected = np.linalg.norm(forces, axis=2).max(axis=1)
    monitor = MaxForce(limit=float(expected[[0, 2]].max() * 1.01))
    np.testing.assert_allclose(monitor.measure(state).numpy(), expected, rtol=1e-12)
    assert expected[1] > monitor.limit
    assert monitor(state).tolist() == [False, True, False]


def test_temperature_bounds_flag_too_cold_and_too_hot_systems():
    atoms = [make_ar_cluster(seed=s) for s in range(3)]
    state = state_of(atoms)
    momenta = torch.randn(state.momenta.shape, generator=torch.Generator().manual_seed(0))
    base = state.replace(momenta=momenta.double())
    scale = torch.sqrt(
        torch.tensor([0.05, 300.0, 2e5], dtype=torch.float64) / base.temperature()
    )  # target T, K
    state = base.replace(momenta=base.momenta * scale[base.system_idx, None])
    np.testing.assert_allclose(state.temperature().numpy(), [0.05, 300.0, 2e5], rtol=1e-12)
    assert TemperatureBounds()(state).tolist() == [True, False, True]
    assert TemperatureBounds(low=0.01, high=3e5)(state).tolist() == [False, False, False]
    with pytest.raises(ValueError, match="low < high"):
        TemperatureBounds(low=10.0, high=1.0)


def test_bond_deviation_uses_natural_cutoff_bonds_and_the_mean_reference_length():
    ethanol = molecule("CH3CH2OH")
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(5):
        frame = ethanol.copy()
        frame.positions += rng.normal(0.0, 0.03, frame.positions.shape)
        frames.append(frame)
    monitor = BondDeviation(frames, threshold=0.5)
    # ethanol has 8 bonds: C-C, C-O, O-H and five C-H
    assert len(monitor.bonds) == 8
    symbols = sorted(
        "".join(sorted(ethanol[int(i)].symbol + ethanol[int(j)].symbol)) for i, j in monitor.bonds
    )
    assert symbols == sorted(["CC", "CO", "HO"] + ["CH"] * 5)
    expected = [np.mean([f.get_distance(int(i), int(j)) for f in frames]) for i, j in monitor.bonds]
    np.testing.assert_allclose(monitor.reference_lengths, expected, rtol=1e-12)

    # one system as a reference frame, one with the O-H bond stretched by 0.7 Å
    stretched = frames[0].copy()
    symbols = ethanol.get_chemical_symbols()
    o, h = next(
        (int(i), int(j)) for i, j in monitor.bonds if {symbols[i], symbols[j]} == {"O", "H"}
    )
    o, h = (o, h) if symbols[o] == "O" else (h, o)
    direction = stretched.positions[h] - stretched.positions[o]
    stretched.positions[h] += 0.7 * direction / np.linalg.norm(direction)
    state = state_of([frames[1], stretched])
    measured = monitor.measure(state).numpy()
    for k, frame in enumerate([frames[1], stretched]):
        lengths = [frame.get_distance(int(i), int(j)) for i, j in monitor.bonds]
        assert measured[k] == pytest.approx(np.max(np.abs(np.subtract(lengths, expected))))
    assert monitor(state).tolist() == [False, True]


def test_bond_deviation_uses_the_minimum_image_in_a_periodic_cell():
    water = molecule("H2O")
    water.cell = [6.0, 6.0, 6.0]
    water.pbc = True
    water.center()
    monitor = BondDeviation(water, threshold=0.5)
    split = water.copy()  # the H atoms lie along ±y from the O atom
    split.positions += [0, 5.99 - water.positions[0, 1], 0]  # O at the y = 6 face
    wrapped = split.copy()
    wrapped.wrap()  # one H atom now sits at the y = 0 face
    assert np.abs(wrapped.positions - split.positions).max() > 5.0
    values = monitor.measure(state_of([split, wrapped])).numpy()
    np.testing.assert_allclose(values, [0.0, 0.0], atol=1e-10)


def test_bond_deviation_refuses_systems_that_are_not_the_reference_molecule():
    monitor = BondDeviation(molecule("H2O"))
    with pytest.raises(ValueError, match="not the reference molecule"):
        monitor.prepare(state_of([molecule("H2O"), molecule("NH3")]))
    with pytest.raises(ValueError, match="no bonds"):
        BondDeviation(Atoms("Ar2", positions=[[0, 0, 0], [4, 0, 0]]))


# --- monitors in a run -------------------------------------------------------------------------


def test_a_breaking_bond_stops_only_its_replica_at_the_step_it_breaks(tmp_path, capsys):
    """Replica 3 is given 3 eV along a 2 eV bond; it must stop at the first step where the bond
    is 0.5 Å off, found independently from a run of that molecule alone; the others run to the
    end exactly as without it (NVE: replicas do not share anything)."""
    model = Morse(**N2_MORSE)
    kick = momentum_for(3.0, n2().get_masses()[0])
    good = [thermal(n2(), 300.0, seed) for seed in range(3)]
    bad = n2(kick)
    reference = BondDeviation(n2(), threshold=0.5)
    common = dict(
        ensemble="nve", timestep=0.5, velocities="keep", temperature_bounds=None, progress=False
    )

    alone = simulate(
        [bad], model, steps=60, save_every=1, trajectory=tmp_path / "alone.traj", **common
    )
    assert alone.completed == [0]
    frames = read(tmp_path / "alone.traj", ":")
    d_ref = reference.reference_lengths[0]
    expected_step = first_step(frames, lambda a: abs(a.get_distance(0, 1) - d_ref) > 0.5)
    assert 3 < expected_step < 60

    result = simulate(
        good + [bad],
        model,
        steps=60,
        save_every=5,
        monitors=[reference],
        trajectory=str(tmp_path / "mixed_{i}.traj"),
        **{**common, "progress": True},
    )
    assert "running 3/4 replicas" in capsys.readouterr().err
    assert result.completed == [0, 1, 2] and result.collapsed == [3]
    record = result.replicas[3]
    assert record.monitor == "BondDeviation"
    assert record.collapse_step == expected_step
    assert record.collapse_time_ps == pytest.approx(expected_step * 0.5e-3)
    assert record.value == pytest.approx(abs(frames[expected_step].get_distance(0, 1) - d_ref))
    np.testing.assert_allclose(
        record.atoms.positions, frames[expected_step - 1].positions, atol=1e-12
    )
    assert record.frames == (expected_step - 1) // 5 + 1
    assert len(read(tmp_path / "mixed_3.traj", ":")) == record.frames

    without = simulate(
        good,
        model,
        steps=60,
        save_every=5,
        monitors=[reference],
        trajectory=str(tmp_path / "good_{i}.traj"),
        **common,
    )
    assert without.completed == [0, 1, 2]
    for i in range(3):
        mixed = read(tmp_path / f"mixed_{i}.traj", ":")
        alone_i = read(tmp_path / f"good_{i}.traj", ":")
        assert len(mixed) == len(alone_i) == 13
        for a, b in zip(mixed, alone_i, strict=True):
            np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-12)
            np.testing.assert_allclose(a.get_momenta(), b.get_momenta(), rtol=0, atol=1e-12)


def test_max_force_stops_a_squeezed_cluster_and_nothing_else():
    lj = load_calculator("lj-argon").model
    squeezed = make_ar_cluster()
    squeezed.positions *= 0.8
    structures = [make_ar_cluster(seed=1), squeezed, make_ar_cluster(seed=2)]
    forces = ForceField(lj, skin=0.0)(MDState.from_atoms(structures)).forces.numpy()
    fmax = np.linalg.norm(forces.reshape(3, 13, 3), axis=2).max(axis=1)
    limit = 0.5 * fmax[1]  # far above the relaxed clusters, far below the squeezed one
    assert fmax[[0, 2]].max() < 0.2 * limit
    result = simulate(
        structures,
        lj,
        ensemble="nvt-langevin",
        temperature=40.0,
        timestep=5.0,
        steps=20,
        save_every=10,
        monitors=[MaxForce(limit)],
        progress=False,
    )
    assert result.collapsed == [1]
    assert result.replicas[1].monitor == "MaxForce"
    assert result.replicas[1].collapse_step == 1
    assert result.replicas[1].value > limit
    np.testing.assert_allclose(result.replicas[1].atoms.positions, squeezed.positions)


class NaNBeyond(Morse):
    """Morse whose energy is NaN for a system with a pair farther apart than ``r_nan``."""

    def __init__(self, r_nan: float, **kw) -> None:
        super().__init__(**kw)
        self.r_nan = r_nan

    def forward(self, batch):
        out = super().forward(batch)
        r = torch.linalg.norm(batch.edge_vectors(), dim=1).detach()
        i = batch.edge_index[0]
        broken = (r > self.r_nan) & (r < self.cutoff)
        flag = scatter_sum(broken.to(r.dtype), batch.system_idx[i], batch.n_systems)
        nan = torch.where(flag > 0, torch.full_like(flag, float("nan")), torch.zeros_like(flag))
        return {"energy": out["energy"] + nan, "energies": out["energies"]}


class FailsBeyond(Morse):
    """Morse that raises when any pair in the batch is farther apart than ``r_fail``."""

    def __init__(self, r_fail: float, **kw) -> None:
        super().__init__(**kw)
        self.r_fail = r_fail

    def forward(self, batch):
        r = torch.linalg.norm(batch.edge_vectors(), dim=1)
        if bool((r > self.r_fail).any()):
            raise RuntimeError("the model cannot handle this geometry")
        return super().forward(batch)


@pytest.mark.parametrize(
    ("model_class", "monitor"), [(NaNBeyond, "NaNMonitor"), (FailsBeyond, "error")]
)
def test_a_replica_whose_model_evaluation_breaks_is_reported_collapsed(
    tmp_path, model_class, monitor
):
    """NaN energies and exceptions from one replica's geometry stop that replica, at the step
    where its bond first passes 1.6 Å, with its last good frame; the others complete."""
    kick = momentum_for(3.0, n2().get_masses()[0])
    good = [thermal(n2(), 300.0, seed) for seed in range(2)]
    common = dict(
        ensemble="nve", timestep=0.5, velocities="keep", temperature_bounds=None, progress=False
    )
    simulate(
        [n2(kick)],
        Morse(**N2_MORSE),
        steps=40,
        save_every=1,
        trajectory=tmp_path / "alone.traj",
        **common,
    )
    frames = read(tmp_path / "alone.traj", ":")
    expected_step = first_step(frames, lambda a: a.get_distance(0, 1) > 1.6)

    model = model_class(1.6, **N2_MORSE)
    result = simulate([good[0], n2(kick), good[1]], model, steps=40, save_every=10, **common)
    assert result.completed == [0, 2] and result.collapsed == [1]
    record = result.replicas[1]
    assert record.monitor == monitor
    assert record.collapse_step == expected_step
    np.testing.assert_allclose(
        record.atoms.positions, frames[expected_step - 1].positions, atol=1e-12
    )
    assert np.isfinite(record.atoms.get_potential_energy())
    if monitor == "error":
        assert "cannot handle this geometry" in record.message
