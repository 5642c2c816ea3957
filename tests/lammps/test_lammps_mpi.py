"""NVE through LAMMPS on 1 and on 2 MPI ranks (domain decomposition) gives the same trajectory,
for a 2-layer NequIP (message passing across the rank boundary); too many ranks are refused."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
from ase.io import read
from lammps_models import tiny_nequip, tiny_species_pair, water_box

from ase_mlmd.lammps import export_mliap
from ase_mlmd.lammps.inputs import write_example
from ase_mlmd.lammps.run import library_env, run_input

STEPS = 8


def run_ranks(folder, ranks: int, name: str = "water") -> subprocess.CompletedProcess:
    mpiexec = str(__import__("pathlib").Path(sys.prefix) / "bin" / "mpiexec")
    command = [sys.executable, "-m", "ase_mlmd.lammps", "run", f"in.{name}", "--trust-model"]
    command += ["--quiet", "-var", "tag", str(ranks), "--log", f"log.{ranks}"]
    env = dict(library_env(), OMP_NUM_THREADS="1")
    return subprocess.run(
        [mpiexec, "-np", str(ranks), *command],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def thermo(log) -> np.ndarray:
    """The thermo table (rows of numbers after the `Step ...` header) of a LAMMPS log."""
    rows, inside = [], False
    for line in open(log).read().splitlines():
        words = line.split()
        if words[:1] == ["Step"]:
            inside = True
        elif inside and words and all(re.fullmatch(r"[-+.\deE]+", w) for w in words):
            rows.append([float(w) for w in words])
        else:
            inside = False
    return np.array(rows)


def test_one_and_two_ranks_give_the_same_trajectory(tmp_path):
    model = export_mliap(tiny_nequip(), tmp_path / "model.pt")
    atoms = water_box().repeat((2, 1, 1))  # 8.4 Å along x: two subdomains of 4.2 Å > 2.6 Å
    path, _ = write_example(atoms, model, "model.pt", tmp_path, "water", 600, STEPS, 0.5)
    dump = (
        "dump traj all custom 4 traj.${tag}.dump id type x y z vx vy vz\n"
        "dump_modify traj sort id format float %.16g\n"
    )
    text = path.read_text().replace("neighbor 1.0 bin", "neighbor 0.5 bin")
    path.write_text(text.replace(f"run {STEPS}", dump + f"run {STEPS}"))
    done = run_ranks(tmp_path, 2)  # a fresh `mpiexec -np 2 python -m ase_mlmd.lammps run`
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    lmp = run_input(  # 1 rank: in this process (saves the imports of a third process)
        path, trust=True, cmdargs=["-log", "log.1", "-screen", "none", "-var", "tag", "1"]
    )
    lmp.close()
    thermo_one, thermo_two = thermo(tmp_path / "log.1"), thermo(tmp_path / "log.2")
    assert thermo_one.shape == (STEPS + 1, 6)  # step temp pe ke etotal press, every step
    np.testing.assert_allclose(thermo_two, thermo_one, rtol=1e-9, atol=1e-9)  # pressure too
    one = read(tmp_path / "traj.1.dump", index=":", format="lammps-dump-text")
    two = read(tmp_path / "traj.2.dump", index=":", format="lammps-dump-text")
    assert len(one) == len(two) == STEPS // 4 + 1
    moved = np.abs(one[-1].positions - one[0].positions).max()
    assert moved > 1e-3  # the atoms moved: the comparison means something
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-9)
        np.testing.assert_allclose(a.get_velocities(), b.get_velocities(), atol=1e-9)


def test_two_ranks_on_a_box_too_small_are_refused(tmp_path):
    model = export_mliap(tiny_species_pair(), tmp_path / "model.pt")
    write_example(water_box(), model, "model.pt", tmp_path, "small", 300, 1)  # 4.2 Å box
    done = run_ranks(tmp_path, 2, "small")
    assert done.returncode == 2, done.stderr[-3000:]
    assert re.search(
        "subdomain is 2.1 Å wide along [xyz], less than the model's cutoff 2.6 Å", done.stderr
    )
    assert re.search("use at most 1 rank along [xyz]", done.stderr)
