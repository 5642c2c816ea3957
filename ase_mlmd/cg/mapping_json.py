"""JSON form of a :class:`~ase_mlmd.cg.mapping.CGMapping`.

Layout (``format`` = ``"ase_mlmd.cg_mapping"``, ``version`` 1): ``scheme``, ``n_atoms``,
``numbers`` (atomic numbers in atom order), ``bonds`` (atom index pairs), ``type_list``,
``allow_unmapped``, ``allow_overlap``, ``info``, and ``beads``: per bead its ``name``, ``type``,
``atoms`` (0-based indices) and their ``weights`` — sparse, so a box of many molecules stays
small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from ase_mlmd.errors import DataFormatError, MappingError

if TYPE_CHECKING:
    from ase_mlmd.cg.mapping import CGMapping

#: the ``format`` field of a mapping JSON file
JSON_FORMAT = "ase_mlmd.cg_mapping"


def mapping_to_dict(mapping: CGMapping) -> dict:
    """JSON-ready dict of ``mapping`` (layout in the module docstring)."""
    matrix = mapping.sparse_weights
    beads = [
        {
            "name": name,
            "type": kind,
            "atoms": atoms.tolist(),
            "weights": matrix.data[matrix.indptr[bead] : matrix.indptr[bead + 1]].tolist(),
        }
        for bead, (name, kind, atoms) in enumerate(
            zip(mapping.bead_names, mapping.bead_types, mapping.members, strict=True)
        )
    ]
    return {
        "format": JSON_FORMAT,
        "version": 1,
        "scheme": mapping.scheme,
        "n_atoms": mapping.n_atoms,
        "numbers": mapping.numbers.tolist(),
        "bonds": mapping.bonds.tolist(),
        "type_list": list(mapping.type_list),
        "allow_unmapped": mapping.allow_unmapped,
        "allow_overlap": mapping.allow_overlap,
        "info": mapping.info,
        "beads": beads,
    }


def mapping_from_dict(cls: type[CGMapping], data: dict, where: str = "the mapping") -> CGMapping:
    """A mapping from its JSON dict; ``where`` names the source in error messages.

    Raises:
        DataFormatError: not a mapping dict, or fields missing/of the wrong kind.
        MappingError: the mapping itself is invalid (names ``where`` and the bead).
    """
    if not isinstance(data, dict) or data.get("format") != JSON_FORMAT:
        raise DataFormatError(f"{where} is not a CG mapping (no format: {JSON_FORMAT!r})")
    try:
        n_atoms = int(data["n_atoms"])
        rows, cols, values = [], [], []
        for bead, entry in enumerate(data["beads"]):
            atoms = np.asarray(entry["atoms"], dtype=int).reshape(-1)
            share = np.asarray(entry["weights"], dtype=float).reshape(-1)
            if len(atoms) != len(share) or len(set(atoms.tolist())) != len(atoms):
                raise MappingError(
                    f"bead {bead} lists {len(atoms)} atoms (each once) but {len(share)} weights"
                )
            if len(atoms) and (atoms.min() < 0 or atoms.max() >= n_atoms):
                raise MappingError(f"bead {bead} names atoms outside 0..{n_atoms - 1}")
            rows.append(np.full(len(atoms), bead))
            cols.append(atoms)
            values.append(share)
        weights = sparse.csr_array(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
            shape=(len(data["beads"]), n_atoms),
        )
        return cls(
            weights=weights,
            bead_types=[b["type"] for b in data["beads"]],
            bead_names=[b["name"] for b in data["beads"]],
            numbers=data["numbers"],
            bonds=data["bonds"],
            type_list=tuple(data.get("type_list", ())),
            scheme=data.get("scheme", "custom"),
            allow_unmapped=bool(data.get("allow_unmapped", False)),
            allow_overlap=bool(data.get("allow_overlap", False)),
            info=dict(data.get("info", {})),
        )
    except MappingError as error:
        raise MappingError(f"{where}: {error}") from error
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise DataFormatError(f"{where} is not a valid CG mapping: {error!r}") from error
