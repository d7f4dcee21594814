"""The lean L-BFGS-B loop (`trainables.kit.lbfgsb`) against `scipy.optimize.minimize`, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import scipy
from scipy import optimize

from trainables.kit import lbfgsb

verified = pytest.mark.skipif(not lbfgsb.available(),
                              reason=f"the lean L-BFGS-B loop is not verified on SciPy {scipy.__version__}")


def _logistic(w, x, y, l2):
    """A binary logistic loss in x's dtype, with its gradient."""
    z = x @ w[:-1].astype(x.dtype) + w[-1].astype(x.dtype)
    p = 1.0 / (1.0 + np.exp(-z))
    loss = float(np.mean(np.logaddexp(0, z) - y * z) + 0.5 * l2 * float(w[:-1] @ w[:-1]))
    g = np.empty_like(w, dtype=x.dtype)
    g[:-1] = x.T @ (p - y) / len(y) + l2 * w[:-1].astype(x.dtype)
    g[-1] = np.mean(p - y)
    return loss, g


def _rosenbrock(w):
    return optimize.rosen(w), optimize.rosen_der(w)


def _same(lean, reference):
    assert lean.x.dtype == reference.x.dtype and lean.x.tobytes() == reference.x.tobytes()
    for key in ("fun", "nit", "nfev", "njev", "status", "success", "message"):
        assert lean[key] == reference[key], key
    assert lean.jac.tobytes() == reference.jac.tobytes()


@verified
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(4))
def test_logistic_fits_take_the_same_iterates_as_scipy(dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(24, 16)).astype(dtype)
    y = (rng.random(24) < 0.5).astype(dtype)
    w0 = np.zeros(17, dtype=dtype)
    options = {"maxiter": 1000, "maxls": 50, "gtol": 1e-4, "ftol": 64 * np.finfo(float).eps}
    reference = optimize.minimize(_logistic, w0, args=(x, y, 1 / 24), method="L-BFGS-B", jac=True, options=options)
    lean = lbfgsb.minimize(_logistic, w0, (x, y, 1 / 24), **options)
    _same(lean, reference)
    assert reference.nit > 5 and reference.status == 0


@verified
@pytest.mark.parametrize("maxiter, maxfun, status", [(7, 15000, 1), (1000, 9, 1), (15000, 15000, 0)])
def test_the_stopping_rules_are_scipys(maxiter, maxfun, status):
    """Rosenbrock from (-1.2, 1, -0.5, 2): stopped by maxiter, by maxfun, or converged."""
    w0 = np.array([-1.2, 1.0, -0.5, 2.0])
    options = {"maxiter": maxiter, "maxfun": maxfun, "maxls": 20, "gtol": 1e-8}
    reference = optimize.minimize(_rosenbrock, w0, method="L-BFGS-B", jac=True, options=options)
    lean = lbfgsb.minimize(_rosenbrock, w0, **options)
    _same(lean, reference)
    assert lean.status == status


@verified
def test_problems_minimised_together_take_each_its_own_iterates():
    """`minimize_many`: each problem's result is its `minimize` result to the bit; problems that end
    earlier leave the later evaluations (fewer rows), and a problem's rows are its own."""
    rng = np.random.default_rng(11)
    problems = []
    for scale in (0.1, 1.0, 4.0, 0.5, 2.0):  # separations that need different numbers of evaluations
        x = rng.normal(size=(24, 16)).astype(np.float32)
        y = (rng.random(24) < 0.5).astype(np.float32)
        problems.append((x + scale * y[:, None], y))
    options = {"maxiter": 1000, "maxls": 50, "gtol": 1e-4, "ftol": 64 * np.finfo(float).eps}
    rows = []

    def losses(points, indices):
        rows.append(list(indices))
        pairs = [_logistic(w, *problems[i], 1 / 24) for w, i in zip(points, indices)]
        return [f for f, _ in pairs], [g for _, g in pairs]

    together = lbfgsb.minimize_many(losses, [np.zeros(17, np.float32)] * len(problems), **options)
    alone = [lbfgsb.minimize(_logistic, np.zeros(17, np.float32), (x, y, 1 / 24), **options) for x, y in problems]
    for a, b in zip(together, alone):
        _same(a, b)
    assert len({r.nfev for r in alone}) > 1 and rows[0] == list(range(len(problems)))
    assert len(rows) == max(r.nfev for r in alone) and len(rows[-1]) < len(problems)
    assert [sum(i in r for r in rows) for i in range(len(problems))] == [r.nfev for r in alone]


@verified
def test_a_function_called_with_a_copy_it_may_overwrite():
    def spoiling(w):
        loss, grad = _rosenbrock(w)
        w[:] = 1e9  # the loop's own x must not change
        return loss, grad

    w0 = np.array([-1.2, 1.0])
    reference = optimize.minimize(spoiling, w0, method="L-BFGS-B", jac=True)
    _same(lbfgsb.minimize(spoiling, w0), reference)


@verified
def test_a_non_scalar_loss_is_refused_with_scipys_message():
    with pytest.raises(ValueError, match="^The user-provided objective function must return a scalar value.$"):
        lbfgsb.minimize(lambda w: (w, w), np.zeros(3))


def test_an_unverified_scipy_refuses_to_run(monkeypatch):
    monkeypatch.setattr(lbfgsb, "VERIFIED_SCIPY", frozenset())
    lbfgsb._setulb.cache_clear()
    try:
        assert not lbfgsb.available()
        with pytest.raises(RuntimeError, match="^the lean L-BFGS-B loop is verified only on SciPy $"):
            lbfgsb.minimize(_rosenbrock, np.zeros(2))
    finally:
        monkeypatch.undo()
        lbfgsb._setulb.cache_clear()
    assert lbfgsb.available() == (scipy.__version__ in lbfgsb.VERIFIED_SCIPY)
