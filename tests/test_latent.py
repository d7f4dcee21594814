"""The importance-sampled likelihood and the Gaussian pieces of trainables.nn.latent, against closed forms.

The toy model: z ~ N(0, 1), x | z ~ N(a z + b, s^2), T independent frames per "sequence", so
log p(x_1:T) = sum_t log N(x_t | b, a^2 + s^2) exactly. q(z_t | x_t) is deliberately imperfect:
the exact posterior's mean shifted by half its standard deviation, with twice its variance.
"""

from __future__ import annotations

import math

import pytest
import torch

from seqrep.errors import SeqrepError
from trainables.kit.importance import importance_log_likelihood
from trainables.nn.latent import (
    kl_normal,
    kl_standard_normal,
    log_mean_exp,
    nll_per_frame,
    normal_log_density,
    reparameterise,
)

A, B, S2 = 2.0, 0.5, 0.25
T, N = 4, 2000  # frames per sequence, sequences


def toy(seed=0, sequences=N):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(sequences, T, generator=g, dtype=torch.float64)
    x = A * z + B + math.sqrt(S2) * torch.randn(sequences, T, generator=g, dtype=torch.float64)
    exact = normal_log_density(x, torch.tensor(B), torch.tensor(A * A + S2)).sum(1)  # (N,)
    post_var = 1.0 / (1.0 + A * A / S2)
    post_mean = post_var * A * (x - B) / S2
    q_mean, q_var = post_mean + 0.5 * math.sqrt(post_var), torch.full_like(x, 2.0 * post_var)
    # ELBO in closed form: E_q[log N(x | a z + b, s^2)] - KL(q || N(0, 1)), per sequence
    elbo = (normal_log_density(x, A * q_mean + B, torch.tensor(S2)) - A * A * q_var / (2 * S2)
            - kl_standard_normal(q_mean, q_var)).sum(1)

    def log_weights(n):
        z_k = reparameterise(q_mean, q_var, n, g)  # (n, N, T)
        joint = normal_log_density(x, A * z_k + B, torch.tensor(S2)) + normal_log_density(z_k, torch.zeros(()), torch.ones(()))
        return (joint - normal_log_density(z_k, q_mean, q_var)).sum(-1)  # (n, N): summed over each sequence's frames

    return exact, elbo, log_weights


def test_estimate_converges_to_the_exact_log_likelihood():
    """Mean error over 2000 sequences (Monte Carlo standard error in brackets, measured once):
    K=1: -1.13 (0.05), 10: -0.10 (0.01), 100: -0.003 (0.003); K=10^4 on the first 200 sequences:
    -0.0002 (0.001). The bias shrinks like 1/K; tolerances are the bias bound plus 4 standard errors."""
    exact, _, log_weights = toy()
    errors = {}
    for k in (1, 10, 100):
        errors[k] = (importance_log_likelihood(log_weights, k) - exact).mean().item()
    assert errors[1] < errors[10] < errors[100]  # increasing towards log p(x) from below
    assert -1.4 < errors[1] < -0.9
    assert -0.15 < errors[10] < -0.05
    assert abs(errors[100]) < 0.015
    exact, _, log_weights = toy(0, sequences=200)
    estimate = importance_log_likelihood(log_weights, 10_000, chunk=2500)
    assert abs((estimate - exact).mean().item()) < 0.005
    assert (estimate - exact).abs().max().item() < 0.1  # every single sequence, not just the mean


def test_estimate_is_on_average_between_the_elbo_and_log_p():
    """E[K-sample estimate] >= ELBO (Burda et al., 2016), and <= log p(x) (Jensen); K = 1 is the ELBO.
    The ELBO is 1.11 nats per sequence below log p(x) here."""
    exact, elbo, log_weights = toy(1)
    assert (exact - elbo).mean().item() == pytest.approx(1.11, abs=0.05)
    one = importance_log_likelihood(log_weights, 1)
    assert (one - elbo).mean().item() == pytest.approx(0.0, abs=4 * (one - elbo).std().item() / math.sqrt(N))
    for k in (5, 50):
        estimate = importance_log_likelihood(log_weights, k)
        gap = (estimate - elbo).mean().item()
        se = (estimate - elbo).std().item() / math.sqrt(N)
        assert gap > 4 * se and gap > 0.5
        assert (estimate - exact).mean().item() < 4 * (estimate - exact).std().item() / math.sqrt(N)


def test_log_mean_exp_is_per_sequence_not_over_the_batch():
    """The authors' code log-sum-exp'ed the log weights summed over a whole batch; that is a bound
    on the product of the batch's likelihoods, far looser per sequence. With 100 sequences and
    K = 100 the per-sequence estimate is within 0.03 nats of log p(x) per sequence, the batch
    version 0.68 below it (measured once; the threshold 0.3 leaves a wide margin)."""
    exact, _, log_weights = toy(2)
    w = log_weights(100)[:, :100]  # (K, 100 sequences)
    per_sequence = log_mean_exp(w, 0)  # (100,)
    whole_batch = log_mean_exp(w.sum(1), 0)  # the bug: one log-mean-exp over the batch
    truth = exact[:100]
    assert abs((per_sequence - truth).mean().item()) < 0.05
    assert (whole_batch - truth.sum()).item() / 100 < -0.3
    # nll_per_frame: minus the sum over sequences divided by their frames
    frames = 100 * T
    assert nll_per_frame(per_sequence, frames) == pytest.approx(-per_sequence.sum().item() / frames)


def test_log_mean_exp_by_hand():
    values = torch.tensor([[0.0, 1.0], [math.log(3.0), -1.0]], dtype=torch.float64)
    expected = torch.tensor([math.log(2.0), math.log((math.e + math.exp(-1.0)) / 2)], dtype=torch.float64)
    torch.testing.assert_close(log_mean_exp(values, 0), expected)
    # stable far from 0
    torch.testing.assert_close(log_mean_exp(values - 1000.0, 0), expected - 1000.0)


@pytest.mark.parametrize("k", [0, -3])
def test_fewer_than_one_sample_is_refused(k):
    with pytest.raises(SeqrepError, match=rf"^importance sampling needs K >= 1 samples, but got K={k}$"):
        importance_log_likelihood(lambda n: torch.zeros(n, 1), k)


def test_chunks_give_the_same_estimate():
    calls = []

    def log_weights(n):
        calls.append(n)
        return torch.arange(sum(calls) - n, sum(calls), dtype=torch.float64)[:, None].expand(n, 2)

    estimate = importance_log_likelihood(log_weights, 10, chunk=4)
    assert calls == [4, 4, 2]
    expected = torch.logsumexp(torch.arange(10, dtype=torch.float64), 0) - math.log(10)
    torch.testing.assert_close(estimate, expected.expand(2))


def test_kl_closed_forms_against_monte_carlo():
    g = torch.Generator().manual_seed(3)
    mean, var = torch.tensor([0.3, -1.2], dtype=torch.float64), torch.tensor([0.5, 2.0], dtype=torch.float64)
    mean_p, var_p = torch.tensor([0.1, 0.4], dtype=torch.float64), torch.tensor([1.5, 0.7], dtype=torch.float64)
    z = reparameterise(mean, var, 400_000, g)
    log_q = normal_log_density(z, mean, var)
    mc = (log_q - normal_log_density(z, torch.zeros(()), torch.ones(()))).mean(0)
    mc_p = (log_q - normal_log_density(z, mean_p, var_p)).mean(0)
    # standard errors below 0.004 here; 0.02 is 5 of them
    torch.testing.assert_close(kl_standard_normal(mean, var), mc, atol=0.02, rtol=0)
    torch.testing.assert_close(kl_normal(mean, var, mean_p, var_p), mc_p, atol=0.02, rtol=0)
    torch.testing.assert_close(kl_normal(mean, var, torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)),
                               kl_standard_normal(mean, var))
