"""``simulate``: outputs (per-replica trajectories, CSV log, result), initial velocities, model
arguments, batches of different systems, and bad input refused before any step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.io import read
from conftest import make_ar_cluster, make_ar_crystal

import ase_mlmd.calculators.ml_calculator as ml_calculator
from ase_mlmd import load_calculator
from ase_mlmd.cli.demo import liquid_argon
from ase_mlmd.errors import DeviceNotAvailableError, InvalidStructureError, UnsupportedSpeciesError
from ase_mlmd.md import MDState, read_log, simulate
from ase_mlmd.md.simulate import maxwell_boltzmann_momenta
from ase_mlmd.models.pair import LennardJones


@pytest.fixture(scope="module")
def lj():
    return load_calculator("lj-argon").model


def test_each_replica_gets_its_trajectory_and_log_rows_consistent_with_the_model(tmp_path, lj):
    calc = load_calculator("lj-argon")
    result = simulate(
        liquid_argon(n_cells=2),
        lj,
        replicas=3,
        ensemble="nvt-langevin",
        temperature=[80.0, 94.4, 110.0],
        timestep=5.0,
        steps=40,
        save_every=10,
        log_every=5,
        trajectory=str(tmp_path / "run_{i}.traj"),
        logfile=tmp_path / "md.csv",
        progress=False,
    )
    assert result.completed == [0, 1, 2] and result.steps == 40 and result.steps_run == 40
    assert result.atom_steps_per_s > 0 and result.wall_time_s > 0
    log = read_log(tmp_path / "md.csv")
    assert log["step"].tolist() == [s for s in range(0, 41, 5) for _ in range(3)]
    assert log["replica"].tolist() == [0, 1, 2] * 9
    np.testing.assert_allclose(log["time_ps"], log["step"] * 5.0e-3)
    np.testing.assert_allclose(log["E_tot"], log["E_pot"] + log["E_kin"], atol=1e-10)
    for i in range(3):
        frames = read(tmp_path / f"run_{i}.traj", ":")
        assert len(frames) == 5  # steps 0, 10, ..., 40
        for k, frame in enumerate(frames):
            # energy and forces stored with each frame are the model's at its positions
            check = frame.copy()
            check.calc = calc
            assert frame.get_potential_energy() == pytest.approx(
                check.get_potential_energy(), abs=1e-10
            )
            np.testing.assert_allclose(frame.get_forces(), check.get_forces(), atol=1e-10)
            row = (log["step"] == 10 * k) & (log["replica"] == i)
            assert log["T"][row][0] == pytest.approx(frame.get_temperature(), rel=1e-6)
            assert log["E_pot"][row][0] == pytest.approx(frame.get_potential_energy(), abs=1e-9)
        final = result.replicas[i].atoms
        np.testing.assert_allclose(final.positions, frames[-1].positions)
        np.testing.assert_allclose(final.get_momenta(), frames[-1].get_momenta())
        assert result.replicas[i].frames == 5
    # replicas share a start but not their velocities
    starts = [read(tmp_path / f"run_{i}.traj", 0) for i in range(3)]
    assert not np.allclose(starts[0].get_momenta(), starts[1].get_momenta())


def test_maxwell_boltzmann_velocities_are_seeded_per_replica_without_centre_of_mass_motion():
    cluster = make_ar_cluster()
    n_rep, temperature = 200, 300.0
    state = MDState.from_atoms([cluster] * n_rep)
    momenta = maxwell_boltzmann_momenta(state, [temperature] * n_rep, seed=7)
    p = momenta.numpy().reshape(n_rep, 13, 3)
    np.testing.assert_allclose(p.sum(axis=1), 0.0, atol=1e-12)
    assert len({float(x[0, 0]) for x in p}) == n_rep  # every replica draws its own
    # E_kin = (3N - 3)/2 kT on average once the centre of mass is at rest
    masses = cluster.get_masses()
    e_kin = 0.5 * (p**2 / masses[None, :, None]).sum(axis=(1, 2))
    expected = 0.5 * (3 * 13 - 3) * units.kB * temperature
    assert e_kin.mean() == pytest.approx(expected, rel=4 * np.sqrt(2 / 36) / np.sqrt(n_rep))
    # replica b's draw depends only on (seed, b), not on the rest of the batch
    few = maxwell_boltzmann_momenta(MDState.from_atoms([cluster] * 3), [temperature] * 3, seed=7)
    np.testing.assert_array_equal(few.numpy(), momenta.numpy()[: 3 * 13])
    other_seed = maxwell_boltzmann_momenta(state, [temperature] * n_rep, seed=8)
    assert not np.allclose(other_seed.numpy(), momenta.numpy())


def test_zero_steps_return_the_start_with_drawn_or_kept_velocities(lj):
    cluster = make_ar_cluster()
    cluster.set_momenta(np.full((13, 3), 0.3))
    drawn = simulate(cluster, lj, replicas=2, temperature=50.0, steps=0, progress=False)
    kept = simulate(cluster, lj, replicas=2, steps=0, velocities="keep", progress=False)
    assert drawn.steps == 0 and drawn.completed == [0, 1]
    for r in drawn.replicas:
        np.testing.assert_allclose(r.atoms.positions, cluster.positions)
        np.testing.assert_allclose(r.atoms.get_momenta().sum(axis=0), 0.0, atol=1e-12)
    for r in kept.replicas:
        np.testing.assert_allclose(r.atoms.get_momenta(), cluster.get_momenta())


def test_a_card_name_a_calculator_and_a_module_give_the_same_run(lj):
    common = dict(
        replicas=2,
        ensemble="nvt-bussi",
        temperature=60.0,
        timestep=5.0,
        steps=15,
        progress=False,
        seed=3,
    )
    cluster = make_ar_cluster()
    runs = [
        simulate(cluster, model, **common)
        for model in ("lj-argon", load_calculator("lj-argon"), lj)
    ]
    for run in runs[1:]:
        for a, b in zip(runs[0].atoms, run.atoms, strict=True):
            np.testing.assert_array_equal(a.positions, b.positions)
            np.testing.assert_array_equal(a.get_momenta(), b.get_momenta())
    # and the run moved the atoms
    assert np.abs(runs[0].atoms[0].positions - cluster.positions).max() > 1e-3


def test_systems_of_different_size_and_periodicity_run_in_one_batch(tmp_path, lj):
    crystal, cluster = make_ar_crystal(), make_ar_cluster()
    result = simulate(
        [crystal, cluster],
        lj,
        ensemble="nve",
        temperature=40.0,
        timestep=5.0,
        steps=20,
        save_every=10,
        trajectory=str(tmp_path / "r{i}.traj"),
        progress=False,
    )
    assert result.completed == [0, 1]
    periodic, molecule_frames = read(tmp_path / "r0.traj", ":"), read(tmp_path / "r1.traj", ":")
    assert [len(f) for f in periodic] == [32] * 3 and periodic[-1].pbc.all()
    assert [len(f) for f in molecule_frames] == [13] * 3 and not molecule_frames[-1].pbc.any()
    np.testing.assert_allclose(periodic[-1].cell.array, crystal.cell.array)
    # each NVE system keeps its own total energy
    for frames in (periodic, molecule_frames):
        energies = [f.get_total_energy() for f in frames]
        assert np.ptp(energies) < 1e-3 * len(frames[0])


def nan_positions() -> Atoms:
    atoms = make_ar_cluster()
    atoms.positions[3, 1] = np.nan
    return atoms


def nan_velocities() -> Atoms:
    atoms = make_ar_cluster()
    momenta = np.zeros((13, 3))
    momenta[2, 0] = np.inf
    atoms.set_momenta(momenta)
    return atoms


BAD_INPUT = {
    "species": (
        dict(
            structures=molecule("CH3CH2OH"),
            model=LennardJones(epsilon=0.01, sigma=3.4, cutoff=8.5, species=[18]),
        ),
        UnsupportedSpeciesError,
        "trained on Ar only",
    ),
    "nan positions": (dict(structures=nan_positions()), InvalidStructureError, "NaN"),
    "nan velocities": (
        dict(structures=nan_velocities(), velocities="keep"),
        InvalidStructureError,
        "velocities",
    ),
    "zero timestep": (dict(timestep=0.0), ValueError, "timestep"),
    "negative timestep": (dict(timestep=-1.0), ValueError, "timestep"),
    "no replicas": (dict(replicas=0), ValueError, "replicas"),
    "save_every 0": (dict(save_every=0), ValueError, "save_every"),
    "unknown ensemble": (dict(ensemble="npt"), ValueError, "ensemble must be one of"),
    "pattern without {i}": (dict(replicas=2, trajectory="run.traj"), ValueError, "{i}"),
    "temperatures": (dict(replicas=3, temperature=[1.0, 2.0]), ValueError, "3 replicas"),
    "velocities": (dict(velocities="hot"), ValueError, "velocities"),
    "ASE calculator": (dict(model=EMT()), TypeError, "--engine ase"),
    "cuda": (dict(device="cuda"), DeviceNotAvailableError, "no CUDA GPU"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_refused_before_any_step(case, tmp_path, monkeypatch, lj):
    """Each mistake raises its specific error and writes nothing."""
    monkeypatch.setattr(ml_calculator.torch.cuda, "is_available", lambda: False)
    changes, error, text = BAD_INPUT[case]
    kwargs = dict(
        structures=make_ar_cluster(),
        model=lj,
        steps=5,
        save_every=1,
        trajectory=str(tmp_path / "out" / "run_{i}.traj"),
        progress=False,
    )
    kwargs.update(changes)
    with pytest.raises(error, match=text if text != "{i}" else r"\{i\}"):
        simulate(kwargs.pop("structures"), kwargs.pop("model"), **kwargs)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_run_follows_the_cpu_run(tmp_path, lj):
    common = dict(
        replicas=3,
        ensemble="nvt-nose-hoover",
        temperature=60.0,
        timestep=5.0,
        steps=50,
        save_every=25,
        progress=False,
    )
    cpu = simulate(make_ar_crystal(), lj, device="cpu", **common)
    gpu = simulate(
        make_ar_crystal(), lj, device="cuda", trajectory=str(tmp_path / "g{i}.traj"), **common
    )
    assert gpu.completed == [0, 1, 2]
    for a, b in zip(cpu.atoms, gpu.atoms, strict=True):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-8)
    assert len(read(tmp_path / "g2.traj", ":")) == 3
