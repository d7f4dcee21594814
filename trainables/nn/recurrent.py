"""Recurrent networks with fast dropout: FD-RNN and FD-LSTM (thesis Sections 2.4.2, 2.4.2.1, 2.5).

`FastDropoutRNN` computes, for inputs x_1:T (time-major), one hidden layer of tanh units or LSTM
cells (`trainables.nn.lstm_cells`: the thesis's cell, `lstm`, or torch's, `torch-lstm`) and a
linear output layer, and returns the *effective logits* z_t of a Bernoulli output:
p(x_t+1 = 1 | x_1:t) = sigma(z_t).

- Without dropout (every rate 0) it is a plain sRNN or LSTM: z_t = W_out h_t + b_y. The tanh net
  and torch's LSTM run `torch.nn.RNN` / `nn.LSTM` (cuDNN on a GPU); the thesis's LSTM, which torch
  does not have, runs a plain loop (`lstm_cells.thesis_hidden`).
- With fast dropout it propagates the mean and variance of every unit (Algorithm 2): the input
  layer drops inputs with rate `p_drop_input`, the recurrent connections drop hidden units with
  rate `p_drop_hidden`, the output connections with rate `p_drop_output` (Section 2.5.2 separates
  the last two). Pre-synaptic moments come from `variance.fd_affine`, the input and recurrent
  contributions are independent and add (Section 2.4.2), tanh / sigmoid moments from
  `variance.tanh` / `variance.sigmoid`, and LSTM's gating products from `variance.product`
  (Eq. 15), one step at a time in `lstm_cells`. The output's moments (m_t, v_t) give
  E[sigma(a)] ~ sigma(m_t / sqrt(1 + pi v_t / 8)), so z_t = m_t / sqrt(1 + pi v_t / 8) and the
  Bernoulli likelihood uses the propagated mean.
- `fd_final_layer=False` is the thesis's "no fast dropout for the final layer" (Section 2.5.2): an
  ordinary forward pass z_t = W_out E[h_t] + b_y, ignoring the hidden units' variance, which is
  not the same as `p_drop_output = 0`.

Both paths share the parameters of the `nn.RNN`/`nn.LSTM` module (its two bias vectors are summed;
the 4H rows of an LSTM's matrices are read in torch's gate order i, f, g, o by `torch-lstm` and in
the thesis's order xi, iota, nu, o by `lstm`), so FD with every rate 0 equals the deterministic
net. The input projections of all time steps are computed before the recurrence, which then does
only the recurrent matrix products (two per step under FD: one for the mean, one for the variance).
The FD tanh loop (fixed rates) is `FDTanhRecurrence`, the sigmoid loop and any loop with learned rates
`fd_recurrence.FDRecurrence`, both with their backward written out; the LSTM loops run
through autograd.

Extensions for STORN and the deep Markov model (Chapter 4):

- `cell="sigmoid"`: logistic-sigmoid hidden units (Section 4.4.1 uses them in both of STORN's
  nets). torch has no sigmoid `nn.RNN`, so this cell always runs the propagation loop (with every
  rate 0 the variances stay exactly 0 and the loop is the deterministic net); its parameters live
  in an `nn.RNN` like the tanh cell's.
- `n_undropped`: the last `n_undropped` input columns are exempt from input dropout (STORN's latent
  sample z_t enters the generating net through its own weights W'_in, Eq. 29, not through the
  dropped data inputs).
- `learn_rates=True`: the three dropout rates are parameters (keep = sigmoid(logit)), learned with
  the weights; Section 4.4 does this for STORN's recognition model.
- `moments(x)`: the output layer's pre-activation mean and variance (no squashing), the Gaussian
  statistics STORN's recognition model reads (Section 4.4: FD's variance serves as sigma^2_t).
- `BidirectionalFD`: a biRNN (Section 1.2) of two such nets, one reading the reversed sequences
  (`reverse_padded`, which respects each sequence's length).

Initialisation (Sections 1.3.3, 2.5.2; `trainables.nn.initialise`): W_in ~ N(0, sigma2_in), W_rec
and W_out ~ N(0, sigma2), b_h = 0, b_y = -0.8; then, with `nu`, sparse initialisation ("all but a
few parameters" zero, Table 1's ν): every unit keeps nu of its incoming weights in W_in, W_rec and
W_out, as the author's piano-roll notebook did (breze-no-salt/breze, `notebooks/recurrent-networks/
RNNs for Piano music.ipynb`, commit 1c23fb4986477189b948f21924030c07f3c290db:
`sparsify_rec=15, sparsify_affine=15`); last, for the tanh and sigmoid nets, W_rec rescaled to
spectral radius rho (the thesis sets none for LSTM, Section 2.5.2.2).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.nn import fused_tanh, lstm_cells
from trainables.nn import variance as vp
from trainables.nn.fd_recurrence import FDRecurrence
from trainables.nn.initialise import set_spectral_radius, sparsify_columns

__all__ = ["BidirectionalFD", "FastDropoutRNN", "reverse_padded", "set_spectral_radius"]

Cell = Literal["tanh", "lstm", "torch-lstm", "sigmoid"]
CELLS = ("tanh", "lstm", "torch-lstm", "sigmoid")
LSTMS = ("lstm", "torch-lstm")


def keep_probability(p_drop: float) -> float:
    if not 0.0 <= p_drop < 1.0:
        raise ValueError(f"0 <= dropout rate < 1 must hold, but got {p_drop}")
    return 1.0 - p_drop


class FastDropoutRNN(nn.Module):
    """One recurrent hidden layer (tanh, sigmoid or LSTM) and Bernoulli outputs, with fast dropout (Alg. 2).

    forward(x: (T, B, n_in)) -> z: (T, B, n_out), the effective logits of the output units.
    """

    def __init__(
        self,
        n_in: int,
        n_hidden: int,
        n_out: int,
        cell: Cell = "tanh",
        p_drop_input: float = 0.0,
        p_drop_hidden: float = 0.0,
        p_drop_output: float = 0.0,
        fd_final_layer: bool = True,
        n_undropped: int = 0,
        learn_rates: bool = False,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        if not 0 <= n_undropped <= n_in:
            raise ValueError(f"0 <= n_undropped <= n_in must hold, but got n_undropped={n_undropped}, n_in={n_in}")
        self.cell = cell
        self.n_hidden = n_hidden
        self.n_undropped = n_undropped
        keeps = (keep_probability(p_drop_input), keep_probability(p_drop_hidden), keep_probability(p_drop_output))
        self.learn_rates = learn_rates
        if learn_rates:
            # keep = sigmoid(logit); a rate of exactly 0 would be an infinite logit, so start just below it
            clipped = torch.tensor(keeps, dtype=torch.float32).clamp(1e-3, 1.0 - 1e-3)
            self.keep_logits = nn.Parameter(torch.log(clipped) - torch.log1p(-clipped))  # (input, hidden, output)
        else:
            self._keeps = keeps
        self.fd_final_layer = fd_final_layer
        if cell in LSTMS:
            self.core = nn.LSTM(n_in, n_hidden)  # only the parameters (4H rows) for the thesis's "lstm"
        else:
            self.core = nn.RNN(n_in, n_hidden, nonlinearity="tanh")  # only the parameters for "sigmoid"
        self.out = nn.Linear(n_hidden, n_out)

    def _keep(self, which: int) -> float | Tensor:
        return torch.sigmoid(self.keep_logits[which]) if self.learn_rates else self._keeps[which]

    @property
    def keep_input(self) -> float | Tensor:
        return self._keep(0)

    @property
    def keep_hidden(self) -> float | Tensor:
        return self._keep(1)

    @property
    def keep_output(self) -> float | Tensor:
        return self._keep(2)

    @property
    def deterministic(self) -> bool:
        return not self.learn_rates and self._keeps == (1.0, 1.0, 1.0)

    def initialise(self, sigma2: float, sigma2_in: float, rho: float | None, b_h: float = 0.0, b_y: float = -0.8,
                   generator: torch.Generator | None = None, nu: int | None = None) -> None:
        """The thesis's initialisation (module docstring): draw, sparsify to nu weights per unit
        (None: dense), then set rho (tanh and sigmoid nets only)."""
        weights = (self.core.weight_ih_l0, self.core.weight_hh_l0, self.out.weight)
        with torch.no_grad():
            for weight, var in zip(weights, (sigma2_in, sigma2, sigma2)):
                weight.normal_(0.0, math.sqrt(var), generator=generator)
            self.core.bias_ih_l0.fill_(b_h)
            self.core.bias_hh_l0.zero_()
            self.out.bias.fill_(b_y)
        for weight in weights:
            sparsify_columns(weight, nu, generator)
        if rho is not None and self.cell not in LSTMS:
            set_spectral_radius(self.core.weight_hh_l0, rho)

    def _plain_hidden(self, x: Tensor) -> Tensor:
        """Hidden units of the net without dropout, (T, B, H)."""
        if self.cell == "lstm":
            bias = self.core.bias_ih_l0 + self.core.bias_hh_l0
            return lstm_cells.thesis_hidden(F.linear(x, self.core.weight_ih_l0, bias), self.core.weight_hh_l0)
        if self.cell == "sigmoid":  # torch has no sigmoid RNN: the propagation loop, variances exactly 0
            return self._fd_hidden(x)[0]
        return self.core(x)[0]

    def forward(self, x: Tensor) -> Tensor:
        if self.deterministic:
            return self.out(self._plain_hidden(x))
        mean, var = self._fd_hidden(x)  # each (T, B, H)
        if not self.fd_final_layer:
            return self.out(mean)
        out_mean, out_var = vp.fd_affine(mean, var, self.out.weight, self.out.bias, self.keep_output)
        return out_mean / torch.sqrt(1.0 + vp.PROBIT_SCALE * out_var)

    def hidden_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of the hidden units, (T, B, H) each (zero variance without dropout)."""
        if self.deterministic:
            hidden = self._plain_hidden(x)
            return hidden, torch.zeros_like(hidden)
        return self._fd_hidden(x)

    def output_moments(self, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        """Moments of the output pre-activation given the hidden units' (FD on the output weights)."""
        if not self.fd_final_layer:
            out = self.out(mean)
            return out, torch.zeros_like(out)
        return vp.fd_affine(mean, var, self.out.weight, self.out.bias, self.keep_output)

    def moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of the output pre-activation, (T, B, n_out) each, without squashing."""
        return self.output_moments(*self.hidden_moments(x))

    def _fd_hidden(self, x: Tensor) -> tuple[Tensor, Tensor]:
        core = self.core
        bias = core.bias_ih_l0 + core.bias_hh_l0
        keep_in = self.keep_input
        if self.n_undropped:
            keep_in = x.new_ones(x.shape[-1]) * keep_in  # (n_in,): dropout only on the data columns
            keep_in = torch.cat([keep_in[: x.shape[-1] - self.n_undropped], x.new_ones(self.n_undropped)])
        in_mean, in_var = vp.fd_affine(x, None, core.weight_ih_l0, bias, keep_in)  # (T, B, G*H) each
        w_rec = core.weight_hh_l0
        keep = self.keep_hidden
        if self.cell == "tanh" and not isinstance(keep, Tensor):
            return FDTanhRecurrence.apply(in_mean, in_var, w_rec, keep)
        if self.cell in ("tanh", "sigmoid"):  # sigmoid units, or a learned keep
            return FDRecurrence.apply(in_mean, in_var, w_rec, keep, self.cell)
        w_rec_sq = w_rec.square()
        h_mean = x.new_zeros(x.shape[1], self.n_hidden)
        h_var = x.new_zeros(x.shape[1], self.n_hidden)
        c_mean, c_var = h_mean, h_var
        means, variances = [], []
        # unbind, not in_mean[t]: each indexing's backward writes a zero (T, B, G*H) tensor, O(T^2) in all
        for in_mean_t, in_var_t in zip(in_mean.unbind(0), in_var.unbind(0)):
            # the recurrent contribution, Eq. (18) with Bernoulli(keep) dropout on h_{t-1}
            a_mean = in_mean_t + keep * (h_mean @ w_rec.T)
            a_var = in_var_t + (keep * h_var + keep * (1.0 - keep) * h_mean.square()) @ w_rec_sq.T
            if self.cell == "tanh":
                h_mean, h_var = vp.tanh(a_mean, a_var)
            elif self.cell == "sigmoid":
                h_mean, h_var = vp.sigmoid(a_mean, a_var)
            else:
                step = lstm_cells.thesis_step_moments if self.cell == "lstm" else lstm_cells.torch_step_moments
                (c_mean, c_var), (h_mean, h_var) = step((a_mean, a_var), (c_mean, c_var))
            means.append(h_mean)
            variances.append(h_var)
        return torch.stack(means), torch.stack(variances)


class FDTanhRecurrence(torch.autograd.Function):
    """The FD-RNN's tanh recurrence (the loop of `FastDropoutRNN._fd_hidden`) with a hand-written backward.

    forward(in_mean, in_var: (T, B, H), w_rec: (H, H), keep: float) -> (h_mean, h_var): (T, B, H).
    The forward runs the same operations as the autograd loop (the same numbers; `variance.tanh_into`
    writes each step's moments in place); the backward is BPTT through `variance.tanh_backward`,
    two (B, H) x (H, H) products per step, and W_rec's gradient as two (H, T*B) x (T*B, H)
    products after the loop. Autograd would record ~25 small operations per step and keep their
    outputs; this keeps four (T, B, H) tensors.
    """

    @staticmethod
    def forward(ctx, in_mean: Tensor, in_var: Tensor, w_rec: Tensor, keep: float) -> tuple[Tensor, Tensor]:
        ctx.keep = keep
        if fused_tanh.enabled(in_mean):  # a GPU: one fused kernel per step (`fused_tanh`)
            a_means, a_vars, means, variances, var_ins = fused_tanh.solo_forward(in_mean, in_var, w_rec, keep)
            ctx.save_for_backward(a_means, a_vars, means, var_ins, w_rec)
            return means, variances
        w_rec_sq = w_rec.square()
        a_means, a_vars = torch.empty_like(in_mean), torch.empty_like(in_var)  # (T, B, H) each
        means, variances = torch.empty_like(in_mean), torch.empty_like(in_var)
        var_ins = torch.empty_like(in_var)  # keep V[h_{t-1}] + keep (1 - keep) E[h_{t-1}]^2, W_rec^2's input
        h_mean = in_mean.new_zeros(in_mean.shape[1:])
        h_var = torch.zeros_like(h_mean)
        noise = keep * (1.0 - keep)
        for t in range(in_mean.shape[0]):
            a_mean = torch.add(in_mean[t], (h_mean @ w_rec.T).mul_(keep), out=a_means[t])
            var_in = torch.add(torch.mul(h_var, keep), h_mean.square().mul_(noise), out=var_ins[t])
            a_var = torch.add(in_var[t], var_in @ w_rec_sq.T, out=a_vars[t])
            h_mean, h_var = vp.tanh_into(a_mean, a_var, means[t], variances[t])
        ctx.save_for_backward(a_means, a_vars, means, var_ins, w_rec)
        return means, variances

    @staticmethod
    def backward(ctx, grad_means: Tensor, grad_variances: Tensor):
        a_means, a_vars, means, var_ins, w_rec = ctx.saved_tensors
        keep = ctx.keep
        if fused_tanh.enabled(a_means):
            grad_a_means, grad_a_vars = fused_tanh.solo_backward(grad_means, grad_variances, a_means, a_vars, means,
                                                                 w_rec, keep)
            return grad_a_means, grad_a_vars, _grad_w(grad_a_means, grad_a_vars, means, var_ins, w_rec, keep), None
        w_rec_sq = w_rec.square()
        grad_a_means, grad_a_vars = torch.empty_like(a_means), torch.empty_like(a_vars)
        grad_h_mean, grad_h_var = grad_means[-1], grad_variances[-1]
        for t in range(a_means.shape[0] - 1, -1, -1):
            grad_a_mean, grad_a_var = vp.tanh_backward_into(a_means[t], a_vars[t], means[t], grad_h_mean, grad_h_var,
                                                            grad_a_means[t], grad_a_vars[t])
            if t == 0:
                break
            grad_var_in = grad_a_var @ w_rec_sq  # gradient of keep h_var + keep (1 - keep) h_mean^2, (B, H)
            grad_h_mean = (grad_means[t - 1] + keep * (grad_a_mean @ w_rec)
                           + (2.0 * keep * (1.0 - keep)) * grad_var_in * means[t - 1])
            grad_h_var = grad_variances[t - 1] + keep * grad_var_in
        return grad_a_means, grad_a_vars, _grad_w(grad_a_means, grad_a_vars, means, var_ins, w_rec, keep), None


def _grad_w(grad_a_means: Tensor, grad_a_vars: Tensor, means: Tensor, var_ins: Tensor, w_rec: Tensor,
            keep: float) -> Tensor:
    """W_rec's gradient over steps t = 1..T-1 of (T, B, H) tensors, as (T-1)*B rows each."""
    rows = lambda x: x.reshape(-1, w_rec.shape[0])  # noqa: E731
    return w_rec_gradient(rows(grad_a_means[1:]), rows(means[:-1]), rows(grad_a_vars[1:]), rows(var_ins[1:]), w_rec,
                          keep)


def w_rec_gradient(grad_mean_rows: Tensor, mean_rows: Tensor, grad_var_rows: Tensor, var_in_rows: Tensor,
                   w_rec: Tensor, keep: float | Tensor) -> Tensor:
    """The FD recurrence's W_rec gradient from rows (..., N, H) of steps t = 1..T-1 (h_0 = 0 adds
    nothing): keep G_mean^T E[h_{t-1}] + 2 W_rec * (G_var^T var_in_t), two products per leading index
    (solo, each stacked member, or all stacked members at once with keep a (K, 1, 1) column)."""
    grad_w = keep * (grad_mean_rows.transpose(-2, -1) @ mean_rows)
    grad_w += 2.0 * w_rec * (grad_var_rows.transpose(-2, -1) @ var_in_rows)
    return grad_w


def reverse_padded(x: Tensor, mask: Tensor) -> Tensor:
    """Reverse each sequence of a padded batch x (T, B, ...) within its own length (mask (T, B)).

    Step t of sequence b goes to L_b - 1 - t; padding stays where it is. Applying it twice is the
    identity.
    """
    steps = x.shape[0]
    lengths = mask.sum(0).long()  # (B,)
    t = torch.arange(steps, device=x.device)[:, None]  # (T, 1)
    index = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # (T, B)
    index = index.reshape(index.shape + (1,) * (x.dim() - 2)).expand_as(x)
    return torch.gather(x, 0, index)


class BidirectionalFD(nn.Module):
    """A biRNN with fast dropout (Section 1.2): one net reads x_1:T forwards, one backwards.

    The output pre-activation is W_f h_f,t + W_b h_b,t + b_f + b_b, i.e. one output layer over
    the concatenated hidden states; under FD the two halves' dropout masks are independent, so
    means and variances add. Both nets take the same constructor arguments as `FastDropoutRNN`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.forward_net = FastDropoutRNN(*args, **kwargs)
        self.backward_net = FastDropoutRNN(*args, **kwargs)

    def initialise(self, *args, **kwargs) -> None:
        self.forward_net.initialise(*args, **kwargs)
        self.backward_net.initialise(*args, **kwargs)

    def moments(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Output pre-activation mean and variance, (T, B, n_out) each."""
        f_mean, f_var = self.forward_net.moments(x)
        b_mean, b_var = self.backward_net.moments(reverse_padded(x, mask))
        return f_mean + reverse_padded(b_mean, mask), f_var + reverse_padded(b_var, mask)
