"""Backbone-basin populations in the space of two CG dihedrals (issue 13, acceptance 5b).

With a learned mapping the CG dihedral pair is not (φ, ψ), so the backbone regions of
:data:`ase_mlmd.cg.evaluate.REGIONS` are carried to CG-dihedral cells through the mapped
all-atom frames (:func:`basin_populations`).
"""

from __future__ import annotations

import numpy as np


def basin_populations(
    aa_phi_psi: np.ndarray, ref_pair: np.ndarray, sim_pair: np.ndarray, bins: int = 30
) -> tuple[dict[str, float], dict[str, float], float]:
    """Backbone-region populations carried to CG-dihedral space.

    Each (bins × bins) cell of the CG dihedral pair gets the region (REGIONS of the all-atom
    φ/ψ) that most of the mapped reference frames in it belong to; a simulated frame counts for
    the region of its cell ("unassigned": a cell no reference frame visits). Returns the
    reference populations by that cell rule, the simulated ones, and the share of reference
    frames whose cell rule agrees with their own region (how well the pair resolves the regions).
    """
    from ase_mlmd.cg.evaluate import REGIONS

    names = list(REGIONS)
    own = np.full(len(aa_phi_psi), -1)
    phi_d = np.degrees(aa_phi_psi[:, 0])
    psi_d = np.degrees(aa_phi_psi[:, 1])
    for k, (_, ((lo, hi), ranges)) in enumerate(REGIONS.items()):
        inside = (phi_d >= lo) & (phi_d < hi)
        in_psi = np.zeros_like(inside)
        for a, b in ranges:
            in_psi |= (psi_d >= a) & (psi_d < b)
        own[inside & in_psi & (own < 0)] = k

    def cell(pair):
        i = np.minimum(((pair + np.pi) / (2 * np.pi) * bins).astype(int), bins - 1)
        return i[:, 0] * bins + i[:, 1]

    counts = np.zeros((bins * bins, len(names)))
    np.add.at(counts, (cell(ref_pair)[own >= 0], own[own >= 0]), 1.0)
    label = np.where(counts.sum(1) > 0, counts.argmax(1), -1)

    def pops(pair):
        lab = label[cell(pair)]
        out = {n: float(np.mean(lab == k)) for k, n in enumerate(names)}
        out["unassigned"] = float(np.mean(lab < 0))
        return out

    agree = float(np.mean(label[cell(ref_pair)][own >= 0] == own[own >= 0]))
    return pops(ref_pair), pops(sim_pair), agree
