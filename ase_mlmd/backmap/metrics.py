"""Metrics of backmapped (CG → all-atom) structures against all-atom reference frames
(METRICS.md §4; Wang et al., CGVAE, ICML 2022).

Shapes and units (all positions in Å, open boundaries, molecules whole):

- ``reference``: (F, N, 3) — the all-atom frame each CG frame was mapped from;
- ``generated``: (F, S, N, 3) — S backmapped structures per CG frame (a (F, N, 3) array is read
  as S = 1); atom ``i`` of a generated structure is atom ``i`` of the reference;
- ``numbers``: (N,) atomic numbers; ``bonds``: (n_bonds, 2) the molecule's topology bonds.

Definitions:

- **RMSD** of one structure: ``sqrt(1/n Σ_i |x_i − y_i|²)`` over the n atoms selected (all
  atoms, or heavy atoms = Z > 1), *unaligned* (no translation or rotation fit: the CG
  coordinates fix the frame). ``rmsd_recon`` is its mean over all F × S structures; with one
  deterministic reconstruction per frame (S = 1) this is CGVAE's RMSD_recon.
- **Bond graph**: atoms i ≠ j are bonded when ``d_ij < 1.3 (r_cov,i + r_cov,j)`` with ASE's
  covalent radii (``ase.data.covalent_radii``, Cordero et al. 2008; H 0.31, C 0.76, N 0.71,
  O 0.66 Å). Adjacency A is symmetric with a zero diagonal.
- **Validity**: fraction of generated structures whose bond graph equals that of their
  reference frame (over the selected atoms).
- **Graph-edit ratio**: per structure ``Σ_ij |A_ref − A_gen| / Σ_ij A_ref`` (absolute: a
  missing and an extra bond both count), averaged over structures; the *signed* form
  ``Σ_ij (A_ref − A_gen) / Σ_ij A_ref`` (CGVAE's code; a missing and an extra bond cancel) is
  reported beside it for comparison with the published table.
- **RMSD_sample** (diversity, CGVAE): mean RMSD to the reference of the *valid* generated
  structures (NaN when none is valid).
- **Steric clash**: a structure clashes when a pair of atoms more than 3 bonds apart in the
  topology graph (``bonds``) is closer than 0.8 × (r_vdW,i + r_vdW,j), with ASE's van der Waals
  radii (``ase.data.vdw_radii``, Bondi 1964 for H, C, N, O, S: H 1.20, C 1.70, N 1.55,
  O 1.52, S 1.80 Å). Clash ratio = fraction of structures that clash. The threshold also
  catches hydrogen bonds (H···O 2.0 Å < 2.18 Å) and close 1–5 H···H contacts: 7.5 % of 200
  alanine-dipeptide MD frames at 300 K "clash", so the reference frames' ratio is reported
  beside it as the floor.
- **Bond lengths / angles**: over the topology bonds and the angles i–j–k they form.
  ``bond_mae`` = mean |d_gen − d_ref| (Å) paired frame by frame and bond by bond;
  ``bond_js`` = Jensen–Shannon divergence (natural log, 0 … ln 2) of the pooled bond-length
  histograms (bins of 0.01 Å on 0.5 … 3 Å); ``angle_mae`` (degrees) and ``angle_js`` (bins of
  1° on 0 … 180°) likewise.
- **Energy**: potential energy under the reference force field (OpenMM, no constraints) of
  each generated structure minus that of its reference frame, kJ/mol
  (:func:`openmm_energies`); summarised by the median and the 90th percentile (clashing
  structures have energies many orders above, which a mean would report instead).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase.data import covalent_radii, vdw_radii
from scipy.sparse import csgraph, csr_array

from ase_mlmd.errors import IncompatibleTrajectoriesError, InvalidStructureError
from ase_mlmd.observables.internal import (
    compute_bond_angles,
    compute_bond_lengths,
    histogram,
    js_divergence,
)

#: bond-graph threshold factor on the sum of covalent radii (METRICS.md §4)
BOND_FACTOR = 1.3
#: clash threshold factor on the sum of van der Waals radii (METRICS.md §4)
CLASH_FACTOR = 0.8
#: pairs at most this many bonds apart are never counted as clashes
CLASH_MIN_SEPARATION = 3
#: histogram bins of the distribution errors
BOND_EDGES = np.arange(0.5, 3.0 + 1e-9, 0.01)
ANGLE_EDGES_DEG = np.arange(0.0, 180.0 + 1e-9, 1.0)

__all__ = [
    "adjacency",
    "angle_triples",
    "backmap_metrics",
    "bond_separation",
    "clash_mask",
    "clash_pairs",
    "valid_and_clashing",
    "graph_edit",
    "internal_errors",
    "openmm_energies",
    "rmsd",
    "select_atoms",
    "subset_bonds",
]


def as_samples(reference: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``reference`` (F, N, 3) and ``generated`` as (F, S, N, 3), both float64, checked.

    Raises:
        IncompatibleTrajectoriesError: other frame or atom counts.
        InvalidStructureError: NaN or infinite coordinates, or no frames.
    """
    ref = np.asarray(reference, dtype=np.float64)
    gen = np.asarray(generated, dtype=np.float64)
    if gen.ndim == 3:
        gen = gen[:, None]
    if ref.ndim != 3 or ref.shape[-1] != 3 or gen.ndim != 4 or gen.shape[-1] != 3:
        raise IncompatibleTrajectoriesError(
            f"reference must be (F, N, 3) and generated (F, S, N, 3) or (F, N, 3); got "
            f"{ref.shape} and {np.shape(generated)}"
        )
    if len(ref) == 0 or gen.shape[1] == 0:
        raise InvalidStructureError("no frames to compare: give at least one structure")
    if gen.shape[0] != ref.shape[0] or gen.shape[2] != ref.shape[1]:
        raise IncompatibleTrajectoriesError(
            f"{ref.shape[0]} reference frames of {ref.shape[1]} atoms but {gen.shape[0]} "
            f"generated frames of {gen.shape[2]} atoms; pair each generated structure with the "
            "reference frame its CG frame came from"
        )
    for name, array in (("reference", ref), ("generated", gen)):
        if not np.isfinite(array).all():
            raise InvalidStructureError(f"the {name} coordinates contain NaN or inf")
    return ref, gen


def select_atoms(numbers: np.ndarray, heavy: bool) -> np.ndarray:
    """Indices of the atoms compared: all, or the heavy atoms (Z > 1)."""
    numbers = np.asarray(numbers, dtype=int)
    return np.flatnonzero(numbers > 1) if heavy else np.arange(len(numbers))


def rmsd(reference: np.ndarray, generated: np.ndarray, atoms: np.ndarray | None = None):
    """Unaligned RMSD (F, S), Å, of each generated structure to its reference frame over the
    atom indices ``atoms`` (default all)."""
    ref, gen = as_samples(reference, generated)
    if atoms is not None:
        ref, gen = ref[:, atoms], gen[:, :, atoms]
    return np.sqrt(((gen - ref[:, None]) ** 2).sum(-1).mean(-1))


def adjacency(positions: np.ndarray, numbers: np.ndarray, factor: float = BOND_FACTOR):
    """Bond-graph adjacency (..., N, N) bool of positions (..., N, 3) Å: d_ij < factor ×
    (r_cov,i + r_cov,j) with ``ase.data.covalent_radii``; zero diagonal."""
    positions = np.asarray(positions, dtype=np.float64)
    radii = covalent_radii[np.asarray(numbers, dtype=int)]
    cutoff = factor * (radii[:, None] + radii[None, :])
    d = np.linalg.norm(positions[..., :, None, :] - positions[..., None, :, :], axis=-1)
    a = d < cutoff
    a[..., np.arange(len(radii)), np.arange(len(radii))] = False
    return a


def graph_edit(reference: np.ndarray, generated: np.ndarray, numbers: np.ndarray, atoms=None):
    """Per-structure bond-graph comparison of generated structures with their reference.

    Returns:
        ``(valid, absolute, signed)``, each (F, S): whether the graphs are equal, the absolute
        graph-edit ratio Σ|A_ref − A_gen| / ΣA_ref and the signed Σ(A_ref − A_gen) / ΣA_ref,
        over the atom indices ``atoms`` (default all).
    """
    ref, gen = as_samples(reference, generated)
    numbers = np.asarray(numbers, dtype=int)
    if atoms is not None:
        ref, gen, numbers = ref[:, atoms], gen[:, :, atoms], numbers[atoms]
    a_ref = adjacency(ref, numbers)[:, None].astype(np.int64)  # (F, 1, n, n)
    a_gen = adjacency(gen, numbers).astype(np.int64)  # (F, S, n, n)
    n_ref = np.maximum(a_ref.sum((-1, -2)), 1)
    diff = a_ref - a_gen
    edits = np.abs(diff).sum((-1, -2))
    return edits == 0, edits / n_ref, diff.sum((-1, -2)) / n_ref


def bond_separation(n_atoms: int, bonds: np.ndarray) -> np.ndarray:
    """(N, N) number of bonds on the shortest path between atoms (``inf`` when unconnected)."""
    bonds = np.asarray(bonds, dtype=int).reshape(-1, 2)
    graph = csr_array((np.ones(len(bonds)), (bonds[:, 0], bonds[:, 1])), shape=(n_atoms, n_atoms))
    return csgraph.shortest_path(graph, directed=False, unweighted=True)


def clash_pairs(
    numbers: np.ndarray,
    bonds: np.ndarray,
    factor: float = CLASH_FACTOR,
    min_separation: int = CLASH_MIN_SEPARATION,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs the clash rule looks at: atoms ``i < j`` more than ``min_separation`` bonds
    apart (topology ``bonds``) and their thresholds ``factor`` × (r_vdW,i + r_vdW,j), Å
    (``ase.data.vdw_radii``); (P,), (P,), (P,).

    Raises:
        InvalidStructureError: an element without a van der Waals radius in ASE.
    """
    numbers = np.asarray(numbers, dtype=int)
    radii = vdw_radii[numbers]
    if np.isnan(radii).any():
        raise InvalidStructureError(
            f"ASE has no van der Waals radius for element(s) "
            f"{sorted(set(numbers[np.isnan(radii)].tolist()))}; clashes cannot be judged"
        )
    far = bond_separation(len(numbers), bonds) > min_separation
    i, j = np.nonzero(np.triu(far, 1))
    return i, j, factor * (radii[i] + radii[j])


def clash_mask(
    generated: np.ndarray,
    numbers: np.ndarray,
    bonds: np.ndarray,
    factor: float = CLASH_FACTOR,
    min_separation: int = CLASH_MIN_SEPARATION,
) -> np.ndarray:
    """(F, S) whether each structure has a pair of atoms more than ``min_separation`` bonds
    apart (topology ``bonds``) closer than ``factor`` × (r_vdW,i + r_vdW,j)
    (``ase.data.vdw_radii``). ``generated`` is (F, S, N, 3) or (F, N, 3) Å."""
    gen = np.asarray(generated, dtype=np.float64)
    if gen.ndim == 3:
        gen = gen[:, None]
    i, j, limit = clash_pairs(numbers, bonds, factor, min_separation)
    d = np.linalg.norm(gen[..., i, :] - gen[..., j, :], axis=-1)
    return (d < limit).any(-1)


def valid_and_clashing(
    positions: np.ndarray, numbers: np.ndarray, bonds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per structure of positions (F, N, 3) Å: whether its bond graph (:func:`adjacency`)
    equals the topology's ``bonds`` exactly, and whether it clashes (:func:`clash_mask`);
    two (F,) bool arrays."""
    n = len(numbers)
    bonds = np.asarray(bonds, dtype=int).reshape(-1, 2)
    topology = np.zeros((n, n), bool)
    topology[bonds[:, 0], bonds[:, 1]] = topology[bonds[:, 1], bonds[:, 0]] = True
    valid = np.array([np.array_equal(adjacency(x, numbers), topology) for x in positions])
    return valid, clash_mask(positions, numbers, bonds)[:, 0]


def subset_bonds(bonds: np.ndarray, atoms: np.ndarray, n_atoms: int) -> np.ndarray:
    """The bonds (n, 2) among the atom indices ``atoms``, renumbered to positions in
    ``atoms`` (bonds to other atoms dropped)."""
    new = np.full(n_atoms, -1)
    new[np.asarray(atoms, dtype=int)] = np.arange(len(atoms))
    mapped = new[np.asarray(bonds, dtype=int).reshape(-1, 2)]
    return mapped[(mapped >= 0).all(axis=1)]


def angle_triples(bonds: np.ndarray) -> np.ndarray:
    """(n_angles, 3) triples i–j–k (i < k) of bonds sharing the apex atom j."""
    bonds = np.asarray(bonds, dtype=int).reshape(-1, 2)
    neighbours: dict[int, list[int]] = {}
    for a, b in bonds:
        neighbours.setdefault(int(a), []).append(int(b))
        neighbours.setdefault(int(b), []).append(int(a))
    triples = [
        (i, j, k)
        for j, partners in sorted(neighbours.items())
        for x, i in enumerate(sorted(partners))
        for k in sorted(partners)[x + 1 :]
    ]
    return np.array(triples, dtype=int).reshape(-1, 3)


def internal_errors(reference: np.ndarray, generated: np.ndarray, bonds: np.ndarray) -> dict:
    """Bond-length and angle errors of generated structures over the topology ``bonds``.

    Returns:
        ``bond_mae`` (Å) and ``angle_mae`` (degrees): mean |value_gen − value_ref| paired by
        frame and bond/angle; ``bond_js`` and ``angle_js``: JS divergence of the pooled
        histograms (see the module docstring for the bins).
    """
    ref, gen = as_samples(reference, generated)
    f, s, n, _ = gen.shape
    flat = gen.reshape(f * s, n, 3)
    triples = angle_triples(bonds)
    d_ref = compute_bond_lengths(ref, bonds)  # (F, B)
    d_gen = compute_bond_lengths(flat, bonds).reshape(f, s, -1)
    a_ref = np.degrees(compute_bond_angles(ref, triples))
    a_gen = np.degrees(compute_bond_angles(flat, triples)).reshape(f, s, -1)
    out = {
        "bond_mae": float(np.abs(d_gen - d_ref[:, None]).mean()),
        "bond_js": js_divergence(histogram(d_ref, BOND_EDGES), histogram(d_gen, BOND_EDGES)),
        "angle_mae": float(np.abs(a_gen - a_ref[:, None]).mean()) if len(triples) else np.nan,
        "angle_js": np.nan,
    }
    if len(triples):
        out["angle_js"] = js_divergence(
            histogram(a_ref, ANGLE_EDGES_DEG), histogram(a_gen, ANGLE_EDGES_DEG)
        )
    return out


def openmm_energies(system, positions: np.ndarray, platform: str = "CPU") -> np.ndarray:
    """Potential energies (M,) kJ/mol of positions (M, N, 3) Å under an OpenMM ``System``
    (build it without constraints so any positions are evaluated as they are)."""
    import openmm
    from openmm import unit

    from ase_mlmd.data.openmm_reference import _platform

    positions = np.asarray(positions, dtype=np.float64).reshape(-1, system.getNumParticles(), 3)
    integrator = openmm.VerletIntegrator(0.001)  # never stepped: a context needs one
    properties = {"Threads": "1"} if platform == "CPU" else {}
    context = openmm.Context(system, integrator, _platform(platform), properties)
    out = np.empty(len(positions))
    for k, x in enumerate(positions):
        context.setPositions(unit.Quantity(x / 10.0, unit.nanometer))
        energy = context.getState(getEnergy=True).getPotentialEnergy()
        out[k] = energy.value_in_unit(unit.kilojoule_per_mole)
    return out


def backmap_metrics(
    reference: np.ndarray,
    generated: np.ndarray,
    numbers: np.ndarray,
    bonds: np.ndarray,
    *,
    system=None,
    energy_frames: int | None = 200,
) -> dict[str, float]:
    """All METRICS §4 metrics of ``generated`` (F, S, N, 3) against ``reference`` (F, N, 3).

    Keys: ``n_frames``, ``n_samples``; ``rmsd_all``, ``rmsd_heavy`` (mean unaligned RMSD,
    Å); ``rmsd_best_heavy`` (best of the S samples per frame, averaged); ``validity_all``,
    ``validity_heavy``; ``ged_all``, ``ged_heavy`` (absolute graph-edit ratio) and
    ``ged_signed_all``, ``ged_signed_heavy``; ``rmsd_sample_heavy`` (mean RMSD of valid
    heavy-atom samples, NaN if none); ``clash_ratio`` and ``clash_ratio_reference`` (the same
    test on the reference frames: the floor, since hydrogen bonds and 1–5 H···H contacts of
    MD frames can fall below the threshold), ``clash_ratio_heavy`` and
    ``clash_ratio_heavy_reference`` (the same among heavy atoms only, hydrogens ignored:
    comparable with heavy-atom-only backmappers such as PULCHRA); ``valid_clash_free``
    (fraction valid over all atoms and clash-free); ``bond_mae``, ``bond_js``, ``angle_mae``,
    ``angle_js``; and, with an OpenMM ``system``, ``energy_median`` and ``energy_p90``
    (kJ/mol, generated minus reference, over the first ``energy_frames`` frames, all samples;
    None: all frames).
    """
    ref, gen = as_samples(reference, generated)
    numbers = np.asarray(numbers, dtype=int)
    if len(numbers) != ref.shape[1]:
        raise IncompatibleTrajectoriesError(
            f"{len(numbers)} atomic numbers for structures of {ref.shape[1]} atoms"
        )
    heavy = select_atoms(numbers, heavy=True)
    out: dict[str, float] = {"n_frames": ref.shape[0], "n_samples": gen.shape[1]}
    r_all, r_heavy = rmsd(ref, gen), rmsd(ref, gen, heavy)
    out["rmsd_all"], out["rmsd_heavy"] = float(r_all.mean()), float(r_heavy.mean())
    out["rmsd_best_heavy"] = float(r_heavy.min(axis=1).mean())
    valid = {}
    for name, atoms in (("all", None), ("heavy", heavy)):
        valid[name], absolute, signed = graph_edit(ref, gen, numbers, atoms)
        out[f"validity_{name}"] = float(valid[name].mean())
        out[f"ged_{name}"] = float(absolute.mean())
        out[f"ged_signed_{name}"] = float(signed.mean())
    ok = valid["heavy"]
    out["rmsd_sample_heavy"] = float(r_heavy[ok].mean()) if ok.any() else float("nan")
    clashes = clash_mask(gen, numbers, bonds)
    out["clash_ratio"] = float(clashes.mean())
    out["clash_ratio_reference"] = float(clash_mask(ref, numbers, bonds).mean())
    heavy_bonds = subset_bonds(bonds, heavy, len(numbers))
    heavy_clash = clash_mask(gen[:, :, heavy], numbers[heavy], heavy_bonds)
    out["clash_ratio_heavy"] = float(heavy_clash.mean())
    out["clash_ratio_heavy_reference"] = float(
        clash_mask(ref[:, heavy], numbers[heavy], heavy_bonds).mean()
    )
    out["valid_clash_free"] = float((valid["all"] & ~clashes).mean())
    out.update(internal_errors(ref, gen, bonds))
    if system is not None:
        k = len(ref) if energy_frames is None else min(len(ref), energy_frames)
        e_ref = openmm_energies(system, ref[:k])
        e_gen = openmm_energies(system, gen[:k]).reshape(k, -1)
        delta = e_gen - e_ref[:, None]
        out["energy_median"] = float(np.median(delta))
        out["energy_p90"] = float(np.percentile(delta, 90))
    return out


def metric_names(keys: Sequence[str]) -> list[str]:
    """``keys`` in the order of the report table (known metrics first)."""
    order = [
        "n_frames", "n_samples", "rmsd_heavy", "rmsd_all", "rmsd_best_heavy",
        "rmsd_sample_heavy", "validity_heavy", "validity_all", "ged_heavy", "ged_signed_heavy",
        "ged_all", "ged_signed_all", "clash_ratio", "clash_ratio_reference",
        "clash_ratio_heavy", "clash_ratio_heavy_reference",
        "valid_clash_free", "bond_mae", "bond_js", "angle_mae", "angle_js", "energy_median",
        "energy_p90",
    ]  # fmt: skip
    return [k for k in order if k in keys] + [k for k in keys if k not in order]
