"""Cohorts of the fast-dropout regression methods FD and IVN: each member's run equals its solo run.

As tests/test_cohort.py for NN and DN: a member differs from its solo `run_local(method, ...)` only
by the rounding of batched kernels, so its per-epoch history and final metrics must agree within
1e-5 relative over 20 epochs on `toy`; a diverging member is finished as its solo run finishes,
without disturbing the rest; a cohort resumed from its members' checkpoints continues as if never
interrupted; a member's model file is its solo net's state dict at its best state.
"""

from __future__ import annotations

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
from trainables import fd, ivn
from trainables.kit.fast_dropout import predictive
from trainables.nn.fdnet import FastDropoutNet
from trainables.nn.gaussian import gaussian_nll
from trainables.nn.stacked_fdnet import StackedFastDropoutNet

from cohort_checks import assert_members_trained_apart, assert_resume_at_3_equals_the_whole, compare_with_solo

REL = 1e-5
EPOCHS = 20
SHAPE = dict(hidden_layers=2, hidden_units=10, batch_size=10)
METHODS = {"fd": fd, "ivn": ivn}
METRICS = {"fd": "valid_mse", "ivn": "valid_nll"}  # table7-fd-toy's and table7-ivn-toy's selection
# three members of one shape that differ in everything else; a rate of 0 is a keep probability of
# 1, which the solo net treats apart (`variance.fd_affine`)
MEMBERS = [dict(SHAPE, transfer="sigmoid", step_rate=1e-3, decay=0.9, momentum=0.9, p_drop_input=0.0,
                p_drop_hidden=0.5),
           dict(SHAPE, transfer="rectifier", step_rate=3e-3, decay=0.5, momentum=0.0, p_drop_input=0.2,
                p_drop_hidden=0.0),
           dict(SHAPE, transfer="sigmoid", step_rate=1e-2, decay=0.99, momentum=0.5, p_drop_input=0.1,
                p_drop_hidden=0.3)]
# IVN's second member drops hidden units too: with rectifiers that pass no noise its NLL starts near
# 8700 and rmsprop at decay 0.5 grows the kernels' rounding to ~1e-4 relative in 20 epochs (~2x per
# epoch from 3e-7 at epoch 3), which is the dynamics', not the cohort's
IVN_MEMBERS = [dict(input_variance=0.0, beta_min=1e-3), dict(input_variance=0.1, beta_min=0.05, p_drop_hidden=0.2),
               dict(input_variance=1e-3, beta_min=1e-4)]
SEEDS = [3, 7, 11]
# with seed 2 and rectifiers: FD diverges at epoch 1 (no best epoch), IVN at epoch 2 (best epoch 1). FD
# at step rates that diverge later (3e5: epoch 3) first explodes to losses of 1e34, whose rounding
# differs by 5% between any two kernels
DIVERGING = {"fd": dict(step_rate=1e7), "ivn": dict(step_rate=1e3, input_variance=0.1, beta_min=0.05)}
BEST_BEFORE_DIVERGING = {"fd": 0, "ivn": 1}


@pytest.fixture(scope="module")
def toy():
    return seqrep.data.load("toy")


def context(data, method: str, seed: int, epochs: int = EPOCHS) -> TrialContext:
    return TrialContext(dataset="toy", data=data, max_epochs=epochs, seed=seed, metric=METRICS[method], mode="min")


def members(method: str) -> list[dict]:
    if method == "ivn":
        return [dict(c, **extra) for c, extra in zip(MEMBERS, IVN_MEMBERS)]
    return [dict(c) for c in MEMBERS]


def assert_model_file_is_the_solo_nets(method: str, session: LocalSession, config: dict) -> None:
    """The member's model loads into its solo `FastDropoutNet`, which then scores the test split as
    the member's final metrics say."""
    module = METHODS[method]
    x, y = (torch.as_tensor(a, dtype=torch.float32) for a in session.context.data.split("test"))
    net = module.build(module.Config.from_dict(config), x.shape[1], y.shape[1])
    net.load_state_dict(session.model["model"])
    with torch.no_grad():
        mean, variance = predictive(net, x)
    assert float(((mean - y) ** 2).mean()) == pytest.approx(session.final["test_mse"], rel=1e-5)
    assert float(gaussian_nll(y, mean, variance).mean()) == pytest.approx(session.final["test_nll"], rel=1e-5)


def assert_matches_solo(method: str, session: LocalSession, data, config: dict, seed: int) -> float:
    """The member's history, final metrics, status, model and plot against its solo run; the
    largest relative difference."""
    solo = run_local(method, config, context(data, method, seed, session.context.max_epochs))
    largest = compare_with_solo(session, solo, REL)
    if solo.model is not None:
        assert list(session.model["model"]) == list(solo.model["model"].keys())
        for name, tensor in solo.model["model"].items():
            assert session.model["model"][name].shape == tensor.shape
            torch.testing.assert_close(session.model["model"][name], tensor, rtol=1e-3, atol=1e-4)
        assert_model_file_is_the_solo_nets(method, session, config)
    assert sorted(p.name for p in session.artifact_dir.iterdir()) == sorted(p.name for p in solo.artifact_dir.iterdir())
    return largest


@pytest.mark.parametrize("method", METHODS)
def test_each_member_equals_its_solo_run(toy, method):
    configs = members(method)
    sessions = run_local_cohort(method, configs, [context(toy, method, s) for s in SEEDS])
    assert_members_trained_apart(sessions, EPOCHS)
    worst = max(assert_matches_solo(method, s, toy, c, seed) for s, c, seed in zip(sessions, configs, SEEDS))
    print(f"{method}: largest relative difference to the solo runs: {worst:.2e}")


@pytest.mark.parametrize("method", METHODS)
def test_a_diverging_member_is_finished_diverged_and_the_others_go_on(toy, method):
    configs = members(method)
    configs[1] = {**configs[1], "transfer": "rectifier", "decay": 0.9, "momentum": 0.9, "p_drop_input": 0.2,
                  "p_drop_hidden": 0.2, **DIVERGING[method]}
    seeds = [1, 2, 3]
    sessions = run_local_cohort(method, configs, [context(toy, method, s) for s in seeds])
    assert [s.status for s in sessions] == ["completed", "diverged", "completed"]
    assert len(sessions[1].history) < EPOCHS and sessions[1].final["best_epoch"] == BEST_BEFORE_DIVERGING[method]
    assert (sessions[1].model is None) == (method == "fd")
    for s, c, seed in zip(sessions, configs, seeds):
        assert_matches_solo(method, s, toy, c, seed)


@pytest.mark.parametrize("method", METHODS)
def test_a_resumed_cohort_equals_the_uninterrupted_one(toy, method):
    contexts = [context(toy, method, s, epochs=6) for s in SEEDS]
    assert_resume_at_3_equals_the_whole(METHODS[method], method, members(method), contexts)


def test_cohort_keys_are_the_minibatch_size():
    """Layers and units may differ within a cohort: small nets are padded (tests/test_cohort_padded.py)."""
    assert fd.COHORT_KEYS == ivn.COHORT_KEYS == ("batch_size",)


@pytest.mark.parametrize("method", METHODS)
def test_members_differing_in_the_minibatch_size_are_refused_by_name(toy, method):
    configs = [dict(SHAPE), {**SHAPE, "batch_size": 25}]
    message = f"cohort members of method {method} must share 'batch_size', but got [10, 25]"
    with pytest.raises(SeqrepError, match=f"^{re.escape(message)}$"):
        run_local_cohort(method, configs, [context(toy, method, 0), context(toy, method, 1)])


# (transfer, p_drop_input, p_drop_hidden, input_variance): both transfers, keep probabilities of 1,
# a deterministic and a random input
NETS = [("sigmoid", 0.0, 0.5, 0.0), ("rectifier", 0.2, 0.0, 0.3), ("rectifier", 0.0, 0.0, 0.0),
        ("sigmoid", 0.4, 0.1, 1e-3)]


def solo_nets(beta_min: float | None) -> list[FastDropoutNet]:
    torch.manual_seed(0)
    return [FastDropoutNet(3, 2, 2, 6, t, p_in, p_hid, iv, beta_min=None if beta_min is None else beta_min * (k + 1))
            for k, (t, p_in, p_hid, iv) in enumerate(NETS)]


@pytest.mark.parametrize("beta_min", [None, 0.01])
def test_the_stacked_net_computes_each_solo_nets_moments_and_gradients(beta_min):
    nets = solo_nets(beta_min)
    if beta_min is not None:
        with torch.no_grad():  # betas away from 1, different per member
            for k, net in enumerate(nets):
                net.rho.add_(0.3 * (k - 1))
    stacked = StackedFastDropoutNet(nets)
    x, target = torch.randn(len(nets), 5, 3), torch.randn(len(nets), 5, 2)
    raw, state = stacked.forward_train(x)
    grads = stacked.views(torch.empty_like(stacked.storage))
    raw.requires_grad_(True)
    loss = ((raw - torch.cat([target, target.abs()], dim=-1)) ** 2).sum(dim=(1, 2))
    stacked.backward(state, torch.autograd.grad(loss.sum(), raw)[0], grads)
    for k, net in enumerate(nets):
        mean, var = net(x[k])
        torch.testing.assert_close(raw[k].detach(), torch.cat([mean, var], dim=-1), rtol=1e-6, atol=1e-7)
        ((torch.cat([mean, var], dim=-1) - torch.cat([target[k], target[k].abs()], dim=-1)) ** 2).sum().backward()
        for (name, p), g in zip(net.named_parameters(), grads):
            torch.testing.assert_close(g[k], p.grad, rtol=1e-5, atol=1e-6, msg=f"member {k}, {name}")
    assert torch.equal(raw[2, :, 2:], torch.zeros(5, 2))  # no noise anywhere: V[y] = 0 exactly, as solo
    shared = torch.randn(5, 3)  # a subset of members on a shared input: each gets its own settings
    subset = stacked(shared, [p[[3, 1]] for p in stacked.params], [3, 1])
    for row, k in enumerate((3, 1)):
        torch.testing.assert_close(subset[row], torch.cat(nets[k](shared), dim=-1), rtol=1e-6, atol=1e-7)


def test_a_member_row_is_its_solo_nets_parameters_in_state_dict_order():
    nets = solo_nets(0.01)
    stacked = StackedFastDropoutNet(nets)
    assert stacked.names == list(nets[0].state_dict())
    for net, row in zip(nets, stacked.rows()):
        assert all(torch.equal(a, b) for a, b in zip(stacked.unflatten(row), net.state_dict().values()))


def test_fd_and_ivn_nets_do_not_stack_together():
    with pytest.raises(ValueError, match="members must share every parameter name and shape"):
        StackedFastDropoutNet([solo_nets(None)[0], solo_nets(0.01)[0]])


def test_the_benchmark_prints_its_fd_line_in_smoke_mode():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cohort.py"
    result = subprocess.run([sys.executable, str(script), "--smoke", "--cases", "fd"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.fullmatch(r"cohort method=fd K=2 device=cpu ratio=\d+\.\d\d", result.stdout.strip()), result.stdout
