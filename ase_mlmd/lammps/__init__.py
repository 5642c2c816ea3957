"""Run this package's energy models inside LAMMPS, over MPI ranks (domain decomposition).

* :func:`export_mliap` (:mod:`.export`): a card or model → a LAMMPS ML-IAP "unified" model file
  (a pickle: loading it runs code, so load only trusted files);
* :mod:`.run` / ``python -m ase_mlmd.lammps run in.file --trust-model``: run a LAMMPS input whose
  ``pair_style mliap unified FILE 0`` names such a file, on 1 or more MPI ranks;
* :mod:`.inputs`: an example LAMMPS input and data file for a structure.
"""

from ase_mlmd.lammps.export import export_mliap, load_exported, prepare_mliap
from ase_mlmd.lammps.model import LammpsModel

__all__ = ["LammpsModel", "export_mliap", "load_exported", "prepare_mliap"]
