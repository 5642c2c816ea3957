"""The loop: coarse-grain → simulate → backmap → evaluate (issue 14, benchmark 4c).

:func:`run_loop` takes a CG force-field card, a backmapper card (CGVAE or linear) made for the
*same* mapping (bead count and bead types are checked) and all-atom reference frames:

1. the reference frames are mapped with the backmapper's mapping; ``replicas`` of them, spread
   evenly over the file, start CG Langevin MD with the CG model (the torch engine,
   :func:`ase_mlmd.md.simulate`; resumable from its checkpoint in ``OUTPUT/cg_md/``);
2. every saved CG frame (after discarding the first ``discard`` fraction of each replica;
   at most ``max_frames``, evenly strided) is backmapped: one sample per frame
   (``Backmapper.sample(cg, 1, seed)``: a prior draw for CGVAE, the reconstruction for the
   linear model);
3. the all-atom backbone dihedrals φ/ψ of the backmapped frames and of the reference frames
   give two free-energy surfaces (60 × 60, F = −kT ln p in kT) compared as in the CG evaluation
   (:func:`~ase_mlmd.observables.fes_compare.compare_fes`: MAE over the bins the reference
   populates below 4 kT after removing the mean offset) and 1-D PMFs (PMF MAE × 2π in kT,
   capped at 8 kT on both sides, :func:`~ase_mlmd.observables.fes.pmf_mae`);
4. each backmapped structure is *valid* when its bond graph (METRICS §4, 1.3 × covalent radii)
   equals the molecule's topology graph (the mapping's bonds) and *clash-free* by the METRICS
   clash rule; the report gives both fractions (and the reference frames' own, the floor).

φ/ψ come from the bond graph (:func:`backbone_dihedrals`), so no topology file is needed: a
backbone N bonded to a Cα (a carbon bonded to that N and to a carbonyl carbon) and carbonyl
carbons C(=O) on both sides.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from ase_mlmd.backmap.metrics import valid_and_clashing
from ase_mlmd.errors import BackmapError, IncompatibleTrajectoriesError
from ase_mlmd.fileio import atomic_write_text

__all__ = ["LoopSettings", "backbone_dihedrals", "check_cg_model", "run_loop"]


@dataclass(frozen=True)
class LoopSettings:
    """CG MD and backmapping settings of :func:`run_loop` (MD units: fs, K, 1/fs)."""

    replicas: int = 16
    steps: int = 20_000
    timestep: float = 2.0
    save_every: int = 100
    temperature: float = 300.0
    friction: float = 0.002
    discard: float = 0.1
    max_frames: int = 20_000
    seed: int = 0


def backbone_dihedrals(numbers: np.ndarray, bonds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backbone φ (C′–N–Cα–C) and ψ (N–Cα–C–N′) quartets (R, 4) of a peptide from its bond
    graph, for every Cα with a carbonyl neighbour on both sides (R = 1 for alanine dipeptide).

    Carbonyl carbon: a C bonded to an N and to an O that has no other bond; Cα: a carbon, not
    carbonyl, bonded to an N and to a carbonyl carbon."""
    numbers = np.asarray(numbers, dtype=int)
    neighbours: list[set[int]] = [set() for _ in numbers]
    for i, j in np.asarray(bonds, dtype=int).reshape(-1, 2):
        neighbours[i].add(int(j))
        neighbours[j].add(int(i))

    def of(atom: int, z: int) -> list[int]:
        return sorted(k for k in neighbours[atom] if numbers[k] == z)

    carbonyl = {
        c
        for c in np.flatnonzero(numbers == 6)
        if of(c, 7) and any(len(neighbours[o]) == 1 for o in of(c, 8))
    }
    phi, psi = [], []
    for ca in np.flatnonzero(numbers == 6):
        if ca in carbonyl:
            continue
        for n in of(ca, 7):
            before = [c for c in of(n, 6) if c in carbonyl and c != ca]
            after = [c for c in neighbours[ca] if c in carbonyl]
            for c in after:
                n_next = [k for k in of(c, 7) if k != n]
                if before and n_next:
                    phi.append((before[0], n, int(ca), c))
                    psi.append((n, int(ca), c, n_next[0]))
    return np.array(phi, dtype=int).reshape(-1, 4), np.array(psi, dtype=int).reshape(-1, 4)


def check_cg_model(card_path: str | os.PathLike, mapping) -> None:
    """Refuse a CG force-field card whose beads are not the backmapper's (count, then types in
    order, from the card's ``[parameters.topology]`` or ``bead_types``).

    Raises:
        BackmapError: the CG model was made for another mapping.
    """
    from ase_mlmd.calculators.cards import read_card

    card = read_card(card_path)
    topology = card.parameters.get("topology", {})
    types = topology.get("bead_types") if isinstance(topology, dict) else None
    n = card.parameters.get("n_beads", len(types) if types else None)
    if n is not None and int(n) != mapping.n_beads:
        raise BackmapError(
            f"the CG model {card_path} has {n} beads but the backmapper's mapping has "
            f"{mapping.n_beads} ({mapping.scheme}): CG MD and backmapping must use the same "
            "mapping (--cg-model and --backmapper)"
        )
    if types and list(types) != list(mapping.bead_types):
        raise BackmapError(
            f"the CG model {card_path} has bead types {list(types)} but the backmapper's mapping "
            f"{list(mapping.bead_types)}: CG MD and backmapping must use the same mapping"
        )


def _start_frames(cg_frames: list[Atoms], replicas: int) -> list[Atoms]:
    picks = np.linspace(0, len(cg_frames) - 1, replicas).round().astype(int)
    starts = []
    for k in picks:
        atoms = cg_frames[k].copy()
        atoms.calc = None
        starts.append(atoms)
    return starts


def _phi_psi(positions: np.ndarray, phi_q: np.ndarray, psi_q: np.ndarray):
    from ase_mlmd.observables.internal import compute_dihedral_angles

    return (
        compute_dihedral_angles(positions, phi_q[:1])[:, 0],
        compute_dihedral_angles(positions, psi_q[:1])[:, 0],
    )


def run_loop(
    cg_model: str | os.PathLike,
    backmapper_card: str | os.PathLike,
    reference: Sequence[Atoms],
    output: str | os.PathLike,
    settings: LoopSettings = LoopSettings(),
    *,
    trust: bool = False,
    progress: bool = True,
    restart: bool = True,
) -> dict:
    """Run the loop (module docstring) and write ``OUTPUT/report.md``, ``summary.json``,
    ``fes.png``, ``pmf.png``, ``backmapped.extxyz``; return the summary.

    Raises:
        BackmapError: CG model and backmapper of different mappings, reference frames of
            another molecule.
        IncompatibleTrajectoriesError: no backbone φ/ψ found in the molecule.
    """
    from ase.io import write

    from ase_mlmd.backmap.card import check_same_molecule, load_backmapper
    from ase_mlmd.beads import make_cg_atoms
    from ase_mlmd.cg.evaluate import read_replicas
    from ase_mlmd.fileio import atomic_output
    from ase_mlmd.md.simulate import simulate

    s = settings
    out = Path(output)
    backmapper = load_backmapper(backmapper_card)
    mapping = backmapper.topology
    check_cg_model(cg_model, mapping)
    if len(reference) == 0:
        raise BackmapError("the reference file has no frames (--reference)")
    for k in (0, len(reference) - 1):
        check_same_molecule(backmapper, reference[k], f"reference frame {k}")
    numbers, bonds = mapping.numbers, mapping.bonds
    phi_q, psi_q = backbone_dihedrals(numbers, bonds)
    if len(phi_q) == 0:
        raise IncompatibleTrajectoriesError(
            "no backbone φ/ψ (C′–N–Cα–C, N–Cα–C–N′) in the molecule's bond graph: the loop's "
            "free-energy surface needs a peptide"
        )
    cg_reference = mapping.apply_positions(list(reference))
    md_dir = out / "cg_md"
    md_dir.mkdir(parents=True, exist_ok=True)
    result = simulate(
        _start_frames(cg_reference, s.replicas), str(cg_model), ensemble="nvt-langevin",
        temperature=s.temperature, timestep=s.timestep, steps=s.steps, save_every=s.save_every,
        trajectory=str(md_dir / "replica_{i}.traj"), logfile=md_dir / "md.log",
        checkpoint=md_dir / "checkpoint.pt", seed=s.seed, friction=s.friction,
        progress=progress, restart=restart, trust=trust,
    )  # fmt: skip
    cg_positions, _, _ = read_replicas(md_dir, s.discard)
    cg_positions = cg_positions[:: max(1, int(np.ceil(len(cg_positions) / s.max_frames)))]
    masses = mapping.bead_masses(reference[0].get_masses())
    cg_frames = [make_cg_atoms(x, mapping.bead_types, mapping.type_list, masses)
                 for x in cg_positions]  # fmt: skip
    aa = _backmap(backmapper, cg_frames, s.seed, progress, "backmap CG MD")
    with atomic_output(out / "backmapped.extxyz") as tmp:
        write(tmp, [Atoms(numbers=numbers, positions=x) for x in aa], format="extxyz")
    ref = np.stack([a.positions for a in reference])
    stride = max(1, int(np.ceil(len(cg_reference) / s.max_frames)))
    aa_ref = _backmap(backmapper, cg_reference[::stride], s.seed, progress, "backmap reference")
    surfaces = {k: _surface(x, phi_q, psi_q) for k, x in
                (("reference", ref), ("backmapper", aa_ref), ("loop", aa))}  # fmt: skip
    plot_fes_pmf(surfaces, out)
    summary = _compare(aa, surfaces["loop"], surfaces["reference"], numbers, bonds)
    summary["backmapper_only"] = _compare(
        aa_ref, surfaces["backmapper"], surfaces["reference"], numbers, bonds
    )
    valid_ref, clash_ref = valid_and_clashing(ref, numbers, bonds)
    summary.update(
        reference_valid_clash_free=float((valid_ref & ~clash_ref).mean()),
        n_reference=len(ref),
        phi_quartet=phi_q[0].tolist(),
        psi_quartet=psi_q[0].tolist(),
        settings=asdict(s),
        cg_model=str(cg_model),
        backmapper=str(backmapper_card),
        mapping=f"{mapping.scheme}, {mapping.n_beads} beads",
        cg_md={
            "steps": result.steps,
            "collapsed": len(result.collapsed),
            "wall_time_s": result.wall_time_s,
        },
        n_backmapped=len(aa),
        cg_time_ns=len(result.replicas) * s.steps * s.timestep * 1e-6,
    )
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "report.md", report_markdown(summary))
    return summary


def _backmap(backmapper, cg_frames: list[Atoms], seed: int, progress: bool, desc: str):
    """All-atom positions (F, N, 3): one sample per CG frame, in chunks of 500 frames."""
    from ase_mlmd.progress import progress_bar

    aa = np.empty((len(cg_frames), backmapper.topology.n_atoms, 3))
    bar = progress_bar(total=len(cg_frames), unit="frame", desc=desc, disable=not progress)
    for start in range(0, len(cg_frames), 500):
        chunk = cg_frames[start : start + 500]
        samples = backmapper.sample(chunk, 1, seed=seed + start)
        aa[start : start + len(chunk)] = [per[0].positions for per in samples]
        bar.update(len(chunk))
    bar.close()
    return aa


def _surface(positions: np.ndarray, phi_q: np.ndarray, psi_q: np.ndarray):
    """FES (kT) over φ/ψ and its two PMFs (kT)."""
    from ase_mlmd.observables.fes import compute_fes, compute_pmf

    phi, psi = _phi_psi(positions, phi_q, psi_q)
    fes = compute_fes(phi, psi, kT=1.0)[2]
    return fes, compute_pmf(fes, 1.0)


def _compare(aa, surface, reference, numbers, bonds) -> dict:
    from ase_mlmd.observables.fes import pmf_mae
    from ase_mlmd.observables.fes_compare import compare_fes

    (fes, pmf), (fes_ref, pmf_ref) = surface, reference
    comparison = compare_fes(fes, fes_ref)
    valid, clash = valid_and_clashing(aa, numbers, bonds)
    return {
        "fes_mae_kT": comparison.mae_kT,
        "fes_bins_compared": comparison.n_compared,
        "fes_bins_missing": comparison.n_missing,
        "missing_population": comparison.missing_population,
        "extra_population": comparison.extra_population,
        "pmf_mae_phi_kT": pmf_mae(pmf_ref[0], pmf[0], clip=8.0),
        "pmf_mae_psi_kT": pmf_mae(pmf_ref[1], pmf[1], clip=8.0),
        "valid": float(valid.mean()),
        "clash_free": float((~clash).mean()),
        "valid_clash_free": float((valid & ~clash).mean()),
    }


def plot_fes_pmf(surfaces: dict, out: Path) -> None:
    """``fes.png`` (the FES of each entry of ``surfaces``, kT, capped at 8) and ``pmf.png``
    (φ and ψ PMFs); ``surfaces``: reference, backmapper (mapped reference backmapped), loop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ase_mlmd.fileio import atomic_output
    from ase_mlmd.observables.fes import angle_grid

    titles = {"reference": "all-atom reference", "backmapper": "reference → CG → backmapped",
              "loop": "CG MD → backmapped"}  # fmt: skip
    extent = np.degrees([-np.pi, np.pi, -np.pi, np.pi])
    fig, axes = plt.subplots(1, len(surfaces), figsize=(4.2 * len(surfaces), 3.8))
    for ax, (key, (free, _)) in zip(axes, surfaces.items(), strict=True):
        shown = np.where(np.isfinite(free), np.minimum(free, 8.0), np.nan)
        image = ax.imshow(shown.T, origin="lower", extent=extent, vmin=0, vmax=8)
        ax.set(title=titles.get(key, key), xlabel="φ (deg)", ylabel="ψ (deg)")
    fig.colorbar(image, ax=list(axes), label="F (kT)")
    with atomic_output(out / "fes.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.2))
    for ax, k, name in zip(axes, (0, 1), ("φ", "ψ"), strict=True):
        for n, (key, (_, pmf)) in enumerate(surfaces.items()):
            grid = np.degrees(angle_grid(len(pmf[k])))
            ax.plot(grid, np.minimum(pmf[k], 8.0), color="k" if n == 0 else f"C{n}",
                    label=titles.get(key, key))  # fmt: skip
        ax.set(xlabel=f"{name} (deg)", ylabel="PMF (kT, capped at 8)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_output(out / "pmf.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def report_markdown(summary: dict) -> str:
    """The loop's report: settings, the table (CG MD → backmapped, and the backmapper alone on
    the mapped reference frames), the plots."""
    s, b = summary, summary["backmapper_only"]

    def both(fmt: str, *keys: str) -> str:
        return f"{fmt.format(*[s[k] for k in keys])} | {fmt.format(*[b[k] for k in keys])}"

    md = s["settings"]
    lines = [
        "# CG → simulate → backmap → evaluate",
        "",
        f"CG model `{s['cg_model']}`, backmapper `{s['backmapper']}` ({s['mapping']}). CG MD: "
        f"{md['replicas']} replicas × {md['steps']} steps of {md['timestep']} fs "
        f"({s['cg_time_ns']:.3g} ns), {s['cg_md']['collapsed']} collapsed; "
        f"{s['n_backmapped']} CG frames backmapped (one sample each); {s['n_reference']} "
        "all-atom reference frames.",
        "",
        "All-atom φ/ψ (atoms "
        f"{s['phi_quartet']}, {s['psi_quartet']}) on a 60 × 60 grid, F in kT; FES MAE over the "
        "bins the reference populates below 4 kT after removing the mean offset; PMF MAE × 2π "
        "with PMFs capped at 8 kT. Valid: the bond graph (d < 1.3 × summed covalent radii) "
        "equals the topology's; clash: a pair > 3 bonds apart closer than 0.8 × the summed van "
        "der Waals radii (METRICS §4). The second column backmaps the mapped reference frames "
        "themselves: the backmapper's own share of the error, without the CG model.",
        "",
        "| quantity | CG MD → backmapped | reference → CG → backmapped |",
        "|---|---|---|",
        f"| FES MAE (kT) | {both('{:.3f}', 'fes_mae_kT')} |",
        f"| bins compared / missing | {both('{} / {}', 'fes_bins_compared', 'fes_bins_missing')} |",
        f"| missing / extra population | "
        f"{both('{:.3f} / {:.3f}', 'missing_population', 'extra_population')} |",
        f"| PMF MAE φ / ψ (kT) | {both('{:.3f} / {:.3f}', 'pmf_mae_phi_kT', 'pmf_mae_psi_kT')} |",
        f"| valid | {both('{:.3f}', 'valid')} |",
        f"| clash-free | {both('{:.3f}', 'clash_free')} |",
        f"| valid and clash-free | {both('{:.3f}', 'valid_clash_free')} |",
        "",
        f"Reference frames valid and clash-free: {s['reference_valid_clash_free']:.3f} (the "
        "floor: hydrogen bonds fall below the clash threshold).",
        "",
        "![FES](fes.png)",
        "",
        "![PMF](pmf.png)",
        "",
    ]
    return "\n".join(lines)
