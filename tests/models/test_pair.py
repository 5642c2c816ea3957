"""Pair potentials (Lennard-Jones n-m, Morse) against independent references.

References: ASE's own ``LennardJones`` (smooth=False is our "shift" mode) and
``MorsePotential`` (its quintic switch is our "smooth" mode), and, for the modes ASE does not
implement, a numpy pair sum over ASE's ``neighbor_list`` with ASE's own switching function.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.lj import LennardJones as AseLennardJones
from ase.calculators.morse import MorsePotential as AseMorse
from ase.calculators.morse import fcut, fcut_d
from ase.neighborlist import neighbor_list
from conftest import AR_LATTICE, make_ar_cluster, make_ar_crystal
from scipy.optimize import minimize_scalar

from ase_mlmd import MLCalculator, load_calculator
from ase_mlmd.batch import batch_from_atoms
from ase_mlmd.models.interface import evaluate
from ase_mlmd.models.pair import LennardJones, Morse, lennard_jones_minimum
from ase_mlmd.testing import check_calculator

EPS_AR, SIGMA_AR, RC_AR = 0.0104, 3.40, 8.5  # eV, Å, Å
RTOL = 1e-10


def _structures() -> dict[str, Atoms]:
    slab = make_ar_crystal(repeat=2, seed=3)
    slab.pbc = [True, True, False]
    slab.cell[2] = [0.0, 0.0, 30.0]
    return {
        "crystal": make_ar_crystal(),
        "cluster": make_ar_cluster(),
        "primitive": bulk("Ar", "fcc", a=AR_LATTICE),  # one atom, cell << 2 r_c
        "slab": slab,
    }


STRUCTURES = _structures()


def _assert_close(actual, reference, rtol=RTOL, what="", floor=1e-6):
    """Relative agreement, measured against the largest reference entry (at least ``floor``,
    far below the eV-, eV/Å- and eV/Å^3-scale values compared here, for entries that vanish
    by symmetry)."""
    reference = np.asarray(reference, dtype=float)
    actual = np.asarray(actual, dtype=float)
    scale = max(float(np.abs(reference).max()), floor)
    error = float(np.abs(actual - reference).max()) / scale
    assert error <= rtol, f"{what}: relative error {error:.3e} > {rtol:.0e}"


def _results(calc, atoms: Atoms) -> dict[str, np.ndarray]:
    a = atoms.copy()
    a.calc = calc
    out = {
        "energy": a.get_potential_energy(),
        "energies": a.get_potential_energies(),
        "forces": a.get_forces(),
    }
    if a.pbc.all():
        out["stress"] = a.get_stress()
    return out


def _compare(ours: dict, reference: dict, rtol=RTOL):
    for key in ours:
        _assert_close(ours[key], reference[key], rtol, key)
    assert abs(reference["energy"]) > 1e-3, "reference energy is ~0: the comparison is empty"


def reference_pair(atoms: Atoms, phi, dphi, rc: float, mode: str, r_on: float = 0.0) -> dict:
    """E = 1/2 Σ_i Σ_j φ̃(r_ij) with ASE's neighbor list; forces and stress from φ̃'."""
    i, _, d, vec = neighbor_list("ijdD", atoms, rc)
    if mode == "none":
        e, de = phi(d), dphi(d)
    elif mode == "shift":
        e, de = phi(d) - phi(rc), dphi(d)
    else:
        s = fcut(d, r_on, rc)
        e, de = phi(d) * s, dphi(d) * s + phi(d) * fcut_d(d, r_on, rc)
    pair_forces = (de / d)[:, None] * vec
    out = {
        "energies": np.bincount(i, weights=0.5 * e, minlength=len(atoms)),
        "forces": np.stack(
            [np.bincount(i, weights=pair_forces[:, k], minlength=len(atoms)) for k in range(3)],
            axis=1,
        ),
    }
    out["energy"] = out["energies"].sum()
    if atoms.pbc.all():
        stress = 0.5 * vec.T @ pair_forces / atoms.get_volume()
        out["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]
    return out


def mie(epsilon: float, sigma: float, n: float, m: float):
    """φ and φ' of the Mie n-m potential with well depth ε."""
    c = n / (n - m) * (n / m) ** (m / (n - m))

    def phi(r):
        return c * epsilon * ((sigma / r) ** n - (sigma / r) ** m)

    def dphi(r):
        return c * epsilon * (-n * sigma**n / r ** (n + 1) + m * sigma**m / r ** (m + 1))

    return phi, dphi


# --- agreement with ASE's calculators -------------------------------------------------------


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_lennard_jones_shift_equals_ase(name):
    atoms = STRUCTURES[name]
    ours = _results(MLCalculator(LennardJones(EPS_AR, SIGMA_AR, RC_AR, cutoff_mode="shift")), atoms)
    ref = _results(AseLennardJones(epsilon=EPS_AR, sigma=SIGMA_AR, rc=RC_AR, smooth=False), atoms)
    _compare(ours, ref)


@pytest.mark.parametrize("name", list(STRUCTURES))
@pytest.mark.parametrize(
    ("epsilon", "r0", "rho0", "rcut1", "rcut2"),
    [(0.0104, 3.8164, 6.0, 1.9, 2.2), (0.02, 3.6, 4.0, 1.6, 2.3)],
)
def test_morse_smooth_equals_ase(name, epsilon, r0, rho0, rcut1, rcut2):
    atoms = STRUCTURES[name]
    model = Morse(epsilon, r0, rho0, cutoff=rcut2 * r0, cutoff_mode="smooth", r_on=rcut1 * r0)
    ours = _results(MLCalculator(model), atoms)
    ref = _results(AseMorse(epsilon=epsilon, r0=r0, rho0=rho0, rcut1=rcut1, rcut2=rcut2), atoms)
    _compare(ours, ref)


@pytest.mark.parametrize("name", list(STRUCTURES))
@pytest.mark.parametrize("mode", ["none", "smooth", "shift"])
@pytest.mark.parametrize(("n", "m"), [(12, 6), (9, 6)])
def test_lennard_jones_modes_equal_reference_pair_sum(name, mode, n, m):
    atoms = STRUCTURES[name]
    r_on = 7.0
    model = LennardJones(EPS_AR, SIGMA_AR, RC_AR, n=n, m=m, cutoff_mode=mode, r_on=r_on)
    phi, dphi = mie(EPS_AR, SIGMA_AR, n, m)
    _compare(
        _results(MLCalculator(model), atoms), reference_pair(atoms, phi, dphi, RC_AR, mode, r_on)
    )


def test_cutoff_modes_differ_by_what_they_should():
    """ "none" − "shift" per atom is ½ n_neighbors φ(r_c); forces are identical."""
    atoms = STRUCTURES["crystal"]
    none = _results(MLCalculator(LennardJones(EPS_AR, SIGMA_AR, RC_AR, cutoff_mode="none")), atoms)
    shift = _results(MLCalculator(LennardJones(EPS_AR, SIGMA_AR, RC_AR)), atoms)
    phi, _ = mie(EPS_AR, SIGMA_AR, 12, 6)
    n_neighbors = np.bincount(neighbor_list("i", atoms, RC_AR), minlength=len(atoms))
    _assert_close(none["energies"] - shift["energies"], 0.5 * n_neighbors * phi(RC_AR), 1e-9)
    _assert_close(none["forces"], shift["forces"], RTOL, "forces")


# --- the n-m form ----------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m"), [(12, 6), (9, 6), (10, 4)])
def test_mie_well_depth_and_minimum(n, m):
    """The minimum, found numerically on a dimer, is −ε at σ (n/m)^(1/(n−m))."""
    epsilon, sigma = 0.7, 1.3
    calc = MLCalculator(
        LennardJones(epsilon, sigma, cutoff=10 * sigma, n=n, m=m, cutoff_mode="none")
    )

    def dimer_energy(r: float) -> float:
        dimer = Atoms("Ar2", positions=[[0, 0, 0], [0, 0, r]])
        dimer.calc = calc
        return dimer.get_potential_energy()

    found = minimize_scalar(
        dimer_energy, bounds=(0.9 * sigma, 2 * sigma), method="bounded", options={"xatol": 1e-10}
    )
    r_min = sigma * (n / m) ** (1 / (n - m))
    assert found.x == pytest.approx(r_min, rel=1e-6)
    assert found.fun == pytest.approx(-epsilon, rel=1e-10)
    assert lennard_jones_minimum(sigma, n, m) == pytest.approx(r_min, rel=1e-14)
    assert dimer_energy(sigma) == pytest.approx(0.0, abs=1e-14)  # σ is the zero crossing


# --- conformance checks on the shipped cards and a float32 model ----------------------------


@pytest.mark.parametrize("card", ["lj-argon", "morse-argon"])
def test_shipped_cards_pass_conformance_checks(card):
    report = check_calculator(load_calculator(card), make_ar_cluster(), make_ar_crystal())
    assert set(report) >= {"forces_molecule", "stress_periodic", "periodic_images", "batch"}


def test_float32_model_passes_conformance_checks_with_loose_tolerances():
    calc64 = load_calculator("lj-argon")
    calc32 = load_calculator("lj-argon", dtype="float32")
    assert calc32.model.dtype == torch.float32
    cluster, crystal = make_ar_cluster(), make_ar_crystal()
    # float32 energies round at ~1e-7 relative: finite differences need a step of 1e-2
    check_calculator(
        calc32,
        cluster,
        crystal,
        fd_step=1e-2,
        force_atol=2e-4,
        stress_atol=5e-6,
        invariance_atol=5e-6,
        batch_atol=1e-6,
    )
    for atoms in (cluster, crystal):
        r32, r64 = _results(calc32, atoms), _results(calc64, atoms)
        assert r32["forces"].dtype == np.float64  # results come back in float64
        _assert_close(r32["energy"], r64["energy"], 1e-5, "energy")
        _assert_close(r32["forces"], r64["forces"], 1e-4, "forces")
        assert not np.array_equal(r32["forces"], r64["forces"]), "float32 run was not float32"


# --- cutoff behaviour ------------------------------------------------------------------------


def _dimer(calc, r: float) -> tuple[float, float]:
    dimer = Atoms("Ar2", positions=[[0, 0, 0], [0.3 * r, 0.4 * r, np.sqrt(0.75) * r]])
    dimer.calc = calc
    return dimer.get_potential_energy(), float(np.linalg.norm(dimer.get_forces()[0]))


@pytest.mark.parametrize(
    "model",
    [
        LennardJones(EPS_AR, SIGMA_AR, RC_AR, cutoff_mode="smooth", r_on=7.0),
        Morse(0.0104, 3.8164, 6.0, cutoff=RC_AR, cutoff_mode="smooth", r_on=7.0),
    ],
    ids=["lj", "morse"],
)
def test_smooth_cutoff_is_continuous_in_energy_and_force(model):
    calc = MLCalculator(model)
    delta = 1e-4
    e_in, f_in = _dimer(calc, RC_AR - delta)
    e_out, f_out = _dimer(calc, RC_AR + delta)
    assert (e_out, f_out) == (0.0, 0.0)
    s = delta / (RC_AR - 7.0)  # the switch vanishes like s^3, its slope like s^2
    scale = abs(model.pair_energy(torch.tensor([RC_AR], dtype=torch.float64)).item())
    assert abs(e_in) < 20 * scale * s**3
    assert f_in < 100 * scale * s**2 / (RC_AR - 7.0)
    # the switch is really active: at r_on the energy is the bare potential
    e_on, _ = _dimer(calc, 7.0)
    assert e_on == pytest.approx(model.pair_energy(torch.tensor([7.0], dtype=torch.float64)).item())


def test_shift_and_plain_cutoffs_jump_where_smooth_does_not():
    """Controls for the continuity test: "shift" has a force jump, "none" an energy jump."""
    delta = 1e-4
    phi, dphi = mie(EPS_AR, SIGMA_AR, 12, 6)
    shift = MLCalculator(LennardJones(EPS_AR, SIGMA_AR, RC_AR, cutoff_mode="shift"))
    e_in, f_in = _dimer(shift, RC_AR - delta)
    assert e_in == pytest.approx(-dphi(RC_AR) * delta, rel=1e-3)  # continuous energy
    assert f_in == pytest.approx(abs(dphi(RC_AR)), rel=1e-3)  # but the force jumps to 0
    plain = MLCalculator(LennardJones(EPS_AR, SIGMA_AR, RC_AR, cutoff_mode="none"))
    e_in, _ = _dimer(plain, RC_AR - delta)
    e_out, _ = _dimer(plain, RC_AR + delta)
    assert e_in == pytest.approx(phi(RC_AR), rel=1e-3) and e_out == 0.0


def test_cell_smaller_than_cutoff_counts_every_image():
    """A one-atom fcc cell (width 3 Å, cutoff 8.5 Å) equals a 17.5 Å-wide supercell per atom."""
    model = LennardJones(EPS_AR, SIGMA_AR, RC_AR, cutoff_mode="smooth", r_on=7.5)
    calc = MLCalculator(model)
    primitive = bulk("Ar", "fcc", a=AR_LATTICE)
    big = bulk("Ar", "fcc", a=AR_LATTICE, cubic=True).repeat(4)  # 21 Å > 2 r_c
    e_prim = _results(calc, primitive)
    e_big = _results(calc, big)
    _assert_close(e_prim["energy"], e_big["energy"] / len(big), RTOL, "energy per atom")
    _assert_close(e_prim["stress"], e_big["stress"], RTOL, "stress")
    # fcc shells at d·√k (d = a/√2 = 3.72 Å) inside 8.5 Å: k = 1..5 with 12+6+24+12+24 atoms
    batch = batch_from_atoms([primitive], RC_AR)
    assert batch.edge_index.shape[1] == 78 == len(neighbor_list("i", primitive, RC_AR))

    # rattled two-atom cell versus its 6x6x3 supercell: energies and forces
    small = bulk("Ar", "fcc", a=AR_LATTICE).repeat((1, 1, 2))
    small.rattle(0.1, rng=np.random.default_rng(7))
    supercell = small.repeat((6, 6, 3))
    r_small, r_super = _results(calc, small), _results(calc, supercell)
    _assert_close(r_small["energy"], r_super["energy"] / 108, RTOL, "energy per cell")
    _assert_close(np.tile(r_small["forces"], (108, 1)), r_super["forces"], RTOL, "forces")
    assert np.abs(r_small["forces"]).max() > 1e-3


# --- batches ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [LennardJones(EPS_AR, SIGMA_AR, RC_AR, cutoff_mode="smooth", r_on=7.5), Morse(0.0104, 3.8164)],
    ids=["lj", "morse"],
)
def test_batch_of_mixed_systems_equals_single_evaluations(model):
    systems = [
        STRUCTURES["crystal"],
        STRUCTURES["cluster"],
        STRUCTURES["primitive"],
        STRUCTURES["slab"],
        make_ar_cluster(seed=5)[:6],
    ]
    props = ("energy", "energies", "forces")
    batch = batch_from_atoms(systems, model.cutoff)
    together = evaluate(model, batch, props)
    forces = batch.split_per_system(together["forces"])
    energies = batch.split_per_system(together["energies"])
    for k, atoms in enumerate(systems):
        single = evaluate(model, batch_from_atoms([atoms], model.cutoff), props)
        assert together["energy"][k].item() == pytest.approx(single["energy"].item(), rel=RTOL)
        _assert_close(energies[k], single["energies"], RTOL, f"energies {k}")
        _assert_close(forces[k], single["forces"], RTOL, f"forces {k}")

    periodic = [STRUCTURES["crystal"], STRUCTURES["primitive"], make_ar_crystal(1, seed=9)]
    stress = evaluate(model, batch_from_atoms(periodic, model.cutoff), ("stress",))["stress"]
    for k, atoms in enumerate(periodic):
        single = evaluate(model, batch_from_atoms([atoms], model.cutoff), ("stress",))["stress"]
        _assert_close(stress[k], single[0], RTOL, f"stress {k}")


@pytest.mark.parametrize(
    ("cls", "values", "extra"),
    [
        (LennardJones, {"epsilon": EPS_AR, "sigma": SIGMA_AR}, {"cutoff": RC_AR}),
        (
            Morse,
            {"epsilon": 0.0104, "r0": 3.8164, "rho0": 6.0},
            {"cutoff": 2.7 * 3.8164, "r_on": 1.9 * 3.8164},  # fixed when r0 moves
        ),
    ],
    ids=["lj", "morse"],
)
def test_trainable_parameters_give_the_same_model_and_exact_gradients(cls, values, extra):
    """``trainable=True``: same energies and forces as the float version, parameters registered,
    dE/dθ equal to a central finite difference (and dE/dε = E/ε: E is linear in ε)."""
    fixed = cls(**values, **extra)
    learnable = cls(**values, **extra, trainable=True)
    assert {name for name, _ in learnable.named_parameters()} == set(values)
    assert list(fixed.parameters()) == []
    assert repr(learnable) == repr(fixed)[:-1] + ", trainable=True)"
    batch = batch_from_atoms([STRUCTURES["crystal"]], fixed.cutoff)
    reference = evaluate(fixed, batch, ("energy", "forces"))
    result = evaluate(learnable, batch, ("energy", "forces"), create_graph=True)
    _assert_close(result["energy"].detach(), reference["energy"], RTOL, "energy")
    _assert_close(result["forces"].detach(), reference["forces"], RTOL, "forces")

    energy = result["energy"].sum()
    grads = torch.autograd.grad(energy, [getattr(learnable, name) for name in values])
    assert float(grads[0]) == pytest.approx(float(energy.detach()) / values["epsilon"], rel=1e-12)
    for (name, value), grad in zip(values.items(), grads, strict=True):
        h = 1e-6 * value

        def energy_at(x: float, name=name) -> float:
            model = cls(**{**values, name: x}, **extra)
            return float(evaluate(model, batch, ("energy",))["energy"])

        expected = (energy_at(value + h) - energy_at(value - h)) / (2 * h)
        assert float(grad) == pytest.approx(expected, rel=1e-7), name
