"""The benchmark protocol and report, end to end on small systems.

Physics asserted: a model benchmarked against its own reference run has zero force error and an
RDF that matches the reference within sampling noise, while another potential does not have zero
force error; a model that cannot hold a molecule together collapses and is reported as collapsed
(never dropped); the protocol uses MDsim's thermostat settings.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import molecule

from ase_mlmd.bench import BenchConfig, benchmark, get_system
from ase_mlmd.cli.bench import parse_length_ps
from ase_mlmd.cli.demo import liquid_argon
from ase_mlmd.data import SamplingConfig, sample_reference
from ase_mlmd.errors import IncompatibleTrajectoriesError


@pytest.fixture(scope="module")
def argon_reference(tmp_path_factory):
    """A labelled liquid-argon run of the lj-argon card (108 atoms, 94.4 K, 5 fs)."""
    out = tmp_path_factory.mktemp("argon") / "argon_ref.extxyz"
    config = SamplingConfig(
        temperature=94.4,
        timestep=5.0,
        steps=300,
        every=10,
        ensemble="nvt-langevin",
        friction=0.01,
        seed=1,
    )
    frames = sample_reference(liquid_argon(), "lj-argon", config, out, progress=False)
    return frames[5:]


def argon_reference_rdf(frames):
    from ase_mlmd.observables import compute_rdf

    return compute_rdf(frames, pairs="Ar-Ar", r_max=8.0)[1]["Ar-Ar"]


def test_protocol_settings_follow_mdsim():
    ethanol = get_system("ethanol")
    settings = ethanol.engine_settings()
    assert settings["ensemble"] == "nvt-nose-hoover"
    assert settings["tdamp"] == pytest.approx(20 * 0.5)  # ttime = 20 steps
    assert settings["chain_length"] == 1  # Q = 3 N kB T (ttime dt)^2
    assert ethanol.save_every_steps == 100  # 0.05 ps at 0.5 fs
    assert ethanol.steps(300.0) == 600_000
    water = get_system("water")
    assert water.timestep_fs == 1.0 and water.temperature_K == 300.0
    assert get_system("ala2").engine_settings()["friction"] == pytest.approx(0.5e-3)
    with pytest.raises(ValueError, match="unknown benchmark system"):
        get_system("benzene-dimer")


def test_parse_length():
    assert parse_length_ps("50ps") == 50.0
    assert parse_length_ps("500 fs") == pytest.approx(0.5)
    assert parse_length_ps("1ns") == 1000.0
    with pytest.raises(ValueError, match="50ps"):
        parse_length_ps("fifty")


def test_lj_benchmark_against_its_own_reference(argon_reference, tmp_path):
    report, runs = benchmark(
        ["lj-argon", "morse-argon"],
        argon_reference,
        tmp_path,
        system="lj",
        replicas=1,
        length_ps=1.5,
        progress=False,
        log=lambda *_: None,
    )
    lj, morse = runs
    assert lj.force_mae_meV_A < 1e-4  # labels are its own forces (extxyz text round-off)
    assert morse.force_mae_meV_A > 1.0
    for run in runs:
        assert run.metrics["n_collapsed"] == 0
        assert run.metrics["stability_ps"] == [pytest.approx(1.5)]
        assert len(run.replicas[0].frames) == 16  # every 0.1 ps, step 0 included
    # same potential, same state: the RDFs agree within the noise of 16 vs 26 frames of 108
    # atoms on 500 bins (MAE ≈ 0.9 here), and the first peak sits at the same distance
    assert lj.metrics["rdf_mae"]["Ar-Ar"] < 1.2
    r, g = lj.curves["rdf"]
    reference_g = argon_reference_rdf(argon_reference)
    assert abs(r[np.argmax(g["Ar-Ar"])] - r[np.argmax(reference_g)]) < 0.15
    text = report.read_text()
    assert "| lj-argon | 0.0 |" in text and "morse-argon" in text
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert [m["name"] for m in record["models"]] == ["lj-argon", "morse-argon"]
    assert (tmp_path / "rdf_Ar-Ar.png").stat().st_size > 0
    assert (tmp_path / "stability.png").stat().st_size > 0


def test_collapsing_model_is_reported_not_dropped(tmp_path):
    """LJ argon parameters pull ethanol's bonded atoms 3.4 Å apart: every replica breaks."""
    config = SamplingConfig(temperature=500, timestep=0.5, steps=60, every=2, seed=3)
    reference = sample_reference(
        molecule("CH3CH2OH"),
        "gfn2-xtb",
        config,
        tmp_path / "ref.extxyz",
        progress=False,
        threads=1,
    )
    report, (run,) = benchmark(
        ["lj-argon"],
        reference,
        tmp_path / "report",
        BenchConfig(system="ethanol", replicas=3, length_ps=0.5, progress=False),
        log=lambda *_: None,
    )
    assert len(run.replicas) == 3
    assert run.metrics["n_collapsed"] == 3
    stability = np.array(run.metrics["stability_ps"])
    assert (stability < 0.5).all() and (stability >= 0).all()
    assert all(rep.status == "collapsed" for rep in run.replicas)
    assert "3/3" in report.read_text()


def test_reference_must_be_one_system(argon_reference, tmp_path):
    frames = [a.copy() for a in argon_reference[:4]]
    frames[2].numbers[0] = 36  # a krypton slipped in
    with pytest.raises(IncompatibleTrajectoriesError, match="frame 2"):
        benchmark(["lj-argon"], frames, tmp_path, system="lj", progress=False)


def test_model_missing_species_is_refused_before_running(argon_reference, tmp_path):
    from ase_mlmd.errors import UnsupportedSpeciesError

    with pytest.raises(UnsupportedSpeciesError, match="ethanol-nequip was not trained on Ar"):
        benchmark(["ethanol-nequip"], argon_reference, tmp_path, system="lj", progress=False)
    assert not (tmp_path / "trajectories").exists()
