"""Backmapping: all-atom structures from CG structures (CGVAE, linear, PULCHRA).

- :mod:`ase_mlmd.backmap.base`: the :class:`Backmapper` protocol and the shared CG-frame check;
- :mod:`ase_mlmd.backmap.pairs`: (CG, all-atom) training pairs from all-atom frames + a mapping.
"""
