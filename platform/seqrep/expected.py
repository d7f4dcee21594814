"""Expected best-of-N: what the validation-selected best trial of n random trials would score.

Dodge et al. (2019), "Show Your Work: Improved Reporting of Experimental Results", estimate the
expected maximum validation performance after n random-search trials from the N trials a search
ran, treating them as the empirical distribution of a trial and drawing n of them with
replacement. We report the *test* value of the trial that validation selects, which answers
"how many trials would the thesis's number have taken?". With the N trials ordered from the worst
to the best validation value (ranks 1..N), the best of n draws is rank i with probability

    P(i) = (i / N)^n - ((i - 1) / N)^n,      so      E_n[test] = sum_i P(i) * test_(i).

Trials whose validation values tie are one group: the group is selected with the summed
probability of its ranks, and within it each trial is equally likely (a uniform tie-break), so the
group contributes its mean test value. The band is a percentile bootstrap: the N trials resampled
with replacement, the curve recomputed, its 2.5 and 97.5 percentiles per n.
"""

from __future__ import annotations

import numpy as np


def _order(valid: np.ndarray, test: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Group sizes and mean test values of the tie groups, from the worst validation to the best."""
    key = -valid if mode == "min" else valid  # ascending key: worst first
    order = np.argsort(key, kind="stable")
    key, test = key[order], test[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    sizes = np.diff(np.r_[starts, len(key)])
    means = np.add.reduceat(test, starts) / sizes
    return sizes, means


def expected_best(valid, test, mode: str, max_n: int | None = None) -> np.ndarray:
    """E_n[test of the validation-best of n draws] for n = 1 .. max_n (default N)."""
    valid, test = np.asarray(valid, dtype=float), np.asarray(test, dtype=float)
    if valid.shape != test.shape or valid.ndim != 1 or len(valid) == 0:
        raise ValueError(f"need as many validation as test values, at least one; got {valid.shape}, {test.shape}")
    sizes, means = _order(valid, test, mode)
    upper = np.cumsum(sizes) / len(valid)  # fraction of trials at or below each group
    lower = upper - sizes / len(valid)
    ns = np.arange(1, (max_n or len(valid)) + 1)[:, None]
    return ((upper ** ns - lower ** ns) * means).sum(axis=1)


def bootstrap_band(valid, test, mode: str, max_n: int | None = None, resamples: int = 1000,
                   seed: int = 0, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap band of `expected_best` (the trials resampled with replacement)."""
    valid, test = np.asarray(valid, dtype=float), np.asarray(test, dtype=float)
    rng = np.random.default_rng(seed)
    n = len(valid)
    curves = np.stack([expected_best(valid[idx], test[idx], mode, max_n or n)
                       for idx in rng.integers(0, n, size=(resamples, n))])
    tail = (1 - level) / 2 * 100
    return np.percentile(curves, tail, axis=0), np.percentile(curves, 100 - tail, axis=0)
