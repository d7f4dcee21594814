"""Initialisation of recurrent nets: sparse initialisation (ν) and the spectral radius (ρ).

Thesis Section 2.5.2: "we set all but a few parameters to zero (Sutskever et al., 2013)", the row
"ν: 15, 25, 35, 50 or no" of Table 1 (and "ν 14 ... 200" of Table 4) among the initialisation
rows; Section 1.3.3: the recurrent matrix rescaled to spectral radius ρ.

`sparsify_columns` follows climin's `initialize.sparsify_columns(arr, n_non_zero)`
(BRML/climin, climin/initialize.py, commit 2215b1abb5906a98ba95b868072b5f4f66b11679): for each
receiving unit it picks `fan_in - ν` of the unit's incoming weights at random, without
replacement, and multiplies them by 0; the kept weights keep the values they were drawn with
(nothing is redrawn). breze computes `dot(h, W)` with W of shape (in, out), so climin's columns
are the receiving units; torch's weights are (out, in), so here each *row* keeps ν non-zeros.

Where this is a choice the sources leave open:

- ν at or above a unit's fan-in leaves that matrix dense (climin would fail: it cannot choose a
  negative number of zeros). Table 4's range 14 ... 200 meets LSTMs of 100 units, whose recurrent
  matrix then stays dense whenever ν >= 100.
- Order: draw, sparsify, then set the spectral radius, so that ρ holds exactly after
  initialisation. That is the order of breze's plain RNN (`breze/learn/rnn.py`,
  `SupervisedRnn.initialize`) and of its FD-RNN before commit 9069d21613a7 ("changed order of
  inits", 2015-05-05); later breze versions of `SupervisedFastDropoutRnn.initialize` set ρ first
  and sparsified afterwards, which leaves the radius below ρ.
- Seeded: the zeros are chosen by a `torch.Generator` (climin used Python's `random` unless given
  a `RandomState`), so the same seed gives the same pattern.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor


def set_spectral_radius(weight: Tensor, rho: float) -> None:
    """Rescale a square matrix in place so that its largest absolute eigenvalue is rho (Section 1.3.3)."""
    radius = torch.linalg.eigvals(weight.detach().double()).abs().max().item()
    if radius > 0:
        with torch.no_grad():
            weight.mul_(rho / radius)


def in_threads(function: Callable[..., Any], *iterables: Iterable) -> list:
    """`list(map(function, *iterables))` in parallel threads, one per core this process may use:
    for initialisations that each draw from their own generator (and spend their time in LAPACK's
    eigenvalue problems, `set_spectral_radius`, and in sorting, without the GIL), so that they
    give the weights of the same calls one after another."""
    calls = list(zip(*iterables))
    if len(calls) < 2:
        return [function(*args) for args in calls]
    with ThreadPoolExecutor(min(len(calls), len(os.sched_getaffinity(0)))) as pool:
        return list(pool.map(lambda args: function(*args), calls))


def sparsify_columns(weight: Tensor, nu: int | None, generator: torch.Generator | None = None) -> None:
    """Keep nu incoming weights per receiving unit of `weight` (out, in), zero the rest, in place.

    nu None ("no" in Table 1) or nu >= in (the fan-in) leaves the matrix dense. Each row keeps
    min(nu, in) entries chosen uniformly without replacement (a random permutation per row: the
    argsort of uniform draws); the kept entries are not changed.
    """
    if nu is None:
        return
    if nu < 1:
        raise ValueError(f"sparse initialisation keeps nu >= 1 weights per unit, but got nu={nu}")
    n_out, n_in = weight.shape
    if nu >= n_in:
        return
    scores = torch.rand(n_out, n_in, generator=generator)
    zeros = scores.argsort(dim=1)[:, : n_in - nu]  # (out, in - nu): the weights each unit loses
    mask = torch.ones(n_out, n_in, dtype=weight.dtype).scatter_(1, zeros, 0.0)
    with torch.no_grad():
        weight.mul_(mask.to(weight.device))
