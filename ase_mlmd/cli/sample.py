"""``ase-mlmd sample``: reference MD that writes labelled frames (energy, forces) for training."""

from __future__ import annotations

from pathlib import Path

#: Langevin friction of the alanine-dipeptide protocol (METRICS.md §1): 0.5/ps, in 1/fs
AMBER_FRICTION_PER_FS = 0.0005


class CLICommand:
    """Run MD with a reference method and write labelled frames (extended XYZ).

    References: gfn2-xtb, gfn1-xtb (tblite; molecules, -p charge=..,multiplicity=..), emt
    (fcc metals), lj (-p sigma=..,epsilon=..,rc=..), amber-implicit (-p prmtop=FILE: OpenMM,
    OBC2 implicit solvent), or a model card. A frame is written every --every steps, step 0
    included (steps // every + 1 frames), with energy (eV), forces (eV/Å), momenta and info
    step, time_fs, temperature_K, reference. The file is replaced atomically every few
    seconds; running the same command again resumes after its last frame (--no-resume
    starts afresh).

    amber-implicit runs OpenMM's own LangevinMiddleIntegrator with bonds to hydrogen
    constrained (defaults: 2 fs, friction 0.5/ps); it does not resume. tip3p-water (a box of
    rigid TIP3P water, atoms O,H,H,... with PME; -p cutoff=9) runs the same integrator with
    rigid molecules (defaults: 2 fs, friction 1/ps), positions unwrapped; it does not resume.

    --materials samples a data set of an fcc metal instead of one run: STRUCTURE is an element
    (Cu: ase.build.bulk) or a conventional cubic cell file read with pymatgen (CIF, POSCAR);
    the crystal at 100-1200 K, isotropically strained (±1.5, ±3 %) and randomly sheared (±3 %)
    crystals, a vacancy and the liquid at 2000 K, each --steps long (default 2000, a frame every
    20 steps, 2 fs; 1 fs for the liquid) in 32-atom cells; each segment's frames go to
    OUTPUT.parts/ (resumable) and all of them, tagged with info config_type, to -o.

    Examples:

        ase-mlmd sample Cu --reference emt --materials -o cu_ref.extxyz
        ase-mlmd sample ethanol.xyz --reference gfn2-xtb --temperature 500 --timestep 0.5
            --steps 20000 --every 10 -o ethanol_ref.extxyz
        ase-mlmd sample alanine-dipeptide-implicit.pdb --reference amber-implicit
            -p prmtop=alanine-dipeptide-implicit.prmtop --steps 500000 --every 500 -o ala2.extxyz
    """

    @staticmethod
    def add_arguments(parser) -> None:
        from ase_mlmd.cli.common import add_reference_arguments
        from ase_mlmd.md.ase_md import ENSEMBLES

        add = parser.add_argument
        add(
            "structure",
            help="start structure, any file ase.io.read reads (--index picks it); with "
            "--materials an element (Cu) or a cubic fcc cell file",
        )
        add_reference_arguments(parser, "charge=1 or sigma=3.4")
        add("--ensemble", choices=ENSEMBLES, default="nvt-langevin")
        add("--temperature", type=float, default=300.0, help="K (default 300)")
        add(
            "--timestep",
            type=float,
            default=None,
            help="fs (default 0.5; 2 for amber-implicit, which constrains bonds to H)",
        )
        add("--steps", type=int, default=None, help="MD steps (default 1000; --materials 2000)")
        add(
            "--every",
            type=int,
            default=None,
            help="frame interval, steps (default 10; --materials 20)",
        )
        add(
            "--friction",
            type=float,
            default=None,
            help="Langevin friction, 1/fs (default 0.01; 0.0005 = 0.5/ps for amber-implicit)",
        )
        add("--tdamp", type=float, default=None, help="Nosé-Hoover/Bussi time constant, fs")
        add("--seed", type=int, default=0)
        add("-o", "--output", default="sample.extxyz", help="frames file (extended XYZ)")
        add("--index", default="-1", help="frame of the structure file to start from")
        add(
            "--materials",
            action="store_true",
            help="fcc-metal data set: crystal at several T, strained, vacancy, liquid",
        )

    @staticmethod
    def run(args, parser=None) -> None:
        from ase.io import read

        from ase_mlmd.cli.common import parse_parameters

        options = parse_parameters(args.parameters)
        output = Path(args.output)
        if args.materials:
            frames = _run_materials(args, options, output, parser)
            _summary(frames, output)
            return
        args.steps = 1000 if args.steps is None else args.steps
        args.every = 10 if args.every is None else args.every
        if args.reference.lower() == "amber-implicit":
            frames = _run_openmm(args, options, output, parser)
        elif args.reference.lower() == "tip3p-water":
            frames = _run_openmm_water(args, options, output, parser)
        else:
            from ase_mlmd.data.reference import reference_calculator
            from ase_mlmd.data.sampling import SamplingConfig, sample_reference

            try:
                calc = reference_calculator(args.reference, **options)
                config = SamplingConfig(
                    temperature=args.temperature,
                    timestep=0.5 if args.timestep is None else args.timestep,
                    steps=args.steps,
                    every=args.every,
                    ensemble=args.ensemble,
                    friction=0.01 if args.friction is None else args.friction,
                    tdamp=args.tdamp,
                    seed=args.seed,
                )
            except (TypeError, ValueError) as err:
                _fail(parser, str(err))
            atoms = read(args.structure, index=args.index)
            frames = sample_reference(
                atoms,
                calc,
                config,
                output,
                resume=not args.no_resume,
                progress=not args.no_progress,
                threads=args.threads or None,
            )
        _summary(frames, output)


def _run_materials(args, options: dict, output: Path, parser):
    import os

    from ase_mlmd.data.materials import MetalDatasetConfig, read_crystal, sample_metal_dataset
    from ase_mlmd.data.reference import reference_calculator

    settings = {
        key: value
        for key, value in (
            ("steps", args.steps),
            ("every", args.every),
            ("timestep", args.timestep),
            ("friction", args.friction),
        )
        if value is not None
    }
    try:
        calc = reference_calculator(args.reference, **options)
        config = MetalDatasetConfig(seed=args.seed, **settings)
    except (TypeError, ValueError) as err:
        _fail(parser, str(err))
    structure = args.structure
    if os.path.exists(structure):
        structure = read_crystal(structure)
    return sample_metal_dataset(
        structure,
        calc,
        output,
        config,
        resume=not args.no_resume,
        progress=not args.no_progress,
        threads=args.threads or None,
    )


def _run_openmm(args, options: dict, output: Path, parser):
    from ase_mlmd.data.openmm_reference import ala2_reference_trajectory
    from ase_mlmd.outdir import lock_file

    if args.ensemble != "nvt-langevin":
        _fail(parser, "amber-implicit runs OpenMM's Langevin integrator only (nvt-langevin)")
    if "prmtop" not in options:
        _fail(parser, "amber-implicit needs its topology: -p prmtop=PATH.prmtop")
    if output.exists() and not args.no_resume:
        _fail(
            parser,
            f"{output} exists and amber-implicit runs do not resume; pass --no-resume to "
            "overwrite it or choose another -o",
        )
    friction = AMBER_FRICTION_PER_FS if args.friction is None else args.friction
    with lock_file(output, "frames file (-o)"):
        return ala2_reference_trajectory(
            options.pop("prmtop"),
            args.structure,
            temperature=args.temperature,
            timestep_fs=2.0 if args.timestep is None else args.timestep,
            friction_per_ps=friction * 1000.0,
            steps=args.steps,
            every=args.every,
            seed=args.seed,
            output=output,
            progress=not args.no_progress,
            **options,
        )


def _run_openmm_water(args, options: dict, output: Path, parser):
    from ase.io import read

    from ase_mlmd.data.openmm_water import water_reference_trajectory
    from ase_mlmd.outdir import lock_file

    if args.ensemble != "nvt-langevin":
        _fail(parser, "tip3p-water runs OpenMM's Langevin integrator only (nvt-langevin)")
    unknown = sorted(set(options) - {"cutoff", "platform"})
    if unknown:
        _fail(parser, f"tip3p-water has no option(s) {unknown}; its -p options: cutoff, platform")
    if output.exists() and not args.no_resume:
        _fail(
            parser,
            f"{output} exists and tip3p-water runs do not resume; pass --no-resume to "
            "overwrite it or choose another -o",
        )
    with lock_file(output, "frames file (-o)"):
        return water_reference_trajectory(
            read(args.structure, index=args.index),
            temperature=args.temperature,
            timestep_fs=2.0 if args.timestep is None else args.timestep,
            friction_per_ps=1.0 if args.friction is None else args.friction * 1000.0,
            steps=args.steps,
            every=args.every,
            seed=args.seed,
            output=output,
            threads=args.threads or None,
            progress=not args.no_progress,
            **options,
        )


def _fail(parser, message: str) -> None:
    if parser is None:
        raise SystemExit(message)
    parser.error(message)


def _summary(frames, output: Path) -> None:
    import numpy as np

    if not frames:
        print(f"no frames written to {output}")
        return
    temperatures = np.array([f.info.get("temperature_K", np.nan) for f in frames])
    energies = np.array([f.get_potential_energy() for f in frames])
    print(
        f"{len(frames)} frames (steps {frames[0].info.get('step')}-{frames[-1].info.get('step')}) "
        f"labelled by {frames[0].info.get('reference')}: mean T = {np.nanmean(temperatures):.1f} "
        f"K, E_pot {energies.min():.4f} to {energies.max():.4f} eV"
    )
    print(f"frames: {output}")
