"""Benchmark 4b addendum (issue 14): the PULCHRA *card* on the chignolin Cα test frames, heavy
atoms only vs completed with hydrogens (``--hydrogens amber14``).

Through the command line a user runs: ``ase-mlmd backmap pulchra`` (two cards), ``ase-mlmd
backmap run --reconstruct`` on the committed Cα test frames
(``benchmarks/backmap_runs/chignolin/cg_test_ca.extxyz``, 57 frames of the 340 K GBn2 run of
``backmap_chignolin.py``), then the METRICS §4 report against the all-atom test frames
(``WORK/test.extxyz`` of ``backmap_chignolin.py --stages prepare``) with energies under
amber14 + GBn2 (unconstrained) on every frame, as ``backmap_chignolin.py``'s ``eval`` stage.
Writes ``OUT/report.md``, ``metrics.json`` and PNGs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from backmap_chignolin import cli, log

ROOT = Path(__file__).resolve().parents[1]
CHIG = ROOT / "benchmarks" / "backmap_runs" / "chignolin"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "backmap4a" / "chig")
    parser.add_argument("--out", type=Path, default=CHIG / "pulchra_card")
    reference = ROOT / "out" / "backmap_eval" / "chignolin" / "test.extxyz"
    parser.add_argument("--reference", type=Path, default=reference, help="all-atom test frames")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    from ase.io import read
    from openmm import app

    from ase_mlmd.backmap.report import evaluate, pair_frames, write_report
    from ase_mlmd.data.openmm_peptide import build_peptide_system

    cg = CHIG / "cg_test_ca.extxyz"
    runs = {"pulchra": [], "pulchra+H amber14": ["--hydrogens", "amber14"]}
    generated = {}
    for label, extra in runs.items():
        folder, gen = args.work / label.replace(" ", "_"), args.work / f"{label}.extxyz"
        cli("backmap", "pulchra", "--topology", str(CHIG / "chignolin.pdb"), "--mapping",
            str(CHIG / "map_ca.json"), *extra, "-o", str(folder))  # fmt: skip
        tick = time.time()
        cli("backmap", "run", str(folder / "card.toml"), str(cg), "--reconstruct", "-o", str(gen))
        log(f"{label}: {time.time() - tick:.0f} s for the test frames (incl. start-up)")
        generated[label] = gen
    system = build_peptide_system(app.PDBFile(str(CHIG / "chignolin.pdb")).topology, None)
    test = read(args.reference, ":")
    results, paired = {}, {}
    for label, gen in generated.items():
        paired[label] = pair_frames(test, read(gen, ":"))
        results[label] = evaluate(paired[label], system, energy_frames=len(test))
        log(f"{label}: {results[label]}")
    notes = [
        "PULCHRA card (default options) on the 57 Cα test frames of 4b; heavy = 77 heavy atoms "
        "compared; + H = the 138 atoms, hydrogens from OpenMM Modeller.addHydrogens minimized "
        "under amber14 with the heavy atoms fixed. Energies: amber14 + GBn2."
    ]
    write_report(results, paired, args.out, title="Chignolin Cα: the PULCHRA card, heavy vs + H",
                 notes=notes)  # fmt: skip


if __name__ == "__main__":
    main()
