"""Cohorts of the `rnn` method (trainables/kit/rnn_cohort.py): K trials as one stacked model, each
member's reports, checkpoints and final result against its solo `run_local`.

Real JSB Chorales from $SEQREP_DATA (skipped without it), cut to 36 training sequences (four full
minibatches of 8 and one of 4, so members' minibatches differ in length and size) and 12
validation and test sequences, with 16 hidden units, so that the file runs in under a minute on one
CPU thread. The three members of the main cohort are compared with their solo runs over the first
20 epochs (EPOCHS), per epoch and in their final metrics, to 1e-5 relative (they agree far closer:
the FD members bit for bit, the deterministic one, whose solo run is torch's `nn.RNN`, to ~2e-7).
The other cases run fewer epochs.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re

import pytest
import torch

from cohort_checks import load_benchmark
from seqrep import data as datasets
from seqrep.data.base import SequenceData
from seqrep.errors import SeqrepError
from seqrep.method import TrialContext
from seqrep.session import LocalSession, run_local, run_local_cohort
from test_fused_tanh import Replay, fused  # noqa: F401 (the fixture, and what it patches in)
from trainables import rnn
from trainables.kit import rnn_stack
from trainables.nn import stacked_recurrent as sr

EPOCHS = 20
RTOL = 1e-5
BASE = dict(hidden_units=16, batch_size=8)
CONFIGS = [  # three members: FD everywhere; the deterministic sRNN; FD without FD output layer, renormalised
    dict(BASE, p_drop_input=0.1, p_drop_hidden=0.3, p_drop_output=0.2, step_rate=1e-2, momentum=0.9, decay=0.9, nu=5),
    dict(BASE, step_rate=5e-3, momentum=0.5, decay=0.8, rho=1.05, sigma2=0.05),
    dict(BASE, p_drop_input=0.2, p_drop_hidden=0.1, p_drop_output=0.5, fd_final_layer=False, step_rate=1e-3,
         momentum=0.0, nu=8, sigma2_in=0.1, grad_norm=1.0),
]
SEEDS = [3, 4, 5]
DIVERGING = dict(BASE, p_drop_input=0.1, p_drop_hidden=0.2, p_drop_output=0.1, step_rate=3e18, momentum=0.99)


@pytest.fixture(scope="module")
def jsb() -> SequenceData:
    root = os.environ.get("SEQREP_DATA")
    if not root:
        pytest.skip("SEQREP_DATA is not set: the real piano-roll files are not available")
    if datasets.missing_files("jsb", root):
        pytest.skip(f"JSB Chorales is not in SEQREP_DATA ({root})")
    full = datasets.load("jsb", root)
    return SequenceData("jsb", full.train[:36], full.valid[:12], full.test[:12])


def contexts(data: SequenceData, seeds: list[int], epochs: int = EPOCHS) -> list[TrialContext]:
    return [TrialContext(dataset="jsb", data=data, max_epochs=epochs, seed=seed, metric="valid_nll", mode="min")
            for seed in seeds]


@pytest.fixture(scope="module")
def solo(jsb) -> list[LocalSession]:
    return [run_local("rnn", config, context) for config, context in zip(CONFIGS, contexts(jsb, SEEDS))]


@pytest.fixture(scope="module")
def cohort(jsb) -> list[LocalSession]:
    return run_local_cohort("rnn", CONFIGS, contexts(jsb, SEEDS))


def close(a: float, b: float, rtol: float = RTOL) -> bool:
    return (not math.isfinite(a) and not math.isfinite(b)) or abs(a - b) <= rtol * max(abs(a), abs(b))


def assert_same_record(member: LocalSession, alone: LocalSession, rtol: float = RTOL) -> None:
    assert member.status == alone.status
    assert [h["epoch"] for h in member.history] == [h["epoch"] for h in alone.history]
    for got, want in zip(member.history, alone.history):
        assert got.keys() == want.keys()
        assert all(close(got[key], want[key], rtol) for key in want), (got, want)
    assert member.final.keys() == alone.final.keys()
    assert all(close(member.final[key], alone.final[key], rtol) for key in alone.final), (member.final, alone.final)


def assert_same_layout(got, want, path: str = "") -> None:
    """Same nested structure, keys, types and tensor shapes (values may round differently)."""
    assert type(got) is type(want), path
    if isinstance(want, dict):
        assert list(got) == list(want), path
        for key in want:
            assert_same_layout(got[key], want[key], f"{path}/{key}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), path
        for i, (a, b) in enumerate(zip(got, want)):
            assert_same_layout(a, b, f"{path}/{i}")
    elif isinstance(want, torch.Tensor):
        assert got.shape == want.shape and got.dtype == want.dtype, path
    else:
        assert got == want or (isinstance(want, float) and close(got, want)), (path, got, want)


def test_every_member_reports_what_its_solo_run_reports(solo, cohort):
    for member, alone in zip(cohort, solo):
        assert member.status == "completed" and len(member.history) == EPOCHS
        assert_same_record(member, alone)
        assert_same_layout(member.model, alone.model)  # {"model": the solo net's state dict, "config": ...}
        for name, value in alone.model["model"].items():
            torch.testing.assert_close(member.model["model"][name], value, rtol=1e-4, atol=1e-6)
        assert_same_layout(member.checkpoint, alone.checkpoint)  # net, optimiser, generator, best state, plateau
        assert torch.equal(member.checkpoint["generator"], alone.checkpoint["generator"])
        buffer = io.BytesIO()
        torch.save(member.checkpoint, buffer)
        buffer.seek(0)
        assert torch.load(buffer, weights_only=True)["epoch"] == EPOCHS


def test_packed_training_reports_what_the_solo_runs_report(jsb, solo, monkeypatch):
    """The GPU's training path (minibatches packed, layers over all members at once), here on the CPU."""
    monkeypatch.setattr(rnn_stack, "packed_training", lambda device: True)
    for member, alone in zip(run_local_cohort("rnn", CONFIGS, contexts(jsb, SEEDS)), solo):
        assert_same_record(member, alone)


def test_the_gpus_whole_path_trains_in_member_order_and_reports_what_the_solo_runs_report(jsb, solo, monkeypatch,
                                                                                        fused):
    """A GPU's training path in full, on the CPU: packed minibatches in member order (no gathers of
    the members' parameters, no scatter of their losses) through the fused loops (their reference
    step functions, chunks "recorded" and "replayed"). The fused backward sums in another order
    than the eager one: the members agree with their solo runs to float32 rounding (within 1e-6
    over the 20 epochs; not bit for bit, 1e-7 fails)."""
    monkeypatch.setattr(rnn_stack, "packed_training", lambda device: True)
    plans = []
    forward = sr.StackedFDRNN.forward_packed
    monkeypatch.setattr(sr.StackedFDRNN, "forward_packed", lambda self, x, plan: (plans.append(plan), forward(self, x, plan))[1])
    for member, alone in zip(run_local_cohort("rnn", CONFIGS, contexts(jsb, SEEDS)), solo):
        assert_same_record(member, alone)
    assert len(plans) == EPOCHS * 5 and all(plan.identity for plan in plans)  # 5 minibatches an epoch
    assert any(plan.lengths != sorted(plan.lengths, reverse=True) for plan in plans)  # an order the eager loops refuse


def test_a_diverging_member_is_finished_diverged_and_the_others_go_on(jsb, solo):
    epochs = 6
    configs, seeds = [CONFIGS[0], DIVERGING, CONFIGS[2]], [SEEDS[0], 7, SEEDS[2]]
    members = run_local_cohort("rnn", configs, contexts(jsb, seeds, epochs))
    diverged = run_local("rnn", DIVERGING, contexts(jsb, [7], epochs)[0])
    assert diverged.status == "diverged" and 1 < len(diverged.history) < epochs  # after a best epoch, not first
    assert diverged.final["best_epoch"] >= 1 and "test_nll" in diverged.final
    assert_same_record(members[1], diverged)
    assert not math.isfinite(members[1].history[-1]["valid_nll"])
    for member, alone in ((members[0], solo[0]), (members[2], solo[2])):  # the first epochs of the 20-epoch runs
        assert member.status == "completed" and len(member.history) == epochs
        assert all(close(a[key], b[key]) for a, b in zip(member.history, alone.history) for key in b)


def test_resume_equals_an_uninterrupted_run(jsb, solo):
    whole = run_local_cohort("rnn", CONFIGS, contexts(jsb, SEEDS, epochs=6))
    first = run_local_cohort("rnn", CONFIGS, contexts(jsb, SEEDS, epochs=3))
    checkpoints = [member.checkpoint for member in first]
    assert {int(c["epoch"]) for c in checkpoints} == {3}
    resumed = run_local_cohort("rnn", CONFIGS, contexts(jsb, SEEDS, epochs=6), resume_from=checkpoints)
    for member, uninterrupted in zip(resumed, whole):
        assert member.history == uninterrupted.history[3:]  # the same numbers, bit for bit
        assert member.final == uninterrupted.final and member.status == uninterrupted.status
        assert_same_layout(member.model, uninterrupted.model)
        for name, value in uninterrupted.model["model"].items():
            assert torch.equal(member.model["model"][name], value)
    # a member's checkpoint is a solo run's: a solo run resumes it too
    alone = run_local("rnn", CONFIGS[0], contexts(jsb, SEEDS[:1], epochs=6)[0], resume_from=checkpoints[0])
    assert [h["epoch"] for h in alone.history] == [4, 5, 6]
    assert all(close(a[key], b[key]) for a, b in zip(alone.history, solo[0].history[3:6]) for key in b)


def test_members_resume_from_one_epoch_only(jsb, cohort):
    checkpoints = [member.checkpoint for member in cohort]  # at epoch EPOCHS
    older = run_local_cohort("rnn", CONFIGS[:1], contexts(jsb, SEEDS[:1], epochs=2))[0].checkpoint
    with pytest.raises(SeqrepError, match="one epoch"):
        run_local_cohort("rnn", CONFIGS[:2], contexts(jsb, SEEDS[:2]), resume_from=[checkpoints[0], older])
    with pytest.raises(SeqrepError, match="no checkpoint"):
        run_local_cohort("rnn", CONFIGS[:2], contexts(jsb, SEEDS[:2]), resume_from=[checkpoints[0], None])


def test_members_must_share_the_cohort_keys_and_the_context(jsb):
    assert rnn.COHORT_KEYS == ("cell", "hidden_units", "batch_size", "optimizer")
    with pytest.raises(SeqrepError, match="hidden_units"):
        run_local_cohort("rnn", [CONFIGS[0], dict(CONFIGS[1], hidden_units=17)], contexts(jsb, SEEDS[:2]))
    shorter = contexts(jsb, SEEDS[:2])
    shorter[1] = dataclasses.replace(shorter[1], max_epochs=3)
    with pytest.raises(SeqrepError, match="max_epochs"):
        run_local_cohort("rnn", CONFIGS[:2], shorter)


@pytest.mark.parametrize("case", ["plain", "adadelta", "lstm"])
def test_other_cohorts_equal_their_solo_runs(jsb, case):
    """plain: no member drops inputs or hidden units (the one-product recurrence; one member has
    output dropout, one none); adadelta: climin's Adadelta; lstm: LSTM members run in lockstep."""
    configs = {
        "plain": [dict(CONFIGS[1], p_drop_output=0.3), CONFIGS[1]],
        "adadelta": [dict(CONFIGS[0], optimizer="adadelta", step_rate=1.0, offset=1e-4),
                     dict(CONFIGS[2], optimizer="adadelta", step_rate=0.5, decay=0.95, offset=1e-6)],
        "lstm": [dict(BASE, cell="lstm", hidden_units=8, p_drop_hidden=0.2, p_drop_output=0.1, momentum=0.9),
                 dict(BASE, cell="lstm", hidden_units=8, step_rate=5e-3)],
    }[case]
    crop = lambda seqs: [s[: 12 + i % 13] for i, s in enumerate(seqs)]  # noqa: E731 (12 to 24 steps, unequal)
    epochs, small = 3, SequenceData("jsb", crop(jsb.train[:20]), crop(jsb.valid[:6]), crop(jsb.test[:6]))
    members = run_local_cohort("rnn", configs, contexts(small, SEEDS[:2], epochs))
    for config, context, member in zip(configs, contexts(small, SEEDS[:2], epochs), members):
        alone = run_local("rnn", config, context)
        assert_same_record(member, alone, rtol=0.0 if case == "lstm" else RTOL)  # lockstep: the solo numbers
        assert_same_layout(member.checkpoint, alone.checkpoint)


def test_the_benchmark_draws_the_same_hyperparameters_at_every_width():
    """`--hidden 600` (the GPU case) changes the width of every member and nothing else it draws."""
    draw = load_benchmark("cohort_rnn").draw_configs
    narrow, wide = draw(8), draw(8, hidden=600)
    assert [c["hidden_units"] for c in narrow] == [200] * 8 and [c["hidden_units"] for c in wide] == [600] * 8
    assert [dict(c, hidden_units=0) for c in narrow] == [dict(c, hidden_units=0) for c in wide]
    assert len({tuple(sorted(c.items())) for c in narrow}) == 8  # eight different configs


def test_the_benchmark_returns_its_line(tmp_path):
    main = load_benchmark("cohort_rnn").main
    assert main(2, "cpu", data_dir=str(tmp_path)).startswith(
        "cohort method=rnn skipped: JSB Chorales not available (")
    if not torch.cuda.is_available():
        assert main(2, "cuda") == "cohort method=rnn skipped: no CUDA device"
    root = os.environ.get("SEQREP_DATA")
    if not root or datasets.missing_files("jsb", root):
        pytest.skip("SEQREP_DATA does not hold JSB Chorales: the benchmark's own run is not tried")
    line = main(2, "cpu", sequences=4, repeats=1, data_dir=root, hidden=8)
    assert re.fullmatch(r"cohort method=rnn K=2 device=cpu ratio=\d+\.\d\d", line), line


def test_the_profile_prints_both_sides_per_minibatch(tmp_path):
    main = load_benchmark("cohort_profile").main
    assert main(2, "cpu", data_dir=str(tmp_path))[0].startswith("profile skipped: JSB Chorales not available (")
    if not torch.cuda.is_available():
        assert main(2, "cuda") == ["profile skipped: no CUDA device"]
    root = os.environ.get("SEQREP_DATA")
    if not root or datasets.missing_files("jsb", root):
        pytest.skip("SEQREP_DATA does not hold JSB Chorales: the profile's own run is not tried")
    lines = main(2, "cpu", hidden=8, sequences=20, top=3, data_dir=root)  # 20 sequences: minibatches of 16 and 4
    heads = [line for line in lines if line.startswith("profile ")]
    pattern = r"profile side={} K=2 device=cpu minibatches=2 wall_ms=\d+\.\d\d device_ms=n/a busy=n/a launches=\d+\.\d"
    assert len(lines) == 8 and [lines[0], lines[4]] == heads, lines
    assert re.fullmatch(pattern.format("cohort"), heads[0]) and re.fullmatch(pattern.format("solo"), heads[1]), heads
    assert all(re.fullmatch(r" +\d+\.\d{3} ms +\d+\.\dx  aten::\w+", line) for line in lines[1:4] + lines[5:]), lines
