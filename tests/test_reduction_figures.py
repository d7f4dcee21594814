"""Figures 11 and 12's arrays (`trainables.kit.reduction_figures`): nearest neighbours against brute
force, the sequential Jacobian against closed forms, and what a trial keeps."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from trainables.kit import reduction_figures as rf


def test_nearest_neighbours_are_the_brute_force_ones_without_the_pick_and_the_non_finite_rows():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(30, 3))
    e[7] = np.nan
    e[12] = e[4]  # a tie with the pick's neighbour 4: the lower index first
    index, distance = rf.nearest_neighbours(e, np.array([3, 20]))
    for row, dist, p in zip(index, distance, (3, 20)):
        brute = sorted((float(np.linalg.norm(e[j] - e[p])), j) for j in range(30) if j not in (p, 7))[:5]
        assert row.tolist() == [p] + [j for _, j in brute]
        np.testing.assert_allclose(dist, [0.0] + [d for d, _ in brute], rtol=1e-6)
    assert 7 not in index


def test_the_sequential_jacobian_of_a_sum_of_squares_is_its_closed_form():
    """e = A^T sum_t x_t^2 (x_t in R^D): d e_i / d x_t = 2 x_t * A[:, i], so its norm is |2 x_t * A[:, i]|."""
    torch.manual_seed(0)
    x, a = torch.randn(9, 3), torch.randn(3, 5)
    jac = rf.sequential_jacobian(lambda s: (s ** 2).sum(0) @ a, x, [4, 0, 2])
    expected = torch.stack([(2 * x * a[:, i]).norm(dim=1) for i in (4, 0, 2)])
    assert jac.shape == (3, 9) and jac.dtype == np.float32
    np.testing.assert_allclose(jac, expected.numpy(), rtol=1e-6)


def test_max_pooling_attends_to_one_step_and_an_unused_feature_to_none():
    """e_i = max_t x_t[i] (i < D) looks at its argmax step only; a constant feature at no step."""
    x = torch.tensor([[0.0, 5.0], [3.0, -1.0], [1.0, 2.0]])
    jac = rf.sequential_jacobian(lambda s: torch.cat([s.max(0).values, torch.ones(1)]), x, [0, 1, 2])
    np.testing.assert_array_equal(jac, [[0, 1, 0], [1, 0, 0], [0, 0, 0]])


def test_figure_inputs_pick_from_the_seed_and_keep_the_raw_first_dimension():
    rng = np.random.default_rng(1)
    raw = [rng.normal(size=(int(t), 2)).astype(np.float32) for t in rng.integers(4, 9, size=12)]
    seqs = [torch.tensor((r - r.mean(0)) / r.std(0)) for r in raw]  # what the network reads

    def embed_one(s):  # five features: the steps' sum and the first value scaled by 1, 10 and 0.1
        return torch.cat([s.sum(0), s[0, :1] * torch.tensor([1.0, 10.0, 0.1])])

    e = np.stack([embed_one(s).numpy() for s in seqs])
    kept = rf.figure_inputs(embed_one, e, seqs, raw, seed=3)
    picks = np.random.default_rng(3).choice(12, size=2, replace=False)
    assert kept["nn_index"][:, 0].tolist() == picks.tolist() and int(kept["jac_index"]) == picks[0]
    assert kept["jac_features"].tolist() == np.argsort(-e.var(0), kind="stable")[:4].tolist()
    assert kept["jac_features"][0] == 3  # the first value times 10
    for (a, b) in itertools.product(range(2), range(6)):
        series, i = kept["nn_series"][a, b], kept["nn_index"][a, b]
        np.testing.assert_array_equal(series[:len(raw[i])], raw[i][:, 0])
        assert np.isnan(series[len(raw[i]):]).all()
    np.testing.assert_array_equal(kept["jac_sample"], raw[picks[0]])
    assert kept["jac"].shape == (4, len(raw[picks[0]]))
    again = rf.figure_inputs(embed_one, e, seqs, raw, seed=3)
    assert all(np.array_equal(kept[k], again[k], equal_nan=True) for k in kept)
    e[:7] = np.nan  # five finite embeddings: no pick has five neighbours
    assert rf.figure_inputs(embed_one, e, seqs, raw, seed=3) == {}

