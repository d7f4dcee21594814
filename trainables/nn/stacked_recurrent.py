"""K tanh RNNs with fast dropout (sRNN / FD-RNN, `trainables.nn.recurrent`) of one size, as one model.

Member k's parameters are slices [k] of tensors with a leading member axis, in the layout of
`FastDropoutRNN`'s state dict (`NAMES`). Each member keeps its own dropout rates (`Rates`); the
recurrence of all members runs as one loop over time whose products are batched matmuls over the
members (`torch.bmm`), which on one CPU thread (MKL) gives each member's product bit for bit as its
solo `h @ W.T` does.

Training: each member brings its own minibatch (T_k steps, B_k sequences). `forward_members` (the
CPU's, bound by arithmetic) runs each member's input and output layers on its own rows, with the
solo run's operations on the solo run's shapes, and packs only the recurrence (`MemberRecurrence`);
`forward_packed` (a GPU's, bound by kernel launches) takes the minibatches packed into one
(K, T, B, n_in) tensor (`Plan.pack`) and runs the layers once for all members over every position
(batched matmuls: a row's numbers do not depend on the rows beside it); past a member's own steps
and sequences they meet zeros or finite padding, which the loss masks. For the eager loops members
are packed by decreasing length: the recurrence (`StackedTanhRecurrence`) at step t runs only the
members still running (a prefix of the member axis), so a member's short batch costs no more steps
than in its solo run. The fused loops (a GPU's, `fused_tanh`) run every member every step, so
there members stay in member order (`Plan.identity`): no gathering of their parameters, nor
scattering of their gradients and losses. Its backward is
`recurrent.FDTanhRecurrence`'s, with W_rec's gradient summed over each member's own steps and
sequences as the solo run sums it. The packed buffers are kept between minibatches (`Workspace`).

Evaluation (`hidden_shared`, then `logit_chunks`, or both as `forward_shared`): every member reads the
same minibatch; the whole net runs stacked, its input and output layers `EVAL_ROWS` rows at a time
into buffers kept between minibatches (`Workspace`; fresh whole-minibatch temporaries made it slow).

The recurrence has two modes. FD: the mean and variance recurrence of Algorithm 2, with per-member
keep probabilities as (K, 1, 1) columns. Plain: when no member drops inputs or hidden units, every
variance in the recurrence is exactly zero, and only h_t = tanh(a_t) runs (one product per step); a
member with output dropout alone still gets its output layer's variance from E[h_t]. A
deterministic member (every rate 0) runs the same rules with keep = 1, which equal its solo run's
`nn.RNN` up to the order of float rounding. On a GPU the FD recurrence runs `fused_tanh`'s loops.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from trainables.nn import fused_tanh
from trainables.nn import variance as vp
from trainables.nn.recurrent import w_rec_gradient
from trainables.nn.stacked_loops import fresh, recur, recur_backward
from trainables.nn.stacked_plan import Plan, Workspace, column

# the parameters in the order and under the names of a tanh `FastDropoutRNN`'s state dict
NAMES = ("core.weight_ih_l0", "core.weight_hh_l0", "core.bias_ih_l0", "core.bias_hh_l0", "out.weight", "out.bias")


@dataclasses.dataclass(frozen=True)
class Rates:
    """One member's fast dropout: keep probabilities (1 - rate) of the inputs, the recurrent and the
    output connections, and `fd_final_layer` (`FastDropoutRNN`'s)."""

    keep_input: float
    keep_hidden: float
    keep_output: float
    fd_final_layer: bool = True

    @property
    def deterministic(self) -> bool:
        return (self.keep_input, self.keep_hidden, self.keep_output) == (1.0, 1.0, 1.0)

    @property
    def output_fd(self) -> bool:
        """Whether the output layer propagates the variance (else z = W_out E[h] + b_y)."""
        return self.fd_final_layer and not self.deterministic


EVAL_ROWS = 256  # rows (steps x sequences) per chunk of the evaluation's input and output layers


def chunks(steps: int, batch: int) -> list[tuple[int, int]]:
    """Step ranges [t0, t1) of about EVAL_ROWS rows each (at least one step)."""
    step = max(1, EVAL_ROWS // max(batch, 1))
    return [(t0, min(t0 + step, steps)) for t0 in range(0, steps, step)]


def _zero_tails(buffers, plan: Plan) -> None:
    """Zero each member's steps past its end in packed (K, T, ...) buffers (the loops leave them unset)."""
    for pos, k in enumerate(plan.order):
        if plan.lengths[k] < len(plan.counts):
            for buffer in buffers:
                buffer[pos, plan.lengths[k]:].zero_()


class StackedTanhRecurrence(torch.autograd.Function):
    """apply(plan, w_rec (K, H, H), in_mean[, in_var]) -> (means[, variances]): the packed (K, T, B, H)
    inputs (and W_rec) in `plan`'s order, under FD with their variances; the packed outputs are
    buffers of `plan.space` when it is free. Past a member's end its outputs are finite (zero, or
    the fused loop's steps on zero inputs) and its input gradients zero, so that packed layers
    around the recurrence may run over every position (masked)."""

    @staticmethod
    def forward(ctx, plan: Plan, w_rec: Tensor, in_mean: Tensor, in_var: Tensor | None = None) -> tuple[Tensor, ...]:
        space = plan.space if plan.space is not None and not plan.space.busy else None
        alloc = space.take if space is not None else fresh
        ctx.fused = plan.fd and fused_tanh.enabled(in_mean)  # its loops leave finite tails: see `fused_tanh`
        if not (ctx.fused or plan.by_length):
            raise ValueError("the eager loops run the members by decreasing length: build the plan with sort=True")
        saved = recur(in_mean, in_var, w_rec, (plan.keep, plan.keep_var), plan.counts, save=True, alloc=alloc,
                      lengths=plan.packed_lengths)
        per = 2 if plan.fd else 1
        if not ctx.fused:
            _zero_tails(saved[:per], plan)
        if space is not None:
            space.busy = True  # until the backward has read what it saves
        ctx.plan, ctx.space = plan, space
        ctx.save_for_backward(w_rec, *saved)
        return tuple(saved[:per])

    @staticmethod
    def backward(ctx, grad_means: Tensor | None, grad_vars: Tensor | None = None):
        plan: Plan = ctx.plan
        w, *saved = ctx.saved_tensors
        grad_means = torch.zeros_like(saved[0]) if grad_means is None else grad_means
        if plan.fd and grad_vars is None:
            grad_vars = torch.zeros_like(saved[0])
        alloc = ctx.space.take if ctx.space is not None else fresh
        grad_a = recur_backward(grad_means, grad_vars if plan.fd else None, tuple(saved), w, plan, alloc=alloc)
        if ctx.fused:
            grad_w = _packed_grad_w(grad_a, saved, w, plan.keep)
        else:
            _zero_tails([g for g in grad_a if g is not None], plan)
            grad_w = torch.empty_like(w)
            for pos, k in enumerate(plan.order):
                grad_w[pos] = _member_grad_w(grad_a, saved, w[pos], pos, plan.lengths[k], plan.sizes[k], plan.keeps[k],
                                             plan.fd)
        if ctx.space is not None:
            ctx.space.busy = False
        return (None, grad_w, *grad_a[: 2 if plan.fd else 1])


class MemberRecurrence(torch.autograd.Function):
    """apply(plan, w_rec (K, H, H) in `plan`'s order, *inputs) -> outputs: member k's (T_k, B_k, H)
    in_mean_k (and in_var_k under FD) in, its hidden means (and variances) out, in member order:
    `StackedTanhRecurrence` with the packing inside, so that no packed tensor enters autograd's
    graph (slicing K members out of one would make K packed gradients)."""

    @staticmethod
    def forward(ctx, plan: Plan, w_rec: Tensor, *inputs: Tensor) -> tuple[Tensor, ...]:
        per = 2 if plan.fd else 1
        alloc = plan.space.take if plan.space is not None and not plan.space.busy else fresh
        like = inputs[0].new_empty(1, 1, 1, 1).expand(len(plan.lengths), max(plan.lengths), max(plan.sizes),
                                                       w_rec.shape[-1])
        packed = _pack(inputs, per, plan, *(alloc(name, like) for name in ("in_mean", "in_var")[:per]))
        hidden = StackedTanhRecurrence.forward(ctx, plan, w_rec, *packed)
        return tuple(h[plan.order.index(k), : plan.lengths[k], : plan.sizes[k]].contiguous()
                     for k in range(len(plan.lengths)) for h in hidden)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        plan: Plan = ctx.plan
        per = 2 if plan.fd else 1
        alloc = ctx.space.take if ctx.space is not None else fresh
        like = ctx.saved_tensors[1]
        packed = _pack(grads, per, plan, *(alloc(name, like) for name in ("grad_mean", "grad_var")[:per]))
        _, grad_w, *grad_a = StackedTanhRecurrence.backward(ctx, *packed)
        return (None, grad_w, *(g[plan.order.index(k), : plan.lengths[k], : plan.sizes[k]].contiguous()
                                for k in range(len(plan.lengths)) for g in grad_a))


def _pack(values: tuple[Tensor, ...], per: int, plan: Plan, *buffers: Tensor) -> list[Tensor]:
    """Member k's `per` tensors (T_k, B_k, H) into the packed buffers (K, T, B, H) at its position,
    zero in the columns past B_k (which the recurrence runs alongside); steps past T_k stay unset."""
    packed = list(buffers[:per])
    for pos, k in enumerate(plan.order):
        steps, size = plan.lengths[k], plan.sizes[k]
        for buffer, value in zip(packed, values[per * k: per * k + per]):
            buffer[pos, :steps, :size] = value
            if size < buffer.shape[2]:
                buffer[pos, :steps, size:] = 0.0
    return packed


def _packed_grad_w(grad_a: tuple, saved: list[Tensor], w: Tensor, keep: Tensor) -> Tensor:
    """Every member's W_rec gradient at once, over all packed steps 1..T-1 and sequences: the fused
    loops leave the gradients past a member's end and sequences exactly zero, so that each member's
    sum is its own (in another order, as float rounding goes)."""
    size, steps, _, hidden = saved[0].shape
    rows = lambda x, lo, hi: x[:, lo:hi].reshape(size, -1, hidden)  # noqa: E731
    return w_rec_gradient(rows(grad_a[0], 1, steps), rows(saved[0], 0, steps - 1), rows(grad_a[1], 1, steps),
                          rows(saved[4], 1, steps), w, keep)


def _member_grad_w(grad_a: tuple, saved: list[Tensor], w: Tensor, pos: int, steps: int, size: int, keep: float,
                   fd: bool) -> Tensor:
    """W_rec's gradient for one member over its own steps t = 1..T_k-1 (h_0 = 0 adds nothing), as
    `FDTanhRecurrence.backward` sums it."""
    hidden = w.shape[0]
    rows = lambda x, lo, hi: x[pos, lo:hi, :size].reshape(-1, hidden)  # noqa: E731
    if not fd:
        return rows(grad_a[0], 1, steps).T @ rows(saved[0], 0, steps - 1)
    return w_rec_gradient(rows(grad_a[0], 1, steps), rows(saved[0], 0, steps - 1), rows(grad_a[1], 1, steps),
                          rows(saved[4], 1, steps), w, keep)


class StackedFDRNN:
    """K tanh `FastDropoutRNN`s of one size: `params` (in `NAMES` order), each (K, *shape)."""

    def __init__(self, states: list[dict[str, Tensor]], rates: list[Rates], device: torch.device | str = "cpu"):
        if not states or len(states) != len(rates):
            raise ValueError(f"one state and one Rates per member must be given, got {len(states)} and {len(rates)}")
        self.params = [torch.stack([s[name].detach() for s in states]).to(device).requires_grad_() for name in NAMES]
        self.rates = list(rates)
        self.space, self.eval_space = Workspace(), Workspace()  # training's and evaluation's buffers

    @property
    def size(self) -> int:
        return self.params[0].shape[0]

    @property
    def fd(self) -> bool:
        """Whether any member's recurrence carries a variance (else the plain mode)."""
        return any(r.keep_input != 1.0 or r.keep_hidden != 1.0 for r in self.rates)

    def select(self, positions: list[int]) -> None:
        """Keep only the members at `positions` (in that order)."""
        index = torch.tensor(positions, device=self.params[0].device)
        self.params = [p.detach()[index].clone().requires_grad_() for p in self.params]
        self.rates = [self.rates[i] for i in positions]

    def member_state(self, pos: int, params: list[Tensor] | None = None) -> dict[str, Tensor]:
        """Member `pos` of `params` (default: the parameters) as its solo net's state dict."""
        return {name: p[pos].detach().clone() for name, p in zip(NAMES, params or self.params)}

    @torch.no_grad()
    def load_member(self, pos: int, state: dict[str, Tensor]) -> None:
        for name, p in zip(NAMES, self.params):
            p[pos].copy_(state[name])

    def plan(self, lengths: list[int], sizes: list[int], like: Tensor) -> Plan:
        """How members with minibatches of T_k steps and B_k sequences are packed (`Plan`): in
        member order where the fused loops run (every member every step), else by length."""
        fused = self.fd and fused_tanh.enabled(like)
        return Plan.build(lengths, sizes, [r.keep_hidden for r in self.rates], self.fd, like, self.space, not fused)

    def forward_packed(self, x: Tensor, plan: Plan) -> Tensor:
        """Training: packed member minibatches x (K, T, B, n_in), in `plan`'s order, zero past each
        member's steps and sequences (`Plan.pack`); returns the effective logits (K, T, B, n_out) in
        that order, finite everywhere (what lies past a member's own steps and sequences is padding
        for the loss to mask). The input and output layers run on all members at once, as in
        `hidden_shared` and `logit_chunks`: each member's rows as its solo layers compute them."""
        if plan.identity:  # member order (a GPU's fused loops): nothing to gather, nor to scatter back
            w_ih, w_hh, b_ih, b_hh, w_out, b_out = self.params
        else:
            w_ih, w_hh, b_ih, b_hh, w_out, b_out = (p.index_select(0, plan.index) for p in self.params)
        rates = [self.rates[k] for k in plan.order]
        size, steps, batch, n_in = x.shape
        rows = x.reshape(size, steps * batch, n_in)
        keep_in = [r.keep_input for r in rates]
        in_mean = torch.baddbmm((b_ih + b_hh).unsqueeze(1), column(keep_in, x) * rows, w_ih.transpose(1, 2))
        inputs = [in_mean.view(size, steps, batch, -1)]
        if plan.fd:
            noise = column([k * (1.0 - k) for k in keep_in], x)
            inputs.append(torch.bmm(noise * rows.square(), w_ih.square().transpose(1, 2)).view(size, steps, batch, -1))
        hidden = StackedTanhRecurrence.apply(plan, w_hh, *inputs)
        flat = [h.reshape(size, steps * batch, -1) for h in hidden]
        logits = self._output_shared(flat[0], flat[1] if plan.fd else None, w_out, b_out, rates)
        return logits.view(size, steps, batch, -1)

    def forward_members(self, xs: list[Tensor]) -> list[Tensor]:
        """Member k reads its own x_k (T_k, B_k, n_in); returns its effective logits (T_k, B_k, n_out).
        Each member's input and output layers run on its own rows, with its solo run's operations and
        shapes (on a CPU, bound by arithmetic, no padding is computed); only the recurrence is packed."""
        plan = self.plan([x.shape[0] for x in xs], [x.shape[1] for x in xs], self.params[0])
        w_ih, b_ih, b_hh, w_out, b_out = (self.params[i].unbind(0) for i in (0, 2, 3, 4, 5))
        inputs = []
        for k, x in enumerate(xs):
            mean, var = vp.fd_affine(x, None, w_ih[k], b_ih[k] + b_hh[k], self.rates[k].keep_input)
            inputs += [mean, var] if plan.fd else [mean]
        w_rec = self.params[1] if plan.identity else self.params[1].index_select(0, plan.index)
        hidden = MemberRecurrence.apply(plan, w_rec, *inputs)
        per = 2 if plan.fd else 1
        return [self._output(hidden[per * k], hidden[per * k + 1] if plan.fd else None, w_out[k], b_out[k], r)
                for k, r in enumerate(self.rates)]

    def _output(self, mean: Tensor, var: Tensor | None, weight: Tensor, bias: Tensor, rates: Rates) -> Tensor:
        """`FastDropoutRNN.forward`'s output layer for one member."""
        if not rates.output_fd:
            return torch.nn.functional.linear(mean, weight, bias)
        out_mean, out_var = vp.fd_affine(mean, var, weight, bias, rates.keep_output)
        return out_mean / torch.sqrt(1.0 + vp.PROBIT_SCALE * out_var)

    @torch.no_grad()
    def forward_shared(self, x: Tensor, params: list[Tensor] | None = None) -> Tensor:
        """Every member reads x (T, B, n_in); returns the effective logits (K, T, B, n_out)."""
        params = params or [p.detach() for p in self.params]
        mean, var = self.hidden_shared(x, params)
        logits = mean.new_empty(*mean.shape[:3], params[4].shape[1])
        for t0, t1, chunk in self.logit_chunks(mean, var, params):
            logits[:, t0:t1] = chunk
        return logits

    @torch.no_grad()
    def hidden_shared(self, x: Tensor, params: list[Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
        """Every member reads x (T, B, n_in); returns its hidden means and variances (None in the
        plain mode), (K, T, B, H) each, in `eval_space` (valid until the next evaluation)."""
        w_ih, w_hh, b_ih, b_hh = (params or [p.detach() for p in self.params])[:4]
        size, (steps, batch, n_in) = w_ih.shape[0], x.shape
        shape = (size, steps, batch, w_hh.shape[-1])
        like = x.new_empty(1, 1, 1, 1).expand(shape)
        in_mean = self.eval_space.take("in_mean", like)
        in_var = self.eval_space.take("in_var", like) if self.fd else None
        keep_in = [r.keep_input for r in self.rates]
        bias, w_t, keep = (b_ih + b_hh).unsqueeze(1), w_ih.transpose(1, 2), column(keep_in, x)
        w_sq_t, noise = w_ih.square().transpose(1, 2), column([k * (1.0 - k) for k in keep_in], x)
        # the input layer a few steps at a time, into the reused buffers: for 16 members the whole
        # minibatch's (K, T*B, H) temporaries are tens of MB, fresh pages on every minibatch
        for t0, t1 in chunks(steps, batch):
            rows = x[t0:t1].reshape(1, -1, n_in)
            in_mean[:, t0:t1] = torch.baddbmm(bias, keep * rows, w_t).view(size, t1 - t0, batch, -1)
            if in_var is not None:
                in_var[:, t0:t1] = torch.bmm(noise * rows.square(), w_sq_t).view(size, t1 - t0, batch, -1)
        keeps = [r.keep_hidden for r in self.rates]
        hidden = recur(in_mean, in_var, w_hh, (column(keeps, x), column([k * (1.0 - k) for k in keeps], x)),
                       [size] * steps, alloc=self.eval_space.take)
        return hidden if self.fd else (hidden[0], None)

    @torch.no_grad()
    def logit_chunks(self, mean: Tensor, var: Tensor | None, params: list[Tensor] | None = None):
        """The effective logits of hidden moments (K, T, B, H) (`hidden_shared`) a few steps at a time
        (`chunks`): yields (t0, t1, logits of steps t0..t1-1, (K, t1 - t0, B, n_out))."""
        w_out, b_out = (params or [p.detach() for p in self.params])[4:]
        size, steps, batch, hidden = mean.shape
        rows = lambda v, t0, t1: v[:, t0:t1].reshape(size, -1, hidden)  # noqa: E731 (a view)
        for t0, t1 in chunks(steps, batch):
            out = self._output_shared(rows(mean, t0, t1), None if var is None else rows(var, t0, t1), w_out, b_out)
            yield t0, t1, out.view(size, t1 - t0, batch, -1)

    def _output_shared(self, mean: Tensor, var: Tensor | None, weight: Tensor, bias: Tensor,
                       rates: list[Rates] | None = None) -> Tensor:
        """`FastDropoutRNN.forward`'s output layer for all members at once (`rates`: theirs, by default
        the members'): members without output FD get keep 1 and no variance."""
        rates = self.rates if rates is None else rates
        keep = [r.keep_output if r.output_fd else 1.0 for r in rates]
        out_mean = torch.baddbmm(bias.unsqueeze(1), column(keep, mean) * mean, weight.transpose(1, 2))
        if not any(r.output_fd for r in rates):
            return out_mean
        var_in = column([k * (1.0 - k) for k in keep], mean) * mean.square()
        if var is not None:
            var_in = var_in + column(keep, mean) * var
        out_var = torch.bmm(var_in, weight.square().transpose(1, 2))
        scale = column([1.0 if r.output_fd else 0.0 for r in rates], mean)
        return out_mean / torch.sqrt(1.0 + vp.PROBIT_SCALE * (scale * out_var))
