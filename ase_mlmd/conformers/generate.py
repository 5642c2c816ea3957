"""Conformer generation behind one function: ETKDG, ETKDG + relaxation, ConfVAE.

>>> confs = generate_conformers("CCCCO", 10, method="etkdg+relax")  # doctest: +SKIP
>>> confs[0].get_potential_energy(), confs[0].info["rel_energy_kcal"]  # doctest: +SKIP

Methods:

* ``etkdg``: RDKit's ETKDGv3 (``EmbedMultipleConfs``, ``randomSeed=seed + 1``: RDKit's seed 0
  gives ``n`` identical embeddings), ``n`` embeddings, no energies. Pruned by RMSD only when
  ``prune_rmsd`` is given.
* ``etkdg+relax``: the ``n`` ETKDG embeddings relaxed with ``calc`` (an ASE calculator, a
  reference name such as ``gfn2-xtb``, or a model card; default ``gfn2-xtb``) to ``fmax``
  (eV/Å); structures whose bonds or stereo changed are dropped; then pruned by the
  symmetry-aware heavy-atom RMSD (``prune_rmsd``, default 0.25 Å, lower energy kept) and an
  energy window (``window`` kcal/mol above the lowest, default 6) — the same thresholds as the
  reference search (:mod:`.search`). Lowest energy first; each with its energy.
* ``confvae``: samples of a trained ConfVAE (``model`` = its card), through
  ``ase_mlmd.conformers.confvae.sample_conformers(card_path, mol, n, seed)``; with
  ``relax=True`` (or a ``calc`` given) the ``n`` samples are relaxed and pruned exactly as
  ``etkdg+relax``'s embeddings (same calculator choice, checks, pruning and energy window;
  ``info["method"] = "confvae+relax(NAME)"``).

Every structure keeps the atom order of ``Chem.AddHs(mol)`` and carries ``info["smiles"]``,
``info["mapped_smiles"]`` (bonds), ``info["method"]`` (see :mod:`.molecules`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator, CalculationFailed
from ase.calculators.singlepoint import SinglePointCalculator
from rdkit import Chem
from rdkit.Chem import AllChem

from ase_mlmd.conformers.molecules import mol_from_smiles, mol_to_atoms, with_positions
from ase_mlmd.conformers.rmsd import heavy_indices, prune_conformers, symmetry_matches
from ase_mlmd.conformers.search import KCAL, graph_preserved, quench
from ase_mlmd.errors import ConformerRequestError

__all__ = ["METHODS", "as_molecule", "embed_etkdg", "generate_conformers", "relax_conformers"]

#: default duplicate threshold of relaxed conformers (Å, heavy atoms; as the reference search)
RELAX_PRUNE_RMSD = 0.25

#: generation methods (``confvae`` needs a trained model card)
METHODS = ("etkdg", "etkdg+relax", "confvae")


def as_molecule(mol_or_smiles: Chem.Mol | str, source: str | None = None) -> Chem.Mol:
    """An RDKit molecule with explicit hydrogens from a SMILES (see
    :func:`~.molecules.mol_from_smiles` for salts and stereo) or a ``Mol`` (hydrogens added
    when it has none; its atom order kept)."""
    if isinstance(mol_or_smiles, str):
        return mol_from_smiles(mol_or_smiles, source=source)
    mol = Chem.Mol(mol_or_smiles)
    if any(a.GetTotalNumHs() > 0 for a in mol.GetAtoms()):
        mol = Chem.AddHs(mol)
    return mol


def embed_etkdg(mol: Chem.Mol, n: int, seed: int = 0) -> np.ndarray:
    """``n`` ETKDGv3 embeddings of ``mol``: positions [m, n_atoms, 3] (Å), m <= n (RDKit may
    fail some). Raises :class:`ConformerRequestError` when none embeds."""
    params = AllChem.ETKDGv3()
    if seed < 0:
        raise ConformerRequestError(f"the seed must be >= 0 (--seed), got {seed}")
    params.randomSeed = int(seed) + 1  # RDKit's randomSeed=0 repeats one embedding
    params.numThreads = 1
    work = Chem.Mol(mol)
    ids = list(AllChem.EmbedMultipleConfs(work, numConfs=int(n), params=params))
    if not ids:
        raise ConformerRequestError(
            f"RDKit could not embed {Chem.MolToSmiles(Chem.RemoveHs(mol))} (ETKDG); try "
            "another seed or check the molecule"
        )
    return np.array([work.GetConformer(i).GetPositions() for i in ids])


def _calculator(calc: BaseCalculator | str | None) -> BaseCalculator:
    if calc is None or isinstance(calc, str):
        from ase_mlmd.data.reference import reference_calculator

        return reference_calculator(calc or "gfn2-xtb")
    return calc


def relax_conformers(
    mol: Chem.Mol,
    positions: np.ndarray,
    calc: BaseCalculator | str | None = None,
    fmax: float = 0.05,
    steps: int = 300,
    on_frame: Callable[[Atoms], None] | None = None,
    frame_every: int = 5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relax each structure [m, n_atoms, 3] with ``calc``. Returns (positions [k, n_atoms, 3],
    energies [k] eV, kept [k] indices into the input): structures whose bonds or stereo
    changed during relaxation are left out, and so are those the calculator fails on (ASE's
    ``CalculationFailed``, e.g. a GFN2-xTB SCF that does not converge for a distorted start).

    ``on_frame`` receives labelled frames along every relaxation (training data for an ML
    force field): the start, every ``frame_every``-th optimiser step and the last structure,
    each an ``Atoms`` with the calculator's energy (eV) and forces (eV/Å) attached (a
    single-point calculator) and ``info`` ``relax_start`` (index into ``positions``),
    ``relax_step`` and ``relax_last`` (True on the last frame of a relaxation). Frames of
    relaxations that later break a bond or fail are passed too (their labels are valid).

    Raises:
        UnsupportedSpeciesError: ``calc`` cannot handle an element of ``mol``.
        ConformerRequestError: ``frame_every`` < 1.
    """
    from ase_mlmd.data.reference import check_species

    if on_frame is not None and (int(frame_every) != frame_every or frame_every < 1):
        raise ConformerRequestError(
            f"the relaxation frame interval must be >= 1 (--relax-every), got {frame_every}"
        )
    calc = _calculator(calc)
    atoms = Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()])
    smiles = Chem.MolToSmiles(Chem.RemoveHs(mol))
    check_species(calc, atoms, where=f"molecule {smiles}")
    atoms.calc = calc
    out_pos, out_e, kept = [], [], []
    for k, pos in enumerate(positions):
        atoms.positions = pos
        record = None if on_frame is None else _FrameRecorder(atoms, k, on_frame)
        try:
            energy, ncalls, _ = quench(
                atoms, fmax, steps, observer=record, interval=int(frame_every)
            )
        except CalculationFailed:
            calc.reset()  # no start guess from the failed structure
            if record is not None and record.pending is not None:
                on_frame(record.pending)
            continue
        if record is not None:
            record.last(ncalls - 1)
        if graph_preserved(mol, atoms.positions):
            out_pos.append(atoms.positions.copy())
            out_e.append(energy)
            kept.append(k)
    n_atoms = len(atoms)
    return np.array(out_pos).reshape(-1, n_atoms, 3), np.array(out_e), np.array(kept, dtype=int)


class _FrameRecorder:
    """Optimiser observer: passes labelled copies of the structure to ``sink``, one frame
    behind, so that the last frame of a relaxation can be marked."""

    def __init__(self, atoms: Atoms, start: int, sink: Callable[[Atoms], None]) -> None:
        self.atoms, self.start, self.sink = atoms, start, sink
        self.pending: Atoms | None = None

    def __call__(self, step: int) -> None:
        if self.pending is not None:
            self.sink(self.pending)
        frame = Atoms(numbers=self.atoms.numbers, positions=self.atoms.positions.copy())
        frame.calc = SinglePointCalculator(
            frame,
            energy=float(self.atoms.get_potential_energy()),
            forces=self.atoms.get_forces().copy(),
        )
        frame.info.update(relax_start=self.start, relax_step=int(step), relax_last=False)
        self.pending = frame

    def last(self, step: int) -> None:
        """Pass the final structure (optimiser step ``step``), marked ``relax_last``."""
        if self.pending is None or self.pending.info["relax_step"] != step:
            self(step)
        self.pending.info["relax_last"] = True
        self.sink(self.pending)
        self.pending = None


def generate_conformers(
    mol_or_smiles: Chem.Mol | str,
    n: int,
    method: str = "etkdg+relax",
    *,
    calc: BaseCalculator | str | None = None,
    model: str | os.PathLike | None = None,
    prune_rmsd: float | None = None,
    window: float | None = 6.0,
    fmax: float = 0.05,
    seed: int = 0,
    on_frame: Callable[[Atoms], None] | None = None,
    frame_every: int = 5,
    relax: bool | None = None,
) -> list[Atoms]:
    """Conformers of a molecule as ASE structures (module docstring for the methods).

    Args:
        mol_or_smiles: SMILES or RDKit molecule.
        n: number of conformers generated (before pruning), > 0.
        method: ``etkdg``, ``etkdg+relax`` or ``confvae``.
        calc: calculator or its name for ``etkdg+relax`` and relaxed ``confvae`` (default
            ``gfn2-xtb``).
        model: ConfVAE model card (``confvae``).
        prune_rmsd: heavy-atom RMSD threshold (Å) of duplicates; None: the method's default
            (``etkdg``: no pruning, ``etkdg+relax``: :data:`RELAX_PRUNE_RMSD`); 0: no pruning.
        window: energy window above the lowest (kcal/mol) for relaxed conformers; None: all.
        fmax: relaxation convergence (eV/Å).
        seed: random seed.
        on_frame, frame_every: ``etkdg+relax`` only: receives labelled frames along each
            relaxation (see :func:`relax_conformers`), e.g. to write training data.
        relax: ``confvae`` only: relax and prune the samples with ``calc`` (None: relax when
            ``calc`` is given). ``etkdg`` takes no relaxation (use ``etkdg+relax``), and
            ``etkdg+relax`` always relaxes.

    Returns:
        list of ``Atoms`` (energies attached for ``etkdg+relax``, lowest first).

    Raises:
        ConformerRequestError: ``n <= 0``, unknown method, ``confvae`` without ``model``,
            ``relax`` given for ``etkdg`` or False for ``etkdg+relax``.
        InvalidMoleculeError: invalid SMILES.
        UnsupportedSpeciesError: ``calc`` cannot handle an element of the molecule.
    """
    if int(n) != n or n <= 0:
        raise ConformerRequestError(f"the number of conformers must be >= 1 (-n), got {n}")
    if method not in METHODS:
        raise ConformerRequestError(
            f"unknown conformer method {method!r} (--method); choose from {', '.join(METHODS)}"
        )
    if (method, relax) in (("etkdg", True), ("etkdg+relax", False)):
        raise ConformerRequestError(
            f"--relax does not apply to method {method!r}: etkdg+relax always relaxes, etkdg "
            "never (use --method etkdg+relax); confvae relaxes with --relax or --calc"
        )
    mol = as_molecule(mol_or_smiles)
    start = time.monotonic()
    heavy = heavy_indices(mol)
    if method == "confvae":
        samples = _confvae(mol, int(n), model, seed)
        if not (calc is not None if relax is None else relax):
            return samples
        positions = np.array([a.positions for a in samples])
    else:
        positions = embed_etkdg(mol, int(n), seed)
    if method == "etkdg":
        keep = list(range(len(positions)))
        if prune_rmsd:
            keep = prune_conformers(positions[:, heavy], None, symmetry_matches(mol), prune_rmsd)
        return [
            mol_to_atoms(with_positions(mol, positions[k]), method="etkdg", seed=seed) for k in keep
        ]
    calc = _calculator(calc)
    positions, energies, _ = relax_conformers(
        mol, positions, calc, fmax, on_frame=on_frame, frame_every=frame_every
    )
    if not len(energies):
        raise ConformerRequestError(
            f"every relaxed conformer of {Chem.MolToSmiles(Chem.RemoveHs(mol))} changed its "
            "bonds or stereo; check the calculator (--calc)"
        )
    prune_rmsd = RELAX_PRUNE_RMSD if prune_rmsd is None else prune_rmsd
    if prune_rmsd > 0:
        keep = prune_conformers(
            positions[:, heavy],
            energies,
            symmetry_matches(mol),
            prune_rmsd,
            None if window is None else window * KCAL,
        )
    else:
        order = np.argsort(energies)
        keep = [k for k in order if window is None or energies[k] - energies.min() <= window * KCAL]
    name = getattr(calc, "reference_name", type(calc).__name__)
    e0 = float(energies.min())
    wall = (time.monotonic() - start) / max(len(keep), 1)
    return [
        mol_to_atoms(
            with_positions(mol, positions[k]),
            energy=float(energies[k]),
            method=f"{method.removesuffix('+relax')}+relax({name})",
            rel_energy_kcal=round((float(energies[k]) - e0) / KCAL, 4),
            seed=seed,
            wall_s_per_conformer=round(wall, 3),
        )
        for k in keep
    ]


def _confvae(mol: Chem.Mol, n: int, model: str | os.PathLike | None, seed: int) -> list[Atoms]:
    if model is None:
        raise ConformerRequestError(
            "method 'confvae' needs a trained model card (--model PATH.toml; train one with "
            "'ase-mlmd conformers train')"
        )
    from ase_mlmd.conformers.confvae import sample_conformers

    return sample_conformers(model, mol, n, seed)
