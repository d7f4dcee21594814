"""The heteroscedastic toy regression problem of Le et al. (2005), thesis Section 2.6.3.1.

    mu(x)      = 2 (exp(-30 (x - 1/4)^2) + sin(pi x^2))
    sigma^2(x) = exp(sin(2 pi x))
    x ~ U[-0.1, 1],   z | x ~ N(mu(x), sigma^2(x))

The thesis uses 50 points for training, 10 for validation and 50 for testing ("very few data", a
setting not tailored towards neural networks) and reports the NN, DN, FD, IVN and FAWN rows of
Table 7 on them. It does not publish the points, so `generate` draws them from a fixed seed
(`TOY_SEED`): every study, and every trial within it, sees the same 110 points, and the rows we
produce are compared on identical data. The thesis's exact numbers depend on its unpublished draw;
expect ours to differ by the sampling noise of 50 test points.
"""

from __future__ import annotations

import numpy as np

from seqrep.data.base import RegressionData

# Fixed once for the project (the year of Le et al.); its value is arbitrary, that it never
# changes is what matters: changing it changes every toy result.
TOY_SEED = 2005
X_LOW, X_HIGH = -0.1, 1.0


def mean(x: np.ndarray) -> np.ndarray:
    """mu(x) = 2 (exp(-30 (x - 1/4)^2) + sin(pi x^2)), the conditional mean of z."""
    x = np.asarray(x, dtype=np.float64)
    return 2.0 * (np.exp(-30.0 * (x - 0.25) ** 2) + np.sin(np.pi * x**2))


def variance(x: np.ndarray) -> np.ndarray:
    """sigma^2(x) = exp(sin(2 pi x)), the conditional variance of z."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(np.sin(2.0 * np.pi * x))


def sample(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n pairs (x, z), each a float32 array of shape (n, 1): x uniform, z from N(mu(x), sigma^2(x))."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got n={n}")
    x = rng.uniform(X_LOW, X_HIGH, size=(n, 1))
    z = rng.normal(mean(x), np.sqrt(variance(x)))
    return x.astype(np.float32), z.astype(np.float32)


def generate(n_train: int = 50, n_valid: int = 10, n_test: int = 50, seed: int = TOY_SEED) -> RegressionData:
    """The toy data set with the thesis's split sizes (50/10/50), drawn from `seed`.

    The splits are drawn one after the other from one generator, so the training points do not
    depend on how many validation or test points are asked for.
    """
    rng = np.random.default_rng(seed)
    x_train, y_train = sample(n_train, rng)
    x_valid, y_valid = sample(n_valid, rng)
    x_test, y_test = sample(n_test, rng)
    return RegressionData("toy", x_train, y_train, x_valid, y_valid, x_test, y_test,
                          x_range=(X_LOW, X_HIGH), true_mean=mean, true_variance=variance)
