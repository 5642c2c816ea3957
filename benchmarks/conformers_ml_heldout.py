"""Force and energy errors of an ML card on held-out molecules (issue 15, ML-card row).

The card is trained on frames of the FreeSolv *train* molecules only
(``benchmarks/conformers_ml_data.sh``); this evaluates it on the labelled GFN2-xTB frames of
the *val* molecules (31 molecules never seen in training), by frame kind (``source`` /
``relax_step``: ETKDG starts, relaxation paths, relaxed minima, MD, reference conformers) and
per molecule. Writes ``OUT/heldout.json`` and prints a Markdown table.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/conformers_ml_heldout.py \\
        --card CARD.toml --data out/conformers_ml/val.extxyz \\
        --out benchmarks/conformer_data/bench_ml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from ase_mlmd.calculators.registry import load_calculator
from ase_mlmd.errors import UnsupportedSpeciesError
from ase_mlmd.fileio import atomic_write_text
from ase_mlmd.progress import progress_bar


def frame_kind(info: dict) -> str:
    """Which part of the data set a frame comes from."""
    if info.get("source") == "etkdg+relax":
        if info.get("relax_step") == 0:
            return "ETKDG embedding (relax start)"
        return "relaxed (last frame)" if info.get("relax_last") else "along the relaxation"
    if "conformer" in info:
        return "reference conformer"
    return "MD (600 K start)"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--card", required=True)
    p.add_argument("--data", default="out/conformers_ml/val.extxyz")
    p.add_argument("--out", default="benchmarks/conformer_data/bench_ml")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    calc = load_calculator(args.card)
    frames = read(args.data, ":")
    rows = []
    for atoms in progress_bar(frames, desc="held-out frames", unit="frame"):
        ref_f, ref_e = atoms.get_forces().copy(), atoms.get_potential_energy()
        probe = atoms.copy()
        probe.calc = calc
        try:
            f, e = probe.get_forces(), probe.get_potential_energy()
        except UnsupportedSpeciesError:
            continue
        rows.append(
            {
                "mol": atoms.info.get("mol_id", ""),
                "smiles": atoms.info.get("smiles", ""),
                "kind": frame_kind(atoms.info),
                "n": len(atoms),
                "f_mae": float(np.abs(f - ref_f).mean()) * 1000,
                "e_err": float(e - ref_e) * 1000,
            }
        )
    out = {"card": args.card, "data": args.data, "n_frames": len(rows), "n_skipped": 0}
    out["n_skipped"] = len(frames) - len(rows)
    lines = ["| frames | n | force MAE (meV/Å) | energy MAE (meV/atom) |", "|---|---:|---:|---:|"]
    for kind in ["all", *sorted({r["kind"] for r in rows})]:
        sel = [r for r in rows if kind == "all" or r["kind"] == kind]
        fm = float(np.mean([r["f_mae"] for r in sel]))
        # per-molecule constant energy offsets matter for relative energies only: report both
        em = float(np.mean([abs(r["e_err"]) / r["n"] for r in sel]))
        out[kind] = {"n": len(sel), "force_mae_meV_per_A": fm, "energy_mae_meV_per_atom": em}
        lines.append(f"| {kind} | {len(sel)} | {fm:.1f} | {em:.2f} |")
    mols = sorted({r["mol"] for r in rows})
    per_mol = {m: float(np.mean([r["f_mae"] for r in rows if r["mol"] == m])) for m in mols}
    # relative energies within a molecule (what pruning and the energy window use)
    rel = []
    for m in mols:
        err = np.array([r["e_err"] for r in rows if r["mol"] == m])
        rel.extend(np.abs(err - err.mean()))
    out["per_molecule_force_mae_meV_per_A"] = per_mol
    out["relative_energy_mae_meV"] = float(np.mean(rel))
    out["molecules"] = len(mols)
    text = (
        f"Card {args.card} on {len(rows)} GFN2-xTB frames of {len(mols)} held-out molecules "
        f"({args.data}; {out['n_skipped']} frames with elements outside the card skipped):\n\n"
        + "\n".join(lines)
        + f"\n\nPer-molecule force MAE: median {np.median(list(per_mol.values())):.1f}, worst "
        f"{max(per_mol.values()):.1f} meV/Å ({max(per_mol, key=per_mol.get)}). Energy error "
        f"within a molecule (offset removed): {out['relative_energy_mae_meV']:.1f} meV MAE.\n"
    )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out) / "heldout.json", json.dumps(out, indent=1))
    atomic_write_text(Path(args.out) / "heldout.md", text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
