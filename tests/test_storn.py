"""STORN and the DMM: masking, the sRNN limit, sigma's search, the biRNN pieces, tiny end-to-end runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seqrep.data.base import SequenceData
from seqrep.errors import SeqrepError
from seqrep.method import TrialContext
from seqrep.session import run_local
from trainables import dmm, storn
from trainables.kit import sequence_vae
from trainables.nn.latent import normal_log_density
from trainables.nn.recurrent import BidirectionalFD, FastDropoutRNN, reverse_padded
from trainables.nn.sequences import pad
from trainables.rnn import frame_nll, shift


def tiny(**overrides):
    values = dict(hidden_units=6, recognition_units=5, latent_units=3, is_samples=7)
    values.update(overrides)
    return storn.Config(**values)


def binary_batch(lengths=(5, 3, 4), features=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return pad([(torch.rand(n, features, generator=g) < 0.4).float() for n in lengths])


def test_reverse_padded_by_hand():
    x = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 0.0]])[..., None]  # (T=3, B=2, 1); the second has length 2
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    assert reverse_padded(x, mask)[..., 0].tolist() == [[3.0, 20.0], [2.0, 10.0], [1.0, 0.0]]
    torch.testing.assert_close(reverse_padded(reverse_padded(x, mask), mask), x)


def test_bidirectional_output_does_not_see_padding():
    g = torch.Generator().manual_seed(1)
    net = BidirectionalFD(4, 5, 3, "sigmoid", 0.1, 0.2, 0.3).double()
    net.initialise(0.3, 0.3, 1.1, generator=g)
    x, mask = binary_batch()
    x = x.double()
    mean, var = net.moments(x, mask)
    alone_mean, alone_var = net.moments(x[:3, 1:2], mask[:3, 1:2])  # the length-3 sequence on its own
    torch.testing.assert_close(mean[:3, 1:2], alone_mean)
    torch.testing.assert_close(var[:3, 1:2], alone_var)
    # the backward half at the last real step has read only that step
    f_mean, f_var = net.forward_net.moments(x[:3, 1:2])
    b_mean, b_var = net.backward_net.moments(x[2:3, 1:2])
    torch.testing.assert_close(mean[2, 1], f_mean[2, 0] + b_mean[0, 0])


def test_sigmoid_cell_without_dropout_is_the_plain_sigmoid_rnn():
    g = torch.Generator().manual_seed(2)
    net = FastDropoutRNN(4, 5, 3, "sigmoid").double()
    net.initialise(0.5, 0.5, 1.1, b_h=0.1, generator=g)
    x, _ = binary_batch()
    x = x.double()
    h = torch.zeros(x.shape[1], 5, dtype=torch.float64)
    outs = []
    for t in range(x.shape[0]):
        h = torch.sigmoid(x[t] @ net.core.weight_ih_l0.T + h @ net.core.weight_hh_l0.T
                          + net.core.bias_ih_l0 + net.core.bias_hh_l0)
        outs.append(net.out(h))
    torch.testing.assert_close(net(x), torch.stack(outs))
    assert torch.equal(net.moments(x)[1], torch.zeros_like(net.moments(x)[1]))


def test_learned_rates_are_parameters_and_z_is_not_dropped():
    net = FastDropoutRNN(4, 5, 3, "sigmoid", 0.2, 0.3, 0.4, n_undropped=2, learn_rates=True)
    assert any(p is net.keep_logits for p in net.parameters())
    torch.testing.assert_close(net.keep_input, torch.tensor(0.8))
    torch.testing.assert_close(net.keep_output, torch.tensor(0.6))
    with torch.no_grad():
        net.core.weight_ih_l0.zero_()
        net.core.weight_ih_l0[:, 3] = 1.0  # only an undropped column feeds the hidden layer
        net.core.weight_hh_l0.zero_()
    x = torch.ones(1, 1, 4)
    mean, var = net._fd_hidden(x)
    assert torch.equal(var, torch.zeros_like(var))  # no input-dropout noise on z's columns
    torch.testing.assert_close(mean, torch.sigmoid(torch.ones(1, 1, 5) + net.core.bias_ih_l0 + net.core.bias_hh_l0))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_padding_counts_nowhere(bidirectional, likelihood):
    torch.manual_seed(0)
    model = storn.Storn(4, tiny(bidirectional=bidirectional, likelihood=likelihood, p_drop_hidden=0.2)).double()
    model.initialise(tiny(), torch.Generator().manual_seed(0))
    x, mask = binary_batch()
    x = x.double()
    garbage = x.clone()
    garbage[mask == 0] = 7.5
    clean = model.terms(x, mask, 5, torch.Generator().manual_seed(3))
    dirty = model.terms(garbage, mask, 5, torch.Generator().manual_seed(3))
    for a, b in zip(clean, dirty):
        torch.testing.assert_close(a, b)
    # and the KL is the analytic one over the real frames only
    mean, var = model.recognise(x, mask)
    expected = 0.5 * (var + mean.square() - 1 - var.log()).sum(-1)[:3, 1].sum()
    torch.testing.assert_close(clean.kl[0, 1], expected)


def test_without_latent_weights_storn_is_the_srnn():
    """Section 4.3.1: with W'_in = 0 the generating model is an sRNN; log p(x | z) is its
    likelihood for every draw of z, so both the bound's data term and IS see the RNN's NLL."""
    config = tiny(cell="tanh", p_drop_input=0.0, p_drop_hidden=0.0, p_drop_output=0.0)
    model = storn.Storn(4, config).double()
    model.initialise(config, torch.Generator().manual_seed(4))
    with torch.no_grad():
        model.generating.core.weight_ih_l0[:, 4:] = 0.0
    rnn = FastDropoutRNN(4, 6, 4, "tanh").double()
    with torch.no_grad():
        rnn.core.weight_ih_l0.copy_(model.generating.core.weight_ih_l0[:, :4])
        for name in ("weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(rnn.core, name).copy_(getattr(model.generating.core, name))
        rnn.out.load_state_dict(model.generating.out.state_dict())
    x, mask = binary_batch()
    x = x.double()
    terms = model.terms(x, mask, 3)
    expected = -frame_nll(rnn(shift(x)), x, mask).sum(0)  # (B,)
    torch.testing.assert_close(terms.fit, expected.expand(3, -1))


def test_gaussian_emission_and_the_search_for_sigma():
    fit = torch.tensor([[12.0, 3.0]], dtype=torch.float64)  # squared residuals of two sequences
    frames = torch.tensor([3.0, 2.0], dtype=torch.float64)
    features = 2
    log_sigma = math.log(0.7)
    # the same as summing log N(x | mean, sigma^2) over residuals with these squared sums
    residual = torch.tensor([math.sqrt(12.0 / 6)] * 6, dtype=torch.float64)
    direct = normal_log_density(residual, torch.zeros(()), torch.tensor(0.49)).sum()
    got = sequence_vae.emission_log_likelihood(fit, frames, features, "gaussian", log_sigma)
    torch.testing.assert_close(got[0, 0], direct)
    # with one draw and rest = kl = 0 the best sigma^2 is the mean squared residual, 15 / 10
    stats = sequence_vae.SplitStats(fit, torch.zeros_like(fit), torch.zeros_like(fit), frames, features)
    assert math.exp(2 * sequence_vae.search_sigma(stats)) == pytest.approx(1.5, rel=1e-3)
    assert math.exp(2 * sequence_vae.search_sigma(stats, "elbo_nll")) == pytest.approx(1.5, rel=1e-3)


def test_config_refuses_fewer_than_one_sample():
    with pytest.raises(SeqrepError, match=r"is_samples >= 1 \(K of the importance sampler\) must hold, but got is_samples=0"):
        storn.Config(is_samples=0)
    with pytest.raises(SeqrepError, match=r"is_samples >= 1 \(K of the importance sampler\) must hold, but got is_samples=0"):
        dmm.Config(is_samples=0)


def test_dmm_combiner_is_the_product_of_the_two_gaussians():
    config = dmm.Config(latent_units=2, transition_units=4, emission_units=3, rnn_units=5)
    model = dmm.DeepMarkovModel(4, config).double()
    x, mask = binary_batch()
    x = x.double()
    mean, var = model.infer(x, mask)
    left = model.left(x)
    right = reverse_padded(model.right(reverse_padded(x, mask)), mask)
    mu_l, var_l = left[..., :2], torch.nn.functional.softplus(left[..., 2:]) + dmm.VARIANCE_FLOOR
    mu_r, var_r = right[..., :2], torch.nn.functional.softplus(right[..., 2:]) + dmm.VARIANCE_FLOOR
    # N(mu_l, var_l) N(mu_r, var_r) is proportional to N(mean, var): precisions add
    torch.testing.assert_close(1 / var, 1 / var_l + 1 / var_r)
    torch.testing.assert_close(mean / var, mu_l / var_l + mu_r / var_r)
    # the transition starts as the identity map blended with the proposal
    torch.testing.assert_close(model.transition.linear.weight, torch.eye(2, dtype=torch.float64))


TINY: dict[str, SequenceData] = {}


def tiny_sequences(name, gaussian, seed=0):
    rng = np.random.default_rng(seed)

    def make(n, length):
        if gaussian:
            t = np.arange(length)[:, None]
            return [np.sin(0.3 * t + rng.uniform(0, 6, size=(1, 5))).astype(np.float32) for _ in range(n)]
        return [(rng.random((int(rng.integers(length // 2, length + 1)), 6)) < 0.3).astype(np.float32) for _ in range(n)]

    data = SequenceData(name, make(12, 60 if gaussian else 12), make(4, 60 if gaussian else 12), make(4, 60 if gaussian else 12))
    TINY[name] = data  # handed to the trial through its context (TrialContext.data)
    return name


def test_storn_runs_end_to_end_on_piano_rolls_and_is_reproducible():
    dataset = tiny_sequences("tiny-rolls-storn", gaussian=False)
    config = dict(hidden_units=8, recognition_units=8, latent_units=2, batch_size=4, is_samples=20, step_rate=0.5)
    context = TrialContext(dataset=dataset, max_epochs=2, seed=3, metric="valid_elbo_nll", mode="min", data=TINY[dataset])
    first = run_local("storn", config, context)
    second = run_local("storn", config, context)
    assert first.status == "completed"
    assert first.final == second.final
    final = first.final
    assert math.isfinite(final["test_nll"]) and math.isfinite(final["test_elbo_nll"])
    assert final["test_nll"] <= final["test_elbo_nll"]
    assert set(first.history[0]) == {"epoch", "train_loss", "valid_nll", "valid_elbo_nll"}


def test_storn_on_real_valued_data_logs_mse_sigma_and_both_figures(tmp_path):
    dataset = tiny_sequences("tiny-mocap-storn", gaussian=True)
    config = dict(hidden_units=8, recognition_units=8, latent_units=2, batch_size=4, is_samples=10,
                  valid_is_samples=3, mse_samples=2, likelihood="gaussian", bidirectional=True, b_y=0.0)
    context = TrialContext(dataset=dataset, max_epochs=1, seed=3, metric="valid_nll", mode="min", data=TINY[dataset])
    session = run_local("storn", config, context, out_dir=tmp_path)
    final = session.final
    for key in ("test_nll", "test_elbo_nll", "test_mse", "test_sigma", "valid_sigma"):
        assert math.isfinite(final[key]), key
    assert final["test_sigma"] == final["valid_sigma"]  # chosen on validation, used on test
    assert final["test_nll"] <= final["test_elbo_nll"]
    assert (tmp_path / "imputation.png").stat().st_size > 10_000
    assert (tmp_path / "samples.png").stat().st_size > 10_000


def test_imputation_and_sampling_keep_the_known_steps():
    torch.manual_seed(0)
    config = tiny(likelihood="gaussian", bidirectional=True, b_y=0.0)
    model = storn.Storn(4, config)
    model.initialise(config, torch.Generator().manual_seed(0))
    window = torch.randn(60, 4)
    noisy, imputed = storn.impute(model, window, 30, 40, 10, torch.Generator().manual_seed(1))
    torch.testing.assert_close(imputed[:30], window[:30])
    torch.testing.assert_close(imputed[40:], window[40:])
    torch.testing.assert_close(noisy[:30], window[:30])
    assert not torch.allclose(noisy[30:40], window[30:40])
    draws = storn.sample(model, window[:20], 100, 50, torch.Generator().manual_seed(2))
    assert draws.shape == (100, 50, 4)
    torch.testing.assert_close(draws[:20], window[:20, None].expand(-1, 50, -1))
    assert draws[20:].std(1).mean() > 0  # the prior's z makes the samples differ


def test_dmm_runs_end_to_end():
    dataset = tiny_sequences("tiny-rolls-dmm", gaussian=False)
    config = dict(latent_units=2, transition_units=4, emission_units=4, rnn_units=6, batch_size=4, is_samples=20)
    context = TrialContext(dataset=dataset, max_epochs=2, seed=3, metric="valid_elbo_nll", mode="min", data=TINY[dataset])
    session = run_local("dmm", config, context)
    assert session.status == "completed"
    assert math.isfinite(session.final["test_nll"])
    assert session.final["test_nll"] <= session.final["test_elbo_nll"]


def test_bernoulli_on_real_valued_data_is_refused():
    dataset = tiny_sequences("tiny-real-refused", gaussian=True)
    context = TrialContext(dataset=dataset, max_epochs=1, seed=0, metric="valid_elbo_nll", mode="min", data=TINY[dataset])
    with pytest.raises(SeqrepError, match=r"likelihood bernoulli needs binary data, but tiny-real-refused train\[0\]"):
        run_local("storn", dict(hidden_units=4, recognition_units=4, latent_units=2), context)


def test_table13_shows_the_dmm_row_with_an_empty_thesis_cell():
    from seqrep import tables

    frame = tables.build("table13", lambda space, dataset: None, ["jsb"])
    assert frame["method"].tolist() == ["STORN", "FD-RNN", "sRNN", "RNN-NADE", "Deep RNN", "DMM"]
    dmm_row = frame[frame["method"] == "DMM"].iloc[0]
    assert dmm_row["thesis"] == "" and dmm_row["space"] == "table13-dmm" and math.isnan(dmm_row["ours"])
    assert "| jsb | DMM |  |  |  |" in tables.to_markdown("table13", frame).splitlines()
    assert ("table13-dmm", "jsb") in tables.studies_for("table13", ["jsb"])


@pytest.mark.parametrize("method", ["storn", "dmm"])
def test_a_resumed_trial_goes_on_as_an_uninterrupted_one(method):
    """The checkpoint keeps the z generator with the minibatch order's (`sequence_vae.Generators`):
    resumed from its epoch-2 checkpoint, a trial's epochs 3 and 4 and final metrics are the
    uninterrupted trial's, exactly. A checkpoint that holds the order's state alone (written before
    the z samples had a generator of their own) still restores, leaving the z generator as it is."""
    from trainables.kit.sequence_vae import Generators

    data = TINY[tiny_sequences(f"tiny-rolls-resume-{method}", gaussian=False)]
    config = dict(hidden_units=6, recognition_units=5, latent_units=2, batch_size=4, is_samples=3) \
        if method == "storn" else dict(latent_units=2, rnn_units=6, transition_units=6, emission_units=6, batch_size=4,
                                       is_samples=3)
    ctx = lambda epochs: TrialContext(dataset="rolls", data=data, max_epochs=epochs, seed=1,  # noqa: E731
                                      metric="valid_elbo_nll", mode="min")
    whole = run_local(method, config, ctx(4))
    first = run_local(method, config, ctx(2))
    rest = run_local(method, config, ctx(4), resume_from=first.checkpoint)
    assert rest.history == whole.history[2:] and rest.final == whole.final

    order, noise = torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)
    before = noise.get_state()
    Generators(order, noise).set_state(torch.Generator().manual_seed(7).get_state())
    assert torch.equal(order.get_state(), torch.Generator().manual_seed(7).get_state())
    assert torch.equal(noise.get_state(), before)
