"""MD throughput in atom-steps per second: ASE, this package's batched engine, and TorchSim.

For each case (a NequIP and a SchNet network on ethanol, 9 atoms; Lennard-Jones on an 864-atom
fcc argon box) and each number of replicas, it measures in one run, side by side:

* ASE:      ``ase.md.verlet.VelocityVerlet`` (or ``Langevin``) driving ``MLCalculator`` on one
            system: the loop that batching is meant to beat (one system per step, so its
            throughput does not depend on the number of replicas);
* engine:   ``ForceField`` (skin neighbor list) + ``make_integrator`` on an ``MDState`` of all
            replicas, the bare ``integrator.step`` loop;
* TorchSim: ``torch_sim.nve`` (or ``nvt_langevin``) on a TorchSim state of the same replicas,
            the bare update loop, with nequip's own TorchSim wrapper
            (``nequip.integrations.torchsim.NequIPTorchSimCalc``, vesin neighbor list), TorchSim's
            ``LennardJonesModel``, and for SchNet — TorchSim ships no schnetpack wrapper — a
            small ``ModelInterface`` adapter written here (:class:`SchNetTorchSimModel`) that
            builds TorchSim's per-system vesin lists and calls our ``SchNetPackModel`` energy
            with autograd forces, as TorchSim's own wrappers for other models do.

Every path uses the same model weights, the same time step, cutoff and initial positions and
momenta (replicas differ in their momenta). Positions, momenta and integration are float64 on
every path; the networks compute in ``--model-dtype`` (float64 by default; float32 is what the
trained cards in ``calculators/`` use — every path then casts the float64 coordinates at the
model call, as nequip's own wrappers do). LJ is always float64. Atom-steps/s = replicas × atoms ×
steps / seconds. Timing rounds are interleaved (order rotated each round) and the median is
reported, so machine noise hits every path alike. As a check that the paths integrate the same
dynamics, the largest difference of the final positions against the engine is printed.

Usage:  python benchmarks/md_throughput.py [--device cpu] [--quick] [--replicas 1 8 64 256]
            [--cases nequip schnet lj] [--ensemble nve] [--model-dtype float32]
            [-o results.json]
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet
from torch_sim.models.interface import ModelInterface
from torch_sim.neighbors import vesin_nl_ts

from ase_mlmd import MLCalculator
from ase_mlmd.batch import AtomsBatch
from ase_mlmd.md.forcefield import ForceField
from ase_mlmd.md.integrators import make_integrator
from ase_mlmd.md.state import MDState

FRICTION_PER_FS = 0.01


# ---------------------------------------------------------------- systems and models
def ethanol() -> Atoms:
    """Ethanol in vacuum (9 atoms, open boundaries)."""
    return molecule("CH3CH2OH")


def argon_box() -> Atoms:
    """fcc argon, 6×6×6 cubic cells: 864 atoms, periodic."""
    return bulk("Ar", "fcc", a=5.26, cubic=True).repeat(6)


def replicas(atoms: Atoms, n: int, temperature_K: float) -> list[Atoms]:
    """``n`` copies of ``atoms`` with Maxwell–Boltzmann momenta (a different draw for each)."""
    out = []
    for k in range(n):
        copy = atoms.copy()
        thermalize_momenta(copy, temperature_K=temperature_K, rng=np.random.default_rng(k))
        out.append(copy)
    return out


@dataclass
class Case:
    """A model on a system, with the same model in this package's and TorchSim's form."""

    name: str
    system: str
    atoms: Atoms
    timestep_fs: float
    temperature_K: float
    ours: torch.nn.Module  # an ase_mlmd energy model
    torchsim: Callable[[], torch.nn.Module]  # builds TorchSim's ModelInterface
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    notes: list[str] = field(default_factory=list)


def nequip_case(device: str, model_dtype: str = "float64", cutoff: float = 5.0) -> Case:
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
    from nequip.integrations.torchsim import NequIPTorchSimCalc
    from nequip.utils import torch_default_dtype

    from ase_mlmd.models.backends.nequip import NequipModel, build_nequip_model

    types = ["H", "C", "O"]
    graph_model = build_nequip_model(
        type_names=types,
        r_max=cutoff,
        seed=0,
        num_layers=3,
        num_features=32,
        l_max=1,
        model_dtype=model_dtype,
    ).eval()

    def torchsim() -> torch.nn.Module:
        transforms = [
            ChemicalSpeciesToAtomTypeMapper(
                model_type_names=types, chemical_species_to_atom_type_map=None
            ),
            NeighborListTransform(r_max=cutoff, backend="vesin"),
        ]
        calc = NequIPTorchSimCalc(graph_model, device=device, transforms=transforms)
        calc.compute_stress = False
        return calc

    return Case(
        "NequIP",
        "ethanol",
        ethanol(),
        0.5,
        300.0,
        NequipModel(graph_model).to(device),
        torchsim,
        # nequip's data tools follow torch's default dtype; its models expect float64 data
        context=lambda: torch_default_dtype(torch.float64),
    )


def schnet_case(device: str, model_dtype: str = "float64", cutoff: float = 5.0) -> Case:
    from ase_mlmd.models.backends.schnetpack import SchNetPackModel, build_schnet_model

    nnp = build_schnet_model(
        cutoff=cutoff,
        n_atom_basis=128,
        n_interactions=3,
        n_rbf=20,
        seed=0,
        dtype=getattr(torch, model_dtype),
    ).eval()
    model = SchNetPackModel(nnp).to(device)
    return Case(
        "SchNet",
        "ethanol",
        ethanol(),
        0.5,
        300.0,
        model,
        lambda: SchNetTorchSimModel(model, device),
        notes=["TorchSim has no schnetpack wrapper: SchNetTorchSimModel (this script)"],
    )


def lj_case(device: str, model_dtype: str = "float64") -> Case:
    del model_dtype  # analytic: always float64
    from torch_sim.models.lennard_jones import LennardJonesModel

    from ase_mlmd.models.pair import LennardJones

    sigma, epsilon = 3.405, 0.0104  # argon, Å and eV
    cutoff = 2.5 * sigma
    # plain truncation at the cutoff, as TorchSim's LennardJonesModel does
    ours = LennardJones(epsilon=epsilon, sigma=sigma, cutoff=cutoff, cutoff_mode="none")

    class LennardJonesModelFixed(LennardJonesModel):
        """torch-sim 0.3.0's ``LennardJonesModel`` returns twice -dE/dx with its full
        neighbor list (it adds every pair's force to both atoms, and sees every pair twice;
        checked against finite differences of its own energy). Halved here so that every path
        integrates the same dynamics; the extra multiplication is timed with TorchSim."""

        def forward(self, state, **kwargs) -> dict[str, torch.Tensor]:
            out = super().forward(state, **kwargs)
            out["forces"] = 0.5 * out["forces"]
            return out

    def torchsim() -> torch.nn.Module:
        return LennardJonesModelFixed(
            sigma=sigma,
            epsilon=epsilon,
            cutoff=cutoff,
            device=torch.device(device),
            dtype=torch.float64,
            compute_forces=True,
            compute_stress=False,
        )

    return Case("LJ", "argon fcc", argon_box(), 2.0, 50.0, ours.to(device), torchsim)


class SchNetTorchSimModel(ModelInterface):
    """TorchSim ``ModelInterface`` over a :class:`SchNetPackModel`.

    Per-system vesin neighbor lists rebuilt at every call (``torch_sim.neighbors.vesin_nl_ts``,
    the default of TorchSim's own ML wrappers), then the model's energy and forces by autograd
    (the float64 coordinates cast to the model's dtype at the call, energy cast back).
    """

    def __init__(self, model: torch.nn.Module, device: str) -> None:
        super().__init__()
        self.model = model
        self._device = torch.device(device)
        self._dtype = torch.float64
        self._compute_forces = True
        self._compute_stress = False
        self.cutoff = torch.tensor(model.cutoff, dtype=torch.float64)

    def forward(self, state, **_) -> dict[str, torch.Tensor]:
        positions = state.positions.detach().requires_grad_(True)
        cell = state.row_vector_cell
        counts = state.n_atoms_per_system.tolist()
        edges, shifts, start = [], [], 0
        for b, n in enumerate(counts):
            mapping, shift = vesin_nl_ts(
                positions[start : start + n], cell[b], state.pbc, self.cutoff
            )
            edges.append(mapping + start)
            shifts.append(shift)
            start += n
        batch = AtomsBatch(
            positions,
            state.atomic_numbers.long(),
            cell,
            torch.full((len(counts), 3), bool(state.pbc), device=self._device),
            state.system_idx,
            torch.cat(edges, dim=1),
            torch.cat(shifts).long(),
        )
        energy = self.model(batch.to(dtype=self.model.dtype))["energy"].to(torch.float64)
        forces = -torch.autograd.grad(energy.sum(), positions)[0]
        return {"energy": energy.detach(), "forces": forces}


CASES = {"nequip": nequip_case, "schnet": schnet_case, "lj": lj_case}


# ---------------------------------------------------------------- the three MD loops
def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class Runner:
    """An MD run that can be advanced and timed in pieces."""

    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext

    def __init__(self, device: str) -> None:
        self.device = device

    def step(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, steps: int) -> float:
        """Seconds per step over ``steps`` steps."""
        with self.context():
            _sync(self.device)
            start = time.perf_counter()
            for _ in range(steps):
                self.step()
            _sync(self.device)
            return (time.perf_counter() - start) / steps

    def positions(self) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


class ASERunner(Runner):
    def __init__(self, case: Case, atoms: Atoms, ensemble: str, device: str) -> None:
        super().__init__(device)
        self.atoms = atoms.copy()
        self.atoms.set_momenta(atoms.get_momenta())
        self.atoms.calc = MLCalculator(case.ours, device=device)
        dt = case.timestep_fs * units.fs
        if ensemble == "nve":
            self.dyn = VelocityVerlet(self.atoms, timestep=dt)
        else:
            self.dyn = Langevin(
                self.atoms,
                dt,
                temperature_K=case.temperature_K,
                friction=FRICTION_PER_FS / units.fs,
                rng=np.random.default_rng(0),
            )

    def step(self) -> None:
        self.dyn.run(1)

    def positions(self) -> np.ndarray:
        return self.atoms.positions.copy()


class EngineRunner(Runner):
    def __init__(self, case: Case, systems: list[Atoms], ensemble: str, device: str) -> None:
        super().__init__(device)
        self.forcefield = ForceField(case.ours, skin=1.0)
        self.integrator = make_integrator(
            ensemble,
            self.forcefield,
            case.timestep_fs,
            temperature_K=case.temperature_K,
            friction_per_fs=FRICTION_PER_FS,
        )
        self.state = self.integrator.init(MDState.from_atoms(systems, device=device))

    def step(self) -> None:
        self.state = self.integrator.step(self.state)

    def positions(self) -> np.ndarray:
        return self.state.positions.detach().cpu().numpy()


class TorchSimRunner(Runner):
    def __init__(self, case: Case, systems: list[Atoms], ensemble: str, device: str) -> None:
        import torch_sim as ts

        super().__init__(device)
        self.context = case.context
        with self.context():
            model = case.torchsim()
            dt = torch.tensor(case.timestep_fs * units.fs, dtype=torch.float64, device=device)
            kT = torch.tensor(units.kB * case.temperature_K, dtype=torch.float64, device=device)
            if ensemble == "nve":
                init, self.update = ts.nve(model=model, dt=dt, kT=kT, seed=0)
            else:
                gamma = torch.tensor(FRICTION_PER_FS / units.fs, dtype=torch.float64)
                init, self.update = ts.nvt_langevin(
                    model=model, dt=dt, kT=kT, gamma=gamma.to(device), seed=0
                )
            state = ts.initialize_state(systems, torch.device(device), torch.float64)
            self.state = init(state)
            # the same initial momenta as the other paths (TorchSim's init draws its own)
            momenta = np.concatenate([a.get_momenta() for a in systems])
            self.state.momenta = torch.tensor(momenta, dtype=torch.float64, device=device)

    def step(self) -> None:
        self.state = self.update(self.state)

    def positions(self) -> np.ndarray:
        return self.state.positions.detach().cpu().numpy()


def max_deviation(a: np.ndarray, b: np.ndarray, atoms: Atoms) -> float:
    """Largest distance between two sets of positions (minimum image in periodic cells)."""
    delta = a - b
    if atoms.pbc.all():
        cell = atoms.cell.array
        frac = delta @ np.linalg.inv(cell)
        delta = (frac - np.round(frac)) @ cell
    return float(np.linalg.norm(delta, axis=1).max())


# ---------------------------------------------------------------- measuring
def measure(case: Case, n: int, args, ase_runner: Runner | None) -> dict:
    """Time the paths for ``n`` replicas of ``case``; returns one table row."""
    systems = replicas(case.atoms, n, case.temperature_K)
    runners: dict[str, Runner] = {}
    if ase_runner is not None:
        runners["ase"] = ase_runner
    runners["engine"] = EngineRunner(case, systems, args.ensemble, args.device)
    runners["torchsim"] = TorchSimRunner(case, systems, args.ensemble, args.device)
    first_step = {name: runner(1) for name, runner in runners.items()}  # warm-up
    first_step = {name: runner(1) for name, runner in runners.items()}
    slowest = max(first_step.values())
    steps = int(np.clip(round(args.target_s / slowest), 1, args.max_steps))
    builds_before = runners["engine"].forcefield.n_builds
    samples: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for round_ in range(args.rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(runners[name](steps))
    seconds = {name: float(np.median(v)) for name, v in samples.items()}
    atoms_total = n * len(case.atoms)
    engine_positions = runners["engine"].positions()
    deviation = max_deviation(runners["torchsim"].positions(), engine_positions, case.atoms)
    row = {
        "model": case.name,
        "model_dtype": str(case.ours.dtype).removeprefix("torch."),
        "system": case.system,
        "replicas": n,
        "atoms": atoms_total,
        "steps_per_round": steps,
        "engine_builds": runners["engine"].forcefield.n_builds - builds_before,
        "engine_steps": 2 + steps * args.rounds,
        "engine": atoms_total / seconds["engine"],
        "torchsim": atoms_total / seconds["torchsim"],
        "ms_per_step": {name: 1e3 * s for name, s in seconds.items()},
        "samples_ms": {name: [1e3 * x for x in v] for name, v in samples.items()},
        "torchsim_max_dx": deviation,
    }
    if "ase" in runners:
        row["ase"] = len(case.atoms) / seconds["ase"]
        row["ase_max_dx"] = max_deviation(
            runners["ase"].positions(), engine_positions[: len(case.atoms)], case.atoms
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="1 and 8 replicas, short rounds")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--ensemble", default="nve", choices=["nve", "nvt-langevin"])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--target-s", type=float, default=2.0, help="seconds per path and round")
    parser.add_argument("--max-steps", type=int, default=200, help="most steps per round")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--model-dtype",
        default="float64",
        choices=["float64", "float32"],
        help="dtype the NequIP/SchNet networks compute in (coordinates stay float64)",
    )
    parser.add_argument("-o", "--output", default=None, help="write results as JSON")
    args = parser.parse_args()
    if args.quick:
        args.replicas = [n for n in args.replicas if n <= 8] or [1]
        args.rounds, args.target_s, args.max_steps = 2, 0.2, 20
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for key in args.cases:
        case = CASES[key](args.device, args.model_dtype)
        ase_runner = ASERunner(
            case, replicas(case.atoms, 1, case.temperature_K)[0], args.ensemble, args.device
        )
        ase_value = None
        for n in sorted(args.replicas):
            row = measure(case, n, args, ase_runner if n == min(args.replicas) else None)
            ase_value = row.get("ase", ase_value)
            row["ase"] = ase_value
            row["engine_over_ase"] = row["engine"] / ase_value
            row["engine_over_torchsim"] = row["engine"] / row["torchsim"]
            rows.append(row)
            print(
                f"done {case.name} {case.system} x{n}: engine {row['engine']:.0f}, TorchSim "
                f"{row['torchsim']:.0f}, ASE {ase_value:.0f} atom-steps/s",
                flush=True,
            )
    print(
        f"\n{date.today()}, device {args.device}, torch {torch.__version__}, "
        f"{platform.machine()}, {torch.get_num_threads()} threads, networks in "
        f"{args.model_dtype}, {args.ensemble}, "
        f"median of {args.rounds} interleaved rounds\n"
    )
    print(
        "| model | system | replicas | atoms | ASE loop | engine | TorchSim "
        "| engine / ASE | engine / TorchSim | engine list builds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['system']} | {r['replicas']} | {r['atoms']} | {r['ase']:.0f} "
            f"| {r['engine']:.0f} | {r['torchsim']:.0f} | {r['engine_over_ase']:.1f} "
            f"| {r['engine_over_torchsim']:.2f} | {r['engine_builds']} / {r['engine_steps']} |"
        )
    print("\natom-steps/s; largest final-position difference against the engine (Å):")
    for r in rows if args.ensemble == "nve" else []:
        extra = f", ASE {r['ase_max_dx']:.1e}" if "ase_max_dx" in r else ""
        print(f"  {r['model']} x{r['replicas']}: TorchSim {r['torchsim_max_dx']:.1e}{extra}")
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
