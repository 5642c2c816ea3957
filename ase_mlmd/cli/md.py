"""Molecular dynamics with any calculator, driven by ASE's integrators."""

from __future__ import annotations

from pathlib import Path


class CLICommand:
    """Run MD on a structure with a calculator and write a trajectory and a log.

    Ensembles: nve (VelocityVerlet), nvt-langevin (Langevin), nvt-nose-hoover
    (NoseHooverChainNVT), nvt-bussi (Bussi). Initial velocities are drawn from the
    Maxwell-Boltzmann distribution at --temperature.

    Example:

        ase-mlmd md ethanol.xyz --calc lj-argon --ensemble nvt-langevin --temperature 300
            --timestep 0.5 --steps 2000 -o run.traj
    """

    @staticmethod
    def add_arguments(parser) -> None:
        from ase_mlmd.md.ase_md import ENSEMBLES

        add = parser.add_argument
        add("structure", help="structure file readable by ase.io.read (the last frame is used)")
        add(
            "--calc",
            required=True,
            help="card name (see `ase-mlmd calculators`), path to a card .toml, a backend "
            "(nequip, schnetpack; with -p model=FILE) or an ASE calculator name (emt, lj, ...)",
        )
        add("-p", "--parameters", default="", help="calculator parameters, e.g. model=m.toml")
        add("--ensemble", choices=ENSEMBLES, default="nvt-langevin")
        add("--temperature", type=float, default=300.0, help="K (default 300)")
        add("--timestep", type=float, default=0.5, help="fs (default 0.5)")
        add("--steps", type=int, default=1000)
        add("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
        add(
            "--tdamp",
            type=float,
            default=None,
            help="Nosé-Hoover/Bussi time constant, fs (default 100 time steps)",
        )
        add("--save-every", type=int, default=10, help="trajectory interval, steps")
        add("--log-every", type=int, default=10, help="log interval, steps")
        add("-o", "--output", default="md.traj", help="trajectory file (default md.traj)")
        add("--log", default=None, help="log file (default: the trajectory name with .log)")
        add("--seed", type=int, default=0)
        add("--device", default="cpu", help="cpu, cuda, or auto")
        add(
            "--trust-model",
            action="store_true",
            help="allow model files that execute code when loaded (pickles, nequip packages)",
        )
        add("--index", default="-1", help="frame of the structure file to start from")
        add("--no-progress", action="store_true", help="no progress bar")

    @staticmethod
    def run(args) -> None:
        from ase.io import read

        from ase_mlmd.cli.common import make_calculator, parse_parameters
        from ase_mlmd.md.ase_md import AseMDConfig, run_ase_md

        config = AseMDConfig(
            ensemble=args.ensemble,
            temperature_K=args.temperature,
            timestep_fs=args.timestep,
            steps=args.steps,
            friction_per_fs=args.friction,
            tdamp_fs=args.tdamp,
            save_every=args.save_every,
            log_every=args.log_every,
            seed=args.seed,
        )
        atoms = read(args.structure, index=args.index)
        calc = make_calculator(
            args.calc, parse_parameters(args.parameters), device=args.device, trust=args.trust_model
        )
        output = Path(args.output)
        log = Path(args.log) if args.log else output.with_suffix(".log")
        run_ase_md(
            atoms, calc, config, trajectory=output, logfile=log, progress=not args.no_progress
        )
        n_frames = args.steps // args.save_every + 1
        print(
            f"{args.steps} steps of {args.ensemble} at {args.timestep} fs: "
            f"T = {atoms.get_temperature():.1f} K, E_pot = {atoms.get_potential_energy():.6f} eV,"
            f" E_tot = {atoms.get_total_energy():.6f} eV"
        )
        print(f"trajectory: {output} ({n_frames} frames), log: {log}")
