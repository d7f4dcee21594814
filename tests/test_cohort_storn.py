"""Cohorts of the `storn` method (trainables/kit/storn_cohort.py, storn_stack.py): K trials as one
stacked model, each member's reports, checkpoints and final result against its solo `run_local`.

Real data from $SEQREP_DATA (skipped without it), cut small: JSB Chorales' first 36 training
sequences (minibatches of 8: four of 8 and one of 4, so members' minibatches differ in length and
size) and 12 validation and test sequences; 12 generating, 10 recognition and 4 latent units, so
that the file runs in under a minute on one CPU thread. The three Bernoulli members are compared
with their solo runs over 20 epochs (EPOCHS), per epoch and in their final metrics, to 1e-5
relative (they agree to ~2e-7: the stacked recurrence's batched products round differently).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re

import pytest
import torch

from cohort_checks import compare_with_solo, load_benchmark, relative_differences
from seqrep import data as datasets
from seqrep.data.base import SequenceData
from seqrep.errors import SeqrepError
from seqrep.method import TrialContext
from seqrep.session import LocalSession, run_local, run_local_cohort
from trainables import storn

EPOCHS = 20
RTOL = 1e-5
BASE = dict(hidden_units=12, recognition_units=10, latent_units=4, batch_size=8, is_samples=5, valid_is_samples=2)
CONFIGS = [  # FD in the generating net, sparse and rescaled; every rate 0; renormalised, other initial rates
    dict(BASE, p_drop_input=0.1, p_drop_hidden=0.2, p_drop_output=0.2, step_rate=0.3, momentum=0.9, nu=5, rho=4.2),
    dict(BASE, step_rate=0.1, momentum=0.5, decay=0.8, rho=None, sigma2=0.05, is_samples=3),
    dict(BASE, p_drop_input=0.2, p_drop_output=0.5, step_rate=1.0, momentum=0.0, nu=6, sigma2_in=0.1, grad_norm=1.0,
         rec_p_drop_hidden=0.3),
]
SEEDS = [3, 4, 5]


def load(name: str, train: int, other: int) -> SequenceData:
    root = os.environ.get("SEQREP_DATA")
    if not root:
        pytest.skip("SEQREP_DATA is not set: the real sequence files are not available")
    if datasets.missing_files(name, root):
        pytest.skip(f"{name} is not in SEQREP_DATA ({root})")
    full = datasets.load(name, root)
    return SequenceData(name, full.train[:train], full.valid[:other], full.test[:other])


@pytest.fixture(scope="module")
def jsb() -> SequenceData:
    return load("jsb", 36, 12)


def contexts(data: SequenceData, seeds: list[int], epochs: int = EPOCHS, metric: str = "valid_elbo_nll"):
    return [TrialContext(dataset=data.name, data=data, max_epochs=epochs, seed=seed, metric=metric, mode="min")
            for seed in seeds]


@pytest.fixture(scope="module")
def solo(jsb) -> list[LocalSession]:
    return [run_local("storn", config, context) for config, context in zip(CONFIGS, contexts(jsb, SEEDS))]


@pytest.fixture(scope="module")
def cohort(jsb) -> list[LocalSession]:
    return run_local_cohort("storn", CONFIGS, contexts(jsb, SEEDS))


def layout(state: dict) -> dict:
    """A checkpoint's structure: keys, tensor shapes and dtypes, nested."""
    if isinstance(state, dict):
        return {k: layout(v) for k, v in state.items()}
    if isinstance(state, torch.Tensor):
        return (tuple(state.shape), state.dtype)
    return type(state).__name__


def test_every_member_reports_what_its_solo_run_reports(solo, cohort):
    for member, alone in zip(cohort, solo):
        worst = compare_with_solo(member, alone, RTOL)
        assert 0.0 < worst < 1e-6  # stacked products round differently, by far less than the tolerance
        assert member.status == "completed" and len(member.history) == EPOCHS
        for name, tensor in alone.model["model"].items():  # the model file: its solo run's best state
            torch.testing.assert_close(member.model["model"][name], tensor, rtol=1e-4, atol=1e-6)
        assert layout(member.checkpoint) == layout(alone.checkpoint)  # net, optimiser, generator, best state
        assert torch.equal(member.checkpoint["generator"], alone.checkpoint["generator"])
        buffer = io.BytesIO()
        torch.save(dict(member.checkpoint), buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)  # what the sessions persist
    assert len({m.final["test_nll"] for m in cohort}) == 3  # the members trained apart


def test_a_diverging_member_is_finished_diverged_and_the_others_go_on(jsb, solo):
    diverging = dict(CONFIGS[0], step_rate=1e30, momentum=0.99)
    configs = [CONFIGS[1], diverging, CONFIGS[2]]
    epochs = 6
    ctxs = contexts(jsb, [SEEDS[1], 9, SEEDS[2]], epochs)
    members = run_local_cohort("storn", configs, ctxs)
    alone = run_local("storn", diverging, ctxs[1])
    assert alone.status == members[1].status == "diverged"
    assert [h["epoch"] for h in members[1].history] == [h["epoch"] for h in alone.history]
    assert len(members[1].history) < epochs
    for member, full in ((members[0], solo[1]), (members[2], solo[2])):
        assert member.status == "completed" and len(member.history) == epochs
        diffs = [d for s, m in zip(full.history[:epochs], member.history) for d in relative_differences(s, m)]
        assert max(diffs) <= RTOL


def test_resume_equals_an_uninterrupted_run(jsb, solo, cohort):
    """A restart resumes every member from its epoch-3 checkpoint, minibatch order and z generators
    included: epochs 4 and 5 are the uninterrupted cohort's, bit for bit; a member's checkpoint is a
    solo run's, and a solo run resumed from it goes on as the uninterrupted solo run."""
    first = run_local_cohort("storn", CONFIGS, contexts(jsb, SEEDS, epochs=3))
    checkpoints = [member.checkpoint for member in first]
    assert {int(c["epoch"]) for c in checkpoints} == {3}
    resumed = run_local_cohort("storn", CONFIGS, contexts(jsb, SEEDS, epochs=5), resume_from=checkpoints)
    for k, member in enumerate(resumed):
        assert [h["epoch"] for h in member.history] == [4, 5]
        assert member.history == cohort[k].history[3:5]
        alone = run_local("storn", CONFIGS[k], contexts(jsb, SEEDS, epochs=5)[k], resume_from=checkpoints[k])
        assert [h["epoch"] for h in alone.history] == [4, 5]
        diffs = [d for s, m in zip(solo[k].history[3:5], alone.history) for d in relative_differences(s, m)]
        assert max(diffs) < 1e-6


def test_members_must_share_the_cohort_keys_and_the_context(jsb):
    other = dict(CONFIGS[1], latent_units=5)
    with pytest.raises(SeqrepError, match="must share 'latent_units'"):
        run_local_cohort("storn", [CONFIGS[0], other], contexts(jsb, SEEDS[:2]))
    ctxs = contexts(jsb, SEEDS[:2])
    ctxs[1] = dataclasses.replace(ctxs[1], max_epochs=3)
    with pytest.raises(SeqrepError, match="must share context key 'max_epochs'"):
        run_local_cohort("storn", CONFIGS[:2], ctxs)


def test_gaussian_members_with_a_birnn_report_their_solo_runs_sigma_mse_and_figures(monkeypatch):
    """Table 14's form (motion capture: Gaussian outputs, a biRNN recognition net, sigma searched on
    the validation split, the one-step mse, Figures 15 and 16): two members, 2 epochs. Matplotlib's
    48 panels (6 s a figure) are stood in for by empty files named as the figures."""
    monkeypatch.setattr(storn, "plot_channels", lambda path, series, title: path.write_bytes(b""))
    mocap = load("mocap", 24, 6)
    base = dict(BASE, likelihood="gaussian", bidirectional=True, b_y=0.0, mse_samples=3)
    configs = [dict(base, **{k: v for k, v in c.items() if k not in base}) for c in CONFIGS[::2]]
    ctxs = contexts(mocap, SEEDS[::2], epochs=2, metric="valid_nll")
    members = run_local_cohort("storn", configs, ctxs)
    for config, context, member in zip(configs, ctxs, members):
        alone = run_local("storn", config, context)
        assert compare_with_solo(member, alone, RTOL) < 1e-6
        assert {"valid_sigma", "valid_mse", "test_sigma", "test_mse"} <= set(member.final)
        assert member.final["test_sigma"] == member.final["valid_sigma"]
        assert math.isclose(member.final["valid_sigma"], alone.final["valid_sigma"], rel_tol=RTOL)
        assert sorted(p.name for p in member.artifact_dir.iterdir()) == ["imputation.png", "samples.png"]


def test_the_stacked_losses_are_each_members_solo_loss(jsb):
    """One minibatch per member of different lengths (the stack runs them longest first): each
    member's loss and gradient equal its solo `sgvb_loss`'s (float64, 1e-10)."""
    from trainables.kit import sequence_vae
    from trainables.kit.storn_stack import StackedStorn
    from trainables.nn.sequences import pad

    configs = [storn.Config.from_dict(dict(c, bidirectional=True)) for c in CONFIGS]
    models = [storn.new_model(c, 88, seed).double() for c, seed in zip(configs, SEEDS)]
    stack = StackedStorn(models, configs, torch.device("cpu"))
    batches = []
    for k, (start, stop) in enumerate(((0, 3), (3, 8), (8, 10))):
        x, mask = pad(jsb.train[start:stop])
        eps = torch.randn((1,) + x.shape[:2] + (4,), generator=torch.Generator().manual_seed(k), dtype=torch.float64)
        batches.append((x.double(), mask.double(), eps))
    assert len({x.shape[0] for x, _, _ in batches}) == 3
    losses = stack.losses(batches)
    grads = torch.autograd.grad(losses.sum(), stack.params)
    for k, (model, (x, mask, eps)) in enumerate(zip(models, batches)):
        generator = torch.Generator().manual_seed(k)  # the same eps, drawn by the solo code
        want, _ = sequence_vae.sgvb_loss(_Drawing(model, generator), x, mask)
        torch.testing.assert_close(losses[k], want, rtol=1e-10, atol=0)
        solo = torch.autograd.grad(want, list(model.parameters()))
        for grad, alone in zip(grads, solo):
            torch.testing.assert_close(grad[k], alone, rtol=1e-8, atol=1e-12)


class _Drawing:
    """A solo model whose `terms` draws its z noise from `generator` (in float64, as the stacked test)."""

    def __init__(self, model, generator):
        self.model, self.generator, self.likelihood = model, generator, model.likelihood

    def terms(self, x, mask, samples, generator=None):
        from trainables.nn import latent

        draw = latent.reparameterise
        try:
            latent.reparameterise = lambda m, v, s=None, g=None: m + v.sqrt() * torch.randn(
                (s,) + tuple(m.shape), generator=self.generator, dtype=torch.float64)
            storn.reparameterise = latent.reparameterise
            return self.model.terms(x, mask, samples)
        finally:
            latent.reparameterise = draw
            storn.reparameterise = draw


def test_the_benchmarks_return_their_lines(tmp_path):
    cohort_main, epoch_main = load_benchmark("cohort_storn").main, load_benchmark("storn_epoch").main
    assert cohort_main(2, "cpu", data_dir=str(tmp_path)).startswith(
        "cohort method=storn skipped: JSB Chorales not available (")
    assert epoch_main(data_dir=str(tmp_path)).startswith("storn_epoch skipped: JSB Chorales not available (")
    if not torch.cuda.is_available():
        assert cohort_main(2, "cuda") == "cohort method=storn skipped: no CUDA device"
    root = os.environ.get("SEQREP_DATA")
    if not root or datasets.missing_files("jsb", root):
        pytest.skip("SEQREP_DATA does not hold JSB Chorales: the benchmarks' own runs are not tried")
    line = cohort_main(2, "cpu", sequences=4, repeats=1, data_dir=root, hidden=8)
    assert re.fullmatch(r"cohort method=storn K=2 device=cpu ratio=\d+\.\d\d", line), line
    line = epoch_main(repeats=1, sequences=4, data_dir=root)
    assert re.fullmatch(r"storn_epoch ratio=\d+\.\d\d", line), line
