"""Yukawa, soft sphere, neural pair and spline pair potentials against independent references.

References: numpy pair sums over ASE's ``neighbor_list`` with the analytic φ and φ' and ASE's own
switching function; scipy's natural ``CubicSpline``; ASE's ``LennardJones`` for a tabulated LJ;
a numpy re-evaluation of the neural pair's MLP from its weights; and the conformance checks of
``ase_mlmd.testing`` (finite-difference forces and stress, invariances, batch == single, NVE).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.lj import LennardJones as AseLennardJones
from ase.calculators.morse import fcut, fcut_d
from ase.neighborlist import neighbor_list
from conftest import assert_matches, make_ar_cluster, make_ar_crystal, results
from scipy.interpolate import CubicSpline

from ase_mlmd import MLCalculator, load_calculator
from ase_mlmd.diffsim.report import export_card
from ase_mlmd.errors import CardError, ChecksumMismatchError
from ase_mlmd.models.neural_pair import NeuralPair
from ase_mlmd.models.pair import LennardJones, SoftSphere, Yukawa
from ase_mlmd.models.spline_pair import (
    SplinePair,
    hermite_energy_basis,
    spline_from_potential,
    tabulate,
)
from ase_mlmd.testing import check_calculator

# reduced-unit structures: argon geometry scaled so that nearest neighbours sit near 1.1 Å
SCALE = 1.1 / 3.72


def scaled(atoms: Atoms) -> Atoms:
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell * SCALE, scale_atoms=True)
    if not atoms.pbc.any():
        atoms.positions *= SCALE
    return atoms


CRYSTAL = scaled(make_ar_crystal(repeat=2, rattle=0.1))
CLUSTER = scaled(make_ar_cluster(rattle=0.2))


def reference_pair(atoms: Atoms, phi, dphi, rc: float, r_on: float) -> dict:
    """Energy, forces, stress of Σ_pairs φ·S with ASE's neighbor list and switching function."""
    i, _, d, vec = neighbor_list("ijdD", atoms, rc)
    s = fcut(d, r_on, rc)
    e = phi(d) * s
    de = dphi(d) * s + phi(d) * fcut_d(d, r_on, rc)
    pair_forces = (de / d)[:, None] * vec
    forces = np.stack(
        [np.bincount(i, weights=pair_forces[:, k], minlength=len(atoms)) for k in range(3)], 1
    )
    out = {"energy": 0.5 * e.sum(), "forces": forces}
    if atoms.pbc.all():
        stress = 0.5 * vec.T @ pair_forces / atoms.get_volume()
        out["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]
    return out


# --- analytic additions ------------------------------------------------------------------


@pytest.mark.parametrize("atoms", [CRYSTAL, CLUSTER], ids=["crystal", "cluster"])
def test_yukawa_equals_analytic_pair_sum(atoms):
    a, kappa, rc, r_on = 3.0, 1.7, 2.5, 2.0
    model = Yukawa(a, kappa, cutoff=rc, r_on=r_on)

    def phi(r):
        return a * np.exp(-kappa * r) / r

    def dphi(r):
        return -a * np.exp(-kappa * r) * (kappa * r + 1) / r**2

    assert_matches(results(MLCalculator(model), atoms), reference_pair(atoms, phi, dphi, rc, r_on))


@pytest.mark.parametrize("atoms", [CRYSTAL, CLUSTER], ids=["crystal", "cluster"])
def test_soft_sphere_equals_analytic_pair_sum(atoms):
    eps, sigma, n, rc, r_on = 0.8, 1.05, 9.0, 2.4, 2.0
    model = SoftSphere(eps, sigma, n, cutoff=rc, r_on=r_on)

    def phi(r):
        return eps * (sigma / r) ** n

    def dphi(r):
        return -n * eps * sigma**n / r ** (n + 1)

    assert_matches(results(MLCalculator(model), atoms), reference_pair(atoms, phi, dphi, rc, r_on))


def test_soft_sphere_rejects_non_positive_exponent():
    with pytest.raises(ValueError, match="exponent"):
        SoftSphere(n=0.0)


@pytest.mark.parametrize(
    "model",
    [
        Yukawa(2.0, 1.5, cutoff=2.5),
        SoftSphere(1.0, 1.0, 12.0, cutoff=2.5),
        NeuralPair(cutoff=2.5, hidden=16, layers=2, seed=3),
        spline_from_potential(LennardJones(cutoff=2.5, cutoff_mode="smooth", r_on=2.0), 0.5, 500),
    ],
    ids=["yukawa", "soft-sphere", "neural-pair", "spline-pair"],
)
def test_new_pair_potentials_pass_conformance_checks(model):
    report = check_calculator(
        MLCalculator(model), CLUSTER, CRYSTAL, timestep_fs=0.05, temperature_K=3000.0
    )
    assert {"forces_periodic", "stress_periodic", "nve_drift_molecule"} <= set(report)


# --- neural pair ---------------------------------------------------------------------------


def numpy_neural_pair(model: NeuralPair, r: np.ndarray) -> np.ndarray:
    """φ(r)·S(r) recomputed in numpy from the model's weights and hyperparameters."""
    h = model.hyperparameters()
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    centres = np.linspace(h["basis_start"], h["cutoff"], h["n_basis"])
    x = np.exp(-0.5 * ((r[:, None] - centres) / h["basis_width"]) ** 2)
    n_linear = h["layers"] + 1
    for k in range(n_linear):
        x = x @ state[f"mlp.{2 * k}.weight"].T + state[f"mlp.{2 * k}.bias"]
        if k < n_linear - 1:
            x = np.where(x > 0, x, np.expm1(x))  # ELU
    prior = 4 * h["prior_epsilon"] * (h["prior_sigma"] / r) ** h["prior_n"]
    phi = x[:, 0] + prior
    return phi * fcut(r, h["r_on"], h["cutoff"]) * (r < h["cutoff"])


def test_neural_pair_equals_numpy_evaluation_of_its_weights():
    model = NeuralPair(cutoff=2.5, seed=0)
    with torch.no_grad():  # make the MLP matter: scale up the small initial output layer
        model.mlp[-1].weight.mul_(30.0)
    r = np.linspace(0.7, 2.7, 401)
    ours = model.cut_pair_energy(torch.as_tensor(r)).detach().numpy()
    np.testing.assert_allclose(ours, numpy_neural_pair(model, r), rtol=1e-10, atol=1e-12)
    assert np.abs(ours - numpy_neural_pair(NeuralPair(cutoff=2.5, seed=1), r)).max() > 1e-3


def test_neural_pair_is_smooth_at_the_cutoff_and_seeded():
    model = NeuralPair(cutoff=2.5, seed=5)
    r = torch.tensor([2.5 - 1e-6, 2.5, 2.6], dtype=torch.float64, requires_grad=True)
    energy = model.cut_pair_energy(r)
    (force,) = torch.autograd.grad(energy.sum(), r)
    assert energy.abs().max() < 1e-12 and force.abs().max() < 1e-9
    same = NeuralPair(cutoff=2.5, seed=5)
    for a, b in zip(model.parameters(), same.parameters(), strict=True):
        assert torch.equal(a, b)


def test_neural_pair_card_round_trip(tmp_path):
    model = NeuralPair(cutoff=2.5, hidden=32, layers=2, prior_m=3.0, seed=2)
    card = export_card(model, tmp_path, name="np-test")
    loaded = load_calculator(card)  # safetensors: no trust needed
    ours, theirs = results(MLCalculator(model), CRYSTAL), results(loaded, CRYSTAL)
    assert_matches(theirs, ours, rtol=1e-13)
    # a changed weights file is refused by its checksum
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ChecksumMismatchError):
        load_calculator(card)


def test_card_whose_weights_do_not_fit_its_parameters_is_refused(tmp_path):
    export_card(NeuralPair(cutoff=2.5, hidden=32, layers=2, seed=0), tmp_path)
    text = (tmp_path / "card.toml").read_text().replace("hidden = 32", "hidden = 16")
    (tmp_path / "card.toml").write_text(text)
    with pytest.raises(CardError, match="do not fit"):
        load_calculator(tmp_path / "card.toml")


def test_export_refuses_nan_parameters(tmp_path):
    model = NeuralPair(cutoff=2.5, hidden=8, layers=1, seed=0)
    with torch.no_grad():
        model.mlp[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        export_card(model, tmp_path)
    assert not (tmp_path / "card.toml").exists()


# --- spline pair ---------------------------------------------------------------------------


def test_natural_spline_equals_scipy():
    knots = np.linspace(0.8, 2.5, 40)
    values = np.cos(3 * knots) / knots
    spline = SplinePair(0.8, 2.5, 40, values=values)
    r = np.linspace(0.8, 2.5, 997)
    ours = spline.pair_energy(torch.as_tensor(r)).numpy()
    ref = CubicSpline(knots, values, bc_type="natural")(r)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_spline_reproduces_tabulated_lennard_jones():
    """A Hermite table of LJ (2000 knots) gives ASE's LJ energies, forces and stress."""
    lj = LennardJones(1.0, 1.0, cutoff=2.5, cutoff_mode="shift")
    spline = spline_from_potential(lj, 0.5, 2001)
    ref = results(AseLennardJones(epsilon=1.0, sigma=1.0, rc=2.5, smooth=False), CRYSTAL)
    assert_matches(results(MLCalculator(spline), CRYSTAL), ref, rtol=1e-7)


def test_spline_card_round_trip_and_energy_basis(tmp_path):
    values, derivatives = tabulate(Yukawa(2.0, 1.0, cutoff=2.5), 0.6, 300)
    spline = SplinePair(0.6, 2.5, 300, values, derivatives)
    loaded = load_calculator(export_card(spline, tmp_path))
    assert_matches(results(loaded, CRYSTAL), results(MLCalculator(spline), CRYSTAL), 1e-13)
    # the energy is linear in the table: Σ φ(r) = B · (values, derivatives)
    r = torch.linspace(0.3, 2.49, 1000, dtype=torch.float64)
    basis = hermite_energy_basis(r, 0.6, spline.spacing, 300)
    expected = float(spline.pair_energy(r).sum())
    assert float(basis @ torch.cat([values, derivatives])) == pytest.approx(expected, rel=1e-12)


def test_spline_rejects_bad_tables():
    with pytest.raises(ValueError, match="entries"):
        SplinePair(0.5, 2.5, 10, values=np.zeros(9))
    with pytest.raises(ValueError, match="r_min"):
        SplinePair(2.6, 2.5, 10)
