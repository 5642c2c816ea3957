"""Every model reports the device it computes on, with or without tensors (issue 16 item 1).

The ``meta`` device stands in for CUDA on a CPU-only machine: moving a model there must be
reflected by ``model.device``, and the engine must refuse a state on another device instead of
computing wherever the state happens to be.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_ar_crystal

from ase_mlmd import MLCalculator, load_calculator
from ase_mlmd.errors import DeviceMismatchError
from ase_mlmd.md.forcefield import ForceField
from ase_mlmd.md.state import MDState
from ase_mlmd.models.pair import LennardJones, Morse
from ase_mlmd.models.species_pair import SpeciesPairPotential


def _models() -> dict[str, torch.nn.Module]:
    return {
        "analytic": LennardJones(),
        "trainable": Morse(trainable=True),
        "mixture": SpeciesPairPotential(
            {"Ar-Ar": LennardJones(), "Ar-Kr": LennardJones(), "Kr-Kr": LennardJones()}
        ),
        "card": load_calculator("lj-argon").model,
    }


@pytest.mark.parametrize("name", list(_models()))
def test_device_follows_the_model(name):
    model = _models()[name]
    assert model.device.type == "cpu"
    assert model.float().device.type == "cpu"  # a cast alone does not move it
    assert model.to("meta").device.type == "meta"
    if not [*model.parameters(), *model.buffers()]:  # (meta tensors hold no data to copy)
        assert model.to("cpu").device.type == "cpu"


def test_engine_refuses_a_state_on_another_device():
    forcefield = ForceField(LennardJones().to("meta"), skin=0.3)
    state = MDState.from_atoms([make_ar_crystal()])
    with pytest.raises(DeviceMismatchError, match=r"model.to\('cpu'\)"):
        forcefield.check(state)


def test_calculator_moves_the_model_to_its_device():
    model = LennardJones(0.0104, 3.4, 8.5).to("meta")
    calc = MLCalculator(model, device="cpu")
    assert calc.model.device.type == "cpu"
    atoms = make_ar_crystal()
    atoms.calc = calc
    assert atoms.get_forces().shape == (len(atoms), 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_model_without_tensors_reports_cuda():
    assert LennardJones().to("cuda").device.type == "cuda"
    assert MLCalculator(LennardJones(), device="cuda").model.device.type == "cuda"
