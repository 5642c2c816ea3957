"""MLCalculator: ASE's property contract, caching, batches, pymatgen input, devices, dtypes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.lj import LennardJones as AseLennardJones
from ase.optimize import BFGS
from conftest import make_ar_cluster, make_ar_crystal

from ase_mlmd import MLCalculator, load_calculator
from ase_mlmd.errors import DeviceNotAvailableError
from ase_mlmd.models.pair import LennardJones

EPS_AR, SIGMA_AR, RC_AR = 0.0104, 3.40, 8.5


class CountingLennardJones(LennardJones):
    """LJ that counts its forward calls (a spy on the model)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        return super().forward(batch)


def _lj(**kwargs) -> LennardJones:
    return LennardJones(EPS_AR, SIGMA_AR, RC_AR, **kwargs)


def test_results_are_cached_until_the_atoms_change(ar_cluster):
    model = CountingLennardJones(EPS_AR, SIGMA_AR, RC_AR)
    ar_cluster.calc = MLCalculator(model)
    e1 = ar_cluster.get_potential_energy()
    assert model.calls == 1
    f1 = ar_cluster.get_forces()  # computed with the energy
    e_again = ar_cluster.get_potential_energy()
    assert model.calls == 1 and e_again == e1

    ar_cluster.positions[3] += [0.05, 0.0, -0.02]
    e2 = ar_cluster.get_potential_energy()
    f2 = ar_cluster.get_forces()
    assert model.calls == 2
    assert e2 != e1 and not np.array_equal(f1, f2)

    ar_cluster.positions[3] -= [0.05, 0.0, -0.02]  # back to the first structure: recomputed
    assert ar_cluster.get_potential_energy() == pytest.approx(e1, rel=1e-14)
    assert model.calls == 3


def test_energy_free_energy_and_per_atom_energies(ar_crystal):
    ar_crystal.calc = MLCalculator(_lj())
    energy = ar_crystal.get_potential_energy()
    assert ar_crystal.get_potential_energy(force_consistent=True) == energy
    assert ar_crystal.calc.get_property("free_energy") == energy
    energies = ar_crystal.get_potential_energies()
    assert energies.shape == (len(ar_crystal),)
    assert energies.sum() == pytest.approx(energy, rel=1e-13)
    assert np.ptp(energies) > 0  # rattled: the atoms differ
    # ASE's own LJ agrees (shift mode == smooth=False)
    reference = ar_crystal.copy()
    reference.calc = AseLennardJones(epsilon=EPS_AR, sigma=SIGMA_AR, rc=RC_AR)
    np.testing.assert_allclose(energies, reference.get_potential_energies(), rtol=1e-10)
    np.testing.assert_allclose(ar_crystal.get_stress(), reference.get_stress(), rtol=1e-9)


def test_stress_of_a_non_periodic_system_is_a_clear_error(ar_cluster):
    ar_cluster.calc = MLCalculator(_lj())
    with pytest.raises(PropertyNotImplementedError, match="periodic") as err:
        ar_cluster.get_stress()
    assert "pbc" in str(err.value)
    # a slab is not fully periodic either
    slab = make_ar_crystal()
    slab.pbc = [True, True, False]
    slab.calc = MLCalculator(_lj())
    with pytest.raises(PropertyNotImplementedError, match="fully periodic"):
        slab.get_stress()
    assert np.isfinite(slab.get_potential_energy())  # energy still works


def test_calculate_batch_returns_properties_in_the_requested_order(ar_cluster, ar_crystal):
    calc = MLCalculator(_lj())
    small = ar_crystal[:5]  # 5 atoms, still periodic in the same cell
    structures = [ar_crystal, small]
    order = ("stress", "forces", "energy", "energies")
    stress, forces, energy, energies = calc.calculate_batch(structures, properties=order)
    assert stress.shape == (2, 6) and energy.shape == (2,)
    assert [f.shape for f in forces] == [(32, 3), (5, 3)]
    assert [e.shape for e in energies] == [(32,), (5,)]
    for k, atoms in enumerate(structures):
        a = atoms.copy()
        a.calc = MLCalculator(_lj())
        assert energy[k] == pytest.approx(a.get_potential_energy(), rel=1e-12)
        np.testing.assert_allclose(forces[k], a.get_forces(), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(stress[k], a.get_stress(), rtol=1e-10, atol=1e-16)
        assert energies[k].sum() == pytest.approx(energy[k], rel=1e-12)

    (energy_only,) = calc.calculate_batch([ar_cluster], properties=("energy",))
    forces_first, energy_second = calc.calculate_batch([ar_cluster], ("forces", "energy"))
    assert energy_only[0] == energy_second[0]
    assert forces_first[0].shape == (13, 3)
    with pytest.raises(ValueError, match="periodic"):
        calc.calculate_batch([ar_cluster, ar_crystal], properties=("stress",))


def test_pymatgen_structure_and_molecule_give_the_same_results(ar_crystal, ar_cluster):
    from pymatgen.core import Molecule, Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    calc = MLCalculator(_lj(cutoff_mode="smooth", r_on=7.5))
    structure = AseAtomsAdaptor.get_structure(ar_crystal)
    molecule = AseAtomsAdaptor.get_molecule(ar_cluster)
    assert isinstance(structure, Structure) and isinstance(molecule, Molecule)
    energy, forces, stress = calc.calculate_batch([structure], ("energy", "forces", "stress"))
    ar_crystal.calc = calc
    assert energy[0] == pytest.approx(ar_crystal.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(forces[0], ar_crystal.get_forces(), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(stress[0], ar_crystal.get_stress(), rtol=1e-9, atol=1e-16)

    energy, forces = calc.calculate_batch([molecule, structure], ("energy", "forces"))
    ar_cluster.calc = calc
    assert energy[0] == pytest.approx(ar_cluster.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(forces[0], ar_cluster.get_forces(), rtol=1e-9, atol=1e-14)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_without_gpu_raises_device_not_available():
    with pytest.raises(DeviceNotAvailableError, match="cpu"):
        MLCalculator(_lj(), device="cuda")
    with pytest.raises(DeviceNotAvailableError, match="CUDA"):
        load_calculator("lj-argon", device="cuda")
    assert MLCalculator(_lj(), device="auto").device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_results_equal_cpu_results(ar_crystal):
    cpu = ar_crystal.copy()
    cpu.calc = load_calculator("lj-argon", device="cpu")
    gpu = ar_crystal.copy()
    gpu.calc = load_calculator("lj-argon", device="cuda")
    assert gpu.calc.model.device.type == "cuda"
    assert gpu.get_potential_energy() == pytest.approx(cpu.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(gpu.get_forces(), cpu.get_forces(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(gpu.get_stress(), cpu.get_stress(), rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", torch.float32])
def test_dtype_override(dtype, ar_crystal):
    calc32 = MLCalculator(_lj(), dtype=dtype)
    assert calc32.model.dtype == torch.float32
    a32, a64 = ar_crystal.copy(), ar_crystal.copy()
    a32.calc, a64.calc = calc32, MLCalculator(_lj())
    f32, f64 = a32.get_forces(), a64.get_forces()
    assert f32.dtype == np.float64  # handed back in float64
    assert a32.get_potential_energy() == pytest.approx(a64.get_potential_energy(), rel=1e-5)
    np.testing.assert_allclose(f32, f64, atol=1e-4 * np.abs(f64).max())
    assert not np.array_equal(f32, f64)  # really computed in single precision


def test_dtype_override_of_a_unit_converted_card(tmp_path, ar_crystal):
    """A card in kcal/mol and nm is wrapped for unit conversion; dtype must reach the model."""
    kcal = 0.0433641043
    (tmp_path / "lj-kcal.toml").write_text(
        'name = "lj-kcal"\nbackend = "lennard-jones"\nspecies = ["*"]\ncutoff = 0.85\n'
        '[units]\nenergy = "kcal/mol"\nlength = "nm"\n'
        f"[parameters]\nepsilon = {0.0104 / kcal!r}\nsigma = 0.34\n",
        encoding="utf-8",
    )
    calc32 = load_calculator(tmp_path / "lj-kcal.toml", dtype="float32")
    calc64 = load_calculator(tmp_path / "lj-kcal.toml")
    assert calc32.model.dtype == torch.float32
    a32, a64 = ar_crystal.copy(), ar_crystal.copy()
    a32.calc, a64.calc = calc32, calc64
    f32, f64 = a32.get_forces(), a64.get_forces()
    np.testing.assert_allclose(f32, f64, atol=1e-4 * np.abs(f64).max())
    assert not np.array_equal(f32, f64)


def test_bfgs_relaxes_an_argon_cluster_to_fmax():
    atoms = make_ar_cluster(rattle=0.3, seed=4)
    atoms.calc = load_calculator("lj-argon")
    e_start = atoms.get_potential_energy()
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() > 0.05
    optimizer = BFGS(atoms, logfile=None)
    assert optimizer.run(fmax=1e-4, steps=500)
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 1e-4
    assert atoms.get_potential_energy() < e_start
    # a relaxed 13-atom LJ cluster is the icosahedron: 42 nearest-neighbour pairs near r_min
    distances = atoms.get_all_distances()[np.triu_indices(len(atoms), 1)]
    r_min = 2 ** (1 / 6) * SIGMA_AR
    assert np.sum(np.abs(distances - r_min) < 0.1 * r_min) == 42
