"""STORN: stochastic recurrent networks trained with SGVB (thesis Chapter 4, Tables 13 and 14).

The generating model (Section 4.3.1, Eqs. 29-30) is an RNN that reads x_{t-1} and a latent
z_t at step t, a^(1)_t = x_{t-1} W_in + h_{t-1} W_rec + b + z_t W'_in, and outputs the statistics
of p(x_t | x_{1:t-1}, z_{1:t}); the prior is p(z_{1:T}) = prod_{t,i} N(z_{t,i} | 0, 1). The
recognition model (Section 4.3.2) is an RNN over x whose outputs give q(z_t | x) = N(mu_t,
diag sigma^2_t): a forward RNN (q(z_t | x_{1:t})) for the piano rolls, a biRNN (q(z_t | x_{1:T}))
for motion capture (Section 4.4.2). (Section 4.3's opening sentence writes q(z_t | x_{1:t-1});
Figure 14 and its caption have the recognition net read x_t before z_t is drawn, q(z_t | x_{1:t}),
which is what is done here: z_t may then carry information about the x_t it helps to predict.)
Training maximises the bound of Eq. 31,

    log p(x_{1:T}) >= E_q[sum_t log p(x_t | h_{t-1}, z_{1:t})] - KL(q || p(z_{1:T})),

with one reparameterised sample z_t = mu_t + sigma_t eps_t per sequence and the KL in closed
form (`trainables.nn.latent`), masked so padding counts nowhere (`trainables.kit.sequence_vae`).

Section 4.4: both nets are FD-RNNs (`trainables.nn.recurrent.FastDropoutRNN`) of 300 logistic
sigmoid units; the generating net's dropout rates are hyper-parameters, the recognition net's are
learned with the weights; FD's output variance serves as sigma^2_t (`recognition_variance: fd`;
`output` is Section 4.3.2's alternative, sigma^2 = (second half of the outputs)^2); Adadelta with
Nesterov momentum (`trainables.nn.optim`, climin's formulation). Piano rolls have Bernoulli
outputs (FD's effective logits, as `trainables.rnn`); motion capture a Gaussian with a fixed
sigma, 1 during training and searched on the validation split afterwards (`sequence_vae`).

Metrics: `nll`, the importance-sampled negative log-likelihood per frame (Rezende et al., 2014,
computed per sequence; K = `is_samples` on the test split, `valid_is_samples` on the validation
split), `elbo_nll` (the negative bound per frame), and for Gaussian outputs `sigma` and `mse`: the
one-step prediction error of Table 14, the squared error summed over the channels and averaged
over the predicted frames, where x_t is predicted from x_{1:t-1} by the mean over `mse_samples`
draws z_{1:t} ~ p(z) of the model's mean (the recognition biRNN would see x_t itself); the first
frame of each window has nothing to predict from and is left out.

On Gaussian data `on_finish` writes the figures of Section 4.4.2: `imputation.png` (Figure 15:
a length-60 test window, all channels of steps 30-39 replaced by standard-normal noise, then ten
times: z = the mode of q(z | x), i.e. its mean, and x_30:39 <- the mode of p(x | z), i.e. the
Gaussian's mean) and `samples.png` (Figure 16: 50 samples after a 20-step stimulus, z_{1:20} drawn
from q(z | stimulus), z_{21:100} from the prior, each generated mean fed back as the next input).

Cohorts (`train_cohort`, `COHORT_KEYS`; `trainables.kit.storn_cohort`): trials of one shape train
as one stacked model, each reported as its solo run; only where trials get a GPU
(`COHORT_DEVICES`): on a CPU thread the cohort was the slower (README, "Cohorts").

Choices the thesis leaves open: the number of latent units, the initial recognition dropout rates,
the minibatch size, the epoch budget (selected on validation), the variance floor 1e-6 added to
sigma^2_t (so that a rate learned to 0 cannot make log q infinite), and which steps "30 to 40" are
(0-based 30-39 here).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqrep.method import MethodConfig, Session
from trainables.kit import sequence_vae, storn_cohort
from trainables.kit.sequence_models import (
    at_least_one,
    climin_optimizer,
    fd_rnn_rules,
    rate_rules,
    sampler_rules,
    sequence_trial,
)
from trainables.nn.gaussian import VARIANCE_FLOOR
from trainables.nn.latent import kl_standard_normal, normal_log_density, reparameterise
from trainables.nn.recurrent import BidirectionalFD, FastDropoutRNN
from trainables.nn.sequences import pad, shift


@dataclasses.dataclass(frozen=True)
class Config(MethodConfig):
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"  # piano rolls / motion capture
    bidirectional: bool = False  # recognition biRNN (Section 4.4.2 for motion capture)
    latent_units: int = 32  # dimension of z_t; the thesis does not say
    hidden_units: int = 300  # generating net (Section 4.4.1)
    recognition_units: int = 300  # recognition net (Section 4.4.1)
    cell: Literal["sigmoid", "tanh"] = "sigmoid"  # "logistic sigmoid as the transfer function"
    recognition_variance: Literal["fd", "output"] = "fd"  # Section 4.4 / Section 4.3.2
    p_drop_input: float = 0.0  # generating net, searched
    p_drop_hidden: float = 0.0
    p_drop_output: float = 0.0
    rec_p_drop_input: float = 0.1  # recognition net: initial values, then learned (Section 4.4)
    rec_p_drop_hidden: float = 0.1
    rec_p_drop_output: float = 0.1
    optimizer: Literal["adadelta", "rmsprop"] = "adadelta"
    step_rate: float = 1.0
    momentum: float = 0.9  # Nesterov momentum
    decay: float = 0.9
    offset: float = 1e-4  # Adadelta's offset (climin's default)
    sigma2: float = 0.01  # initial variance of W_rec and W_out
    sigma2_in: float = 0.01  # initial variance of W_in (and W'_in)
    rho: float | None = 1.1  # spectral radius of W_rec; null: as drawn
    nu: int | None = None  # sparse initialisation (Table 1's ν): incoming weights kept per unit; null: dense
    b_y: float = -0.8  # generating net's output bias (Bernoulli: the rnn's -0.8; Gaussian data: 0)
    grad_norm: float | None = None  # not the thesis's: renormalise gradients above this norm; null: never
    batch_size: int = 16  # sequences per minibatch
    is_samples: int = 100  # K of the test NLL estimate (Rezende et al., 2014)
    valid_is_samples: int = 1  # K on the validation split each epoch (1: cheap)
    mse_samples: int = 10  # prior draws averaged for the one-step prediction (Gaussian data)

    def __post_init__(self):
        self.check([
            *at_least_one(self, "latent_units", "hidden_units", "recognition_units"),
            *fd_rnn_rules(self),
            *rate_rules(self, "rec_p_drop_input", "rec_p_drop_hidden", "rec_p_drop_output"),
            *sampler_rules(self),
            *at_least_one(self, "mse_samples"),
        ])


class Storn(nn.Module):
    """The recognition net q(z_t | x) and the generating net p(x_t | x_{1:t-1}, z_{1:t}) (Section 4.3)."""

    def __init__(self, n_features: int, config: Config):
        super().__init__()
        self.likelihood = config.likelihood
        self.n_latent = config.latent_units
        self.recognition_variance = config.recognition_variance
        rec_out = config.latent_units * (1 if config.recognition_variance == "fd" else 2)
        rec_args = (n_features, config.recognition_units, rec_out, config.cell, config.rec_p_drop_input,
                    config.rec_p_drop_hidden, config.rec_p_drop_output)
        self.bidirectional = config.bidirectional
        self.recognition = (BidirectionalFD(*rec_args, learn_rates=True) if config.bidirectional
                            else FastDropoutRNN(*rec_args, learn_rates=True))
        self.generating = FastDropoutRNN(n_features + config.latent_units, config.hidden_units, n_features,
                                         config.cell, config.p_drop_input, config.p_drop_hidden,
                                         config.p_drop_output, n_undropped=config.latent_units)
        self.register_buffer("log_sigma", torch.zeros(()))

    def initialise(self, config: Config, generator: torch.Generator) -> None:
        self.recognition.initialise(config.sigma2, config.sigma2_in, config.rho, 0.0, 0.0, generator=generator,
                                    nu=config.nu)
        self.generating.initialise(config.sigma2, config.sigma2_in, config.rho, 0.0, config.b_y, generator=generator,
                                   nu=config.nu)

    def recognise(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """mu_t and sigma^2_t of q(z_t | x), (T, B, Z) each."""
        mean, var = self.recognition.moments(x, mask) if self.bidirectional else self.recognition.moments(x)
        if self.recognition_variance == "fd":
            return mean, var + VARIANCE_FLOOR
        return mean[..., : self.n_latent], mean[..., self.n_latent:].square() + VARIANCE_FLOOR

    def emission(self, x_prev: Tensor, z: Tensor) -> Tensor:
        """Bernoulli logits or the Gaussian mean of x_t from inputs x_{t-1} and z_t: (T, N, D)."""
        inputs = torch.cat([x_prev, z], -1)  # (T, N, D + Z)
        if self.likelihood == "bernoulli":
            return self.generating(inputs)  # FD's effective logits
        return self.generating.moments(inputs)[0]

    def terms(self, x: Tensor, mask: Tensor, samples: int, generator: torch.Generator | None = None):
        steps, batch, features = x.shape
        mean, var = self.recognise(x, mask)  # (T, B, Z)
        z = reparameterise(mean, var, samples, generator)  # (K, T, B, Z)
        x_prev = shift(x).unsqueeze(0).expand(samples, -1, -1, -1)  # (K, T, B, D)
        as_batch = lambda v: v.transpose(0, 1).reshape(steps, samples * batch, v.shape[-1])  # (K,T,B,.) -> (T,K*B,.)
        out = self.emission(as_batch(x_prev), as_batch(z))  # (T, K*B, D)
        out = out.reshape(steps, samples, batch, features).transpose(0, 1)  # (K, T, B, D)
        if self.likelihood == "bernoulli":
            per_frame = -F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)
        else:
            per_frame = (x - out).square().sum(-1)  # squared residual; sigma enters later
        m = mask.unsqueeze(0)  # (1, T, B)
        prior = normal_log_density(z, torch.zeros_like(z), torch.ones_like(z))
        posterior = normal_log_density(z, mean, var)
        kl = (kl_standard_normal(mean, var).sum(-1) * mask).sum(0)  # (B,)
        return sequence_vae.Terms(
            fit=(per_frame * m).sum(1),  # (K, B)
            rest=((prior - posterior).sum(-1) * m).sum(1),
            kl=kl.expand(samples, -1),
        )

    @torch.no_grad()
    def predict(self, x: Tensor, samples: int, generator: torch.Generator | None = None) -> Tensor:
        """The mean over `samples` draws z ~ p(z) of the predicted mean of x_t given x_{1:t-1}: (T, B, D)."""
        steps, batch, _ = x.shape
        z = torch.randn(steps, samples * batch, self.n_latent, generator=generator, dtype=x.dtype, device=x.device)
        x_prev = shift(x).repeat(1, samples, 1)  # (T, S*B, D), sample-major like z
        out = self.emission(x_prev, z).reshape(steps, samples, batch, -1)
        return out.mean(1)


def one_step_mse(model: Storn, sequences, samples: int, device: torch.device, seed: int) -> float:
    """Squared error of the one-step prediction summed over channels, per predicted frame."""
    generator = torch.Generator(device=device).manual_seed(seed)
    x, mask = pad(sequences)
    x, mask = x.to(device), mask.to(device)
    error = (model.predict(x, samples, generator) - x).square().sum(-1)  # (T, B)
    mask = mask.clone()
    mask[0] = 0  # the first frame of a window has no history
    return float((error * mask).sum() / mask.sum())


@torch.no_grad()
def impute(model: Storn, window: Tensor, start: int, stop: int, iterations: int, generator: torch.Generator):
    """Section 4.4.2's imputation of steps start..stop-1 of one window (T, D): (noisy, imputed)."""
    x = window.clone().unsqueeze(1)  # (T, 1, D)
    x[start:stop] = torch.randn(x[start:stop].shape, generator=generator, dtype=x.dtype, device=x.device)
    noisy = x.clone()
    mask = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
    for _ in range(iterations):
        z_map, _ = model.recognise(x, mask)  # the mode of a Gaussian q is its mean
        x[start:stop] = model.emission(shift(x), z_map)[start:stop]  # the mode of p(x | z)
    return noisy[:, 0], x[:, 0]


@torch.no_grad()
def sample(model: Storn, stimulus: Tensor, steps: int, samples: int, generator: torch.Generator) -> Tensor:
    """`samples` continuations of a stimulus (T0, D) to `steps` steps in all: (steps, S, D)."""
    prefix = stimulus.unsqueeze(1).expand(-1, samples, -1).contiguous()  # (T0, S, D)
    mask = torch.ones(prefix.shape[:2], dtype=prefix.dtype, device=prefix.device)
    mean, var = model.recognise(prefix, mask)
    z = reparameterise(mean, var, generator=generator)  # z_{1:T0} ~ q(z | stimulus)
    x = prefix
    for _ in range(steps - len(stimulus)):
        z_next = torch.randn((1,) + z.shape[1:], generator=generator, dtype=z.dtype, device=z.device)
        z = torch.cat([z, z_next])  # z_t ~ p(z) after the stimulus
        x_in = shift(torch.cat([x, torch.zeros_like(x[:1])]))  # inputs x_{t-1} for steps 1..t
        x = torch.cat([x, model.emission(x_in, z)[-1:]])  # feed the mean back
    return x


def plot_channels(path, series: list[tuple[np.ndarray, dict]], title: str, channels: int = 48) -> None:
    """One panel per channel (6 x 8 for the first 48 of 49, as Figures 15 and 16)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    channels = min(channels, series[0][0].shape[-1])
    cols = 8
    rows = math.ceil(channels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 1.6 * rows), sharex=True, squeeze=False)
    for c in range(rows * cols):
        ax = axes[c // cols][c % cols]
        if c >= channels:
            ax.axis("off")
            continue
        for values, style in series:
            ax.plot(values[..., c], **style)
        ax.tick_params(labelsize=5)
    handles = {style.get("label"): line for (_, style), line in zip(series, axes[0][0].get_lines()) if style.get("label")}
    fig.legend(list(handles.values()), list(handles), loc="upper right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.95, 0.97))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_figures(model: Storn, test, directory, device: torch.device, seed: int) -> None:
    """Figures 15 and 16 on a randomly chosen full-length test window."""
    generator = torch.Generator(device=device).manual_seed(seed)
    full = [w for w in test if len(w) >= 60] or list(test)
    window = full[int(torch.randint(len(full), (1,)))].to(device)
    start, stop = min(30, len(window) - 1), min(40, len(window))
    noisy, imputed = impute(model, window, start, stop, 10, generator)
    plot_channels(directory / "imputation.png", [
        (noisy.cpu().numpy(), {"color": "tab:red", "lw": 0.8, "label": "noisy"}),
        (imputed.cpu().numpy(), {"color": "tab:blue", "lw": 0.8, "label": "imputed"}),
        (window.cpu().numpy(), {"color": "black", "lw": 0.8, "ls": "--", "label": "truth"}),
    ], f"Imputation of steps {start}-{stop - 1} (10 MAP iterations), cf. thesis Figure 15")
    stimulus = window[:20]
    samples = sample(model, stimulus, 100, 50, generator).cpu().numpy()  # (100, 50, D)
    series = [(samples[:, s], {"color": "tab:blue", "lw": 0.4, "alpha": 0.3, **({"label": "sample"} if s == 0 else {})})
              for s in range(samples.shape[1])]
    series.append((stimulus.cpu().numpy(), {"color": "black", "lw": 1.2, "label": "stimulus"}))
    plot_channels(directory / "samples.png", series, "50 samples after a 20-step stimulus, cf. thesis Figure 16")


def new_model(config: Config, n_features: int, seed: int) -> Storn:
    """The trial's nets as its `train` draws them: torch's default initialisation under
    `torch.manual_seed(seed)` (where the global generator is then, the training's z generator
    starts: `sequence_vae.noise_generator`), then the thesis's (`Storn.initialise`) from a
    generator of its own."""
    torch.manual_seed(seed)
    model = Storn(n_features, config)
    model.initialise(config, torch.Generator().manual_seed(seed))
    return model


def evaluation_hooks(model: Storn, config: Config, splits, device: torch.device, session: Session):
    """`extra(split)` (the one-step `mse` on Gaussian data) and `on_finish()` (Figures 15 and 16)."""
    seed = session.context.seed

    def extra(split: str) -> dict[str, float]:
        if config.likelihood != "gaussian":
            return {}
        return {"mse": one_step_mse(model, splits[split], config.mse_samples, device, seed + 3)}

    def on_finish() -> None:
        if config.likelihood == "gaussian":
            write_figures(model, splits["test"], session.artifact_dir, device, seed + 4)

    return extra, on_finish


def train(config: Config, session: Session) -> None:
    data, splits, device = sequence_trial(session, config.likelihood, "storn")
    model = new_model(config, data.n_features, session.context.seed).to(device)
    optimizer = climin_optimizer(config, model.parameters())
    extra, on_finish = evaluation_hooks(model, config, splits, device, session)
    sequence_vae.fit_sgvb(session, model, optimizer, splits, config, extra=extra, on_finish=on_finish,
                          evaluation_point=optimizer.climin_point)


COHORT_KEYS = storn_cohort.COHORT_KEYS


def train_cohort(configs: list[Config], sessions: list[Session]) -> None:
    """Train K trials of one shape as one stacked model (`trainables.kit.storn_cohort`)."""
    storn_cohort.train_cohort(configs, sessions, new_model=new_model, hooks=evaluation_hooks)
COHORT_DEVICES = ("cuda",)  # on CPU threads a STORN cohort trains slower than its members alone (README, "Cohorts")
