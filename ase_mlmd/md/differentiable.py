"""Differentiable MD: rollouts that keep the autograd graph, window checkpointing, truncated BPTT.

Build the integrator with ``differentiable=True`` (every force call keeps its graph), make the
tensors you want gradients for require grad, then run :func:`rollout`. Gradients of any scalar
function of the returned values or final state reach

* model parameters (``nn.Parameter`` of the energy model, e.g. ``LennardJones(trainable=True)``);
* initial positions and momenta (set ``requires_grad`` *before* ``integrator.init`` so that the
  initial forces depend on the positions);
* thermostat settings: pass a tensor that requires grad as ``temperature_K`` (it reaches the
  Langevin noise amplitude, with the noise itself fixed by the seed, and k_B T and the masses of
  a Nosé–Hoover chain), or put a tensor into ``state.thermostat["temperature"]`` after ``init``
  (then only k_B T sees it, e.g. the Nosé–Hoover masses stay fixed).

Memory. Plain backpropagation stores the graph of every step: O(steps · graph of one step).
``checkpoint_every=k`` runs windows of k steps without storing their graph, keeps only each
window's start state, and recomputes a window's graph when the backward pass reaches it:
O(steps/k · state + k · graph) memory for about one extra forward pass of compute. (The
non-reentrant ``torch.utils.checkpoint`` recomputes the window up to the current step each time a
force call differentiates inside the window, which makes the forward pass quadratic in k; hence a
dedicated autograd function here.) :func:`truncated_bptt` / :func:`bptt_windows` cut the graph
between windows (truncated backpropagation through time, as DiffSim fits do): memory is flat in
the trajectory length, and each window's loss is differentiated with its start state held fixed.

Notes:
    The forces of an initialized state carry the graph of the ``init`` force call; after a
    backward pass through a rollout, start the next one from a fresh ``init`` (or from
    :func:`carry_state` plus a force call) rather than reusing that state. Recomputing a window
    may rebuild the force field's neighbor list (its skin test is made against wherever the
    list was last built); the pairs inside the cutoff are the same, so recomputed windows equal
    the forward ones to rounding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch

from ase_mlmd.md.forcefield import ForceField
from ase_mlmd.md.integrators import Integrator
from ase_mlmd.md.state import MDState

#: a function of the state after each step, returning a tensor (same shape at every step)
Observable = Callable[[MDState], torch.Tensor]


def trajectory_positions(state: MDState) -> torch.Tensor:
    """The default observable: positions, (N, 3) Å (the rollout's values are the trajectory)."""
    return state.positions


@dataclasses.dataclass
class Rollout:
    """What :func:`rollout` returns; both fields keep their autograd graph.

    Attributes:
        state: the state after the last step.
        values: ``observable`` after each step, stacked: (steps, ...); None without observable
            (or with 0 steps).
    """

    state: MDState
    values: torch.Tensor | None


# ---------------------------------------------------------------------------- state <-> tensors
_Key = tuple[str, str | None]  # (field, thermostat key or None)


def _float_keys(state: MDState) -> list[_Key]:
    """The floating tensors of a state (the ones that can carry gradients), in a fixed order."""
    keys: list[_Key] = []
    for field in dataclasses.fields(state):
        value = getattr(state, field.name)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            keys.append((field.name, None))
    for name, value in (state.thermostat or {}).items():
        if value.is_floating_point():
            keys.append(("thermostat", name))
    return keys


def _get(state: MDState, keys: Sequence[_Key]) -> list[torch.Tensor]:
    return [state.thermostat[k] if f == "thermostat" else getattr(state, f) for f, k in keys]


def _put(template: MDState, keys: Sequence[_Key], tensors: Sequence[torch.Tensor]) -> MDState:
    """``template`` with the tensors at ``keys`` replaced (other fields are shared)."""
    changes: dict = {}
    thermostat = dict(template.thermostat) if template.thermostat is not None else None
    for (field, key), tensor in zip(keys, tensors, strict=True):
        if field == "thermostat":
            thermostat[key] = tensor
        else:
            changes[field] = tensor
    return template.replace(**changes, thermostat=thermostat)


def carry_state(state: MDState) -> MDState:
    """The state to carry into the next window: computed tensors detached, leaves kept.

    Positions, momenta, forces and thermostat variables produced by steps are detached (the
    graph is cut there); tensors that are leaves (e.g. a temperature tensor the user put into
    ``state.thermostat``, or the initial positions) are kept as they are, so each window keeps
    differentiating with respect to them.
    """
    return state.map(lambda t: t if t.grad_fn is None else t.detach())


# ---------------------------------------------------------------------------- stepping
def _run_steps(
    integrator: Integrator, state: MDState, steps: int, observable: Observable | None
) -> tuple[MDState, torch.Tensor | None]:
    """Advance ``steps`` steps; return the final state and the stacked observable values."""
    values = []
    for n in range(steps):
        state = integrator.step(state)
        if n == 0 and torch.is_grad_enabled() and state.positions.requires_grad:
            if state.forces is not None and not state.forces.requires_grad:
                raise ValueError(
                    "the forces carry no graph: build the integrator with differentiable=True "
                    "(make_integrator(..., differentiable=True)) for gradients through MD"
                )
        if observable is not None:
            values.append(observable(state))
    return state, (torch.stack(values) if values else None)


class _GeneratorReplay:
    """Saves an integrator's random-number state at a window start and replays it."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator
        self.saved = generator.get_state() if generator is not None else None

    def run(self, fn: Callable[[], object]):
        """Run ``fn`` with the generator at the saved state, then restore its current state."""
        if self.generator is None:
            return fn()
        current = self.generator.get_state()
        self.generator.set_state(self.saved)
        try:
            return fn()
        finally:
            self.generator.set_state(current)


class _Window:
    """One checkpointed window: maps the start state's floating tensors to the end state's
    floating tensors (and the stacked observable values)."""

    def __init__(
        self,
        integrator: Integrator,
        template: MDState,
        steps: int,
        observable: Observable | None,
        parameters: Sequence[torch.Tensor],
    ) -> None:
        self.integrator = integrator
        self.keys = _float_keys(template)
        # the start state without its floating tensors (those come in as the inputs)
        self.template = _put(template, self.keys, [None] * len(self.keys))
        self.steps = steps
        self.observable = observable
        self.parameters = list(parameters)
        self.replay = _GeneratorReplay(integrator.generator)
        self.skeleton: MDState | None = None  # the end state without its floating tensors
        self.out_keys: list[_Key] = []

    def run(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        state, values = _run_steps(
            self.integrator, _put(self.template, self.keys, inputs), self.steps, self.observable
        )
        if self.skeleton is None:  # first (forward) run; keep no reference to its tensors
            self.out_keys = _float_keys(state)
            self.skeleton = _put(state, self.out_keys, [None] * len(self.out_keys))
        outputs = _get(state, self.out_keys)
        return outputs if values is None else [*outputs, values]

    def end_state(self, outputs: Sequence[torch.Tensor]) -> tuple[MDState, torch.Tensor | None]:
        n = len(self.out_keys)
        values = outputs[n] if len(outputs) > n else None
        return _put(self.skeleton, self.out_keys, outputs[:n]), values


class _CheckpointedWindow(torch.autograd.Function):
    """Forward: run the window without keeping its graph. Backward: rerun it from the saved
    start state (same random numbers) with the graph, and backpropagate through it."""

    @staticmethod
    def forward(ctx, window: _Window, n_state: int, *inputs: torch.Tensor):
        ctx.window = window
        ctx.n_state = n_state
        ctx.save_for_backward(*inputs[:n_state])
        with torch.no_grad():
            outputs = window.run(inputs[:n_state])
        return tuple(t.detach() for t in outputs)

    @staticmethod
    def backward(ctx, *grad_outputs: torch.Tensor):
        window: _Window = ctx.window
        needs = ctx.needs_input_grad[2:]
        with torch.enable_grad():
            starts = [
                t.detach().requires_grad_(need)
                for t, need in zip(ctx.saved_tensors, needs[: ctx.n_state], strict=True)
            ]
            outputs = window.replay.run(lambda: window.run(starts))
        candidates = [*starts, *window.parameters]
        wrt = [t for t, need in zip(candidates, needs, strict=True) if need]
        pairs = [(o, g) for o, g in zip(outputs, grad_outputs, strict=True) if o.requires_grad]
        grads: Sequence[torch.Tensor | None] = [None] * len(wrt)
        if pairs:
            grads = torch.autograd.grad(
                [o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True
            )
        found = iter(grads)
        return (None, None, *[next(found) if need else None for need in needs])


def _graph_leaves(roots: Iterable[torch.Tensor]) -> dict[int, torch.Tensor]:
    """Leaf tensors that require grad and that ``roots`` depend on, by id."""
    stack = [t.grad_fn for t in roots if t.grad_fn is not None]
    seen: set = set()
    leaves: dict[int, torch.Tensor] = {}
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            leaves[id(variable)] = variable
        stack.extend(child for child, _ in node.next_functions)
    return leaves


def find_parameters(integrator: Integrator, state: MDState) -> list[torch.Tensor]:
    """Tensors outside the state that one step depends on with grad (the model parameters).

    Runs one probe step with the graph (the integrator's random state is restored after it;
    the force field's neighbor list may be rebuilt) and collects the leaves of its graph that
    are not state tensors.
    """
    keys = _float_keys(state)
    with torch.enable_grad():
        probes = [t.detach().requires_grad_(True) for t in _get(state, keys)]
        stepped = _GeneratorReplay(integrator.generator).run(
            lambda: integrator.step(_put(state, keys, probes))
        )
        leaves = _graph_leaves(_get(stepped, _float_keys(stepped)))
    for probe in probes:
        leaves.pop(id(probe), None)
    return list(leaves.values())


# ---------------------------------------------------------------------------- public API
def rollout(
    integrator: Integrator,
    state: MDState,
    steps: int,
    observable: Observable | None = trajectory_positions,
    checkpoint_every: int | None = None,
    parameters: Iterable[torch.Tensor] | None = None,
) -> Rollout:
    """Run ``steps`` MD steps keeping the autograd graph.

    Args:
        integrator: from ``make_integrator(..., differentiable=True)``.
        state: an initialized state (``integrator.init`` already called).
        steps: number of steps.
        observable: ``f(state) -> tensor`` recorded after every step (default: positions, i.e.
            the trajectory (steps, N, 3)); ``None`` records nothing.
        checkpoint_every: run windows of this many steps under gradient checkpointing (the
            graph of a window is rebuilt during backward); ``None`` keeps the whole graph.
        parameters: with checkpointing, the tensors outside the state to differentiate with
            respect to (e.g. ``model.parameters()``); ``None`` finds them from the graph of one
            probe step (:func:`find_parameters`). Tensors left out receive no gradient.

    Returns:
        :class:`Rollout` with the final state and the values (steps, ...).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if state.forces is None:
        raise ValueError("the state has no forces: call integrator.init(state) first")
    if checkpoint_every is None or not torch.is_grad_enabled():
        final, values = _run_steps(integrator, state, steps, observable)
        return Rollout(final, values)
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1 step, got {checkpoint_every}")
    if parameters is None:
        params = find_parameters(integrator, state) if steps else []
    else:
        params = [p for p in parameters if p.requires_grad]
    chunks: list[torch.Tensor] = []
    done = 0
    while done < steps:
        n = min(checkpoint_every, steps - done)
        window = _Window(integrator, state, n, observable, params)
        inputs = _get(state, window.keys)
        outputs = _CheckpointedWindow.apply(window, len(inputs), *inputs, *params)
        state, values = window.end_state(outputs)
        if values is not None:
            chunks.append(values)
        done += n
    values = torch.cat(chunks) if chunks else None
    return Rollout(state, values)


@dataclasses.dataclass
class BPTTWindow:
    """One window of truncated backpropagation through time.

    Attributes:
        index: window number, from 0.
        start: the carried start state (see :func:`carry_state`).
        rollout: the window's values and end state, with the graph back to ``start`` and the
            parameters.
    """

    index: int
    start: MDState
    rollout: Rollout


def bptt_windows(
    integrator: Integrator,
    state: MDState,
    window_steps: int,
    n_windows: int,
    observable: Observable | None = trajectory_positions,
    forcefield: ForceField | None = None,
    checkpoint_every: int | None = None,
    parameters: Iterable[torch.Tensor] | None = None,
) -> Iterator[BPTTWindow]:
    """Yield consecutive windows of ``window_steps`` steps; the state is carried across windows
    and the graph cut between them.

    The caller computes a loss from each window and backpropagates it (and may take an
    optimizer step) before asking for the next window; when the next window is asked for, the
    previous one is detached in place (its graph is freed, memory stays flat)::

        for window in bptt_windows(integrator, state, 120, 100, observable, forcefield=ff):
            loss = loss_fn(window.rollout.values)
            optimizer.zero_grad(); loss.backward(); optimizer.step()

    Args:
        integrator, state, observable, checkpoint_every, parameters: as :func:`rollout`.
        window_steps: steps per window (τ).
        n_windows: number of windows.
        forcefield: the integrator's force field; when given, the forces at each window start are
            recomputed with the graph (and the current parameters), so each window's values are
            an exact function of (positions, momenta, thermostat variables, parameters) at its
            start. Without it the first half-kick of a window uses the carried, detached forces.
    """
    params = None if parameters is None else list(parameters)
    for index in range(n_windows):
        start = carry_state(state)
        if forcefield is not None:
            start = forcefield(start, create_graph=True)
        if checkpoint_every is not None and params is None and window_steps > 0:
            params = find_parameters(integrator, start)
        window = BPTTWindow(
            index,
            start,
            rollout(integrator, start, window_steps, observable, checkpoint_every, params),
        )
        yield window
        # the caller is done with this window: drop its graph before the next one is built
        state = carry_state(window.rollout.state)
        values = window.rollout.values
        window.start = start.detach()
        window.rollout = Rollout(state.detach(), None if values is None else values.detach())
        del start


@dataclasses.dataclass
class BPTTResult:
    """What :func:`truncated_bptt` returns.

    Attributes:
        state: the final state, detached (continue from it).
        losses: the loss of each window.
    """

    state: MDState
    losses: list[float]


def truncated_bptt(
    integrator: Integrator,
    state: MDState,
    window_steps: int,
    n_windows: int,
    loss_fn: Callable[[BPTTWindow], torch.Tensor],
    observable: Observable | None = trajectory_positions,
    forcefield: ForceField | None = None,
    checkpoint_every: int | None = None,
    parameters: Iterable[torch.Tensor] | None = None,
    after_backward: Callable[[BPTTWindow, torch.Tensor], None] | None = None,
) -> BPTTResult:
    """Truncated backpropagation through time over ``n_windows`` windows.

    For each window (see :func:`bptt_windows`): ``loss = loss_fn(window)``, ``loss.backward()``
    (gradients accumulate in ``.grad`` of the leaves, e.g. model parameters), then
    ``after_backward(window, loss)`` (e.g. an optimizer step and ``zero_grad``). Without
    ``after_backward`` the accumulated gradient is Σ_k ∂L_k/∂θ with each window's start state held
    fixed. Memory does not grow with the number of windows.

    Returns:
        :class:`BPTTResult` with the detached final state and the per-window losses.
    """
    losses: list[float] = []
    last = state.detach()
    for window in bptt_windows(
        integrator,
        state,
        window_steps,
        n_windows,
        observable,
        forcefield,
        checkpoint_every,
        parameters,
    ):
        loss = loss_fn(window)
        loss.backward()
        losses.append(float(loss.detach()))
        if after_backward is not None:
            after_backward(window, loss.detach())
        last = window.rollout.state.detach()
        del window, loss
    return BPTTResult(last, losses)
