"""``ase-mlmd diffsim``: learn a pair potential from target RDFs (fit) or by IBI (ibi)."""

from __future__ import annotations

from pathlib import Path


class CLICommand:
    """Learn a pair potential from structure by differentiating through MD (DiffSim).

    fit: fit a neural (or analytic) pair potential to one or more target RDFs with
    backpropagation through MD windows (--method bptt), reweighting of stored states
    (--method reweighting), or Gauss-Newton steps with the reweighting Jacobian on a spline
    (--method newton: inverse Monte Carlo; --start CARD refines an earlier fit). ibi: the
    classical Iterative Boltzmann Inversion baseline on the same targets. Several --target
    options fit one shared potential to several state points.

    Targets are CSV files with two rows (r, then g(r)) as in mdgrad's LJ data; the density
    and temperature come from the file name (rho0.845_T1.0) unless given. A mixture target
    holds one g row per species pair, named in header lines ("# pairs: Ar-Ar,Ar-Kr,Kr-Kr",
    "# composition: Ar:0.75,Kr:0.25", optionally "# density:" / "# temperature:"); mixtures
    are fitted with one potential per species pair: --method bptt or reweighting (one
    --potential per pair), --method newton (one spline correction per pair, from the Boltzmann
    inversion of each partial RDF or a --start species-pair card) or ibi (one spline per
    pair); each target file must hold the partial RDF of every species pair; several
    compositions given as several --target fit one set of pair potentials. Units: --units lj
    (reduced Lennard-Jones units = ASE units with sigma = 1 A, epsilon = 1 eV, m = 1 amu).
    The output folder gets card.toml (+ weights.safetensors), loss.png, rdf_*.png,
    potential.png, history.csv, summary.json and report.md; the card is an ordinary
    calculator: ase-mlmd run fit/card.toml liquid.xyz

    BPTT and reweighting end on their best iterate, scored every --heldout-every epochs by the
    RDF error of a short held-out production run (not the noisy training loss); when that
    error stays above --divergence-factor x the best, the fit backs off (restores the best
    iterate, halves the learning rate). report.md and summary.json say which epoch was kept.

    Examples:

        ase-mlmd diffsim fit --target rdf_rho0.845_T1.0_dt0.01.csv --density 0.845
            --temperature 1.0 --units lj --potential neural-pair --method bptt -o fit/
        ase-mlmd diffsim fit --target A.csv --target B.csv --epochs 200 -o fit_ab/
        ase-mlmd diffsim fit --target rdf_rho0.845_T1.0_dt0.01.csv --method newton
            --start fit/card.toml -o refined/
        ase-mlmd diffsim ibi --target rdf_rho0.845_T1.0_dt0.01.csv -o ibi/
        ase-mlmd diffsim fit --target mix_x0.25.csv --target mix_x0.75.csv --init pmf
            --true-potential lj-mixture -o fit_mix/
        ase-mlmd diffsim fit --target mix_x0.25.csv --target mix_x0.75.csv --method newton
            --start fit_mix/card.toml --true-potential lj-mixture -o refined_mix/
    """

    @staticmethod
    def add_arguments(parser) -> None:
        sub = parser.add_subparsers(dest="action", metavar="{fit,ibi}")
        sub.required = True
        fit = sub.add_parser(
            "fit", help="fit a pair potential by BPTT, reweighting or Gauss-Newton"
        )
        ibi = sub.add_parser("ibi", help="Iterative Boltzmann Inversion baseline")
        for p in (fit, ibi):
            _common_arguments(p)
        fit.add_argument(
            "--potential",
            default="neural-pair",
            choices=("neural-pair", "lennard-jones", "morse", "yukawa", "soft-sphere"),
        )
        fit.add_argument("--method", default="bptt", choices=("bptt", "reweighting", "newton"))
        fit.add_argument(
            "--epochs",
            type=int,
            default=None,
            help="optimizer steps (default 300; newton: Gauss-Newton iterations, default 8)",
        )
        fit.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
        fit.add_argument("--window", type=int, default=120, help="BPTT window, steps")
        fit.add_argument(
            "--checkpoint-every", type=int, default=None, help="BPTT gradient checkpointing, steps"
        )
        fit.add_argument(
            "--init",
            choices=("prior", "pmf"),
            default="prior",
            help="start from the prior (paper) or from the Boltzmann-inverted target",
        )
        fit.add_argument("--vacf-target", action="append", default=[], help="VACF CSV per target")
        fit.add_argument("--vacf-weight", type=float, default=0.0, help="weight of the VACF loss")
        fit.add_argument(
            "--frames",
            type=int,
            default=None,
            help="frames per reference run: reweighting (default 100), newton (default 1000)",
        )
        fit.add_argument(
            "--start",
            default=None,
            help="newton: the card of a pair potential to refine (e.g. a BPTT fit; a "
            "species-pair card for mixtures); default -kT ln g* with a repulsive wall (per pair)",
        )
        fit.add_argument(
            "--regularization",
            type=float,
            default=1e-4,
            help="newton: weight of the smoothness penalty on each step (default 1e-4)",
        )
        best = fit.add_argument_group(
            "best iterate (bptt, reweighting)",
            "the fit keeps the iterate with the lowest RDF error of a short held-out production "
            "run (not the training loss), and backs off when it diverges: restores that iterate "
            "and halves the learning rate",
        )
        best.add_argument(
            "--heldout-every",
            type=int,
            default=10,
            help="score the parameters every N epochs (and at the start and the end) by a "
            "held-out production run; 0 keeps the last iterate (default 10)",
        )
        best.add_argument(
            "--heldout-steps",
            type=int,
            default=1000,
            help="sampled steps of each held-out run, a frame every 10 (default 1000)",
        )
        best.add_argument(
            "--heldout-equilibration",
            type=int,
            default=300,
            help="steps from the FCC start before a held-out run is sampled (default 300)",
        )
        best.add_argument(
            "--divergence-factor",
            type=float,
            default=2.0,
            help="the fit has diverged when the held-out error exceeds this multiple of the "
            "best for --divergence-patience evaluations in a row (default 2)",
        )
        best.add_argument(
            "--divergence-patience",
            type=int,
            default=2,
            help="evaluations in a row above --divergence-factor x the best (default 2)",
        )
        ibi.add_argument("--iterations", type=int, default=20)
        ibi.add_argument("--alpha", type=float, default=0.2, help="IBI mixing factor")
        ibi.add_argument("--steps", type=int, default=2000, help="sampling steps per iteration")

    @staticmethod
    def run(args, parser) -> None:
        from ase_mlmd.diffsim.config import FitConfig
        from ase_mlmd.diffsim.engine import EngineConfig
        from ase_mlmd.diffsim.fit import (
            fit,
            make_mixture_potential,
            make_potential,
            pretrain_to_pmf,
        )
        from ase_mlmd.diffsim.losses import LossWeights
        from ase_mlmd.outdir import lock_folder

        states = _states(args, parser)
        engine = EngineConfig(
            timestep=args.dt, equilibration=args.equilibration, seed=args.seed, device=args.device
        )
        common = dict(
            production_steps=args.production_steps,
            time_limit=args.time_limit,
            engine=engine,
        )
        if args.action == "ibi":
            for flag, value in (("--iterations", args.iterations), ("--steps", args.steps)):
                if value < 1:
                    parser.error(f"{flag} must be a whole number >= 1, got {value}")
            config = FitConfig(
                method="ibi",
                ibi_alpha=args.alpha,
                ibi_iterations=args.iterations,
                ibi_steps=args.steps,
                **common,
            )
            potential = None
        else:
            if args.vacf_target and len(args.vacf_target) != len(states):
                parser.error(f"give one --vacf-target per --target ({len(states)})")
            _attach_vacf(states, args.vacf_target)
            _check_best_iterate_flags(args, parser)
            newton = args.method == "newton"
            overrides = {}  # --epochs / --frames mean iterations / frames of the chosen method
            if args.epochs is not None:
                overrides["newton_iterations" if newton else "epochs"] = args.epochs
            if args.frames is not None:
                overrides["newton_frames" if newton else "rw_frames"] = args.frames
            if not args.lr > 0:
                parser.error(f"--lr (the Adam learning rate) must be > 0, got {args.lr}")
            config = FitConfig(
                method=args.method,
                lr=args.lr,
                window=args.window,
                checkpoint_every=args.checkpoint_every,
                weights=LossWeights(vacf=args.vacf_weight),
                newton_regularization=args.regularization,
                heldout_every=args.heldout_every,
                heldout_steps=args.heldout_steps,
                heldout_equilibration=args.heldout_equilibration,
                divergence_factor=args.divergence_factor,
                divergence_patience=args.divergence_patience,
                **overrides,
                **common,
            )
            if args.start is not None and not newton:
                parser.error("--start is for --method newton (other methods start from --init)")
            if newton:
                potential = None if args.start is None else _load_pair_potential(args.start)
            elif any(s.is_mixture or s.partials for s in states):
                potential = make_mixture_potential(
                    _elements(states), args.potential, cutoff=args.cutoff, seed=args.seed
                )
            else:
                potential = make_potential(args.potential, cutoff=args.cutoff, seed=args.seed)
            if not newton and args.init == "pmf":
                pretrain_to_pmf(potential, states)
        truth = _true_potential(args.true_potential, args.cutoff, states)
        out = Path(args.output)
        with lock_folder(out, "output folder (-o)"):  # one run per folder
            result = fit(
                potential,
                states,
                config,
                out_dir=out,
                true_potential=truth,
                progress=not args.no_progress,
                name=out.name or "diffsim-fit",
                cutoff=args.cutoff,
            )
        print(f"{result.method}: {len(result.history)} iterations in {result.wall_time:.1f} s")
        for name, dev in zip(result.states, result.rdf_dev, strict=True):
            print(f"  rdf_dev {name}: {dev:.4g}")
        if result.selection:
            print(f"  kept {result.selection['reason']}")
        print(f"outputs: {out}/ (card.toml, loss.png, rdf_*.png, potential.png, report.md)")


def _common_arguments(p) -> None:
    p.add_argument("--target", action="append", required=True, help="target RDF CSV (repeat)")
    p.add_argument(
        "--target-layout",
        choices=("rows", "columns"),
        default="rows",
        help="rows: r then g(r) (default, mdgrad); columns: one (r, g) pair per line",
    )
    p.add_argument("--density", type=float, action="append", default=[], help="per target")
    p.add_argument("--temperature", type=float, action="append", default=[], help="per target")
    p.add_argument("--units", choices=("lj",), default="lj", help="reduced LJ units (= ASE)")
    p.add_argument("--cells", type=int, default=4, help="FCC cells per edge (4: 256 atoms)")
    p.add_argument("--cutoff", type=float, default=2.5, help="potential cutoff (sigma)")
    p.add_argument("--dt", type=float, default=0.01, help="time step (reduced units)")
    p.add_argument("--equilibration", type=int, default=1000, help="steps before fitting")
    p.add_argument("--production-steps", type=int, default=5000, help="evaluation run, steps")
    p.add_argument("--time-limit", type=float, default=None, help="stop fitting after S seconds")
    p.add_argument(
        "--true-potential",
        choices=("none", "lj", "lj-mixture"),
        default="none",
        help="the potential that made the targets, for U(r) plots and errors: lj (sigma = "
        "epsilon = 1) or lj-mixture (binary LJ of METRICS.md: sigma 0.9 / 1.0 / 1.1 for the "
        "pairs of the lighter element, the cross pair and the heavier element)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-o", "--output", required=True, help="output folder")


def _check_best_iterate_flags(args, parser) -> None:
    """The best-iterate flags in the user's terms (FitConfig would name its keywords)."""
    if args.heldout_every < 0:
        parser.error(
            f"--heldout-every must be >= 0 (0: keep the last iterate), got {args.heldout_every}"
        )
    if args.heldout_steps < 10:
        parser.error(f"--heldout-steps must be >= 10 (one frame), got {args.heldout_steps}")
    if args.heldout_equilibration < 0:
        parser.error(f"--heldout-equilibration must be >= 0, got {args.heldout_equilibration}")
    if not args.divergence_factor > 1:
        parser.error(f"--divergence-factor must be > 1, got {args.divergence_factor}")
    if args.divergence_patience < 1:
        parser.error(f"--divergence-patience must be >= 1, got {args.divergence_patience}")


def _per_target(values: list[float], n: int, what: str, parser) -> list[float | None]:
    if not values:
        return [None] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        parser.error(
            f"give one --{what} for all targets or one per --target ({n}), not {len(values)}"
        )
    return values


def _states(args, parser):
    from ase_mlmd.diffsim.systems import ThermoState
    from ase_mlmd.diffsim.targets import read_targets

    n = len(args.target)
    densities = _per_target(args.density, n, "density", parser)
    temperatures = _per_target(args.temperature, n, "temperature", parser)
    states = []
    for path, rho, temp in zip(args.target, densities, temperatures, strict=True):
        targets, composition = read_targets(path, rho, temp, layout=args.target_layout)
        target = targets[0]
        if target.density is None or target.temperature is None:
            parser.error(
                f"{path}: density and temperature are not in the file name (rho..._T...) or "
                "its header; give --density and --temperature"
            )
        mixture = composition is not None
        states.append(
            ThermoState(
                target.density,
                target.temperature,
                None if mixture else target,
                n_cells=args.cells,
                composition=composition,
                partials=targets if mixture else [],
            )
        )
    return states


def _true_potential(name: str, cutoff: float, states):
    """The potential that made the targets, for the U(r) comparison (--true-potential)."""
    from ase_mlmd.models.pair import LennardJones

    if name == "lj":
        return LennardJones(1.0, 1.0, cutoff=cutoff)
    if name == "lj-mixture":
        from ase_mlmd.diffsim.mixture import binary_lj_mixture

        elements = _elements(states)
        if len(elements) != 2:
            raise SystemExit(f"--true-potential lj-mixture needs two elements, got {elements}")
        return binary_lj_mixture(*elements, cutoff=cutoff)
    return None


def _elements(states) -> list[str]:
    """The element symbols of all states, sorted."""
    return sorted({e for s in states for e in s.elements})


def _attach_vacf(states, paths) -> None:
    from ase_mlmd.diffsim.targets import read_vacf_csv

    for state, path in zip(states, paths, strict=False):
        state.vacf = read_vacf_csv(path)


def _load_pair_potential(card: str):
    """The pair potential of a card (``diffsim fit`` output or any pair-potential card; a
    species-pair card for mixtures)."""
    from ase_mlmd.calculators.cards import read_card
    from ase_mlmd.calculators.registry import model_from_card
    from ase_mlmd.errors import CardError
    from ase_mlmd.models.pair import PairPotential
    from ase_mlmd.models.species_pair import SpeciesPairPotential

    model = model_from_card(read_card(card))
    if not isinstance(model, PairPotential | SpeciesPairPotential):
        raise CardError(
            f"{card}: --start needs a pair-potential or species-pair card, got "
            f"{type(model).__name__}"
        )
    return model
