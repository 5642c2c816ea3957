"""No host synchronisation inside an engine step between neighbor-list rebuilds.

On a GPU every ``.item()``, ``.tolist()``, ``bool(tensor)``, ``nonzero``, ``torch.equal``,
boolean-mask indexing or copy to the host waits for the device. These are counted here on the
CPU, by wrapping them, so the property is checked without a GPU: on the analytic pair path a
step that does not rebuild the list makes exactly one (the rebuild decision). The path checked
is the torch form that runs on a GPU; on the CPU the engine hands the same work to a compiled
loop over NumPy views of the tensors (``.numpy()`` of a CPU tensor copies nothing), which never
runs on another device.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from conftest import make_ar_crystal

from ase_mlmd.md.forcefield import ForceField
from ase_mlmd.md.integrators import make_integrator
from ase_mlmd.md.state import MDState
from ase_mlmd.models import pair, species_pair
from ase_mlmd.models.pair import LennardJones, Morse
from ase_mlmd.models.species_pair import SpeciesPairPotential

TENSOR_METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "nonzero", "cpu", "numpy")
TORCH_FUNCTIONS = ("equal", "nonzero", "unique", "masked_select")


class SyncCounter:
    """Counts the calls that make the host wait for the device, by name."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def wrap(self, name: str, original):
        def counted(*args, **kwargs):
            self.calls.append(name)
            return original(*args, **kwargs)

        return counted

    @contextlib.contextmanager
    def patched(self, monkeypatch: pytest.MonkeyPatch):
        with monkeypatch.context() as m:
            for name in TENSOR_METHODS:
                m.setattr(torch.Tensor, name, self.wrap(name, getattr(torch.Tensor, name)))
            for name in TORCH_FUNCTIONS:
                m.setattr(torch, name, self.wrap(f"torch.{name}", getattr(torch, name)))
            getitem = torch.Tensor.__getitem__

            def indexing(tensor, index):
                parts = index if isinstance(index, tuple) else (index,)
                if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
                    self.calls.append("boolean mask")
                return getitem(tensor, index)

            m.setattr(torch.Tensor, "__getitem__", indexing)
            yield self


def _state() -> MDState:
    atoms = make_ar_crystal(repeat=3, rattle=0.05, seed=3)
    atoms.numbers[::4] = 36
    atoms.set_velocities(np.random.default_rng(4).normal(scale=4e-3, size=(len(atoms), 3)))
    return MDState.from_atoms([atoms, atoms.copy()])


def _models() -> dict[str, torch.nn.Module]:
    return {
        "lennard-jones": LennardJones(0.0104, 3.4, cutoff=8.5),
        "mixture": SpeciesPairPotential(
            {
                "Ar-Ar": LennardJones(0.0104, 3.4, cutoff=8.5),
                "Ar-Kr": Morse(0.012, 3.9, 6.0, cutoff=8.0),
                "Kr-Kr": LennardJones(0.014, 3.6, cutoff=8.5),
            }
        ),
    }


@pytest.mark.parametrize("ensemble", ["nve", "nvt-langevin"])
@pytest.mark.parametrize("name", list(_models()))
def test_a_step_without_rebuild_makes_one_sync(monkeypatch, name, ensemble):
    forcefield = ForceField(_models()[name], skin=0.6)
    # the torch form (the GPU's path): no compiled loop in the engine nor in the models
    monkeypatch.setattr(forcefield, "_kernel_table", lambda state: None)
    monkeypatch.setattr(pair, "kernel_applies", lambda batch: False)
    monkeypatch.setattr(species_pair, "kernel_applies", lambda batch: False)
    integrator = make_integrator(ensemble, forcefield, 10.0, temperature_K=300.0)
    state = integrator.init(_state())
    counter = SyncCounter()
    per_step = []
    for _ in range(25):
        builds = forcefield.n_builds
        counter.calls.clear()
        with counter.patched(monkeypatch):
            state = integrator.step(state)
        per_step.append((forcefield.n_builds > builds, list(counter.calls)))
    quiet = [calls for rebuilt, calls in per_step if not rebuilt]
    assert len(quiet) >= 10 and any(rebuilt for rebuilt, _ in per_step)
    for calls in quiet:
        assert calls == ["__bool__"], calls  # the rebuild decision, and nothing else


def test_the_counter_sees_what_a_sync_is(monkeypatch):
    """The check can fail: the autograd path's cutoff filtering is counted."""
    forcefield = ForceField(LennardJones(0.0104, 3.4, cutoff=8.5), skin=0.6)
    state = forcefield(_state())
    counter = SyncCounter()
    with counter.patched(monkeypatch):
        forcefield(state.replace(positions=state.positions + 1e-3), create_graph=True)
        torch.tensor([1.0, 2.0]).tolist()
    assert "__bool__" in counter.calls and "tolist" in counter.calls
    assert "torch.equal" in counter.calls or "boolean mask" in counter.calls


def test_schnet_finds_the_pairs_of_a_list_once(monkeypatch):
    """The fast SchNet forward pairs up the two directions of each edge (a device sync): once
    per neighbor list, not at every call with the same list."""
    from ase.build import molecule

    from ase_mlmd.batch import batch_from_atoms
    from ase_mlmd.models.backends import schnet_fast
    from ase_mlmd.models.backends.schnetpack import SchNetPackModel, build_schnet_model
    from ase_mlmd.models.interface import evaluate

    model = SchNetPackModel(
        build_schnet_model(cutoff=4.0, n_atom_basis=16, n_interactions=2, n_rbf=8, seed=0)
    )
    found = []
    original = schnet_fast.find_symmetric_pairs
    monkeypatch.setattr(
        schnet_fast, "find_symmetric_pairs", lambda *a: found.append(1) or original(*a)
    )
    batch = batch_from_atoms([molecule("CH3CH2OH")], 4.0)
    first = evaluate(model, batch)["forces"]
    moved = batch.replace(positions=batch.positions + 0.01)
    second = evaluate(model, moved)["forces"]
    assert len(found) == 1 and not torch.equal(first, second)
    batch.edge_index[:, [0, 1]] = batch.edge_index[:, [1, 0]]  # changed in place: found again
    evaluate(model, batch)
    assert len(found) == 2
    fresh = evaluate(model, batch_from_atoms([molecule("CH3CH2OH")], 4.0))["forces"]
    torch.testing.assert_close(fresh, first, rtol=0, atol=1e-12)
