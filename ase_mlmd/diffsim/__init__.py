"""DiffSim: learn pair potentials from structure (RDF, VACF) by differentiating through MD.

Wang, Wu, Dietschreit, Gómez-Bombarelli, "Learning pair potentials using differentiable
simulations" (J Chem Phys 2023). Entry point: :func:`ase_mlmd.diffsim.fit.fit`; the classical
baseline is :func:`ase_mlmd.diffsim.ibi.fit_ibi`. Submodules are imported on use, so importing
this package is cheap.
"""
