"""K STORN models of one shape as one: stacked parameters, each member's SGVB minibatch step.

`StackedStorn(models, configs, device)` takes the members' solo `trainables.storn.Storn` modules,
initialised as their solo runs initialise them, and keeps each parameter as one (K, *shape)
tensor in the solo module's `named_parameters` order (so that member k's rows are its solo state
dict and its solo optimiser's parameter list). `losses(batches)` takes one minibatch per member
(each member draws its own, `trainables.nn.sequences.batches` with its own generator, and its own
z noise, `lay_out`) and returns each member's one-sample negative bound summed over its frames
(`sequence_vae.sgvb_loss`); the caller backpropagates sum_k loss_k / frames_k, so that each member
gets the gradient of its own loss per frame, as alone.

The forward pass is `Storn.terms`' (Section 4.3): every member's input and output layers, its
biRNN's reversal, its sampling of z_t = mu_t + sigma_t eps_t and its loss run on its own
(T_k, B_k) rows with its solo run's operations (on one CPU thread these large products and
pointwise passes cost the same stacked or not, and its own rows stay in the cache); the
recurrences of all members, where the cost is a few hundred small operations per time step, run
as one `trainables.nn.fd_recurrence.FDRecurrence` over (T, K, B, H) with each member's W_rec and
keep (K, 1, 1): learned for the recognition net (Section 4.4), the config's for the generating
net. The members run longest first, each step only those whose minibatch reaches it (`active`),
so no member's steps past its own end are computed. Numbers differ from the solo run's only by
the rounding of the batched products (tests/test_cohort_storn.py: 1e-10 in float64).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.kit.sequence_vae import TRAIN_SIGMA, emission_log_likelihood
from trainables.nn import variance as vp
from trainables.nn.fd_recurrence import FDRecurrence
from trainables.nn.gaussian import VARIANCE_FLOOR
from trainables.nn.latent import kl_standard_normal
from trainables.nn.recurrent import reverse_padded
from trainables.nn.sequences import Batch, shift, to_device


Member = tuple[Tensor, Tensor, Tensor]  # one member's minibatch: x (T_k, B_k, D), mask (T_k, B_k), eps (1, T_k, B_k, Z)


class StackedStorn:
    """The members' parameters stacked, and their training forward pass (module docstring)."""

    def __init__(self, models: Sequence[torch.nn.Module], configs: Sequence, device: torch.device):
        first, config = models[0], configs[0]
        self.names = [name for name, _ in first.named_parameters()]
        params = [dict(m.named_parameters()) for m in models]
        self.params = [torch.stack([p[name].detach() for p in params]).to(device).requires_grad_()
                       for name in self.names]
        self.likelihood, self.bidirectional, self.cell = config.likelihood, config.bidirectional, config.cell
        self.n_latent, self.recognition_variance = config.latent_units, config.recognition_variance
        self.gen_keeps = [(1.0 - c.p_drop_input, 1.0 - c.p_drop_hidden, 1.0 - c.p_drop_output) for c in configs]

    @property
    def size(self) -> int:
        return self.params[0].shape[0]

    def select(self, positions: list[int]) -> None:
        """Keep the members at `positions` (the others leave the stack)."""
        index = torch.tensor(positions, device=self.params[0].device)
        self.params = [p.detach()[index].clone().requires_grad_() for p in self.params]
        self.gen_keeps = [self.gen_keeps[pos] for pos in positions]

    def member_state(self, pos: int, params: Sequence[Tensor] | None = None) -> dict[str, Tensor]:
        """Member `pos`'s parameters under their solo names (fresh tensors)."""
        return {name: p[pos].detach().clone() for name, p in zip(self.names, params or self.params)}

    @torch.no_grad()
    def load_member(self, pos: int, state: dict[str, Tensor]) -> None:
        for name, p in zip(self.names, self.params):
            p[pos].copy_(state[name])

    def losses(self, batches: Sequence[Member]) -> Tensor:
        """Each member's one-sample negative bound summed over its frames (`sgvb_loss`), (K,), from
        one minibatch per member. The recurrences run the members longest first, so that each
        step runs only the members whose minibatch reaches it (`FDRecurrence`'s `active`)."""
        lengths = [x.shape[0] for x, _, _ in batches]
        self.order = sorted(range(len(batches)), key=lambda k: -lengths[k])
        self.active = [sum(1 for k in self.order if lengths[k] > t) for t in range(max(lengths))]
        self.rows = {name: p.unbind(0) for name, p in zip(self.names, self.params)}  # one backward node each
        xs = [x for x, _, _ in batches]
        mean, var = self._recognise(xs, [mask for _, mask, _ in batches])
        losses = []
        zs = [m + v.sqrt() * eps[0] for m, v, (_, _, eps) in zip(mean, var, batches)]
        outputs = self._net("generating", [torch.cat([shift(x), z], -1) for x, z in zip(xs, zs)],
                            self.gen_keeps, self.n_latent)
        for (x, mask, _), (out_mean, out_var), m, v in zip(batches, outputs, mean, var):
            if self.likelihood == "bernoulli":
                logits = out_mean / torch.sqrt(1.0 + vp.PROBIT_SCALE * out_var)  # FastDropoutRNN.forward
                per_frame = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
            else:
                per_frame = (x - out_mean).square().sum(-1)
            fit = (per_frame * mask).sum(0, keepdim=True)  # (1, B)
            kl = (kl_standard_normal(m, v).sum(-1) * mask).sum(0)
            log_px = emission_log_likelihood(fit, mask.sum(0), x.shape[-1], self.likelihood, math.log(TRAIN_SIGMA))
            losses.append((kl.expand(1, -1) - log_px).sum())
        return torch.stack(losses)

    def _recognise(self, xs: list[Tensor], masks: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """mu and sigma^2 of each member's q(z_t | x), (T_k, B_k, Z) each (`Storn.recognise`)."""
        if self.bidirectional:
            forward = self._net("recognition.forward_net", xs, self._learned("recognition.forward_net"))
            backward = self._net("recognition.backward_net", [reverse_padded(x, m) for x, m in zip(xs, masks)],
                                 self._learned("recognition.backward_net"))
            moments = [(fm + reverse_padded(bm, m), fv + reverse_padded(bv, m))
                       for (fm, fv), (bm, bv), m in zip(forward, backward, masks)]
        else:
            moments = self._net("recognition", xs, self._learned("recognition"))
        if self.recognition_variance == "fd":
            return [m for m, _ in moments], [v + VARIANCE_FLOOR for _, v in moments]
        return ([m[..., : self.n_latent] for m, _ in moments],
                [m[..., self.n_latent:].square() + VARIANCE_FLOOR for m, _ in moments])

    def _learned(self, prefix: str) -> list[tuple[Tensor, Tensor, Tensor]]:
        return [tuple(torch.sigmoid(logits[i]) for i in range(3)) for logits in self.rows[f"{prefix}.keep_logits"]]

    def _net(self, prefix: str, xs: list[Tensor], keeps: list[tuple],
             n_undropped: int = 0) -> list[tuple[Tensor, Tensor]]:
        """`FastDropoutRNN.moments` of every member's net `prefix` on its own inputs x_k (T_k, B_k, D):
        its input and output layers on its own rows (the solo operations), the recurrences of all
        members as one `FDRecurrence` over (T, K, B, H), longest first."""
        row = lambda name, k: self.rows[f"{prefix}.{name}"][k]  # noqa: E731
        ins = []
        for k, (x, keep) in enumerate(zip(xs, keeps)):
            keep_in = keep[0]
            if n_undropped:  # `FastDropoutRNN._fd_hidden`: dropout only on the data columns
                keep_in = x.new_ones(x.shape[-1]) * keep_in
                keep_in = torch.cat([keep_in[: x.shape[-1] - n_undropped], x.new_ones(n_undropped)])
            bias = row("core.bias_ih_l0", k) + row("core.bias_hh_l0", k)
            ins.append(vp.fd_affine(x, None, row("core.weight_ih_l0", k), bias, keep_in))
        steps, batch = max(m.shape[0] for m, _ in ins), max(m.shape[1] for m, _ in ins)
        pack = lambda values: torch.stack([F.pad(values[k], (0, 0, 0, batch - values[k].shape[1], 0,  # noqa: E731
                                                          steps - values[k].shape[0])) for k in self.order], 1)
        keep_hidden = torch.stack([torch.as_tensor(keeps[k][1], dtype=ins[0][0].dtype, device=ins[0][0].device)
                                   for k in self.order]).reshape(-1, 1, 1)
        w_rec = self.rows[f"{prefix}.core.weight_hh_l0"]
        means, variances = FDRecurrence.apply(pack([m for m, _ in ins]), pack([v for _, v in ins]),
                                              torch.stack([w_rec[k] for k in self.order]), keep_hidden, self.cell,
                                              self.active)
        means, variances = means.unbind(1), variances.unbind(1)
        out = [None] * len(xs)
        for pos, k in enumerate(self.order):
            t, b = xs[k].shape[:2]
            out[k] = vp.fd_affine(means[pos][:t, :b], variances[pos][:t, :b], row("out.weight", k), row("out.bias", k),
                                  keeps[k][2])
        return out


def lay_out(step: Sequence[Batch], noise: Sequence[torch.Generator], n_latent: int,
            device: torch.device) -> list[Member]:
    """Each member's minibatch on the device with its z noise, eps (1, T_k, B_k, Z) drawn from
    `noise[k]` in its solo run's shape."""
    out = []
    for b, generator in zip(step, noise):
        t, n = b.x.shape[:2]
        eps = torch.randn((1, t, n, n_latent), generator=generator, device=device)
        out.append((to_device(b.x, device), to_device(b.mask, device), eps))
    return out
