"""Labelled frames for the training tests: rattled argon clusters with Lennard-Jones labels.

The labels come from ASE's own ``LennardJones`` calculator (an analytic target independent of
ase_mlmd); frames carry them in a ``SinglePointCalculator`` as the dataset readers do.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator
from ase.cluster import Icosahedron

#: argon parameters (eV, Å), smoothly cut off at 8 Å
LJ_ARGON = {"epsilon": 0.0104, "sigma": 3.4, "rc": 8.0, "smooth": True}


def lj_reference() -> LennardJones:
    return LennardJones(**LJ_ARGON)


def labelled(atoms: Atoms, calc) -> Atoms:
    """A copy of ``atoms`` carrying ``calc``'s energy and forces in a SinglePointCalculator."""
    atoms = atoms.copy()
    atoms.calc = calc
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def lj_clusters(n: int, seed: int = 0, rattle: float = 0.15) -> list[Atoms]:
    """``n`` 13-atom argon icosahedra, rattled by ``rattle`` Å, labelled with LJ."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = Icosahedron("Ar", noshells=2, latticeconstant=5.26)
        atoms.rattle(rattle, rng=rng)
        frames.append(labelled(atoms, lj_reference()))
    return frames
