"""Conformer generation: SMILES or RDKit molecules in, ASE structures out.

Modules: :mod:`.molecules` (SMILES/Mol <-> Atoms, FreeSolv selection and split),
:mod:`.search` (GFN2-xTB reference conformer search without RDKit embedding),
:mod:`.reference` (resumable driver writing reference ensembles), :mod:`.generate`
(ETKDG, ETKDG + relaxation, ConfVAE behind one function), :mod:`.metrics` (COV/MAT).
Submodules are imported on use (RDKit and xTB load only where needed).
"""
