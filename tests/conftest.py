"""Shared fixtures: test structures, the shared data folder, and a clean ASE calculator registry.

Structures are small on purpose (the whole suite runs on two CPU cores): a rattled periodic
argon crystal, a rattled argon cluster in vacuum, and ethanol (for element checks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.cluster import Icosahedron

#: the project's shared data folder (beside the checkout, not inside it)
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: fcc argon lattice constant near the LJ-argon minimum, Å
AR_LATTICE = 5.26


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch intra-op thread for the whole suite.

    The test systems have at most ~1500 atoms; on a 2-core machine torch's OpenMP threads cost
    more than they give (measured: 2.6 vs 11.7 ms per MD step for 108 argon atoms with 1 and 2
    threads on a busy machine). Results do not depend on it.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shared_file(relpath: str | Path) -> Path:
    """Path of a file under the shared data folder; fails the test (never skips) if missing."""
    path = SHARED_DATA / relpath
    if not path.exists():
        pytest.fail(
            f"shared data file {path} is missing (expected under {SHARED_DATA}); "
            "restore the shared data folder before running this test",
            pytrace=False,
        )
    return path


@pytest.fixture(name="shared_file")
def shared_file_fixture():
    """The :func:`shared_file` helper as a fixture: ``shared_file("ala2/...")``."""
    return shared_file


def make_ar_crystal(repeat: int = 2, rattle: float = 0.05, seed: int = 0) -> Atoms:
    """Cubic fcc argon (4 repeat^3 atoms), periodic, positions rattled by ``rattle`` Å."""
    atoms = bulk("Ar", "fcc", a=AR_LATTICE, cubic=True).repeat(repeat)
    atoms.rattle(rattle, rng=np.random.default_rng(seed))
    return atoms


def make_ar_cluster(rattle: float = 0.1, seed: int = 1) -> Atoms:
    """13-atom argon icosahedron in vacuum (no cell, no pbc), positions rattled."""
    atoms = Icosahedron("Ar", noshells=2, latticeconstant=AR_LATTICE)
    atoms.rattle(rattle, rng=np.random.default_rng(seed))
    atoms.set_cell(np.zeros((3, 3)))
    atoms.pbc = False
    return atoms


@pytest.fixture
def ar_crystal() -> Atoms:
    """32 argon atoms, fcc, periodic cell of 10.52 Å (smaller than twice the 8.5 Å cutoff)."""
    return make_ar_crystal()


@pytest.fixture
def ar_cluster() -> Atoms:
    """13 argon atoms, rattled icosahedron, non-periodic."""
    return make_ar_cluster()


@pytest.fixture
def ethanol() -> Atoms:
    """Ethanol (C2H5OH) from ASE's g2 set, non-periodic."""
    return molecule("CH3CH2OH")


@pytest.fixture
def clean_ase_registry():
    """Snapshot ASE's global calculator registry and restore it after the test.

    ASE keeps registered calculator classes in module-level containers
    (``external_calculators`` and the ``names`` list); a test that registers cards from a
    temporary ``ASE_MLMD_CARD_PATH`` must not leave them behind for later tests.
    """
    from ase.calculators import calculator as ase_calculator

    saved_external = dict(ase_calculator.external_calculators)
    saved_names = list(ase_calculator.names)
    yield
    ase_calculator.external_calculators.clear()
    ase_calculator.external_calculators.update(saved_external)
    ase_calculator.names[:] = saved_names


def cli_fails(args: list[str], capsys) -> str:
    """Run ``ase-mlmd ARGS`` in-process, expect argparse's clean error exit (code 2, no
    traceback) and return what it printed on stderr."""
    from ase_mlmd.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def results(calc, atoms: Atoms) -> dict:
    """Energy, forces (and stress when periodic) of ``atoms`` with ``calc``, through ASE."""
    a = atoms.copy()
    a.calc = calc
    out = {"energy": a.get_potential_energy(), "forces": a.get_forces()}
    if a.pbc.all():
        out["stress"] = a.get_stress()
    return out


def assert_matches(ours: dict, ref: dict, rtol: float = 1e-10) -> None:
    """Every property of ``ref`` matches ``ours`` to ``rtol`` relative to its largest entry."""
    for key, value in ref.items():
        scale = max(np.abs(value).max(), 1e-6)
        err = np.abs(np.asarray(ours[key]) - value).max() / scale
        assert err < rtol, f"{key}: relative error {err:.2e}"
    assert abs(ref["energy"]) > 1e-3
