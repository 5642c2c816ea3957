"""Conformer generation: SMILES or RDKit molecules in, ASE structures out.

Modules: :mod:`.molecules` (SMILES/Mol <-> Atoms, FreeSolv selection and split),
:mod:`.build` (start geometries from the bond graph), :mod:`.search` (reference conformer
search without RDKit embedding), :mod:`.reference` (resumable driver writing reference
ensembles; folder layout), :mod:`.rmsd` (vectorised symmetry-aware RMSD, pruning),
:mod:`.generate` (ETKDG, ETKDG + relaxation, ConfVAE behind one function), :mod:`.metrics`
(COV/MAT) and :mod:`.report`; ConfVAE itself is :mod:`.confvae`.
Submodules are imported on use (RDKit and xTB load only where needed).
"""
