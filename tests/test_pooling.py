"""Pooling over time (thesis Section 3.3, `trainables.nn.pooling`) against brute-force loops over
each sequence's own steps, in padded batches; stochastic pooling's draws against its probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainables.nn.pooling import pool, stochastic_probabilities
from trainables.nn.sequences import pad


def ragged(seed: int = 0, lengths=(5, 1, 3, 7), k: int = 4, positive: bool = False):
    rng = np.random.default_rng(seed)
    seqs = [rng.normal(size=(n, k)).astype(np.float32) for n in lengths]
    if positive:
        seqs = [np.abs(s) + 0.01 for s in seqs]
    a, mask = pad(seqs)
    # padding holds garbage that must never count
    a = torch.where(mask.bool().unsqueeze(-1), a, torch.full_like(a, 1e6))
    return seqs, a, mask


@pytest.mark.parametrize("how,reference", [
    ("max", lambda s: s.max(0)),
    ("sum", lambda s: s.sum(0)),
    ("mean", lambda s: s.mean(0)),
])
def test_deterministic_pooling_matches_each_sequence(how, reference):
    seqs, a, mask = ragged()
    e = pool(a, mask, how)
    assert e.shape == (len(seqs), 4)
    for b, s in enumerate(seqs):
        np.testing.assert_allclose(e[b].numpy(), reference(s.astype(np.float64)), rtol=1e-6, atol=1e-6)


def test_stochastic_probabilities_and_evaluation_average_by_brute_force():
    seqs, a, mask = ragged(lengths=(4, 2, 6))
    p = stochastic_probabilities(a, mask)
    e = pool(a, mask, "stochastic", training=False)
    for b, s in enumerate(seqs):
        for k in range(s.shape[1]):
            w = [max(float(v), 0.0) for v in s[:, k]]
            total = sum(w)
            probs = [v / total for v in w] if total > 0 else [1 / len(w)] * len(w)
            np.testing.assert_allclose(p[: len(s), b, k].numpy(), probs, rtol=1e-6, atol=1e-7)
            assert float(p[len(s):, b, k].abs().sum()) == 0.0  # padding never drawn
            expected = sum(q * float(v) for q, v in zip(probs, s[:, k]))
            assert math.isclose(float(e[b, k]), expected, rel_tol=1e-5, abs_tol=1e-6)


def test_stochastic_all_negative_unit_falls_back_to_uniform():
    a = torch.tensor([[[-1.0]], [[-2.0]], [[5.0]]])  # (T=3, B=1, K=1), last step is padding
    mask = torch.tensor([[1.0], [1.0], [0.0]])
    p = stochastic_probabilities(a, mask)
    assert p[:, 0, 0].tolist() == [0.5, 0.5, 0.0]


def test_stochastic_sampling_frequencies_match_probabilities():
    """Monte Carlo: 20000 draws per unit; each frequency within 5 standard errors of its p
    (sqrt(p(1-p)/n) <= 0.0036, so the tolerance is at most 0.018); a failure by chance has
    probability below 1e-5 per cell."""
    seqs, a, mask = ragged(seed=3, lengths=(4, 6), k=3, positive=True)
    p = stochastic_probabilities(a, mask)
    n = 20000
    counts = torch.zeros_like(a, dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    reps = torch.cat([a] * n, dim=1)  # n copies of the batch in one call
    masks = torch.cat([mask] * n, dim=1)
    e = pool(reps, masks, "stochastic", training=True, generator=g).reshape(n, a.shape[1], a.shape[2])
    for b, s in enumerate(seqs):
        for k in range(a.shape[2]):
            for t in range(len(s)):
                counts[t, b, k] = float((e[:, b, k] == a[t, b, k]).sum())  # entries are distinct floats
    freq = counts / n
    se = torch.sqrt(p.double() * (1 - p.double()) / n)
    assert torch.all((freq - p.double()).abs() <= 5 * se + 1e-12), (freq - p.double()).abs().max()
    assert torch.all(freq[mask == 0] == 0)


def test_stochastic_training_draw_is_one_of_the_units_own_values_and_carries_gradient():
    seqs, a, mask = ragged(seed=1, lengths=(3, 5), positive=True)
    a = a.clone().requires_grad_(True)
    e = pool(a, mask, "stochastic", training=True, generator=torch.Generator().manual_seed(0))
    e.sum().backward()
    # exactly one time step per (sequence, unit) receives the gradient 1, and it is a real step
    assert torch.equal(a.grad.sum(0), torch.ones(2, 4))
    assert float(a.grad[mask == 0].abs().sum()) == 0.0


def test_max_pooling_gradient_goes_to_the_argmax_of_real_steps_only():
    seqs, a, mask = ragged(lengths=(2, 4))
    a = a.clone().requires_grad_(True)
    pool(a, mask, "max").sum().backward()
    for b, s in enumerate(seqs):
        arg = s.argmax(0)
        for k in range(4):
            assert float(a.grad[arg[k], b, k]) == 1.0
    assert float(a.grad[mask == 0].abs().sum()) == 0.0


def test_bad_shapes_and_empty_sequences_are_refused():
    with pytest.raises(ValueError, match="pooling needs a"):
        pool(torch.zeros(3, 2), torch.ones(3, 2), "max")
    with pytest.raises(ValueError, match="at least one real time step"):
        pool(torch.zeros(3, 2, 1), torch.tensor([[1.0, 0.0]] * 3) * torch.tensor([[1.0], [1.0], [1.0]]) * 0, "sum")
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool(torch.zeros(3, 2, 1), torch.ones(3, 2), "median")
