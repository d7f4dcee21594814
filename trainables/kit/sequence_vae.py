"""Training and evaluation shared by the latent-variable sequence models (STORN, the DMM): `fit_sgvb`.

A model here is an `nn.Module` with `likelihood` ("bernoulli" or "gaussian"), a buffer
`log_sigma` (the Gaussian emission's log standard deviation) and

    terms(x, mask, samples, generator) -> Terms(fit, rest, kl), each (K, B),

for x (T, B, D) with mask (T, B) and K = `samples` draws z ~ q(z | x) per sequence, every entry
summed over that sequence's real frames (padding counts nowhere):

- `fit`: log p(x | z) for Bernoulli outputs; for Gaussian outputs the sum of squared residuals
  ||x_t - mean_t||^2, from which log p(x | z) follows for any sigma (`emission_log_likelihood`),
- `rest`: log p(z) - log q(z | x) at the drawn z (the rest of the importance weight),
- `kl`: the analytic KL(q || p) (for STORN the same for every k; for the DMM it depends on the
  drawn z_{t-1} of the transition prior).

From these: the negative ELBO (Eq. 31) per frame, `elbo_nll` = -sum_b [mean_k log p(x_b | z_k) -
mean_k kl_kb] / frames, and the importance-sampled `nll` = -sum_b LME_k [log p(x_b | z_k) + rest_kb]
/ frames (`trainables.kit.importance`, per sequence). Training minimises the one-sample negative ELBO
per frame of a minibatch (SGVB, Section 1.4.3) with the Gaussian's sigma fixed at 1 (Section
4.4.2). After training, "a binary search for a better value" of sigma (Section 4.4.2) is a
bounded golden-section search on log sigma (scipy) minimising the validation estimate, which is
cheap: the drawn z and the squared residuals do not depend on sigma. The chosen sigma is stored in
`log_sigma`, so it travels with the best state to the test split.
"""

from __future__ import annotations

import math
from typing import Callable, ContextManager, NamedTuple, Sequence

import torch
from torch import Tensor

from seqrep.method import Session
from trainables.kit.importance import check_samples
from trainables.kit.training import fit
from trainables.nn.latent import LOG_2PI, log_mean_exp
from trainables.nn.optim import renormalise_gradients
from trainables.nn.sequences import batches, pad

TRAIN_SIGMA = 1.0  # Section 4.4.2: "the standard deviation was fixed to 1 during training"
LOG_SIGMA_RANGE = (math.log(1e-2), math.log(1e1))  # where the search for sigma looks


class Terms(NamedTuple):
    fit: Tensor  # (K, B)
    rest: Tensor  # (K, B)
    kl: Tensor  # (K, B)


def emission_log_likelihood(fit: Tensor, frames: Tensor, features: int, likelihood: str, log_sigma: float | Tensor) -> Tensor:
    """log p(x_b | z_k), (K, B): `fit` itself (Bernoulli) or the Gaussian with sigma = exp(log_sigma),
    -fit / (2 sigma^2) - n_b D (log 2 pi + 2 log sigma) / 2 for n_b frames of D features."""
    if likelihood == "bernoulli":
        return fit
    log_sigma = torch.as_tensor(log_sigma, dtype=fit.dtype)
    return -0.5 * fit * torch.exp(-2.0 * log_sigma) - 0.5 * frames * features * (LOG_2PI + 2.0 * log_sigma)


def sgvb_loss(model, x: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, int]:
    """The one-sample negative bound (Eq. 31) summed over the batch's frames, and their number."""
    terms = model.terms(x, mask, 1, generator)
    frames = mask.sum(0)  # (B,)
    log_px = emission_log_likelihood(terms.fit, frames, x.shape[-1], model.likelihood, math.log(TRAIN_SIGMA))
    return (terms.kl - log_px).sum(), int(frames.sum())


class SplitStats(NamedTuple):
    fit: Tensor  # (K, N) for the N sequences of a split
    rest: Tensor
    kl: Tensor
    frames: Tensor  # (N,)
    features: int


def noise_generator(device: torch.device, seed: int) -> torch.Generator:
    """The generator a trial draws its training z samples from, made right after its model was
    built under `torch.manual_seed(seed)`: on the CPU a copy of torch's global generator there, on
    a GPU a generator seeded `seed`, the device's default one after `torch.manual_seed(seed)` (the
    trials drew from those before they had a generator of their own: the same draws)."""
    if device.type == "cuda":
        return torch.Generator(device=device).manual_seed(seed)
    generator = torch.Generator()
    generator.set_state(torch.get_rng_state())
    return generator


class Generators:
    """Minibatch orders and z samples as the one `generator` whose state a checkpoint keeps
    (`training.Progress`): the two states end to end. A checkpoint written before the z samples
    had a generator of their own holds the order's alone; restoring it leaves the z generator as
    it is (where the model left it, as those trials resumed)."""

    def __init__(self, order: torch.Generator, noise: torch.Generator):
        self.order, self.noise = order, noise

    def get_state(self) -> Tensor:
        return torch.cat([self.order.get_state(), self.noise.get_state()])

    def set_state(self, state: Tensor) -> None:
        size = self.order.get_state().numel()
        self.order.set_state(state[:size].clone())
        if state.numel() > size:
            self.noise.set_state(state[size:].clone())


@torch.no_grad()
def make_train_epoch(model, optimizer: torch.optim.Optimizer, train: Sequence[Tensor], batch_size: int,
                     order: torch.Generator, grad_norm: float | None, device: torch.device,
                     noise: torch.Generator | None = None) -> Callable[[], float]:
    """One SGVB pass over `train` in length-bucketed minibatches (order drawn from `order`, z
    samples from `noise`; None: torch's global generator): the negative bound per frame is
    minimised, gradients renormalised above `grad_norm`; the pass returns the mean negative bound
    per training frame."""

    def train_epoch() -> float:
        total, frames = torch.zeros((), device=device), 0
        for batch in batches(train, batch_size, order, pool=4):
            loss, n = sgvb_loss(model, batch.x.to(device), batch.mask.to(device), noise)
            optimizer.zero_grad(set_to_none=True)
            (loss / n).backward()
            renormalise_gradients(model.parameters(), grad_norm)
            optimizer.step()
            total += loss.detach()
            frames += n
        return float(total) / frames

    return train_epoch


def collect(model, sequences: Sequence[Tensor], samples: int, device: torch.device, seed: int,
            batch_size: int = 32, budget: int = 2 ** 18) -> SplitStats:
    """K = `samples` draws for every sequence of a split; the same `seed` gives the same draws
    (common random numbers, so that epochs and sigmas are compared on equal terms). The K draws are
    a batch dimension, taken in chunks of at most `budget` (draws x sequences x steps) so that the
    nets' per-step states stay a few hundred MB even for Piano-midi.de's long pieces."""
    check_samples(samples)
    generator = torch.Generator(device=device).manual_seed(seed)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # similar lengths: less padding
    fits, rests, kls, frames = [], [], [], []
    for start in range(0, len(order), batch_size):
        x, mask = pad([sequences[i] for i in order[start:start + batch_size]])
        x, mask = x.to(device), mask.to(device)
        chunk = max(1, budget // (x.shape[0] * x.shape[1]))  # K * B sequences of T steps at a time
        parts = [model.terms(x, mask, min(chunk, samples - k), generator) for k in range(0, samples, chunk)]
        fits.append(torch.cat([p.fit for p in parts]).double().cpu())
        rests.append(torch.cat([p.rest for p in parts]).double().cpu())
        kls.append(torch.cat([p.kl for p in parts]).double().cpu())
        frames.append(mask.sum(0).double().cpu())
    return SplitStats(torch.cat(fits, 1), torch.cat(rests, 1), torch.cat(kls, 1), torch.cat(frames),
                      sequences[0].shape[-1])


def metrics(stats: SplitStats, likelihood: str, log_sigma: float) -> dict[str, float]:
    """`nll` (importance-sampled, per sequence) and `elbo_nll`, both per frame, in nats."""
    log_px = emission_log_likelihood(stats.fit, stats.frames, stats.features, likelihood, log_sigma)  # (K, N)
    total_frames = float(stats.frames.sum())
    log_likelihood = log_mean_exp(log_px + stats.rest, dim=0)  # (N,): per sequence, never over the batch
    elbo = log_px.mean(0) - stats.kl.mean(0)  # (N,)
    return {"nll": -float(log_likelihood.sum()) / total_frames, "elbo_nll": -float(elbo.sum()) / total_frames}


def search_sigma(stats: SplitStats, criterion: str = "nll") -> float:
    """The log sigma in LOG_SIGMA_RANGE that minimises `criterion` on these draws (golden section)."""
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(lambda s: metrics(stats, "gaussian", s)[criterion], bounds=LOG_SIGMA_RANGE,
                             method="bounded", options={"xatol": 1e-4})
    return float(result.x)


def make_evaluate(model, splits: dict[str, Sequence[Tensor]], device: torch.device, seed: int,
                  samples: dict[str, int], extra: Callable[[str], dict[str, float]] | None = None):
    """`evaluate(split)` for `fit`: nll and elbo_nll with K = samples[split] draws, sigma searched
    on the validation split (Gaussian outputs; then also `sigma`), plus `extra(split)`."""

    def evaluate(split: str) -> dict[str, float]:
        stats = collect(model, splits[split], samples[split], device, seed)
        out: dict[str, float] = {}
        if model.likelihood == "gaussian":
            if split == "valid":
                model.log_sigma.fill_(search_sigma(stats))
            out["sigma"] = math.exp(float(model.log_sigma))
        out.update(metrics(stats, model.likelihood, float(model.log_sigma)))
        if extra is not None:
            out.update(extra(split))
        return out

    return evaluate


def fit_sgvb(session: Session, model, optimizer: torch.optim.Optimizer, splits: dict[str, Sequence[Tensor]], config,
             *, extra: Callable[[str], dict[str, float]] | None = None,
             on_finish: Callable[[], None] | None = None,
             evaluation_point: Callable[[], ContextManager] | None = None) -> None:
    """Train a latent-variable sequence model by SGVB through `trainables.kit.training.fit`.

    Minibatches of `config.batch_size` sequences in orders drawn from a generator seeded with the
    trial's seed + 1, z samples from `noise_generator` (call this right after building the model
    under `torch.manual_seed(seed)`; both generators travel with the checkpoint, so a resumed trial
    goes on as an uninterrupted one), gradients renormalised above `config.grad_norm`; `nll` with
    K = `config.valid_is_samples` draws on the validation and `config.is_samples` on the test
    split (common random numbers: the trial's seed + 2), plus `extra(split)`.
    """
    ctx = session.context
    device = torch.device(ctx.device)
    order = torch.Generator().manual_seed(ctx.seed + 1)
    noise = noise_generator(device, ctx.seed)
    train_epoch = make_train_epoch(model, optimizer, splits["train"], config.batch_size, order, config.grad_norm,
                                   device, noise)
    evaluate = make_evaluate(model, splits, device, ctx.seed + 2,
                             {"valid": config.valid_is_samples, "test": config.is_samples}, extra)
    fit(session, model=model, optimizer=optimizer, train_epoch=train_epoch, evaluate=evaluate, config=config.to_dict(),
        generator=Generators(order, noise), on_finish=on_finish, evaluation_point=evaluation_point)
