"""TrainConfig and duration parsing: values the CLI passes through, and bad settings."""

from __future__ import annotations

import tomllib

import pytest
import tomli_w

from ase_mlmd.train import DEFAULT_HYPERPARAMETERS, TrainConfig, parse_duration


@pytest.mark.parametrize(
    "text, seconds",
    [("90s", 90.0), ("10m", 600.0), ("1h", 3600.0), ("1.5h", 5400.0), ("45", 45.0), (30, 30.0)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "10x", "-5m", "0", ""])
def test_parse_duration_rejects_nonsense(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_config_reads_durations_and_merges_hyperparameters():
    config = TrainConfig(model="painn", max_time="2m", hyperparameters={"n_atom_basis": 8})
    assert config.max_time == 120.0
    params = config.model_hyperparameters()
    assert params["n_atom_basis"] == 8
    assert params["n_interactions"] == DEFAULT_HYPERPARAMETERS["painn"]["n_interactions"]
    assert config.effective_split_seed == config.seed
    assert TrainConfig(seed=1, split_seed=7).effective_split_seed == 7


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"model": "mace"}, "model"),
        ({"dtype": "float16"}, "dtype"),
        ({"lr": 0.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"lr_factor": 1.5}, "lr_factor"),
        ({"energy_weight": 0.0, "force_weight": 0.0}, "both 0"),
        ({"name": "a/b"}, "name"),
    ],
)
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**kwargs)


def test_config_as_dict_is_toml_storable():
    config = TrainConfig(split=(320, 40, 40), hyperparameters={"num_features": 8})
    table = tomllib.loads(tomli_w.dumps(config.as_dict()))
    assert table["split"] == [320, 40, 40]
    assert table["hyperparameters"] == {"num_features": 8}
    assert "max_time" not in table  # None values are left out
