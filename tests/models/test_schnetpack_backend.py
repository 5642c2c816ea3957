"""The schnetpack adapter against schnetpack itself, the conformance checks, and safe loading.

The reference for energies, forces and stress is the same NeuralNetworkPotential run entirely
by schnetpack: its ASE neighbor-list transform (``AtomsConverter`` + ``ASENeighborList``), its
``Strain`` input module and its ``Forces`` output module, all independent of ase_mlmd's neighbor
list and autograd path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from ase_mlmd import MLCalculator, evaluate, load_calculator
from ase_mlmd.batch import batch_from_atoms
from ase_mlmd.calculators.cards import read_card, sha256_of, write_card
from ase_mlmd.calculators.registry import load_model_file
from ase_mlmd.errors import (
    BackendNotAvailableError,
    CardError,
    ChecksumMismatchError,
    UnsupportedSpeciesError,
    UntrustedModelError,
)
from ase_mlmd.models.backends import as_energy_model
from ase_mlmd.models.backends import schnetpack as backend
from ase_mlmd.models.backends.schnetpack import (
    SchNetPackModel,
    build_schnet_model,
    export_schnetpack_card,
    import_schnetpack,
    model_from_path,
)
from ase_mlmd.testing import check_batch_consistency, check_calculator

spk = import_schnetpack()  # the setup installs schnetpack: a missing one is a failure
CUTOFF = 4.0
REPRESENTATIONS = ("schnet", "painn")


def small_model(representation: str, seed: int = 0, **kw) -> torch.nn.Module:
    kw.setdefault("stress", True)
    return build_schnet_model(
        cutoff=CUTOFF,
        n_atom_basis=16,
        n_interactions=2,
        n_rbf=12,
        seed=seed,
        representation=representation,
        **kw,
    )


def set_offsets(nnp: torch.nn.Module, seed: int = 3) -> None:
    """Give the AddOffsets postprocessor a nonzero mean and per-element references."""
    gen = torch.Generator().manual_seed(seed)
    (pp,) = nnp.postprocessors
    pp.mean = torch.tensor([-1.7], dtype=torch.float64)
    pp.atomref = torch.randn(pp.atomref.shape, generator=gen, dtype=torch.float64)


def ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    return atoms


def rocksalt(cubic: bool = True) -> Atoms:
    """Rattled, sheared NaCl; the primitive cell (2 atoms) is smaller than the cutoff."""
    atoms = bulk("NaCl", "rocksalt", a=4.6, cubic=cubic)
    shear = np.eye(3) + np.array([[0.0, 0.03, 0.0], [0.0, 0.0, -0.02], [0.01, 0.0, 0.0]])
    atoms.set_cell(atoms.cell.array @ shear, scale_atoms=True)
    atoms.rattle(0.08, seed=2)
    return atoms


STRUCTURES = {"ethanol": ethanol, "nacl-cubic": rocksalt, "nacl-primitive": lambda: rocksalt(False)}


def spk_reference(nnp: torch.nn.Module, atoms: Atoms) -> dict[str, np.ndarray]:
    """schnetpack's own prediction with its own neighbor list, Strain and Forces modules."""
    from schnetpack.interfaces import AtomsConverter

    converter = AtomsConverter(spk.transform.ASENeighborList(cutoff=CUTOFF), dtype=torch.float64)
    out = nnp(converter(atoms))
    return {k: v.detach().numpy() for k, v in out.items()}


# ----------------------------------------------------------------------------- compat layer
def test_import_schnetpack_in_fresh_interpreter_leaves_torch_load_alone(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, pickle, sys, torch
        import ase_mlmd
        from ase_mlmd.models.backends import schnetpack as backend
        assert "schnetpack" not in sys.modules, "importing ase_mlmd must not import schnetpack"
        path = {str(tmp_path / "module.pt")!r}
        torch.save(torch.nn.Linear(2, 2), path)

        def default_load_refuses_pickles():
            try:
                torch.load(path)
            except pickle.UnpicklingError:
                return True
            return False

        load, refuses = torch.load, default_load_refuses_pickles()
        safe_globals = list(torch.serialization.get_safe_globals())
        spk = backend.import_schnetpack()
        import schnetpack.data.loader  # the module that needs the T_co name
        assert spk.__version__.startswith("2.")
        assert torch.load is load
        assert default_load_refuses_pickles() == refuses
        added = [g for g in torch.serialization.get_safe_globals() if g not in safe_globals]
        # importing torch.distributed (lightning does) allow-lists torch's own DTensor types
        assert all(getattr(g, "__module__", "").startswith("torch.") for g in added), added
        assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
        print("REFUSES", refuses)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 6):
        assert "REFUSES True" in result.stdout  # weights_only=True stays the default


def test_missing_schnetpack_raises_backend_not_available(monkeypatch):
    real_find_spec = backend.importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "schnetpack" else real_find_spec(name, *args)

    monkeypatch.setattr(backend.importlib.util, "find_spec", find_spec)
    with pytest.raises(BackendNotAvailableError, match="pip install"):
        import_schnetpack()


# ----------------------------------------------------------------------------- vs schnetpack
@pytest.mark.parametrize("structure", sorted(STRUCTURES))
@pytest.mark.parametrize("representation", REPRESENTATIONS)
def test_matches_schnetpack_own_forces_and_stress(representation, structure):
    nnp = small_model(representation, seed=1)
    atoms = STRUCTURES[structure]()
    model = SchNetPackModel(nnp)
    periodic = bool(atoms.pbc.all())
    props = ["energy", "energies", "forces"] + (["stress"] if periodic else [])
    ours = evaluate(model, batch_from_atoms([atoms], model.cutoff), props)
    ref = spk_reference(nnp, atoms)
    scale = max(1.0, float(np.abs(ref["forces"]).max()))
    np.testing.assert_allclose(ours["energy"].numpy(), ref["energy"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours["forces"].numpy(), ref["forces"], rtol=0, atol=1e-8 * scale)
    np.testing.assert_allclose(
        ours["energies"].numpy(), ref["energies"].reshape(-1), rtol=0, atol=1e-8
    )
    assert np.abs(ref["forces"]).max() > 1e-3  # a nontrivial model
    if periodic:
        np.testing.assert_allclose(ours["stress"][0].numpy(), ref["stress"][0], atol=1e-8)
        assert np.abs(ref["stress"]).max() > 1e-4


@pytest.mark.parametrize("do_postprocessing", [True, False])
def test_offsets_postprocessor_as_schnetpack_applies_it(do_postprocessing):
    nnp = small_model("schnet", seed=2, add_offsets=True)
    set_offsets(nnp)
    nnp.do_postprocessing = do_postprocessing
    atoms = ethanol()
    ours = evaluate(
        SchNetPackModel(nnp), batch_from_atoms([atoms], CUTOFF), ["energy", "energies", "forces"]
    )
    ref = spk_reference(nnp, atoms)
    np.testing.assert_allclose(ours["energy"].numpy(), ref["energy"], atol=1e-8)
    np.testing.assert_allclose(ours["forces"].numpy(), ref["forces"], atol=1e-8)
    assert float(ours["energies"].sum()) == pytest.approx(float(ours["energy"][0]), abs=1e-10)
    nnp.do_postprocessing = not do_postprocessing
    other = evaluate(SchNetPackModel(nnp), batch_from_atoms([atoms], CUTOFF), ["energy"])
    (pp,) = nnp.postprocessors
    offset = float(pp.mean[0]) * len(atoms) + float(pp.atomref[atoms.numbers].sum())
    sign = 1.0 if do_postprocessing else -1.0
    assert float(ours["energy"][0] - other["energy"][0]) == pytest.approx(sign * offset, abs=1e-10)


# ----------------------------------------------------------------------------- conformance
@pytest.mark.parametrize("representation", REPRESENTATIONS)
def test_conformance_checks(representation):
    calc = MLCalculator(
        SchNetPackModel(small_model(representation, seed=4), species=[1, 6, 8, 11, 17])
    )
    report = check_calculator(calc, ethanol(), rocksalt(cubic=False), nve_steps=40)
    assert report["forces_molecule"] < 1e-5 and report["stress_periodic"] < 1e-6


def test_batch_of_different_sizes_equals_single_evaluations():
    calc = MLCalculator(SchNetPackModel(small_model("painn", seed=5, add_offsets=True)))
    set_offsets(calc.model.nnp)
    structures = [ethanol(), rocksalt(), molecule("H2O"), rocksalt(cubic=False)]
    assert check_batch_consistency(calc, structures, atol=1e-10) <= 1e-10
    (energies,) = calc.calculate_batch(structures, properties=("energies",))
    periodic = [structures[1], structures[3]]
    (stress,) = calc.calculate_batch(periodic, properties=("stress",))
    for k, atoms in enumerate(structures):
        atoms.calc = calc
        np.testing.assert_allclose(energies[k], atoms.get_potential_energies(), atol=1e-10)
    for k, atoms in enumerate(periodic):
        atoms.calc = calc
        np.testing.assert_allclose(stress[k], atoms.get_stress(), atol=1e-12)


# ----------------------------------------------------------------------------- wrapping
def test_unwrapped_neural_network_potential_in_mlcalculator():
    nnp = small_model("schnet", seed=6, stress=False)
    assert isinstance(as_energy_model(nnp), SchNetPackModel)
    atoms = ethanol()
    atoms.calc = MLCalculator(nnp)
    ref = spk_reference(nnp, atoms)
    assert atoms.get_potential_energy() == pytest.approx(float(ref["energy"][0]), abs=1e-8)
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"], atol=1e-8)


def test_cutoff_species_and_energy_key_detection():
    nnp = small_model("painn")
    model = SchNetPackModel(nnp)
    assert model.cutoff == pytest.approx(CUTOFF)
    assert model.energy_key == "energy" and model.provides == ("energies",)
    assert model.max_atomic_number == 99
    assert SchNetPackModel(nnp, cutoff=CUTOFF + 1).cutoff == CUTOFF + 1
    # schnetpack keeps the cutoff in float32; a card's float64 value must still be accepted
    assert SchNetPackModel(build_schnet_model(cutoff=5.3), cutoff=5.3).cutoff == 5.3
    with pytest.raises(ValueError, match="shorter than the model's own cutoff"):
        SchNetPackModel(nnp, cutoff=CUTOFF - 1)
    with pytest.raises(ValueError, match="no output 'free_energy'"):
        SchNetPackModel(nnp, energy_key="free_energy")
    no_per_atom = SchNetPackModel(small_model("schnet", per_atom_output_key=None))
    assert no_per_atom.provides == ()
    filtered = spk.model.NeuralNetworkPotential(
        representation=nnp.representation,
        input_modules=[spk.atomistic.PairwiseDistances(), spk.atomistic.FilterShortRange(3.0)],
        output_modules=list(nnp.output_modules),
    )
    with pytest.raises(ValueError, match="pass cutoff="):
        SchNetPackModel(filtered)


def test_unsupported_species():
    calc = MLCalculator(SchNetPackModel(small_model("schnet"), species=[1, 6, 8]))
    with pytest.raises(UnsupportedSpeciesError, match="N"):
        calc.get_potential_energy(molecule("CH3NO2"))
    beyond_embedding = Atoms("H2", positions=[[0, 0, 0], [0, 0, 1.0]])
    beyond_embedding.numbers[1] = 100
    with pytest.raises(UnsupportedSpeciesError, match="1..99"):
        MLCalculator(small_model("schnet")).get_potential_energy(beyond_embedding)


def test_forces_differentiable_for_training():
    model = SchNetPackModel(small_model("painn", seed=7))
    out = evaluate(model, batch_from_atoms([ethanol()], CUTOFF), ["forces"], create_graph=True)
    out["forces"].pow(2).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    # the last output bias adds a constant per atom: forces do not depend on it
    assert missing == ["nnp.output_modules.0.outnet.1.bias"]


def test_float32_close_to_float64():
    nnp = small_model("schnet", seed=8)
    atoms = ethanol()
    e64 = MLCalculator(SchNetPackModel(nnp)).get_potential_energy(atoms)
    calc32 = MLCalculator(SchNetPackModel(small_model("schnet", seed=8)), dtype="float32")
    assert calc32.model.dtype == torch.float32
    assert calc32.get_potential_energy(atoms) == pytest.approx(e64, rel=1e-5, abs=1e-5)


def test_float32_model_with_spktrain_postprocessors():
    """spktrain's models run in float32 with CastTo64 + AddOffsets postprocessors."""
    nnp = small_model("schnet", seed=13, dtype=torch.float32, add_offsets=True)
    set_offsets(nnp)
    nnp.postprocessors.insert(0, spk.transform.CastTo64())
    atoms = ethanol()
    atoms.calc = MLCalculator(SchNetPackModel(nnp))
    ref = spk_reference(nnp.to(torch.float64), atoms)
    nnp.to(torch.float32)
    energy = atoms.get_potential_energy()
    assert energy == pytest.approx(float(ref["energy"][0]), abs=1e-4)
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"], atol=1e-4)
    assert atoms.get_potential_energies().sum() == pytest.approx(energy, abs=1e-4)


# ----------------------------------------------------------------------------- files
@pytest.mark.parametrize("representation", REPRESENTATIONS)
def test_card_export_round_trip(tmp_path, representation):
    nnp = small_model(representation, seed=9, add_offsets=True)
    set_offsets(nnp)
    path = export_schnetpack_card(
        nnp, tmp_path, "tiny-spk", ["H", "C", "O", "Na", "Cl"], provenance={"data": "random"}
    )
    card = read_card(path)
    assert card.backend == "schnetpack" and card.weights.format == "safetensors"
    assert card.species == (1, 6, 8, 11, 17) and card.cutoff == pytest.approx(CUTOFF)
    assert card.weights.sha256 == sha256_of(card.weights.file)
    loaded = load_calculator(path)
    direct = MLCalculator(nnp)
    for atoms in (ethanol(), rocksalt()):
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = loaded, direct
        assert a.get_potential_energy() == b.get_potential_energy()
        np.testing.assert_array_equal(a.get_forces(), b.get_forces())
    with pytest.raises(UnsupportedSpeciesError):
        loaded.get_potential_energy(molecule("CH3NO2"))


def test_tampered_weights_are_refused(tmp_path):
    path = export_schnetpack_card(small_model("schnet"), tmp_path, "tiny", ["H", "C", "O"])
    weights = read_card(path).weights.file
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        load_calculator(path)


def test_card_parameters_that_do_not_fit_the_weights(tmp_path):
    path = export_schnetpack_card(small_model("schnet"), tmp_path, "tiny", ["H", "C", "O"])
    text = path.read_text().replace("n_atom_basis = 16", "n_atom_basis = 8")
    assert text != path.read_text()
    path.write_text(text)
    with pytest.raises(CardError, match="do not fit"):
        load_calculator(path)


def test_pickled_model_needs_trust(tmp_path):
    nnp = small_model("painn", seed=10, add_offsets=True)
    set_offsets(nnp)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save(nnp, run_dir / "best_model")
    for target in (run_dir / "best_model", run_dir):
        with pytest.raises(UntrustedModelError) as info:
            model_from_path(target)
        message = str(info.value)
        assert "arbitrary code" in message and "trust=True" in message
        assert "--trust-model" in message
    with pytest.raises(UntrustedModelError):
        load_model_file("schnetpack", run_dir / "best_model")

    with pytest.warns(UserWarning, match="no units"):
        trusted = load_model_file("schnetpack", run_dir / "best_model", trust=True)
    atoms = rocksalt()
    ref = spk_reference(nnp, atoms)
    atoms.calc = MLCalculator(trusted)
    assert atoms.get_potential_energy() == pytest.approx(float(ref["energy"][0]), abs=1e-8)
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"], atol=1e-8)
    np.testing.assert_allclose(atoms.get_stress(voigt=False), ref["stress"][0], atol=1e-8)


def test_card_with_pickled_weights_needs_trust(tmp_path):
    nnp = small_model("schnet", seed=11)
    torch.save(nnp, tmp_path / "best_model")
    table = {
        "name": "pickled",
        "backend": "schnetpack",
        "species": ["H", "C", "O"],
        "cutoff": CUTOFF,
        "dtype": "float64",
        "units": {"energy": "kcal/mol", "length": "Å"},
        "weights": {
            "file": "best_model",
            "sha256": sha256_of(tmp_path / "best_model"),
            "format": "pickle",
        },
    }
    card = write_card(table, tmp_path / "pickled.toml")
    with pytest.raises(UntrustedModelError, match="trust=True"):
        load_calculator(card)
    calc = load_calculator(card, trust=True)
    atoms = ethanol()
    atoms.calc = calc
    ref = spk_reference(nnp, atoms)
    kcal = 0.0433641043  # eV per kcal/mol, as the card's units table says
    assert atoms.get_potential_energy() == pytest.approx(kcal * float(ref["energy"][0]), abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), kcal * ref["forces"], atol=1e-9)


# ----------------------------------------------------------------------------- devices
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    nnp = small_model("painn", seed=12)
    structures = [ethanol(), rocksalt()]
    cpu = MLCalculator(SchNetPackModel(nnp), device="cpu")
    gpu = MLCalculator(SchNetPackModel(small_model("painn", seed=12)), device="cuda")
    e_cpu, f_cpu = cpu.calculate_batch(structures)
    e_gpu, f_gpu = gpu.calculate_batch(structures)
    np.testing.assert_allclose(e_gpu, e_cpu, atol=1e-9)
    for a, b in zip(f_gpu, f_cpu, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)
