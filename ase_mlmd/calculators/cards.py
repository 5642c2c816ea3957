"""Model cards: TOML files that describe a named calculator, and safe loading of their weights.

A card names the backend, the architecture parameters, the weights file with its sha256, the
species, cutoff, units and dtype, and where the model came from. Example::

    name = "lj-argon"
    description = "Lennard-Jones argon"
    backend = "lennard-jones"          # lennard-jones | morse | nequip | schnetpack
    species = ["*"]                    # element symbols, or "*" for an element-agnostic model
    cutoff = 8.5                       # Å
    dtype = "float64"
    citation = "..."
    [units]                            # units the model works in; converted to eV and Å
    energy = "eV"
    length = "Å"
    [parameters]                       # passed to the backend's constructor
    epsilon = 0.0104
    [weights]                          # optional
    file = "model.safetensors"         # relative to the card
    sha256 = "..."
    format = "safetensors"             # safetensors | state_dict | nequip-package |
                                       # nequip-compiled | torchscript | pickle
    [provenance]
    source = "..."

Weights in ``safetensors`` or ``state_dict`` format hold tensors only and load without trust
(``state_dict`` through ``torch.load(weights_only=True)``). Every other format executes code
from the file when loaded and loads only with ``trust=True``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import tomllib
from pathlib import Path
from typing import Any

import torch
from ase.data import atomic_numbers

from ase_mlmd.errors import (
    CardError,
    ChecksumMismatchError,
    ModelFileError,
    UntrustedModelError,
)
from ase_mlmd.fileio import atomic_write_text

SAFE_FORMATS = ("safetensors", "state_dict")
CODE_FORMATS = {
    "nequip-package": "a nequip package (.nequip.zip) is a torch.package archive that runs its "
    "own Python code when loaded",
    "nequip-compiled": "a compiled nequip model (.nequip.pt2/.nequip.pth) runs compiled code",
    "torchscript": "a TorchScript file runs the code it contains",
    "pickle": "a pickled module (torch.save of a whole model) can run arbitrary code when "
    "unpickled",
}
ENERGY_UNITS = {
    "eV": 1.0,
    "meV": 1e-3,
    "kcal/mol": 0.0433641043,
    "kJ/mol": 0.0103642688,
    "Hartree": 27.211386245988,
    "Ha": 27.211386245988,
}
LENGTH_UNITS = {"Å": 1.0, "Angstrom": 1.0, "A": 1.0, "nm": 10.0, "Bohr": 0.529177210903}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclasses.dataclass(frozen=True)
class WeightsSpec:
    """Where a card's weights are and how to load them."""

    file: Path
    sha256: str
    format: str


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """A parsed model card. ``species`` is None for element-agnostic models."""

    name: str
    path: Path
    backend: str
    cutoff: float
    species: tuple[int, ...] | None
    dtype: torch.dtype
    energy_unit: str = "eV"
    length_unit: str = "Å"
    description: str = ""
    citation: str = ""
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    weights: WeightsSpec | None = None
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def species_symbols(self) -> list[str]:
        from ase.data import chemical_symbols

        return ["*"] if self.species is None else [chemical_symbols[z] for z in self.species]


def _require(table: dict, key: str, kind: type | tuple, path: Path) -> Any:
    if key not in table:
        raise CardError(f"{path}: missing required field {key!r}; see docs of ase_mlmd.cards")
    value = table[key]
    if not isinstance(value, kind):
        raise CardError(f"{path}: field {key!r} must be {kind}, got {value!r}")
    return value


def _parse_species(raw: list, path: Path) -> tuple[int, ...] | None:
    if raw == ["*"]:
        return None
    numbers = []
    for symbol in raw:
        if symbol not in atomic_numbers:
            raise CardError(f"{path}: unknown element {symbol!r} in species")
        numbers.append(atomic_numbers[symbol])
    if not numbers:
        raise CardError(f"{path}: species is empty; list the elements or use ['*']")
    return tuple(sorted(numbers))


def read_card(path: str | os.PathLike) -> ModelCard:
    """Parse and validate a model card.

    Raises:
        ModelFileError: the file does not exist.
        CardError: malformed TOML, missing fields, unknown units, dtype or weights format.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"model card {path} does not exist; check the path, or use a card name that "
            "`ase-mlmd calculators` lists"
        )
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise CardError(f"{path}: not a valid TOML model card ({err})") from None
    name = _require(table, "name", str, path)
    backend = _require(table, "backend", str, path)
    cutoff = float(_require(table, "cutoff", (int, float), path))
    species = _parse_species(_require(table, "species", list, path), path)
    dtype_name = table.get("dtype", "float64")
    if dtype_name not in DTYPES:
        raise CardError(f"{path}: dtype must be one of {list(DTYPES)}, got {dtype_name!r}")
    units = table.get("units", {})
    energy_unit, length_unit = units.get("energy", "eV"), units.get("length", "Å")
    if energy_unit not in ENERGY_UNITS:
        raise CardError(f"{path}: energy unit {energy_unit!r} unknown; use {list(ENERGY_UNITS)}")
    if length_unit not in LENGTH_UNITS:
        raise CardError(f"{path}: length unit {length_unit!r} unknown; use {list(LENGTH_UNITS)}")
    weights = None
    if "weights" in table:
        w = table["weights"]
        fmt = _require(w, "format", str, path)
        if fmt not in SAFE_FORMATS and fmt not in CODE_FORMATS:
            raise CardError(
                f"{path}: weights format {fmt!r} unknown; use one of "
                f"{list(SAFE_FORMATS) + list(CODE_FORMATS)}"
            )
        weights = WeightsSpec(
            file=(path.parent / _require(w, "file", str, path)).resolve(),
            sha256=_require(w, "sha256", str, path).lower(),
            format=fmt,
        )
    return ModelCard(
        name=name,
        path=path.resolve(),
        backend=backend,
        cutoff=cutoff,
        species=species,
        dtype=DTYPES[dtype_name],
        energy_unit=energy_unit,
        length_unit=length_unit,
        description=table.get("description", ""),
        citation=table.get("citation", ""),
        parameters=dict(table.get("parameters", {})),
        weights=weights,
        provenance=dict(table.get("provenance", {})),
    )


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_weights(card: ModelCard) -> Path:
    """Check that the card's weights file exists and has the declared sha256; return its path."""
    spec = card.weights
    if spec is None:
        raise CardError(f"{card.path}: backend {card.backend!r} needs a [weights] table")
    if not spec.file.is_file():
        raise ModelFileError(
            f"weights file {spec.file} named by card {card.path} does not exist; restore it or "
            "fix [weights].file"
        )
    actual = sha256_of(spec.file)
    if actual != spec.sha256:
        raise ChecksumMismatchError(
            f"weights file {spec.file} has sha256 {actual}, but card {card.path} declares "
            f"{spec.sha256}: the file was changed or corrupted. Restore the original file; only "
            "if you produced the new file yourself, update the card's sha256"
        )
    return spec.file


def require_trust(card: ModelCard, trust: bool) -> None:
    """Raise :class:`UntrustedModelError` if loading the card's weights runs code untrusted."""
    if card.weights is None or card.weights.format in SAFE_FORMATS or trust:
        return
    raise UntrustedModelError(
        f"refusing to load {card.weights.file}: {CODE_FORMATS[card.weights.format]}. Load it only "
        "if you trust its author: pass trust=True (Python) or --trust-model / -p trust=True "
        "(command line). Safer: export the weights as safetensors"
    )


def load_state_dict(card: ModelCard) -> dict[str, torch.Tensor]:
    """Load tensor-only weights (safetensors or ``weights_only`` state_dict) after verification.

    Raises:
        ModelFileError: missing, truncated or corrupt file, or a format that is not tensor-only.
        ChecksumMismatchError: sha256 differs from the card.
    """
    path = verify_weights(card)
    fmt = card.weights.format
    try:
        if fmt == "safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if fmt == "state_dict":
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise ModelFileError(f"{path} does not hold a state_dict (a dict of tensors)")
            return state
    except ModelFileError:
        raise
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):
            raise _not_a_plain_state_dict(card, path) from None
        raise _unreadable(path, fmt, _unpickler_reason(err)) from None
    except Exception as err:  # safetensors/torch raise many types for corrupt files
        raise _unreadable(path, fmt, err) from None
    raise ModelFileError(f"{path}: format {fmt!r} does not hold a plain state_dict")


def _unreadable(path: Path, fmt: str, err: Exception | str) -> ModelFileError:
    reason = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    return ModelFileError(
        f"could not read weights {path} as {fmt}: {reason}. The file is corrupt or not in this "
        "format"
    )


def _unpickler_reason(err: pickle.UnpicklingError) -> str:
    """The reason in torch's weights-only unpickling error, without its advice to load with
    ``weights_only=False`` (which would run code from a file that is not even a state_dict)."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].strip().split("\n", 1)[0].strip()
    else:
        text = text.split(".", 1)[0]
    return f"not a torch pickle of tensors ({text})"


def _not_a_plain_state_dict(card: ModelCard, path: Path) -> ModelFileError:
    """The error for a file labelled ``state_dict`` that holds pickled objects beyond tensors.

    torch's own message advises ``weights_only=False``, which would run the file's code; this one
    names the safe alternatives and the explicit-trust route instead.
    """
    return ModelFileError(
        f'{path} is labelled format = "state_dict" in card {card.path}, but it is not a plain '
        "state_dict: it contains pickled code or objects (e.g. a whole torch.save'd model), and "
        "unpickling them can run arbitrary code, so it was not loaded. If it comes from someone "
        "you trust, change the card's [weights] format to \"pickle\" (or the backend's own "
        "format) and load with trust=True (Python) or --trust-model (command line). Safer: "
        "re-export the tensors only, with torch.save(model.state_dict(), ...) or as safetensors"
    )


def write_card(table: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a card atomically (temporary file + rename): a reader never sees half a card."""
    import tomli_w

    return atomic_write_text(path, tomli_w.dumps(table))
