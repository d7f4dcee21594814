"""SciPy's L-BFGS-B loop without its per-evaluation wrappers: the same iterates, to the bit.

`scipy.optimize.minimize(fun, x0, args, method="L-BFGS-B", jac=True, options=...)` with no bounds
and no callback runs `_lbfgsb.setulb` (compiled) in a short Python loop, but every function
evaluation passes through `MemoizeJac`, `ScalarFunction` and `_ScalarFunctionWrapper` (copies,
comparisons, counters), which for the judges' small logistic regressions costs more than the loss
itself. `minimize` below is that loop (`scipy.optimize._lbfgsb_py._minimize_lbfgsb`) with the
evaluation inlined: the same `setulb` calls on the same arrays, the function evaluated at the same
points cast to x0's dtype (as `ScalarFunction` casts them), the same evaluation count for `maxfun`,
the same stopping rules, and an `OptimizeResult` with the same fields but `hess_inv`.

`minimize_many` runs several such problems at once, each on its own iterates, with one call of a
vectorised function per round of evaluations (the judges fit each member's folds that way).

It is used only on the SciPy versions it was checked against (`VERIFIED_SCIPY`, compared bit for
bit with `scipy.optimize.minimize` in `tests/test_lbfgsb.py`); `available()` says whether it is.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

VERIFIED_SCIPY = frozenset({"1.17.1"})


@functools.cache
def _setulb() -> tuple[Callable, dict, dict] | None:
    """`setulb` and the status and task messages of the verified SciPy, else None."""
    import scipy

    if scipy.__version__ not in VERIFIED_SCIPY:
        return None
    try:
        from scipy.optimize import _lbfgsb
        from scipy.optimize._lbfgsb_py import status_messages, task_messages
    except ImportError:
        return None
    return _lbfgsb.setulb, status_messages, task_messages


def available() -> bool:
    """Whether `minimize` may run (the installed SciPy is a verified version)."""
    return _setulb() is not None


def minimize(fun: Callable[..., tuple[float, np.ndarray]], x0: np.ndarray, args: tuple = (), *, maxiter: int = 15000,
             maxls: int = 20, gtol: float = 1e-5, ftol: float = 2.2204460492503131e-09, maxcor: int = 10,
             maxfun: int = 15000) -> Any:
    """`scipy.optimize.minimize(fun, x0, args, method="L-BFGS-B", jac=True, options=dict(maxiter=...,
    maxls=..., gtol=..., ftol=..., maxcor=..., maxfun=...))` without bounds or callback.

    `fun(x, *args)` returns the loss and its gradient. Raises RuntimeError when SciPy is not a
    verified version (check `available()` first)."""
    steps = _iterates(np.asarray(x0), maxiter=maxiter, maxls=maxls, gtol=gtol, ftol=ftol, maxcor=maxcor, maxfun=maxfun)
    point = next(steps)
    while True:
        try:
            point = steps.send(_evaluate(fun, point, args))
        except StopIteration as done:
            return done.value


def minimize_many(fun: Callable[[np.ndarray, list[int]], tuple[Any, Any]], x0s: list[np.ndarray], **options) -> list:
    """`minimize` of several problems at once, each taking exactly the iterates it takes alone.

    `fun(points, problems)` evaluates the problems numbered `problems` (indices into `x0s`), one
    row of `points` each, and returns their losses and gradients (a row each); it is called with
    every problem that wants an evaluation, so that one vectorised evaluation serves them all
    (problems end after different numbers of evaluations: later calls have fewer rows). The
    options are `minimize`'s; one `OptimizeResult` per problem, in order."""
    steps = [_iterates(np.asarray(x0), **options) for x0 in x0s]
    wanted = {i: next(s) for i, s in enumerate(steps)}
    results: list[Any] = [None] * len(steps)
    while wanted:
        problems = sorted(wanted)
        values, grads = fun(np.stack([wanted[i] for i in problems]), problems)
        wanted = {}
        for i, value, grad in zip(problems, values, grads):
            try:
                wanted[i] = steps[i].send(_checked(value, grad))
            except StopIteration as done:
                results[i] = done.value
    return results


def _iterates(x0: np.ndarray, *, maxiter: int = 15000, maxls: int = 20, gtol: float = 1e-5,
              ftol: float = 2.2204460492503131e-09, maxcor: int = 10, maxfun: int = 15000):
    """SciPy's loop as a generator: yields each point at which it wants the loss (in x0's dtype), is
    sent `(loss, gradient)` as `_evaluate` makes them, and returns the `OptimizeResult`. Checks the
    SciPy version and the options when made, not when first advanced."""
    routines = _setulb()
    if routines is None:
        raise RuntimeError("the lean L-BFGS-B loop is verified only on SciPy " + ", ".join(sorted(VERIFIED_SCIPY)))
    if not maxls > 0:
        raise ValueError('maxls must be positive.')
    return _loop(routines, x0, maxiter, maxls, gtol, ftol, maxcor, maxfun)


def _loop(routines, x0, maxiter, maxls, gtol, ftol, maxcor, maxfun):
    setulb, status_messages, task_messages = routines
    from scipy.optimize import OptimizeResult

    x0 = x0.ravel()
    n, = x0.shape
    m, factr = maxcor, ftol / np.finfo(float).eps
    dtype = x0.dtype if np.issubdtype(x0.dtype, np.floating) else np.float64  # ScalarFunction's x dtype
    at = x0.astype(dtype)  # ScalarFunction evaluates at x0 when it is made
    f, grad = yield at
    nfev = 1  # and as many gradients: ScalarFunction's njev is its nfev here

    nbd = np.zeros(n, np.int32)
    low_bnd, upper_bnd = np.zeros(n, np.float64), np.zeros(n, np.float64)
    x = np.array(x0, dtype=np.float64)
    f_arg, g = np.array(0.0, dtype=np.float64), np.zeros((n,), dtype=np.float64)
    wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m, np.float64)
    iwa = np.zeros(3 * n, dtype=np.int32)
    task, ln_task = np.zeros(2, dtype=np.int32), np.zeros(2, dtype=np.int32)
    lsave, isave, dsave = np.zeros(4, dtype=np.int32), np.zeros(44, dtype=np.int32), np.zeros(29, np.float64)
    n_iterations = 0
    while True:
        g = g.astype(np.float64)
        setulb(m, x, low_bnd, upper_bnd, nbd, f_arg, g, factr, gtol, wa, iwa, task, lsave, isave, dsave, maxls,
               ln_task)
        if task[0] == 3:
            if not (x == at).all():  # ScalarFunction.fun_and_grad's cache (np.array_equal of equal shapes)
                at = x.astype(dtype)
                f, grad = yield at
                nfev += 1
            f_arg, g = f, grad
        elif task[0] == 1:
            n_iterations += 1
            if n_iterations >= maxiter:
                task[0], task[1] = 5, 504
            elif nfev > maxfun:
                task[0], task[1] = 5, 502
        else:
            break
    if task[0] == 4:
        warnflag = 0
    elif nfev > maxfun or n_iterations >= maxiter:
        warnflag = 1
    else:
        warnflag = 2
    msg = status_messages[task[0]] + ": " + task_messages[task[1]]
    return OptimizeResult(fun=f_arg, jac=g, nfev=nfev, njev=nfev, nit=n_iterations, status=warnflag, message=msg,
                          x=x, success=(warnflag == 0))


def _evaluate(fun: Callable, x: np.ndarray, args: tuple) -> tuple[Any, np.ndarray]:
    """What `ScalarFunction` makes of `fun(x)` (through `MemoizeJac`): a scalar loss, a 1-d gradient."""
    return _checked(*fun(np.copy(x), *args))


def _checked(value: Any, grad: Any) -> tuple[Any, np.ndarray]:
    if not np.isscalar(value):
        try:
            value = np.asarray(value).item()
        except (TypeError, ValueError) as e:
            raise ValueError("The user-provided objective function must return a scalar value.") from e
    return value, np.atleast_1d(grad)
