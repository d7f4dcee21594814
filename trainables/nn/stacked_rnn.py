"""K pooled RNNs of one shape (`trainables.nn.pooled_rnn.PooledRNN`) as one, each with its own transfer and pooling.

Sequence-reduction trials of one random search that share `hidden_units` (and the output layer's
size) run as one network: member k's matrices are slices W[k] of (K, out, in) tensors, the input
and output layers are one `einsum` over the member axis, and each recurrence step is one in-place
`baddbmm` (a_t = W_in x_t + b + W_rec h_t-1 for all k at once) followed by the transfers. What the
members may differ in besides the values of their weights:

- the transfer sigma_k (tanh, softsign, rectifier, softplus, sigmoid; not LSTM, whose weights
  have another shape): members with equal transfers that sit next to each other on the member
  axis form a run, and each run's slice goes through its own function, written into one buffer
  (order the members by transfer to get one run per transfer);
- the pooling rho_k (`pool_members`): each run of equal poolings is pooled by
  `trainables.nn.pooling.pool` as one batch; stochastic pooling in training draws member by
  member from that member's own generator, as its solo run draws.

For networks this small a step costs its number of kernel calls, not its arithmetic, so the
recurrence's backpropagation through time is written out (`_Recurrence`: one multiply and one
`bmm` per step, the transfers' derivatives for all steps at once by the formulas of torch's own
backward functions, dW_rec as one `bmm` over all steps), and so are the output transfers'
(`_Transfers`); autograd would record several operations per step and per run. Each number is
the solo network's up to float rounding (in float64 the losses and gradients agree to 1e-12,
tests/test_cohort_reduction.py).

Batches are time-major with the member axis second: inputs x (T, B, D) shared by every member (an
evaluation) or (T, K, B, D) with a mask (T, K, B) (training, where each member draws its own
minibatches; a member's columns past its own sequences' ends are padding, which neither the
recurrence at real steps nor the masked pooling and losses see). Nothing couples the members: the
sum of their losses gives each the gradient of its own loss.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from trainables.nn.pooled_rnn import TRANSFERS, PooledRNN
from trainables.nn.pooling import POOLINGS, pool

PENALTY_EXEMPT = "out.bias"  # the L2 penalty covers every weight but the output bias (`PooledRNN.penalised`)


def runs(names: Sequence[str]) -> list[tuple[str, int, int]]:
    """Maximal runs of equal consecutive names: [(name, start, stop)]."""
    out: list[tuple[str, int, int]] = []
    for k, name in enumerate(names):
        if out and out[-1][0] == name:
            out[-1] = (name, out[-1][1], k + 1)
        else:
            out.append((name, k, k + 1))
    return out


_INTO = {  # sigma(a) written into `out`: the operations of `TRANSFERS` (ATen's relu is clamp_min(0))
    "tanh": lambda a, out: torch.tanh(a, out=out),
    "sigmoid": lambda a, out: torch.sigmoid(a, out=out),
    "rectifier": lambda a, out: torch.clamp_min(a, 0.0, out=out),
    "softsign": lambda a, out: _softsign_into(a, out),
    "softplus": lambda a, out: out.copy_(TRANSFERS["softplus"](a)),
    "identity": lambda a, out: out.copy_(a),
}


def _softsign_into(a: torch.Tensor, out: torch.Tensor) -> None:
    """a / (|a| + 1) into `out` (which may be `a`), with no temporary and no Python scalar to wrap."""
    denominator = a.abs() if out.data_ptr() == a.data_ptr() else torch.abs(a, out=out)
    denominator.add_(torch.ones((), dtype=a.dtype, device=a.device))
    torch.div(a, denominator, out=out)


def _steps(acts: torch.Tensor, hs: torch.Tensor, transfer_runs: list[tuple[str, int, int]]):
    """Per transfer run: (function, its T pre-activation views, its T output views), made once
    (`unbind`) rather than sliced at every step."""
    def views(buffer: torch.Tensor, start: int, stop: int) -> tuple[torch.Tensor, ...]:
        return buffer.unbind(0) if len(transfer_runs) == 1 else buffer[:, start:stop].unbind(0)

    out = []
    for name, start, stop in transfer_runs:
        src = views(acts, start, stop)
        out.append((_INTO[name], src, src if hs is acts else views(hs, start, stop)))
    return out


def _scan(acts: torch.Tensor, w_rec: torch.Tensor, transfer_runs: list[tuple[str, int, int]], hs: torch.Tensor) -> None:
    """The forward recurrence, in place: `acts` (T, K, B, H) holds the input projections and is
    turned into the pre-activations a_t = pre_t + h_t-1 W_rec^T (h_0 = 0: a_1 = pre_1); the outputs
    h_t = sigma_k(a_t) go to `hs`, which may be `acts` itself."""
    steps = _steps(acts, hs, transfer_runs)
    acts_t, hs_t = acts.unbind(0), hs.unbind(0)
    w_rec_t = w_rec.transpose(1, 2)
    for t in range(len(acts_t)):
        if t > 0:
            acts_t[t].baddbmm_(hs_t[t - 1], w_rec_t)
        for into, src, dst in steps:
            into(src[t], dst[t])


def _derivatives(acts: torch.Tensor, hs: torch.Tensor, transfer_runs: list[tuple[str, int, int]]) -> torch.Tensor:
    """sigma_k'(a) for pre-activations `acts` and outputs `hs` (T, K, B, H), runs on the member axis 1,
    by the formulas of torch's backward functions (tanh: 1 - y^2; softplus: 1 above its threshold 20)."""
    parts = []
    for name, start, stop in transfer_runs:
        a, y = acts[:, start:stop], hs[:, start:stop]
        if name == "tanh":
            parts.append(1 - y * y)
        elif name == "sigmoid":
            parts.append((1 - y) * y)
        elif name == "rectifier":
            parts.append((y > 0).to(y.dtype))
        elif name == "softsign":
            d = a.abs() + 1
            parts.append(1 / (d * d))
        elif name == "softplus":
            z = a.exp()
            parts.append(torch.where(a > 20, torch.ones((), dtype=a.dtype, device=a.device), z / (z + 1)))
        else:
            parts.append(torch.ones_like(a))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class _Recurrence(torch.autograd.Function):
    """h_t = sigma_k(pre_t + h_t-1 W_rec[k]^T), h_0 = 0, with backpropagation through time written out:
    autograd would record a handful of operations per step (and a slice and its backward per transfer
    run); here a step is one `baddbmm` and the transfers forward, one multiply and one `bmm` backward."""

    @staticmethod
    def forward(ctx, pre, w_rec, transfer_runs):
        acts = torch.empty(pre.shape, dtype=pre.dtype, device=pre.device)
        acts.copy_(pre)
        hs = torch.empty_like(acts)
        _scan(acts, w_rec, transfer_runs, hs)
        ctx.transfer_runs = transfer_runs
        ctx.save_for_backward(acts, hs, w_rec)
        return hs

    @staticmethod
    def backward(ctx, grad_hs):
        acts, hs, w_rec = ctx.saved_tensors
        fprime = _derivatives(acts, hs, ctx.transfer_runs)
        grad_acts = torch.empty_like(acts)
        grads_t, fprime_t, out_t = grad_hs.unbind(0), fprime.unbind(0), grad_acts.unbind(0)
        dh = None
        for t in range(len(out_t) - 1, -1, -1):
            torch.mul(grads_t[t] if dh is None else grads_t[t] + dh, fprime_t[t], out=out_t[t])
            if t > 0:
                dh = torch.bmm(out_t[t], w_rec)
        if not ctx.needs_input_grad[1]:
            return grad_acts, None, None
        h_prev = torch.cat([torch.zeros_like(hs[:1]), hs[:-1]])
        k, h = w_rec.shape[0], w_rec.shape[1]
        grad_w = torch.bmm(grad_acts.transpose(0, 1).reshape(k, -1, h).transpose(1, 2),
                           h_prev.transpose(0, 1).reshape(k, -1, h))  # sum_t da_t^T h_t-1 per member
        return grad_acts, grad_w, None


class _Transfers(torch.autograd.Function):
    """y = sigma_k(a) on member k's slice (axis 1) of a (T, K, B, U), written into one buffer; the
    backward multiplies by `_derivatives` (slicing under autograd would allocate a zero tensor of
    the whole shape for every run in the backward pass)."""

    @staticmethod
    def forward(ctx, a, transfer_runs):
        y = torch.empty_like(a)
        for name, start, stop in transfer_runs:
            _INTO[name](a[:, start:stop], y[:, start:stop])
        ctx.transfer_runs = transfer_runs
        ctx.save_for_backward(a, y)
        return y

    @staticmethod
    def backward(ctx, grad):
        a, y = ctx.saved_tensors
        return grad * _derivatives(a, y, ctx.transfer_runs), None


def apply_transfers(a: torch.Tensor, transfer_runs: list[tuple[str, int, int]]) -> torch.Tensor:
    """sigma_k applied to member k's slice of a (T, K, B, U) (member axis 1), for `runs(transfers)`."""
    if len(transfer_runs) == 1:
        return TRANSFERS[transfer_runs[0][0]](a)
    return _Transfers.apply(a, transfer_runs)


class StackedPooledRNN(nn.Module):
    """K `PooledRNN`s of one shape: `hidden`, `out`, `outputs` as the solo network's, member axis second.

    `params` hold the members' parameters in the order of `PooledRNN.named_parameters()` (`names`),
    each (K, *shape); `member_state(k)` is member k's `state_dict()` as its solo network has it.
    """

    def __init__(self, names: list[str], tensors: list[torch.Tensor], transfers: list[str], out_transfers: list[str]):
        super().__init__()
        size = tensors[0].shape[0]
        if not (len(transfers) == len(out_transfers) == size and all(t.shape[0] == size for t in tensors)):
            raise ValueError(f"one transfer, output transfer and parameter slice per member must be given, but got "
                             f"{len(transfers)}, {len(out_transfers)} and {[t.shape[0] for t in tensors]}")
        unknown = sorted((set(transfers) | set(out_transfers)) - set(TRANSFERS))
        if unknown:
            raise ValueError(f"stacked members need elementwise transfers ({', '.join(TRANSFERS)}), got {unknown}")
        self.names = list(names)
        self.params = nn.ParameterList(nn.Parameter(t) for t in tensors)
        self.transfers, self.out_transfers = list(transfers), list(out_transfers)
        self._hidden_runs, self._out_runs = runs(self.transfers), runs(self.out_transfers)

    @classmethod
    def of(cls, members: Sequence[PooledRNN]) -> "StackedPooledRNN":
        """Stack constructed (and initialised) members; they must share every parameter shape."""
        if not members:
            raise ValueError("a cohort needs at least one member")
        if any(m.transfer == "lstm" for m in members):
            raise ValueError("LSTM members cannot be stacked: their weights have another shape")
        shapes = [[(n, tuple(p.shape)) for n, p in m.named_parameters()] for m in members]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"members must share every parameter shape, but got {shapes}")
        names = [n for n, _ in members[0].named_parameters()]
        tensors = [torch.stack([p.detach() for p in ps]) for ps in zip(*(m.parameters() for m in members))]
        return cls(names, tensors, [m.transfer for m in members], [m.out_transfer for m in members])

    def select(self, members: Sequence[int], states: Sequence[dict[str, torch.Tensor]] | None = None) -> "StackedPooledRNN":
        """A new stack of `members` (indices), with their current weights or the given state dicts."""
        if states is None:
            index = torch.tensor(list(members), device=self.params[0].device)
            tensors = [p.detach()[index].clone() for p in self.params]
        else:
            tensors = [torch.stack([state[name].to(self.params[0].device) for state in states]) for name in self.names]
        return StackedPooledRNN(self.names, tensors, [self.transfers[k] for k in members],
                                [self.out_transfers[k] for k in members])

    @property
    def size(self) -> int:
        return self.params[0].shape[0]

    def param(self, name: str) -> torch.Tensor:
        return self.params[self.names.index(name)]

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """h_1:T (T, K, B, H) for inputs x (T, B, D) shared by all members or (T, K, B, D); h_0 = 0."""
        w_in, b_in, w_rec = self.param("w_in.weight"), self.param("w_in.bias"), self.param("w_rec")
        projection = torch.einsum("tbd,khd->tkbh" if x.dim() == 3 else "tkbd,khd->tkbh", x, w_in)
        bias = b_in[None, :, None, :]  # every step's input projection at once, then the recurrence
        if torch.is_grad_enabled() and any(p.requires_grad for p in (x, w_in, b_in, w_rec)):
            return _Recurrence.apply(projection + bias, w_rec, self._hidden_runs)
        acts = torch.empty(projection.shape, dtype=projection.dtype, device=projection.device)
        torch.add(projection, bias, out=acts)
        _scan(acts, w_rec, self._hidden_runs, acts)
        return acts

    def out(self, h: torch.Tensor) -> torch.Tensor:
        """The output layer's pre-activations W_out h_t + b_out, (T, K, B, O) from h (T, K, B, H)."""
        w, b = self.param("out.weight"), self.param("out.bias")
        return torch.einsum("tkbh,koh->tkbo", h, w) + b[None, :, None, :]

    def outputs(self, h: torch.Tensor) -> torch.Tensor:
        """y_t = sigma_out,k(W_out h_t + b_out), (T, K, B, O)."""
        return apply_transfers(self.out(h), self._out_runs)

    def penalty(self) -> torch.Tensor:
        """Each member's sum of squares of all weights but the output bias, (K,) (`pooled_rnn.l2`)."""
        return sum((p ** 2).reshape(p.shape[0], -1).sum(1) for name, p in zip(self.names, self.params)
                   if name != PENALTY_EXEMPT)

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's `state_dict()` as its solo `PooledRNN` has it (fresh tensors)."""
        return {name: p.detach()[k].clone() for name, p in zip(self.names, self.params)}

    @torch.no_grad()
    def load_member_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        for name, p in zip(self.names, self.params):
            p[k].copy_(state[name])


def pool_members(a: torch.Tensor, mask: torch.Tensor, poolings: Sequence[str], training: bool = False,
                 generators: Sequence[torch.Generator | None] | None = None) -> torch.Tensor:
    """rho_k(a_1:T) of every member: (K, B, U) from a (T, K, B, U) and a mask (T, K, B) or a shared (T, B).

    A run of members with one pooling is pooled as one batch of K_run * B sequences; stochastic
    pooling in training draws member by member with `generators[k]`. A member whose activations
    are not all finite gets NaN embeddings instead of a draw (torch.multinomial refuses the
    infinite probabilities of an exploding member; its loss is NaN either way).
    """
    t, k, b, u = a.shape
    if len(poolings) != k:
        raise ValueError(f"one pooling per member must be given, got {len(poolings)} for {k} members")
    unknown = sorted(set(poolings) - set(POOLINGS))
    if unknown:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {unknown}")
    if mask.dim() == 2:
        mask = mask.unsqueeze(1).expand(t, k, b)
    pieces = []
    for how, start, stop in runs(poolings):
        if how == "stochastic" and training:
            for m in range(start, stop):
                pieces.append(_draw(a[:, m], mask[:, m], generators[m] if generators is not None else None))
            continue
        n = stop - start
        pooled = pool(a[:, start:stop].reshape(t, n * b, u), mask[:, start:stop].reshape(t, n * b), how)
        pieces.append(pooled.view(n, b, u))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _draw(a: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One member's stochastic pooling in training, (1, B, U), as its solo run draws it."""
    if not bool(torch.isfinite(a).all()):
        return torch.full((1,) + tuple(a.shape[1:]), math.nan, dtype=a.dtype, device=a.device)
    return pool(a, mask, "stochastic", True, generator).unsqueeze(0)


def member_masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per member, the sum of `values` (T, K, B, ...) over its real steps divided by its number of
    real steps (`sequences.masked_sum / frame_count`), (K,); 0 for a member without real steps."""
    real = mask.reshape(mask.shape + (1,) * (values.dim() - mask.dim())).bool()
    masked = torch.where(real, values, torch.zeros((), dtype=values.dtype, device=values.device))
    total = masked.transpose(0, 1).reshape(values.shape[1], -1).sum(1)
    count = mask.transpose(0, 1).reshape(mask.shape[1], -1).sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), total * 0)
