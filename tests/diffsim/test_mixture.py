"""DiffSim over compositions: partial RDFs of a binary LJ mixture, their target files, and a
short BPTT fit of one potential per species pair.

System: 108 atoms (3 FCC cells) of a binary LJ mixture (METRICS.md §2: σ_AA 0.9, σ_AB 1.0,
σ_BB 1.1, ε = 1; A = Ar, B = Kr, masses 1) at ρ = 0.75, T = 1.2.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ase_mlmd.diffsim.bptt import fit_bptt
from ase_mlmd.diffsim.config import FitConfig
from ase_mlmd.diffsim.engine import Engine, EngineConfig
from ase_mlmd.diffsim.fit import check_states, make_mixture_potential
from ase_mlmd.diffsim.mixture import binary_lj_mixture, simulate_partial_targets
from ase_mlmd.diffsim.systems import ThermoState, initial_atoms, species_counts
from ase_mlmd.diffsim.targets import (
    RDFTarget,
    read_partial_rdf_csv,
    read_targets,
    write_partial_rdf_csv,
)
from ase_mlmd.errors import DataFormatError, InvalidStructureError
from ase_mlmd.models.pair import LennardJones
from ase_mlmd.models.species_pair import SpeciesPairPotential
from ase_mlmd.observables.differentiable import RDFGrid, compute_rdf_torch, species_pairs

SIGMA = {"Ar-Ar": 0.9, "Ar-Kr": 1.0, "Kr-Kr": 1.1}
ENGINE = EngineConfig(equilibration=100, seed=3)
GRID = RDFGrid(0.7, 3.3, 100)


def lj_mixture(sigmas=SIGMA, trainable=False) -> SpeciesPairPotential:
    return SpeciesPairPotential(
        {p: LennardJones(1.0, s, cutoff=2.5, trainable=trainable) for p, s in sigmas.items()}
    )


def mixture_state(x_kr: float, partials=()) -> ThermoState:
    return ThermoState(
        0.75, 1.2, n_cells=3, composition={"Ar": 1 - x_kr, "Kr": x_kr}, partials=list(partials)
    )


def placeholder_partials() -> list[RDFTarget]:
    r = GRID.centres().numpy()
    return [RDFTarget(r, np.ones_like(r), pair=p) for p in SIGMA]


def simulated_mixture_states() -> list[ThermoState]:
    """x_Kr = 0.25 and 0.75 with partial-RDF targets simulated here from the true mixture."""
    states = [mixture_state(x) for x in (0.25, 0.75)]
    simulate_partial_targets(binary_lj_mixture(), states, ENGINE, steps=300, grid=GRID)
    return states


def target_arguments(states: list[ThermoState], folder) -> list[str]:
    """Write each state's partial RDFs as a target file; the ``--target`` CLI arguments."""
    arguments = []
    for k, state in enumerate(states):
        path = folder / f"mix{k}.csv"
        write_partial_rdf_csv(path, state.partials, state.composition, 0.75, 1.2)
        arguments += ["--target", str(path)]
    return arguments


@pytest.fixture(scope="module")
def mixture_targets() -> list[ThermoState]:
    return simulated_mixture_states()


def test_partial_rdfs_add_up_to_the_total_rdf():
    """With the density normalization Σ_ab P_ab g_ab = P g (P = number of pairs): an exact
    identity of the pair counts; an ideal (random) mixture has every g_ab ≈ 1."""
    rng = np.random.default_rng(0)
    n, length = 400, 9.0
    positions = torch.as_tensor(rng.uniform(0, length, (4, n, 3)))
    cell = torch.eye(3, dtype=torch.float64) * length
    numbers = torch.as_tensor(rng.choice([18, 36], n, p=[0.3, 0.7]))
    grid = RDFGrid(1.0, 4.0, 60)
    total = compute_rdf_torch(positions, cell, grid, "density")
    summed = torch.zeros_like(total)
    for a, b in ((18, 18), (18, 36), (36, 36)):
        pairs = species_pairs(numbers, a, b)
        partial = compute_rdf_torch(positions, cell, grid, "density", pairs=pairs)
        summed += len(pairs[0]) * partial
        assert abs(float(partial.mean()) - 1.0) < 0.05, (a, b)
    torch.testing.assert_close(summed / (n * n / 2), total, rtol=1e-12, atol=0)
    assert len(species_pairs(numbers, 18, 36)[0]) == int(
        (numbers == 18).sum() * (numbers == 36).sum()
    )


def test_partial_rdf_file_round_trip_and_errors(tmp_path):
    targets = placeholder_partials()
    path = write_partial_rdf_csv(tmp_path / "mix.csv", targets, {"Ar": 0.25, "Kr": 0.75}, 0.75, 1.2)
    read, composition = read_partial_rdf_csv(path)
    assert composition == {"Ar": 0.25, "Kr": 0.75}
    assert [t.pair for t in read] == list(SIGMA)
    assert read[0].density == 0.75 and read[0].temperature == 1.2
    np.testing.assert_allclose(read[1].r, targets[1].r, rtol=1e-9)
    assert read_targets(path)[1] == composition
    lines = path.read_text().splitlines()
    cases = {
        "no_header": ("\n".join(lines[4:]), "pairs"),
        "rows": ("\n".join(lines[:-1]), "need 4 rows"),
        "element": ("\n".join([lines[0].replace("Kr-Kr", "Xe-Xe"), *lines[1:]]), "Xe"),
        "fractions": ("\n".join([lines[0], "# composition: Ar:0.3,Kr:0.3", *lines[2:]]), "sum"),
    }
    for name, (text, match) in cases.items():
        bad = tmp_path / f"{name}.csv"
        bad.write_text(text + "\n")
        reader = read_targets if name == "no_header" else read_partial_rdf_csv
        with pytest.raises(DataFormatError, match=match):
            reader(bad)


def test_mixture_state_start_and_channels():
    state = mixture_state(0.25, placeholder_partials())
    assert state.name == "rho0.75_T1.2_Ar0.75Kr0.25" and state.is_mixture
    atoms = initial_atoms(state, seed=1)
    assert (
        atoms.get_chemical_symbols().count("Kr")
        == 27
        == species_counts(state.composition, 108)["Kr"]
    )
    assert np.allclose(atoms.get_masses(), 1.0)
    engine = Engine(binary_lj_mixture(), [state], ENGINE)
    assert [c.name for c in engine.channels] == [f"{state.name}[{p}]" for p in SIGMA]
    assert [len(c.pairs[0]) for c in engine.channels] == [81 * 80 // 2, 81 * 27, 27 * 26 // 2]
    with pytest.raises(InvalidStructureError, match="Xe"):
        ThermoState(
            0.75,
            1.2,
            composition={"Ar": 1.0},
            partials=[RDFTarget(GRID.centres().numpy(), np.ones(100), pair="Xe-Xe")],
        )
    with pytest.raises(InvalidStructureError, match="sum to 1"):
        ThermoState(0.75, 1.2, composition={"Ar": 0.5, "Kr": 0.6})


def test_mixtures_need_a_species_pair_potential(mixture_targets):
    with pytest.raises(ValueError, match="SpeciesPairPotential"):
        check_states(mixture_targets, 2.5, "bptt", LennardJones(trainable=True))
    with pytest.raises(ValueError, match="SpeciesPairPotential"):
        check_states(mixture_targets, 2.5, "reweighting", None)
    check_states(mixture_targets, 2.5, "bptt", make_mixture_potential(["Ar", "Kr"]))


def test_short_bptt_fit_moves_each_sigma_toward_the_truth(mixture_targets):
    """From σ = 1 for every pair, a few BPTT epochs on the partial RDFs of two compositions
    shrink σ_ArAr and grow σ_KrKr (the truth: 0.9 and 1.1)."""
    potential = lj_mixture({p: 1.0 for p in SIGMA}, trainable=True)
    config = FitConfig(
        epochs=4,
        window=20,
        rdf_every=2,
        lr=0.01,
        engine=ENGINE,
        table_spacing=0.005,
        heldout_every=0,  # the gradient method itself (best-iterate: test_best_iterate.py)
    )
    result = fit_bptt(potential, mixture_targets, config, log=lambda m: None, progress=False)
    assert len(result.states) == 6 and all(math.isfinite(h["loss"]) for h in result.history)
    sigma = {p: float(potential[p].sigma.detach()) for p in SIGMA}
    assert sigma["Ar-Ar"] < 1.0 - 0.02 and sigma["Kr-Kr"] > 1.0 + 0.02, sigma


def test_cli_fits_a_mixture_card_that_runs_as_a_calculator(mixture_targets, tmp_path, capsys):
    """``diffsim fit`` on two partial-RDF files: one neural φ per species pair, a
    ``species-pair`` card, U(r) errors per pair against the true mixture."""
    from ase_mlmd import load_calculator
    from ase_mlmd.cli.main import main

    paths = target_arguments(mixture_targets, tmp_path)
    out = tmp_path / "fit"
    tiny = ["--cells", "3", "--equilibration", "20", "--production-steps", "20", "--no-progress",
            "--heldout-every", "0"]  # fmt: skip
    main(
        ["diffsim", "fit", *paths, "--epochs", "2", "--window", "10", "--init", "pmf"]
        + ["--true-potential", "lj-mixture", "-o", str(out), *tiny]
    )
    printed = capsys.readouterr().out
    assert "rdf_dev rho0.75_T1.2_Ar0.75Kr0.25[Ar-Kr]" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["u_error_per_pair"]) == set(SIGMA)
    assert (out / "rdf_rho0.75_T1.2_Ar0.25Kr0.75[Kr-Kr].png").is_file()
    assert 'backend = "species-pair"' in (out / "card.toml").read_text()
    calc = load_calculator(out / "card.toml")
    atoms = initial_atoms(mixture_targets[0])
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy()) and set(calc.model.species) == {18, 36}
