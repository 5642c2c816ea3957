"""Model cards and the name registry: every kind of bad card or weights file fails with its own
exception class and a message naming the problem; good user cards work by name and in any units.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.calculators.calculator import get_calculator_class
from ase.calculators.lj import LennardJones as AseLennardJones
from ase.calculators.morse import MorsePotential as AseMorse

from ase_mlmd import load_calculator, register_with_ase
from ase_mlmd.calculators import cards
from ase_mlmd.calculators.cards import (
    load_state_dict,
    read_card,
    require_trust,
    verify_weights,
    write_card,
)
from ase_mlmd.calculators.registry import available_cards, find_card, model_from_card
from ase_mlmd.errors import (
    CardError,
    ChecksumMismatchError,
    ModelFileError,
    UnknownCalculatorError,
    UntrustedModelError,
)

KCAL_MOL_IN_EV = 0.0433641043


def lj_table(name: str = "my-lj", **changes) -> dict:
    """A valid Lennard-Jones card (the parameters of the shipped lj-argon card)."""
    table = {
        "name": name,
        "description": "test card",
        "backend": "lennard-jones",
        "species": ["*"],
        "cutoff": 8.5,
        "dtype": "float64",
        "units": {"energy": "eV", "length": "Å"},
        "parameters": {"epsilon": 0.0104, "sigma": 3.40, "cutoff_mode": "smooth", "r_on": 7.5},
    }
    table.update(changes)
    return table


def weights_table(directory: Path, payload: bytes, fmt: str = "safetensors") -> dict:
    """A [weights] table for ``payload`` written to a file, with its true sha256."""
    path = directory / f"weights.{fmt}"
    path.write_bytes(payload)
    return {"file": path.name, "sha256": hashlib.sha256(payload).hexdigest(), "format": fmt}


def safetensors_bytes(tensors: dict[str, torch.Tensor], tmp_path: Path) -> bytes:
    from safetensors.torch import save_file

    save_file(tensors, tmp_path / "src.safetensors")
    return (tmp_path / "src.safetensors").read_bytes()


# --- names -----------------------------------------------------------------------------------


def test_unknown_name_lists_the_known_cards():
    with pytest.raises(UnknownCalculatorError) as err:
        load_calculator("no-such-model")
    message = str(err.value)
    assert "no-such-model" in message
    assert "lj-argon" in message and "morse-argon" in message
    assert "ASE_MLMD_CARD_PATH" in message
    assert isinstance(err.value, KeyError)  # generic handlers keep working


def test_an_ase_calculator_name_is_not_a_card():
    with pytest.raises(UnknownCalculatorError, match="ASE's own calculators"):
        find_card("emt")


def test_missing_card_file(tmp_path):
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ModelFileError, match="nowhere.toml"):
        read_card(missing)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_calculator(missing)


# --- malformed cards -------------------------------------------------------------------------


def test_malformed_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('name = "broken"\nbackend = lennard-jones\n[parameters\n', encoding="utf-8")
    with pytest.raises(CardError) as err:
        read_card(path)
    assert "broken.toml" in str(err.value) and "TOML" in str(err.value)


@pytest.mark.parametrize("field", ["name", "backend", "cutoff", "species"])
def test_missing_required_field(tmp_path, field):
    table = lj_table()
    del table[field]
    path = write_card(table, tmp_path / "incomplete.toml")
    with pytest.raises(CardError) as err:
        read_card(path)
    assert f"missing required field {field!r}" in str(err.value)
    assert "incomplete.toml" in str(err.value)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"cutoff": "large"}, "cutoff"),
        ({"species": "Ar"}, "species"),
        ({"dtype": "float16"}, "float16"),
        ({"units": {"energy": "furlong", "length": "Å"}}, "furlong"),
        ({"units": {"energy": "eV", "length": "league"}}, "league"),
        ({"species": []}, "species is empty"),
    ],
)
def test_invalid_field_values(tmp_path, changes, named):
    path = write_card(lj_table(**changes), tmp_path / "bad.toml")
    with pytest.raises(CardError, match=named):
        read_card(path)


def test_unknown_backend(tmp_path):
    path = write_card(lj_table(backend="quantum-oracle"), tmp_path / "oracle.toml")
    card = read_card(path)  # the card itself parses
    with pytest.raises(CardError) as err:
        model_from_card(card)
    assert "quantum-oracle" in str(err.value) and "oracle.toml" in str(err.value)
    assert "lennard-jones" in str(err.value)  # says what would work


def test_unknown_element_in_species(tmp_path):
    path = write_card(lj_table(species=["Ar", "Xq"]), tmp_path / "xq.toml")
    with pytest.raises(CardError, match="unknown element 'Xq'"):
        read_card(path)


def test_bad_parameters_for_the_backend(tmp_path):
    table = lj_table()
    table["parameters"]["depth"] = 1.0
    path = write_card(table, tmp_path / "depth.toml")
    with pytest.raises(CardError, match="depth"):
        load_calculator(path)


def test_unknown_weights_format(tmp_path):
    table = lj_table(weights={"file": "w.bin", "sha256": "0" * 64, "format": "hdf9"})
    with pytest.raises(CardError, match="hdf9"):
        read_card(write_card(table, tmp_path / "fmt.toml"))


# --- weights files ---------------------------------------------------------------------------


def test_good_weights_load(tmp_path):
    tensors = {"layer.weight": torch.arange(6, dtype=torch.float64).reshape(2, 3)}
    table = lj_table(weights=weights_table(tmp_path, safetensors_bytes(tensors, tmp_path)))
    card = read_card(write_card(table, tmp_path / "good.toml"))
    assert verify_weights(card) == (tmp_path / "weights.safetensors").resolve()
    assert torch.equal(load_state_dict(card)["layer.weight"], tensors["layer.weight"])

    buffer = tmp_path / "sd.pt"
    torch.save(tensors, buffer)
    table = lj_table(weights=weights_table(tmp_path, buffer.read_bytes(), "state_dict"))
    card = read_card(write_card(table, tmp_path / "good_sd.toml"))
    assert torch.equal(load_state_dict(card)["layer.weight"], tensors["layer.weight"])


def test_missing_weights_file(tmp_path):
    table = lj_table(
        weights={"file": "gone.safetensors", "sha256": "0" * 64, "format": "safetensors"}
    )
    card = read_card(write_card(table, tmp_path / "gone.toml"))
    with pytest.raises(ModelFileError) as err:
        load_state_dict(card)
    assert not isinstance(err.value, ChecksumMismatchError)
    assert "gone.safetensors" in str(err.value) and "gone.toml" in str(err.value)


@pytest.mark.parametrize("fmt", ["safetensors", "state_dict"])
def test_garbage_weights_with_a_matching_checksum(tmp_path, fmt):
    garbage = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    table = lj_table(weights=weights_table(tmp_path, garbage, fmt))
    card = read_card(write_card(table, tmp_path / "garbage.toml"))
    verify_weights(card)  # the checksum passes: the parser must catch it
    with pytest.raises(ModelFileError) as err:
        load_state_dict(card)
    assert not isinstance(err.value, ChecksumMismatchError)
    assert f"weights.{fmt}" in str(err.value) and "corrupt" in str(err.value)
    assert "weights_only" not in str(err.value)  # torch's advice to unpickle is not repeated


def test_truncated_safetensors(tmp_path):
    tensors = {"w": torch.ones(64, 64, dtype=torch.float64)}
    payload = safetensors_bytes(tensors, tmp_path)
    table = lj_table(weights=weights_table(tmp_path, payload[: len(payload) // 2]))
    card = read_card(write_card(table, tmp_path / "half.toml"))
    with pytest.raises(ModelFileError, match="could not read weights"):
        load_state_dict(card)


class NotATensor:
    """A pickled object of this class would need code execution to load."""


@pytest.mark.parametrize(
    ("obj", "message"),
    [([torch.ones(2)], "does not hold a state_dict"), (NotATensor(), "not a plain state_dict")],
)
def test_state_dict_format_rejects_non_tensor_pickles(tmp_path, obj, message):
    buffer = tmp_path / "obj.pt"
    torch.save(obj, buffer)
    table = lj_table(weights=weights_table(tmp_path, buffer.read_bytes(), "state_dict"))
    card = read_card(write_card(table, tmp_path / "obj.toml"))
    with pytest.raises(ModelFileError, match=message) as err:
        load_state_dict(card)
    assert "weights_only=False" not in str(err.value)  # never torch's advice to run the pickle


def test_disguised_pickle_says_how_to_load_it_with_explicit_trust(tmp_path):
    """A whole pickled model labelled state_dict: the message says what the file is and names
    the explicit-trust route (card format + trust flag), never torch's weights_only advice."""
    buffer = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), buffer)
    table = lj_table(weights=weights_table(tmp_path, buffer.read_bytes(), "state_dict"))
    card = read_card(write_card(table, tmp_path / "disguised.toml"))
    with pytest.raises(ModelFileError) as err:
        load_state_dict(card)
    message = str(err.value)
    assert "not a plain state_dict" in message and "pickled" in message
    assert "trust=True" in message and "--trust-model" in message and '"pickle"' in message
    assert "weights_only" not in message and "will likely succeed" not in message


def test_checksum_mismatch(tmp_path):
    payload = safetensors_bytes({"w": torch.zeros(3)}, tmp_path)
    spec = weights_table(tmp_path, payload)
    (tmp_path / spec["file"]).write_bytes(payload + b"\0")  # changed after the card was written
    card = read_card(write_card(lj_table(weights=spec), tmp_path / "sum.toml"))
    with pytest.raises(ChecksumMismatchError) as err:
        load_state_dict(card)
    message = str(err.value)
    assert spec["sha256"] in message and "weights.safetensors" in message
    assert hashlib.sha256(payload + b"\0").hexdigest() in message


@pytest.mark.parametrize("fmt", ["pickle", "torchscript", "nequip-package", "nequip-compiled"])
def test_code_executing_formats_need_trust(tmp_path, fmt):
    table = lj_table(weights=weights_table(tmp_path, b"not loaded", fmt))
    card = read_card(write_card(table, tmp_path / "code.toml"))
    with pytest.raises(UntrustedModelError) as err:
        require_trust(card, trust=False)
    message = str(err.value)
    assert "trust=True" in message and "--trust-model" in message
    assert f"weights.{fmt}" in message
    require_trust(card, trust=True)  # an explicit decision lets it through
    with pytest.raises(ModelFileError, match="plain state_dict"):
        load_state_dict(card)  # and the tensor-only loader never unpickles it


# --- the search path and ASE's registry ------------------------------------------------------


def test_card_shadowing_an_ase_calculator_is_refused(tmp_path, monkeypatch, clean_ase_registry):
    write_card(lj_table(name="lj"), tmp_path / "lj.toml")
    monkeypatch.setenv("ASE_MLMD_CARD_PATH", str(tmp_path))
    with pytest.raises(CardError) as err:
        register_with_ase()
    assert "'lj'" in str(err.value) and "shadow" in str(err.value)
    assert get_calculator_class("lj") is AseLennardJones


def test_user_card_found_by_name_on_the_search_path(
    tmp_path, monkeypatch, clean_ase_registry, ar_crystal
):
    other = tmp_path / "empty"
    other.mkdir()
    cards_dir = tmp_path / "mine"
    write_card(
        lj_table(name="my-lj", parameters={"epsilon": 0.0104, "sigma": 3.40}),
        cards_dir / "my-lj.toml",
    )
    monkeypatch.setenv("ASE_MLMD_CARD_PATH", os.pathsep.join([str(other), str(cards_dir)]))
    found = available_cards()
    assert found["my-lj"] == cards_dir / "my-lj.toml"
    assert {"lj-argon", "morse-argon"} <= set(found)  # the shipped cards are still there

    ours = ar_crystal.copy()
    ours.calc = load_calculator("my-lj")
    reference = ar_crystal.copy()
    reference.calc = AseLennardJones(epsilon=0.0104, sigma=3.40, rc=8.5)
    assert ours.get_potential_energy() == pytest.approx(reference.get_potential_energy(), 1e-12)

    assert "my-lj" in register_with_ase()
    via_ase = ar_crystal.copy()
    via_ase.calc = get_calculator_class("my-lj")()
    assert via_ase.get_potential_energy() == ours.get_potential_energy()


def test_card_in_kcal_per_mol_and_nm_gives_ev_and_angstrom(tmp_path, ar_crystal, ar_cluster):
    table = lj_table(
        name="lj-argon-kcal-nm",
        cutoff=0.85,
        units={"energy": "kcal/mol", "length": "nm"},
        parameters={
            "epsilon": 0.0104 / KCAL_MOL_IN_EV,
            "sigma": 0.340,
            "cutoff_mode": "smooth",
            "r_on": 0.75,
        },
    )
    converted = load_calculator(write_card(table, tmp_path / "kcal.toml"))
    assert converted.cutoff == pytest.approx(8.5)
    shipped = load_calculator("lj-argon")
    for atoms in (ar_crystal, ar_cluster):
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = converted, shipped
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), rel=1e-12)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=1e-11, atol=1e-15)
        if atoms.pbc.all():
            np.testing.assert_allclose(a.get_stress(), b.get_stress(), rtol=1e-11, atol=1e-17)


def test_morse_card_in_hartree_and_bohr(tmp_path, ar_crystal):
    """A second unit pair, checked against ASE's MorsePotential in eV and Å."""
    hartree, bohr = 27.211386245988, 0.529177210903
    table = {
        "name": "morse-au",
        "backend": "morse",
        "species": ["Ar"],
        "cutoff": 8.5 / bohr,
        "units": {"energy": "Hartree", "length": "Bohr"},
        "parameters": {
            "epsilon": 0.0104 / hartree,
            "r0": 3.8164 / bohr,
            "rho0": 6.0,
            "cutoff_mode": "smooth",
            "r_on": 7.0 / bohr,
        },
    }
    ours = ar_crystal.copy()
    ours.calc = load_calculator(write_card(table, tmp_path / "morse-au.toml"))
    reference = ar_crystal.copy()
    reference.calc = AseMorse(
        epsilon=0.0104, r0=3.8164, rho0=6.0, rcut1=7.0 / 3.8164, rcut2=8.5 / 3.8164
    )
    assert ours.get_potential_energy() == pytest.approx(reference.get_potential_energy(), 1e-11)
    np.testing.assert_allclose(ours.get_forces(), reference.get_forces(), rtol=1e-9, atol=1e-14)


def test_write_card_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "cards" / "my-lj.toml"
    write_card(lj_table(description="first"), target)
    renames = []
    real_replace = os.replace

    def spy(src, dst):
        renames.append((Path(src), Path(dst)))
        assert Path(src).read_text(encoding="utf-8")  # the full card is written before the rename
        return real_replace(src, dst)

    monkeypatch.setattr(cards.os, "replace", spy)
    write_card(lj_table(description="second"), target)
    assert len(renames) == 1
    src, dst = renames[0]
    assert dst == target and src.parent == target.parent and src.suffix == ".tmp"
    assert not src.exists()
    assert read_card(target).description == "second"
    assert os.listdir(target.parent) == ["my-lj.toml"]

    # a table that cannot be serialised fails before the old card is touched
    with pytest.raises(TypeError):
        write_card(lj_table(description=object()), target)
    assert read_card(target).description == "second"
    assert os.listdir(target.parent) == ["my-lj.toml"]


def test_register_with_ase_adds_cards_and_keeps_ase_names(ar_cluster, clean_ase_registry):
    names = register_with_ase()
    assert {"lj-argon", "morse-argon", "nequip", "schnetpack"} <= set(names)
    assert register_with_ase() == names  # idempotent
    cls = get_calculator_class("lj-argon")
    ar_cluster.calc = cls()
    expected = ar_cluster.copy()
    expected.calc = load_calculator("lj-argon")
    assert ar_cluster.get_potential_energy() == expected.get_potential_energy()
    np.testing.assert_array_equal(ar_cluster.get_forces(), expected.get_forces())
    assert get_calculator_class("lj") is AseLennardJones
    assert get_calculator_class("morse") is AseMorse
