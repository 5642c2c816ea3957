"""Dataset statistics against exact synthetic models, numpy and ASE's own neighbour list."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list
from conftest import shared_file

from ase_mlmd.data import dataset_statistics, read_frames
from ase_mlmd.errors import MissingLabelsError

SHIFTS = {"H": -13.6, "C": -1029.5, "N": -1485.2, "O": -2041.3}


def _labelled(name: str, energy: float, forces: np.ndarray | None = None):
    atoms = molecule(name)
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def _linear_energy(atoms) -> float:
    return sum(SHIFTS[s] for s in atoms.get_chemical_symbols())


def test_shifts_recover_a_linear_model_exactly():
    names = ["H2O", "CH4", "NH3", "CO2", "C2H6", "CH3OH", "HCN", "N2", "H2", "CH3CH2OH"]
    frames = [_labelled(n, _linear_energy(molecule(n))) for n in names]
    stats = dataset_statistics(frames, cutoff=3.0)
    assert stats.species == ("H", "C", "N", "O")
    for element, shift in SHIFTS.items():
        assert stats.energy_shifts[element] == pytest.approx(shift, abs=1e-9)
    assert stats.energy_residual_rms < 1e-10
    assert stats.n_frames == len(names)
    assert np.isnan(stats.force_rms)  # no frame has forces


def test_single_composition_gives_minimum_norm_shifts():
    """All frames H2O: counts c = (2, 1); the minimum-norm solution is c * <E> / |c|^2, and
    c . shifts reproduces the mean energy; the residual is the spread of the energies."""
    energies = np.array([-14.1, -14.3, -13.9, -14.2])
    frames = [_labelled("H2O", e) for e in energies]
    stats = dataset_statistics(frames, cutoff=3.0)
    c = np.array([2.0, 1.0])
    expected = c * energies.mean() / (c @ c)
    assert stats.energy_shifts["H"] == pytest.approx(expected[0], rel=1e-12)
    assert stats.energy_shifts["O"] == pytest.approx(expected[1], rel=1e-12)
    fitted = 2 * stats.energy_shifts["H"] + stats.energy_shifts["O"]
    assert fitted == pytest.approx(energies.mean(), rel=1e-12)
    assert stats.energy_residual_rms == pytest.approx(energies.std() / 3, rel=1e-10)


def test_water_force_rms_and_neighbours_against_numpy_and_ase():
    frames = read_frames(shared_file("water_dft/data_0"), index="::40")  # 2 periodic frames
    cutoff = 6.5  # more than half the 12.44 Å box: several images of one neighbour count
    stats = dataset_statistics(frames, cutoff=cutoff)
    forces = np.concatenate([a.get_forces() for a in frames])
    assert stats.force_rms == pytest.approx(np.sqrt(np.mean(forces**2)), rel=1e-12)
    counts = [len(neighbor_list("i", a, cutoff)) for a in frames]
    assert stats.avg_num_neighbors == pytest.approx(sum(counts) / (192 * len(frames)), rel=1e-12)
    # the same number from the density: 4/3 pi rc^3 * (N - 1)/V neighbours on average, roughly
    density = 192 / frames[0].get_volume()
    assert stats.avg_num_neighbors == pytest.approx(4 / 3 * np.pi * cutoff**3 * density, rel=0.05)


def test_neighbours_of_an_open_molecule():
    atoms = _labelled("CH3CH2OH", -1.0)
    stats = dataset_statistics([atoms], cutoff=1.2)
    i = neighbor_list("i", atoms, 1.2)
    assert stats.avg_num_neighbors == pytest.approx(len(i) / len(atoms), rel=1e-12)
    assert stats.avg_num_neighbors > 0


def test_missing_labels_are_named():
    bare = molecule("H2O")
    bare.info["source"] = "water.xyz#1"
    with pytest.raises(MissingLabelsError, match=r"frame 1 \(water\.xyz#1\) has no energy"):
        dataset_statistics([_labelled("H2O", -1.0), bare], cutoff=3.0)
    with_forces = _labelled("H2O", -1.0, np.zeros((3, 3)))
    with pytest.raises(MissingLabelsError, match=r"frame 1 has no forces while other frames"):
        dataset_statistics([with_forces, _labelled("H2O", -2.0)], cutoff=3.0)
    with pytest.raises(ValueError, match="at least one frame"):
        dataset_statistics([], cutoff=3.0)
