"""Coarse-graining: mappings (fixed and learned), CG data, CG force fields, CG MD evaluation.

A CG structure is an ordinary ASE ``Atoms`` whose "atoms" are beads:

- ``atoms.arrays["bead_type"]``: (n_beads,) str, the bead type name of each bead;
- ``atoms.numbers``: a pseudo atomic number per bead, ``1 + index`` of its bead type in the
  ordered type list (so neighbor lists, models and species maps see one species per type);
- ``atoms.info["bead_types"]``: that ordered type list as one space-separated string
  (``"C N CA"``), so numbers and names convert both ways after an extxyz round trip;
- masses: the summed masses of the mapped atoms; cell and pbc: those of the all-atom structure.

``ase_mlmd.beads`` holds the helpers that build and check this representation.
"""
