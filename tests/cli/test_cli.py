"""The ase-mlmd command line, run in-process (and once as the installed console script).

``ase-mlmd run`` is ASE's own ``run`` command with the cards registered, so its outputs are the
ones ASE documents: ``-o FILE`` appends the final structure with its results (extended XYZ
here: ASE 3.29 writes no frame when appending to a new .traj file), ``-f`` writes the
optimizer trajectory NAME.traj and log NAME.log, ``-E`` writes NAME.traj with one frame per
lattice constant and prints the fit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones as AseLennardJones
from ase.io import read, write
from conftest import cli_fails, make_ar_cluster, make_ar_crystal

from ase_mlmd import load_calculator
from ase_mlmd.cli.main import main


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A working directory with ar.xyz (periodic crystal) and cluster.xyz (non-periodic)."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "ar.xyz", make_ar_crystal())
    write(tmp_path / "cluster.xyz", make_ar_cluster())
    return tmp_path


def _energy_with(calc, path: Path) -> float:
    atoms = read(path)
    atoms.calc = calc
    return atoms.get_potential_energy()


def _fmax(atoms) -> float:
    return float(np.linalg.norm(atoms.get_forces(), axis=1).max())


# --- ase-mlmd run (ASE's run command) --------------------------------------------------------


def test_run_single_point_stores_the_card_energy(files):
    main(["run", "lj-argon", "ar.xyz", "-o", "result.xyz"])
    result = read(files / "result.xyz")
    expected = _energy_with(load_calculator("lj-argon"), files / "ar.xyz")
    assert result.get_potential_energy() == pytest.approx(expected, rel=1e-12)
    reference = read(files / "ar.xyz")
    reference.calc = load_calculator("lj-argon")
    # extended XYZ keeps forces to 1e-8 eV/Å
    np.testing.assert_allclose(result.get_forces(), reference.get_forces(), atol=2e-8)
    np.testing.assert_allclose(result.get_stress(), reference.get_stress(), rtol=1e-10)


def test_run_relaxes_to_the_requested_fmax(files):
    start = read(files / "cluster.xyz")
    start.calc = load_calculator("lj-argon")
    assert _fmax(start) > 0.01  # there is something to relax
    main(["run", "lj-argon", "cluster.xyz", "-f", "0.01", "-o", "relaxed.xyz"])
    frames = read(files / "cluster.traj", index=":")
    assert len(frames) > 2
    assert _fmax(frames[-1]) < 0.01
    assert frames[-1].get_potential_energy() < frames[0].get_potential_energy()
    assert frames[0].get_potential_energy() == pytest.approx(start.get_potential_energy())
    relaxed = read(files / "relaxed.xyz")
    np.testing.assert_allclose(relaxed.positions, frames[-1].positions, atol=2e-8)
    assert (files / "cluster.log").read_text().count("LBFGS:") == len(frames)


@pytest.mark.filterwarnings("ignore:`sjeos` is an old EOS name:FutureWarning")
def test_run_equation_of_state(files, capsys):
    main(["run", "lj-argon", "ar.xyz", "-E", "5,2.0"])
    out = capsys.readouterr().out
    frames = read(files / "ar.traj", index=":")
    assert len(frames) == 5
    v1 = read(files / "ar.xyz").get_volume()
    volumes = np.array([f.get_volume() for f in frames])
    np.testing.assert_allclose(volumes, v1 * np.linspace(0.98, 1.02, 5) ** 3, rtol=1e-12)
    calc = load_calculator("lj-argon")
    energies = []
    for frame in frames:
        stored = frame.get_potential_energy()
        frame.calc = calc
        assert stored == pytest.approx(frame.get_potential_energy(), rel=1e-12)
        energies.append(stored)
    assert 0 < int(np.argmin(energies)) < 4  # the lattice constant brackets the minimum
    fitted_volume = float(out.split("fitted volume:")[1].split()[0])
    fitted_energy = float(out.split("fitted energy:")[1].split()[0])
    bulk_modulus = float(out.split("bulk modulus:")[1].split()[0])
    assert volumes[0] < fitted_volume < volumes[-1]
    assert fitted_energy <= min(energies) + 1e-6
    assert bulk_modulus > 0


def test_run_lj_is_still_ases_lennard_jones(files):
    main(["run", "lj", "ar.xyz", "-p", "sigma=3.4,epsilon=0.0104,rc=8.5", "-o", "lj.xyz"])
    energy = read(files / "lj.xyz").get_potential_energy()
    ase_lj = AseLennardJones(sigma=3.4, epsilon=0.0104, rc=8.5)
    assert energy == pytest.approx(_energy_with(ase_lj, files / "ar.xyz"), rel=1e-12)
    # the lj-argon card (with its smooth switch) is a different potential
    assert abs(energy - _energy_with(load_calculator("lj-argon"), files / "ar.xyz")) > 1e-3


def test_run_backend_without_a_model_says_how_to_give_one(files, capsys):
    err = cli_fails(["run", "nequip", "cluster.xyz"], capsys)
    assert "CardError" in err and "needs a model" in err and "-p model=" in err


# --- ase-mlmd md -----------------------------------------------------------------------------


def _md(ensemble: str, steps: int, output: str, *extra: str) -> list:
    main(
        [
            "md",
            "ar.xyz",
            "--calc",
            "lj-argon",
            "--ensemble",
            ensemble,
            "--steps",
            str(steps),
            "--timestep",
            "2",
            "--temperature",
            "80",
            "-o",
            output,
            "--no-progress",
            *extra,
        ]
    )
    return read(output, index=":")


def test_md_nve_writes_frames_and_conserves_energy(files, capsys):
    frames = _md("nve", 50, "x.traj")
    assert len(frames) == 50 // 10 + 1
    assert "6 frames" in capsys.readouterr().out
    np.testing.assert_allclose(frames[0].positions, read(files / "ar.xyz").positions, atol=1e-12)
    total = np.array([f.get_total_energy() for f in frames])
    kinetic = np.array([f.get_kinetic_energy() for f in frames])
    # 100 fs of argon at 2 fs steps: kinetic energy flows into the lattice (> 0.05 eV moves)
    # while the total energy stays within 1e-5 eV/atom
    assert np.ptp(kinetic) > 0.05
    assert np.abs(total - total[0]).max() / len(frames[0]) < 1e-5
    log = (files / "x.log").read_text().splitlines()
    assert len(log) == 1 + 50 // 10 + 1  # header + one line per log interval


@pytest.mark.parametrize("ensemble", ["nvt-langevin", "nvt-nose-hoover", "nvt-bussi"])
def test_md_thermostats_run(files, ensemble):
    nve = _md("nve", 10, "nve.traj", "--save-every", "5")
    frames = _md(ensemble, 10, f"{ensemble}.traj", "--save-every", "5", "--tdamp", "20")
    assert len(frames) == 3
    assert all(np.isfinite(f.get_total_energy()) for f in frames)
    # same seed, same start; the thermostat changes the trajectory
    np.testing.assert_array_equal(frames[0].get_momenta(), nve[0].get_momenta())
    assert not np.allclose(frames[-1].get_momenta(), nve[-1].get_momenta(), rtol=0, atol=1e-9)


def test_md_with_an_ase_calculator(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copper = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    copper.rattle(0.02, rng=np.random.default_rng(0))
    write("cu.xyz", copper)
    main(
        [
            "md",
            "cu.xyz",
            "--calc",
            "emt",
            "--ensemble",
            "nve",
            "--steps",
            "4",
            "--save-every",
            "2",
            "--timestep",
            "1",
            "-o",
            "cu.traj",
            "--no-progress",
        ]
    )
    frames = read("cu.traj", index=":")
    assert len(frames) == 3
    copper.calc = EMT()
    assert frames[0].get_potential_energy() == pytest.approx(copper.get_potential_energy())


def test_md_rejects_a_bad_timestep_before_running(files, capsys):
    err = cli_fails(
        ["md", "ar.xyz", "--calc", "lj-argon", "--timestep", "0", "-o", "bad.traj"], capsys
    )
    assert "timestep" in err
    assert not (files / "bad.traj").exists()


def test_md_unknown_calculator_is_a_clean_error(files, capsys):
    err = cli_fails(["md", "ar.xyz", "--calc", "no-such-model", "-o", "u.traj"], capsys)
    assert "no calculator named 'no-such-model'" in err
    assert "lj-argon" in err and "morse-argon" in err
    assert not (files / "u.traj").exists()


# --- ase-mlmd calculators and the console script --------------------------------------------


def test_calculators_lists_the_shipped_cards(capsys):
    main(["calculators"])
    lines = capsys.readouterr().out.splitlines()
    for name, backend in [("lj-argon", "lennard-jones"), ("morse-argon", "morse")]:
        (row,) = [line for line in lines if line.startswith(name + " ")]
        assert row.split() == [name, backend, "any", "8.5", "float64"]
    assert any("nequip" in line and "schnetpack" in line for line in lines)


def test_console_script_help():
    script = Path(sys.executable).parent / "ase-mlmd"
    if not script.exists():
        pytest.fail(f"{script} is missing: install the package with `pip install -e .`")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for command in ("run", "md", "calculators", "demo"):
        assert command in done.stdout


# --- ML backends by name with a card --------------------------------------------------------


@pytest.fixture
def nequip_card(tmp_path):
    """A random NequIP model for H and O exported as a safetensors card."""
    from ase_mlmd.models.backends.nequip import build_nequip_model, export_nequip_card

    model = build_nequip_model(type_names=["H", "O"], r_max=3.5, seed=3)
    return export_nequip_card(model, tmp_path / "cards", "water-nequip-random")


def test_run_nequip_backend_with_a_card(files, nequip_card):
    from ase.build import molecule

    water = molecule("H2O")
    write(files / "h2o.xyz", water)
    main(["run", "nequip", "h2o.xyz", "-p", f"model={nequip_card}", "-o", "out.xyz"])
    result = read(files / "out.xyz")
    expected = _energy_with(load_calculator(nequip_card), files / "h2o.xyz")
    assert result.get_potential_energy() == pytest.approx(expected, abs=1e-10)
    # the same card by path as the calculator name, and with ase-mlmd md
    main(["run", str(nequip_card), "h2o.xyz", "-o", "out2.xyz"])
    assert read(files / "out2.xyz").get_potential_energy() == pytest.approx(expected, abs=1e-10)
    main(
        [
            "md",
            "h2o.xyz",
            "--calc",
            str(nequip_card),
            "--ensemble",
            "nvt-langevin",
            "--steps",
            "10",
            "--save-every",
            "5",
            "-o",
            "w.traj",
            "--no-progress",
        ]
    )
    frames = read(files / "w.traj", index=":")
    assert len(frames) == 3
    assert all(np.isfinite(f.get_forces()).all() for f in frames)


def test_demo_runs_and_reports_a_liquid(files, capsys):
    """A short `ase-mlmd demo`: trajectories written, tiny NVE drift, first g(r) peak of liquid
    argon near 3.7 Å."""
    import re

    main(
        [
            "demo",
            "-o",
            "demo",
            "--system",
            "argon",
            "--melt-steps",
            "100",
            "--steps",
            "200",
            "--nve-steps",
            "200",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    for name in ("melt.traj", "nvt.traj", "nve.traj", "nve.log"):
        assert (files / "demo" / name).stat().st_size > 0
    drift = float(re.search(r"drift ([0-9.]+) meV/atom", out).group(1))
    peak = float(re.search(r"first peak at ([0-9.]+) Å", out).group(1))
    assert drift < 0.1
    assert 3.5 < peak < 3.9
    assert len(read(files / "demo" / "nve.traj", index=":")) == 200 // 10 + 1
