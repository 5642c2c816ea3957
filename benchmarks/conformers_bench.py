"""Conformer generation benchmark on the held-out reference molecules (METRICS §5 protocol).

For each test molecule with K reference conformers (GFN2-xTB search, ``ase-mlmd conformers
reference``), each method generates 2K conformers:

* ``etkdg``: RDKit ETKDGv3, 2K embeddings (seed 0).
* ``etkdg+relax(gfn2-xtb)``: the same 2K embeddings relaxed with GFN2-xTB (fmax 0.05 eV/Å);
  reported unpruned (all 2K) and as the package's default output (pruned at 0.25 Å, 6 kcal/mol
  window, so fewer than 2K).
* ``etkdg+relax(CARD)``: the same with an ML card (``--ml-card``) on the molecules whose
  elements the card covers.
* ``confvae``: samples of a ConfVAE card (``--confvae-model``), when given.

Metrics: COV-R/MAT-R/COV-P/MAT-P (δ = 0.5 Å, heavy atoms, symmetry-aware RMSD), mean and
median over molecules; the energy of the generated conformers after relaxation with GFN2-xTB
relative to the reference minimum (ETKDG's relaxed energies are those of the xTB row, as the
embeddings are the same); wall time per molecule (generation + relaxation, one thread, on the
shared machine). Results are cached per molecule in OUT/rows.jsonl (a rerun resumes).

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/conformers_bench.py \\
        --reference out/conformers/ref_freesolv --out out/conformers/bench
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ase_mlmd.conformers.generate import embed_etkdg, relax_conformers
from ase_mlmd.conformers.metrics import energy_above_reference, evaluate_molecule, summarize
from ase_mlmd.conformers.molecules import mol_to_atoms, with_positions
from ase_mlmd.conformers.reference import reference_ensembles
from ase_mlmd.conformers.report import summary_table
from ase_mlmd.conformers.rmsd import (
    best_rmsd_matrix,
    heavy_indices,
    prune_conformers,
    symmetry_matches,
)
from ase_mlmd.conformers.search import KCAL
from ase_mlmd.data.reference import reference_calculator
from ase_mlmd.errors import UnsupportedSpeciesError
from ase_mlmd.fileio import atomic_write_text
from ase_mlmd.progress import progress_bar


def _atoms(mol, positions, energies=None):
    return [
        mol_to_atoms(with_positions(mol, p), energy=None if energies is None else energies[k])
        for k, p in enumerate(positions)
    ]


def bench_molecule(mol_id, ref, group, xtb, ml_calc, ml_name, confvae_model) -> list[dict]:
    """Rows (one per method) of one method group (``xtb``: ETKDG and ETKDG + GFN2-xTB; ``ml``:
    ETKDG + the ML card; ``confvae``) for one molecule."""
    smiles = ref[0].info["mapped_smiles"]
    from ase_mlmd.conformers.molecules import atoms_to_mol

    mol = atoms_to_mol(ref[0])
    mol.RemoveAllConformers()
    k = len(ref)
    ref_e = [a.info["energy"] for a in ref]
    heavy = heavy_indices(mol)
    t0 = time.monotonic()
    pos = embed_etkdg(mol, 2 * k, seed=0)
    t_embed = time.monotonic() - t0
    if group == "ml":
        rows = _ml_rows(mol, ref, ref_e, pos, t_embed, ml_calc, ml_name, xtb, heavy)
    elif group == "confvae":
        rows = _confvae_rows(mol, ref, ref_e, xtb, confvae_model)
    else:
        rows = _xtb_rows(mol, ref, ref_e, pos, t_embed, xtb, heavy)
    for r in rows:
        r.update({"id": mol_id, "smiles": smiles, "group": group})
    return rows


def _xtb_rows(mol, ref, ref_e, pos, t_embed, xtb, heavy):
    rows = []
    rows.append({"method": "etkdg", "wall_s": t_embed, **evaluate_molecule(ref, _atoms(mol, pos))})
    t0 = time.monotonic()
    rpos, rene, _ = relax_conformers(mol, pos, xtb, fmax=0.05)
    t_relax = time.monotonic() - t0 + t_embed
    energy = energy_above_reference(rene, ref_e)
    rows[0].update(energy)
    relaxed = _atoms(mol, rpos, rene)
    rows.append(
        {"method": "etkdg+relax(gfn2-xtb) 2K", "wall_s": t_relax, **energy,
         **evaluate_molecule(ref, relaxed)}
    )  # fmt: skip
    keep = prune_conformers(rpos[:, heavy], rene, symmetry_matches(mol), 0.25, 6.0 * KCAL)
    rows.append(
        {"method": "etkdg+relax(gfn2-xtb) default", "wall_s": t_relax,
         **energy_above_reference(rene[keep], ref_e),
         **evaluate_molecule(ref, [relaxed[i] for i in keep])}
    )  # fmt: skip
    return rows


def _ml_rows(mol, ref, ref_e, pos, t_embed, ml_calc, ml_name, xtb, heavy):
    """ETKDG + relax with the ML card: all relaxed structures (2K minus broken ones) and the
    default output (pruned at 0.25 Å and 6 kcal/mol of the card's energies); broken =
    relaxations that changed bonds or stereo (left out by ``relax_conformers``). Energies (the
    default output only): its conformers relaxed again with GFN2-xTB, relative to the reference
    minimum;
    ``ml_to_xtb_rmsd``: heavy-atom RMSD (same atoms, aligned) between each ML minimum and the
    GFN2-xTB minimum reached from it (how far the card's minima are from xTB's)."""
    if ml_calc is None:
        return []
    try:
        t0 = time.monotonic()
        mpos, mene, _ = relax_conformers(mol, pos, ml_calc, fmax=0.05)
        wall = time.monotonic() - t0 + t_embed
    except UnsupportedSpeciesError:
        return []  # the card does not cover this molecule's elements
    base = {"wall_s": wall, "broken": 1.0 - len(mpos) / len(pos), "n_broken": len(pos) - len(mpos)}
    rows = [{"method": f"etkdg+relax({ml_name}) 2K", **base}]
    if not len(mpos):
        return rows
    relaxed = _atoms(mol, mpos, mene)
    rows[0].update(evaluate_molecule(ref, relaxed))
    keep = prune_conformers(mpos[:, heavy], mene, symmetry_matches(mol), 0.25, 6.0 * KCAL)
    default = {"method": f"etkdg+relax({ml_name}) default", **base}
    default.update(evaluate_molecule(ref, [relaxed[i] for i in keep]))
    xpos, xene, xkept = relax_conformers(mol, mpos[keep], xtb, fmax=0.05)
    if len(xene):
        identity = symmetry_matches(mol)[:1]  # same atoms: no permutation
        mine = np.array([mpos[keep[i]][heavy] for i in xkept])
        shift = np.diag(best_rmsd_matrix(mine, xpos[:, heavy], identity))
        default.update(energy_above_reference(xene, ref_e), ml_to_xtb_rmsd=float(np.mean(shift)))
    rows.append(default)
    return rows


def _confvae_rows(mol, ref, ref_e, xtb, confvae_model):
    """ConfVAE samples as generated (with the share whose worst bond is more than
    BOND_TOLERANCE off the lowest reference conformer's) and relaxed with GFN2-xTB (all 2K,
    and pruned as ``etkdg+relax``'s default output: 0.25 Å, 6 kcal/mol)."""
    from ase_mlmd.conformers.confvae import sample_conformers
    from ase_mlmd.conformers.metrics import BOND_TOLERANCE, bond_deviation

    rows = []
    k = len(ref)
    if confvae_model is None:
        return rows
    t0 = time.monotonic()
    try:
        gen = sample_conformers(confvae_model, mol, 2 * k, 0)
    except UnsupportedSpeciesError:
        return rows  # an element the model has not seen
    wall = time.monotonic() - t0
    gpos = np.array([a.positions for a in gen])
    worst = bond_deviation(mol, gpos, ref[0].positions)
    row = {"method": "confvae", "wall_s": wall, **evaluate_molecule(ref, gen)}
    row.update(bond_off=float((worst > BOND_TOLERANCE).mean()), bond_worst=float(np.median(worst)))
    t0 = time.monotonic()
    rpos, rene, _ = relax_conformers(mol, gpos, xtb, fmax=0.05)
    t_relax = time.monotonic() - t0 + wall
    rows.append(row)
    if len(rene):
        energy = energy_above_reference(rene, ref_e)
        row.update(energy)
        relaxed = _atoms(mol, rpos, rene)
        rows.append(
            {"method": "confvae+relax(gfn2-xtb) 2K", "wall_s": t_relax, **energy,
             "broken": 1.0 - len(rpos) / len(gpos), **evaluate_molecule(ref, relaxed)}
        )  # fmt: skip
        heavy = heavy_indices(mol)
        keep = prune_conformers(rpos[:, heavy], rene, symmetry_matches(mol), 0.25, 6.0 * KCAL)
        rows.append(
            {"method": "confvae+relax(gfn2-xtb) default", "wall_s": t_relax,
             **energy_above_reference(rene[keep], ref_e),
             **evaluate_molecule(ref, [relaxed[i] for i in keep])}
        )  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", default="out/conformers/ref_freesolv")
    p.add_argument("--split", default="test")
    p.add_argument("--out", default="out/conformers/bench")
    p.add_argument("--ml-card", help="model card for etkdg+relax(CARD)")
    p.add_argument("--confvae-model", help="ConfVAE card")
    p.add_argument("--limit", type=int, help="first N molecules only")
    p.add_argument(
        "--shard",
        help="K/N: molecules K, K+N, ... only (0 <= K < N), cached in OUT/rows.K-of-N.jsonl; "
        "a run without --shard reads every cache and summarises",
    )
    p.add_argument(
        "--group",
        choices=("xtb", "ml", "confvae"),
        default="xtb",
        help="xtb: ETKDG and ETKDG + GFN2-xTB; ml: ETKDG + --ml-card; confvae: --confvae-model",
    )
    p.add_argument(
        "--summarize-only",
        action="store_true",
        help="compute nothing: summarise the cached rows (molecules not done are left out)",
    )
    p.add_argument(
        "--common",
        action="store_true",
        help="summarise only the molecules every method has a row for (side-by-side subsets)",
    )
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    refs = reference_ensembles(Path(args.reference) / args.split)
    ids = sorted(refs)[: args.limit]
    cache = out / "rows.jsonl"
    if args.shard:
        k, n = map(int, args.shard.split("/"))
        ids, cache = ids[k::n], out / f"rows.{k}-of-{n}.jsonl"
    rows = [
        json.loads(line)
        for path in sorted(out.glob("rows*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    done = {r["id"] for r in rows if r.get("group", "xtb") == args.group}
    xtb = reference_calculator("gfn2-xtb")
    ml_calc = ml_name = None
    if args.ml_card:
        from ase_mlmd.calculators.registry import find_card, load_calculator

        ml_calc = load_calculator(args.ml_card)
        ml_name = find_card(args.ml_card).name
    bar = progress_bar(total=len(ids), initial=len(done & set(ids)), desc="bench", unit="mol")
    for mol_id in ids:
        if mol_id in done or args.summarize_only:
            continue
        new = bench_molecule(
            mol_id, refs[mol_id], args.group, xtb, ml_calc, ml_name, args.confvae_model
        )
        with open(cache, "a") as fh:
            for r in new or [{"id": mol_id, "group": args.group, "method": None}]:
                fh.write(json.dumps(r) + "\n")
        rows.extend(new)
        bar.update(1)
    bar.close()
    if args.shard:
        return None  # the shard's rows are cached; a run without --shard summarises
    rows = [r for r in rows if r["id"] in set(ids) and r["method"] is not None]
    if args.common:
        by_method: dict[str, set] = {}
        for r in rows:
            by_method.setdefault(r["method"], set()).add(r["id"])
        ids = sorted(set.intersection(*by_method.values()))
        rows = [r for r in rows if r["id"] in set(ids)]
    names = ["cov_r", "mat_r", "cov_p", "mat_p", "e_min", "e_median", "wall_s", "broken"]
    names += ["n_broken", "ml_to_xtb_rmsd"]
    names += ["bond_off", "bond_worst"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    summaries = {m: summarize([r for r in rows if r["method"] == m], names) for m in methods}
    for m, s in summaries.items():
        s["n_valid"] = sum(1 for r in rows if r["method"] == m and "cov_r" in r)
    table = summary_table(summaries)
    wall = "\n".join(
        f"- {m}: {s['wall_s_mean']:.2f} s per molecule (mean), {s['wall_s_median']:.2f} (median)"
        + (
            f"; relaxations that broke bonds: {100 * s['broken_mean']:.1f} % "
            f"({sum(r.get('n_broken', 0) for r in rows if r['method'] == m)} in all)"
            if "broken_mean" in s
            else ""
        )
        + (
            f"; molecules with a valid conformer: {s.get('n_valid', 0)}"
            if "broken_mean" in s
            else ""
        )
        + (
            f"; ML minimum to GFN2-xTB minimum from it: {s['ml_to_xtb_rmsd_mean']:.3f} Å "
            f"heavy-atom RMSD (mean; median {s['ml_to_xtb_rmsd_median']:.3f})"
            if "ml_to_xtb_rmsd_mean" in s
            else ""
        )
        for m, s in summaries.items()
    )
    sampled = [r for r in rows if "bond_off" in r]
    if sampled:
        n_gen = sum(r["n_gen"] for r in sampled)
        n_off = sum(r["bond_off"] * r["n_gen"] for r in sampled)
        worst = np.median([r["bond_worst"] for r in sampled])
        wall += (
            f"\n- raw ConfVAE samples with a bond > 0.2 Å off the reference: {n_off:.0f} of "
            f"{n_gen} ({100 * n_off / n_gen:.0f} %); median over molecules of the median worst "
            f"bond error {worst:.3f} Å"
        )
    n_ref = [len(refs[i]) for i in ids]
    text = (
        f"# Conformer benchmark ({args.split} split of {args.reference})\n\n"
        f"{len(ids)} molecules, K = {np.mean(n_ref):.1f} reference conformers on average "
        f"(median {np.median(n_ref):.0f}); 2K generated per method.\n\n{table}\n"
        f"Wall time per molecule (one thread, shared machine):\n{wall}\n"
    )
    atomic_write_text(out / "summary.md", text)
    atomic_write_text(out / "summary.json", json.dumps(summaries, indent=1))
    _plot(rows, methods, out / "cov_mat_methods.png")
    print(text)


def _plot(rows, methods, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for k, m in enumerate(methods):
        sel = [r for r in rows if r["method"] == m and "cov_r" in r]
        axes[0].hist([100 * r["cov_r"] for r in sel], bins=np.linspace(0, 100, 11),
                     histtype="step", lw=2, label=m, color=f"C{k}")  # fmt: skip
        axes[1].hist([r["mat_r"] for r in sel], bins=np.linspace(0, 1.5, 16),
                     histtype="step", lw=2, label=m, color=f"C{k}")  # fmt: skip
    axes[0].set_xlabel("COV-R (%) per molecule, δ = 0.5 Å")
    axes[1].set_xlabel("MAT-R (Å) per molecule")
    for ax in axes:
        ax.set_ylabel("molecules")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
