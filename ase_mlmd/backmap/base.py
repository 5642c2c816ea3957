"""The backmapper protocol: CG structures in, all-atom structures out.

Every backmapper (CGVAE, the linear baseline, PULCHRA) has the same three members:

- ``topology``: the :class:`~ase_mlmd.cg.mapping.CGMapping` it backmaps for; it holds the
  molecule's elements and atom order (``numbers``), its bond graph (``bonds``, atom index
  pairs) and the bead types and order;
- ``sample(cg, n_samples, seed=0)``: for each CG frame, ``n_samples`` all-atom ``Atoms``
  (the molecule's elements in its atom order, positions in Å);
- ``reconstruct(cg)``: one deterministic all-atom structure per CG frame (for a generative
  model: the latent at its prior mean).

:func:`check_cg_frames` is the one check of CG input against a mapping that all of them use;
:func:`check_n_samples` and :func:`aa_atoms` are the shared input check and output builder;
:func:`copies_per_frame` is ``sample`` of a deterministic backmapper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from ase import Atoms

from ase_mlmd.beads import is_cg_atoms, type_list_of
from ase_mlmd.cg.mapping import CGMapping
from ase_mlmd.errors import BackmapError, InvalidStructureError
from ase_mlmd.structures import is_single_structure, to_atoms

__all__ = ["Backmapper", "aa_atoms", "check_cg_frames", "check_n_samples", "copies_per_frame"]


@runtime_checkable
class Backmapper(Protocol):
    """CG → all-atom structures for one molecule (see the module docstring)."""

    @property
    def topology(self) -> CGMapping:
        """The mapping: molecule elements, atom order and bonds; bead types and order."""
        ...

    def sample(
        self, cg: Atoms | Sequence[Atoms], n_samples: int, seed: int = 0
    ) -> list[list[Atoms]]:
        """Per CG frame, ``n_samples`` all-atom structures (Å), reproducible for a seed."""
        ...

    def reconstruct(self, cg: Atoms | Sequence[Atoms]) -> list[Atoms]:
        """Per CG frame, one deterministic all-atom structure (Å)."""
        ...


def check_n_samples(n_samples: int) -> int:
    """``n_samples`` as an int ≥ 1.

    Raises:
        BackmapError: a count below 1 (names ``--samples``, the CLI flag).
    """
    if isinstance(n_samples, bool) or int(n_samples) != n_samples or int(n_samples) < 1:
        raise BackmapError(
            f"the number of samples per CG frame must be a whole number ≥ 1, got {n_samples!r}"
            " (--samples on the command line)"
        )
    return int(n_samples)


def check_cg_frames(cg: Atoms | Sequence[Atoms], mapping: CGMapping) -> np.ndarray:
    """Bead positions (F, n_beads, 3) Å of CG frames checked against ``mapping``.

    A frame must have the mapping's bead count; when it carries bead types
    (``arrays["bead_type"]``, the :mod:`ase_mlmd.beads` convention) they must be the mapping's
    bead types in its bead order; positions must be finite.

    Raises:
        BackmapError: no frames, another bead count, or beads in another order/of other types.
        InvalidStructureError: NaN or infinite bead positions.
    """
    frames = [to_atoms(cg)] if is_single_structure(cg) else [to_atoms(f) for f in cg]
    if not frames:
        raise BackmapError("no CG frames were given; give at least one CG structure")
    out = np.empty((len(frames), mapping.n_beads, 3))
    for k, atoms in enumerate(frames):
        where = f"CG frame {k}" + (f" ({atoms.info['source']})" if "source" in atoms.info else "")
        if len(atoms) != mapping.n_beads:
            raise BackmapError(
                f"{where} has {len(atoms)} beads but the backmapper's mapping has "
                f"{mapping.n_beads} ({mapping.scheme}); map the all-atom frames with the same "
                "mapping the backmapper was trained on"
            )
        if is_cg_atoms(atoms):
            types = [str(t) for t in atoms.arrays["bead_type"]]
            differ = [
                i for i, (a, b) in enumerate(zip(types, mapping.bead_types, strict=True)) if a != b
            ]
            if differ:
                i = differ[0]
                raise BackmapError(
                    f"bead {i} of {where} has type {types[i]!r} but the mapping expects "
                    f"{mapping.bead_types[i]!r} there (bead types {list(mapping.bead_types)}, "
                    f"frame types {type_list_of(atoms)}): the beads are in another order or "
                    "from another mapping"
                )
        positions = atoms.get_positions()
        bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
        if len(bad):
            raise InvalidStructureError(
                f"{where} has non-finite coordinates (bead {int(bad[0])}); drop that frame"
            )
        out[k] = positions
    return out


def aa_atoms(positions: np.ndarray, mapping: CGMapping, **info) -> Atoms:
    """An all-atom structure of the mapping's molecule at ``positions`` (n_atoms, 3) Å, with
    ``info`` entries (e.g. ``cg_frame``, ``sample``) stored in ``atoms.info``."""
    positions = np.asarray(positions, dtype=float)
    if positions.shape != (mapping.n_atoms, 3):
        raise InvalidStructureError(
            f"positions have shape {positions.shape}, expected ({mapping.n_atoms}, 3)"
        )
    atoms = Atoms(numbers=mapping.numbers, positions=positions)
    atoms.info.update(info)
    return atoms


def copies_per_frame(
    positions: np.ndarray, n_samples: int, build: Callable[..., Atoms]
) -> list[list[Atoms]]:
    """``sample`` of a deterministic backmapper: per frame of ``positions`` (F, K, 3) Å,
    ``n_samples`` identical structures ``build(x, cg_frame=k, sample=s)``.

    Raises:
        BackmapError: ``n_samples`` < 1 (names ``--samples``).
    """
    n = check_n_samples(n_samples)
    return [[build(x, cg_frame=k, sample=s) for s in range(n)] for k, x in enumerate(positions)]
