"""Report of the helix-folding control demo: pictures, a Markdown table and the final chains.

Every file is written to a temporary name in the output folder and moved into place.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase.io import write

from ase_mlmd.diffsim.geometry import kabsch_align, kabsch_rmsd

if TYPE_CHECKING:
    from ase_mlmd.diffsim.control import ControlResult


def _atomic(path: Path, write_to) -> None:
    """Call ``write_to(tmp_path)`` and move the temporary file onto ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write_to(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; use the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _draw_chain(ax, chain: np.ndarray, target: np.ndarray, title: str) -> None:
    """Target helix (grey) and ``chain`` superposed on it (coloured from first to last bead)."""
    aligned = kabsch_align(chain, target)
    ax.plot(*target.T, "-", color="0.6", lw=3, alpha=0.6, label="target helix")
    ax.scatter(*target.T, color="0.6", s=25, alpha=0.6)
    ax.plot(*aligned.T, "-", color="tab:blue", lw=1.5, label="chain")
    colors = np.linspace(0.0, 1.0, len(aligned))
    ax.scatter(*aligned.T, c=colors, cmap="viridis", s=35, depthshade=False)
    span = np.ptp(np.concatenate([aligned, target]), axis=0).max() / 2 + 0.3
    centre = target.mean(axis=0)
    for setter, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre, strict=True):
        setter(c - span, c + span)
    ax.set_box_aspect((1, 1, 1))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("x (σ)")
    ax.set_ylabel("y (σ)")
    ax.set_zlabel("z (σ)")


def plot_chains(result: ControlResult, path: Path) -> None:
    """Three 3-D panels: the start chain, the uncontrolled and the controlled chain at the end
    of the evaluation run (replica 0), each superposed on the target helix by Kabsch."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    target = result.target
    panels = [
        (result.start, "start"),
        (result.initial.final_positions[0], "no control, end of run"),
        (result.final.final_positions[0], "learned control, end of run"),
    ]
    fig = plt.figure(figsize=(13, 4.6))
    for k, (chain, name) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1, projection="3d")
        _draw_chain(ax, chain, target, f"{name}\nRMSD {kabsch_rmsd(chain, target):.2f} σ")
        if k == 0:
            ax.legend(loc="upper left", fontsize=8)
    fig.subplots_adjust(left=0.02, right=0.96, top=0.86, bottom=0.05, wspace=0.12)
    _atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def plot_history(result: ControlResult, path: Path) -> None:
    """Training curve: objective and last-frame loss (log scale) and RMSD per epoch."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    get = {key: np.array([h[key] for h in result.history]) for key in result.history[0]}
    epochs = get["epoch"] + 1
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.semilogy(epochs, get["objective"], label="objective (frames of the loss windows)")
    left.semilogy(epochs, get["final_loss"], label="loss, last frame")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend()
    right.plot(epochs, get["rmsd"], color="tab:green")
    right.set_xlabel("epoch")
    right.set_ylabel("RMSD to helix, last frame (σ)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle("learning a control potential by differentiating through Langevin MD")
    fig.tight_layout()
    _atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def write_control_report(result: ControlResult, output_dir: str | os.PathLike) -> dict[str, str]:
    """Write ``control_chain.png``, ``control_loss.png``, ``control.md`` and
    ``control_final.extxyz`` (the final chain of each replica, then the target helix) into
    ``output_dir``; return their paths by kind."""
    from ase_mlmd.diffsim.control import chain_atoms

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "chain_png": out / "control_chain.png",
        "loss_png": out / "control_loss.png",
        "table_md": out / "control.md",
        "final_extxyz": out / "control_final.extxyz",
    }
    plot_chains(result, files["chain_png"])
    if result.history:
        plot_history(result, files["loss_png"])
    else:
        del files["loss_png"]
    c = result.config
    text = (
        f"# Helix folding by a learned control potential\n\n{result.table()}\n\n"
        f"{c.n_beads} beads, {c.replicas} replicas, {c.steps} steps of {c.timestep} τ at "
        f"T* = {c.temperature}, {c.epochs} epochs; last frame of an evaluation run with a "
        f"held-out seed; {result.wall_time_s:.0f} s wall time.\n"
    )
    _atomic(files["table_md"], lambda tmp: Path(tmp).write_text(text))
    frames = [chain_atoms(x) for x in result.final.final_positions]
    frames.append(chain_atoms(result.target))
    _atomic(files["final_extxyz"], lambda tmp: write(tmp, frames, format="extxyz"))
    return {kind: str(path) for kind, path in files.items()}
