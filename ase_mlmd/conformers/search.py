"""Reference conformer search with any ASE calculator (GFN2-xTB for the reference sets).

No RDKit embedding anywhere: the start geometry comes from the graph (:mod:`.build`), then:

1. Quench (ASE ``LBFGS`` to ``search_fmax``, eV/Å) the start with the calculator; with
   ``extended_start``, also its copy with every torsion at 180° (all-anti, planar rotors).
2. Repeat until the gradient budget is spent or ``patience`` quenches in a row found nothing
   new: pick a parent among the conformers found (Boltzmann weights at ``select_kT`` over
   their energies), turn each torsion (single, non-ring bonds between atoms with two or more
   neighbours, hydrogens counted, so OH/NH/CH3 rotors too) with probability 0.5 (at least one)
   by a random angle (a kick; redrawn while heavy atoms clash), run ``md_steps`` of Langevin MD
   at ``md_temperature`` (K) to let rings and angles move, and quench.
3. Each quenched structure must keep the molecular graph (bonds from distances: a pair is
   bonded when closer than 1.25 x the sum of covalent radii; this set must equal the graph's)
   and its stereo (CIP labels and E/Z read back with RDKit); otherwise it is dropped and
   counted as broken.
4. Kept structures are de-duplicated by the symmetry-aware heavy-atom RMSD (:mod:`.rmsd`,
   ``rmsd`` Å; the lower energy stays; energies are not a criterion). At the end those
   within ``window`` + 1 kcal/mol are quenched again to ``fmax``, checked, de-duplicated
   again, and those within ``window`` (kcal/mol) of the lowest are returned, lowest first.

Gradients are counted as calculator calls (MD steps + optimiser steps + 1 per quench).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import BaseCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.optimize import LBFGS
from rdkit import Chem

from ase_mlmd.conformers.build import (
    bonds_match,
    embed_from_graph,
    extended_geometry,
    rotate_about_bond,
    side_of_bond,
    stereo_matches,
)
from ase_mlmd.conformers.rmsd import (
    best_rmsd_matrix,
    heavy_indices,
    prune_conformers,
    symmetry_matches,
)

__all__ = ["SearchResult", "conformer_search", "graph_preserved", "quench", "torsion_bonds"]

#: eV per kcal/mol
KCAL = units.kcal / units.mol


@dataclass
class SearchResult:
    """Outcome of :func:`conformer_search`: ``positions`` [K, n_atoms, 3] (Å) and ``energies``
    [K] (eV), lowest first; counts of gradients, quenches, broken (graph or stereo changed)
    and unconverged quenches; wall time (s)."""

    positions: np.ndarray
    energies: np.ndarray
    n_gradients: int = 0
    n_quenches: int = 0
    n_broken: int = 0
    n_unconverged: int = 0
    wall_s: float = 0.0
    history: list[int] = field(default_factory=list)


def torsion_bonds(mol: Chem.Mol) -> list[tuple[int, int]]:
    """Bonds (i, j) to turn: single, in no ring, both atoms with >= 2 neighbours."""
    out = []
    for b in mol.GetBonds():
        if b.GetBondType() != Chem.BondType.SINGLE or b.IsInRing():
            continue
        i, j = b.GetBeginAtom(), b.GetEndAtom()
        if i.GetDegree() >= 2 and j.GetDegree() >= 2:
            out.append((i.GetIdx(), j.GetIdx()))
    return out


def graph_preserved(mol: Chem.Mol, positions: np.ndarray, factor: float = 1.25) -> bool:
    """True when the bonds read from distances (< ``factor`` x covalent radii sum) are exactly
    the graph's bonds, and the stereo is the molecule's."""
    if not bonds_match(mol, positions, factor):
        return False
    atoms, bonds = stereo_matches(mol, positions)
    return not atoms and not bonds


def quench(
    atoms: Atoms,
    fmax: float = 0.05,
    steps: int = 300,
    observer: Callable[[int], None] | None = None,
    interval: int = 1,
) -> tuple[float, int, bool]:
    """Optimise ``atoms`` in place (ASE LBFGS, quiet). Returns (energy eV, gradient calls,
    converged). ``observer(step)`` is called at the start (step 0) and after every
    ``interval``-th optimiser step, when ``atoms``' calculator holds the energy and forces of
    the current positions."""
    opt = LBFGS(atoms, logfile=None, maxstep=0.2)
    if observer is not None:
        opt.attach(lambda: observer(int(opt.nsteps)), interval=interval)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    return float(atoms.get_potential_energy()), int(opt.nsteps) + 1, converged


def _clash(positions: np.ndarray, heavy: np.ndarray, topo: np.ndarray) -> bool:
    p = positions[heavy]
    d = np.linalg.norm(p[:, None] - p[None], axis=-1)
    far = topo[np.ix_(heavy, heavy)] >= 3
    return bool((d[far] < 2.2).any())


def conformer_search(
    mol: Chem.Mol,
    calc: BaseCalculator,
    *,
    max_gradients: int = 250,
    patience: int = 4,
    rmsd: float = 0.25,
    window: float = 6.0,
    fmax: float = 0.05,
    search_fmax: float = 0.1,
    md_steps: int = 10,
    md_temperature: float = 800.0,
    select_kT: float = 1.5,
    max_seconds: float | None = None,
    polish_steps: int = 60,
    extended_start: bool = False,
    seed: int = 0,
) -> SearchResult:
    """Search the conformers of ``mol`` (RDKit, explicit hydrogens, stereo set) with ``calc``.

    Args:
        mol: the molecule; atom order of the result = its atom order.
        calc: an ASE calculator (e.g. ``reference_calculator("gfn2-xtb")``).
        max_gradients: budget of calculator calls of the search loop (the final quench of
            the kept conformers, at most ``polish_steps`` each, comes on top).
        patience: stop after this many quenches in a row without a new conformer.
        rmsd: duplicate threshold, heavy atoms, Å.
        window: energy window above the lowest conformer, kcal/mol.
        fmax: convergence of the final quench of the conformers kept, eV/Å.
        search_fmax: convergence of the quenches during the search, eV/Å.
        md_steps, md_temperature: Langevin MD after each torsion kick (1 fs steps, K).
        select_kT: temperature (kcal/mol) of the Boltzmann choice of the parent conformer.
        max_seconds: wall-time limit of the search loop (the final quench comes on top).
        polish_steps: most optimiser steps of the final quench of each kept conformer.
        extended_start: also quench, after the first structure, its copy with every torsion
            at 180° (:func:`~.build.extended_geometry`: all-anti chains, planar rotors).
        seed: seeds the start geometry, kicks and MD.

    See the module docstring for the procedure.
    """
    start_time = time.monotonic()
    rng = np.random.default_rng(seed)
    atoms = Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()])
    atoms.calc = calc
    heavy = heavy_indices(mol)
    matches = symmetry_matches(mol)
    topo = Chem.GetDistanceMatrix(mol)
    torsions = [(i, j, side_of_bond(mol, i, j)) for i, j in torsion_bonds(mol)]
    res = SearchResult(positions=np.zeros((0, len(atoms), 3)), energies=np.zeros(0))
    found_pos: list[np.ndarray] = []
    found_e: list[float] = []

    def add(pos: np.ndarray, energy: float) -> bool:
        if found_pos:
            dist = best_rmsd_matrix(pos[None, heavy], np.array(found_pos)[:, heavy], matches)[0]
            k = int(np.argmin(dist))
            if dist[k] <= rmsd:
                if energy < found_e[k]:
                    found_pos[k], found_e[k] = pos, energy
                return False
        found_pos.append(pos)
        found_e.append(energy)
        return True

    for _attempt in range(5):
        atoms.positions = embed_from_graph(mol, rng)
        energy, ncalls, ok = quench(atoms, search_fmax)
        res.n_gradients += ncalls
        res.n_quenches += 1
        if graph_preserved(mol, atoms.positions):
            add(atoms.positions.copy(), energy)
            break
        res.n_broken += 1
    if not found_pos:
        res.wall_s = time.monotonic() - start_time
        return res
    if extended_start and torsions:
        atoms.positions = extended_geometry(mol, found_pos[0], torsions)
        if not _clash(atoms.positions, heavy, topo):
            energy, ncalls, ok = quench(atoms, search_fmax)
            res.n_gradients += ncalls
            res.n_quenches += 1
            if graph_preserved(mol, atoms.positions):
                add(atoms.positions.copy(), energy)
            else:
                res.n_broken += 1

    since_new = 0
    deadline = start_time + (max_seconds if max_seconds is not None else np.inf)
    while res.n_gradients < max_gradients and since_new < patience:
        if time.monotonic() > deadline:
            break
        e = np.array(found_e)
        weights = np.exp(-(e - e.min()) / (select_kT * KCAL))
        parent = found_pos[rng.choice(len(e), p=weights / weights.sum())]
        pos = parent.copy()
        for _ in range(20):
            pos = parent.copy()
            turn = rng.random(len(torsions)) < 0.5
            if torsions and not turn.any():
                turn[rng.integers(len(torsions))] = True
            for (i, j, side), t in zip(torsions, turn, strict=True):
                if t:
                    pos = rotate_about_bond(pos, i, j, side, rng.uniform(-np.pi, np.pi))
            if not _clash(pos, heavy, topo):
                break
        atoms.positions = pos
        if md_steps > 0:
            MaxwellBoltzmannDistribution(atoms, temperature_K=md_temperature, rng=rng)
            dyn = Langevin(
                atoms,
                1.0 * units.fs,
                temperature_K=md_temperature,
                friction=0.02,
                fixcm=False,
                rng=rng,
            )
            dyn.run(md_steps)
            res.n_gradients += md_steps + 1
        energy, ncalls, ok = quench(atoms, search_fmax)
        res.n_gradients += ncalls
        res.n_quenches += 1
        res.n_unconverged += int(not ok)
        if not graph_preserved(mol, atoms.positions):
            res.n_broken += 1
            since_new += 1
            continue
        new = add(atoms.positions.copy(), energy)
        since_new = 0 if new else since_new + 1
        res.history.append(len(found_pos))

    # final quench of the candidates to fmax; de-duplicate and window again
    e = np.array(found_e)
    candidates = [k for k in np.argsort(e) if e[k] - e.min() <= (window + 1.0) * KCAL]
    pos_final, e_final = [], []
    for k in candidates:
        atoms.positions = found_pos[k]
        energy, ncalls, ok = quench(atoms, fmax, steps=polish_steps)
        res.n_gradients += ncalls
        res.n_unconverged += int(not ok)
        if graph_preserved(mol, atoms.positions):
            pos_final.append(atoms.positions.copy())
            e_final.append(energy)
        else:
            res.n_broken += 1
    keep = prune_conformers(
        np.array(pos_final)[:, heavy] if pos_final else np.zeros((0, len(heavy), 3)),
        e_final,
        matches,
        rmsd,
        window * KCAL,
    )
    res.positions = np.array([pos_final[k] for k in keep]).reshape(-1, len(atoms), 3)
    res.energies = np.array([e_final[k] for k in keep])
    res.wall_s = time.monotonic() - start_time
    return res
