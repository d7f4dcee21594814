"""The classifiers that judge an embedding (scikit-learn; thesis Sections 3.4.2 and 3.5.2).

Unsupervised embeddings are judged by a logistic regression (features standardised, C = 1: the
thesis does not give its settings) fitted on the training embeddings: `logreg_cv_error` is its
stratified k-fold error on the training set (`valid_error`), `logreg_error` the error on the test
set of the regression fitted on all training embeddings (`test_error`). NCA's embeddings are
judged by 1-NN with the training embeddings as database (`one_nn_error`).

The regression is `logistic_regression()`, scikit-learn's
`make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))`, and it stays the
reference. But it is fitted for every trial member every epoch on small sets, where nearly all of
a fit's CPU time is scikit-learn's per-call Python overhead: so the judges compute it through
`trainables.kit.logreg_replica` (the same labels, bit for bit, on the scikit-learn versions that
module was verified on; the pipeline itself on any other, or for inputs the replica leaves), and
fit a member's folds, or a cohort's members (`logreg_cv_errors`, `logreg_errors`), together.

The stratified folds depend only on the labels (seeded shuffle), so they are computed once per
label vector (`_folds`).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from seqrep.method import SeqrepError
from trainables.kit import logreg_replica as replica
from trainables.kit.logreg_replica import logistic_regression

SPLIT_SEED = 0  # folds and the validation split are the same in every trial, so trials are compared on them

__all__ = ["SPLIT_SEED", "logistic_regression", "logreg_cv_error", "logreg_cv_errors", "logreg_error", "logreg_errors",
           "one_nn_error"]


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
    """`logistic_regression().fit(e_fit, y_fit).predict(e_predict)` of each problem: by `replica.fit_predict_many`
    where it takes the input, by the pipeline itself otherwise (the same labels either way)."""
    fast = [i for i, problem in enumerate(problems) if replica.plain(*problem)] if replica.routines() else []
    labels: list[np.ndarray | None] = [None] * len(problems)
    for i, predicted in zip(fast, replica.fit_predict_many([problems[i] for i in fast])):
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
