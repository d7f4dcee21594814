"""Fidelity of the Section 2.6 regression methods: FAWN's propagated moments, KL and expected
log-likelihood against closed forms and Monte Carlo; the MDN density's normalisation; IVN with
beta = 1 against the FD net; metrics in original units; the new methods' run contract on toy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from seqrep.method import TrialContext
from seqrep.session import run_local
from trainables import mdn
from trainables.kit import regression_fit as regression
from trainables.nn import fawn
from trainables.nn.fdnet import FastDropoutNet


def context(max_epochs: int, metric: str = "valid_nll", seed: int = 0) -> TrialContext:
    return TrialContext(dataset="toy", max_epochs=max_epochs, seed=seed, metric=metric, mode="min")


# --- FAWN: propagated moments against sampled weights ------------------------------------------


@pytest.mark.parametrize("transfer", ["rectifier", "sigmoid"])
def test_fawn_moments_match_monte_carlo_over_sampled_weights(transfer):
    """One hidden layer, deterministic input: the pre-activations are exactly Gaussian and the
    hidden units independent, so Eqs. (24, 25) and the rectifier's moments are exact; the
    sigmoid's are Wang and Manning's approximation (error ~1e-2 of the variance, see variance.py).
    200k weight samples: the mean's standard error is sd / 447; we allow 5 of them (plus the
    sigmoid's approximation error)."""
    torch.manual_seed(0)
    net = fawn.FAWNNet(3, 2, 1, 4, transfer, init_std=0.8, init_noise=0.5).double()
    with torch.no_grad():
        for layer in net.layers:
            layer.bias_mean.normal_(0, 0.5)
            layer.weight_raw_std.uniform_(-1.0, 0.5)
            layer.bias_raw_std.uniform_(-1.0, 0.5)
    x = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    with torch.no_grad():
        mean, var = net(x)

    n = 200_000
    gen = torch.Generator().manual_seed(1)
    h = x.expand(n, 3)
    for i, layer in enumerate(net.layers):
        w_std, b_std = layer.stds()
        w = layer.weight_mean + w_std * torch.randn((n, *w_std.shape), generator=gen, dtype=torch.float64)
        b = layer.bias_mean + b_std * torch.randn((n, *b_std.shape), generator=gen, dtype=torch.float64)
        h = torch.einsum("ni,noi->no", h, w) + b
        if i == 0:
            h = torch.relu(h) if transfer == "rectifier" else torch.sigmoid(h)
    mc_mean, mc_var = h.mean(0).detach(), h.var(0).detach()
    se_mean = (mc_var / n).sqrt()
    se_var = mc_var * math.sqrt(2 / n) * 3  # kurtosis of a sum of products: a generous factor 3
    slack_mean, slack_var = (0.0, 0.0) if transfer == "rectifier" else (0.01, 0.05 * float(mc_var.max()))
    assert torch.all((mean[0] - mc_mean).abs() <= 5 * se_mean + slack_mean), (mean, mc_mean)
    assert torch.all((var[0] - mc_var).abs() <= 5 * se_var + slack_var), (var, mc_var)


# --- FAWN: KL and expected log-likelihood ------------------------------------------------------


def test_fawn_kl_is_the_closed_form_of_two_univariate_gaussians_and_matches_monte_carlo():
    mean = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    std = torch.tensor([0.5, 0.1, 1.5], dtype=torch.float64)
    prior_mean, prior_std = torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    kl = float(fawn.gaussian_kl(mean, std, prior_mean, prior_std))
    expected = sum(float(torch.distributions.kl_divergence(torch.distributions.Normal(m, s),
                                                          torch.distributions.Normal(prior_mean, prior_std)))
                   for m, s in zip(mean, std))
    assert kl == pytest.approx(expected, rel=1e-12)
    # Monte Carlo E_q[log q - log p] with 10^6 draws per weight: standard error ~ 1e-2 here
    rng = np.random.default_rng(0)
    total, se2 = 0.0, 0.0
    for m, s in zip(mean.numpy(), std.numpy()):
        theta = rng.normal(m, s, 1_000_000)
        d = stats.norm.logpdf(theta, m, s) - stats.norm.logpdf(theta, float(prior_mean), float(prior_std))
        total += d.mean()
        se2 += d.var() / d.size
    assert kl == pytest.approx(total, abs=5 * math.sqrt(se2))


def test_fawn_kl_of_the_network_sums_every_weight_and_bias():
    torch.manual_seed(0)
    net = fawn.FAWNNet(2, 1, 1, 3, "rectifier").double()
    prior = torch.distributions.Normal(net.prior_mean, torch.nn.functional.softplus(net.prior_raw_std))
    expected = 0.0
    for layer in net.layers:
        w_std, b_std = layer.stds()
        for m, s in ((layer.weight_mean, w_std), (layer.bias_mean, b_std)):
            expected += float(torch.distributions.kl_divergence(torch.distributions.Normal(m, s), prior).sum().detach())
    assert float(net.kl().detach()) == pytest.approx(expected, rel=1e-10)


def test_fawn_vb_expected_log_likelihood_matches_sampling():
    z = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    mean = torch.tensor([[0.2, 0.3]], dtype=torch.float64)
    var = torch.tensor([[0.4, 1.5]], dtype=torch.float64)
    noise = torch.tensor([0.3, 0.8], dtype=torch.float64)
    closed = float(fawn.expected_gaussian_log_likelihood(z, mean, var, noise)[0])
    rng = np.random.default_rng(1)
    y = rng.normal(mean.numpy()[0], np.sqrt(var.numpy()[0]), size=(1_000_000, 2))
    samples = stats.norm.logpdf(z.numpy()[0], y, np.sqrt(noise.numpy())).sum(axis=1)
    assert closed == pytest.approx(samples.mean(), abs=5 * samples.std() / math.sqrt(samples.size))


def test_fawn_predictive_adds_the_learned_noise_and_ropd_loss_is_its_nll():
    torch.manual_seed(0)
    net = fawn.FAWNNet(1, 1, 1, 5, "rectifier").double()
    x = torch.tensor([[0.1], [0.7]], dtype=torch.float64)
    y = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    mean, var = net(x)
    p_mean, p_var = net.predictive(x)
    assert torch.equal(p_mean, mean)
    assert torch.allclose(p_var, var + net.noise_var())
    expected = -stats.norm.logpdf(y.numpy(), p_mean.detach().numpy(), np.sqrt(p_var.detach().numpy()))[:, 0]
    np.testing.assert_allclose(fawn.ropd_point_loss(net, x, y).detach().numpy(), expected, rtol=1e-10)


# --- MDN: the density integrates to 1 ----------------------------------------------------------


def test_mdn_density_integrates_to_one_on_a_grid():
    # K = 3, D = 1 and K = 2, D = 2 mixtures from arbitrary raw outputs
    raw1 = torch.tensor([[0.5, -1.0, 2.0, -1.0, 0.5, 3.0, 0.2, -2.0, 1.0]], dtype=torch.float64)
    grid = torch.linspace(-15, 15, 30001, dtype=torch.float64)[:, None]
    params = mdn.mixture_parameters(raw1.expand(len(grid), -1), 3, 1)
    density = torch.exp(-mdn.mixture_nll(grid, *params))
    assert float(torch.trapezoid(density, grid[:, 0])) == pytest.approx(1.0, abs=1e-6)

    raw2 = torch.tensor([[0.3, -0.3, 0.0, 1.0, -1.0, 0.5, 0.1, -0.5, 1.0, 0.0]], dtype=torch.float64)
    axis = torch.linspace(-10, 10, 801, dtype=torch.float64)
    yy = torch.cartesian_prod(axis, axis)
    params = mdn.mixture_parameters(raw2.expand(len(yy), -1), 2, 2)
    density = torch.exp(-mdn.mixture_nll(yy, *params)).reshape(len(axis), len(axis))
    integral = torch.trapezoid(torch.trapezoid(density, axis, dim=1), axis)
    assert float(integral) == pytest.approx(1.0, abs=1e-4)


# --- IVN with beta = 1 is the FD net -----------------------------------------------------------


@pytest.mark.parametrize("transfer", ["rectifier", "sigmoid"])
def test_ivn_with_beta_one_equals_the_fd_nets_output_moments(transfer):
    torch.manual_seed(0)
    fd = FastDropoutNet(3, 2, 2, 6, transfer, 0.2, 0.4, input_variance=0.1).double()
    ivn = FastDropoutNet(3, 2, 2, 6, transfer, 0.2, 0.4, input_variance=0.1, beta_min=0.01).double()
    ivn.load_state_dict({**fd.state_dict(), "rho": ivn.rho.detach()}, strict=True)
    assert torch.allclose(ivn.betas(), torch.ones(3, dtype=torch.float64), rtol=1e-6)  # starts at 1 (float32)
    with torch.no_grad():
        ivn.rho.fill_(math.log(math.expm1(0.99)))  # beta = 1 to float64 precision
    x = torch.randn(5, 3, dtype=torch.float64)
    for a, b in zip(fd(x), ivn(x)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    with torch.no_grad():
        ivn.rho.fill_(2.0)  # beta = 0.01 + softplus(2) = 2.137 on every layer: more variance out
    assert torch.all(ivn(x)[1] > fd(x)[1])


def test_ivn_beta_never_falls_to_beta_min():
    net = FastDropoutNet(1, 1, 1, 3, "rectifier", 0.1, 0.1, beta_min=0.05).double()
    with torch.no_grad():
        net.rho.fill_(-30.0)
    assert torch.all(net.betas() > 0.05)


# --- metrics in original units -----------------------------------------------------------------


def test_metrics_undo_the_standardisation():
    rng = np.random.default_rng(0)
    y_orig = rng.normal(10, 3, size=(20, 1))
    mean_orig, var_orig = y_orig + rng.normal(0, 1, size=(20, 1)), rng.uniform(0.5, 2, size=(20, 1))
    m, s = np.array([10.0]), np.array([3.0])
    z, mean_z, var_z = (torch.tensor((a - m) / s) for a in (y_orig, mean_orig, mean_orig))
    var_z = torch.tensor(var_orig / s**2)
    out = regression.metrics(z, mean_z, regression.gaussian_nll(z, mean_z, var_z), s)
    assert out["mse"] == pytest.approx(np.mean((y_orig - mean_orig) ** 2), rel=1e-12)
    assert out["rmse"] == pytest.approx(math.sqrt(out["mse"]), rel=1e-12)
    nll = -stats.norm.logpdf(y_orig, mean_orig, np.sqrt(var_orig)).mean()
    assert out["nll"] == pytest.approx(nll, rel=1e-12)


# --- run contract of the new methods on toy ----------------------------------------------------


@pytest.mark.parametrize("method, metric", [("fd", "valid_mse"), ("ivn", "valid_nll"),
                                            ("fawn_vb", "valid_loss"), ("fawn_ropd", "valid_loss")])
def test_new_methods_run_on_toy_with_finite_metrics_and_a_plot(method, metric, tmp_path):
    config = {"hidden_units": 8} if method in ("fd", "ivn") else {"hidden_units": 8, "batch_size": 50}
    session = run_local(method, config, context(3, metric), out_dir=tmp_path)
    assert session.status == "completed"
    for key in ("test_mse", "test_rmse", "test_nll"):
        assert math.isfinite(session.final[key]), key
    assert (tmp_path / "predictive.png").stat().st_size > 10_000
    again = run_local(method, config, context(3, metric), out_dir=tmp_path / "again")
    assert again.final == session.final


def test_fawn_selects_on_the_training_loss_and_stops_on_a_plateau(tmp_path):
    # a step rate this small cannot improve the loss by 1e-2 relative per epoch: stop after 3 epochs
    config = {"hidden_units": 8, "batch_size": 50, "step_rate": 1e-6, "patience": 3, "tolerance": 1e-2}
    session = run_local("fawn_ropd", config, context(50, "valid_loss"), out_dir=tmp_path)
    assert session.status == "completed" and len(session.history) == 4
    # valid_* are measured on the training split: the loss there is the training objective
    first = session.history[0]
    assert first["valid_loss"] == pytest.approx(first["train_loss"], rel=1e-3)


def test_fawn_resumed_run_equals_the_uninterrupted_run(tmp_path):
    config = {"hidden_units": 8, "batch_size": 20, "patience": 2, "tolerance": 0.5}
    whole = run_local("fawn_vb", config, context(4, "valid_loss"), out_dir=tmp_path / "whole")
    first = run_local("fawn_vb", config, context(2, "valid_loss"), out_dir=tmp_path / "first")
    rest = run_local("fawn_vb", config, context(4, "valid_loss"), out_dir=tmp_path / "rest",
                     resume_from=first.checkpoint)
    assert whole.history[: len(first.history)] == first.history
    assert first.history + rest.history == whole.history
    assert rest.final == whole.final
