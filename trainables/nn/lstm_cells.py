"""One step of an LSTM cell, deterministic and with propagated moments (Sections 1.3.4, 2.4.2.1).

Two cells, both without peepholes, both reading a pre-synaptic activation a_t in R^{4H}:

- The thesis's cell (`thesis_step`, `thesis_step_moments`; `cell: lstm`): Section 1.3.4 splits
  [xi_t iota_t nu_t o_t] = a_t and writes s_t = sigma(iota_t) xi_t + sigma(nu_t) s_{t-1}: the cell
  input xi is *not* squashed. Its output is read from breze's fast-dropout LSTM, the code behind
  FD-LSTM (breze-no-salt/breze, breze/arch/component/varprop/transfer.py, `lstm`, commit
  c0d5d2b2fc5f3cbeb7134e0e154cc53114f587fc): y_t = sigma(s_t) * sigma(o_t), the state squashed by
  a sigmoid, then gated; chunk order xi, iota (input gate), nu (forget gate), o (output gate). The
  thesis prints y_t = sigma(phi(o_t, s_t)) = sigma(sigma(o_t) s_t), the squashing outside the
  gate; breze's order is the one the experiments ran. Moments: sigmoid gates by Wang and
  Manning's approximation (`variance.sigmoid`), the gating products by Eqs. (14)/(15)
  (`variance.product`), the two summands of s_t independent (they add).
- torch's cell (`torch_step_moments`; `cell: torch-lstm`, a non-thesis option that runs cuDNN
  without dropout): gate order i, f, g, o, c_t = sigma(f) c_{t-1} + sigma(i) tanh(g),
  h_t = sigma(o) tanh(c_t). breze's *plain* LSTM transfer (breze/arch/component/transfer.py, `lstm`,
  same commit) has this form too.

With zero input variance every moment rule here is exact (`variance` returns sigma(m) and 0), so
the moment steps equal the deterministic ones.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trainables.nn import variance as vp

Moments = tuple[Tensor, Tensor]


def thesis_step(a: Tensor, s_prev: Tensor) -> tuple[Tensor, Tensor]:
    """(s_t, y_t) of the thesis's cell from a_t (B, 4H) and s_{t-1} (B, H)."""
    xi, iota, nu, o = a.chunk(4, -1)
    s = torch.sigmoid(iota) * xi + torch.sigmoid(nu) * s_prev
    return s, torch.sigmoid(s) * torch.sigmoid(o)


def thesis_step_moments(a: Moments, s_prev: Moments) -> tuple[Moments, Moments]:
    """Moments of (s_t, y_t) of the thesis's cell, given those of a_t (B, 4H) and s_{t-1} (B, H)."""
    (xi_m, iota_m, nu_m, o_m), (xi_v, iota_v, nu_v, o_v) = a[0].chunk(4, -1), a[1].chunk(4, -1)
    write_m, write_v = vp.product(*vp.sigmoid(iota_m, iota_v), xi_m, xi_v)
    keep_m, keep_v = vp.product(*vp.sigmoid(nu_m, nu_v), *s_prev)
    s = (write_m + keep_m, write_v + keep_v)  # independent summands add (Eqs. 12, 13)
    return s, vp.product(*vp.sigmoid(*s), *vp.sigmoid(o_m, o_v))


def thesis_hidden(a_in: Tensor, w_rec: Tensor) -> Tensor:
    """y_1:T (T, B, H) of the deterministic thesis cell; a_in (T, B, 4H) the input part of a_t."""
    y = a_in.new_zeros(a_in.shape[1], w_rec.shape[1])
    s = torch.zeros_like(y)
    outputs = []
    for a_in_t in a_in.unbind(0):  # not a_in[t]: each indexing's backward writes a zero (T, B, 4H) tensor
        s, y = thesis_step(a_in_t + y @ w_rec.T, s)
        outputs.append(y)
    return torch.stack(outputs)


def torch_step_moments(a: Moments, c_prev: Moments) -> tuple[Moments, Moments]:
    """Moments of (c_t, h_t) of torch's LSTM cell (gates i, f, g, o; tanh cell input and output)."""
    (i_m, f_m, g_m, o_m), (i_v, f_v, g_v, o_v) = a[0].chunk(4, -1), a[1].chunk(4, -1)
    keep_m, keep_v = vp.product(*vp.sigmoid(f_m, f_v), *c_prev)
    write_m, write_v = vp.product(*vp.sigmoid(i_m, i_v), *vp.tanh(g_m, g_v))
    c = (keep_m + write_m, keep_v + write_v)
    return c, vp.product(*vp.sigmoid(o_m, o_v), *vp.tanh(*c))
