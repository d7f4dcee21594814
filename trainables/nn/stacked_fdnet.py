"""K fast-dropout nets of one shape (FD and IVN, Sections 2.5, 2.6.1) computed as one, on a member axis.

`StackedFastDropoutNet` is `trainables.nn.fdnet.FastDropoutNet.forward` term by term with a
leading member axis: every layer's `variance.fd_affine` is a batched matmul for the mean
(`torch.baddbmm`: keep * E[x] W^T + b) and one for the variance (`torch.bmm`:
(keep (1 - keep) E[x]^2 + keep V[x]) (W^2)^T), then the transfer's moment rule
(`variance.rectifier` / `variance.sigmoid`, elementwise, so they take the member axis as it is)
and, for IVN, the scale by each member's betas. What a solo net holds as Python numbers is a
tensor with one entry per member: the keep probabilities 1 - p of every layer, IVN's input
variance and beta_min. Each member keeps its own transfer function: where the members differ,
both moment rules are computed on all of them and `torch.where` picks each member's. For networks
this small a step's cost is its number of operations, so one mixed cohort costs less than the two
single-transfer cohorts it would otherwise be split into (forward and backward of one minibatch of
10, 2 x 25 units, one thread: 16 mixed members 2.1 ms; 8 sigmoid 0.9 ms plus 8 rectifier 1.3 ms),
and the transfer need not be a cohort key, which would halve the cohorts a random search forms.

Where the solo net skips a term, the stack computes it with the value that makes it vanish, which
gives the same numbers: a keep probability of 1 adds keep (1 - keep) E[x]^2 = 0 and keeps V[x] as
1 * V[x]; an input variance of 0 adds keep * 0; a deterministic layer input gives V[a] = 0 W^2 = 0.

Layout: as `trainables.nn.stacked.StackedMLP` (whose layout methods this class borrows): all
parameters in one flat `storage`, parameter by parameter in `FastDropoutNet.named_parameters()`
order, each block (K, *shape) contiguous; a member's row of P numbers is its solo net's parameters
flattened (`rows`, `unflatten`, `load_member`). The network's output is one tensor (K, n, 2d),
[E[y] | V[y]] on the last axis, which is what a cohort trainer's loss receives. The gradient is
autograd's (`forward_train`, `backward`): the moment rules have no written-out backward here.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from trainables.nn import variance
from trainables.nn.fdnet import TRANSFER_MOMENTS, FastDropoutNet
from trainables.nn.stacked import Members, StackedMLP

Tensor = torch.Tensor


def _transfer_name(net: FastDropoutNet) -> str:
    return next(name for name, rule in TRANSFER_MOMENTS.items() if rule is net.transfer)


class StackedFastDropoutNet:
    """K `FastDropoutNet`s of one shape: member k maps x to [E[y] | V[y]] of its solo net, all k
    in one call. Built from K constructed nets, so that each member keeps the initialisation its
    solo run draws, its transfer function, keep probabilities, input variance and beta_min.
    `params` are in the order of `FastDropoutNet.named_parameters()` (`names`), each (K, *shape),
    views of `storage`."""

    # the flat layout; these read only size, shapes, numels and params
    views = StackedMLP.views
    flat = StackedMLP.flat
    rows = StackedMLP.rows
    unflatten = StackedMLP.unflatten
    load_member = StackedMLP.load_member

    def __init__(self, members: Sequence[FastDropoutNet], device: torch.device | str | None = None):
        if not members:
            raise ValueError("a cohort needs at least one member")
        shapes = [[(name, tuple(p.shape)) for name, p in m.named_parameters()] for m in members]
        if any(s != shapes[0] for s in shapes):
            # an IVN net's parameters include `rho`, an FD net's do not: the two never stack together
            raise ValueError(f"members must share every parameter name and shape, but got {shapes}")
        self.size, self.layers = len(members), len(members[0].layers)
        self.names = [name for name, _ in shapes[0]]
        self.shapes = [torch.Size(shape) for _, shape in shapes[0]]
        self.numels = [s.numel() for s in self.shapes]
        named = [dict(m.named_parameters()) for m in members]
        self.storage = torch.cat([torch.stack([n[name].detach() for n in named]).reshape(-1) for name in self.names])
        if device is not None:
            self.storage = self.storage.to(device)
        self.params = self.views(self.storage)
        like = self.storage

        def per_member(rows: list) -> Tensor:  # Python floats rounded as the solo net's scalars are
            return torch.tensor(rows, dtype=like.dtype, device=like.device)

        self.keep = per_member([m.keeps for m in members])  # (K, L + 1)
        self.noise = per_member([[k * (1.0 - k) for k in m.keeps] for m in members])  # keep (1 - keep), as fd_affine
        input_variance = [m.input_variance for m in members]
        self.input_variance = per_member(input_variance) if any(v > 0 for v in input_variance) else None  # (K,)
        self.beta_min = None if members[0].beta_min is None else per_member([m.beta_min for m in members])  # (K,)
        self.transfers = [_transfer_name(m) for m in members]
        # (K, 1, 1): True where member k's transfer is the sigmoid; None when all members share one
        self.sigmoid = (per_member([t == "sigmoid" for t in self.transfers]).bool().view(-1, 1, 1)
                        if len(set(self.transfers)) > 1 else None)

    def _transfer(self, mean: Tensor, var: Tensor, members: Members | None) -> tuple[Tensor, Tensor]:
        if self.sigmoid is None:
            return TRANSFER_MOMENTS[self.transfers[0]](mean, var)
        mask = self.sigmoid if members is None else self.sigmoid[members]
        (mean_s, var_s), (mean_r, var_r) = variance.sigmoid(mean, var), variance.rectifier(mean, var)
        return torch.where(mask, mean_s, mean_r), torch.where(mask, var_s, var_r)

    def moments(self, x: Tensor, params: Sequence[Tensor] | None = None,
                members: Members | None = None) -> tuple[Tensor, Tensor]:
        """E[y], V[y] (M, n, d) of x (M, n, in) or a shared (n, in), as `FastDropoutNet.forward`
        per member. `params` replaces the parameters (same layout); `members` (a slice or indices)
        names the members `params` hold when they are not all K of them."""
        p = dict(zip(self.names, self.params if params is None else params))
        pick = (lambda t: t) if members is None else (lambda t: t[members])
        mean = x if x.dim() == 3 else x.expand(p["layers.0.weight"].shape[0], *x.shape)
        var = None if self.input_variance is None else pick(self.input_variance).view(-1, 1, 1).expand_as(mean)
        betas = None if self.beta_min is None else pick(self.beta_min).unsqueeze(1) + F.softplus(p["rho"])  # (M, L+1)
        keep, noise = pick(self.keep), pick(self.noise)
        for i in range(self.layers):
            weight, bias = p[f"layers.{i}.weight"], p[f"layers.{i}.bias"]  # (M, out, in), (M, out)
            k = keep[:, i].view(-1, 1, 1)
            var_in = noise[:, i].view(-1, 1, 1) * mean.square()
            if var is not None:
                var_in = var_in + k * var
            mean = torch.baddbmm(bias.unsqueeze(1), k * mean, weight.transpose(1, 2))  # (M, n, out)
            var = torch.bmm(var_in, weight.square().transpose(1, 2))
            if i < self.layers - 1:
                mean, var = self._transfer(mean, var, members)
            if betas is not None:
                var = betas[:, i].view(-1, 1, 1) * var
        return mean, var

    def forward(self, x: Tensor, params: Sequence[Tensor] | None = None, members: Members | None = None) -> Tensor:
        """[E[y] | V[y]] (M, n, 2d) (`moments`)."""
        return torch.cat(self.moments(x, params, members), dim=-1)

    __call__ = forward

    def forward_train(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, list[Tensor]]]:
        """All K members on their own inputs x (K, n, in): the output (K, n, 2d), detached, and
        what `backward` needs (the attached output and the leaves it was computed from)."""
        leaves = [p.detach().requires_grad_(True) for p in self.params]
        with torch.enable_grad():
            out = self.forward(x, leaves)
        return out.detach(), (out, leaves)

    def backward(self, state: tuple[Tensor, list[Tensor]], grad: Tensor, grads: Sequence[Tensor]) -> None:
        """Write the gradient of the members' losses into `grads` (laid out as `params`), given
        the gradient (K, n, 2d) at the output of `forward_train` and its `state`."""
        out, leaves = state
        torch._foreach_copy_(list(grads), list(torch.autograd.grad(out, leaves, grad)))
