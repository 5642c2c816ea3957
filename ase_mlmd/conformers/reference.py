"""Reference conformer ensembles: a resumable driver over a set of molecules.

Runs :func:`~ase_mlmd.conformers.search.conformer_search` with a reference method (GFN2-xTB by
default) molecule by molecule, test molecules first, then train, then val.

Folder layout (stable; other modules and the ConfVAE trainer read it)::

    REF/
      .ase-mlmd.lock        held while a run writes (ase_mlmd.outdir)
      settings.json         method and the settings that define an ensemble (rmsd, window, fmax,
                            ...); a resume with others refuses. The search budget
                            (max_gradients, patience, max_seconds) may change between runs:
                            index.csv records each molecule's (column budget)
      molecules.csv         the whole selection: id,smiles,split,n_heavy,n_rotatable,source,name
      index.csv             one row per finished molecule: id,smiles,split,n_conformers,
                            n_heavy,n_rotatable,wall_s,status,n_gradients,n_quenches,n_broken
                            (status "ok" or "failed: <reason>"; rewritten atomically each time)
      test/<id>.extxyz      the ensemble of one molecule, lowest energy first; per frame:
      train/<id>.extxyz       info smiles (canonical isomeric, stereo as searched),
      val/<id>.extxyz         mapped_smiles (atom order + bonds, see .molecules), mol_id, split,
                              method (e.g. "gfn2-xtb"), conformer (rank), rel_energy_kcal, and
                              energy= (eV, total, read back as atoms.get_potential_energy())

Each ensemble file is written atomically before its index row, so an interrupted run loses at
most the molecule in progress; a restart skips every molecule in ``index.csv``. Atom order =
RDKit's ``AddHs`` order of the SMILES (:mod:`.molecules`). :func:`read_ensemble` reads one file
back with ``info["energy"]`` set too.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write

from ase_mlmd.conformers.molecules import (
    MoleculeRecord,
    mol_from_smiles,
    mol_to_atoms,
    with_positions,
)
from ase_mlmd.conformers.search import KCAL, conformer_search
from ase_mlmd.errors import CheckpointMismatchError, DataFormatError
from ase_mlmd.fileio import atomic_output, atomic_write_text
from ase_mlmd.outdir import lock_folder
from ase_mlmd.progress import progress_bar

__all__ = [
    "INDEX_COLUMNS",
    "SPLIT_ORDER",
    "generate_reference",
    "read_ensemble",
    "read_index",
    "reference_ensembles",
]

SPLIT_ORDER = ("test", "train", "val")
INDEX_COLUMNS = (
    "id",
    "smiles",
    "split",
    "n_conformers",
    "n_heavy",
    "n_rotatable",
    "wall_s",
    "status",
    "n_gradients",
    "n_quenches",
    "n_broken",
    "budget",
)
#: search options that only set how long a molecule is searched (may change on resume)
BUDGET_OPTIONS = ("max_gradients", "patience", "max_seconds")
_MOLECULE_COLUMNS = ("id", "smiles", "split", "n_heavy", "n_rotatable", "source", "name")


def read_index(folder: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of ``folder/index.csv`` (empty list when there is none yet)."""
    path = Path(folder) / "index.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_ensemble(path: str | os.PathLike) -> list[Atoms]:
    """Frames of one ensemble file with ``info["energy"]`` (eV) set from the stored energy."""
    try:
        frames = read(path, index=":", format="extxyz")
    except Exception as err:  # noqa: BLE001 - any reader failure is a corrupt file here
        raise DataFormatError(f"cannot read the ensemble {str(path)!r}: {err}") from err
    for atoms in frames:
        if atoms.calc is not None and "energy" in atoms.calc.results:
            atoms.info["energy"] = float(atoms.calc.results["energy"])
    return frames


def reference_ensembles(
    folder: str | os.PathLike, what: str = "reference ensembles"
) -> dict[str, list[Atoms]]:
    """``{mol_id: frames}`` of every ``*.extxyz`` in ``folder`` (a split folder such as
    ``ref/test``, or a reference folder: then all splits).

    Raises:
        DataFormatError: the folder does not exist or holds no ensemble.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.extxyz")) or sorted(folder.glob("*/*.extxyz"))
    if not files:
        raise DataFormatError(
            f"no {what} (*.extxyz) in {str(folder)!r}; give a folder of <id>.extxyz files as "
            "written by 'ase-mlmd conformers reference' (REF/test, REF/train, ...) or by "
            "'ase-mlmd conformers ... -o DIR/'"
        )
    return {f.stem: read_ensemble(f) for f in files}


def _settings(method: str, search: dict) -> dict:
    fixed = {k: v for k, v in sorted(search.items()) if k not in BUDGET_OPTIONS}
    return {"method": method, "search": fixed}


def generate_reference(
    records: Sequence[MoleculeRecord],
    split: dict[str, str],
    folder: str | os.PathLike,
    *,
    method: str = "gfn2-xtb",
    seed: int = 0,
    limit: int | None = None,
    splits: tuple[str, ...] = SPLIT_ORDER,
    **search: float,
) -> list[dict[str, str]]:
    """Compute (or resume) the reference ensembles of ``records`` into ``folder``.

    Args:
        records: the molecules (:func:`~.molecules.select_molecules`, ``read_smiles_file``).
        split: ``{id: "train" | "val" | "test"}`` for every record.
        folder: output folder (layout in the module docstring); locked while running.
        method: reference calculator name (:func:`ase_mlmd.data.reference.reference_calculator`).
        seed: base seed; molecule k of the selection uses ``seed + k``.
        limit: stop after this many molecules newly done in this call (None: all).
        splits: the parts to compute (others are skipped), in :data:`SPLIT_ORDER`.
        **search: keyword arguments of :func:`~.search.conformer_search` (``max_gradients``,
            ``patience``, ``rmsd``, ``window``, ``max_seconds``, ...).

    Returns:
        The rows of ``index.csv``.

    Raises:
        CheckpointMismatchError: ``folder`` holds a run with other settings.
        UnsupportedSpeciesError: a molecule has an element the method cannot handle (checked
            for all molecules before anything runs).
    """
    from ase_mlmd.data.reference import check_species, reference_calculator

    folder = Path(folder)
    calc = reference_calculator(method)
    mols = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rec in records:
            mol = mol_from_smiles(rec.smiles, source=rec.source)
            numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
            check_species(calc, Atoms(numbers=numbers), where=f"molecule {rec.id} ({rec.source})")
            mols[rec.id] = mol
    settings = _settings(method, search)
    with lock_folder(folder, what="reference folder"):
        settings_path = folder / "settings.json"
        if settings_path.is_file():
            old = json.loads(settings_path.read_text())
            if old != settings:
                raise CheckpointMismatchError(
                    f"{str(folder)!r} holds reference ensembles made with {old}, not {settings}; "
                    "resume with the same settings or write to another folder (-o)"
                )
        else:
            atomic_write_text(settings_path, json.dumps(settings, indent=1))
        _write_csv(
            folder / "molecules.csv",
            _MOLECULE_COLUMNS,
            [{**asdict(r), "split": split[r.id]} for r in records],
        )
        rows = read_index(folder)
        done = {r["id"] for r in rows}
        seeds = {r.id: seed + k for k, r in enumerate(records)}
        parts = [p for p in SPLIT_ORDER if p in splits]
        todo = [r for part in parts for r in records if split[r.id] == part]
        todo = [r for r in todo if r.id not in done][:limit]
        budget = " ".join(f"{k}={search[k]}" for k in BUDGET_OPTIONS if k in search)
        bar = progress_bar(total=len(todo), desc=f"reference {method}", unit="mol")
        for rec in todo:
            part = split[rec.id]
            res = conformer_search(mols[rec.id], calc, seed=seeds[rec.id], **search)
            status = "ok" if len(res.energies) else "failed: no structure kept its graph"
            if len(res.energies):
                _write_ensemble(
                    folder / part / f"{rec.id}.extxyz",
                    mols[rec.id],
                    rec,
                    part,
                    method,
                    res.positions,
                    res.energies,
                )
            rows.append(
                {
                    "id": rec.id,
                    "smiles": rec.smiles,
                    "split": part,
                    "n_conformers": len(res.energies),
                    "n_heavy": rec.n_heavy,
                    "n_rotatable": rec.n_rotatable,
                    "wall_s": f"{res.wall_s:.1f}",
                    "status": status,
                    "n_gradients": res.n_gradients,
                    "n_quenches": res.n_quenches,
                    "n_broken": res.n_broken,
                    "budget": budget,
                }
            )
            _write_csv(folder / "index.csv", INDEX_COLUMNS, rows)
            bar.set_postfix_str(f"{rec.id} {part} K={len(res.energies)} {res.wall_s:.0f}s")
            bar.update(1)
        bar.close()
    return [{k: str(v) for k, v in r.items()} for r in rows]


def _write_ensemble(path, mol, rec, part, method, positions, energies) -> None:
    frames = []
    e0 = float(np.min(energies))
    for k, (pos, energy) in enumerate(zip(positions, energies, strict=True)):
        conf_mol = with_positions(mol, pos)
        frames.append(
            mol_to_atoms(
                conf_mol,
                energy=float(energy),
                mol_id=rec.id,
                split=part,
                method=method,
                conformer=k,
                rel_energy_kcal=round((float(energy) - e0) / KCAL, 4),
            )
        )
    with atomic_output(path) as tmp:
        write(tmp, frames, format="extxyz")
