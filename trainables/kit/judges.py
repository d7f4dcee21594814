"""The classifiers that judge an embedding (scikit-learn; thesis Sections 3.4.2 and 3.5.2).

Unsupervised embeddings are judged by a logistic regression (features standardised, C = 1: the
thesis does not give its settings) fitted on the training embeddings: `logreg_cv_error` is its
stratified k-fold error on the training set (`valid_error`), `logreg_error` the error on the test
set of the regression fitted on all training embeddings (`test_error`). NCA's embeddings are
judged by 1-NN with the training embeddings as database (`one_nn_error`).

The regression is `logistic_regression()`, scikit-learn's
`make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))`, and it stays the
reference. But it is fitted for every trial member every epoch on small sets (CBF: 30 training
series, 3 classes, 16-64 features), where nearly all of a fit's CPU time is scikit-learn's per-call
Python overhead (parameter validation, `check_array`, array-API namespace dispatch, the Pipeline,
LabelEncoder), not arithmetic: 15-45 ms a `logreg_cv_error`, which dominated small
sequence-reduction trials. So both judges run the same computation without those layers
(`_fit_predict`), bit for bit:

- the scaler: what `StandardScaler.partial_fit` computes through `_incremental_mean_and_var`,
  `_is_constant_feature` and `_handle_zeros_in_scale` on finite data (float64 accumulators, the
  corrected two-pass variance, near-constant features scaled by 1), then its transform (a copy,
  minus the mean, divided by the scale, both cast to the data's dtype);
- the fit: what `LogisticRegression.fit` -> `_logistic_regression_path` does for solver='lbfgs',
  an l2 penalty, no sample or class weights and no warm start: the same targets, the same zero
  start in the data's dtype, SciPy's L-BFGS-B with the same options (its own loop without
  `minimize`'s wrappers, `trainables.kit.lbfgsb`, on a verified SciPy) on `_LossGradient`, which
  computes exactly what `LinearModelLoss.loss_gradient` computes (the same NumPy operations in the
  same dtypes around scikit-learn's own Cython loss), and `_check_optimize_result` (the same
  ConvergenceWarning);
- the prediction: `decision_function`'s `X @ coef_.T + intercept_` on the coefficients stored as
  `fit` stores them, then the sign (two classes) or the argmax over classes.

Everything uncommon takes the reference pipeline instead (`_Unsupported`): an input that is not a
C-contiguous float32/float64 array with integer labels, a non-finite value anywhere (the pipeline
then raises its own error), fewer than 2 classes. So does a scikit-learn other than the versions in
`_VERIFIED_SKLEARN`, or one whose private helpers moved: the private routines and the replicated
loss are only known to give the pipeline's bits there (tests/test_judges.py checks predictions and
coefficients for equality, ==, against the pipeline). On another version the judges are only
slower, never different; re-run those tests and add the version.

The stratified folds depend only on the labels (seeded shuffle), so they are computed once per
label vector (`_folds`).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence

import numpy as np

from seqrep.method import SeqrepError
from trainables.kit import lbfgsb

SPLIT_SEED = 0  # folds and the validation split are the same in every trial, so trials are compared on them

# scikit-learn versions whose private routines `_fit_predict` calls, and whose loss it replicates,
# are verified to give the pipeline's bits (tests/test_judges.py); any other version uses the pipeline
_VERIFIED_SKLEARN = ("1.9.1",)

_C = 1.0
_MAX_ITER = 1000
_TOL = 1e-4


def logistic_regression():
    """The reference judge; `logreg_cv_error` and `logreg_error` give exactly its predictions."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=_C, max_iter=_MAX_ITER))


def logreg_cv_error(e: np.ndarray, y: np.ndarray) -> float:
    """Stratified k-fold error of the logistic regression on (e, y), k = min(5, smallest class) >= 2.

    The fraction of training points misclassified by the regression fitted without their fold
    (what `cross_val_predict` computes, without its joblib dispatch, which cost a sixth of the
    time on Table 10's small sets): a multiple of 1/N, so equal errors compare equal (the
    improved rule).
    """
    return logreg_cv_errors([e], y)[0]


def logreg_cv_errors(embeddings: Sequence[np.ndarray], y: np.ndarray) -> list[float]:
    """`logreg_cv_error(e, y)` of each embedding e of the same labelled points (a cohort's members),
    the same numbers; their folds' regressions are fitted together (`_judge_many`)."""
    k = min(5, int(np.bincount(y).min()))
    if k < 2:
        raise SeqrepError(f"a stratified validation needs at least 2 training examples per class, "
                          f"but a class has {k}")
    folds = [_folds(y, k, e) for e in embeddings]
    labels = iter(_judge_many([(e[fit_rows], y[fit_rows], e[held_out])
                               for e, splits in zip(embeddings, folds) for fit_rows, held_out in splits]))
    errors = []
    for splits in folds:
        predicted = np.empty_like(y)
        for _, held_out in splits:
            predicted[held_out] = next(labels)
        errors.append(float((predicted != y).mean()))
    return errors


def logreg_error(e_train: np.ndarray, y_train: np.ndarray, e_test: np.ndarray, y_test: np.ndarray) -> float:
    """Test error of the logistic regression fitted on all of (e_train, y_train)."""
    return logreg_errors([e_train], y_train, [e_test], y_test)[0]


def logreg_errors(e_train: Sequence[np.ndarray], y_train: np.ndarray, e_test: Sequence[np.ndarray],
                  y_test: np.ndarray) -> list[float]:
    """`logreg_error` of each pair of training and test embeddings, fitted together."""
    # an exploding test sequence is misjudged, not fatal
    problems = [(train, y_train, np.nan_to_num(test, posinf=1e30, neginf=-1e30)) for train, test in zip(e_train, e_test)]
    return [float((labels != y_test).mean()) for labels in _judge_many(problems)]


def _judge_many(problems: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """`logistic_regression().fit(e_fit, y_fit).predict(e_predict)` of each problem: by `_fit_predict_many`
    where it takes the input, by the pipeline itself otherwise (the same labels either way)."""
    fast = [i for i, problem in enumerate(problems) if _fast() is not None and _plain(*problem)]
    labels: list[np.ndarray | None] = [None] * len(problems)
    for i, predicted in zip(fast, _fit_predict_many([problems[i] for i in fast])):
        labels[i] = predicted
    return [predicted if predicted is not None else logistic_regression().fit(e_fit, y_fit).predict(e_predict)
            for predicted, (e_fit, y_fit, e_predict) in zip(labels, problems)]


def one_nn_error(e_db: np.ndarray, y_db: np.ndarray, e: np.ndarray, y: np.ndarray) -> float:
    """1-nearest-neighbour error with the database (e_db, y_db) (Section 3.4.2)."""
    from sklearn.neighbors import KNeighborsClassifier

    return float((KNeighborsClassifier(n_neighbors=1).fit(e_db, y_db).predict(e) != y).mean())


# --- the stratified folds, once per label vector ---------------------------------------------------

def _folds(y: np.ndarray, k: int, e: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """`StratifiedKFold(k, shuffle=True, random_state=SPLIT_SEED).split(e, y)` as a list.

    The split reads only the labels (and the number of rows), so it is cached by the labels; any
    input the cache cannot key (or rows that do not match the labels) is split afresh, which
    raises scikit-learn's own errors."""
    if isinstance(y, np.ndarray) and y.ndim == 1 and len(e) == len(y):
        return list(_cached_folds(y.dtype.str, y.tobytes(), k))
    return _split(e, y, k)


def _split(e, y, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=SPLIT_SEED).split(e, y))


@functools.lru_cache(maxsize=16)
def _cached_folds(dtype: str, labels: bytes, k: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    y = np.frombuffer(labels, dtype=np.dtype(dtype))
    folds = _split(np.zeros((len(y), 1)), y, k)
    for fit_rows, held_out in folds:
        fit_rows.flags.writeable = held_out.flags.writeable = False  # shared by every later call
    return tuple(folds)


# --- the pipeline's fit and predict without scikit-learn's per-call layers ---------------------------

class _Unsupported(Exception):
    """An input `_fit_predict` leaves to the reference pipeline."""


def _plain(*arrays: np.ndarray) -> bool:
    """Whether `_fit_predict` takes these inputs (e, y, then any arrays to predict): finite C-contiguous
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
def _fast():
    """scikit-learn's private routines `_fit_predict` calls, or None (then the pipeline judges) when
    the installed scikit-learn is not a verified version or lacks them."""
    import sklearn

    if sklearn.__version__ not in _VERIFIED_SKLEARN:
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


def _fit_predict(e_fit: np.ndarray, y_fit: np.ndarray, e_predict: np.ndarray) -> np.ndarray:
    """`logistic_regression().fit(e_fit, y_fit).predict(e_predict)`, the same labels to the bit.

    Raises `_Unsupported` where the pipeline would compute differently or raise (non-finite data,
    one class); the caller then runs the pipeline."""
    [predicted] = _fit_predict_many([(e_fit, y_fit, e_predict)])
    if predicted is None:
        raise _Unsupported
    return predicted


def _fit_predict_many(problems: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[np.ndarray | None]:
    """`_fit_predict` of each problem, None for a problem it leaves to the pipeline; the regressions
    are fitted together (`_logistic_fit_many`)."""
    scaled = []
    for e_fit, y_fit, e_predict in problems:
        mean, scale = _scaler_fit(e_fit)
        classes = np.unique(y_fit)  # LogisticRegression.classes_ (sorted, as xp.unique_values gives)
        try:
            if len(classes) < 2:
                raise _Unsupported
            scaled.append((_scaler_transform(e_fit, mean, scale), y_fit, classes,
                           _scaler_transform(e_predict, mean, scale)))
        except _Unsupported:
            scaled.append(None)
    taken = [problem for problem in scaled if problem is not None]
    fits = iter(_logistic_fit_many([(x, y, classes) for x, y, classes, _ in taken]))
    return [None if problem is None else _predict(problem[3], problem[2], *next(fits)) for problem in scaled]


def _predict(x: np.ndarray, classes: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """LinearClassifierMixin.decision_function's `X @ coef_.T + intercept_`, then predict's labels."""
    scores = x @ coef.T + intercept
    if scores.shape[1] == 1:
        indices = (scores.reshape(-1) > 0).astype(np.intp)
    else:
        indices = np.argmax(scores, axis=1)
    return classes.take(indices, axis=0)


def _scaler_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _scaler_transform(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """`StandardScaler.transform(x)`: a copy, centred and scaled in x's dtype. A non-finite result
    (NaN or infinite input, an overflow) is the pipeline's to report."""
    x = np.array(x, copy=True)
    x -= mean.astype(x.dtype)
    x /= scale.astype(x.dtype)
    if not np.isfinite(x).all():
        raise _Unsupported
    return x


def _logistic_fit(x: np.ndarray, y: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`LogisticRegression(C=1.0, max_iter=1000).fit(x, y)`'s `coef_` and `intercept_`, in x's dtype.

    What `_logistic_regression_path` does for lbfgs, an l2 penalty, fit_intercept, no weights and no
    warm start (`check_input=False`, as `fit` calls it)."""
    return _logistic_fit_many([(x, y, classes)])[0]


def _logistic_fit_many(problems: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """`_logistic_fit(x, y, classes)` of each problem. Problems of one shape, dtype and number of
    classes are fitted together: L-BFGS-B runs each on its own iterates (`lbfgsb.minimize_many`)
    and one `_LossGradient.many` call evaluates all that want an evaluation, to the same bits."""
    fast = _fast()
    groups: dict[tuple, list[int]] = {}
    for i, (x, _, classes) in enumerate(problems):
        groups.setdefault((x.shape, x.dtype.str, len(classes)), []).append(i)
    fitted: list = [None] * len(problems)
    for (shape, _, n_classes), members in groups.items():
        starts, targets = zip(*(_start(*problems[i]) for i in members))
        xs, ys = np.stack([problems[i][0] for i in members]), np.stack(targets)
        loss = _LossGradient(fast.binomial() if n_classes == 2 else fast.multinomial(n_classes=n_classes),
                             None if n_classes == 2 else n_classes)
        l2_reg_strength = 1.0 / (_C * shape[0])
        options = {"maxiter": _MAX_ITER, "maxls": 50, "gtol": _TOL, "ftol": 64 * np.finfo(float).eps}
        if lbfgsb.available():  # scipy.optimize.minimize's loop without its wrappers, the same iterates
            results = lbfgsb.minimize_many(lambda w, rows: loss.many(w, xs[rows], ys[rows], l2_reg_strength),
                                           list(starts), **options)
        else:
            results = [fast.minimize(loss, w0, method="L-BFGS-B", jac=True,
                                     args=(problems[i][0], target, None, l2_reg_strength, 1),
                                     options={**options, **fast.iprint_options}, callback=None)
                       for i, w0, target in zip(members, starts, targets)]
        for i, result in zip(members, results):
            fast.check_optimize_result("lbfgs", result, _MAX_ITER, extra_warning_msg=fast.convergence_msg)
            fitted[i] = _coefficients(result.x, n_classes, problems[i][0].dtype)
    return fitted


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


class _LossGradient:
    """`LinearModelLoss(base_loss, fit_intercept=True).loss_gradient` for NumPy arrays without sample
    weights: the same operations in the same dtypes (so the same bits), without its namespace
    dispatch. `n_classes` is None for the binomial loss."""

    def __init__(self, base_loss, n_classes: int | None):
        self.base_loss, self.n_classes = base_loss, n_classes

    def __call__(self, coef, x, y, sample_weight, l2_reg_strength, n_threads):
        n_samples, n_features = x.shape
        if self.n_classes is None:
            intercept, weights = coef[-1], coef[:-1]
            raw_prediction = x @ np.asarray(weights, dtype=x.dtype) + np.asarray(intercept, dtype=x.dtype)
        else:
            weights = coef.reshape((self.n_classes, -1), order="F")
            intercept, weights = weights[:, -1], weights[:, :-1]
            raw_prediction = x @ np.asarray(weights, dtype=x.dtype).T + np.asarray(intercept, dtype=x.dtype)
        loss, grad_pointwise = self.base_loss.loss_gradient(y_true=y, raw_prediction=raw_prediction,
                                                            sample_weight=sample_weight, n_threads=n_threads)
        loss = float(loss.sum() / n_samples)  # np.sum's reduction, without its dispatch
        # LinearModelLoss.l2_penalty (squared_norm: the dot of the K-order ravel)
        if weights.ndim == 1:
            norm2_w = weights @ weights
        else:
            flat = weights.ravel(order="K")
            norm2_w = np.dot(flat, flat)
        loss += float(0.5 * l2_reg_strength * norm2_w)
        grad_pointwise /= n_samples
        if self.n_classes is None:
            grad = np.empty_like(coef, dtype=weights.dtype)
            grad[:n_features] = x.T @ grad_pointwise + l2_reg_strength * weights
            grad[-1] = grad_pointwise.sum()
        else:
            grad = np.empty((self.n_classes, n_features + 1), dtype=weights.dtype, order="F")
            grad[:, :n_features] = grad_pointwise.T @ x + l2_reg_strength * weights
            grad[:, -1] = grad_pointwise.sum(axis=0)
            grad = grad.ravel(order="F")
        return loss, grad

    def many(self, coefs: np.ndarray, x: np.ndarray, y: np.ndarray, l2_reg_strength: float) -> tuple[list, np.ndarray]:
        """`self(coefs[p], x[p], y[p], None, l2_reg_strength, 1)` for every problem p at once, the same
        bits: the products are NumPy's stacked matmuls (one BLAS call per problem, as alone), the
        Cython loss is pointwise, and each sum runs over one problem's rows as alone."""
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
        # the l2 penalty's dot of each K-order ravel (a problem's F-order weights: the transposed rows)
        flat = (weights if self.n_classes is None else weights.transpose(0, 2, 1)).reshape(n_problems, -1)
        dot = np.matmul if self.n_classes is None else np.dot  # as `__call__`: `weights @ weights`, `np.dot`
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
