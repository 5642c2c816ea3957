"""The helix-folding control demo: the chain model, the loss, gradients through the controlled
dynamics (finite differences) and a short training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.calculators.lj import LennardJones as AseLennardJones
from ase.io import read
from scipy.spatial.transform import Rotation

from ase_mlmd.calculators.ml_calculator import MLCalculator
from ase_mlmd.diffsim.bead_chain import (
    BeadChain,
    ControlNet,
    chain_atoms,
    extended_chain,
    helix_positions,
)
from ase_mlmd.diffsim.control import (
    ControlConfig,
    control_loss,
    run_episode,
    target_helix,
    train_control,
)
from ase_mlmd.diffsim.geometry import bond_angles, bond_lengths, dihedral_angles, kabsch_rmsd
from ase_mlmd.testing import check_batch_consistency, check_forces, check_nve_drift

WCA_CUTOFF = 2 ** (1 / 6)


def controlled_chain(hidden: int = 16, seed: int = 1) -> BeadChain:
    """A chain with a random (non-zero) control network."""
    return BeadChain(100.0, 1.0, control=ControlNet(hidden, seed=seed, zero_output=False))


def crumpled_chain(n: int = 10, seed: int = 0):
    """A random-walk chain with bonds of 1.05 σ whose non-bonded beads come within the WCA
    range but not closer than 0.9 σ (steeper contacts would swamp finite differences)."""
    rng = np.random.default_rng(seed)
    x = [np.zeros(3)]
    while len(x) < n:
        step = rng.normal(size=3)
        candidate = x[-1] + 1.05 * step / np.linalg.norm(step)
        if all(np.linalg.norm(candidate - y) >= 0.9 for y in x[:-1]):
            x.append(candidate)
    return chain_atoms(np.array(x))


# ------------------------------------------------------------------ the chain model
def test_chain_forces_and_nve_with_ase():
    atoms = crumpled_chain()
    d = atoms.get_all_distances()
    close = [(i, j) for i in range(len(d)) for j in range(i + 2, len(d)) if d[i, j] < WCA_CUTOFF]
    assert close, "the test chain should have non-bonded contacts inside the WCA range"
    calc = MLCalculator(controlled_chain())
    check_forces(calc, atoms, atol=1e-6)
    # 0.05 fs = 0.005 τ in reduced units (bond period ≈ 0.44 τ)
    drift = check_nve_drift(calc, atoms, steps=100, timestep_fs=0.05, temperature_K=300.0)
    assert drift < 1e-3


def test_chain_energy_is_invariant_under_rigid_motions():
    atoms = crumpled_chain(seed=1)
    calc = MLCalculator(controlled_chain())
    moved = atoms.copy()
    e0, f0 = atoms.copy(), None
    e0.calc = calc
    energy, f0 = e0.get_potential_energy(), e0.get_forces()
    rotation = Rotation.random(random_state=2).as_matrix()
    moved.positions = atoms.positions @ rotation.T + np.array([3.0, -2.0, 7.0])
    moved.calc = calc
    assert abs(moved.get_potential_energy() - energy) < 1e-10
    np.testing.assert_allclose(moved.get_forces(), f0 @ rotation.T, atol=1e-10)
    # the mirror image has other control features (chiral triple products): another energy
    mirror = atoms.copy()
    mirror.positions = atoms.positions * np.array([1.0, 1.0, -1.0])
    mirror.calc = calc
    assert abs(mirror.get_potential_energy() - energy) > 1e-6


def test_plain_chain_equals_bonds_plus_lennard_jones_cut_at_its_minimum():
    """WCA is Lennard-Jones truncated at 2^(1/6) σ and shifted up by ε: ASE's LennardJones
    with rc = 2^(1/6) σ and smooth=False. Bonds at r₀ > rc contribute nothing to either."""
    r0 = 1.2
    # four beads, bonds r₀, bond angles 50° (i, i+2 at 1.01 σ), dihedral 60°
    angle, dihedral = np.radians(50.0), np.radians(60.0)
    b1 = np.array([r0, 0.0, 0.0])
    b2 = b1 + r0 * np.array([-np.cos(angle), np.sin(angle), 0.0])
    back = (b1 - b2) / r0
    side = np.array([np.sin(angle), np.cos(angle), 0.0])
    out = np.cos(dihedral) * side + np.sin(dihedral) * np.array([0.0, 0.0, 1.0])
    b3 = b2 + r0 * (np.cos(angle) * back + np.sin(angle) * out)
    atoms = chain_atoms(np.array([np.zeros(3), b1, b2, b3]))
    d = atoms.get_all_distances()
    assert d[0, 2] < WCA_CUTOFF and d[1, 3] < WCA_CUTOFF  # two repulsive non-bonded pairs
    reference = atoms.copy()
    reference.calc = AseLennardJones(sigma=1.0, epsilon=1.0, rc=WCA_CUTOFF, smooth=False)
    ours = atoms.copy()
    ours.calc = MLCalculator(BeadChain(bond_k=50.0, bond_length=r0))
    assert ours.get_potential_energy() > 0.1
    assert abs(ours.get_potential_energy() - reference.get_potential_energy()) < 1e-10
    np.testing.assert_allclose(ours.get_forces(), reference.get_forces(), atol=1e-9)

    # stretched bonds and no contacts: ½ k Σ (r − r₀)²
    straight = chain_atoms(np.array([[0.0, 0, 0], [1.3, 0, 0], [2.5, 0, 0], [4.0, 0, 0]]))
    straight.calc = MLCalculator(BeadChain(bond_k=50.0, bond_length=r0))
    expected = 0.5 * 50.0 * ((1.3 - r0) ** 2 + (1.2 - r0) ** 2 + (1.5 - r0) ** 2)
    assert abs(straight.get_potential_energy() - expected) < 1e-12


def test_chains_in_a_batch_do_not_interact():
    calc = MLCalculator(controlled_chain())
    chains = [crumpled_chain(10, seed=3), crumpled_chain(7, seed=4), crumpled_chain(5, seed=5)]
    check_batch_consistency(calc, chains)


# ------------------------------------------------------------------ target and loss
def test_default_helix_is_alpha_helix_like_and_a_minimum_of_the_plain_chain():
    config = ControlConfig()
    helix = torch.from_numpy(target_helix(config))
    assert helix.shape == (22, 3)
    np.testing.assert_allclose(bond_lengths(helix).numpy(), config.bond_length, rtol=1e-12)
    # Cα trace of an α-helix: virtual bond angle ≈ 91°, virtual dihedral ≈ +50° (right-handed)
    angles = np.degrees(bond_angles(helix).numpy())
    dihedrals = np.degrees(dihedral_angles(helix).numpy())
    assert np.allclose(angles, angles[0]) and 85 < angles[0] < 97
    assert np.allclose(dihedrals, dihedrals[0]) and 40 < dihedrals[0] < 60
    # no clashes and no stretched bonds: zero energy and forces without control
    atoms = chain_atoms(helix.numpy())
    atoms.calc = MLCalculator(BeadChain(config.bond_k, config.bond_length))
    assert abs(atoms.get_potential_energy()) < 1e-12
    assert np.abs(atoms.get_forces()).max() < 1e-10


def test_control_loss_is_zero_at_the_helix_and_invariant_under_rigid_motions():
    helix = helix_positions(12, 0.605, 1.422)
    target = torch.from_numpy(helix)
    rotated = Rotation.random(random_state=0).apply(helix) + np.array([1.0, 2.0, 3.0])
    for chain in (helix, rotated):
        terms = control_loss(torch.from_numpy(chain), target)
        assert all(float(v) < 1e-20 for v in terms.values())

    chain = extended_chain(12, 1.0, 150.0, noise=0.1, seed=1)
    moved = Rotation.random(random_state=1).apply(chain) - 4.0
    a = control_loss(torch.from_numpy(chain), target)
    b = control_loss(torch.from_numpy(moved), target)
    assert float(a["total"]) > 1.0
    for name in a:
        assert abs(float(a[name]) - float(b[name])) < 1e-12 * max(1.0, float(a[name]))
    # batch dimensions are kept
    batch = torch.from_numpy(np.stack([chain, moved, helix]))
    assert control_loss(batch, target)["total"].shape == (3,)

    # the mirror image has the same distances and angles; only the dihedral term sees it
    mirror = control_loss(torch.from_numpy(helix * np.array([1.0, 1.0, -1.0])), target)
    assert float(mirror["pair"]) < 1e-20 and float(mirror["angle"]) < 1e-20
    assert float(mirror["dihedral"]) > 1.0


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="multiple of window"):
        ControlConfig(steps=100, window=30)
    with pytest.raises(ValueError, match="unknown loss terms"):
        ControlConfig(weights={"torsion": 1.0})
    with pytest.raises(ValueError, match="n_beads"):
        ControlConfig(n_beads=4)


# ------------------------------------------------------------------ gradients through MD
@pytest.mark.parametrize("log_loss", [False, True])
def test_gradient_through_controlled_dynamics_matches_finite_differences(log_loss):
    """d(objective)/dθ along a random direction of the control network's parameters, for a
    deterministic (seeded) Langevin run of one window, against central finite differences."""
    config = ControlConfig(
        n_beads=8, steps=25, window=25, replicas=2, hidden=8, loss_from=0.0, log_loss=log_loss
    )
    model = BeadChain(config.bond_k, config.bond_length, control=ControlNet(8, 3, False))
    run_episode(model, config, seed=11, train=True)
    params = list(model.control.parameters())
    rng = np.random.default_rng(0)
    direction = [torch.from_numpy(rng.normal(size=p.shape)) for p in params]
    # the last bias is a constant energy offset: no force, no gradient (grad None)
    assert params[-1].grad is None and all(p.grad is not None for p in params[:-1])
    autograd = sum(float((p.grad * d).sum()) for p, d in zip(params[:-1], direction, strict=False))
    assert abs(autograd) > 1e-6

    def objective(t: float) -> float:
        with torch.no_grad():
            saved = [p.clone() for p in params]
            for p, d in zip(params, direction, strict=True):
                p.add_(t * d)
            value = run_episode(model, config, seed=11).objective
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
        return float(np.log(value)) if log_loss else value

    h = 1e-5
    numerical = (objective(h) - objective(-h)) / (2 * h)
    assert abs(autograd - numerical) < 1e-6 * abs(numerical), (autograd, numerical)


# ------------------------------------------------------------------ training
def test_short_training_folds_the_chain_towards_the_helix(tmp_path):
    """A 10-bead chain, 20 episodes: the learned control brings the evaluation run (held-out
    noise) far closer to the helix than the uncontrolled chain (seen: loss 10.2 -> 0.31,
    RMSD 1.69 -> 0.42 σ)."""
    config = ControlConfig(
        n_beads=10, steps=100, window=50, timestep=0.02, replicas=4, epochs=20, lr=1e-2
    )
    result = train_control(config, output_dir=tmp_path, progress=False)
    initial_loss = float(result.initial.final_terms["total"].mean())
    initial_rmsd = float(result.initial.rmsd.mean())
    assert initial_loss > 5.0 and initial_rmsd > 1.0  # the start is far from the helix
    assert result.final_loss < 0.2 * initial_loss, result.table()
    assert result.rmsd < 0.5 * initial_rmsd, result.table()
    assert not result.log and len(result.history) == config.epochs
    # the reported RMSD is that of the written final chains
    frames = read(tmp_path / "control_final.extxyz", index=":")
    assert len(frames) == config.replicas + 1  # replicas, then the target
    np.testing.assert_allclose(frames[-1].positions, result.target, atol=1e-6)
    rmsd = [kabsch_rmsd(a.positions, result.target) for a in frames[:-1]]
    np.testing.assert_allclose(rmsd, result.final.rmsd, atol=1e-5)
    for kind in ("chain_png", "loss_png", "table_md"):
        assert Path(result.files[kind]).stat().st_size > 0
    assert "learned control" in (tmp_path / "control.md").read_text()


def test_training_is_deterministic():
    config = ControlConfig(n_beads=6, steps=20, window=10, replicas=2, epochs=2, hidden=8)
    first = train_control(config, progress=False)
    second = train_control(config, progress=False)
    assert first.history == second.history
    np.testing.assert_array_equal(first.final.final_positions, second.final.final_positions)
