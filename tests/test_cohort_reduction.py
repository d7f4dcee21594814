"""Cohorts of the sequence-reduction methods (`ri`, `osp`, `sf`, `rim`; `trainables.kit.reduction_cohort`)
on the real UCR CBF set: every member reports and finishes as its solo `run_local` does (per-epoch
metrics within 1e-5 relative, the same final metrics, status, model layout and checkpoint
layout), a resumed cohort equals an uninterrupted one, a diverging member is finished `diverged`
while the others go on, what cannot be stacked runs solo, and the benchmark prints its line.

Table 10's fixed settings (32 hidden, 16 output units, rmsprop 1e-4 / 0.9 / 0.9, spectral radius
1); RI, OSP and RIM over 20 epochs (Table 10 trains 15), SF over 2 (below). Saving the test embeddings (Figure 9's
input) is replaced on both sides by a recorder, which checks that each member keeps its solo
run's embeddings.

How many epochs stay within 1e-5: a member's numbers differ from its solo run's by the float32
rounding of batched kernels (in float64 the stacked network's losses and gradients equal the solo
network's to 1e-12: `test_stacked_network_and_rmsprop_equal_the_solo_ones_in_float64`), and how
fast such differences grow is the objective's own: RI, OSP and RIM stay within 1e-5 over 20 epochs,
but SF amplifies them about tenfold per epoch (so does a solo SF run: its weights perturbed by 1e-7
after epoch 1, its training loss differs by 2e-5 at epoch 4 and 4e-4 at epoch 5), so SF is
compared over 2 epochs. RIM's loss of a member with near-uniform outputs is a difference of two
entropies of about log 16 (-1.6e-5 = 2.77... - 2.77...), so its training loss is compared to 1e-6
absolute as well.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cohort_checks import load_benchmark
import seqrep.data
from seqrep.method import TrialContext
from seqrep.session import run_local, run_local_cohort
from trainables import osp, ri, rim, sf
from trainables.kit import reduction_cohort, reduction_run

CBF = Path(seqrep.data.resolve_data_dir()) / "ucr/CBF/CBF_TEST.tsv"

TABLE10 = dict(hidden_units=32, output_units=16, optimizer="rmsprop", step_rate=1e-4, momentum=0.9, decay=0.9,
               spectral_radius=1.0, normalise="none", batch_fraction=0.25)
MEMBERS = [dict(transfer="tanh", pooling="mean", init_std=0.3, penalty=0.01),
           dict(transfer="rectifier", pooling="stochastic", init_std=0.8, penalty=1e-5),
           dict(transfer="softsign", pooling="max", init_std=0.05, penalty=0.0)]
SEEDS = [11, 12, 13]


@pytest.fixture(scope="module")
def cbf():
    if not CBF.exists():
        pytest.skip("needs ucr/CBF in $SEQREP_DATA (the UCR 2018 archive)")
    return seqrep.data.load("ucr-cbf")


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """One BLAS thread for scikit-learn's logistic regressions (SciPy's own OpenBLAS loaded first):
    two threads on a busy two-core machine made each regression 15 times slower."""
    from threadpoolctl import threadpool_limits

    from trainables.kit.judges import logreg_cv_error

    logreg_cv_error(np.arange(12.0).reshape(6, 2), np.array([0, 1] * 3))
    with threadpool_limits(limits=1):
        yield


class Kept(dict):
    """Test embeddings by (title, seed), one entry per run; `figures`: Figures 11-12's arrays likewise."""

    def __init__(self):
        super().__init__()
        self.figures: dict[tuple[str, int], list[dict]] = {}


@pytest.fixture
def tsne(monkeypatch):
    """Both sides' test embeddings (Figure 9's input) recorded instead of saved: {(title, seed): [embeddings, ...]},
    and the arrays of Figures 11 and 12 in `.figures`."""
    drawn = Kept()

    def record(folder, e, y, classes, title, seed, figures=None):
        drawn.setdefault((title, seed), []).append(np.array(e))
        drawn.figures.setdefault((title, seed), []).append(dict(figures or {}))

    monkeypatch.setattr(reduction_run, "save_embeddings", record)
    monkeypatch.setattr(reduction_cohort, "save_embeddings", record)
    return drawn


FIGURE_KEYS = {"nn_index", "nn_distance", "nn_series", "jac_sample", "jac_index", "jac_features", "jac"}


def configs_for(method: str, members=MEMBERS, **changes) -> list[dict]:
    configs = [dict(TABLE10, **member, **changes) for member in members]
    if method == "ri":
        for config in configs:
            config.pop("penalty")
    return configs


def contexts(data, epochs: int, seeds=SEEDS) -> list[TrialContext]:
    return [TrialContext(dataset="ucr-cbf", data=data, max_epochs=epochs, seed=seed, metric="valid_error", mode="min")
            for seed in seeds]


def assert_metrics_close(cohort: dict, solo: dict, what: str) -> None:
    assert cohort.keys() == solo.keys(), what
    for key, value in solo.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(cohort[key]), (what, key)
        else:
            absolute = 1e-6 if key == "train_loss" else 1e-9  # RIM: a difference of two O(1) entropies
            assert cohort[key] == pytest.approx(value, rel=1e-5, abs=absolute), (what, key, cohort[key], value)


def assert_state_close(cohort, solo, what: str, rtol: float = 1e-5) -> None:
    """Nested checkpoint values: the same layout; each float tensor within `rtol` of its largest
    entry (plus 1e-9), generator states equal, numbers as metrics."""
    if isinstance(solo, torch.Tensor):
        assert (cohort.shape, cohort.dtype) == (solo.shape, solo.dtype), what
        if solo.dtype == torch.uint8:
            assert torch.equal(cohort, solo), what
        else:
            error = float((cohort - solo).abs().max()) if solo.numel() else 0.0
            assert error <= rtol * float(solo.abs().max()) + 1e-9, (what, error, float(solo.abs().max()))
    elif isinstance(solo, dict):
        assert set(cohort) == set(solo), (what, sorted(cohort), sorted(solo))
        for key in solo:
            assert_state_close(cohort[key], solo[key], f"{what}.{key}", rtol)
    elif isinstance(solo, list):
        assert len(cohort) == len(solo), what
        for i, (c, s) in enumerate(zip(cohort, solo)):
            assert_state_close(c, s, f"{what}[{i}]", rtol)
    elif isinstance(solo, float) and math.isnan(solo):
        assert math.isnan(cohort), what
    elif isinstance(solo, float):
        assert cohort == pytest.approx(solo, rel=1e-5, abs=1e-9), what
    else:
        assert cohort == solo, what


def assert_member_equals_solo(member, solo, what: str, rtol: float = 1e-5) -> None:
    assert member.status == solo.status, what
    assert [h["epoch"] for h in member.history] == [h["epoch"] for h in solo.history], what
    for epoch, (c, s) in enumerate(zip(member.history, solo.history), 1):
        assert_metrics_close(c, s, f"{what} epoch {epoch}")
    assert_metrics_close(member.final, solo.final, f"{what} final")
    assert_state_close(member.model, solo.model, f"{what} model", rtol)
    if solo.checkpoint is None:
        assert member.checkpoint is None, what
    else:
        assert set(member.checkpoint) - {"sampler"} == set(solo.checkpoint), what  # stacked members add `sampler`
        assert_state_close({k: v for k, v in member.checkpoint.items() if k != "sampler"}, solo.checkpoint,
                           f"{what} checkpoint", rtol)


@pytest.mark.parametrize("method, epochs, state_rtol", [("ri", 20, 1e-5), ("osp", 20, 1e-5), ("sf", 2, 1e-2),
                                                      ("rim", 20, 1e-5)])
def test_every_member_reports_and_finishes_as_its_solo_run(cbf, tsne, method, epochs, state_rtol, tmp_path):
    """Metrics within 1e-5 relative; weights and optimiser state within `state_rtol` (SF's gradient
    amplifies rounding fastest: after 2 epochs a member's rmsprop state is 4e-3 off its solo
    run's while its training loss is still within 1e-6)."""
    configs, ctxs = configs_for(method), contexts(cbf, epochs)
    solo = [run_local(method, c, x, out_dir=tmp_path / f"solo{k}") for k, (c, x) in enumerate(zip(configs, ctxs))]
    members = run_local_cohort(method, configs, ctxs)
    for k, (member, alone) in enumerate(zip(members, solo)):
        assert_member_equals_solo(member, alone, f"{method} member {k}", state_rtol)
        assert member.status == "completed" and member.final["best_epoch"] >= 1
        assert {"valid_initial_error", "valid_improved", "test_error"} <= set(member.final)
        assert list(member.model["model"]) == ["w_rec", "w_in.weight", "w_in.bias"] + (
            [] if method == "ri" else ["out.weight", "out.bias"])
        assert member.model["config"] == alone.model["config"]
    for key, figures in tsne.items():  # each member keeps its solo run's test embeddings
        assert len(figures) == 2, key
        np.testing.assert_allclose(figures[1], figures[0], rtol=1e-5, atol=1e-6)
    assert len(tsne) == len(configs)
    for key, (alone, member) in tsne.figures.items():  # and its solo run's Figures 11 and 12
        assert alone.keys() == member.keys() == FIGURE_KEYS, key
        for name in ("nn_index", "jac_index", "jac_features", "nn_series", "jac_sample"):
            np.testing.assert_array_equal(member[name], alone[name], err_msg=f"{key} {name}")
        np.testing.assert_allclose(member["nn_distance"], alone["nn_distance"], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(member["jac"], alone["jac"], rtol=max(1e-4, 10 * state_rtol),
                                   atol=1e-6 * float(np.abs(alone["jac"]).max()))


def test_the_members_embedded_in_passes_get_the_same_bits(cbf, tsne, monkeypatch):
    """A member's test embeddings and final metrics are the same whether the stack embeds all
    members in one pass or one member per pass (EMBED_SEQUENCES 256, one 256-sequence chunk each)."""
    configs, ctxs = configs_for("osp"), contexts(cbf, 1)
    whole = run_local_cohort("osp", configs, ctxs)
    monkeypatch.setattr(reduction_cohort, "EMBED_SEQUENCES", 256)
    passes = run_local_cohort("osp", configs, ctxs)
    for member, alone in zip(passes, whole):
        assert member.final == alone.final and member.history == alone.history
    assert [len(figures) for figures in tsne.values()] == [2] * len(configs)
    for figures in tsne.values():
        assert figures[0].tobytes() == figures[1].tobytes()


def test_a_resumed_cohort_equals_an_uninterrupted_one(cbf, tsne):
    configs = configs_for("sf")  # member 1 pools stochastically: its draws resume from the checkpoint too
    whole = run_local_cohort("sf", configs, contexts(cbf, 4))
    first = run_local_cohort("sf", configs, contexts(cbf, 2))
    resumed = run_local_cohort("sf", configs, contexts(cbf, 4), resume_from=[m.checkpoint for m in first])
    for k, (a, b) in enumerate(zip(resumed, whole)):
        assert [h["epoch"] for h in a.history] == [3, 4]
        assert a.history == b.history[2:], k
        assert a.final == b.final and a.status == b.status == "completed", k
        assert a.final["valid_initial_error"] == b.final["valid_initial_error"]
        for name, tensor in b.model["model"].items():
            assert torch.equal(a.model["model"][name], tensor), (k, name)
        assert_state_close(a.checkpoint, b.checkpoint, f"member {k} checkpoint")


def test_a_diverging_member_is_finished_diverged_while_the_others_go_on(cbf, tsne, tmp_path):
    # a step rate of 0.3 blows a rectifier net up within its first epoch; the others train on
    members = [MEMBERS[0], dict(MEMBERS[1], pooling="mean", step_rate=0.3), MEMBERS[2]]
    configs, ctxs = configs_for("osp", members), contexts(cbf, 3)
    solo = [run_local("osp", c, x, out_dir=tmp_path / f"solo{k}") for k, (c, x) in enumerate(zip(configs, ctxs))]
    cohort = run_local_cohort("osp", configs, ctxs)
    for k, (member, alone) in enumerate(zip(cohort, solo)):
        assert_member_equals_solo(member, alone, f"member {k}")
    assert [m.status for m in cohort] == ["completed", "diverged", "completed"]
    assert [len(m.history) for m in cohort] == [3, 1, 3]
    assert cohort[1].final["best_epoch"] == 0 and cohort[1].model is None
    assert cohort[1].final["valid_improved"] == 0.0


def test_a_member_diverging_after_a_resume_is_finished_at_its_best_state(cbf, tsne, tmp_path):
    # resume at epoch 2 with member 1's step rate raised to 0.3 (a checkpoint's hyperparameters are
    # what the optimiser loads, solo and in a cohort): it diverges at epoch 3 and is finished there,
    # with its test error at its best epoch, while the others go on to epoch 4
    members = [MEMBERS[0], dict(MEMBERS[1], pooling="sum"), MEMBERS[2]]
    configs = configs_for("osp", members)
    first = run_local_cohort("osp", configs, contexts(cbf, 2))
    checkpoints = [copy.deepcopy(m.checkpoint) for m in first]
    checkpoints[1]["optimizer"]["param_groups"][0]["step_rate"] = 0.3
    ctxs = contexts(cbf, 4)
    solo = [run_local("osp", c, x, out_dir=tmp_path / f"solo{k}", resume_from=state)
            for k, (c, x, state) in enumerate(zip(configs, ctxs, checkpoints))]
    cohort = run_local_cohort("osp", configs, ctxs, resume_from=checkpoints)
    for k, (member, alone) in enumerate(zip(cohort, solo)):
        assert_member_equals_solo(member, alone, f"member {k}")
    assert [m.status for m in cohort] == ["completed", "diverged", "completed"]
    assert [[h["epoch"] for h in m.history] for m in cohort] == [[3, 4], [3], [3, 4]]
    assert 1 <= cohort[1].final["best_epoch"] <= 2 and "test_error" in cohort[1].final


def test_lstm_members_and_other_optimisers_run_solo_one_after_another(cbf, tsne, tmp_path):
    members = [dict(MEMBERS[0], transfer="lstm"), MEMBERS[2]]
    for method, changes in (("osp", {}), ("rim", {"optimizer": "rprop", "step_rate": 0.01})):
        configs, ctxs = configs_for(method, members, **changes), contexts(cbf, 1, SEEDS[:2])
        solo = [run_local(method, c, x, out_dir=tmp_path / f"{method}{k}") for k, (c, x) in enumerate(zip(configs, ctxs))]
        for k, (member, alone) in enumerate(zip(run_local_cohort(method, configs, ctxs), solo)):
            assert_member_equals_solo(member, alone, f"{method} member {k}")


def test_cohort_keys_are_what_fixes_a_shape_the_minibatches_the_optimiser_or_the_data():
    assert ri.COHORT_KEYS == ("hidden_units", "normalise")
    assert osp.COHORT_KEYS == ("hidden_units", "batch_fraction", "optimizer", "normalise")
    assert sf.COHORT_KEYS == rim.COHORT_KEYS == ("hidden_units", "output_units", "batch_fraction", "optimizer",
                                                 "normalise")


def test_the_benchmark_returns_its_line():
    line = load_benchmark("cohort_reduction").main(2, "cpu", epochs=1)
    if CBF.exists():
        assert re.fullmatch(r"cohort method=reduction K=2 device=cpu ratio=\d+\.\d\d", line), line
    else:
        assert line.startswith("cohort method=reduction K=2 device=cpu skipped: ucr-cbf is not in the data directory")


# --- the stacked network and optimiser against the solo ones, in float64 (no data needed) ----------

TRANSFERS = ["tanh", "softsign", "rectifier", "softplus", "sigmoid"]
POOLINGS = ["max", "sum", "mean", "stochastic", "mean"]


def float64_members(module, seeds):
    """Each member's solo problem and the cohort's stacked problem, built as `run_cohort` builds them."""
    from types import SimpleNamespace

    from trainables.nn.stacked_rnn import StackedPooledRNN

    configs = [module.Config.from_dict(dict(hidden_units=6, output_units=4, transfer=t, pooling=p, init_std=0.6,
                                            penalty=0.01 * k))
               for k, (t, p) in enumerate(zip(TRANSFERS, POOLINGS))]
    data = SimpleNamespace(n_features=3)
    problems = [reduction_run.build_problem(c, s, data, module.make, torch.device("cpu")) for c, s in zip(configs, seeds)]
    for problem in problems:
        problem.model.double()
    stacked = StackedPooledRNN.of([p.model for p in problems])
    return configs, problems, stacked, module.make_cohort(stacked, configs)


@pytest.mark.parametrize("module", [osp, sf, rim, ri])
def test_stacked_network_and_rmsprop_equal_the_solo_ones_in_float64(module):
    from trainables.nn.optim import RmsProp
    from trainables.nn.pooled_rnn import l2
    from trainables.nn.stacked_rmsprop import StackedRmsProp

    seeds = [3, 4, 5, 6, 7]
    configs, problems, stacked, cohort = float64_members(module, seeds)
    k, t, b = len(configs), 9, 5
    g = torch.Generator().manual_seed(0)
    x = torch.randn(t, k, b, 3, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (k, b), generator=g)
    mask = (torch.arange(t)[:, None, None] < lengths[None]).double()  # (T, K, B): each member its own lengths
    x = x * mask[..., None]
    for kk, p in enumerate(problems):  # evaluation embeddings, from the member's own batch and from a shared one
        np.testing.assert_allclose(cohort.embed(x, mask, False, None)[kk].detach(),
                                   p.embed(x[:, kk], mask[:, kk], False, None).detach(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(cohort.embed(x[:, 0], mask[:, 0], False, None)[kk].detach(),
                                   p.embed(x[:, 0], mask[:, 0], False, None).detach(), rtol=1e-12, atol=1e-14)
    if cohort.loss is None:
        return
    penalty = torch.tensor([c.penalty for c in configs], dtype=torch.float64)
    rates = [1e-2 * (kk + 1) for kk in range(k)]
    solo_opt = [RmsProp(list(p.model.parameters()), step_rate=r, decay=0.8, momentum=0.5) for p, r in zip(problems, rates)]
    stacked_opt = StackedRmsProp(list(stacked.params), rates, [0.8] * k, [0.5] * k)
    for step in range(3):
        solo_gens = [torch.Generator().manual_seed(10 * step + kk) for kk in range(k)]
        stacked_gens = [torch.Generator().manual_seed(10 * step + kk) for kk in range(k)]
        losses = cohort.loss(x, mask, stacked_gens) + penalty * stacked.penalty()
        for p in stacked.params:
            p.grad = None
        losses.sum().backward()
        for kk, (p, config) in enumerate(zip(problems, configs)):
            p.model.zero_grad(set_to_none=True)
            loss = p.loss(x[:, kk], mask[:, kk], None, solo_gens[kk])
            loss = loss + config.penalty * l2(p.model) if config.penalty > 0 else loss
            loss.backward()
            assert float(losses[kk].detach()) == pytest.approx(float(loss.detach()), rel=1e-12)
            for (name, q), sq in zip(p.model.named_parameters(), stacked.params):
                np.testing.assert_allclose(sq.grad[kk], q.grad, rtol=1e-10, atol=1e-13, err_msg=name)
            solo_opt[kk].step()
        stacked_opt.step()
    with stacked_opt.evaluation_point():
        at_theta = [p.detach().clone() for p in stacked.params]
    for kk, (p, opt) in enumerate(zip(problems, solo_opt)):
        assert_state_close(stacked_opt.member_state(kk), opt.state_dict(), f"member {kk} optimiser", 1e-12)
        assert_state_close(stacked.member_state(kk), p.model.state_dict(), f"member {kk} weights", 1e-12)
        with opt.climin_point():
            for q, theta in zip(p.model.parameters(), at_theta):
                np.testing.assert_allclose(theta[kk], q.detach(), rtol=1e-12, atol=1e-15)
    before = [p.detach().clone() for p in stacked.params]
    stacked_opt.freeze([1])
    for p in stacked.params:
        p.grad = torch.full_like(p, math.nan)
    stacked_opt.step()
    for old, new in zip(before, stacked.params):
        assert torch.equal(old[1], new[1])  # a frozen member keeps its weights, whatever its gradient
