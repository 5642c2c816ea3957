"""The linear backmapping baseline: a least-squares matrix from bead to atom coordinates.

Autograin-style linear decoder (Wang & Gómez-Bombarelli 2019; CGVAE's linear baseline). For a
CG frame with bead positions ``R`` (n_beads, 3) and its centre ``c = mean_I R_I``, the atoms are

    x = c + D (R − c)            D: (n_atoms, n_beads), the same for x, y and z,

so the map is equivariant under rotations and translations of the CG frame. ``D`` is fitted on
training pairs (:class:`~ase_mlmd.backmap.pairs.BackmapPairs`) by least squares over all frames
and Cartesian components at once, ``min_D Σ_f ‖(X_f − c_f) − D (R_f − c_f)‖²`` with X the
all-atom positions, i.e. ``D = Y Zᵀ (Z Zᵀ)⁺`` with Y (n_atoms, 3F) and Z (n_beads, 3F) the
centred coordinates side by side (the pseudo-inverse: centred bead coordinates sum to zero, so
Z Zᵀ is singular; the minimum-norm solution is taken). ``ridge`` > 0 adds ``ridge · I`` to
Z Zᵀ (Å²; default 0).

The model is deterministic: :meth:`LinearBackmapper.sample` returns ``n_samples`` identical
copies of the reconstruction per CG frame (its RMSD_sample is its RMSD_recon and its diversity
is zero).

Cards: backend ``linear-backmap``, weights ``D`` as safetensors (tensor ``decoder``,
float64) with sha256, the mapping in ``[parameters.mapping]``; loaded by
:func:`ase_mlmd.backmap.card.load_backmapper` through :func:`linear_from_card`, no trust needed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ase_mlmd.backmap.base import aa_atoms, check_cg_frames, check_n_samples, copies_per_frame
from ase_mlmd.backmap.card import mapping_from_card, write_backmapper_card
from ase_mlmd.backmap.pairs import BackmapPairs
from ase_mlmd.calculators.cards import ModelCard, load_state_dict
from ase_mlmd.cg.mapping import CGMapping
from ase_mlmd.errors import BackmapError, CardError

LINEAR_BACKEND = "linear-backmap"
LINEAR_CITATION = (
    "W. Wang, R. Gómez-Bombarelli, Coarse-graining auto-encoders for molecular dynamics, "
    "npj Comput. Mater. 5, 125 (2019) (linear decoder)"
)

__all__ = ["LINEAR_BACKEND", "LinearBackmapper", "linear_from_card"]


@dataclass(frozen=True, eq=False)
class LinearBackmapper:
    """``x = c + D (R − c)`` (module docstring). ``decoder``: (n_atoms, n_beads) ``D``."""

    mapping: CGMapping
    decoder: np.ndarray

    def __post_init__(self) -> None:
        d = np.asarray(self.decoder, dtype=np.float64)
        if d.shape != (self.mapping.n_atoms, self.mapping.n_beads) or not np.isfinite(d).all():
            raise CardError(
                f"a linear decoder must be finite with shape (n_atoms, n_beads) = "
                f"({self.mapping.n_atoms}, {self.mapping.n_beads}); got {d.shape}"
            )
        object.__setattr__(self, "decoder", d)

    @classmethod
    def fit(cls, pairs: BackmapPairs, ridge: float = 0.0) -> LinearBackmapper:
        """Least-squares ``D`` on all frames of ``pairs`` (module docstring).

        Raises:
            BackmapError: no frames, or a negative ``ridge``.
        """
        if len(pairs) == 0:
            raise BackmapError("no training pairs: give at least one all-atom frame")
        if not ridge >= 0:
            raise BackmapError(f"ridge must be ≥ 0 (Å²), got {ridge}")
        centre = pairs.cg.mean(axis=1, keepdims=True)  # (F, 1, 3)
        y = np.moveaxis(pairs.aa - centre, 1, 0).reshape(pairs.mapping.n_atoms, -1)
        z = np.moveaxis(pairs.cg - centre, 1, 0).reshape(pairs.mapping.n_beads, -1)
        gram = z @ z.T + ridge * np.eye(len(z))
        decoder = (y @ z.T) @ np.linalg.pinv(gram, hermitian=True)
        return cls(mapping=pairs.mapping, decoder=decoder)

    @property
    def topology(self) -> CGMapping:
        """The mapping: molecule elements, atom order and bonds; bead types and order."""
        return self.mapping

    def positions(self, cg: Atoms | Sequence[Atoms]) -> np.ndarray:
        """All-atom positions (F, n_atoms, 3) Å of CG frames (checked against the mapping)."""
        beads = check_cg_frames(cg, self.mapping)
        centre = beads.mean(axis=1, keepdims=True)
        return centre + np.einsum("ab,fbx->fax", self.decoder, beads - centre)

    def reconstruct(self, cg: Atoms | Sequence[Atoms]) -> list[Atoms]:
        """One all-atom structure per CG frame (info ``cg_frame``)."""
        return [aa_atoms(x, self.mapping, cg_frame=k) for k, x in enumerate(self.positions(cg))]

    def sample(
        self, cg: Atoms | Sequence[Atoms], n_samples: int, seed: int = 0
    ) -> list[list[Atoms]]:
        """``n_samples`` identical copies of the reconstruction per CG frame (deterministic
        model; ``seed`` is accepted for the protocol and unused). Info ``cg_frame``,
        ``sample``.

        Raises:
            BackmapError: ``n_samples`` < 1 or CG frames that do not fit the mapping.
        """
        check_n_samples(n_samples)  # before any work
        return copies_per_frame(
            self.positions(cg), n_samples, partial(aa_atoms, mapping=self.mapping)
        )

    def save(
        self,
        directory: str | os.PathLike,
        name: str,
        *,
        description: str = "",
        provenance: dict[str, Any] | None = None,
        card_file: str = "card.toml",
    ) -> Path:
        """Write ``NAME.safetensors`` then the card (both atomically); return the card path."""
        import torch

        m = self.mapping
        return write_backmapper_card(
            directory,
            name,
            {"decoder": torch.from_numpy(self.decoder.copy())},
            m,
            backend=LINEAR_BACKEND,
            description=description
            or f"linear backmapper, {m.n_beads} beads ({m.scheme}) → {m.n_atoms} atoms",
            citation=LINEAR_CITATION,
            dtype="float64",
            provenance=provenance,
            card_file=card_file,
        )


def linear_from_card(card: ModelCard) -> LinearBackmapper:
    """A :class:`LinearBackmapper` from a read card (sha256-checked safetensors).

    Raises:
        CardError: no ``decoder`` tensor, or one that does not fit the card's mapping.
    """
    mapping = mapping_from_card(card)
    state = load_state_dict(card)
    if "decoder" not in state:
        raise CardError(f"{card.path}: the weights hold no 'decoder' tensor ({sorted(state)})")
    try:
        return LinearBackmapper(mapping, state["decoder"].double().numpy())
    except CardError as err:
        raise CardError(f"{card.path}: {err}") from None
