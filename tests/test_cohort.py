"""Cohorts of the regression methods NN (`mlp`) and DN (`mdn`): each member's run equals its solo run.

A member differs from its solo `run_local(method, ...)` only by the rounding of batched kernels,
so its per-epoch history and final metrics must agree within 1e-5 relative over 20 epochs; a
diverging member is finished as its solo run finishes, without disturbing the rest; a cohort
resumed from its members' checkpoints continues as if never interrupted.
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
from seqrep.errors import SeqrepError
from seqrep.method import TrialContext
from seqrep.session import LocalSession, run_local, run_local_cohort
from trainables import mdn, mlp
from trainables.nn.feedforward import MLP
from trainables.nn.stacked import StackedMLP, StackedRmsProp, clip_member_grad_norms

from cohort_checks import (RecordingSession, assert_members_trained_apart, assert_resume_at_3_equals_the_whole,
                           compare_with_solo)

REL = 1e-5
EPOCHS = 20
SHAPE = dict(hidden_layers=2, hidden_units=25, batch_size=10)
METHODS = {"mlp": mlp, "mdn": mdn}
# three members of one shape that differ in everything else; mdn's second member also clips
MEMBERS = [dict(SHAPE, transfer="sigmoid", step_rate=1e-3, decay=0.9, momentum=0.9),
           dict(SHAPE, transfer="rectifier", step_rate=3e-3, decay=0.5, momentum=0.0),
           dict(SHAPE, transfer="sigmoid", step_rate=1e-2, decay=0.99, momentum=0.5)]
SEEDS = [3, 7, 11]
# step rates at which a rectifier member with seed 2 diverges: mlp at epoch 4 (best epoch 1), mdn at epoch 1 (none)
DIVERGING = {"mlp": 1e5, "mdn": 1e7}


@pytest.fixture(scope="module")
def toy():
    return seqrep.data.load("toy")


def context(data, seed: int, epochs: int = EPOCHS) -> TrialContext:
    return TrialContext(dataset="toy", data=data, max_epochs=epochs, seed=seed, metric="valid_nll", mode="min")


def members(method: str) -> list[dict]:
    configs = [dict(c) for c in MEMBERS]
    if method == "mdn":
        configs = [dict(c, components=1) for c in configs]
        configs[1]["max_grad_norm"] = 0.5
    return configs


def assert_matches_solo(method: str, session: LocalSession, data, config: dict, seed: int, rel: float = REL) -> float:
    """The member's history, final metrics, status, model and plot against its solo run; the
    largest relative difference."""
    solo = run_local(method, config, context(data, seed, session.context.max_epochs))
    largest = compare_with_solo(session, solo, rel)
    if solo.model is not None:
        assert {k: v.shape for k, v in session.model["model"].items()} == \
               {k: v.shape for k, v in solo.model["model"].items()}
    assert sorted(p.name for p in session.artifact_dir.iterdir()) == sorted(p.name for p in solo.artifact_dir.iterdir())
    return largest


@pytest.mark.parametrize("method", METHODS)
def test_each_member_equals_its_solo_run(toy, method):
    configs = members(method)
    sessions = run_local_cohort(method, configs, [context(toy, s) for s in SEEDS])
    assert_members_trained_apart(sessions, EPOCHS)
    worst = max(assert_matches_solo(method, s, toy, c, seed) for s, c, seed in zip(sessions, configs, SEEDS))
    print(f"{method}: largest relative difference to the solo runs: {worst:.2e}")


@pytest.mark.parametrize("method", METHODS)
def test_a_diverging_member_is_finished_diverged_and_the_others_go_on(toy, method):
    configs = members(method)
    configs[1] = {**configs[1], "transfer": "rectifier", "step_rate": DIVERGING[method], "decay": 0.9, "momentum": 0.9}
    configs[1].pop("max_grad_norm", None)
    seeds = [1, 2, 3]
    sessions = run_local_cohort(method, configs, [context(toy, s) for s in seeds])
    assert [s.status for s in sessions] == ["completed", "diverged", "completed"]
    assert len(sessions[1].history) < EPOCHS and not math.isfinite(sessions[1].history[-1]["valid_nll"])
    for s, c, seed in zip(sessions, configs, seeds):
        assert_matches_solo(method, s, toy, c, seed)


@pytest.mark.parametrize("method", METHODS)
def test_a_resumed_cohort_equals_the_uninterrupted_one(toy, method):
    contexts = [context(toy, s, epochs=6) for s in SEEDS]
    assert_resume_at_3_equals_the_whole(METHODS[method], method, members(method), contexts)


def test_a_cohort_refuses_checkpoints_from_different_epochs(toy):
    contexts = [context(toy, s, epochs=4) for s in SEEDS[:2]]
    whole = [RecordingSession(c) for c in contexts]
    mlp.train_cohort([mlp.Config.from_dict(c) for c in MEMBERS[:2]], whole)
    with pytest.raises(SeqrepError, match=re.escape("from one epoch, but their checkpoints are from epochs [2, 3]")):
        run_local_cohort("mlp", MEMBERS[:2], contexts, resume_from=[whole[0].checkpoints[2], whole[1].checkpoints[3]])


def test_a_cohort_refuses_a_solo_checkpoint(toy):
    solo = run_local("mlp", MEMBERS[0], context(toy, 0, epochs=2))
    with pytest.raises(SeqrepError, match="checkpoint of cohort member 0 must hold its network and optimiser state"):
        run_local_cohort("mlp", MEMBERS[:1], [context(toy, 0, epochs=4)], resume_from=[solo.checkpoint])


@pytest.mark.parametrize("method, key, value", [("mlp", "batch_size", 25), ("mdn", "components", 2),
                                                ("mdn", "batch_size", 50)])
def test_members_differing_in_a_cohort_key_are_refused_by_name(toy, method, key, value):
    configs = [dict(SHAPE), {**SHAPE, key: value}]
    values = [configs[0].get(key), value]
    message = f"cohort members of method {method} must share {key!r}, but got {values}"
    with pytest.raises(SeqrepError, match=f"^{re.escape(message)}$"):
        run_local_cohort(method, configs, [context(toy, 0), context(toy, 1)])


def test_members_with_different_budgets_are_refused_by_name(toy):
    with pytest.raises(SeqrepError, match="must share context key 'max_epochs', but got \\[20, 5\\]"):
        run_local_cohort("mlp", [SHAPE, SHAPE], [context(toy, 0), context(toy, 1, epochs=5)])


def gradients(model: StackedMLP, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The output and the written-out gradient of each member's summed squared error."""
    grads = model.views(torch.empty_like(model.storage))
    out, inputs = model.forward_train(x)
    model.backward(inputs, 2 * (out - y), grads)
    return out, grads


def test_per_member_transfer_functions_are_exact():
    """A member computes the same numbers, gradients included, in a cohort of mixed transfer
    functions as in one where every member has its transfer function."""
    torch.manual_seed(0)
    nets = {t: [MLP(3, 2, 2, 4, t) for _ in range(2)] for t in ("sigmoid", "rectifier")}
    mixed = StackedMLP([nets["sigmoid"][0], nets["rectifier"][1]])
    x, y = torch.randn(2, 5, 3), torch.randn(2, 5, 2)
    outputs = {"mixed": gradients(mixed, x, y), **{t: gradients(StackedMLP(nets[t]), x, y) for t in nets}}
    for k, t in ((0, "sigmoid"), (1, "rectifier")):
        assert torch.equal(outputs["mixed"][0][k], outputs[t][0][k])
        assert all(torch.equal(a[k], b[k]) for a, b in zip(outputs["mixed"][1], outputs[t][1]))


def test_the_written_out_backward_is_autograds():
    torch.manual_seed(0)
    model = StackedMLP([MLP(3, 2, 3, 6, t) for t in ("sigmoid", "rectifier", "sigmoid")])
    x, y = torch.randn(3, 7, 3), torch.randn(3, 7, 2)
    out, grads = gradients(model, x, y)
    params = [p.clone().requires_grad_(True) for p in model.params]
    reference = model(x, params)
    expected = torch.autograd.grad(((reference - y) ** 2).sum(), params)
    assert torch.equal(out, reference.detach())
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_a_frozen_member_keeps_its_parameters_bit_for_bit():
    torch.manual_seed(0)
    model = StackedMLP([MLP(3, 2, 1, 4, "sigmoid") for _ in range(3)])
    optimizer = StackedRmsProp(model, [0.1] * 3, [0.9] * 3, [0.9] * 3)
    x, y = torch.randn(3, 5, 3), torch.randn(3, 5, 2)

    def step():
        optimizer.step(torch.cat([g.reshape(-1) for g in gradients(model, x, y)[1]]))

    step()
    model.params[0][1, 0, 0] = math.nan  # member 1 diverges: a NaN reaches its loss and gradients
    optimizer.freeze([1])
    before = [p.clone() for p in model.params]
    for _ in range(3):
        step()
    for old, new in zip(before, model.params):
        assert torch.equal(old[1].nan_to_num(), new[1].nan_to_num())
        assert not torch.equal(old[[0, 2]], new[[0, 2]]) and torch.isfinite(new[[0, 2]]).all()


def test_per_member_clipping_is_torchs_clip_grad_norm():
    torch.manual_seed(0)
    nets = [MLP(3, 2, 1, 4, "rectifier") for _ in range(3)]
    model = StackedMLP(nets)
    x = torch.randn(5, 3)
    grads = gradients(model, x.expand(3, 5, 3), torch.zeros(3, 5, 2))[1]
    for net in nets:
        (net(x) ** 2).sum().backward()
    unclipped = [g[1].clone() for g in grads]
    clip_member_grad_norms(grads, torch.tensor([0.1, 0.0, 1e6]), torch.tensor([True, False, True]))
    for k, max_norm in ((0, 0.1), (2, 1e6)):
        torch.nn.utils.clip_grad_norm_(nets[k].parameters(), max_norm)
        for g, p in zip(grads, nets[k].parameters()):
            torch.testing.assert_close(g[k], p.grad, rtol=1e-5, atol=1e-7)
    assert all(torch.equal(g[1], u) for g, u in zip(grads, unclipped))  # not clipped: untouched


def test_a_member_row_round_trips():
    torch.manual_seed(0)
    nets = [MLP(3, 2, 2, 4, "sigmoid") for _ in range(3)]
    model = StackedMLP(nets)
    for net, row in zip(nets, model.rows()):  # a row is the member's solo parameters, in order
        assert all(torch.equal(a, b) for a, b in zip(model.unflatten(row), net.parameters()))
    optimizer = StackedRmsProp(model, [0.1, 0.2, 0.3], [0.9] * 3, [0.5] * 3)
    optimizer.step(torch.randn_like(model.storage))
    rows, states = model.rows(), optimizer.rows([0, 1, 2])
    assert [t.untyped_storage().nbytes() for t in rows] == [4 * sum(model.numels)] * 3  # one member's numbers each
    model.load_member(2, rows[0])
    optimizer.load_member(2, states[0])
    assert torch.equal(model.rows()[2], rows[0]) and torch.equal(optimizer.rows([2])[0], states[0])


def test_the_benchmark_prints_one_line_per_case_in_smoke_mode():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cohort.py"
    result = subprocess.run([sys.executable, str(script), "--smoke", "--cases", "mlp,mdn,mlp-padded"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 3, lines
    for method, line in zip(("mlp", "mdn", "mlp-padded"), lines):
        assert re.fullmatch(rf"cohort method={method} K=2 device=cpu ratio=\d+\.\d\d", line), lines
