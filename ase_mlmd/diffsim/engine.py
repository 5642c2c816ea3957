"""The simulations of a DiffSim fit: all state points in one batched Nosé–Hoover-chain run.

Every state is a system of one :class:`~ase_mlmd.md.state.MDState` (cubic box, its own
temperature), all driven by the same pair potential through one
:class:`~ase_mlmd.md.forcefield.ForceField`, so a multi-state fit costs one model call per step.
Thermostat: Nosé–Hoover chain of ``chain_length`` (default 5) with first mass Q (default 50, in
eV·(ASE time)², reduced units in LJ units): Q = 3 N k_B T τ² fixes the engine's time constant τ
(from the mean k_B T when states differ in temperature).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence

import torch
from ase import units

from ase_mlmd.diffsim.systems import ThermoState, initial_atoms, temperature_kelvin, timestep_fs
from ase_mlmd.diffsim.targets import RDFTarget
from ase_mlmd.errors import DataFormatError, InvalidStructureError
from ase_mlmd.md.forcefield import ForceField
from ase_mlmd.md.integrators import Integrator, make_integrator
from ase_mlmd.md.state import MDState
from ase_mlmd.models.species_pair import PairKey, pair_label
from ase_mlmd.observables.differentiable import (
    compute_rdf_torch,
    frame_pair_distances,
    rdf_from_distances,
    species_pairs,
)

#: a run counts as exploded when a temperature exceeds this multiple of its target
MAX_TEMPERATURE_RATIO = 10.0


@dataclasses.dataclass
class EngineConfig:
    """MD settings of a fit (reduced LJ units = ASE units with σ = 1 Å, ε = 1 eV, m = 1 amu).

    Attributes:
        timestep: dt in units of σ√(m/ε) (= ASE time units); 0.01 as the paper.
        nh_mass: first Nosé–Hoover chain mass Q, eV·(ASE time)².
        chain_length: Nosé–Hoover chain length.
        skin: neighbor-list skin, Å.
        equilibration: steps run before a fit or a production run starts.
        seed: seed of the initial velocities.
        device: torch device of the simulation.
    """

    timestep: float = 0.01
    nh_mass: float = 50.0
    chain_length: int = 5
    skin: float = 0.3
    equilibration: int = 1000
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not (self.timestep > 0 and self.nh_mass > 0 and self.chain_length >= 1):
            raise ValueError("timestep and nh_mass must be positive, chain_length >= 1")


@dataclasses.dataclass
class RDFChannel:
    """One RDF a fit compares: the RDF of a state, or one partial g_ab of a mixture state.

    Attributes:
        system: index of the state (system) in the batch.
        name: label in reports: the state's name, plus ``[A-B]`` for a partial RDF.
        target: the target RDF (its grid is the channel's grid).
        pairs: the atom pairs (i, j) within the system that count (None: all pairs).
        species: the (Z_a, Z_b) species pair all its atom pairs belong to (a partial RDF, or the
            RDF of a one-element box); None for the RDF of all pairs of a mixture.
    """

    system: int
    name: str
    target: RDFTarget
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None
    species: PairKey | None = None


class Engine:
    """Batched NVT simulation of several states with one pair potential.

    Its :attr:`channels` are the RDFs of the states' targets (one per state, or one per species
    pair of a mixture state); :meth:`rdf`, :meth:`frame_data` and :meth:`sample_rdf` return one
    entry per channel.

    Args:
        model: the pair potential the engine runs (e.g. a :class:`SplinePair` table).
        states: the state points, one system each.
        config: MD settings.
        differentiable: keep the graph through the forces (for BPTT).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        states: Sequence[ThermoState],
        config: EngineConfig | None = None,
        differentiable: bool = False,
    ) -> None:
        self.config = config or EngineConfig()
        self.states = list(states)
        if not self.states:
            raise ValueError("a fit needs at least one state")
        cutoff = float(model.cutoff)
        for state in self.states:
            state.check_box(cutoff)
        self.forcefield = ForceField(model, skin=self.config.skin)
        mean_kt = sum(s.temperature for s in self.states) / len(self.states)
        n_atoms = self.states[0].n_atoms
        tau = math.sqrt(self.config.nh_mass / (3.0 * n_atoms * mean_kt))  # ASE time
        self.integrator: Integrator = make_integrator(
            "nvt-nose-hoover",
            self.forcefield,
            timestep_fs(self.config.timestep),
            temperature_K=[temperature_kelvin(s.temperature) for s in self.states],
            tdamp_fs=tau / units.fs,
            chain_length=self.config.chain_length,
            differentiable=differentiable,
        )
        sizes = [s.n_atoms for s in self.states]
        starts = [0]
        for n in sizes:
            starts.append(starts[-1] + n)
        self.slices = [slice(a, b) for a, b in zip(starts[:-1], starts[1:], strict=True)]
        self.start_atoms = [
            initial_atoms(s, self.config.seed + k) for k, s in enumerate(self.states)
        ]
        self.numbers = [torch.as_tensor(a.numbers, dtype=torch.long) for a in self.start_atoms]
        #: the sorted atomic numbers present in each state's box
        self.box_elements = [sorted(set(n.tolist())) for n in self.numbers]
        self.channels = self._channels()

    def _channels(self) -> list[RDFChannel]:
        channels = []
        for b, state in enumerate(self.states):
            elements = self.box_elements[b]
            for target in state.rdf_targets:
                species = target.species
                if species is None:
                    alone = (elements[0], elements[0]) if len(elements) == 1 else None
                    channels.append(RDFChannel(b, state.name, target, species=alone))
                    continue
                pairs = species_pairs(self.numbers[b], *species)
                if len(pairs[0]) == 0:
                    raise InvalidStructureError(
                        f"state {state.name}: no {target.pair} pair among {state.n_atoms} atoms; "
                        "use more FCC cells"
                    )
                channels.append(
                    RDFChannel(b, f"{state.name}[{target.pair}]", target, pairs, species)
                )
        return channels

    def channel_terms(self, pairs: Sequence[PairKey] | None, complete: bool = False) -> list[int]:
        """The potential term that acts on each channel's atom pairs, for a potential with one
        term per species pair in ``pairs`` (None: one potential for all pairs, term 0).

        Args:
            complete: also require that each state's channels cover every species pair of its
                box exactly once (methods that need each frame's energy from the channels'
                pair distances: Newton, reweighting).

        Raises:
            DataFormatError: a channel whose pairs are not all of one listed species pair (the
                RDF of all pairs of a mixture, or a pair the potential lacks); with
                ``complete``, a state whose targets miss a species pair of its box.
        """
        terms = [0] * len(self.channels)
        if pairs is not None:
            for k, c in enumerate(self.channels):
                if c.species not in pairs:
                    raise DataFormatError(
                        f"channel {c.name}: its atom pairs are not all of one species pair of "
                        f"the potential ({[pair_label(p) for p in pairs]}); give the partial RDFs"
                    )
                terms[k] = list(pairs).index(c.species)
        for b, state in enumerate(self.states if complete else []):
            mine = [c.species for c in self.channels if c.system == b]
            if mine == [None] and pairs is None:
                continue  # the RDF of all pairs: complete
            present = set(itertools.combinations_with_replacement(self.box_elements[b], 2))
            if len(mine) != len(set(mine)) or set(mine) != present:
                raise DataFormatError(
                    f"state {state.name}: this method needs one target RDF per species pair of "
                    f"the box ({sorted(pair_label(p) for p in present)}); got "
                    f"{[c.name for c in self.channels if c.system == b]}"
                )
        return terms

    @property
    def channel_rows(self) -> list[slice]:
        """Each channel's bins within its state's RDF rows, the state's channels side by side
        (a mixture state: its partial RDFs), as methods that work per state lay them out."""
        rows, filled = [], [0] * len(self.states)
        for c in self.channels:
            rows.append(slice(filled[c.system], filled[c.system] + len(c.target.r)))
            filled[c.system] = rows[-1].stop
        return rows

    def by_state(
        self, data: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    ) -> list[tuple[torch.Tensor, list[tuple[int, torch.Tensor, torch.Tensor]]]]:
        """:meth:`frame_data` regrouped per state: its channels' per-frame RDFs side by side
        (F, bins of its channels, laid out as :attr:`channel_rows`) and, per channel of the state,
        (channel index, pair distances, frame index)."""
        grouped: list[tuple[list, list]] = [([], []) for _ in self.states]
        for k, (c, (g, d, frame)) in enumerate(zip(self.channels, data, strict=True)):
            grouped[c.system][0].append(g)
            grouped[c.system][1].append((k, d, frame))
        return [(torch.cat(gs, dim=1), pairs) for gs, pairs in grouped]

    def state_targets(self) -> list[torch.Tensor]:
        """Per state, its channels' target g side by side (the layout of :meth:`by_state`)."""
        rows: list[list[torch.Tensor]] = [[] for _ in self.states]
        for c in self.channels:
            rows[c.system].append(c.target.g_tensor())
        return [torch.cat(r) for r in rows]

    @property
    def grids(self) -> list:
        """The RDF grid of each channel."""
        return [c.target.grid for c in self.channels]

    def initial_state(self) -> MDState:
        """FCC starts with Maxwell–Boltzmann momenta, initialized (forces computed)."""
        state = MDState.from_atoms(self.start_atoms, device=self.config.device)
        with torch.no_grad():
            return self.integrator.init(state)

    def reinit(self, state: MDState) -> MDState:
        """Recompute forces (and thermostat settings) of a carried state with the current model."""
        expected = torch.cat(self.numbers).to(state.numbers.device)
        if state.numbers.shape != expected.shape or not bool((state.numbers == expected).all()):
            raise InvalidStructureError(
                "the state to continue from has other atoms (or another order) than these "
                "states' start; continue only from a run of the same states and seed"
            )
        with torch.no_grad():
            return self.forcefield(state.detach())

    def run(self, state: MDState, steps: int) -> MDState:
        """Advance ``steps`` steps without a graph."""
        with torch.no_grad():
            for _ in range(steps):
                state = self.integrator.step(state)
        return state

    def rdf(
        self, positions: torch.Tensor, cell: torch.Tensor, per_frame: bool = False
    ) -> list[torch.Tensor]:
        """Per-channel RDFs of frames (F, N, 3) of the batched state (cell (B, 3, 3))."""
        return [
            compute_rdf_torch(
                positions[:, self.slices[c.system]],
                cell[c.system],
                c.target.grid,
                per_frame=per_frame,
                pairs=c.pairs,
            )
            for c in self.channels
        ]

    def frame_data(
        self, frames: torch.Tensor, cell: torch.Tensor, cutoff: float
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per channel, for frames (F, N, 3) of the batched state (cell (B, 3, 3)): the
        per-frame RDFs (F, bins), the pair distances below ``cutoff`` (P,) and their frame
        index (P,). One pass over the pairs serves both."""
        n = frames.shape[0]
        out = []
        for c in self.channels:
            cells = cell[c.system].expand(n, 3, 3)
            positions = frames[:, self.slices[c.system]]
            grid = c.target.grid
            r_max = max(cutoff, grid.end + grid.reach)
            d, frame = frame_pair_distances(positions, cells, r_max, c.pairs)
            n_pairs = None if c.pairs is None else len(c.pairs[0])
            rdfs = rdf_from_distances(d, frame, cells, grid, "mdgrad", positions.shape[1], n_pairs)
            inside = d < cutoff
            out.append((rdfs, d[inside], frame[inside]))
        return out

    def sample_frame_data(
        self,
        state: MDState,
        n_frames: int,
        every: int,
        cutoff: float,
        reduce: Callable[[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]], None],
        chunk: int = 10,
        stop_when_unstable: bool = False,
    ) -> tuple[MDState, bool]:
        """Run ``n_frames × every`` steps without a graph; every ``chunk`` frames hand
        ``reduce(n, data)`` the :meth:`frame_data` of those n frames (memory independent of the
        run length). With ``stop_when_unstable`` the run stops at the first frame that
        :meth:`instability` flags. Returns (final state, whether it ran to the end)."""
        pending: list[torch.Tensor] = []

        def flush() -> None:
            frames = torch.stack(pending)
            reduce(frames.shape[0], self.frame_data(frames, state.cell, cutoff))
            pending.clear()

        with torch.no_grad():
            for _ in range(n_frames):
                state = self.run(state, every)
                if stop_when_unstable and self.instability(state) is not None:
                    return state, False
                pending.append(state.positions.clone())
                if len(pending) == chunk:
                    flush()
            if pending:
                flush()
        return state, True

    def sample_rdf(
        self, state: MDState, steps: int, every: int
    ) -> tuple[MDState, list[torch.Tensor], int]:
        """Run ``steps`` steps without a graph; average each channel's RDF over a frame every
        ``every`` steps. Returns the final state, the RDFs and the number of frames."""
        sums = [torch.zeros(g.nbins, dtype=state.dtype) for g in self.grids]
        frames = 0
        with torch.no_grad():
            for n in range(1, steps + 1):
                state = self.integrator.step(state)
                if n % every == 0:
                    for total, g in zip(
                        sums, self.rdf(state.positions[None], state.cell), strict=True
                    ):
                        total += g
                    frames += 1
        return state, [s / max(frames, 1) for s in sums], frames

    def instability(self, state: MDState) -> str | None:
        """Why the run counts as exploded (non-finite coordinates, a temperature above
        ``MAX_TEMPERATURE_RATIO`` × its target), or None when it is fine."""
        if not bool(torch.isfinite(state.positions).all() and torch.isfinite(state.momenta).all()):
            return "positions or momenta became NaN/inf"
        temps = state.temperature().detach() * units.kB
        for k, s in enumerate(self.states):
            if (
                not math.isfinite(float(temps[k]))
                or temps[k] > MAX_TEMPERATURE_RATIO * s.temperature
            ):
                return (
                    f"state {s.name}: temperature {float(temps[k]):.3g} (target "
                    f"{s.temperature:g}) after the step"
                )
        return None


def production_rdf(
    model: torch.nn.Module,
    states: Sequence[ThermoState],
    config: EngineConfig,
    steps: int,
    every: int,
    start: MDState | None = None,
    equilibration: int | None = None,
) -> tuple[list[torch.Tensor], MDState]:
    """Equilibrate, then average each state's RDF over ``steps`` steps (a frame every
    ``every``): the evaluation run of a fitted potential (and of the noise floor).

    Args:
        model: the pair potential to simulate (a spline table, or any pair potential).
        states: the state points (each needs a target, whose grid is used).
        config: MD settings; ``config.equilibration`` steps unless ``equilibration`` is given.
        start: a state to continue from (e.g. the end of a fit); default a fresh FCC start.

    Returns:
        (per-channel RDFs — one per state, or per species pair of a mixture — final state).
    """
    engine = Engine(model, states, config)
    state = engine.initial_state() if start is None else engine.reinit(start)
    n_equil = config.equilibration if equilibration is None else equilibration
    state = engine.run(state, n_equil)
    state, gs, _ = engine.sample_rdf(state, steps, every)
    return gs, state
