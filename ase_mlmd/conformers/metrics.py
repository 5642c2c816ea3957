"""Coverage and matching of generated conformers against reference ensembles (METRICS §5).

For one molecule with K reference and G generated conformers, D[k, g] is the symmetry-aware
heavy-atom RMSD after superposition (RDKit ``GetBestRMS`` definition, :mod:`.rmsd`), Å:

* COV-R(δ) = fraction of references with min_g D[k, g] <= δ   (recall: is each found?)
* MAT-R    = mean over references of min_g D[k, g]
* COV-P(δ) = fraction of generated with min_k D[k, g] <= δ    (precision: is each real?)
* MAT-P    = mean over generated of min_k D[k, g]

with δ = 0.5 Å by default and G = 2K in the protocol (the caller generates 2K). Mean and
median over molecules come from :func:`summarize`. The energy measure,
:func:`energy_above_reference`, compares generated conformers relaxed with the reference
method with the reference ensemble's minimum (kcal/mol).

Generated structures may list atoms in another order than the references (e.g. generated
from another SMILES of the molecule): the heavy atoms are matched to the reference graph first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from ase import Atoms
from rdkit import Chem

from ase_mlmd.conformers.molecules import atoms_to_mol
from ase_mlmd.conformers.rmsd import best_rmsd_matrix, heavy_indices, symmetry_matches
from ase_mlmd.conformers.search import KCAL
from ase_mlmd.errors import DataFormatError

__all__ = [
    "BOND_TOLERANCE",
    "DELTA",
    "METRIC_NAMES",
    "bond_deviation",
    "coverage_matching",
    "energy_above_reference",
    "evaluate_molecule",
    "evaluate_sets",
    "rmsd_matrix",
    "summarize",
]

#: COV threshold, Å (GEOM-QM9 protocols)
DELTA = 0.5
#: per-molecule metrics summarized over molecules
METRIC_NAMES = ("cov_r", "mat_r", "cov_p", "mat_p")
#: a bond this much (Å) longer or shorter than in the reference counts as distorted
BOND_TOLERANCE = 0.2


def coverage_matching(dist: np.ndarray, delta: float = DELTA) -> dict[str, float]:
    """COV-R, MAT-R, COV-P, MAT-P from an RMSD matrix [K references, G generated] (Å)."""
    dist = np.asarray(dist, dtype=float)
    if dist.ndim != 2 or 0 in dist.shape:
        raise ValueError(f"need a non-empty [K, G] RMSD matrix, got shape {dist.shape}")
    to_gen = dist.min(axis=1)
    to_ref = dist.min(axis=0)
    return {
        "cov_r": float((to_gen <= delta).mean()),
        "mat_r": float(to_gen.mean()),
        "cov_p": float((to_ref <= delta).mean()),
        "mat_p": float(to_ref.mean()),
    }


def _heavy_graph(mol: Chem.Mol) -> Chem.Mol:
    return Chem.RemoveHs(mol, sanitize=False)


def rmsd_matrix(reference: Sequence[Atoms], generated: Sequence[Atoms]) -> np.ndarray:
    """Symmetry-aware heavy-atom RMSD [K, G] (Å) between two sets of the same molecule.

    Raises:
        DataFormatError: the generated structures are another molecule than the references.
    """
    ref_mol = atoms_to_mol(reference)
    gen_mol = atoms_to_mol(generated)
    ref_heavy, gen_heavy = heavy_indices(ref_mol), heavy_indices(gen_mol)
    ref_graph, gen_graph = _heavy_graph(ref_mol), _heavy_graph(gen_mol)
    match = ref_graph.GetSubstructMatch(gen_graph, useChirality=False)
    if len(match) != ref_graph.GetNumAtoms() or gen_graph.GetNumAtoms() != len(match):
        raise DataFormatError(
            f"generated structures ({Chem.MolToSmiles(gen_graph)}) are not the reference "
            f"molecule ({Chem.MolToSmiles(ref_graph)})"
        )
    # generated heavy atom g corresponds to reference heavy atom match[g]
    order = np.argsort(np.asarray(match))
    ref_xyz = np.array([a.positions[ref_heavy] for a in reference])
    gen_xyz = np.array([a.positions[gen_heavy][order] for a in generated])
    return best_rmsd_matrix(ref_xyz, gen_xyz, symmetry_matches(ref_mol))


def evaluate_molecule(
    reference: Sequence[Atoms], generated: Sequence[Atoms], delta: float = DELTA
) -> dict[str, float]:
    """COV/MAT (see the module docstring) plus ``n_ref`` and ``n_gen`` for one molecule."""
    out = coverage_matching(rmsd_matrix(reference, generated), delta)
    return {**out, "n_ref": len(reference), "n_gen": len(generated)}


def energy_above_reference(
    relaxed_energies: Sequence[float], reference_energies: Sequence[float]
) -> dict[str, float]:
    """Energies (eV in) of generated conformers after relaxation with the reference method,
    relative to the reference minimum, kcal/mol: ``e_min`` (lowest generated; < 0 when the
    generator found a lower minimum than the reference search), ``e_mean``, ``e_median``."""
    rel = (np.asarray(relaxed_energies, dtype=float) - np.min(reference_energies)) / KCAL
    return {
        "e_min": float(rel.min()),
        "e_mean": float(rel.mean()),
        "e_median": float(np.median(rel)),
    }


def evaluate_sets(
    reference: Mapping[str, Sequence[Atoms]],
    generated: Mapping[str, Sequence[Atoms]],
    delta: float = DELTA,
) -> list[dict]:
    """Per-molecule rows (``id`` + :func:`evaluate_molecule`) for every reference molecule
    with generated structures; molecules without any are listed with ``missing=True``.

    Raises:
        DataFormatError: no reference molecule has generated structures.
    """
    rows = []
    for mol_id, ref in reference.items():
        gen = generated.get(mol_id)
        if not gen:
            rows.append({"id": mol_id, "missing": True})
            continue
        rows.append({"id": mol_id, "missing": False, **evaluate_molecule(ref, gen, delta)})
    if not any(not r["missing"] for r in rows):
        raise DataFormatError(
            "no generated structures for any reference molecule: generated files must be named "
            "like the references (<id>.extxyz)"
        )
    return rows


def summarize(rows: Sequence[Mapping], names: Sequence[str] = METRIC_NAMES) -> dict[str, float]:
    """Mean and median over molecules (``<name>_mean``, ``<name>_median``) of each metric in
    ``names`` present in the rows (missing molecules skipped); ``n_molecules``."""
    present = [r for r in rows if not r.get("missing")]
    out: dict[str, float] = {"n_molecules": len(present)}
    for name in names:
        values = np.array([r[name] for r in present if name in r], dtype=float)
        if len(values):
            out[f"{name}_mean"] = float(values.mean())
            out[f"{name}_median"] = float(np.median(values))
    return out


def bond_deviation(mol: Chem.Mol, positions: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Worst bond-length error of each structure, Å: ``max_bonds | |x_i - x_j| - |r_i - r_j| |``.

    Args:
        mol: the molecule (its bonds; atom order of the coordinates).
        positions: structures (m, N, 3), Å.
        reference: one reference structure (N, 3), Å (e.g. the lowest reference conformer).

    Returns:
        (m,) Å; 0 for a molecule without bonds.
    """
    pairs = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()], int)
    positions = np.asarray(positions, dtype=float).reshape(-1, mol.GetNumAtoms(), 3)
    if not len(pairs):
        return np.zeros(len(positions))
    length = np.linalg.norm(positions[:, pairs[:, 0]] - positions[:, pairs[:, 1]], axis=-1)
    ref = np.linalg.norm(reference[pairs[:, 0]] - reference[pairs[:, 1]], axis=-1)
    return np.abs(length - ref).max(axis=1)
