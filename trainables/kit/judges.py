"""The classifiers that judge an embedding (scikit-learn; thesis Sections 3.4.2 and 3.5.2).

Unsupervised embeddings are judged by a logistic regression (features standardised, C = 1: the
thesis does not give its settings) fitted on the training embeddings: `logreg_cv_error` is its
stratified k-fold error on the training set (`valid_error`), `logreg_error` the error on the test
set of the regression fitted on all training embeddings (`test_error`). NCA's embeddings are
judged by 1-NN with the training embeddings as database (`one_nn_error`).
"""

from __future__ import annotations

import numpy as np

from seqrep.method import SeqrepError

SPLIT_SEED = 0  # folds and the validation split are the same in every trial, so trials are compared on them


def logistic_regression():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))


def logreg_cv_error(e: np.ndarray, y: np.ndarray) -> float:
    """Stratified k-fold error of the logistic regression on (e, y), k = min(5, smallest class) >= 2.

    The fraction of training points misclassified by the regression fitted without their fold
    (what `cross_val_predict` computes, without its joblib dispatch, which cost a sixth of the
    time on Table 10's small sets): a multiple of 1/N, so equal errors compare equal (the
    improved rule).
    """
    from sklearn.model_selection import StratifiedKFold

    k = min(5, int(np.bincount(y).min()))
    if k < 2:
        raise SeqrepError(f"a stratified validation needs at least 2 training examples per class, "
                          f"but a class has {k}")
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=SPLIT_SEED)
    predicted = np.empty_like(y)
    for fit_rows, held_out in folds.split(e, y):
        predicted[held_out] = logistic_regression().fit(e[fit_rows], y[fit_rows]).predict(e[held_out])
    return float((predicted != y).mean())


def logreg_error(e_train: np.ndarray, y_train: np.ndarray, e_test: np.ndarray, y_test: np.ndarray) -> float:
    model = logistic_regression().fit(e_train, y_train)
    e_test = np.nan_to_num(e_test, posinf=1e30, neginf=-1e30)  # an exploding test sequence is misjudged, not fatal
    return float((model.predict(e_test) != y_test).mean())


def one_nn_error(e_db: np.ndarray, y_db: np.ndarray, e: np.ndarray, y: np.ndarray) -> float:
    """1-nearest-neighbour error with the database (e_db, y_db) (Section 3.4.2)."""
    from sklearn.neighbors import KNeighborsClassifier

    return float((KNeighborsClassifier(n_neighbors=1).fit(e_db, y_db).predict(e) != y).mean())
