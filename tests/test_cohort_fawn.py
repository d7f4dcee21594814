"""Cohorts of FAWN-VB and FAWN-ROPD (`trainables.kit.fawn_cohort`): each member's run equals its solo run.

Table 8's cohorts are the UCI splits of one set, so the members here differ in their data (each
trains on its own split of a small synthetic UCI-like set) and in their seeds. A member differs
from its solo `run_local(method, ...)` only by the rounding of batched kernels: its per-epoch
history and final metrics agree within 1e-5 relative over 20 epochs; a member that reaches its
plateau (or diverges) finishes at the epoch its solo run does, without disturbing the rest; a
cohort resumed from its members' checkpoints continues as if never interrupted.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from seqrep.errors import SeqrepError
from seqrep.method import TrialContext, UCISplits
from seqrep.session import LocalSession, run_local, run_local_cohort
from trainables import fawn_ropd, fawn_vb
from trainables.kit import fawn_cohort
from trainables.nn.fawn import FAWNNet, ropd_point_loss, vb_point_loss
from trainables.nn.stacked_adam import StackedAdam

from cohort_checks import RecordingSession, compare_with_solo, relative_differences

REL = 1e-5
EPOCHS = 20
METHODS = {"fawn_vb": fawn_vb, "fawn_ropd": fawn_ropd}
SHAPE = dict(hidden_layers=1, hidden_units=8, transfer="rectifier", batch_size=16)
SEEDS = [3, 7, 11]


@pytest.fixture(scope="module")
def uci() -> UCISplits:
    """A UCI-like set of 60 rows: splits 0-3 train on 48 rows each, split 4 on 40 (a different size)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)) * [1.0, 3.0, 0.5] + [0.0, 10.0, -2.0]
    y = (np.sin(x[:, :1]) + 0.3 * x[:, 1:2] + 0.2 * rng.normal(size=(60, 1))) * 4.0 + 20.0
    orders = [np.random.default_rng(i).permutation(60) for i in range(5)]
    trains = tuple(o[:48] for o in orders[:4]) + (orders[4][:40],)
    tests = tuple(o[48:] for o in orders[:4]) + (orders[4][40:],)
    return UCISplits("uci-boston", x, y, trains, tests)


def context(data, seed: int, epochs: int = EPOCHS) -> TrialContext:
    return TrialContext(dataset="uci-boston", data=data, max_epochs=epochs, seed=seed, metric="valid_loss",
                        mode="min")


def members(splits=(0, 1, 2), **overrides) -> list[dict]:
    # step rates above Table 8's 0.001, so that 20 epochs move the members far from their start
    return [dict(SHAPE, split=s, step_rate=0.01, patience=None, **overrides) for s in splits]


def assert_matches_solo(method: str, session: LocalSession, data, config: dict, seed: int, rel: float = REL) -> float:
    """The member's history, final metrics, status and model against its solo run; the largest
    relative difference."""
    solo = run_local(method, config, context(data, seed, session.context.max_epochs))
    largest = compare_with_solo(session, solo, rel)
    if solo.model is not None:
        assert list(session.model["model"]) == list(solo.model["model"])
        for name, tensor in solo.model["model"].items():
            torch.testing.assert_close(session.model["model"][name], tensor, rtol=1e-4, atol=1e-6)
    return largest


@pytest.mark.parametrize("method", METHODS)
def test_each_member_equals_its_solo_run(uci, method):
    configs = members()
    sessions = run_local_cohort(method, configs, [context(uci, s) for s in SEEDS])
    assert len({s.history[-1]["valid_loss"] for s in sessions}) == 3  # the members really differ
    assert all(s.status == "completed" and len(s.history) == EPOCHS for s in sessions)
    worst = max(assert_matches_solo(method, s, uci, c, seed) for s, c, seed in zip(sessions, configs, SEEDS))
    print(f"{method}: largest relative difference to the solo runs: {worst:.2e}")


def test_a_member_on_its_plateau_finishes_when_its_solo_run_stops_and_the_others_go_on(uci):
    configs = members()
    configs[1].update(patience=2, tolerance=0.05)
    sessions = run_local_cohort("fawn_vb", configs, [context(uci, s) for s in SEEDS])
    assert [len(s.history) for s in sessions][::2] == [EPOCHS, EPOCHS]
    assert len(sessions[1].history) == 6 and sessions[1].status == "completed"
    for s, c, seed in zip(sessions, configs, SEEDS):
        assert_matches_solo("fawn_vb", s, uci, c, seed)


def test_a_diverging_member_is_finished_diverged_and_the_others_go_on(uci):
    configs = members()
    configs[1]["step_rate"] = 10.0  # diverges at epoch 5, its best epoch is 2
    sessions = run_local_cohort("fawn_vb", configs, [context(uci, s, epochs=8) for s in SEEDS])
    assert [s.status for s in sessions] == ["completed", "diverged", "completed"]
    assert len(sessions[1].history) == 5 and not math.isfinite(sessions[1].history[-1]["valid_loss"])
    assert sessions[1].final["best_epoch"] == 2 and math.isfinite(sessions[1].final["test_nll"])
    for s, c, seed in zip(sessions, configs, SEEDS):
        assert_matches_solo("fawn_vb", s, uci, c, seed)


def test_members_with_different_training_sizes_train_as_sub_cohorts(uci):
    configs = members(splits=(0, 4, 1))  # split 4 trains on 40 rows, the others on 48
    sessions = run_local_cohort("fawn_ropd", configs, [context(uci, s, epochs=6) for s in SEEDS])
    for s, c, seed in zip(sessions, configs, SEEDS):
        assert_matches_solo("fawn_ropd", s, uci, c, seed)


@pytest.mark.parametrize("method", METHODS)
def test_a_resumed_cohort_equals_the_uninterrupted_one(uci, method):
    module = METHODS[method]
    configs = members(splits=(0, 1, 4, 2))
    configs[3].update(patience=2, tolerance=0.05)  # plateaus during the first part (see below)
    contexts = [context(uci, s, epochs=10) for s in SEEDS + [5]]
    whole = [RecordingSession(c) for c in contexts]
    module.train_cohort([module.Config.from_dict(c) for c in configs], whole)
    stopped = len(whole[3].history)  # the restart is from that epoch: member 3 is not handed back
    assert 2 < stopped < 9 and whole[3].status == "completed", stopped
    at = [s.checkpoints[stopped] for s in whole[:3]]
    assert max(size for s in whole for size in s.checkpoint_bytes.values()) < 20_000  # a member's numbers, not the stack's
    rest = run_local_cohort(method, configs[:3], contexts[:3], resume_from=at)
    for a, b in zip(whole, rest):
        assert [h["epoch"] for h in b.history] == list(range(stopped + 1, 11))
        assert b.status == a.status == "completed"
        assert max(d for s, m in zip(a.history[stopped:], b.history) for d in relative_differences(s, m)) <= 1e-6
        assert max(relative_differences(a.final, b.final)) <= 1e-6
        assert a.final["best_epoch"] == b.final["best_epoch"]
        for name, tensor in a.model["model"].items():
            torch.testing.assert_close(b.model["model"][name], tensor, rtol=1e-6, atol=0)


def test_a_cohort_refuses_a_solo_checkpoint(uci):
    solo = run_local("fawn_vb", members()[0], context(uci, 0, epochs=2))
    with pytest.raises(SeqrepError, match="checkpoint of cohort member 0 must hold its network as a row"):
        run_local_cohort("fawn_vb", members()[:1], [context(uci, 0, epochs=4)], resume_from=[solo.checkpoint])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("key, value", [("hidden_units", 10), ("hidden_layers", 2), ("transfer", "sigmoid"),
                                        ("batch_size", 25)])
def test_members_differing_in_a_cohort_key_are_refused_by_name(uci, method, key, value):
    assert METHODS[method].COHORT_KEYS == ("hidden_layers", "hidden_units", "transfer", "batch_size")
    configs = [dict(SHAPE), {**SHAPE, key: value}]
    values = [SHAPE[key], value]
    message = f"cohort members of method {method} must share {key!r}, but got {values}"
    with pytest.raises(SeqrepError, match=f"^{re.escape(message)}$"):
        run_local_cohort(method, configs, [context(uci, 0), context(uci, 1)])
    # the trainer checks too, whoever calls it
    module = METHODS[method]
    message = f"FAWN cohort members must share {key!r} (COHORT_KEYS: they fix the stacked network's shapes), " \
              f"but got {values}"
    with pytest.raises(SeqrepError, match=f"^{re.escape(message)}$"):
        module.train_cohort([module.Config.from_dict(c) for c in configs],
                            [LocalSession(context(uci, 0)), LocalSession(context(uci, 1))])


def test_the_moment_losses_are_the_solo_point_losses():
    torch.manual_seed(0)
    net = FAWNNet(3, 2, 1, 5, "sigmoid", 0.5, 0.3)
    x, y = torch.randn(7, 3), torch.randn(7, 2)
    mean, var = net(x)
    torch.testing.assert_close(fawn_cohort.vb_loss(y, mean, var, net.noise_var()), vb_point_loss(net, x, y))
    torch.testing.assert_close(fawn_cohort.ropd_loss(y, mean, var, net.noise_var()), ropd_point_loss(net, x, y))


def test_the_stacked_network_is_fawnnet_per_member():
    torch.manual_seed(0)
    nets = [FAWNNet(3, 2, 2, 5, "sigmoid", 0.5, 0.3) for _ in range(3)]
    stacked = fawn_cohort.StackedFAWN(nets, "sigmoid", torch.device("cpu"))
    x = torch.randn(3, 7, 3)
    p = stacked.views(stacked.flat)
    mean, var = stacked.moments(p, x)
    kl = stacked.kl(p)
    for k, net in enumerate(nets):
        m, v = net(x[k])
        torch.testing.assert_close(mean[k], m, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(var[k], v, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(kl[k], net.kl(), rtol=1e-6, atol=0)
        torch.testing.assert_close(stacked.noise_var(p)[k, 0], net.noise_var())
        state = stacked.state_dict(stacked.flat[k])
        assert all(torch.equal(state[name], value) for name, value in net.state_dict().items())


def test_stacked_adam_is_torchs_adam_bit_for_bit():
    torch.manual_seed(0)
    rates = [1e-3, 1e-2, 1e-3]
    params = [torch.randn(40, requires_grad=True) for _ in rates]
    optimizers = [torch.optim.Adam([p], lr=rate) for p, rate in zip(params, rates)]
    flat = torch.stack([p.detach().clone() for p in params])
    stacked = StackedAdam(flat, rates)
    same_rate = torch.stack([params[0].detach().clone(), params[2].detach().clone()])
    stacked_same = StackedAdam(same_rate, [1e-3, 1e-3])  # addcdiv's path
    for _ in range(5):
        grads = torch.randn(3, 40)
        for p, g, opt in zip(params, grads, optimizers):
            p.grad = g.clone()
            opt.step()
        stacked.step(flat, grads)
        stacked_same.step(same_rate, grads[[0, 2]])
    for k, p in enumerate(params):
        assert torch.equal(flat[k], p.detach())
    assert torch.equal(same_rate[0], params[0].detach()) and torch.equal(same_rate[1], params[2].detach())
    assert torch.equal(stacked.member_state(1)["exp_avg_sq"], optimizers[1].state[params[1]]["exp_avg_sq"])


def test_members_on_the_toy_set_draw_their_solo_runs_plot():
    import seqrep.data

    toy = seqrep.data.load("toy")
    configs = [dict(SHAPE, step_rate=0.01, patience=None), dict(SHAPE, step_rate=0.003, patience=None)]
    contexts = [TrialContext(dataset="toy", data=toy, max_epochs=3, seed=s, metric="valid_loss", mode="min")
                for s in SEEDS[:2]]
    sessions = run_local_cohort("fawn_ropd", configs, contexts)
    for session, config, ctx in zip(sessions, configs, contexts):
        solo = run_local("fawn_ropd", config, ctx)
        assert max(relative_differences(solo.final, session.final)) <= REL
        assert (session.artifact_dir / "predictive.png").stat().st_size > 10_000
        files = [sorted(p.name for p in s.artifact_dir.iterdir()) for s in (session, solo)]
        assert files[0] == files[1]
