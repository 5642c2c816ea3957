"""A DiffSim gradient fit ends on its best iterate by a held-out production RDF error, backs off
when it diverges, and says which iterate it kept (issue 18, item 6).

Target: a Morse liquid (ε 0.8, r₀ 1.1, ρ₀ 5 — not LJ) at ρ = 0.7, T = 1, 108 atoms, simulated
here. The fits start at the true parameters with a learning rate far too large, so Adam walks
them away from the truth: the start is the best iterate and the last one is worse.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from ase_mlmd.calculators.cards import read_card
from ase_mlmd.calculators.registry import model_from_card
from ase_mlmd.diffsim.config import FitConfig
from ase_mlmd.diffsim.engine import EngineConfig, production_rdf
from ase_mlmd.diffsim.fit import fit
from ase_mlmd.diffsim.selection import BestIterate, DivergenceRule, IterateKeeper, heldout_error
from ase_mlmd.diffsim.systems import ThermoState
from ase_mlmd.diffsim.targets import RDFTarget
from ase_mlmd.models.pair import Morse
from ase_mlmd.observables.differentiable import RDFGrid

ENGINE = EngineConfig(equilibration=100, seed=5)
TRUE = dict(epsilon=0.8, r0=1.1, rho0=5.0)


@pytest.fixture(scope="module")
def morse_state() -> ThermoState:
    """108 atoms at ρ = 0.7, T = 1 with a target g(r) simulated here from the true Morse."""
    grid = RDFGrid()
    state = ThermoState(0.7, 1.0, RDFTarget(grid.centres().numpy(), np.ones(grid.nbins)), n_cells=3)
    gs, _ = production_rdf(Morse(**TRUE, cutoff=2.5), [state], ENGINE, steps=600, every=10)
    state.target = RDFTarget(grid.centres().numpy(), gs[0].numpy(), 0.7, 1.0, "simulated")
    return state


def drifting_config(method: str, **kw) -> FitConfig:
    """Tiny fits with Adam at a large lr from the truth (parameters move ≈ lr per step)."""
    settings = dict(
        method=method,
        epochs=8,
        window=20,
        rdf_every=2,
        lr=0.05,
        engine=ENGINE,
        table_spacing=0.005,
        rw_frames=20,
        rw_equilibration=50,
        heldout_every=2,
        heldout_steps=200,
        heldout_equilibration=100,
        production_steps=200,
    )
    return FitConfig(**{**settings, **kw})


def parameters(potential: torch.nn.Module) -> dict[str, float]:
    """The Morse parameters (trainable or loaded from a card)."""
    values = {k: getattr(potential, k) for k in TRUE}
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in values.items()}


@pytest.mark.parametrize("method, lr", [("bptt", 0.05), ("reweighting", 0.1)])
def test_drifting_fit_writes_its_best_evaluated_iterate(morse_state, method, lr, tmp_path):
    seen = {0: dict(TRUE)}

    def record(epoch, potential):
        seen[epoch] = parameters(potential)

    # divergence_factor so large that the fit never backs off: it drifts to the end
    config = drifting_config(method, lr=lr, callback=record, divergence_factor=1e9)
    potential = Morse(**TRUE, cutoff=2.5, trainable=True)
    result = fit(potential, [morse_state], config, out_dir=tmp_path, log=lambda m: None)
    sel = result.selection
    errors = dict(sel["errors"])
    assert sorted(errors) == [0, 2, 4, 6, 8]  # the start, every 2 epochs, the last
    assert sel["kept_error"] == min(errors.values())
    assert sel["kept_epoch"] == min(errors, key=errors.get)
    assert sel["last_epoch"] == 8 and sel["backoffs"] == 0
    # the fit did drift: its last iterate is clearly worse than the kept one
    assert errors[8] > 1.3 * sel["kept_error"], errors
    assert seen[8] != seen[sel["kept_epoch"]]
    # the potential and the card hold the kept iterate's parameters ...
    assert parameters(potential) == seen[sel["kept_epoch"]]
    card = read_card(tmp_path / "card.toml")
    written = model_from_card(card)
    assert parameters(written) == seen[sel["kept_epoch"]]
    assert card.provenance["kept_epoch"] == sel["kept_epoch"]
    # ... whose held-out error, re-evaluated from the card, is exactly the recorded best
    assert heldout_error(written, [morse_state], config)[0] == pytest.approx(
        sel["kept_error"], rel=1e-9
    )
    last = Morse(**seen[8], cutoff=2.5)
    assert heldout_error(last, [morse_state], config)[0] == pytest.approx(errors[8], rel=1e-9)
    # summary.json, history.csv and report.md say which iterate was kept and why
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["kept_iterate"]["kept_epoch"] == sel["kept_epoch"]
    assert summary["kept_iterate"]["kept_error"] == pytest.approx(sel["kept_error"])
    with open(tmp_path / "history.csv") as f:
        rows = {int(r["epoch"]): r for r in csv.DictReader(f)}
    assert float(rows[8]["heldout_rdf_dev"]) == pytest.approx(errors[8])
    assert rows[7]["heldout_rdf_dev"] == ""  # not an evaluated epoch
    report = (tmp_path / "report.md").read_text()
    assert f"kept iterate: epoch {sel['kept_epoch']}: the lowest held-out" in report


def test_divergence_backs_off_to_the_best_iterate_with_half_the_learning_rate(morse_state):
    seen = {0: dict(TRUE)}

    def record(epoch, potential):
        seen[epoch] = parameters(potential)

    messages: list[str] = []
    config = drifting_config("bptt", callback=record, divergence_factor=1.2, divergence_patience=1)
    potential = Morse(**TRUE, cutoff=2.5, trainable=True)
    result = fit(potential, [morse_state], config, log=messages.append, progress=False)
    sel = result.selection
    assert sel["backoffs"] >= 1, sel
    backoff = next(m for m in messages if "back-off 1:" in m)
    assert "lowered the learning rate to 0.025" in backoff, backoff
    # the step after the first back-off starts from the restored iterate (Adam's first step
    # moves each parameter by the learning rate, here halved)
    first = int(backoff.split(":")[0].removeprefix("epoch "))
    restored = int(backoff.split("restored epoch ")[1].split(" ")[0])
    assert restored <= first
    after = seen[first + 1]
    if restored == 0:
        steps = {k: abs(after[k] - seen[0][k]) for k in after}
        assert all(s == pytest.approx(0.025, rel=1e-3) for s in steps.values()), steps
    lrs = [row["lr"] for row in result.history]
    assert lrs[first] == pytest.approx(0.025)  # the row after the back-off
    assert parameters(potential) == seen[sel["kept_epoch"]]
    assert sel["kept_error"] == min(e for _, e in sel["errors"] if e is not None)


def test_cli_says_which_iterate_it_kept_and_checks_its_flags(morse_state, tmp_path, capsys):
    from ase.cli.main import main

    target = tmp_path / "morse_rho0.7_T1.0.csv"
    np.savetxt(target, np.stack([morse_state.target.r, morse_state.target.g]), delimiter=",")

    def diffsim(*extra: str) -> None:
        args = ["diffsim", "fit", "--target", str(target), "--cells", "3", "--no-progress"]
        args += ["--equilibration", "50", "--production-steps", "20", "--window", "10"]
        main(
            prog="ase-mlmd", commands=[("diffsim", "ase_mlmd.cli.diffsim")], args=args + list(extra)
        )

    out = tmp_path / "fit"
    diffsim("--potential", "morse", "--epochs", "2", "--heldout-every", "1", "--heldout-steps",
            "20", "--heldout-equilibration", "20", "-o", str(out))  # fmt: skip
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())["kept_iterate"]
    assert summary["evaluations"] == 3 and summary["heldout_every"] == 1
    assert f"kept epoch {summary['kept_epoch']}: the lowest held-out" in printed
    for flag, value in [
        ("--divergence-factor", "1"),
        ("--heldout-every", "-1"),
        ("--heldout-steps", "5"),
        ("--divergence-patience", "0"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            diffsim(flag, value, "-o", str(tmp_path / "bad"))
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert flag in err and "Traceback" not in err, err


def synthetic_keeper(errors: list[float], **kw) -> tuple[IterateKeeper, torch.nn.Module]:
    model = torch.nn.Linear(2, 1, dtype=torch.float64)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    config = FitConfig(lr=0.1, min_lr=0.02, divergence_factor=2.0, divergence_patience=2, **kw)
    sequence = iter(errors)
    keeper = IterateKeeper(
        model, optimizer, [], config, note=lambda m: None, evaluate=lambda *a: (next(sequence), [])
    )
    return keeper, model


def adam_step(keeper: IterateKeeper, model: torch.nn.Module) -> None:
    keeper.optimizer.zero_grad()
    model(torch.ones(1, 2, dtype=torch.float64)).sum().backward()
    keeper.optimizer.step()


def test_back_off_rule_on_a_synthetic_error_sequence():
    # held-out errors every epoch: best 0.2 at epoch 2; two evaluations above 2 × 0.2 diverge
    errors = [1.0, 0.5, 0.2, 0.3, 0.5, 0.6, math.nan, 0.1]
    keeper, model = synthetic_keeper(errors, heldout_every=1)
    keeper.start(None)
    weights, moments = {}, {}
    verdicts = {}
    for epoch in range(1, len(errors)):
        adam_step(keeper, model)
        weights[epoch] = model.weight.detach().clone()
        moments[epoch] = keeper.optimizer.state[model.weight]["exp_avg"].clone()
        lr = keeper.optimizer.param_groups[0]["lr"]
        verdicts[epoch] = keeper.after_step(epoch, False, None)
        if verdicts[epoch].backed_off:
            # restored: the best iterate's weights and Adam moments, half the rate before
            assert torch.equal(model.weight, weights[keeper.best.epoch])
            moment = keeper.optimizer.state[model.weight]["exp_avg"]
            assert torch.equal(moment, moments[keeper.best.epoch])
            assert keeper.optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * lr)
    backed = [e for e, v in verdicts.items() if v.backed_off]
    # 0.3 is within 2×, 0.5 is the first above (no back-off yet), 0.6 the second; NaN at once
    assert backed == [5, 6]
    assert keeper.best.epoch == 7 and keeper.best.error == 0.1
    assert keeper.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    assert not any(v.stop for v in verdicts.values())
    # one more back-off takes the rate to 0.0125 < min_lr 0.02: the fit stops
    keeper.evaluate = lambda *a: (math.inf, [])
    adam_step(keeper, model)
    verdict = keeper.after_step(8, False, None)
    assert verdict.backed_off and verdict.stop
    _, summary = keeper.finish(None)
    assert torch.equal(model.weight, weights[7])
    assert summary["kept_epoch"] == 7 and summary["backoffs"] == 3
    assert summary["errors"][-1] == [8, None]  # an exploded run is recorded as None (JSON)


def test_divergence_rule_counts_evaluations_in_a_row():
    rule = DivergenceRule(factor=2.0, patience=3)
    # above 2× best twice, then back within: the count restarts
    assert [rule(e, 0.1) for e in (0.3, 0.3, 0.15, 0.3, 0.3)] == [None] * 5
    assert rule(0.3, 0.1) is not None  # the third in a row
    assert rule(0.3, 0.1) is None  # the count restarts after a divergence
    assert "exploded" in rule(math.inf, 0.1)


def test_best_iterate_keeps_the_first_lowest_and_ignores_non_finite():
    best = BestIterate("test error")
    taken = []
    for epoch, error in enumerate([0.5, math.nan, 0.3, 0.3, math.inf, 0.4]):
        best.offer(epoch, error, lambda e=epoch: taken.append(e) or e)
    assert (best.epoch, best.error, best.payload) == (2, 0.3, 2)
    assert taken == [0, 2]  # a copy is taken only for a new best
    summary = best.summary()
    assert summary["last_epoch"] == 5 and summary["last_error"] == 0.4
    assert summary["errors"][1] == [1, None]


def test_heldout_settings_are_checked():
    with pytest.raises(ValueError, match="heldout_steps"):
        FitConfig(heldout_steps=5, sample_every=10)
    with pytest.raises(ValueError, match="divergence_factor"):
        FitConfig(divergence_factor=1.0)
    with pytest.raises(ValueError, match="heldout_every"):
        FitConfig(heldout_every=-1)
