"""Models in LAMMPS over 1 and 2 MPI ranks, next to the package's own MD engine.

Two systems, each run side by side in one invocation, every case in its own fresh process:

* **LJ**: fcc argon (a = 5.26 Å, ``--lj-repeat``³ cubic cells, 4 atoms each), Lennard-Jones
  ε = 10.4 meV, σ = 3.40 Å cut at 8.5 Å without shift or switch (so that LAMMPS' native
  ``pair_style lj/cut`` is the same potential), NVE from 60 K, dt = 2 fs;
* **NequIP**: the ``ethanol-nequip`` card (2 layers, 5 Å, 16 features, float32 as trained) on a
  periodic box of ``--nequip-repeat``³ ethanol molecules 5.5 Å apart (out of the card's training
  distribution: a throughput case, not physics), NVE from 300 K, dt = 0.5 fs.

Cases: the engine (``ase_mlmd.md``: ForceField + velocity_verlet, torch threads 1 and 2), LAMMPS
with the exported model (``python -m ase_mlmd.lammps run``, 1 and 2 MPI ranks, one thread
each), and for LJ LAMMPS' native ``lj/cut`` (1 and 2 ranks). Figures: atom-steps/s over the
timed steps (neighbour-list builds included) and the initial potential energy per atom, which
must agree between all cases of a system (same structure, same potential).

Usage::

    python benchmarks/lammps_scaling.py [--lj-repeat 6] [--nequip-repeat 3]
        [--lj-steps 100] [--nequip-steps 20] [--out benchmarks/lammps_scaling.json]

LAMMPS needs the venv's ``lib/`` (libmpi) on ``LD_LIBRARY_PATH``: the script re-executes itself
with it set. On a shared machine the figures are comparable only within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

LATTICE = 5.26
LJ = {"epsilon": 0.0104, "sigma": 3.40, "cutoff": 8.5}
SKIN = 1.0
WARMUP = 5
SYSTEMS = {
    "lj": {"temperature": 60.0, "timestep_fs": 2.0},
    "nequip": {"temperature": 300.0, "timestep_fs": 0.5},
}


def build_system(name: str, repeat: int):
    """The ASE structure of a system."""
    import numpy as np
    from ase import Atoms
    from ase.build import bulk, molecule

    if name == "lj":
        return bulk("Ar", "fcc", LATTICE, cubic=True).repeat((repeat,) * 3)
    ethanol = molecule("CH3CH2OH")
    ethanol.positions -= ethanol.positions.mean(axis=0)
    spacing = 5.5
    box = Atoms(cell=[spacing * repeat] * 3, pbc=True)
    for corner in np.ndindex(repeat, repeat, repeat):
        part = ethanol.copy()
        part.positions += spacing * (np.array(corner) + 0.5)
        box += part
    return box


def build_model(name: str):
    """The energy model of a system (float64 LJ; the NequIP card in its own float32)."""
    if name == "lj":
        from ase_mlmd.models.pair import LennardJones

        return LennardJones(LJ["epsilon"], LJ["sigma"], LJ["cutoff"], cutoff_mode="none")
    from ase_mlmd.calculators.registry import find_card, model_from_card

    return model_from_card(find_card("ethanol-nequip"))


# --------------------------------------------------------------------------- workers
def run_engine(name: str, repeat: int, threads: int, steps: int) -> dict:
    import torch
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    from ase_mlmd.md.forcefield import ForceField
    from ase_mlmd.md.integrators import velocity_verlet
    from ase_mlmd.md.state import MDState

    torch.set_num_threads(threads)
    atoms = build_system(name, repeat)
    MaxwellBoltzmannDistribution(atoms, temperature_K=SYSTEMS[name]["temperature"], rng=None)
    Stationary(atoms)
    forcefield = ForceField(build_model(name), skin=SKIN)
    integrator = velocity_verlet(forcefield, SYSTEMS[name]["timestep_fs"])
    state = integrator.init(MDState.from_atoms([atoms]))
    energy0 = float(state.energy[0]) / len(atoms)
    for _ in range(WARMUP):
        state = integrator.step(state).detach()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        state = integrator.step(state).detach()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"wall_s": wall, "cpu_s": cpu, "atom_steps_per_s": len(atoms) * steps / wall,
            "pe0": energy0}  # fmt: skip


def run_lammps(folder: Path, input_name: str, steps: int, native: bool) -> dict | None:
    """Run ``input_name`` (already written) on all ranks; rank 0 returns the figures."""
    from mpi4py import MPI

    from ase_mlmd.lammps.run import open_lammps, run_input

    quiet = ["-log", "none", "-screen", "none"]
    os.chdir(folder)
    if native:
        lmp = open_lammps(quiet)
        lmp.file(input_name)
        command = lmp.command
    else:
        lmp = run_input(input_name, trust=True, cmdargs=quiet)
        command = lmp.runner.command
    n_atoms = int(lmp.get_natoms())
    energy0 = float(lmp.get_thermo("pe")) / n_atoms
    command(f"run {WARMUP}")
    comm = MPI.COMM_WORLD
    comm.Barrier()
    start, cpu = time.perf_counter(), time.process_time()
    command(f"run {steps}")
    comm.Barrier()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    ghosts = comm.allreduce(int(lmp.extract_setting("nghost"))) / comm.Get_size()
    cpu = comm.allreduce(cpu)  # all ranks (MPI busy-waiting included)
    lmp.close()
    if comm.Get_rank() != 0:
        return None
    return {"wall_s": wall, "cpu_s": cpu, "atom_steps_per_s": n_atoms * steps / wall,
            "pe0": energy0, "ghosts_per_rank": ghosts}  # fmt: skip


def write_inputs(name: str, repeat: int, folder: Path) -> None:
    """Model file, data file and inputs (run 0: the worker times its own runs)."""
    from ase_mlmd.lammps.export import prepare_mliap, save_mliap
    from ase_mlmd.lammps.inputs import write_example

    dtype = "float64" if name == "lj" else "float32"
    model = prepare_mliap(build_model(name), dtype=dtype, species=["Ar"] if name == "lj" else None)
    save_mliap(model, folder / "model.pt")
    settings = SYSTEMS[name]
    path, _ = write_example(
        build_system(name, repeat), model, "model.pt", folder, name,
        settings["temperature"], 0, settings["timestep_fs"],
    )  # fmt: skip
    text = path.read_text().replace("neighbor 1.0 bin", f"neighbor {SKIN} bin")
    path.write_text(text)
    if name == "lj":
        native = text.replace(
            "pair_style mliap unified model.pt 0", f"pair_style lj/cut {LJ['cutoff']}"
        )
        native = native.replace(
            "pair_coeff * * Ar", f"pair_coeff * * {LJ['epsilon']} {LJ['sigma']}"
        )
        (folder / "in.native").write_text(native)


def _spawn(args: argparse.Namespace, ranks: int, threads: int, worker: list[str]) -> dict:
    command = [sys.executable, __file__, "--worker", *worker]
    if ranks > 0:
        command = [str(Path(sys.prefix) / "bin" / "mpiexec"), "-np", str(ranks), *command]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{worker} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def _worker(argv: list[str]) -> None:
    kind, name, repeat, steps = argv[0], argv[1], int(argv[2]), int(argv[3])
    if kind == "engine":
        result = run_engine(name, repeat, int(argv[4]), steps)
    else:
        result = run_lammps(Path(argv[4]), argv[5], steps, native=kind == "native")
    if result is not None:
        print("RESULT " + json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _worker(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lj-repeat", type=int, default=6, help="fcc cells per axis (LJ)")
    parser.add_argument("--nequip-repeat", type=int, default=3, help="ethanols per axis")
    parser.add_argument("--lj-steps", type=int, default=100)
    parser.add_argument("--nequip-steps", type=int, default=20)
    parser.add_argument("--systems", nargs="+", default=["lj", "nequip"], choices=list(SYSTEMS))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    parser.add_argument("--scratch", type=Path, default=Path("out/lammps_scaling"))
    args = parser.parse_args(argv)
    from ase_mlmd.lammps.run import ensure_library_path

    ensure_library_path()
    from ase_mlmd.fileio import atomic_write_text

    results = []
    for name in args.systems:
        repeat = args.lj_repeat if name == "lj" else args.nequip_repeat
        steps = args.lj_steps if name == "lj" else args.nequip_steps
        folder = (args.scratch / name).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        write_inputs(name, repeat, folder)
        n_atoms = len(build_system(name, repeat))
        cases = [("engine", 0, t, ["engine", name, repeat, steps, t]) for t in (1, 2)]
        cases += [("lammps-mliap", r, 1, ["mliap", name, repeat, steps, folder, f"in.{name}"])
                  for r in (1, 2)]  # fmt: skip
        if name == "lj":
            cases += [("lammps-native", r, 1, ["native", name, repeat, steps, folder, "in.native"])
                      for r in (1, 2)]  # fmt: skip
        for program, ranks, threads, worker in cases:
            load = os.getloadavg()[0]
            result = _spawn(args, ranks, threads, [str(w) for w in worker])
            row = {"system": name, "atoms": n_atoms, "steps": steps, "program": program}
            row.update(ranks=max(ranks, 1), threads=threads, load_1min_before=load)
            row.update(result)
            results.append(row)
            print(
                f"{name:>6} {n_atoms:>5} atoms  {program:<13} ranks {row['ranks']} threads "
                f"{threads}: {result['atom_steps_per_s']:>10,.0f} atom-steps/s  pe0/atom "
                f"{result['pe0']:.8f} eV  cpu {result['cpu_s']:.1f} s  ghosts/rank "
                f"{result.get('ghosts_per_rank', 0):.0f}  (load {load:.1f})",
                flush=True,
            )
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, shared with other jobs",
        "command": "python benchmarks/lammps_scaling.py " + " ".join(argv),
        "results": results,
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
