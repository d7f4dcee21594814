"""Expected best-of-N (Dodge et al., 2019) against its closed form and brute-force enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from seqrep.expected import bootstrap_band, expected_best


def brute_force(valid, test, mode, n):
    """Average, over all N^n ordered draws with replacement, of the test value of the draw with
    the best validation value (ties: the mean test value of the tied trials drawn)."""
    total = 0.0
    draws = list(itertools.product(range(len(valid)), repeat=n))
    for draw in draws:
        values = [valid[i] for i in draw]
        best = min(values) if mode == "min" else max(values)
        tied = sorted({i for i in draw if valid[i] == best})
        total += np.mean([test[i] for i in tied])
    return total / len(draws)


def test_a_small_discrete_example_by_hand():
    # three trials, validation NLL 3, 1, 2 (best: the second), test 30, 10, 20
    valid, test = [3.0, 1.0, 2.0], [30.0, 10.0, 20.0]
    # n = 1: the mean test value; n = 2: P(best is trial 2) = 1 - (2/3)^2 = 5/9, P(trial 3) = (2/3)^2 - (1/3)^2
    # = 3/9, P(trial 1) = 1/9
    assert expected_best(valid, test, "min", 2) == pytest.approx([20.0, (5 * 10 + 3 * 20 + 1 * 30) / 9])
    # maximisation reverses the order: the best is the first trial
    assert expected_best(valid, test, "max", 2)[1] == pytest.approx((5 * 30 + 3 * 20 + 1 * 10) / 9)


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("valid", [[0.3, 0.1, 0.5, 0.2], [0.3, 0.1, 0.3, 0.1]])  # distinct, and with ties
def test_it_equals_brute_force_enumeration(mode, valid):
    test = [4.0, 1.0, 7.0, 2.5]
    curve = expected_best(valid, test, mode, 4)
    assert curve == pytest.approx([brute_force(valid, test, mode, n) for n in range(1, 5)], rel=1e-12)


def test_it_tends_to_the_best_trials_test_value_and_the_band_holds_the_curve():
    rng = np.random.default_rng(1)
    valid, test = rng.normal(size=12), rng.normal(size=12)
    curve = expected_best(valid, test, "min", 400)
    assert curve[-1] == pytest.approx(test[np.argmin(valid)], abs=1e-12)
    low, high = bootstrap_band(valid, test, "min", 12, resamples=300, seed=0)
    assert low.shape == high.shape == (12,) and np.all(low <= high)
    assert np.mean((low <= curve[:12]) & (curve[:12] <= high)) >= 0.9


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="need as many validation as test values"):
        expected_best([1.0, 2.0], [1.0], "min")
