"""The MD benchmark of Fu et al. ("Forces are not Enough", MDsim) as one call or one command.

``benchmark(models, reference, system=...)`` reads the reference data, runs the protocol of
:mod:`ase_mlmd.bench.systems` for every model (:mod:`ase_mlmd.bench.protocol`), computes the
metrics (:mod:`ase_mlmd.bench.metrics`) and writes ``report.md``, ``metrics.json`` and PNG plots
(:mod:`ase_mlmd.bench.report`). ``ase-mlmd bench`` is its command line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ase import Atoms

from ase_mlmd.bench.protocol import BenchConfig, ModelRun, ReplicaRun, run_benchmark
from ase_mlmd.bench.systems import SYSTEMS, BenchSystem, get_system

__all__ = [
    "SYSTEMS",
    "BenchConfig",
    "BenchSystem",
    "ModelRun",
    "ReplicaRun",
    "benchmark",
    "get_system",
    "run_benchmark",
]


def benchmark(
    models: Sequence[str | os.PathLike],
    reference: str | os.PathLike | Sequence[Atoms],
    output: str | os.PathLike,
    config: BenchConfig | None = None,
    *,
    data_format: str | None = None,
    energy_unit: str | None = None,
    reference_name: str | None = None,
    log=print,
    **settings: Any,
) -> tuple[Path, list[ModelRun]]:
    """Benchmark models against reference data and write the report; return (report.md, runs).

    Args:
        models: card names or card paths.
        reference: labelled frames, or a data file/folder read with
            :func:`ase_mlmd.data.read_frames` (``data_format``, ``energy_unit`` as there).
        output: report folder (``report.md``, ``metrics.json``, PNGs, ``trajectories/``).
        config: a :class:`BenchConfig`; or give its fields as keyword ``settings``.
        reference_name: how the report names the reference (default: its path).
    """
    from ase_mlmd.bench.report import write_report
    from ase_mlmd.data.readers import read_frames

    config = config or BenchConfig(**settings)
    name = reference_name or "reference frames"
    if isinstance(reference, str | os.PathLike):
        name = reference_name or str(reference)
        # the protocol's default format names its own data layout (a folder, e.g. deepmd);
        # any other reference file is read by its own format, and checked against the system
        default = config.protocol.data_format if Path(reference).is_dir() else None
        fmt = data_format or default
        reference = read_frames(reference, fmt, energy_unit=energy_unit)
    runs, ref_obs = run_benchmark(models, reference, config, output, reference_name=name, log=log)
    report = write_report(output, runs, config, ref_obs, reference_name=name)
    return report, runs
