"""Molecular dynamics: with any calculator through ASE's integrators (``--engine ase``), or many
replicas at once in the batched torch engine (``--engine torch``)."""

from __future__ import annotations

import json
from pathlib import Path


class CLICommand:
    """Run MD on a structure with a calculator and write a trajectory and a log.

    Ensembles: nve (VelocityVerlet), nvt-langevin (Langevin), nvt-nose-hoover
    (NoseHooverChainNVT), nvt-bussi (Bussi). Initial velocities are drawn from the
    Maxwell-Boltzmann distribution at --temperature.

    --engine ase (default) runs one structure with ASE's integrators and any calculator;
    -o is the trajectory file. --engine torch runs --replicas copies (or every frame chosen
    by --index, e.g. --index 0:8) at once with the batched torch engine on --device; -o is
    an output folder with replica_{i}.traj, md.log (CSV), checkpoint.pt and summary.json.
    Replicas whose run collapses (NaN, temperature outside 0.1-100000 K, --max-force,
    --bond-deviation) stop while the others go on. Running the same command again resumes
    from the checkpoint (--no-restart starts afresh).

    Examples:

        ase-mlmd md ethanol.xyz --calc ethanol-nequip --ensemble nvt-langevin
            --temperature 300 --timestep 0.5 --steps 2000 -o run.traj
        ase-mlmd md argon.xyz --calc lj-argon --ensemble nve --temperature 94.4
            --timestep 5 --steps 2000 -o argon.traj
        ase-mlmd md start.xyz --calc NAME --engine torch --replicas 64
            --ensemble nvt-langevin --temperature 300 --steps 10000 -o runs/
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
        add(
            "-o",
            "--output",
            default=None,
            help="ase engine: trajectory file (default md.traj); torch engine: output folder "
            "(default md_runs)",
        )
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
        add("--engine", choices=("ase", "torch"), default="ase", help="MD engine (default ase)")
        add("--replicas", type=int, default=None, help="torch engine: copies of the structure")
        add("--skin", type=float, default=1.0, help="torch engine: neighbor-list skin, Å")
        add(
            "--no-restart",
            action="store_true",
            help="torch engine: ignore an existing checkpoint and overwrite the outputs",
        )
        add(
            "--max-force",
            type=float,
            default=None,
            help="torch engine: stop a replica above this force, eV/Å",
        )
        add(
            "--bond-deviation",
            type=float,
            default=None,
            help="torch engine: stop a replica when a bond (natural cutoffs of the first "
            "structure) deviates more than this from its starting length, Å (MDsim: 0.5)",
        )
        add(
            "--no-temperature-bounds",
            action="store_true",
            help="torch engine: do not stop replicas outside 0.1-100000 K",
        )

    @staticmethod
    def run(args, parser=None) -> None:
        if args.engine == "torch":
            _run_torch(args, parser)
            return
        if args.replicas not in (None, 1):
            _fail(parser, "--replicas needs --engine torch (the ase engine runs one structure)")
        from ase_mlmd.cli.common import make_calculator, parse_parameters, read_structures
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
        atoms = read_structures(args.structure, args.index)
        if isinstance(atoms, list):
            _fail(parser, "--engine ase runs one structure: give --index a single frame")
        calc = make_calculator(
            args.calc, parse_parameters(args.parameters), device=args.device, trust=args.trust_model
        )
        output = Path(args.output or "md.traj")
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


def _fail(parser, message: str) -> None:
    if parser is None:
        raise SystemExit(message)
    parser.error(message)


def _run_torch(args, parser) -> None:
    """``--engine torch``: many replicas with :func:`ase_mlmd.md.simulate`."""
    from ase_mlmd.calculators.registry import ase_reserved_names
    from ase_mlmd.cli.common import make_calculator, parse_parameters, read_structures
    from ase_mlmd.fileio import atomic_write_text
    from ase_mlmd.md.monitors import BondDeviation, MaxForce
    from ase_mlmd.md.simulate import simulate
    from ase_mlmd.outdir import lock_folder

    if args.calc in ase_reserved_names():
        _fail(
            parser,
            f"{args.calc!r} is one of ASE's own calculators; it cannot run in the torch engine, "
            "which needs a torch energy model (a card or a nequip/schnetpack model). Use "
            "--engine ase for it",
        )
    structures = read_structures(args.structure, args.index)
    calc = make_calculator(
        args.calc, parse_parameters(args.parameters), device=args.device, trust=args.trust_model
    )
    model = getattr(calc, "model", None)
    if model is None:
        _fail(parser, f"calculator {args.calc!r} has no torch model; use --engine ase for it")
    monitors = []
    if args.max_force is not None:
        monitors.append(MaxForce(args.max_force))
    if args.bond_deviation is not None:
        first = structures if not isinstance(structures, list) else structures[0]
        monitors.append(BondDeviation(first, args.bond_deviation))
    out = Path(args.output or "md_runs")  # created by simulate once the input is checked
    log = Path(args.log) if args.log else out / "md.log"
    with lock_folder(out, "output folder (-o)"):
        result = simulate(
            structures,
            model,
            replicas=args.replicas,
            ensemble=args.ensemble,
            temperature=args.temperature,
            timestep=args.timestep,
            steps=args.steps,
            save_every=args.save_every,
            log_every=args.log_every,
            device=calc.device,
            trajectory=str(out / "replica_{i}.traj"),
            logfile=log,
            checkpoint=out / "checkpoint.pt",
            monitors=monitors,
            temperature_bounds=None if args.no_temperature_bounds else (0.1, 100_000.0),
            seed=args.seed,
            friction=args.friction,
            tdamp=args.tdamp,
            skin=args.skin,
            progress=not args.no_progress,
            restart=not args.no_restart,
        )
        summary = {"command": "ase-mlmd md --engine torch", "calc": args.calc, **result.summary()}
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
    print(
        f"{len(result.replicas)} replicas, {result.steps} steps of {args.ensemble} at "
        f"{args.timestep} fs{resumed}: {len(result.completed)} completed, "
        f"{len(result.collapsed)} collapsed; {result.atom_steps_per_s:.3g} atom-steps/s"
    )
    print(result.table())
    print(f"outputs: {out}/ (replica_{{i}}.traj, {log.name}, checkpoint.pt, summary.json)")
