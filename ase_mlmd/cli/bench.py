"""``ase-mlmd bench``: the MD benchmark report of Fu et al. for one or more models."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*([0-9.eE+-]+)\s*(fs|ps|ns)?\s*$")
_PS_PER = {"fs": 1e-3, "ps": 1.0, "ns": 1e3, None: 1.0}


def parse_length_ps(text: str) -> float:
    """``"50ps"``, ``"500 fs"``, ``"1ns"`` or a bare number (ps) → ps."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"cannot read the length {text!r}; write e.g. 50ps, 500fs or 1ns")
    value = float(match.group(1)) * _PS_PER[match.group(2)]
    if not value > 0:
        raise ValueError(f"the length must be positive, got {text!r}")
    return value


class CLICommand:
    """Judge force fields by the MD they produce (Fu et al., "Forces are not Enough").

    Splits the reference data (seed 123), measures each model's test force MAE, runs
    --replicas simulations per model from test frames with the system's protocol (see
    METRICS.md), stops each at collapse and writes report.md (one table: force MAE,
    stability, h(r)/RDF MAE, diffusivity error, PMF MAE where they apply), metrics.json,
    PNG plots and the trajectories into -o.

    --system metal is the materials benchmark (METRICS.md §6) of an fcc metal against the
    reference that labelled --reference (e.g. EMT, from `ase-mlmd sample Cu --reference emt
    --materials`): EOS and bulk modulus, C11/C12/C44, phonon bands/DOS (phonopy) and their
    frequency MAE, vacancy formation energy, liquid RDF and diffusivity (--length: liquid
    production time, default 4 ps; --short: 1 ps), test-set errors; --structure takes the
    crystal from a CIF/POSCAR (pymatgen); relaxed crystals are written back as CIF.

    Examples:

        ase-mlmd bench --system metal --models calculators/cu-nequip.toml
            --reference cu_ref.extxyz -o report/
        ase-mlmd bench --system ethanol
            --models calculators/ethanol-nequip.toml,calculators/ethanol-schnet.toml
            --reference ethanol_ref.extxyz --replicas 5 --length 50ps -o report/
        ase-mlmd bench --system water --models water.toml --reference ../shared/data/water_dft
            --format deepmd --short -o report/
    """

    @staticmethod
    def add_arguments(parser) -> None:
        from ase_mlmd.bench.systems import SYSTEMS

        add = parser.add_argument
        add(
            "--system",
            required=True,
            choices=sorted([*SYSTEMS, "metal"]),
            help="benchmark protocol (metal: the materials benchmark of an fcc metal)",
        )
        add("--models", required=True, help="comma-separated card names or card paths")
        add("--reference", required=True, help="labelled reference data (file or folder)")
        add("--format", default=None, help="reference data format (default: from the path)")
        add("--energy-unit", default=None, help="energy unit of the reference (e.g. kcal/mol)")
        add("--replicas", type=int, default=5, help="simulations per model (default 5)")
        add("--length", default=None, help="simulated time per replica, e.g. 50ps")
        add("--short", action="store_true", help="the system's documented short length")
        add("--seed", type=int, default=123)
        add("--device", default="cpu")
        add("--topology", default=None, help="peptide PDB (ala2) for φ/ψ")
        add("--reference-fes", default=None, help="reference FES grid (PLUMED fes.dat)")
        add("--trust-model", action="store_true", help="allow model files that run code")
        add("--structure", default=None, help="metal: crystal file (CIF, POSCAR; pymatgen)")
        add(
            "--phonon-supercell",
            type=int,
            default=None,
            help="metal: phonon supercell repeat (default: sides >= 10 Å and 2 x cutoff)",
        )
        add("--threads", type=int, default=None, help="torch/OpenMP threads")
        add("--no-progress", action="store_true")
        add("-o", "--output", default="report", help="report folder (default report/)")

    @staticmethod
    def run(args) -> None:
        if args.system == "metal":
            _run_metal(args)
            return
        from ase_mlmd.bench import BenchConfig, benchmark
        from ase_mlmd.bench.report import markdown_table
        from ase_mlmd.outdir import lock_folder

        config = BenchConfig(
            system=args.system,
            replicas=args.replicas,
            length_ps=None if args.length is None else parse_length_ps(args.length),
            short=args.short,
            seed=args.seed,
            device=args.device,
            progress=not args.no_progress,
            trust=args.trust_model,
            topology=args.topology,
            reference_fes=args.reference_fes,
        )
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        with lock_folder(args.output, "report folder (-o)"):  # one run per folder
            report, runs = benchmark(
                models,
                args.reference,
                args.output,
                config,
                data_format=args.format,
                energy_unit=args.energy_unit,
            )
        print(markdown_table(config.protocol.kind, runs))
        print(f"report: {report} (metrics.json and plots beside it)")


def _run_metal(args) -> None:
    from ase_mlmd.bench.metal import MetalBenchConfig, metal_benchmark
    from ase_mlmd.bench.metal_liquid import LiquidConfig
    from ase_mlmd.bench.metal_report import properties_table
    from ase_mlmd.data.readers import read_frames
    from ase_mlmd.outdir import lock_folder

    if args.length is not None:
        liquid = LiquidConfig(production_ps=parse_length_ps(args.length))
    elif args.short:
        liquid = LiquidConfig(equilibration_ps=0.2, production_ps=1.0)
    else:
        liquid = LiquidConfig()
    config = MetalBenchConfig(
        liquid=liquid,
        phonon_repeat=args.phonon_supercell,
        split_seed=args.seed,
        device=args.device,
        trust=args.trust_model,
        threads=args.threads,
        progress=not args.no_progress,
    )
    frames = read_frames(args.reference, args.format, energy_unit=args.energy_unit)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    with lock_folder(args.output, "report folder (-o)"):
        report, results = metal_benchmark(
            models, frames, args.output, config, structure=args.structure
        )
    reference = next(iter(results))
    print(properties_table(results, reference))
    print(f"report: {report} (metrics.json, plots and relaxed CIFs beside it)")
