"""scikit-learn's judging logistic regression, computed without its per-call layers, to the bit.

The regression is `logistic_regression()`, scikit-learn's
`make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))`, and it stays the
reference. But it is fitted for every trial member every epoch on small sets (CBF: 30 training
series, 3 classes, 16-64 features), where nearly all of a fit's CPU time is scikit-learn's per-call
Python overhead (parameter validation, `check_array`, array-API namespace dispatch, the Pipeline,
LabelEncoder), not arithmetic: 15-45 ms a `logreg_cv_error`, which dominated small
sequence-reduction trials. So `fit_predict` runs the same computation without those layers, bit
for bit:

- the scaler: what `StandardScaler.partial_fit` computes through `_incremental_mean_and_var`,
  `_is_constant_feature` and `_handle_zeros_in_scale` on finite data (float64 accumulators, the
  corrected two-pass variance, near-constant features scaled by 1), then its transform (a copy,
  minus the mean, divided by the scale, both cast to the data's dtype);
- the fit: what `LogisticRegression.fit` -> `_logistic_regression_path` does for solver='lbfgs',
  an l2 penalty, no sample or class weights and no warm start: the same targets, the same zero
  start in the data's dtype, SciPy's L-BFGS-B with the same options (its own loop without
  `minimize`'s wrappers, `trainables.kit.lbfgsb`, on a verified SciPy) on `LossGradient`, which
  computes exactly what `LinearModelLoss.loss_gradient` computes (the same NumPy operations in the
  same dtypes around scikit-learn's own Cython loss), and `_check_optimize_result` (the same
  ConvergenceWarning);
- the prediction: `decision_function`'s `X @ coef_.T + intercept_` on the coefficients stored as
  `fit` stores them, then the sign (two classes) or the argmax over classes.

Everything uncommon takes the reference pipeline instead (`Unsupported`): an input that is not a
C-contiguous float32/float64 array with integer labels, a non-finite value anywhere (the pipeline
then raises its own error), fewer than 2 classes. So does a scikit-learn other than the versions in
`VERIFIED_SKLEARN`, or one whose private helpers moved: the private routines and the replicated
loss are only known to give the pipeline's bits there (tests/test_judges.py checks predictions and
coefficients for equality, ==, against the pipeline). On another version the judges are only
slower, never different; re-run those tests and add the version.

`fit_predict_many` fits several problems at once (a member's folds, a cohort's members): problems
of one shape, dtype and number of classes run L-BFGS-B each on its own iterates
(`lbfgsb.minimize_many`) with one stacked evaluation of all that want one
(`LossGradient.many`, the same bits as one problem at a time).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence

import numpy as np

from trainables.kit import lbfgsb

# scikit-learn versions whose private routines `fit_predict` calls, and whose loss it replicates,
# are verified to give the pipeline's bits (tests/test_judges.py); any other version uses the pipeline
VERIFIED_SKLEARN = ("1.9.1",)

C = 1.0
MAX_ITER = 1000
TOL = 1e-4
# problems fitted together hold at most this much data (one problem alone may hold more): stacked
# beyond the caches, large problems were slower together (16 members' folds of Character
# Trajectories, 1,829 x 32 float64 each: 1.4 s together, 1.3 s one by one or two at a time)
STACKED_BYTES = 1 << 20


def logistic_regression():
    """The reference judge; `fit_predict` gives exactly its predictions."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=MAX_ITER))


class Unsupported(Exception):
    """An input `fit_predict` leaves to the reference pipeline."""


def plain(*arrays: np.ndarray) -> bool:
    """Whether `fit_predict` takes these inputs (e, y, then any arrays to predict): finite C-contiguous
    float32/float64 2-d arrays with at least one row and the same columns, and 1-d integer labels
    (the layout and dtype the pipeline computes in without a conversion, so the same operations give
    the same bits; the pipeline raises its own errors on the rest)."""
    e, y, *test = arrays
    for x in (e, *test):
        if not (isinstance(x, np.ndarray) and x.ndim == 2 and x.dtype in (np.float32, np.float64)
                and x.flags.c_contiguous and x.shape[0] >= 1 and x.shape[1] >= 1 and x.shape[1] == e.shape[1]):
            return False
    return (isinstance(y, np.ndarray) and y.ndim == 1 and y.dtype.kind in "iu" and len(y) == len(e)
            and all(np.isfinite(x).all() for x in (e, *test)))


@functools.cache
def routines():
    """scikit-learn's private routines `fit_predict` calls, or None (then the pipeline judges) when
    the installed scikit-learn is not a verified version or lacks them."""
    import sklearn

    if sklearn.__version__ not in VERIFIED_SKLEARN:
        return None
    try:
        from scipy import optimize
        from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss
        from sklearn.linear_model._logistic import _LOGISTIC_SOLVER_CONVERGENCE_MSG
        from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
        from sklearn.utils.optimize import _check_optimize_result
    except ImportError:
        return None
    return _Routines(optimize.minimize, HalfBinomialLoss, HalfMultinomialLoss,
                     _get_additional_lbfgs_options_dict("iprint", -1), _check_optimize_result,
                     _LOGISTIC_SOLVER_CONVERGENCE_MSG)


class _Routines(NamedTuple):
    minimize: Callable  # scipy.optimize.minimize
    binomial: type  # the Cython-backed losses
    multinomial: type
    iprint_options: dict  # L-BFGS-B's iprint=-1 where SciPy still takes it
    check_optimize_result: Callable  # the ConvergenceWarning
    convergence_msg: str


def fit_predict(e_fit: np.ndarray, y_fit: np.ndarray, e_predict: np.ndarray) -> np.ndarray:
    """`logistic_regression().fit(e_fit, y_fit).predict(e_predict)`, the same labels to the bit.

    Raises `Unsupported` where the pipeline would compute differently or raise (non-finite data,
    one class); the caller then runs the pipeline."""
    [predicted] = fit_predict_many([(e_fit, y_fit, e_predict)])
    if predicted is None:
        raise Unsupported
    return predicted


def fit_predict_many(problems: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[np.ndarray | None]:
    """`fit_predict` of each problem, None for a problem it leaves to the pipeline; the regressions
    are fitted together (`logistic_fit_many`)."""
    scaled = []
    for e_fit, y_fit, e_predict in problems:
        mean, scale = scaler_fit(e_fit)
        classes = np.unique(y_fit)  # LogisticRegression.classes_ (sorted, as xp.unique_values gives)
        try:
            if len(classes) < 2:
                raise Unsupported
            scaled.append((scaler_transform(e_fit, mean, scale), y_fit, classes,
                           scaler_transform(e_predict, mean, scale)))
        except Unsupported:
            scaled.append(None)
    taken = [problem for problem in scaled if problem is not None]
    fits = iter(logistic_fit_many([(x, y, classes) for x, y, classes, _ in taken]))
    return [None if problem is None else _predict(problem[3], problem[2], *next(fits)) for problem in scaled]


def _predict(x: np.ndarray, classes: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """LinearClassifierMixin.decision_function's `X @ coef_.T + intercept_`, then predict's labels."""
    scores = x @ coef.T + intercept
    if scores.shape[1] == 1:
        indices = (scores.reshape(-1) > 0).astype(np.intp)
    else:
        indices = np.argmax(scores, axis=1)
    return classes.take(indices, axis=0)


def scaler_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`StandardScaler().fit(x)`'s `mean_` and `scale_` (float64) for a finite x.

    `partial_fit`'s first call: `_incremental_mean_and_var(x, 0.0, 0.0, zeros)` without NaNs or
    weights (float64 accumulators, the corrected two-pass variance; from a count of 0 the update
    keeps the new part), then `_is_constant_feature` and `_handle_zeros_in_scale`, the same
    operations in the same order."""
    n_samples, n_features = x.shape
    accumulator = {"dtype": np.float64} if x.dtype == np.float32 else {}  # _safe_accumulator_op's upcast
    last_sample_count = np.zeros(n_features, dtype=np.float64)
    last_sum = 0.0 * last_sample_count
    new_sum = np.sum(x, axis=0, **accumulator)
    new_sample_count = n_samples - np.sum(np.isnan(x).astype(x.dtype), axis=0, **accumulator)
    updated_sample_count = last_sample_count + new_sample_count
    mean = (last_sum + new_sum) / updated_sample_count
    temp = x - new_sum / new_sample_count
    correction = np.sum(temp, axis=0)
    temp **= 2
    new_unnormalized_variance = np.sum(temp, axis=0)
    new_unnormalized_variance -= correction**2 / new_sample_count
    var = new_unnormalized_variance / updated_sample_count
    n_samples_seen = updated_sample_count[0]  # the same count for every feature
    eps = np.finfo(np.float64).eps
    constant = var <= n_samples_seen * eps * var + (n_samples_seen * mean * eps) ** 2
    scale = np.sqrt(var)
    scale[constant] = 1.0
    return mean, scale


def scaler_transform(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """`StandardScaler.transform(x)`: a copy, centred and scaled in x's dtype. A non-finite result
    (NaN or infinite input, an overflow) is the pipeline's to report."""
    x = np.array(x, copy=True)
    x -= mean.astype(x.dtype)
    x /= scale.astype(x.dtype)
    if not np.isfinite(x).all():
        raise Unsupported
    return x


def logistic_fit(x: np.ndarray, y: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`LogisticRegression(C=1.0, max_iter=1000).fit(x, y)`'s `coef_` and `intercept_`, in x's dtype.

    What `_logistic_regression_path` does for lbfgs, an l2 penalty, fit_intercept, no weights and no
    warm start (`check_input=False`, as `fit` calls it)."""
    return logistic_fit_many([(x, y, classes)])[0]


def logistic_fit_many(problems: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """`logistic_fit(x, y, classes)` of each problem. Problems of one shape, dtype and number of
    classes are fitted together: L-BFGS-B runs each on its own iterates (`lbfgsb.minimize_many`)
    and one `LossGradient.many` call evaluates all that want an evaluation, to the same bits."""
    fast = routines()
    groups: dict[tuple, list[list[int]]] = {}
    for i, (x, _, classes) in enumerate(problems):
        chunks = groups.setdefault((x.shape, x.dtype.str, len(classes)), [[]])
        if chunks[-1] and (len(chunks[-1]) + 1) * x.nbytes > STACKED_BYTES:
            chunks.append([])
        chunks[-1].append(i)
    fitted: list = [None] * len(problems)
    for (shape, _, n_classes), members in ((key, chunk) for key, chunks in groups.items() for chunk in chunks):
        starts, targets = zip(*(_start(*problems[i]) for i in members))
        xs, ys = np.stack([problems[i][0] for i in members]), np.stack(targets)
        loss = LossGradient(fast.binomial() if n_classes == 2 else fast.multinomial(n_classes=n_classes),
                             None if n_classes == 2 else n_classes)
        l2_reg_strength = 1.0 / (C * shape[0])
        options = {"maxiter": MAX_ITER, "maxls": 50, "gtol": TOL, "ftol": 64 * np.finfo(float).eps}
        if lbfgsb.available():  # scipy.optimize.minimize's loop without its wrappers, the same iterates
            results = lbfgsb.minimize_many(_Rows(loss, xs, ys, l2_reg_strength), list(starts), **options)
        else:
            results = [fast.minimize(loss, w0, method="L-BFGS-B", jac=True,
                                     args=(problems[i][0], target, None, l2_reg_strength, 1),
                                     options={**options, **fast.iprint_options}, callback=None)
                       for i, w0, target in zip(members, starts, targets)]
        for i, result in zip(members, results):
            fast.check_optimize_result("lbfgs", result, MAX_ITER, extra_warning_msg=fast.convergence_msg)
            fitted[i] = _coefficients(result.x, n_classes, problems[i][0].dtype)
    return fitted


class _Rows:
    """`minimize_many`'s function: `loss.many` on the problems that want an evaluation, their rows of
    the data taken anew only when that set changes (it shrinks as problems end)."""

    def __init__(self, loss: "LossGradient", xs: np.ndarray, ys: np.ndarray, l2_reg_strength: float):
        self.loss, self.xs, self.ys, self.l2_reg_strength = loss, xs, ys, l2_reg_strength
        self.rows: list[int] = list(range(len(xs)))
        self.taken = xs, ys

    def __call__(self, points: np.ndarray, rows: list[int]) -> tuple[list, np.ndarray]:
        if rows != self.rows:
            self.rows, self.taken = rows, (self.xs[rows], self.ys[rows])
        return self.loss.many(points, *self.taken, self.l2_reg_strength)


def _start(x: np.ndarray, y: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The path's zero start and its targets: y in [0, 1] for two classes (HalfBinomialLoss; classes[1]
    is the positive label), else the class indices (LabelEncoder().fit(classes).transform(y))."""
    n_classes, n_features = len(classes), x.shape[1]
    if n_classes == 2:
        target = np.ones(y.shape, dtype=x.dtype)
        target[~(y == classes[1])] = 0.0
        return np.zeros(n_features + 1, dtype=x.dtype), target
    w0 = np.zeros((n_classes, n_features + 1), order="F", dtype=x.dtype).ravel(order="F")
    return w0, np.searchsorted(classes, y).astype(x.dtype)


def _coefficients(w: np.ndarray, n_classes: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """The path's coefs and fit's split of them into `coef_` and `intercept_`."""
    if n_classes == 2:
        coef = np.stack([np.asarray(w.copy(order="K"), dtype=dtype)])[0, ...]
        return coef[:-1][None, :], coef[-1:]
    coef = np.stack([np.asarray(np.reshape(w, (n_classes, -1), order="F").copy(order="K"), dtype=dtype)])[0, ...]
    return coef[:, :-1], coef[:, -1]


class LossGradient:
    """`LinearModelLoss(base_loss, fit_intercept=True).loss_gradient` for NumPy arrays without sample
    weights: the same operations in the same dtypes (so the same bits), without its namespace
    dispatch. `n_classes` is None for the binomial loss."""

    def __init__(self, base_loss, n_classes: int | None):
        self.base_loss, self.n_classes = base_loss, n_classes

    def __call__(self, coef, x, y, sample_weight, l2_reg_strength, n_threads):
        """One problem, as `scipy.optimize.minimize` calls it (`many` of a stack of one)."""
        if sample_weight is not None:
            raise ValueError("LossGradient replicates the loss without sample weights only")
        [loss], grad = self.many(coef[None], x[None], y[None], l2_reg_strength)
        return loss, grad[0]

    def many(self, coefs: np.ndarray, x: np.ndarray, y: np.ndarray, l2_reg_strength: float) -> tuple[list, np.ndarray]:
        """The loss and gradient of every problem p (`coefs[p]`, `x[p]`, `y[p]`) at once, each to the
        bits `loss_gradient` gives it alone: the products are NumPy's stacked matmuls (one BLAS call
        per problem, as alone), the Cython loss is pointwise, and each sum runs over one problem's
        rows; the l2 penalty is `squared_norm`'s dot of each problem's K-order ravel."""
        n_problems, n_samples, n_features = x.shape
        if self.n_classes is None:
            intercept, weights = coefs[:, -1], coefs[:, :-1]
            raw_prediction = ((x @ np.asarray(weights, dtype=x.dtype)[:, :, None])[:, :, 0]
                              + np.asarray(intercept, dtype=x.dtype)[:, None]).reshape(-1)
        else:  # each row's F-order (n_classes, n_features + 1) matrix
            weights = coefs.reshape(n_problems, n_features + 1, self.n_classes).transpose(0, 2, 1)
            intercept, weights = weights[:, :, -1], weights[:, :, :-1]
            raw_prediction = (x @ np.asarray(weights, dtype=x.dtype).transpose(0, 2, 1)
                              + np.asarray(intercept, dtype=x.dtype)[:, None, :]).reshape(n_problems * n_samples, -1)
        loss, grad_pointwise = self.base_loss.loss_gradient(y_true=y.reshape(-1), raw_prediction=raw_prediction,
                                                            sample_weight=None, n_threads=1)
        sums = loss.reshape(n_problems, n_samples).sum(axis=1) / n_samples
        # LinearModelLoss.l2_penalty: the dot of each K-order ravel (F-order weights: the transposed rows)
        flat = (weights if self.n_classes is None else weights.transpose(0, 2, 1)).reshape(n_problems, -1)
        dot = np.matmul if self.n_classes is None else np.dot  # scikit-learn's `weights @ weights`, `np.dot`
        losses = [float(total) + float(0.5 * l2_reg_strength * dot(w, w)) for total, w in zip(sums, flat)]
        grad_pointwise = grad_pointwise.reshape(n_problems, n_samples, -1)
        grad_pointwise /= n_samples
        if self.n_classes is None:
            grad = np.empty_like(coefs, dtype=weights.dtype)
            grad[:, :n_features] = (x.transpose(0, 2, 1) @ grad_pointwise)[:, :, 0] + l2_reg_strength * weights
            grad[:, -1] = grad_pointwise[:, :, 0].sum(axis=1)
            return losses, grad
        grad = np.empty((n_problems, n_features + 1, self.n_classes), dtype=weights.dtype)
        grad[:, :n_features, :] = (grad_pointwise.transpose(0, 2, 1) @ x + l2_reg_strength * weights).transpose(0, 2, 1)
        grad[:, -1, :] = grad_pointwise.sum(axis=1)
        return losses, grad.reshape(n_problems, -1)
