# ruff: noqa: E501  (the case table keeps one case per line)
"""Bad-input tally: feed the ``ase-mlmd`` command line many small wrong inputs and record what
each one does (issue 18).

Every case runs ``ase-mlmd ...`` as a subprocess in a scratch folder (small, fast inputs: wrong
paths, formats, units, names, flag values, mismatched systems, degenerate cells, NaN positions,
corrupted or untrusted model files, ...). For each it records the exit code, whether a Python
traceback was printed and the first lines of stderr, and classifies it:

* ``traceback``: a traceback was printed (automatic);
* ``silently accepted``: exit code 0 for an input that should have been refused (automatic);
* ``correctly accepted``: exit code 0 for an input that is valid (automatic);
* ``clear`` / ``unclear``: a refusal, judged by a person from its message. The judgment lives in
  :data:`JUDGED` with the message fragment it was made on; when the message no longer contains
  that fragment the case shows as ``unjudged`` until someone reads it again.
* ``timeout``: no answer within the per-case limit (counted as unclear in the tally).

Writes ``benchmarks/bad_inputs.json`` and ``benchmarks/bad_inputs.md`` and prints the tally.

    python benchmarks/bad_inputs.py [--jobs 2] [--timeout 90] [--only run,md]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
EXE = str(Path(sys.executable).with_name("ase-mlmd"))


@dataclasses.dataclass
class Case:
    """One bad (or, for contrast, good) input. ``expect``: "reject" or "accept"."""

    id: str
    args: list[str]
    expect: str = "reject"
    what: str = ""
    env: dict[str, str] = dataclasses.field(default_factory=dict)


# --- inputs ---------------------------------------------------------------------------------


def make_files(work: Path) -> None:
    """Write the small input files the cases use into ``work``."""
    import torch
    from ase import Atoms
    from ase.build import bulk, molecule
    from ase.io import write

    crystal = bulk("Ar", "fcc", a=5.26, cubic=True)
    write(work / "ar.xyz", crystal)
    cluster = Atoms("Ar3", positions=[[0, 0, 0], [3.9, 0, 0], [0, 3.7, 0]])
    write(work / "cluster.xyz", cluster)
    nan = cluster.copy()
    nan.positions[1, 0] = np.nan
    write(work / "nan.xyz", nan)
    parallel = crystal.copy()  # the second vector parallel to the first (rounded, not exact)
    parallel.set_cell(
        [
            [-2.614720836539693, -1.5195644638097194, 1.9775492445948877],
            [-2.309156896999752, -1.341983707402439, 1.7464470445556923],
            [-0.6426733147201713, 6.832317352748429, -3.325973367433068],
        ]
    )
    write(work / "parallel.traj", parallel)
    flat = crystal.copy()
    flat.cell[2] = [0.0, 0.0, 0.0]
    write(work / "zero_height.traj", flat)
    write(work / "ethanol.xyz", molecule("CH3CH2OH"))
    (work / "empty.xyz").write_text("0\n\n")
    (work / "garbage.xyz").write_text("this is not\na structure file\n")
    (work / "notes.txt").write_text("hello\n")
    # labelled data
    from ase.calculators.lj import LennardJones

    argon = []
    for k in range(10):
        frame = crystal.repeat(2)
        frame.rattle(0.05, seed=k)
        frame.calc = LennardJones(sigma=3.4, epsilon=0.0104, rc=8.0)
        frame.get_forces()
        argon.append(frame)
    write(work / "argon_ref.extxyz", argon)
    n = 6
    rng = np.random.default_rng(0)
    np.savez(
        work / "md17_nounit.npz",
        R=rng.random((n, 3, 3)) * 2,
        z=np.array([8, 1, 1]),
        E=np.zeros((n, 1)),
        F=np.zeros((n, 3, 3)),
    )
    frames = []
    for k in range(n):
        water = molecule("H2O")
        water.rattle(0.05, seed=k)
        frames.append(water)
    write(work / "unlabelled.xyz", frames)
    # model cards
    lj = (
        'name = "x"\nbackend = "lennard-jones"\nspecies = ["Ar"]\ncutoff = 8.0\n'
        "[parameters]\nepsilon = 0.0104\nsigma = 3.4\n"
    )
    (work / "bad_toml.toml").write_text('name = "x\nbackend = \n')
    (work / "no_cutoff.toml").write_text(lj.replace("cutoff = 8.0\n", ""))
    (work / "unknown_backend.toml").write_text(lj.replace("lennard-jones", "gaussian-process"))
    (work / "bad_unit.toml").write_text(lj + '[units]\nenergy = "furlong"\n')
    (work / "bad_species.toml").write_text(lj.replace('["Ar"]', '["Xx"]'))
    (work / "bad_param.toml").write_text(lj.replace("sigma = 3.4", "sigma = 3.4\nsigmaa = 1"))
    weights = '[weights]\nfile = "{file}"\nsha256 = "{sha}"\nformat = "{fmt}"\n'
    (work / "unknown_format.toml").write_text(lj + weights.format(file="w", sha="0", fmt="hdf5"))
    (work / "missing_weights.toml").write_text(
        lj + weights.format(file="gone.safetensors", sha="0" * 64, fmt="safetensors")
    )
    (work / "w.safetensors").write_bytes(b"not really safetensors")
    (work / "sha_mismatch.toml").write_text(
        lj + weights.format(file="w.safetensors", sha="1" * 64, fmt="safetensors")
    )
    import hashlib

    torch.save(torch.nn.Linear(2, 2), work / "model.pt")
    sha = hashlib.sha256((work / "model.pt").read_bytes()).hexdigest()
    (work / "disguised.toml").write_text(
        lj + weights.format(file="model.pt", sha=sha, fmt="state_dict")
    )
    nequip = (
        'name = "p"\nbackend = "nequip"\nspecies = ["H", "O"]\ncutoff = 5.0\n'
        + weights.format(file="model.pt", sha=sha, fmt="pickle")
    )
    (work / "pickled.toml").write_text(nequip)
    shadow = work / "cards"
    shadow.mkdir()
    (shadow / "emt.toml").write_text(lj.replace('"x"', '"emt"'))
    broken = work / "broken_cards"
    broken.mkdir()
    (broken / "oops.toml").write_text("name = [\n")
    # DiffSim targets
    r = np.linspace(0.05, 3.0, 60)
    (work / "target_text.csv").write_text("r,g\n1,2\n")
    np.savetxt(work / "target_cols.csv", np.stack([r, np.ones_like(r)], axis=1), delimiter=",")
    g = np.ones_like(r)
    g[5] = np.nan
    np.savetxt(work / "target_nan.csv", np.stack([r, g]), delimiter=",")
    np.savetxt(work / "target_short.csv", np.stack([r[:20], np.ones(20)]), delimiter=",")


def cases() -> list[Case]:
    """The inputs tried; grouped by subcommand."""
    lj_rdf = str(DATA / "lj_rdf" / "rdf_rho0.845_T1.0_dt0.01.csv")
    vacf = str(DATA / "lj_rdf" / "vacf_rho0.845_T1.0_dt0.01.csv")
    water, aspirin = str(DATA / "water_dft"), str(DATA / "aspirin" / "aspirin.xyz")
    ethanol_ref = str(DATA / "ethanol" / "ethanol_snip.xyz")
    ref = [ethanol_ref, "--energy-unit", "kcal/mol"]  # MD17-derived, no unit in the file
    asp = ["--system", "aspirin", "--reference", aspirin, "--energy-unit", "kcal/mol"]  # 15 frames
    fast_fit = ["--cells", "3", "--production-steps", "20", "--equilibration", "10",
                "--no-progress", "-o"]  # fmt: skip
    md = ["--steps", "2", "--no-progress"]
    c = Case
    return [
        # run
        c("run-unknown-name", ["run", "lj-argn", "ar.xyz"], what="misspelt card name"),
        c("run-missing-card", ["run", "models/none.toml", "ar.xyz"], what="card path missing"),
        c("run-unknown-format", ["run", "unknown_format.toml", "ar.xyz"], what="weights hdf5"),
        c("run-missing-structure", ["run", "lj-argon", "none.xyz"], what="no such file"),
        c("run-garbage-structure", ["run", "lj-argon", "garbage.xyz"], what="not a structure"),
        c("run-unknown-extension", ["run", "lj-argon", "notes.txt"], what="unknown file type"),
        c("run-empty-structure", ["run", "lj-argon", "empty.xyz"], what="zero atoms"),
        c("run-nan", ["run", "lj-argon", "nan.xyz"], what="NaN position"),
        c("run-parallel-cell", ["run", "lj-argon", "parallel.traj"], what="parallel vectors"),
        c("run-zero-height", ["run", "lj-argon", "zero_height.traj"], what="zero cell vector"),
        c("run-eos-value", ["run", "lj-argon", "ar.xyz", "-E", "5"], what="-E without %"),
        c("run-eos-type", ["run", "lj-argon", "ar.xyz", "-E", "5,2", "--eos-type", "cubic"]),
        c("run-fmax-zero", ["run", "lj-argon", "cluster.xyz", "-f", "0"], what="-f 0"),
        c("run-fmax-negative", ["run", "lj-argon", "cluster.xyz", "-f", "-1"], what="-f -1"),
        c("run-fmax-text", ["run", "lj-argon", "cluster.xyz", "-f", "tight"], what="-f tight"),
        c("run-properties", ["run", "lj-argon", "cluster.xyz", "--properties", "ez"]),
        c("run-unknown-parameter", ["run", "lj-argon", "cluster.xyz", "-p", "epsilon=1"]),
        c("run-wrong-species", ["run", "ethanol-nequip", "ar.xyz"], what="Ar for an ethanol model"),
        c("run-sha-mismatch", ["run", "sha_mismatch.toml", "ar.xyz"]),
        c("run-missing-weights", ["run", "missing_weights.toml", "ar.xyz"]),
        c("run-disguised-pickle", ["run", "disguised.toml", "ar.xyz"], what="pickle as state_dict"),
        c("run-untrusted-pickle", ["run", "pickled.toml", "ethanol.xyz"], what="pickle, no trust"),
        c("run-bad-toml", ["run", "bad_toml.toml", "ar.xyz"]),
        c("run-card-no-cutoff", ["run", "no_cutoff.toml", "ar.xyz"]),
        c("run-unknown-backend", ["run", "unknown_backend.toml", "ar.xyz"]),
        c("run-bad-unit", ["run", "bad_unit.toml", "ar.xyz"]),
        c("run-bad-species", ["run", "bad_species.toml", "ar.xyz"]),
        c("run-bad-card-parameter", ["run", "bad_param.toml", "ar.xyz"]),
        c("run-backend-no-model", ["run", "nequip", "ethanol.xyz"]),
        c("run-stress-open", ["run", "lj-argon", "cluster.xyz", "-s", "0.01"], what="cell relax, no cell"),
        c("run-ok", ["run", "lj-argon", "ar.xyz"], "accept", "valid single point"),
        c("run-ok-relax", ["run", "lj-argon", "cluster.xyz", "-f", "0.05"], "accept", "valid -f"),
        # md
        c("md-unknown-calc", ["md", "cluster.xyz", "--calc", "lj-argn", *md]),
        c("md-missing-structure", ["md", "none.xyz", "--calc", "lj-argon", *md]),
        c("md-timestep-zero", ["md", "cluster.xyz", "--calc", "lj-argon", "--timestep", "0", *md]),
        c("md-steps-negative", ["md", "cluster.xyz", "--calc", "lj-argon", "--steps", "-5"]),
        c("md-temperature-negative", ["md", "cluster.xyz", "--calc", "lj-argon", "--temperature", "-10", *md]),
        c("md-ensemble", ["md", "cluster.xyz", "--calc", "lj-argon", "--ensemble", "npt", *md]),
        c("md-replicas-zero", ["md", "cluster.xyz", "--calc", "lj-argon", "--engine", "torch", "--replicas", "0", *md, "-o", "mdz"]),
        c("md-nan", ["md", "nan.xyz", "--calc", "lj-argon", *md]),
        c("md-parallel-cell", ["md", "parallel.traj", "--calc", "lj-argon", *md]),
        c("md-torch-parallel-cell", ["md", "parallel.traj", "--calc", "lj-argon", "--engine", "torch", *md, "-o", "mdp"]),
        c("md-device", ["md", "cluster.xyz", "--calc", "lj-argon", "--device", "cuda:7", *md]),
        c("md-untrusted", ["md", "ethanol.xyz", "--calc", "pickled.toml", *md]),
        c("md-index", ["md", "cluster.xyz", "--calc", "lj-argon", "--index", "99", *md]),
        c("md-save-every-zero", ["md", "cluster.xyz", "--calc", "lj-argon", "--save-every", "0", *md]),
        c("md-friction-negative", ["md", "cluster.xyz", "--calc", "lj-argon", "--friction", "-1", *md]),
        c("md-unknown-parameter", ["md", "cluster.xyz", "--calc", "lj-argon", "-p", "sigma=3", *md]),
        c("md-wrong-species", ["md", "ar.xyz", "--calc", "ethanol-nequip", *md]),
        c("md-ok", ["md", "cluster.xyz", "--calc", "lj-argon", *md, "-o", "ok.traj"], "accept"),
        # train
        c("train-missing-data", ["train", "--data", "none.xyz", "-o", "t1"]),
        c("train-no-unit", ["train", "--data", "md17_nounit.npz", "-o", "t2"]),
        c("train-unlabelled", ["train", "--data", "unlabelled.xyz", "-o", "t3"], what="no forces"),
        c("train-split", ["train", "--data", ethanol_ref, "--split", "0.9,0.2", "-o", "t4"]),
        c("train-epochs-zero", ["train", "--data", ethanol_ref, "--max-epochs", "0", "-o", "t5"]),
        c("train-lr-negative", ["train", "--data", ethanol_ref, "--lr", "-1", "-o", "t6"]),
        c("train-cutoff-zero", ["train", "--data", ethanol_ref, "--cutoff", "0", "-o", "t7"]),
        c("train-model", ["train", "--data", ethanol_ref, "--model", "mace", "-o", "t8"]),
        c("train-format", ["train", "--data", ethanol_ref, "--format", "pdbx", "-o", "t9"]),
        c("train-batch-zero", ["train", "--data", ethanol_ref, "--batch-size", "0", "-o", "t10"]),
        c("train-energy-unit", ["train", "--data", "md17_nounit.npz", "--energy-unit", "furlong", "-o", "t11"]),
        # bench
        c("bench-water-ref", ["bench", "--system", "ethanol", "--models", "ethanol-nequip", "--reference", water, "--short", "--replicas", "1", "-o", "b1"]),
        c("bench-aspirin-ref", ["bench", "--system", "ethanol", "--models", "ethanol-nequip", "--reference", aspirin, "--short", "--replicas", "1", "-o", "b2"]),
        c("bench-replicas-zero", ["bench", "--models", "ethanol-nequip", *asp, "--replicas", "0", "-o", "b3"]),
        c("bench-length-negative", ["bench", "--system", "ethanol", "--models", "ethanol-nequip", "--reference", *ref, "--length=-5ps", "-o", "b4"]),
        c("bench-length-text", ["bench", "--system", "ethanol", "--models", "ethanol-nequip", "--reference", *ref, "--length", "long", "-o", "b5"]),
        c("bench-unknown-model", ["bench", "--models", "ethanol-nequlp", *asp, "--short", "-o", "b6"]),
        c("bench-system", ["bench", "--system", "benzene", "--models", "ethanol-nequip", "--reference", *ref, "-o", "b7"]),
        c("bench-missing-ref", ["bench", "--system", "ethanol", "--models", "ethanol-nequip", "--reference", "none.xyz", "-o", "b8"]),
        c("bench-species", ["bench", "--system", "lj", "--models", "ethanol-nequip", "--reference", "argon_ref.extxyz", "--energy-unit", "eV", "--short", "--replicas", "1", "-o", "b9"], what="an H/C/O model on argon"),
        # sample / label
        c("sample-reference", ["sample", "ethanol.xyz", "--reference", "dft-magic", "-o", "s1.xyz"]),
        c("sample-missing", ["sample", "none.xyz", "--reference", "gfn2-xtb", "-o", "s2.xyz"]),
        c("sample-steps-zero", ["sample", "ethanol.xyz", "--reference", "gfn2-xtb", "--steps", "0", "-o", "s3.xyz"], "accept", "0 steps labels the start frame (md takes --steps 0 too)"),
        c("sample-temperature", ["sample", "ethanol.xyz", "--reference", "gfn2-xtb", "--temperature", "-5", "-o", "s4.xyz"]),
        c("sample-every-zero", ["sample", "ethanol.xyz", "--reference", "gfn2-xtb", "--every", "0", "-o", "s5.xyz"]),
        c("sample-nan", ["sample", "nan.xyz", "--reference", "lj-argon", "--steps", "2", "-o", "s6.xyz"]),
        c("label-reference", ["label", "unlabelled.xyz", "--reference", "dft-magic", "-o", "l1.xyz"]),
        c("label-missing", ["label", "none.xyz", "--reference", "gfn2-xtb", "-o", "l2.xyz"]),
        c("label-index", ["label", "unlabelled.xyz", "--reference", "gfn2-xtb", "--index", "a:b", "-o", "l3.xyz"]),
        c("label-parameter", ["label", "unlabelled.xyz", "--reference", "gfn2-xtb", "-p", "charg=1", "-o", "l4.xyz"]),
        # diffsim
        c("diffsim-missing-target", ["diffsim", "fit", "--target", "none.csv", *fast_fit, "d1"]),
        c("diffsim-text-target", ["diffsim", "fit", "--target", "target_text.csv", *fast_fit, "d2"]),
        c("diffsim-columns-target", ["diffsim", "fit", "--target", "target_cols.csv", "--density", "0.845", "--temperature", "1", *fast_fit, "d3"]),
        c("diffsim-nan-target", ["diffsim", "fit", "--target", "target_nan.csv", "--density", "0.845", "--temperature", "1", *fast_fit, "d4"]),
        c("diffsim-epochs-zero", ["diffsim", "fit", "--target", lj_rdf, "--epochs", "0", *fast_fit, "d5"]),
        c("diffsim-cutoff-negative", ["diffsim", "fit", "--target", lj_rdf, "--cutoff", "-1", *fast_fit, "d6"]),
        c("diffsim-density-negative", ["diffsim", "fit", "--target", lj_rdf, "--density", "-1", *fast_fit, "d7"]),
        c("diffsim-lr-zero", ["diffsim", "fit", "--target", lj_rdf, "--lr", "0", *fast_fit, "d8"]),
        c("diffsim-vacf-count", ["diffsim", "fit", "--target", lj_rdf, "--target", lj_rdf, "--vacf-target", vacf, *fast_fit, "d9"]),
        c("diffsim-ibi-iterations", ["diffsim", "ibi", "--target", lj_rdf, "--iterations", "0", *fast_fit, "d10"]),
        c("diffsim-short-target", ["diffsim", "fit", "--target", "target_short.csv", "--density", "0.845", "--temperature", "1", *fast_fit, "d11"], what="r-grid ends inside the cutoff"),
        # calculators / top level
        c("calculators-shadow", ["calculators"], env={"ASE_MLMD_CARD_PATH": "cards"}, what="emt.toml on the path"),
        c("calculators-broken-card", ["calculators"], env={"ASE_MLMD_CARD_PATH": "broken_cards"}),
        c("calculators-ok", ["calculators"], "accept"),
        c("unknown-subcommand", ["simulate", "ar.xyz"]),
        c("run-no-arguments", ["run"]),
    ]  # fmt: skip


# --- judgments (a person's reading of each refusal; see the module docstring) ---------------

#: id → (verdict, fragment of stderr the verdict was made on, reason when unclear)
JUDGED: dict[str, tuple[str, str, str]] = {
    "run-unknown-name": ("clear", "Did you mean 'lj-argon'?", ""),
    "run-missing-card": ("clear", "does not exist; check the path", ""),
    "run-unknown-format": ("clear", "weights format 'hdf5' unknown; use one of", ""),
    "run-missing-structure": ("clear", "structure file none.xyz does not exist", ""),
    "run-garbage-structure": ("clear", "cannot read a structure from garbage.xyz", ""),
    "run-unknown-extension": ("clear", "cannot read a structure from notes.txt", ""),
    "run-empty-structure": ("clear", "structure has no atoms", ""),
    "run-nan": ("clear", "positions of atoms [1] are NaN or infinite", ""),
    "run-parallel-cell": ("clear", "span zero volume", ""),
    "run-zero-height": ("clear", "span zero volume", ""),
    "run-eos-value": ("clear", "-E/--equation-of-state takes POINTS,PERCENT", ""),
    "run-eos-type": ("clear", "--eos-type 'cubic' is not an equation of state", ""),
    "run-fmax-zero": ("clear", "-f/--maximum-force is the convergence threshold", ""),
    "run-fmax-negative": ("clear", "-f/--maximum-force is the convergence threshold", ""),
    "run-fmax-text": ("clear", "invalid float value: 'tight'", ""),
    "run-properties": ("clear", "unknown letters z", ""),
    "run-unknown-parameter": ("clear", "has no parameter 'epsilon'", ""),
    "run-wrong-species": ("clear", "also contains Ar", ""),
    "run-sha-mismatch": ("clear", "the file was changed or corrupted", ""),
    "run-missing-weights": ("clear", "does not exist; restore it or fix [weights].file", ""),
    "run-disguised-pickle": ("clear", "but it is not a plain state_dict", ""),
    "run-untrusted-pickle": ("clear", "Load it only if you trust its author", ""),
    "run-bad-toml": ("clear", "not a valid TOML model card", ""),
    "run-card-no-cutoff": ("clear", "missing required field 'cutoff'", ""),
    "run-unknown-backend": ("clear", "unknown backend 'gaussian-process'; use one of", ""),
    "run-bad-unit": ("clear", "energy unit 'furlong' unknown", ""),
    "run-bad-species": ("clear", "unknown element 'Xx' in species", ""),
    "run-bad-card-parameter": ("clear", "unexpected keyword argument 'sigmaa'", ""),
    "run-backend-no-model": ("clear", "-p model=my_model.toml", ""),
    "run-stress-open": ("clear", "relax the atoms only with -f/--maximum-force", ""),
    "run-no-arguments": ("clear", "the following arguments are required: calculator", ""),
    "unknown-subcommand": ("clear", "invalid choice: 'simulate'", ""),
    "md-unknown-calc": ("clear", "Did you mean 'lj-argon'?", ""),
    "md-missing-structure": ("clear", "structure file none.xyz does not exist", ""),
    "md-timestep-zero": ("clear", "timestep must be a positive number of fs", ""),
    "md-steps-negative": ("clear", "steps must be >= 0, got -5", ""),
    "md-temperature-negative": ("clear", "temperature must be >= 0 K", ""),
    "md-ensemble": ("clear", "invalid choice: 'npt'", ""),
    "md-replicas-zero": ("clear", "replicas must be a whole number >= 1", ""),
    "md-nan": ("clear", "positions of atoms [1] are NaN or infinite", ""),
    "md-parallel-cell": ("clear", "span zero volume", ""),
    "md-torch-parallel-cell": ("clear", "span zero volume", ""),
    "md-device": ("clear", "sees no CUDA GPU", ""),
    "md-untrusted": ("clear", "Load it only if you trust its author", ""),
    "md-index": ("clear", "--index 99 selects no frame of cluster.xyz", ""),
    "md-save-every-zero": ("clear", "save_every and log_every must be >= 1", ""),
    "md-friction-negative": ("clear", "friction must be >= 0 per fs (--friction)", ""),
    "md-unknown-parameter": ("clear", "has no parameter 'sigma'", ""),
    "md-wrong-species": ("clear", "also contains Ar", ""),
    "train-missing-data": ("clear", "No such file or directory: none.xyz", ""),
    "train-no-unit": ("clear", "--energy-unit kcal/mol", ""),
    "train-unlabelled": ("clear", "label the frames first, e.g. ase-mlmd label", ""),
    "train-split": ("clear", "is not three comma-separated sizes", ""),
    "train-epochs-zero": ("clear", "max_epochs must be > 0", ""),
    "train-lr-negative": ("clear", "lr must be > 0", ""),
    "train-cutoff-zero": ("clear", "cutoff must be > 0", ""),
    "train-model": ("clear", "invalid choice: 'mace'", ""),
    "train-format": ("clear", "unknown dataset format 'pdbx'", ""),
    "train-batch-zero": ("clear", "batch_size must be > 0", ""),
    "train-energy-unit": ("clear", "unknown energy unit 'furlong'", ""),
    "bench-water-ref": ("clear", "this reference fits --system water", ""),
    "bench-aspirin-ref": ("clear", "this reference fits --system aspirin", ""),
    "bench-replicas-zero": ("clear", "replicas (--replicas) must be a whole number >= 1", ""),
    "bench-unknown-model": ("clear", "Did you mean 'ethanol-nequip'", ""),
    "bench-species": ("clear", "was not trained on Ar", ""),
    "bench-length-text": ("clear", "cannot read the length 'long'", ""),
    "bench-length-negative": ("clear", "the length must be positive, got '-5ps'", ""),
    "bench-system": ("clear", "invalid choice: 'benzene'", ""),
    "bench-missing-ref": ("clear", "dataset none.xyz does not exist", ""),
    "sample-reference": ("clear", "Built-in references: gfn2-xtb", ""),
    "sample-missing": ("clear", "No such file or directory: none.xyz", ""),
    "sample-temperature": ("clear", "temperature must be >= 0 K", ""),
    "sample-every-zero": ("clear", "every must be >= 1 step", ""),
    "sample-nan": ("clear", "positions of atoms [1] are NaN or infinite", ""),
    "label-reference": ("clear", "Built-in references: gfn2-xtb", ""),
    "label-missing": ("clear", "No such file or directory: none.xyz", ""),
    "label-index": ("clear", "is not a frame index; use ASE's form", ""),
    "label-parameter": ("clear", "has no option(s) ['charg']", ""),
    "diffsim-missing-target": ("clear", "target file none.csv does not exist", ""),
    "diffsim-text-target": ("clear", "line 1, column 1: 'r' is not a number", ""),
    "diffsim-columns-target": ("clear", "--target-layout columns", ""),
    "diffsim-nan-target": ("clear", "line 2: value 6 is nan", ""),
    "diffsim-epochs-zero": ("clear", "{'epochs': 0}", ""),
    "diffsim-cutoff-negative": ("clear", "cutoff must be positive", ""),
    "diffsim-density-negative": ("clear", "density must be positive", ""),
    "diffsim-lr-zero": ("clear", "--lr (the Adam learning rate) must be > 0", ""),
    "diffsim-vacf-count": ("clear", "give one --vacf-target per --target", ""),
    "diffsim-short-target": ("clear", "inside the potential's cutoff", ""),
    "calculators-shadow": ("clear", "would shadow ASE's own 'emt' calculator", ""),
    "calculators-broken-card": ("clear", "oops.toml: not a valid TOML model card", ""),
    "diffsim-ibi-iterations": ("clear", "--iterations must be a whole number >= 1", ""),
}


# --- running --------------------------------------------------------------------------------


def run_case(case: Case, work: Path, timeout: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **case.env}
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [EXE, *case.args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as expired:
        rc, out = None, (expired.stdout or b"").decode(errors="replace")
        err = (expired.stderr or b"").decode(errors="replace")
    seconds = time.perf_counter() - start
    traceback = "Traceback (most recent call last)" in err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("usage:", " "))]
    if traceback:
        lines = [ln for ln in err.splitlines() if ln.strip()][-1:]
    first = " ".join(lines[:3])[:400]
    verdict, reason = classify(case, rc, traceback, err)
    return {
        "id": case.id,
        "command": "ase-mlmd " + " ".join(case.args),
        "what": case.what,
        "expect": case.expect,
        "rc": rc,
        "traceback": traceback,
        "stderr": first,
        "stdout_tail": out.strip().splitlines()[-1][:200] if out.strip() else "",
        "verdict": verdict,
        "reason": reason,
        "seconds": round(seconds, 1),
    }


def classify(case: Case, rc: int | None, traceback: bool, err: str) -> tuple[str, str]:
    if rc is None:
        return "timeout", "no answer within the time limit"
    if traceback:
        return "traceback", ""
    if rc == 0:
        return ("correctly accepted", "") if case.expect == "accept" else ("silently accepted", "")
    if case.expect == "accept":
        return "unclear", "a valid input was refused"
    verdict, fragment, reason = JUDGED.get(case.id, ("unjudged", "", ""))
    if verdict != "unjudged" and fragment not in err:
        return "unjudged", f"the message changed (judged on {fragment!r})"
    return verdict, reason


CATEGORIES = ("clear", "unclear", "traceback", "silently accepted", "correctly accepted")


def tally(rows: list[dict]) -> dict[str, int]:
    counts = {"tried": len(rows), **{k: 0 for k in CATEGORIES}}
    for row in rows:
        key = "unclear" if row["verdict"] == "timeout" else row["verdict"]
        counts[key] = counts.get(key, 0) + 1
    return counts


def markdown(rows: list[dict], counts: dict[str, int], header: str) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    out = [header, "", " · ".join(f"{k}: {v}" for k, v in counts.items()), ""]
    out += ["| case | rc | traceback | verdict | first line(s) of stderr | note |", "|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        note = row["reason"] or row["what"]
        out.append(
            f"| `{row['id']}` | {row['rc']} | {'yes' if row['traceback'] else ''} | "
            f"{row['verdict']} | {cell(row['stderr'])} | {cell(note)} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds per case")
    parser.add_argument("--only", default="", help="comma-separated id prefixes")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "bad_inputs"))
    args = parser.parse_args()
    selected = [c for c in cases() if not args.only or c.id.startswith(tuple(args.only.split(",")))]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bad_inputs_") as scratch:
        base = Path(scratch) / "inputs"
        base.mkdir()
        make_files(base)

        def one(case: Case) -> dict:
            work = Path(scratch) / case.id  # a fresh copy per case: no case sees another's output
            subprocess.run(["cp", "-r", str(base), str(work)], check=True)
            return run_case(case, work, args.timeout)

        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(one, selected))
    wall = time.perf_counter() - start
    counts = tally(rows)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    header = (
        f"# Bad-input tally\n\n{stamp}; {machine}; `python benchmarks/bad_inputs.py "
        f"--jobs {args.jobs}`; {wall:.0f} s"
    )
    Path(args.out + ".json").write_text(
        json.dumps({"date": stamp, "machine": machine, "tally": counts, "cases": rows}, indent=1)
    )
    Path(args.out + ".md").write_text(markdown(rows, counts, header))
    print(json.dumps(counts))
    for row in rows:
        if row["verdict"] not in ("clear", "correctly accepted"):
            print(f"{row['verdict']:>18}  {row['id']}: rc={row['rc']} {row['stderr'][:300]}")


if __name__ == "__main__":
    main()
