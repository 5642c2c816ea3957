"""CGVAE training: resume after SIGKILL equals an uninterrupted run, no card before the end,
checkpoint of another run refused; cards load without trust and refuse other molecules; the
``ase-mlmd backmap train/run`` commands."""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.io import read, write

from ase_mlmd.backmap.card import check_same_molecule, load_backmapper
from ase_mlmd.backmap.cgvae import CGVAEBackmapper, CGVAEHyper
from ase_mlmd.backmap.train import BackmapTrainConfig, train_backmapper  # noqa: F401 (eval)
from ase_mlmd.cg.builders import girvan_newman
from ase_mlmd.cg.mapping import CGMapping
from ase_mlmd.cli import backmap as backmap_cli
from ase_mlmd.errors import (
    BackmapError,
    CardError,
    CheckpointMismatchError,
    ChecksumMismatchError,
)
from ase_mlmd.outdir import StaleLockWarning

DATA = Path(__file__).parents[2] / "benchmarks" / "cg_data" / "ala2_aa_200.extxyz"
CONFIG = (
    "BackmapTrainConfig(hyper=CGVAEHyper(features=8, latent=2, encoder_layers=1, "
    "prior_layers=1, decoder_layers=1), split=(16, 4, 4), max_epochs=6, batch_size=2, "
    "checkpoint_every_batches=1, seed=1)"
)
SCRIPT = f"""
import sys, torch
torch.set_num_threads(1)
from ase.io import read
from ase_mlmd.backmap.cgvae import CGVAEHyper
from ase_mlmd.backmap.train import BackmapTrainConfig, train_backmapper  # noqa: F401 (eval)
from ase_mlmd.cg.mapping import CGMapping
frames = read(sys.argv[1], ":24")
train_backmapper(frames, CGMapping.from_json(sys.argv[2]), sys.argv[3], {CONFIG},
                 progress=False)
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("backmap")
    frames = read(DATA, ":24")
    mapping = girvan_newman(frames[0], 4)
    mapping.to_json(folder / "map.json")
    write(folder / "aa.extxyz", frames)
    return folder, frames, mapping


def test_resume_after_sigkill_equals_uninterrupted(setup):
    folder, frames, mapping = setup
    config = eval(CONFIG)
    reference = train_backmapper(frames, mapping, folder / "straight", config, progress=False)
    killed = folder / "killed"
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(folder / "aa.extxyz"), str(folder / "map.json"),
         str(killed)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    while not (killed / "checkpoint.pt").exists() and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "card.toml").exists()  # killed mid-run: no card at all
    with pytest.warns(StaleLockWarning, match="no longer runs"):  # the killed run's lock
        resumed = train_backmapper(frames, mapping, killed, config, progress=False)
    assert resumed.epochs == reference.epochs == 6
    straight = reference.backmapper.model.state_dict()
    for key, value in resumed.backmapper.model.state_dict().items():
        torch.testing.assert_close(value, straight[key], msg=key)
    log = (killed / "train_log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["1", "2", "3", "4", "5", "6"]
    # a checkpoint of another run (other beta) is refused, naming the setting
    other = eval(CONFIG.replace("decoder_layers=1)", "decoder_layers=1, beta=0.5)"))
    with pytest.raises(CheckpointMismatchError, match="hyper"):
        train_backmapper(frames, mapping, killed, other, progress=False)


def test_card_loads_without_trust_and_refuses_other_molecules(setup, tmp_path):
    folder, frames, mapping = setup
    config = eval(CONFIG.replace("max_epochs=6", "max_epochs=1"))
    result = train_backmapper(frames, mapping, tmp_path / "m", config, progress=False)
    loaded = load_backmapper(result.card_path)
    assert isinstance(loaded, CGVAEBackmapper)
    cg = mapping.apply_positions(frames[20:22])
    np.testing.assert_allclose(
        np.stack([a.positions for a in loaded.reconstruct(cg)]),
        np.stack([a.positions for a in result.backmapper.reconstruct(cg)]),
        atol=1e-6,
    )
    check_same_molecule(loaded, frames[0])
    with pytest.raises(BackmapError, match="not the molecule"):
        check_same_molecule(loaded, molecule("CH3CH2OH"))
    other = girvan_newman(frames[0], 5).apply_positions(frames[:2])
    with pytest.raises(BackmapError, match="5 beads but"):
        loaded.sample(other, 2)
    weights = next(tmp_path.joinpath("m").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ChecksumMismatchError):
        load_backmapper(result.card_path)
    card = tmp_path / "other.toml"
    card.write_text(result.card_path.read_text().replace('backend = "cgvae"', 'backend = "x"'))
    with pytest.raises(CardError, match="not a backmapper"):
        load_backmapper(card)


def _cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="ase-mlmd backmap")
    backmap_cli.CLICommand.add_arguments(parser)
    args = parser.parse_args(argv)
    backmap_cli.CLICommand.run(args, parser)


def test_cli_train_and_run(setup, tmp_path, capsys):
    folder, frames, mapping = setup
    out = tmp_path / "model"
    _cli(["train", "--data", str(folder / "aa.extxyz"), "--mapping", str(folder / "map.json"),
          "--split", "time:16,4,4", "--max-epochs", "1", "--features", "8", "--latent", "2",
          "--batch-size", "4", "--no-progress", "-o", str(out)])  # fmt: skip
    assert "card:" in capsys.readouterr().out
    cg = tmp_path / "cg.extxyz"
    write(cg, mapping.apply_positions(frames[20:23]))
    samples = tmp_path / "aa.extxyz"
    _cli(["run", str(out / "card.toml"), str(cg), "--samples", "2", "-o", str(samples)])
    written = read(samples, ":")
    assert len(written) == 6
    assert [a.info["cg_frame"] for a in written] == [0, 0, 1, 1, 2, 2]
    assert all(a.get_chemical_symbols() == frames[0].get_chemical_symbols() for a in written)
    for bad in ("0", "-2"):
        with pytest.raises(BackmapError, match="--samples"):
            _cli(["run", str(out / "card.toml"), str(cg), "--samples", bad, "-o", str(samples)])
    nan = mapping.apply_positions(frames[20])
    nan.positions[2] = np.nan
    write(cg, nan)
    with pytest.raises(Exception, match="non-finite"):
        _cli(["run", str(out / "card.toml"), str(cg), "-o", str(samples)])
    reloaded = CGMapping.from_json(folder / "map.json")
    assert reloaded.n_beads == 4
    assert CGVAEHyper().beta > 0  # defaults: a VAE, not a plain auto-encoder
