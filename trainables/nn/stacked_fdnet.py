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
this small a step's cost is its number of operations, so one mixed cohort costs no more than the
two single-transfer cohorts it would otherwise be split into (forward and backward of one
minibatch of 10, 2 x 25 units, one thread: 16 mixed members 0.88 ms; 8 sigmoid 0.40 ms plus 8
rectifier 0.45 ms; with autograd's gradient 2.1 against 0.9 plus 1.3 ms), and the transfer need
not be a cohort key, which would halve the cohorts a random search forms.

Where the solo net skips a term, the stack computes it with the value that makes it vanish, which
gives the same numbers: a keep probability of 1 adds keep (1 - keep) E[x]^2 = 0 and keeps V[x] as
1 * V[x]; an input variance of 0 adds keep * 0; a deterministic layer input gives V[a] = 0 W^2 = 0.

Members of different depths and widths (`depths`, `widths`) are padded to one shape as in
`trainables.nn.padding`: the hidden layers beyond a member's depth pass its moments through (no
dropout, transfer or beta there), and its parameters sit in the first entries of each layer, IVN's
`rho` by layer (`PER_LAYER`). A padded unit has zero weights in and out, so its pre-activation
moments are (0, 0), which would send the rectifier's rule to its v = 0 branch (masks that cost
about a dozen operations a layer) for the whole cohort; its pre-activation variance is set to 1
instead (`lift`). What the unit then passes on meets zero outgoing weights, and its gradient is
the optimiser's to ignore (`StackedRmsProp(real=...)`).

Layout: as `trainables.nn.stacked.StackedMLP` (whose layout methods this class borrows): all
parameters in one flat `storage`, parameter by parameter in `FastDropoutNet.named_parameters()`
order, each block (K, *shape) contiguous; a member's row of P numbers is its solo net's parameters
flattened (`rows`, `unflatten`, `load_member`). The network's output is one tensor (K, n, 2d),
[E[y] | V[y]] on the last axis, which is what a cohort trainer's loss receives.

Training (`forward_train`, `backward`) runs without autograd: the forward keeps each layer's
inputs and its transfer's partial derivatives (`trainables.nn.moment_jacobians`, the same values
as the `variance` rules), and the backward is the chain rule written out, about a dozen batched
operations a layer where autograd recorded and replayed some forty. Its gradient equals autograd's
up to float rounding (the closed-form derivatives are not the operation-by-operation chain rule).
Forward and backward of one minibatch of 10, one thread: K = 16 nets of 3 x 50 rectifiers took
2.5 ms with autograd and 1.4 ms written out; K = 4 of 3 x 100, 1.95 and 1.13 ms (one solo net 1.1).
Evaluation (`forward`, `moments`) is `FastDropoutNet.forward` member by member, as before.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
import torch.nn.functional as F

from trainables.nn import moment_jacobians, padding
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

    PER_LAYER = ("rho",)  # IVN's parameter with one entry per affine layer (how it pads, `trainables.nn.padding`)

    # the flat layout; these read only size, shapes, numels and params
    views = StackedMLP.views
    flat = StackedMLP.flat
    rows = StackedMLP.rows
    unflatten = StackedMLP.unflatten
    load_member = StackedMLP.load_member

    def __init__(self, members: Sequence[FastDropoutNet], device: torch.device | str | None = None,
                 depths: Sequence[int] | None = None, widths: Sequence[int] | None = None):
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
        # padded members (`trainables.nn.padding`): the hidden layers beyond a member's own depth
        # pass its moments through, (K, 1, 1) per hidden layer or None
        hidden = self.layers - 1
        self.passing = padding.passing(depths or [hidden] * self.size, hidden, like.device)
        # a padded unit's pre-activation variance, 0 of its own, is given 1 (class docstring); (K, 1, U) or None
        self.lift = [None] * hidden
        if widths is not None:
            self.lift = [None if mask is None else mask.to(like.dtype) for mask in padding.padded_units(
                depths or [hidden] * self.size, widths, hidden, self.shapes[self.names.index("layers.0.bias")][0],
                like.device)]

    def _transfer(self, mean: Tensor, var: Tensor, members: Members | None,
                  jacobian: bool) -> tuple[Tensor, Tensor, moment_jacobians.Jacobian | None]:
        """The members' transfer moment rules, with their Jacobians if `jacobian`."""
        def rule(name: str) -> tuple[Tensor, Tensor, moment_jacobians.Jacobian | None]:
            if jacobian:
                return moment_jacobians.RULES[name](mean, var)
            return *TRANSFER_MOMENTS[name](mean, var), None

        if self.sigmoid is None:
            return rule(self.transfers[0])
        mask = self.sigmoid if members is None else self.sigmoid[members]
        (mean_s, var_s, jac_s), (mean_r, var_r, jac_r) = rule("sigmoid"), rule("rectifier")
        picked = None if jac_s is None else moment_jacobians.Jacobian(
            *(torch.where(mask, s, r) for s, r in zip(jac_s, jac_r)))
        return torch.where(mask, mean_s, mean_r), torch.where(mask, var_s, var_r), picked

    def moments(self, x: Tensor, params: Sequence[Tensor] | None = None, members: Members | None = None,
                saved: list[_Layer] | None = None) -> tuple[Tensor, Tensor]:
        """E[y], V[y] (M, n, d) of x (M, n, in) or a shared (n, in), as `FastDropoutNet.forward`
        per member. `params` replaces the parameters (same layout); `members` (a slice or indices)
        names the members `params` hold when they are not all K of them. A list `saved` (all K
        members, no autograd) receives what `backward` needs of every layer."""
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
            kept_mean, squared = k * mean, weight.square()
            out_mean = torch.baddbmm(bias.unsqueeze(1), kept_mean, weight.transpose(1, 2))  # (M, n, out)
            out_var = torch.bmm(var_in, squared.transpose(1, 2))
            jacobian = unscaled = None
            if i < self.layers - 1:
                if self.lift[i] is not None:
                    out_var = out_var + pick(self.lift[i])
                out_mean, out_var, jacobian = self._transfer(out_mean, out_var, members, saved is not None)
            if betas is not None:
                unscaled, out_var = out_var, betas[:, i].view(-1, 1, 1) * out_var
            if saved is not None:
                saved.append(_Layer(mean, kept_mean, var_in, squared, jacobian, unscaled))
            passes = self.passing[i] if i < self.layers - 1 else None
            if passes is not None:
                passes = pick(passes)
                out_mean, out_var = torch.where(passes, mean, out_mean), torch.where(passes, var, out_var)
            mean, var = out_mean, out_var
        return mean, var

    def forward(self, x: Tensor, params: Sequence[Tensor] | None = None, members: Members | None = None) -> Tensor:
        """[E[y] | V[y]] (M, n, 2d) (`moments`)."""
        return torch.cat(self.moments(x, params, members), dim=-1)

    __call__ = forward

    def forward_train(self, x: Tensor) -> tuple[Tensor, list[_Layer]]:
        """All K members on their own inputs x (K, n, in): the output (K, n, 2d), as `forward`
        computes it, and what `backward` needs of every layer. No autograd: the moment rules come
        with their partial derivatives (`trainables.nn.moment_jacobians`)."""
        saved: list[_Layer] = []
        return torch.cat(self.moments(x, saved=saved), dim=-1), saved

    def backward(self, state: list[_Layer], grad: Tensor, grads: Sequence[Tensor]) -> None:
        """Write the gradient of the members' losses into `grads` (laid out as `params`), given
        the gradient (K, n, 2d) at the output of `forward_train` and its `state`: the chain rule
        layer by layer, written out (fd_affine's products, the rules' Jacobians, IVN's betas; a
        layer a member passes through hands that member's gradient to its input unchanged and
        gets none itself)."""
        p = dict(zip(self.names, self.params))
        g = dict(zip(self.names, grads))
        grad_mean, grad_var = grad.chunk(2, dim=-1)
        betas = None if self.beta_min is None else self.beta_min.unsqueeze(1) + F.softplus(p["rho"])
        for i in reversed(range(self.layers)):
            layer, weight = state[i], p[f"layers.{i}.weight"]
            passed, passes = None, self.passing[i] if i < self.layers - 1 else None
            if passes is not None:  # a passing member's gradient skips the layer
                passed = torch.where(passes, grad_mean, 0.0), torch.where(passes, grad_var, 0.0)
                grad_mean, grad_var = torch.where(passes, 0.0, grad_mean), torch.where(passes, 0.0, grad_var)
            if betas is not None:  # var = beta_i * unscaled
                g["rho"][:, i] = (grad_var * layer.unscaled).sum(dim=(1, 2))
                grad_var = betas[:, i].view(-1, 1, 1) * grad_var
            if layer.jacobian is not None:
                grad_mean, grad_var = moment_jacobians.chain(layer.jacobian, grad_mean, grad_var)
            # mean = kept_mean W^T + b, var = var_in (W^2)^T
            torch.sum(grad_mean, dim=1, out=g[f"layers.{i}.bias"])
            grad_weight = torch.bmm(grad_mean.transpose(1, 2), layer.kept_mean, out=g[f"layers.{i}.weight"])
            grad_weight.addcmul_(weight, torch.bmm(grad_var.transpose(1, 2), layer.var_in), value=2.0)
            if i == 0:
                break
            k, noise = self.keep[:, i].view(-1, 1, 1), self.noise[:, i].view(-1, 1, 1)
            through_var = torch.bmm(grad_var, layer.squared)  # dL/d var_in
            # var_in = noise mean^2 + k var, kept_mean = k mean
            grad_mean = torch.bmm(grad_mean, weight).mul_(k).addcmul_(through_var, layer.mean * (2.0 * noise))
            grad_var = through_var.mul_(k)
            if passed is not None:
                grad_mean, grad_var = grad_mean.add_(passed[0]), grad_var.add_(passed[1])
        if betas is not None:  # beta = beta_min + softplus(rho)
            g["rho"].mul_(torch.sigmoid(p["rho"]))


@dataclasses.dataclass
class _Layer:
    """What `StackedFastDropoutNet.backward` needs of one layer of `forward_train`."""

    mean: Tensor  # the layer's input mean (K, n, in)
    kept_mean: Tensor  # keep * mean
    var_in: Tensor  # the variance after dropout: keep (1 - keep) mean^2 + keep var
    squared: Tensor  # W^2 (K, out, in)
    jacobian: moment_jacobians.Jacobian | None  # the transfer's (hidden layers)
    unscaled: Tensor | None  # IVN: the variance before the layer's beta
