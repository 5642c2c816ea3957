"""The embedded default end to end (``ase-mlmd demo``): no download, minutes on a laptop CPU.

1. Reference: GFN2-xTB (tblite) MD of ethanol at 500 K, 0.5 fs, Langevin — labelled frames.
2. Models: the shipped cards ``ethanol-nequip`` and ``ethanol-schnet`` (trained by this
   package's pipeline on a longer GFN2-xTB run with another seed), or, with ``retrain``, a
   NequIP and a SchNet model trained here on the demo's own reference within a time limit.
3. Benchmark (Fu et al.): test force MAE, replicas from test frames with MDsim's ethanol protocol
   (Nosé–Hoover, 500 K, 0.5 fs), stability, h(r) — in ``report/`` with plots.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ase.build import molecule

SHIPPED_CARDS = ("ethanol-nequip", "ethanol-schnet")


@dataclasses.dataclass
class DemoConfig:
    """Settings of the demo (units: fs, K, ps).

    Attributes:
        output: folder of everything the demo writes.
        reference_steps: GFN2-xTB MD steps (0.5 fs each); a frame every ``every`` steps.
        reference_seed: seed of the reference run (the shipped cards were trained on seed 0,
            so the demo's test frames are new to them).
        retrain: train NequIP and SchNet here instead of using the shipped cards.
        train_time: time limit per model when retraining (e.g. "3m").
        replicas: simulations per model. length_ps: simulated time per replica.
        progress: show progress bars.
    """

    output: str | Path = "out/demo"
    reference_steps: int = 4000
    every: int = 10
    reference_seed: int = 1
    retrain: bool = False
    train_time: str = "3m"
    replicas: int = 5
    length_ps: float = 15.0
    progress: bool = True


def run_demo(config: DemoConfig, log=print):
    """Run the demo; return (path of report.md, model runs)."""
    from ase_mlmd.bench import BenchConfig, benchmark
    from ase_mlmd.bench.report import markdown_table
    from ase_mlmd.data import SamplingConfig, sample_reference

    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    ref_path = out / "ethanol_ref.extxyz"
    log(
        f"demo 1/3: GFN2-xTB reference MD of ethanol, 500 K, {config.reference_steps} steps of "
        f"0.5 fs -> {ref_path}"
    )
    sampling = SamplingConfig(
        temperature=500.0,
        timestep=0.5,
        steps=config.reference_steps,
        every=config.every,
        seed=config.reference_seed,
    )
    reference = sample_reference(
        molecule("CH3CH2OH"), "gfn2-xtb", sampling, ref_path, progress=config.progress, threads=1
    )
    if config.retrain:
        models = _train_models(ref_path, out / "models", config, log)
    else:
        models = list(SHIPPED_CARDS)
        log(f"demo 2/3: shipped cards {', '.join(models)} (--retrain trains them here)")
    log(
        f"demo 3/3: benchmark, {config.replicas} replicas x {config.length_ps:g} ps per model "
        "(Nosé–Hoover 500 K, 0.5 fs) ..."
    )
    bench = BenchConfig(
        system="ethanol",
        replicas=config.replicas,
        length_ps=config.length_ps,
        progress=config.progress,
    )
    report, runs = benchmark(
        models, reference, out / "report", bench, log=log, reference_name=str(ref_path)
    )
    log(markdown_table("molecule", runs))
    log(f"report: {report}; plots: {out / 'report'}/*.png; trajectories: {out / 'report'}")
    return report, runs


def _train_models(ref_path: Path, directory: Path, config: DemoConfig, log) -> list[str]:
    from ase_mlmd.train import TrainConfig, train

    cards = []
    for model in ("nequip", "schnet"):
        log(f"demo 2/3: training {model} on {ref_path} (at most {config.train_time}) ...")
        result = train(
            ref_path,
            TrainConfig(model=model, max_time=config.train_time, seed=123),
            directory / f"ethanol-{model}",
            progress=config.progress,
        )
        cards.append(str(result.card_path))
    return cards
