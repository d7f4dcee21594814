"""The deep Markov model (DMM) of Krishnan, Shalit and Sontag (2017): a baseline for Table 13.

Generative model (a nonlinear state-space model):

    z_t | z_{t-1} ~ N(mu_t, diag sigma^2_t)   (the gated transition function of the DMM paper)
        g_t   = sigmoid(W_2 relu(W_1 z_{t-1} + b_1) + b_2)             gate
        h_t   = W_4 relu(W_3 z_{t-1} + b_3) + b_4                       proposed mean
        mu_t  = (1 - g_t) * (W_mu z_{t-1} + b_mu) + g_t * h_t           (W_mu initialised to I)
        sigma^2_t = softplus(W_s relu(h_t) + b_s)
    x_t | z_t ~ Bernoulli(sigmoid(MLP(z_t)))  (piano rolls; or N(MLP(z_t), sigma^2) for real data)

with z_0 a learned vector. Inference: a bidirectional RNN over x; its forward ("left") and
backward ("right") hidden states each give a Gaussian estimate of z_t,
mu_l = W h_l + b, sigma^2_l = softplus(W' h_l + b') (and likewise right), combined by precision
weighting (`../shared/papers/000_*.txt`):

    mu_t = (mu_r sigma^2_l + mu_l sigma^2_r) / (sigma^2_l + sigma^2_r),
    sigma^2_t = sigma^2_l sigma^2_r / (sigma^2_l + sigma^2_r).

So q(z_{1:T} | x) = prod_t q(z_t | x), which does not condition on z_{t-1} (the DMM paper's
"ST-LR"/combiner variants do; the source followed here combines left and right only). The bound
is sum_t E_q[log p(x_t | z_t)] - sum_t E_q[KL(q(z_t | x) || p(z_t | z_{t-1}))], the KL analytic
given the drawn z_{t-1}; `nll` is the same per-sequence importance-sampled estimate as STORN's
(`trainables.kit.sequence_vae`), with weights p(x | z) p(z) / q(z | x).

Differences from the DMM paper: no KL annealing, no dropout in the inference RNN, Adam with
gradient renormalisation as there but step rates searched; the RNNs are tanh sRNNs
(`FastDropoutRNN` without dropout, i.e. torch's nn.RNN) rather than the paper's choice.
One-step prediction (`mse`) and the figures are STORN's and are not computed for the DMM (they
would need a filtering posterior p(z_{t-1} | x_{1:t-1}), which the bidirectional q is not).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqrep.method import MethodConfig, Session
from trainables.kit import sequence_vae
from trainables.kit.sequence_models import at_least_one, grad_norm_rule, sampler_rules, sequence_trial
from trainables.nn.gaussian import VARIANCE_FLOOR
from trainables.nn.latent import kl_normal, normal_log_density
from trainables.nn.recurrent import FastDropoutRNN, reverse_padded


@dataclasses.dataclass(frozen=True)
class Config(MethodConfig):
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    latent_units: int = 100  # dim z_t (the DMM paper's polyphonic setting)
    transition_units: int = 200  # hidden units of the gated transition
    emission_units: int = 100  # hidden units of the emission MLP (two layers)
    rnn_units: int = 600  # each direction of the inference biRNN
    step_rate: float = 8e-4  # Adam
    grad_norm: float | None = 10.0  # renormalise gradients above this norm; null: never
    batch_size: int = 20  # sequences per minibatch
    is_samples: int = 100  # K of the test NLL estimate
    valid_is_samples: int = 1  # K on the validation split each epoch

    def __post_init__(self):
        self.check([
            *at_least_one(self, "latent_units", "transition_units", "emission_units", "rnn_units"),
            ("step_rate", "step_rate > 0", self.step_rate > 0),
            grad_norm_rule(self),
            *at_least_one(self, "batch_size"),
            *sampler_rules(self),
        ])


class GatedTransition(nn.Module):
    """p(z_t | z_{t-1}): mean and variance, (..., Z) each (the DMM paper's gated transition)."""

    def __init__(self, latent: int, hidden: int):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, latent))
        self.proposal_hidden = nn.Linear(latent, hidden)
        self.proposal = nn.Linear(hidden, latent)
        self.linear = nn.Linear(latent, latent)
        self.scale = nn.Linear(latent, latent)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(latent))
            self.linear.bias.zero_()

    def forward(self, z_prev: Tensor) -> tuple[Tensor, Tensor]:
        g = torch.sigmoid(self.gate(z_prev))
        h = self.proposal(F.relu(self.proposal_hidden(z_prev)))
        mean = (1.0 - g) * self.linear(z_prev) + g * h
        return mean, F.softplus(self.scale(F.relu(h))) + VARIANCE_FLOOR


class DeepMarkovModel(nn.Module):
    """Generative model p(x, z) and the bidirectional inference network q(z | x) described above."""

    def __init__(self, n_features: int, config: Config):
        super().__init__()
        self.likelihood = config.likelihood
        z = config.latent_units
        self.n_latent = z
        self.transition = GatedTransition(z, config.transition_units)
        self.emitter = nn.Sequential(nn.Linear(z, config.emission_units), nn.ReLU(),
                                     nn.Linear(config.emission_units, config.emission_units), nn.ReLU(),
                                     nn.Linear(config.emission_units, n_features))
        self.z_0 = nn.Parameter(torch.zeros(z))
        self.left = FastDropoutRNN(n_features, config.rnn_units, 2 * z, "tanh")
        self.right = FastDropoutRNN(n_features, config.rnn_units, 2 * z, "tanh")
        self.register_buffer("log_sigma", torch.zeros(()))

    def infer(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """mu_t and sigma^2_t of q(z_t | x): the left and right estimates combined, (T, B, Z) each."""
        left = self.left(x)  # (T, B, 2Z)
        right = reverse_padded(self.right(reverse_padded(x, mask)), mask)
        mu_l, var_l = left[..., : self.n_latent], F.softplus(left[..., self.n_latent:]) + VARIANCE_FLOOR
        mu_r, var_r = right[..., : self.n_latent], F.softplus(right[..., self.n_latent:]) + VARIANCE_FLOOR
        total = var_l + var_r
        return (mu_r * var_l + mu_l * var_r) / total, var_l * var_r / total

    def terms(self, x: Tensor, mask: Tensor, samples: int, generator: torch.Generator | None = None):
        steps, batch, _ = x.shape
        mean, var = self.infer(x, mask)  # (T, B, Z)
        eps = torch.randn((samples,) + tuple(mean.shape), generator=generator, dtype=x.dtype, device=x.device)
        z = mean + var.sqrt() * eps  # (K, T, B, Z)
        z_prev = torch.cat([self.z_0.expand(samples, 1, batch, -1), z[:, :-1]], 1)  # (K, T, B, Z)
        prior_mean, prior_var = self.transition(z_prev)
        out = self.emitter(z)  # (K, T, B, D)
        if self.likelihood == "bernoulli":
            per_frame = -F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)
        else:
            per_frame = (x - out).square().sum(-1)
        m = mask.unsqueeze(0)  # (1, T, B)
        rest = normal_log_density(z, prior_mean, prior_var) - normal_log_density(z, mean, var)
        kl = kl_normal(mean, var, prior_mean, prior_var)
        return sequence_vae.Terms(fit=(per_frame * m).sum(1), rest=(rest.sum(-1) * m).sum(1), kl=(kl.sum(-1) * m).sum(1))


def train(config: Config, session: Session) -> None:
    ctx = session.context
    data, splits, device = sequence_trial(session, config.likelihood, "dmm")

    torch.manual_seed(ctx.seed)
    model = DeepMarkovModel(data.n_features, config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.step_rate)

    sequence_vae.fit_sgvb(session, model, optimizer, splits, config)
