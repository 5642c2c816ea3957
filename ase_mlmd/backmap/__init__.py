"""Backmapping: all-atom structures from CG structures (CGVAE, linear, PULCHRA).

- :mod:`ase_mlmd.backmap.base`: the :class:`Backmapper` protocol (``sample``, ``reconstruct``,
  ``topology``) and the shared check of CG frames against a mapping;
- :mod:`ase_mlmd.backmap.pairs`: (CG, all-atom) training pairs from all-atom frames + a mapping;
- :mod:`ase_mlmd.backmap.cgvae` (+ ``cgvae_layers``): the CGVAE model and its backmapper;
- :mod:`ase_mlmd.backmap.train`: training (split, EMA, early stopping, checkpoint/resume);
- :mod:`ase_mlmd.backmap.card`: cards, and :func:`load_backmapper` for every backend;
- :mod:`ase_mlmd.backmap.linear`, :mod:`ase_mlmd.backmap.pulchra`: the baselines (PULCHRA:
  protein Cα traces, heavy atoms; :mod:`ase_mlmd.backmap.hydrogens` adds hydrogens with OpenMM).

``from ase_mlmd.backmap import load_backmapper`` works too (imported on first use).
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_backmapper"]


def __getattr__(name: str) -> Any:
    if name == "load_backmapper":
        from ase_mlmd.backmap.card import load_backmapper

        return load_backmapper
    raise AttributeError(f"module 'ase_mlmd.backmap' has no attribute {name!r}")
