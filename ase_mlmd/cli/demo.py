"""``ase-mlmd demo``: the README's main job (ethanol benchmark, see :mod:`ase_mlmd.bench.demo`)
and the liquid-argon demo."""

from __future__ import annotations

from pathlib import Path

ARGON_MASS_G = 39.948 * 1.66053907e-24
RAHMAN_DENSITY_G_CM3 = 1.374
RAHMAN_TEMPERATURE_K = 94.4


def liquid_argon(n_cells: int = 3, seed: int = 0):
    """FCC argon (4 n_cells^3 atoms) at Rahman's liquid density 1.374 g/cm^3, slightly rattled."""
    import numpy as np
    from ase.build import bulk

    n_atoms = 4 * n_cells**3
    volume_A3 = n_atoms * ARGON_MASS_G / RAHMAN_DENSITY_G_CM3 * 1e24
    a = (volume_A3 / n_cells**3) ** (1 / 3)
    atoms = bulk("Ar", "fcc", a=a, cubic=True).repeat(n_cells)
    atoms.rattle(0.05, rng=np.random.default_rng(seed))
    return atoms


class CLICommand:
    """The README's main job: the embedded default end to end, no downloads.

    Default (--system ethanol): GFN2-xTB reference MD of ethanol at 500 K (tblite) -> the
    shipped NequIP and SchNet cards (or --retrain: train both here on the reference) -> MD
    replicas of each with MDsim's protocol -> the benchmark report (force MAE next to
    stability and h(r) MAE, plots) in OUTPUT/report.

    --system argon: melts 108 argon atoms (FCC start) at 300 K with the shipped lj-argon card,
    equilibrates the liquid at Rahman's 1964 state point (94.4 K, 1.374 g/cm^3), runs NVE and
    reports the energy drift and the first g(r) peak.
    """

    @staticmethod
    def add_arguments(parser) -> None:
        add = parser.add_argument
        add("-o", "--output", default="out/demo", help="output folder")
        add("--system", choices=("ethanol", "argon"), default="ethanol")
        add("--no-progress", action="store_true")
        ethanol = parser.add_argument_group("ethanol (default)")
        ethanol.add_argument("--retrain", action="store_true", help="train the models here")
        ethanol.add_argument("--train-time", default="3m", help="time limit per model (--retrain)")
        ethanol.add_argument("--replicas", type=int, default=5, help="replicas per model")
        ethanol.add_argument("--length", type=float, default=15.0, help="ps per replica")
        ethanol.add_argument(
            "--reference-steps", type=int, default=4000, help="GFN2-xTB MD steps (0.5 fs)"
        )
        argon = parser.add_argument_group("argon")
        argon.add_argument(
            "--melt-steps", type=int, default=400, help="steps (5 fs) melting the start at 300 K"
        )
        argon.add_argument("--steps", type=int, default=2000, help="NVT steps (5 fs each)")
        argon.add_argument("--nve-steps", type=int, default=1000, help="NVE steps afterwards")
        argon.add_argument("--calc", default="lj-argon", help="card to use (default lj-argon)")

    @staticmethod
    def run(args) -> None:
        from ase_mlmd.outdir import lock_folder

        with lock_folder(Path(args.output), "output folder (-o)"):
            _run(args)


def _run(args) -> None:
    """The demo of ``--system``, with the output folder locked."""
    if args.system == "argon":
        argon_demo(args)
        return
    from ase_mlmd.bench.demo import DemoConfig, run_demo

    run_demo(
        DemoConfig(
            output=args.output,
            reference_steps=args.reference_steps,
            retrain=args.retrain,
            train_time=args.train_time,
            replicas=args.replicas,
            length_ps=args.length,
            progress=not args.no_progress,
        )
    )


def argon_demo(args) -> None:
    """The liquid-argon demo (``--system argon``): melt, equilibrate, NVE, g(r)."""
    import numpy as np
    from ase.geometry.rdf import get_rdf
    from ase.io import read

    from ase_mlmd import load_calculator
    from ase_mlmd.md.ase_md import AseMDConfig, run_ase_md

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    atoms = liquid_argon()
    calc = load_calculator(args.calc)
    print(
        f"demo: {len(atoms)} Ar atoms, {args.calc}, box {atoms.cell.lengths()[0]:.2f} Å, "
        f"{RAHMAN_TEMPERATURE_K} K"
    )
    progress = not args.no_progress
    # melt the FCC start at 300 K, then equilibrate the liquid at 94.4 K
    melt = AseMDConfig(
        "nvt-langevin",
        300.0,
        timestep_fs=5.0,
        steps=args.melt_steps,
        friction_per_fs=0.01,
        save_every=20,
        log_every=100,
    )
    run_ase_md(atoms, calc, melt, out / "melt.traj", out / "melt.log", progress=progress)
    nvt = AseMDConfig(
        "nvt-langevin",
        RAHMAN_TEMPERATURE_K,
        timestep_fs=5.0,
        steps=args.steps,
        friction_per_fs=0.002,
        save_every=20,
        log_every=100,
        keep_velocities=True,
    )
    run_ase_md(atoms, calc, nvt, out / "nvt.traj", out / "nvt.log", progress=progress)
    nve = AseMDConfig(
        "nve",
        RAHMAN_TEMPERATURE_K,
        timestep_fs=5.0,
        steps=args.nve_steps,
        save_every=10,
        log_every=100,
        keep_velocities=True,
    )
    e_start = atoms.get_total_energy()
    run_ase_md(atoms, calc, nve, out / "nve.traj", out / "nve.log", progress=not args.no_progress)
    frames = read(out / "nve.traj", index=":")
    e_tot = np.array([f.get_total_energy() for f in frames])
    temps = np.array([f.get_temperature() for f in frames])
    print("\n  step   E_pot/eV    E_kin/eV    T/K")
    stride = max(1, len(frames) // 10)
    for k in range(0, len(frames), stride):
        f = frames[k]
        print(
            f"{k * nve.save_every:6d} {f.get_potential_energy():10.5f} "
            f"{f.get_kinetic_energy():10.5f} {f.get_temperature():7.1f}"
        )
    rmax = 0.49 * atoms.cell.lengths().min()
    g = np.mean([get_rdf(f, rmax, 100)[0] for f in frames[len(frames) // 2 :]], axis=0)
    r = get_rdf(frames[-1], rmax, 100)[1]
    print(
        f"\nNVE: mean T {temps.mean():.1f} K, total-energy drift "
        f"{(e_tot.max() - e_tot.min()) / len(atoms) * 1e3:.3f} meV/atom over "
        f"{args.nve_steps * 5 / 1000:.1f} ps (start {e_start:.5f} eV)"
    )
    print(
        f"g(r): first peak at {r[np.argmax(g)]:.2f} Å, height {g.max():.2f} "
        "(liquid argon, Rahman 1964: ≈3.7 Å)"
    )
    print(f"outputs: {out}/melt.traj, nvt.traj, nve.traj and their .log files")
