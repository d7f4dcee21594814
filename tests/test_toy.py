"""The toy data set of Section 2.6.3.1 (Le et al., 2005): split sizes, seeding, and that the samples
follow mu(x) and sigma^2(x), checked by Monte Carlo against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize

import seqrep.data
from seqrep.data import toy


def test_generate_has_the_thesis_splits_on_the_input_range():
    data = toy.generate()
    assert data.name == "toy"
    for split, n in (("train", 50), ("valid", 10), ("test", 50)):
        x, z = data.split(split)
        assert x.shape == (n, 1) and z.shape == (n, 1)
        assert x.dtype == np.float32 and z.dtype == np.float32
        assert x.min() >= -0.1 and x.max() <= 1.0


def test_registry_loads_the_fixed_seed_draw():
    loaded, direct = seqrep.data.load("toy"), toy.generate(seed=toy.TOY_SEED)
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(loaded.split(split)[0], direct.split(split)[0])
        np.testing.assert_array_equal(loaded.split(split)[1], direct.split(split)[1])


def test_same_seed_same_points_different_seed_different_points():
    a, b, c = toy.generate(seed=7), toy.generate(seed=7), toy.generate(seed=8)
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(a.split(split)[0], b.split(split)[0])
        np.testing.assert_array_equal(a.split(split)[1], b.split(split)[1])
        assert not np.array_equal(a.split(split)[0], c.split(split)[0])
        assert not np.array_equal(a.split(split)[1], c.split(split)[1])


def test_training_points_do_not_depend_on_the_test_size():
    np.testing.assert_array_equal(toy.generate(n_test=5).x_train, toy.generate().x_train)
    np.testing.assert_array_equal(toy.generate(n_test=5).y_train, toy.generate().y_train)


def test_mean_and_variance_closed_forms():
    # x = 1/4 zeroes the bump's exponent and makes sin(2 pi x) = 1.
    assert toy.mean(0.25) == pytest.approx(2 * (1 + math.sin(math.pi / 16)), rel=1e-12)
    assert toy.mean(0.0) == pytest.approx(2 * math.exp(-30 / 16), rel=1e-12)
    assert toy.variance_printed(0.25) == pytest.approx(math.e, rel=1e-12)
    assert toy.variance_printed(0.0) == pytest.approx(1.0, rel=1e-12)
    assert toy.variance_printed(0.75) == pytest.approx(math.exp(-1), rel=1e-12)
    # the standard-deviation reading squares exp(sin 2 pi x)
    assert toy.variance_sd(0.25) == pytest.approx(math.e**2, rel=1e-12)
    assert toy.variance_sd(0.75) == pytest.approx(math.exp(-2), rel=1e-12)
    assert toy.variance is toy.variance_sd


def test_the_two_readings_share_x_and_the_standard_normal_draws():
    """Same seed: identical x, and (z - mu) scaled by exactly the ratio of the standard deviations,
    exp(sin(2 pi x)) / exp(sin(2 pi x) / 2) = exp(sin(2 pi x) / 2), up to float32 rounding."""
    sd, printed = seqrep.data.load("toy"), seqrep.data.load("toy-printed")
    assert (sd.name, printed.name) == ("toy", "toy-printed")
    for split in ("train", "valid", "test"):
        (x, z_sd), (x_p, z_p) = sd.split(split), printed.split(split)
        np.testing.assert_array_equal(x, x_p)
        mu = toy.mean(x.astype(np.float64))
        ratio = np.exp(np.sin(2 * np.pi * x.astype(np.float64)) / 2)
        np.testing.assert_allclose(z_sd - mu, (z_p - mu) * ratio, rtol=0, atol=2e-5)
    assert sd.true_variance is toy.variance_sd and printed.true_variance is toy.variance_printed


def floor(k: int) -> float:
    """E[exp(k sin(2 pi X))], X ~ U[-0.1, 1], by quadrature."""
    return integrate.quad(lambda x: math.exp(k * math.sin(2 * math.pi * x)), -0.1, 1.0)[0] / 1.1


@pytest.mark.parametrize("reading,k,best_mse,sd_over_50", [("printed", 1, 1.22, 0.31), ("sd", 2, 2.12, 0.73)])
def test_best_possible_test_mse_of_each_reading(reading, k, best_mse, sd_over_50):
    """The Bayes MSE is the mean noise variance; over 50 test points its spread is
    sqrt((3 E[s^4] - E[s^2]^2) / 50) (E[eps^4] = 3). These are the numbers the README quotes; the
    sample mean of 2e5 draws checks the quadrature within 5 standard errors."""
    assert floor(k) == pytest.approx(best_mse, abs=0.006)
    assert math.sqrt((3 * floor(2 * k) - floor(k) ** 2) / 50) == pytest.approx(sd_over_50, abs=0.006)
    x, z = toy.sample(200_000, np.random.default_rng(3), reading)
    squared = (z[:, 0].astype(np.float64) - toy.mean(x[:, 0].astype(np.float64))) ** 2
    assert abs(squared.mean() - floor(k)) < 5 * squared.std() / math.sqrt(len(squared))


def test_nn_row_of_table7_implies_the_standard_deviation_reading():
    """NN's NLL uses a variance v fitted on training residuals: 0.5 log(2 pi v) + MSE / (2 v) = NLL
    with Table 7's MSE 4.2395 and NLL 2.2694 has the roots v = 2.24 and 9.56; 2.24 is the training
    MSE of a net near the SD reading's floor (2.12), far above the printed one's (1.22)."""
    g = lambda v: 0.5 * math.log(2 * math.pi * v) + 4.2395 / (2 * v) - 2.2694  # noqa: E731
    assert optimize.brentq(g, 0.5, 4.2395) == pytest.approx(2.24, abs=0.005)
    assert optimize.brentq(g, 4.2395, 50.0) == pytest.approx(9.56, abs=0.005)


@pytest.mark.parametrize("reading", ["sd", "printed"])
def test_samples_follow_the_conditional_mean_and_variance(reading):
    """200k samples in 10 x-bins of width 0.11 (~20k each).

    Given the x's that fell into a bin, the z's are independent N(mu(x_i), sigma^2(x_i)), so
      E[mean z]      = avg mu(x_i)                        with sd sqrt(avg sigma^2(x_i) / n_b),
      E[var z]      ~= avg sigma^2(x_i) + var mu(x_i)     (the within-bin spread of mu adds to it),
    the latter's standard error estimated from the data as sd((z - zbar)^2) / sqrt(n_b). With
    ~20k points per bin the CLT holds well; at 5 standard errors a single comparison fails with
    probability ~6e-7 and any of the 30 below with ~2e-5. The check has power: with this draw,
    sigma^2 = exp(-sin(2 pi x)) misses in every bin (by 5 to 575 standard errors) and mu + 0.1
    misses in every bin (by 8 to 24).
    """
    n = 200_000
    x, z = toy.sample(n, np.random.default_rng(12345), reading)
    x, z = x[:, 0].astype(np.float64), z[:, 0].astype(np.float64)
    assert x.min() >= -0.1 and x.max() < 1.0
    edges = np.linspace(-0.1, 1.0, 11)
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (x >= lo) & (x < hi)
        n_b = int(inside.sum())
        # uniform x: each bin holds a tenth, binomial standard error sqrt(p (1 - p) / n)
        assert abs(n_b / n - 0.1) < 5 * math.sqrt(0.1 * 0.9 / n), (lo, hi, n_b)
        xb, zb = x[inside], z[inside]
        mu, s2 = toy.mean(xb), toy.READINGS[reading](xb)
        expected_mean, expected_var = mu.mean(), s2.mean() + mu.var()
        se_mean = math.sqrt(s2.mean() / n_b)
        se_var = ((zb - zb.mean()) ** 2).std() / math.sqrt(n_b)
        assert abs(zb.mean() - expected_mean) < 5 * se_mean, (lo, hi, zb.mean(), expected_mean, se_mean)
        assert abs(zb.var() - expected_var) < 5 * se_var, (lo, hi, zb.var(), expected_var, se_var)


def test_sample_rejects_a_negative_size():
    with pytest.raises(ValueError, match="n must be >= 0, got n=-1"):
        toy.sample(-1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="reading must be one of sd, printed, got 'var'"):
        toy.sample(1, np.random.default_rng(0), "var")
