"""Cohorts of the NN method (`trainables.kit.cohort`): each member's run equals its solo run.

A member differs from its solo `run_local("mlp", ...)` only by the rounding of batched kernels,
so its per-epoch history and final metrics must agree within 1e-5 relative over 20 epochs; a
diverging member is frozen and reported as its solo run reports it, without disturbing the rest.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import seqrep.data
from seqrep.method import TrialContext
from seqrep.session import run_local
from trainables import mlp
from trainables.kit.cohort import run_mlp_cohort
from trainables.nn.feedforward import MLP
from trainables.nn.stacked import StackedMLP, StackedRmsProp

REL = 1e-5
EPOCHS = 20
SHAPE = dict(hidden_layers=2, hidden_units=25, batch_size=10)


@pytest.fixture(scope="module")
def toy():
    return seqrep.data.load("toy")


def context(data, seed: int) -> TrialContext:
    return TrialContext(dataset="toy", data=data, max_epochs=EPOCHS, seed=seed, metric="valid_nll", mode="min")


def relative_differences(solo: dict[str, float], member: dict[str, float]) -> list[float]:
    assert solo.keys() == member.keys()
    out = []
    for key, value in solo.items():
        if math.isfinite(value):
            out.append(abs(member[key] - value) / max(abs(value), 1e-12))
        else:
            assert not math.isfinite(member[key]), key
    return out


def assert_matches_solo(run, data, config: dict, seed: int) -> float:
    """The member's history, final metrics and status against its solo run; the largest relative difference."""
    solo = run_local("mlp", config, context(data, seed))
    assert run.status == solo.status
    assert [row["epoch"] for row in run.history] == [row["epoch"] for row in solo.history]
    diffs = [d for s, m in zip(solo.history, run.history) for d in relative_differences(s, m)]
    diffs += relative_differences(solo.final, run.final)
    assert run.final["best_epoch"] == solo.final["best_epoch"]
    assert max(diffs) <= REL, max(diffs)
    return max(diffs)


def test_each_member_equals_its_solo_run(toy):
    rates = [(1e-3, 0.9, 0.9), (3e-3, 0.5, 0.0), (1e-2, 0.99, 0.5), (3e-4, 0.2, 0.95)]
    configs = [dict(SHAPE, transfer="sigmoid", step_rate=a, decay=g, momentum=b) for a, g, b in rates]
    seeds = [3, 7, 11, 13]
    # one member as a Config object: a cohort takes either
    members = [mlp.Config.from_dict(configs[0]), *configs[1:]]
    runs = run_mlp_cohort(members, [context(toy, s) for s in seeds])
    assert len({tuple(r.history[-1].values()) for r in runs}) == 4  # the members really differ
    worst = max(assert_matches_solo(r, toy, c, s) for r, c, s in zip(runs, configs, seeds))
    assert all(r.status == "completed" and len(r.history) == EPOCHS for r in runs)
    print(f"largest relative difference to the solo runs: {worst:.2e}")


def test_a_diverging_member_is_frozen_and_the_others_go_on(toy):
    configs = [dict(SHAPE, transfer="rectifier", step_rate=a, decay=0.9, momentum=0.9) for a in (1e-3, 1e5, 1e-2)]
    seeds = [1, 2, 3]
    runs = run_mlp_cohort(configs, [context(toy, s) for s in seeds])
    assert [r.status for r in runs] == ["completed", "diverged", "completed"]
    assert len(runs[1].history) < EPOCHS and not math.isfinite(runs[1].history[-1]["valid_nll"])
    assert runs[1].final["best_epoch"] >= 1 and math.isfinite(runs[1].final["test_nll"])
    for r, c, s in zip(runs, configs, seeds):
        assert_matches_solo(r, toy, c, s)


def test_a_frozen_member_keeps_its_parameters_bit_for_bit():
    torch.manual_seed(0)
    model = StackedMLP([MLP(3, 2, 1, 4, "sigmoid") for _ in range(3)])
    optimizer = StackedRmsProp(list(model.params), [0.1] * 3, [0.9] * 3, [0.9] * 3)
    x, y = torch.randn(3, 5, 3), torch.randn(3, 5, 2)

    def step():
        for p in model.params:
            p.grad = None
        ((model(x) - y) ** 2).mean(dim=(1, 2)).sum().backward()
        optimizer.step()

    step()
    with torch.no_grad():
        model.params[0][1, 0, 0] = math.nan  # member 1 diverges: a NaN reaches its loss and gradients
    optimizer.freeze([1])
    before = [p.detach().clone() for p in model.params]
    for _ in range(3):
        step()
    for old, new in zip(before, model.params):
        assert torch.equal(old[1].nan_to_num(), new[1].nan_to_num())
        assert not torch.equal(old[[0, 2]], new[[0, 2]]) and torch.isfinite(new[[0, 2]]).all()


@pytest.mark.parametrize("key, value", [("hidden_units", 10), ("transfer", "rectifier"), ("batch_size", 25),
                                        ("hidden_layers", 1)])
def test_members_of_different_shapes_are_refused_by_name(toy, key, value):
    configs = [dict(SHAPE, transfer="sigmoid"), {**SHAPE, "transfer": "sigmoid", key: value}]
    with pytest.raises(ValueError, match=f"share config key '{key}'"):
        run_mlp_cohort(configs, [context(toy, 0), context(toy, 1)])


def test_members_with_different_budgets_are_refused_by_name(toy):
    contexts = [context(toy, 0), TrialContext(dataset="toy", data=toy, max_epochs=5, seed=1, metric="valid_nll",
                                              mode="min")]
    with pytest.raises(ValueError, match="share context key 'max_epochs'"):
        run_mlp_cohort([dict(SHAPE, transfer="sigmoid")] * 2, contexts)


def test_the_benchmark_prints_one_line_per_case_in_smoke_mode():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cohort.py"
    result = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"cohort method=mlp K=2 device=cpu ratio=\d+\.\d\d", lines[0]), lines
    assert lines[1:] == [f"cohort method={m} K=2 device=cpu skipped: not built yet" for m in ("reduction", "rnn")]
