"""The prior topology of the learned 6-bead alanine-dipeptide mapping (issue 13, acceptance 5b).

The learned beads are not a chain: bead 2 is a hub and the single-H bead 5 (the NME H-N)
turns with ψ, so some bond angles at the hub are not one harmonic well — the angle 0-2-5 has a
long tail to small angles whose Boltzmann-inverted profile has no minimum
(:func:`ase_mlmd.cg.priors.fit_harmonic` raises), and 1-0-2 and 3-2-5 are bimodal. A harmonic
prior on such an angle either cannot be fitted or penalises one backbone basin. This helper
keeps in the prior only the angles whose profile has a harmonic minimum on the training
frames; a dropped angle is left to the network, and the repulsion wall between beads more
than one bond apart (``PriorSettings(exclusion=1)``: σ = the closest approach seen in the
data, ε = kT) keeps its end beads from overlapping where the data never went.
"""

from __future__ import annotations

import numpy as np

from ase_mlmd.cg.priors import PriorSettings, fit_harmonic
from ase_mlmd.cg.topology import CGTopology
from ase_mlmd.errors import DataFormatError
from ase_mlmd.observables.internal import compute_bond_angles

#: k_B in eV/K
KB = 8.617333262e-5


def harmonic_angle_topology(
    topology: CGTopology, positions: np.ndarray, settings: PriorSettings
) -> tuple[CGTopology, list[list[int]]]:
    """``topology`` without the angles that have no harmonic Boltzmann-inverted minimum.

    Args:
        topology: the mapping's bead topology.
        positions: (T, n_beads, 3) training frames, Å.
        settings: the prior settings (temperature, bins, min_count of the fit).

    Returns:
        The topology with the fittable angles (bonds and dihedrals unchanged) and the dropped
        angles as bead triples.
    """
    theta = compute_bond_angles(positions, topology.angles)
    kT = KB * settings.temperature_K
    keep, dropped = [], []
    for t, angle in enumerate(topology.angles):
        try:
            fit_harmonic(theta[:, t], kT, "sin", bins=settings.bins, min_count=settings.min_count)
            keep.append(angle)
        except DataFormatError:
            dropped.append([int(i) for i in angle])
    angles = np.array(keep, dtype=int).reshape(-1, 3)
    return CGTopology(topology.bead_types, topology.bonds, angles, topology.dihedrals), dropped
