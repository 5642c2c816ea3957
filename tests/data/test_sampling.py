"""Reference sampling and labelling: frames on disk hold what the reference computes at their
positions, the MD they come from is physical, and runs survive a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.io import read, write
from ase.neighborlist import natural_cutoffs, neighbor_list
from conftest import cli_fails, make_ar_cluster
from tblite.ase import TBLite

from ase_mlmd.data.reference import XTB_ACCURACY, reference_calculator
from ase_mlmd.data.sampling import SamplingConfig, label_frames, sample_reference
from ase_mlmd.errors import (
    CheckpointMismatchError,
    SimulationUnstableError,
    UnknownCalculatorError,
    UnsupportedSpeciesError,
)

ROOT = Path(__file__).resolve().parents[2]
AR_LJ = {"sigma": 3.40, "epsilon": 0.0104, "rc": 8.5}


def small_copper() -> Atoms:
    return bulk("Cu", "fcc", a=3.61, cubic=True)


def _kinetic_temperature(frame: Atoms) -> float:
    """2 E_kin / (3 N kB) from the stored momenta and masses."""
    p, m = frame.get_momenta(), frame.get_masses()
    return float((p**2 / m[:, None]).sum() / (3 * len(frame) * units.kB))


def test_emt_copper_frames_hold_the_reference_labels(tmp_path):
    config = SamplingConfig(temperature=300.0, timestep=5.0, steps=400, every=20, seed=1)
    atoms = small_copper().repeat(2)
    frames = sample_reference(atoms, "emt", config, tmp_path / "cu.extxyz", progress=False)
    assert len(frames) == config.steps // config.every + 1  # step 0 included
    assert [f.info["step"] for f in frames] == list(range(0, 401, 20))
    assert [f.info["time_fs"] for f in frames] == pytest.approx(np.arange(0, 2001, 100.0))
    again = read(tmp_path / "cu.extxyz", ":")
    np.testing.assert_allclose(frames[0].positions, atoms.positions, atol=1e-7)
    for frame in again:
        assert frame.info["reference"] == "emt"
        fresh = Atoms(frame.numbers, frame.positions, cell=frame.cell, pbc=True, calculator=EMT())
        assert frame.get_potential_energy() == pytest.approx(fresh.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(frame.get_forces(), fresh.get_forces(), atol=1e-6)
        np.testing.assert_allclose(frame.get_stress(), fresh.get_stress(), atol=1e-7)
        assert frame.info["temperature_K"] == pytest.approx(_kinetic_temperature(frame), rel=1e-6)
    # Langevin at 300 K: after ~5 friction times the kinetic temperature averages 300 K
    mean_t = np.mean([f.info["temperature_K"] for f in frames[5:]])
    assert 240.0 < mean_t < 360.0


def test_nve_frames_conserve_total_energy(tmp_path):
    cluster = make_ar_cluster(rattle=0.02)
    config = SamplingConfig(ensemble="nve", temperature=20.0, timestep=2.0, steps=300, every=10)
    calc = reference_calculator("lj", **AR_LJ)
    frames = sample_reference(cluster, calc, config, tmp_path / "nve.extxyz", progress=False)
    total = np.array([f.get_potential_energy() + f.get_kinetic_energy() for f in frames])
    kinetic = np.array([f.get_kinetic_energy() for f in frames])
    assert kinetic.std() > 1e-3  # energy does flow between kinetic and potential
    assert np.abs(total - total[0]).max() < 1e-3 * kinetic.mean()
    assert frames[0].info["reference"] == "lj(epsilon=0.0104, rc=8.5, sigma=3.4)"


def _bonds(atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms))
    keep = i < j
    return i[keep], j[keep]


def test_gfn2_ethanol_at_500K_is_stable_and_labelled_by_tblite(tmp_path):
    ethanol = molecule("CH3CH2OH")
    config = SamplingConfig(temperature=500.0, timestep=0.5, steps=60, every=10, seed=2)
    frames = sample_reference(
        ethanol, "gfn2-xtb", config, tmp_path / "eth.extxyz", progress=False, threads=1
    )
    assert len(frames) == 7
    i, j = _bonds(ethanol)
    start = ethanol.get_distances(i, j)
    direct = TBLite(method="GFN2-xTB", accuracy=XTB_ACCURACY, verbosity=0)
    for frame in frames:
        lengths = np.linalg.norm(frame.positions[j] - frame.positions[i], axis=1)
        assert np.abs(lengths - start).max() < 0.5  # MDsim's collapse criterion
        plain = Atoms(frame.numbers, frame.positions, calculator=direct)
        assert frame.get_potential_energy() == pytest.approx(plain.get_potential_energy(), abs=1e-6)
        # SCF restarts from the last density: forces reproducible to ~3e-6 eV/Å
        np.testing.assert_allclose(frame.get_forces(), plain.get_forces(), atol=2e-5)


def test_label_equals_direct_tblite_and_resumes(tmp_path, shared_file):
    path = shared_file("ethanol/ethanol_snip.xyz")
    frames = read(path, ":")
    out = tmp_path / "labelled.extxyz"
    label_frames(frames[:2], "gfn2-xtb", out, progress=False, threads=1)
    first_two = out.read_text()
    labelled = label_frames(path, "gfn2-xtb", out, progress=False, threads=1)  # resumes
    assert out.read_text().startswith(first_two)
    again = read(out, ":")
    assert len(again) == len(frames) == 3
    direct = TBLite(method="GFN2-xTB", accuracy=XTB_ACCURACY, verbosity=0)
    for k, (frame, source) in enumerate(zip(again, frames, strict=True)):
        assert frame.info["source_index"] == k and frame.info["reference"] == "gfn2-xtb"
        np.testing.assert_allclose(frame.positions, source.positions, atol=1e-8)
        plain = Atoms(source.numbers, source.positions, calculator=direct)
        assert frame.get_potential_energy() == pytest.approx(plain.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(frame.get_forces(), plain.get_forces(), atol=2e-5)
        assert labelled[k].get_potential_energy() == pytest.approx(frame.get_potential_energy())
    with pytest.raises(CheckpointMismatchError, match="gfn2-xtb"):
        label_frames(path, "gfn1-xtb", out, progress=False)
    label_frames(path, "gfn1-xtb", out, progress=False, resume=False)
    assert read(out, "0").info["reference"] == "gfn1-xtb"


def test_unsupported_species_fail_before_running(tmp_path):
    argon = bulk("Ar", "fcc", a=5.26)
    with pytest.raises(UnsupportedSpeciesError, match="Ar"):
        sample_reference(argon, "emt", SamplingConfig(steps=10), tmp_path / "x.extxyz")
    with pytest.raises(UnsupportedSpeciesError, match="frame 1"):
        label_frames([small_copper(), argon], "emt", tmp_path / "y.extxyz", progress=False)
    assert not (tmp_path / "x.extxyz").exists() and not (tmp_path / "y.extxyz").exists()


def test_unknown_reference(tmp_path):
    with pytest.raises(UnknownCalculatorError, match="gfn2-xtb"):
        sample_reference(small_copper(), "b3lyp", SamplingConfig(steps=10), tmp_path / "x.xyz")


def test_blow_up_stops_with_the_good_frames_kept(tmp_path):
    squeezed = Atoms("Ar2", positions=[[0, 0, 0], [0, 0, 0.5]])  # 0.5 sigma apart
    config = SamplingConfig(ensemble="nve", temperature=10.0, timestep=1.0, steps=100, every=10)
    out = tmp_path / "boom.extxyz"
    with pytest.raises(SimulationUnstableError, match="step 10"):
        sample_reference(squeezed, "lj", config, out, progress=False)
    assert [f.info["step"] for f in read(out, ":")] == [0]


def test_rerun_resumes_or_refuses_another_run(tmp_path):
    out = tmp_path / "cu.extxyz"
    config = SamplingConfig(temperature=300.0, timestep=5.0, steps=40, every=10)
    first = sample_reference(small_copper(), "emt", config, out, progress=False)
    stamp = out.stat().st_mtime_ns
    same = sample_reference(small_copper(), "emt", config, out, progress=False)
    assert out.stat().st_mtime_ns == stamp  # complete: nothing recomputed or rewritten
    np.testing.assert_allclose(same[-1].positions, first[-1].positions)
    hotter = SamplingConfig(temperature=600.0, timestep=5.0, steps=40, every=10)
    with pytest.raises(CheckpointMismatchError, match="target_temperature_K"):
        sample_reference(small_copper(), "emt", hotter, out, progress=False)
    with pytest.raises(CheckpointMismatchError, match="reference"):
        sample_reference(small_copper(), "lj", config, out, progress=False)
    moved = small_copper()
    moved.positions[0, 0] += 0.1
    with pytest.raises(CheckpointMismatchError, match="step-0 positions"):
        sample_reference(moved, "emt", config, out, progress=False)
    longer = SamplingConfig(temperature=300.0, timestep=5.0, steps=60, every=10)
    extended = sample_reference(small_copper(), "emt", longer, out, progress=False)
    assert [f.info["step"] for f in extended] == [0, 10, 20, 30, 40, 50, 60]
    np.testing.assert_allclose(extended[4].positions, first[4].positions)


SLOW_RUN = """
import time
from ase.build import bulk
from ase.calculators.emt import EMT
from ase_mlmd.data.sampling import SamplingConfig, sample_reference

class SlowEMT(EMT):
    def calculate(self, *args, **kwargs):
        time.sleep(0.01)
        super().calculate(*args, **kwargs)

calc = SlowEMT()
calc.reference_name = "emt"
config = SamplingConfig(temperature=300.0, timestep=5.0, steps={steps}, every=10, seed=4)
atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
sample_reference(atoms, calc, config, {out!r}, progress=False, flush_seconds=0.0)
"""


def test_sigkill_mid_run_then_rerun_resumes(tmp_path):
    out = tmp_path / "killed.extxyz"
    steps = 300
    script = textwrap.dedent(SLOW_RUN.format(steps=steps, out=str(out)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_text().count("Properties=") >= 4:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished or died before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    survived = read(out, ":")  # every frame in the file is complete
    n_done = len(survived)
    assert 4 <= n_done < steps // 10 + 1
    assert out.read_text().count("Properties=") == n_done
    config = SamplingConfig(temperature=300.0, timestep=5.0, steps=steps, every=10, seed=4)
    frames = sample_reference(small_copper(), "emt", config, out, progress=False)
    assert [f.info["step"] for f in frames] == list(range(0, steps + 1, 10))
    assert len(read(out, ":")) == steps // 10 + 1
    for old, new in zip(survived, frames, strict=False):
        np.testing.assert_allclose(new.positions, old.positions)
    # the resumed part continues from the last frame: no jump in positions or temperature
    step = np.linalg.norm(frames[n_done].positions - frames[n_done - 1].positions, axis=1).max()
    assert step < 0.5
    fresh = Atoms(frames[-1].numbers, frames[-1].positions, cell=frames[-1].cell, pbc=True)
    fresh.calc = EMT()
    assert frames[-1].get_potential_energy() == pytest.approx(fresh.get_potential_energy())
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.fixture
def cli(monkeypatch):
    """``ase-mlmd`` with the sample and label commands (added here until main.py lists them)."""
    from ase_mlmd.cli import main as cli_main

    names = {name for name, _ in cli_main.COMMANDS}
    extra = [(n, f"ase_mlmd.cli.{n}") for n in ("sample", "label") if n not in names]
    monkeypatch.setattr(cli_main, "COMMANDS", [*cli_main.COMMANDS, *extra])
    return cli_main.main


def test_cli_sample_then_label(cli, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write("cu.xyz", small_copper())
    cli(
        "sample cu.xyz --reference emt --temperature 300 --timestep 5 --steps 30 --every 10 "
        "-o cu_ref.extxyz --no-progress".split()
    )
    assert "4 frames" in capsys.readouterr().out
    sampled = read("cu_ref.extxyz", ":")
    cli("label cu_ref.extxyz --reference lj -p sigma=2.3,epsilon=0.4 -o lj.extxyz".split())
    relabelled = read("lj.extxyz", ":")
    assert [f.info["step"] for f in relabelled] == [0, 10, 20, 30]
    lj = reference_calculator("lj", sigma=2.3, epsilon=0.4)
    for old, new in zip(sampled, relabelled, strict=True):
        np.testing.assert_allclose(new.positions, old.positions)
        plain = Atoms(old.numbers, old.positions, cell=old.cell, pbc=True, calculator=lj)
        assert new.get_potential_energy() == pytest.approx(plain.get_potential_energy())
        assert new.info["reference"] == "lj(epsilon=0.4, sigma=2.3)"


def test_cli_errors_are_clean(cli, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write("cu.xyz", small_copper())
    err = cli_fails(["sample", "cu.xyz", "--reference", "nope", "-o", "x.extxyz"], capsys)
    assert "gfn2-xtb" in err
    err = cli_fails(["label", "cu.xyz", "--reference", "lj", "-p", "sigmaa=2"], capsys)
    assert "sigmaa" in err
