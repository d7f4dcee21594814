"""Pooling over time, masked for padded batches: the operator rho of thesis Section 3.3 (Eq. 27).

Every operator maps a time-major batch a (T, B, K) with its mask (T, B) (1 on real steps, 0 on
padding; `trainables.nn.sequences.pad`) to one vector per sequence, e (B, K), using only the real
steps of each sequence:

    max          e_bk = max_{t <= T_b} a_tbk
    sum          e_bk = sum_{t <= T_b} a_tbk
    mean         e_bk = (1 / T_b) sum_{t <= T_b} a_tbk
    stochastic   p_tbk = a+_tbk / sum_{s <= T_b} a+_sbk       (a+ = max(a, 0), Zeiler and Fergus 2013)
                 training:   e_bk = a_{t*, b, k} with t* ~ Categorical(p_.bk), one draw per unit
                 evaluation: e_bk = sum_t p_tbk a_tbk        (the probability-weighted average)

Stochastic pooling needs non-negative activations; the thesis (Section 3.5.2) does not say what
it did with negative ones, so they get probability 0 (clipped), and a unit that is non-positive
over the whole sequence falls back to the uniform distribution over its real steps. Its gradient
flows through the sampled entries only (the choice of t* is not differentiated), as in Zeiler and
Fergus.
"""

from __future__ import annotations

from typing import Literal

import torch

Pooling = Literal["max", "sum", "mean", "stochastic"]
POOLINGS = ("max", "sum", "mean", "stochastic")


def _check(a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if a.dim() != 3 or tuple(mask.shape) != tuple(a.shape[:2]):
        raise ValueError(f"pooling needs a (T, B, K) and mask (T, B), got {tuple(a.shape)} and {tuple(mask.shape)}")
    if bool((mask.sum(0) < 1).any()):
        raise ValueError("every sequence in the batch needs at least one real time step")
    return mask.bool().unsqueeze(-1)  # (T, B, 1)


def stochastic_probabilities(a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """p_tbk of stochastic pooling (module docstring): (T, B, K), zero on padding, sums to 1 over t."""
    real = _check(a, mask)
    weights = torch.where(real, a.clamp(min=0), torch.zeros((), dtype=a.dtype))
    total = weights.sum(0, keepdim=True)
    uniform = real.to(a.dtype).expand_as(a) / mask.sum(0).reshape(1, -1, 1)
    return torch.where(total > 0, weights / total.clamp(min=torch.finfo(a.dtype).tiny), uniform)


def pool(a: torch.Tensor, mask: torch.Tensor, how: Pooling, training: bool = False,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """rho(a_1:T) per sequence: (B, K) from a (T, B, K) and mask (T, B); see the module docstring."""
    real = _check(a, mask)
    if how == "max":
        return torch.where(real, a, torch.full((), -torch.inf, dtype=a.dtype)).max(0).values
    if how == "sum":
        return torch.where(real, a, torch.zeros((), dtype=a.dtype)).sum(0)
    if how == "mean":
        return torch.where(real, a, torch.zeros((), dtype=a.dtype)).sum(0) / mask.sum(0).unsqueeze(-1)
    if how == "stochastic":
        p = stochastic_probabilities(a, mask)
        if not training:
            return (p * torch.where(real, a, torch.zeros((), dtype=a.dtype))).sum(0)
        t, b, k = a.shape
        flat = p.detach().permute(1, 2, 0).reshape(b * k, t)
        if generator is not None and generator.device != a.device:
            generator = None  # a CPU generator cannot draw on a GPU; the global one does
        index = torch.multinomial(flat, 1, generator=generator).reshape(b, k)  # t* per (sequence, unit)
        return a.gather(0, index.unsqueeze(0)).squeeze(0)
    raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {how!r}")
