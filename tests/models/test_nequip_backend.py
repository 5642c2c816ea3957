"""The nequip adapter against nequip itself, the conformance checks, and safe loading.

The reference for energies, forces and stress is the same ``GraphModel`` run entirely by nequip:
nequip's ASE conversion (``from_ase``), its type mapper and neighbor list transforms, and its
``ForceStressOutput`` autograd module — independent of ase_mlmd's neighbor list, data
conversion and autograd path — and nequip's own ASE calculator.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from ase.build import molecule

from ase_mlmd import MLCalculator, evaluate, load_calculator
from ase_mlmd.batch import batch_from_atoms
from ase_mlmd.calculators.cards import read_card, sha256_of, write_card
from ase_mlmd.calculators.registry import load_model_file
from ase_mlmd.errors import (
    CardError,
    ChecksumMismatchError,
    ModelFileError,
    UnsupportedSpeciesError,
    UntrustedModelError,
)
from ase_mlmd.models.backends.nequip import (
    HYPERPARAMETERS_ATTR,
    NequipModel,
    build_nequip_model,
    export_nequip_card,
    import_nequip,
    model_from_path,
    nequip_card_parameters,
)
from ase_mlmd.testing import check_batch_consistency, check_calculator, check_forces

import_nequip()  # the setup installs nequip: a missing one is a failure, not a skip

from nequip.data import AtomicDataDict as K  # noqa: E402
from nequip.data import from_ase  # noqa: E402
from nequip.data.transforms import (  # noqa: E402
    ChemicalSpeciesToAtomTypeMapper,
    NeighborListTransform,
)
from nequip.utils import torch_default_dtype  # noqa: E402

TYPES = ["H", "C", "O"]
R_MAX = 4.0
SHIFTS = {"H": -13.6, "C": -1030.0, "O": -2040.0}


def small_model(seed: int = 0, model_dtype: str = "float64", types=TYPES, **kw):
    kw.setdefault("avg_num_neighbors", 8.0)
    kw.setdefault("per_type_energy_shifts", {t: SHIFTS.get(t, -1.0) for t in types})
    return build_nequip_model(types, R_MAX, seed=seed, model_dtype=model_dtype, **kw)


@pytest.fixture(scope="module")
def graph_model():
    return small_model(seed=1).eval()


@pytest.fixture(scope="module")
def ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    return atoms


@pytest.fixture(scope="module")
def periodic() -> Atoms:
    """Ethanol + water in a small triclinic cell: every atom sees several periodic images."""
    water = molecule("H2O")
    water.translate([2.6, 2.4, 2.9])
    atoms = molecule("CH3CH2OH") + water
    atoms.set_cell([[6.0, 0.0, 0.0], [1.1, 5.6, 0.0], [0.6, 0.9, 5.8]])
    atoms.pbc = True
    atoms.rattle(0.05, seed=2)
    atoms.wrap()
    return atoms


def nequip_reference(model, structures, r_max=R_MAX, per_edge_type_cutoff=None) -> list[dict]:
    """Energies/forces/stress of each structure from the full GraphModel fed by nequip's own
    data pipeline (from_ase → type mapper → matscipy neighbor list)."""
    mapper = ChemicalSpeciesToAtomTypeMapper(model.type_names, {t: t for t in model.type_names})
    nl = NeighborListTransform(
        r_max=r_max, per_edge_type_cutoff=per_edge_type_cutoff, type_names=model.type_names
    )
    results = []
    for atoms in structures:
        with torch_default_dtype(torch.float64):  # nequip's data tools follow the default dtype
            data = nl(mapper(from_ase(atoms)))
        out = model(data)
        results.append({k: v.detach() for k, v in out.items() if isinstance(v, torch.Tensor)})
    return results


def test_energy_forces_stress_match_nequip_itself(graph_model, ethanol, periodic):
    water = molecule("H2O")
    water.rattle(0.05, seed=4)
    structures = [ethanol, periodic, water]
    refs = nequip_reference(graph_model, structures)
    model = NequipModel(graph_model)
    assert model.provides == ("energies",)  # forces/stress come from ase_mlmd's autograd
    batch = batch_from_atoms(structures, model.cutoff)
    out = evaluate(model, batch, ("energy", "energies", "forces"))
    forces = batch.split_per_system(out["forces"])
    energies = batch.split_per_system(out["energies"])
    for k, ref in enumerate(refs):
        assert float(out["energy"][k]) == pytest.approx(float(ref[K.TOTAL_ENERGY_KEY]), abs=1e-9)
        np.testing.assert_allclose(energies[k], ref[K.PER_ATOM_ENERGY_KEY].reshape(-1), atol=1e-9)
        np.testing.assert_allclose(forces[k], ref[K.FORCE_KEY], atol=1e-9)
        assert float(ref[K.FORCE_KEY].abs().max()) > 1e-3  # a real, nonzero comparison
    stress = evaluate(model, batch_from_atoms([periodic], model.cutoff), ("stress",))["stress"]
    np.testing.assert_allclose(stress[0], refs[1][K.STRESS_KEY].reshape(3, 3), atol=1e-10)
    assert float(stress.abs().max()) > 1e-4


def test_matches_nequip_ase_calculator(graph_model, ethanol, periodic):
    from nequip.integrations.ase import NequIPCalculator
    from nequip.integrations.utils import basic_transforms

    transforms = basic_transforms(graph_model.metadata, R_MAX, TYPES, {t: t for t in TYPES})
    theirs = NequIPCalculator(graph_model, device="cpu", transforms=transforms)
    ours = MLCalculator(NequipModel(graph_model))
    for atoms in (ethanol, periodic):
        props = ["energy", "energies", "forces"] + (["stress"] if atoms.pbc.all() else [])
        for prop in props:
            a, b = atoms.copy(), atoms.copy()
            with torch_default_dtype(torch.float64):  # nequip's from_ase needs it
                expected = theirs.get_property(prop, a)
            np.testing.assert_allclose(ours.get_property(prop, b), expected, atol=1e-8)
            assert np.abs(expected).max() > 1e-4


def test_conformance(graph_model, ethanol, periodic):
    report = check_calculator(MLCalculator(NequipModel(graph_model)), ethanol, periodic=periodic)
    assert report["stress_periodic"] < 1e-6


def test_batch_of_different_sizes_equals_single(graph_model, ethanol, periodic):
    calc = MLCalculator(graph_model)  # the unwrapped GraphModel works too
    assert isinstance(calc.model, NequipModel)
    small = periodic[:4]  # periodic, different size
    check_batch_consistency(calc, [ethanol, periodic, small, molecule("CO2")], atol=1e-10)
    model = calc.model
    batch = batch_from_atoms([periodic, small], model.cutoff)
    both = evaluate(model, batch, ("energy", "forces", "stress"))
    for k, atoms in enumerate((periodic, small)):
        one = evaluate(model, batch_from_atoms([atoms], model.cutoff), ("energy", "stress"))
        np.testing.assert_allclose(both["stress"][k], one["stress"][0], atol=1e-10)
        assert float(both["energy"][k]) == pytest.approx(float(one["energy"][0]), abs=1e-10)


def test_nequip_derivatives_match_shared_autograd(graph_model, ethanol, periodic):
    """The whole-model path (used for compiled models) agrees with the energy-only path."""
    shared, own = NequipModel(graph_model), NequipModel(graph_model, use_model_derivatives=True)
    assert own.provides == ("energies", "forces", "stress")
    batch = batch_from_atoms([periodic, periodic[:5]], R_MAX)
    a = evaluate(shared, batch, ("energy", "energies", "forces", "stress"))
    b = evaluate(own, batch, ("energy", "energies", "forces", "stress"))
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-10, err_msg=key)
    mixed = batch_from_atoms([ethanol, periodic], R_MAX)  # molecule + crystal, no stress
    a, b = evaluate(shared, mixed, ("energy", "forces")), evaluate(own, mixed, ("energy", "forces"))
    np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-10)


def test_float32(graph_model, ethanol, periodic):
    model32 = small_model(seed=1, model_dtype="float32")
    model32.load_state_dict(graph_model.state_dict())
    wrapped = NequipModel(model32)
    assert wrapped.dtype == torch.float32
    # the same weights, cast by MLCalculator(dtype=...) (rebuilt in float32), agree
    cast = MLCalculator(NequipModel(graph_model), dtype="float32")
    assert cast.model.dtype == torch.float32
    assert cast.model.graph_model is not graph_model
    assert {p.dtype for p in cast.model.graph_model.parameters()} == {torch.float32}
    calc64, calc32 = MLCalculator(graph_model), MLCalculator(wrapped)
    for atoms in (ethanol, periodic):
        e64, f64 = _energy_forces(calc64, atoms)
        for calc in (calc32, cast):
            e32, f32 = _energy_forces(calc, atoms)
            assert e32 == pytest.approx(e64, abs=1e-4 * len(atoms))
            np.testing.assert_allclose(f32, f64, atol=1e-4 * np.abs(f64).max())
    check_forces(calc32, ethanol, step=1e-2, atol=2e-2 * np.abs(f64).max())
    assert MLCalculator(wrapped.to(torch.float64)).model.dtype == torch.float64
    bare = copy.deepcopy(graph_model)  # a GraphModel whose architecture is unknown
    delattr(bare, HYPERPARAMETERS_ATTR)
    with pytest.raises(ValueError, match="model_dtype"):
        MLCalculator(bare, dtype="float32")


def _energy_forces(calc, atoms):
    a = atoms.copy()
    a.calc = calc
    return a.get_potential_energy(), a.get_forces()


def test_card_round_trip(graph_model, periodic, tmp_path):
    card_path = export_nequip_card(
        NequipModel(graph_model), tmp_path, "tiny-nequip", provenance={"data": "random weights"}
    )
    card = read_card(card_path)
    assert card.backend == "nequip" and card.weights.format == "safetensors"
    assert card.species_symbols == ["H", "C", "O"] and card.cutoff == R_MAX
    assert card.parameters == nequip_card_parameters(graph_model)
    calc = load_calculator(card_path)
    ref = MLCalculator(graph_model)
    for prop in ("energy", "forces", "stress"):
        a, b = periodic.copy(), periodic.copy()
        a.calc, b.calc = ref, calc
        np.testing.assert_array_equal(b.calc.get_property(prop, b), a.calc.get_property(prop, a))
    calc32 = load_calculator(card_path, dtype="float32")
    assert calc32.model.dtype == torch.float32
    e32, _ = _energy_forces(calc32, periodic)
    assert e32 == pytest.approx(_energy_forces(ref, periodic)[0], abs=1e-3)

    weights = card.weights.file
    blob = bytearray(weights.read_bytes())
    blob[-5] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(ChecksumMismatchError):
        load_calculator(card_path)


def test_card_with_wrong_architecture(graph_model, tmp_path):
    card_path = export_nequip_card(graph_model, tmp_path, "tiny")
    table = tomllib.loads(card_path.read_text())
    table["parameters"]["num_features"] = 8
    write_card(table, card_path)
    with pytest.raises(CardError, match="do not fit"):
        load_calculator(card_path)


def test_type_names_that_are_not_symbols(graph_model, ethanol):
    named = small_model(seed=1, types=["hyd", "carb", "oxy"])
    named.load_state_dict(graph_model.state_dict())
    with pytest.raises(ValueError, match="species_to_type"):
        NequipModel(named)
    model = NequipModel(named, species_to_type={"H": "hyd", "C": "carb", "O": "oxy"})
    e_named, f_named = _energy_forces(MLCalculator(model), ethanol)
    e_ref, f_ref = _energy_forces(MLCalculator(graph_model), ethanol)
    assert e_named == pytest.approx(e_ref, abs=1e-10)
    np.testing.assert_allclose(f_named, f_ref, atol=1e-10)


def test_cutoff_override(graph_model, periodic):
    """A larger neighbor list changes nothing (the model's cutoff function is zero beyond
    r_max); a smaller one than r_max is refused."""
    wide = NequipModel(graph_model, cutoff=R_MAX + 1.5)
    e_wide, f_wide = _energy_forces(MLCalculator(wide), periodic)
    e_ref, f_ref = _energy_forces(MLCalculator(graph_model), periodic)
    assert e_wide == pytest.approx(e_ref, abs=1e-10)
    np.testing.assert_allclose(f_wide, f_ref, atol=1e-10)
    with pytest.raises(ValueError, match="below the model's r_max"):
        NequipModel(graph_model, cutoff=R_MAX - 0.5)


def test_per_edge_type_cutoff(ethanol, periodic):
    per_type = {"H": 2.5, "C": {"O": 3.0}}
    model = small_model(seed=2, per_edge_type_cutoff=per_type).eval()
    refs = nequip_reference(model, [ethanol, periodic], per_edge_type_cutoff=per_type)
    ours = NequipModel(model)
    out = evaluate(ours, batch_from_atoms([ethanol, periodic], R_MAX), ("energy", "forces"))
    np.testing.assert_allclose(
        out["energy"], [float(r[K.TOTAL_ENERGY_KEY]) for r in refs], atol=1e-9
    )
    np.testing.assert_allclose(out["forces"], torch.cat([r[K.FORCE_KEY] for r in refs]), atol=1e-9)


def test_unsupported_species(graph_model):
    calc = MLCalculator(NequipModel(graph_model))
    atoms = molecule("SiH4")
    atoms.calc = calc
    with pytest.raises(UnsupportedSpeciesError, match="Si"):
        atoms.get_potential_energy()
    model = NequipModel(graph_model)  # the model itself checks too (no check_species call)
    with pytest.raises(UnsupportedSpeciesError, match="Si"):
        model(batch_from_atoms([atoms], R_MAX))


def test_default_architecture_builds_and_runs(ethanol):
    model = build_nequip_model(["H", "C", "O"], r_max=4.5)
    params = nequip_card_parameters(model)
    assert params["r_max"] == 4.5 and params["type_names"] == ["H", "C", "O"]
    assert "model_dtype" not in params
    energy, forces = _energy_forces(MLCalculator(model), ethanol)
    assert np.isfinite(energy) and np.isfinite(forces).all()
    with pytest.raises(TypeError, match="card"):
        build_nequip_model(["H"], 3.0, avg_num_neighbors=None)


def test_default_dtype_and_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    dtype = torch.get_default_dtype()
    small_model(seed=5)
    assert torch.get_default_dtype() == dtype
    assert torch.equal(torch.rand(3), expected)


def write_nequip_package(model, path: Path, example: Atoms) -> Path:
    """Write ``model`` in the layout of ``nequip-package build`` (torch.package archive with
    the model under model/eager_model.pkl, example data and package metadata). nequip-package
    itself needs a training checkpoint, which a test cannot produce cheaply."""
    from nequip.scripts._package_utils import (
        _EXTERNAL_MODULES,
        _INTERNAL_MODULES,
        _MOCK_MODULES,
    )

    mapper = ChemicalSpeciesToAtomTypeMapper(model.type_names, {t: t for t in model.type_names})
    with torch_default_dtype(torch.float64):
        data = K.with_batch_(NeighborListTransform(r_max=R_MAX)(mapper(from_ase(example))))
    metadata = {
        "versions": {},
        "external_modules": {},
        "package_version_id": 2,
        "available_models": ["eager"],
        "atom_types": dict(enumerate(model.type_names)),
    }
    with torch.package.PackageExporter(str(path)) as exporter:
        exporter.mock([f"{p}.**" for p in _MOCK_MODULES])
        exporter.extern([f"{p}.**" for p in _EXTERNAL_MODULES])
        exporter.intern([f"{p}.**" for p in _INTERNAL_MODULES])
        exporter.save_pickle("model", "example_data.pkl", data, dependencies=True)
        exporter.save_text("model", "config.yaml", "")
        exporter.save_text("model", "package_metadata.txt", yaml.safe_dump(metadata))
        modules = torch.nn.ModuleDict({"sole_model": model})
        exporter.save_pickle("model", "eager_model.pkl", modules, dependencies=True)
    return path


@pytest.fixture(scope="module")
def package(graph_model, periodic, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pkg") / "tiny.nequip.zip"
    return write_nequip_package(graph_model, path, periodic)


def test_package_needs_trust(graph_model, package, periodic, tmp_path):
    with pytest.raises(UntrustedModelError) as info:
        model_from_path(package)
    message = str(info.value)
    assert "trust=True" in message and "--trust-model" in message and "code" in message
    with pytest.raises(UntrustedModelError):
        load_model_file("nequip", package)

    loaded = model_from_path(package, trust=True)
    assert type(loaded.graph_model).__module__.startswith("<torch_package")
    assert loaded.provides == ("energies",) and loaded.cutoff == R_MAX
    ref = MLCalculator(graph_model)
    for calc in (MLCalculator(loaded), MLCalculator(load_model_file("nequip", package, True))):
        e, f = _energy_forces(calc, periodic)
        e_ref, f_ref = _energy_forces(ref, periodic)
        assert e == pytest.approx(e_ref, abs=1e-10)
        np.testing.assert_allclose(f, f_ref, atol=1e-10)

    # the same package behind a card: trust is checked before loading
    table = {
        "name": "pkg",
        "backend": "nequip",
        "species": ["H", "C", "O"],
        "cutoff": R_MAX,
        "weights": {"file": str(package), "sha256": sha256_of(package), "format": "nequip-package"},
    }
    card = write_card(table, tmp_path / "pkg.toml")
    with pytest.raises(UntrustedModelError, match="trust"):
        load_calculator(card)
    e, _ = _energy_forces(load_calculator(card, trust=True), periodic)
    assert e == pytest.approx(_energy_forces(ref, periodic)[0], abs=1e-10)
    for change, match in (({"cutoff": 3.0}, "r_max"), ({"species": ["H", "N"]}, "no types")):
        write_card({**table, **change}, card)
        with pytest.raises(CardError, match=match):
            load_calculator(card, trust=True)


def test_bad_files(tmp_path):
    other = tmp_path / "model.pt"
    other.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="nequip-package"):
        model_from_path(other, trust=True)
    with pytest.raises(ModelFileError, match="does not exist"):
        model_from_path(tmp_path / "missing.nequip.zip", trust=True)
    broken = tmp_path / "broken.nequip.zip"
    broken.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelFileError, match="could not load"):
        model_from_path(broken, trust=True)


def test_missing_nequip_is_reported(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        sys.modules["nequip"] = None  # as if nequip were not installed
        from ase_mlmd.errors import BackendNotAvailableError
        from ase_mlmd.models.backends.nequip import build_nequip_model
        try:
            build_nequip_model(["H"], 3.0)
        except BackendNotAvailableError as err:
            assert "pip install" in str(err)
            print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(graph_model, ethanol, periodic):
    cpu = MLCalculator(NequipModel(graph_model), device="cpu")
    gpu = MLCalculator(small_model(seed=1), device="cuda")
    assert gpu.model.device.type == "cuda"
    structures = [ethanol, periodic]
    e_cpu, f_cpu, s_cpu = cpu.calculate_batch(structures[1:], ("energy", "forces", "stress"))
    e_gpu, f_gpu, s_gpu = gpu.calculate_batch(structures[1:], ("energy", "forces", "stress"))
    np.testing.assert_allclose(e_gpu, e_cpu, atol=1e-9)
    np.testing.assert_allclose(f_gpu[0], f_cpu[0], atol=1e-9)
    np.testing.assert_allclose(s_gpu, s_cpu, atol=1e-10)
    check_batch_consistency(gpu, structures, atol=1e-9)


@pytest.mark.slow  # AOTInductor compilation: about 100 s on 2 CPU cores
def test_compiled_model(graph_model, package, periodic, ethanol, tmp_path):
    compiled = tmp_path / "tiny.nequip.pt2"
    for target in ("batch", "ase"):
        subprocess.run(
            [
                Path(sys.executable).with_name("nequip-compile"),
                str(package),
                str(compiled),
                "--mode",
                "aotinductor",
                "--device",
                "cpu",
                "--target",
                target,
            ],
            check=True,
            capture_output=True,
        )
        with pytest.raises(UntrustedModelError):
            model_from_path(compiled)
        model = model_from_path(compiled, trust=True)
        assert model.provides == ("energies", "forces", "stress")
        ref = NequipModel(graph_model)
        batch = batch_from_atoms([periodic, periodic[:6]], R_MAX)
        a = evaluate(model, batch, ("energy", "forces", "stress"))
        b = evaluate(ref, batch, ("energy", "forces", "stress"))
        for key in a:
            np.testing.assert_allclose(a[key], b[key], atol=1e-8, err_msg=key)
        check_calculator(MLCalculator(model), ethanol, periodic=periodic, nve_steps=5)
