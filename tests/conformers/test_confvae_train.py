"""ConfVAE training (a few steps on ETKDG conformers of small molecules), card round trip,
resume after interruption, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.io import write
from rdkit.Chem import AllChem

from ase_mlmd.conformers.confvae import ConfVAE, load_confvae, sample_conformers
from ase_mlmd.conformers.confvae_data import read_reference, split_reference
from ase_mlmd.conformers.confvae_features import collate, mol_graph
from ase_mlmd.conformers.confvae_train import ConfVAETrainConfig, train_confvae
from ase_mlmd.conformers.molecules import mol_from_smiles, mol_to_atoms
from ase_mlmd.errors import (
    CardError,
    CheckpointMismatchError,
    DataFormatError,
    DatasetSplitError,
    StructureFileError,
    UnsupportedSpeciesError,
)

PARTS = {"train": ["CCO", "CCCO", "CC(C)O"], "val": ["CCOC"], "test": ["OCCO", "CCN"]}
TINY = dict(
    hidden=16,
    layers=1,
    latent=4,
    steps_4d=20,
    steps=20,
    unrolled=3,
    batch_size=4,
    kl_warmup_epochs=0,
)


def write_reference(root, parts=PARTS, n_conf=3):
    for part, smiles in parts.items():
        folder = root / part if part else root
        folder.mkdir(parents=True, exist_ok=True)
        for k, smi in enumerate(smiles):
            mol = mol_from_smiles(smi)
            AllChem.EmbedMultipleConfs(mol, n_conf, randomSeed=11)
            frames = [
                mol_to_atoms(mol, c.GetId(), mol_id=f"{part}{k}") for c in mol.GetConformers()
            ]
            write(folder / f"{part}{k}.extxyz", frames)
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return write_reference(tmp_path_factory.mktemp("ref"))


@pytest.fixture(scope="module")
def trained(reference, tmp_path_factory):
    # 15 epochs: the loss of 3 molecules is noisy (bonds and angles are taught by the distance
    # term alone, so the first epochs move the MSD little)
    out = tmp_path_factory.mktemp("model")
    result = train_confvae(
        reference, out, ConfVAETrainConfig(max_epochs=15, lr=3e-3, **TINY), progress=False
    )
    return result


def test_split_keeps_the_reference_folders_and_drops_unknown_elements(reference, trained):
    molecules = read_reference(reference)
    parts = split_reference(molecules)
    assert sorted(molecules[k].mol_id for k in parts["test"]) == ["test0", "test1"]
    assert trained.n_molecules == {"train": 3, "val": 1, "test": 1}  # CCN: N never trained
    flat = [m for m in molecules]
    for m in flat:
        m.part = None
    seeded = split_reference(flat, (0.6, 0.2, 0.2), seed=1)
    assert sorted(sum(seeded.values(), [])) == list(range(6))
    assert seeded == split_reference(flat, (0.6, 0.2, 0.2), seed=1)


def test_training_steps_reduce_the_loss(trained):
    log = np.genfromtxt(trained.card_path.parent / "train_log.csv", delimiter=",", names=True)
    assert len(log) == 15
    assert log["train_loss"][-3:].mean() < 0.8 * log["train_loss"][:2].mean()
    assert log["val_loss"].min() < log["val_loss"][0]


def test_card_round_trip_gives_identical_samples(trained):
    mol = mol_from_smiles("CCCO")
    a = sample_conformers(trained.card_path, mol, 3, seed=5)
    b = sample_conformers(trained.card_path, mol, 3, seed=5)
    c = sample_conformers(trained.card_path, mol, 3, seed=6)
    assert [x.get_chemical_symbols() for x in a][0] == [at.GetSymbol() for at in mol.GetAtoms()]
    assert all(np.array_equal(x.positions, y.positions) for x, y in zip(a, b, strict=True))
    assert not np.allclose(a[0].positions, c[0].positions)
    # the loaded card is the trained model: same weights, same samples as the in-memory model
    loaded = load_confvae(trained.card_path)
    for key, value in trained.model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    graph = mol_graph(mol, loaded.settings.vocabulary, loaded.settings.max_hops)
    memory = trained.model.sample(collate([graph] * 3), torch.Generator().manual_seed(5))
    memory = memory.double().numpy().reshape(3, -1, 3)
    for atoms, xyz in zip(a, memory, strict=True):  # CCCO: no stereocentre, no mirroring
        assert np.allclose(atoms.positions, xyz - xyz.mean(0), atol=1e-6)


def test_resume_after_interruption_equals_uninterrupted_run(reference, tmp_path, monkeypatch):
    config = ConfVAETrainConfig(max_epochs=2, checkpoint_every_batches=1, **TINY)
    full = train_confvae(reference, tmp_path / "full", config, progress=False)
    calls = {"n": 0}
    original = ConfVAE.loss

    def interrupted(self, *args, **kwargs):
        if self.training:
            calls["n"] += 1
            if calls["n"] == 4:  # mid second epoch (3 batches per epoch)
                raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ConfVAE, "loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_confvae(reference, tmp_path / "cut", config, progress=False)
    monkeypatch.setattr(ConfVAE, "loss", original)
    assert (tmp_path / "cut" / "checkpoint.pt").is_file()
    assert not (tmp_path / "cut" / "card.toml").exists()
    resumed = train_confvae(reference, tmp_path / "cut", config, progress=False)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert resumed.val == full.val
    other = ConfVAETrainConfig(max_epochs=2, **{**TINY, "hidden": 8})
    with pytest.raises(CheckpointMismatchError, match="hidden"):
        train_confvae(reference, tmp_path / "cut", other, progress=False)


def test_bad_input_raises_specific_errors(trained, tmp_path):
    with pytest.raises(UnsupportedSpeciesError, match="Cl"):
        sample_conformers(trained.card_path, mol_from_smiles("CCCl"), 2)
    for n in (0, -3):
        with pytest.raises(ValueError, match=r"-n.*" + str(n)):
            sample_conformers(trained.card_path, mol_from_smiles("CCO"), n)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="conformers reference"):
        train_confvae(tmp_path / "empty", tmp_path / "out", ConfVAETrainConfig(**TINY))
    with pytest.raises(StructureFileError, match="--reference"):
        train_confvae(tmp_path / "missing", tmp_path / "out", ConfVAETrainConfig(**TINY))
    lonely = write_reference(tmp_path / "lonely", {"test": ["CCO"]}, n_conf=1)
    with pytest.raises(DatasetSplitError, match="no train molecule"):
        train_confvae(lonely, tmp_path / "out", ConfVAETrainConfig(**TINY))
    other = tmp_path / "lj.toml"
    other.write_text('name = "lj"\nbackend = "lennard-jones"\nspecies = ["Ar"]\ncutoff = 8.0\n')
    with pytest.raises(CardError, match="not a ConfVAE card"):
        sample_conformers(other, mol_from_smiles("CCO"), 1)


def test_cli_trains_a_card_and_names_bad_flags(reference, tmp_path, capsys):
    from ase_mlmd.cli.main import main

    tiny = ["--hidden", "8", "--layers", "1", "--latent", "2", "--max-hops", "2"]
    out = tmp_path / "cli"
    main(["conformers", "train", "--reference", str(reference), "--max-epochs", "1", *tiny,
          "--no-progress", "-o", str(out)])  # fmt: skip
    assert "card:" in capsys.readouterr().out
    assert load_confvae(out / "card.toml").settings.max_hops == 2
    with pytest.raises(SystemExit) as stop:
        main(["conformers", "train", "--reference", str(tmp_path / "nowhere"), "-o", str(out)])
    assert stop.value.code == 2
    assert "--reference" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["conformers", "train", "--reference", str(reference), "--split", "0.8,x,0.1",
              "-o", str(tmp_path / "other")])  # fmt: skip
    assert stop.value.code == 2
    assert "--split" in capsys.readouterr().err


def test_samples_keep_the_specified_stereocentres(trained):
    from rdkit import Chem

    from ase_mlmd.conformers.molecules import atoms_to_mol

    for smiles in ("C[C@H](O)CC", "C[C@@H](O)CC"):
        mol = mol_from_smiles(smiles)
        wanted = Chem.FindMolChiralCenters(mol)
        samples = atoms_to_mol(sample_conformers(trained.card_path, mol, 4, seed=2))
        for conf in samples.GetConformers():
            copy = Chem.Mol(samples)
            Chem.AssignStereochemistryFrom3D(copy, confId=conf.GetId())
            assert Chem.FindMolChiralCenters(copy) == wanted
