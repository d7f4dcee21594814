"""The fast logistic-regression judges give the reference pipeline's results to the last bit.

`trainables.kit.judges` fits and predicts (through `trainables.kit.logreg_replica`) without
scikit-learn's per-call layers; these tests hold it to `logistic_regression()` (StandardScaler +
LogisticRegression) with exact equality: the same errors, the same predicted labels of every fold,
and the same fitted scaler and coefficients.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from seqrep.method import SeqrepError
from trainables.kit import judges
from trainables.kit import logreg_replica as replica


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__


# the comparisons hold the fast path to the pipeline; on a scikit-learn not in VERIFIED_SKLEARN the
# judges run the pipeline itself (test_an_unverified_scikit_learn_uses_the_pipeline), and a new
# version is verified by running this file with it added there
verified = pytest.mark.skipif(replica.routines() is None, reason=f"scikit-learn {_sklearn_version()} is not in "
                              "trainables.kit.logreg_replica.VERIFIED_SKLEARN: the judges run the reference pipeline")


def reference_cv(e: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray], list]:
    """The error, each fold's predicted labels and fitted pipeline, as the original judge computed them."""
    from sklearn.model_selection import StratifiedKFold

    k = min(5, int(np.bincount(y).min()))
    predicted, fold_labels, models = np.empty_like(y), [], []
    for fit_rows, held_out in StratifiedKFold(n_splits=k, shuffle=True, random_state=judges.SPLIT_SEED).split(e, y):
        model = judges.logistic_regression().fit(e[fit_rows], y[fit_rows])
        predicted[held_out] = labels = model.predict(e[held_out])
        fold_labels.append(labels)
        models.append(model)
    return float((predicted != y).mean()), fold_labels, models


def assert_identical_fit(model, e_fit: np.ndarray, y_fit: np.ndarray) -> None:
    """The fast scaler and regression reproduce the pipeline's fitted attributes exactly."""
    scaler, regression = model[0], model[-1]
    mean, scale = replica.scaler_fit(e_fit)
    assert mean.dtype == scaler.mean_.dtype and np.array_equal(mean, scaler.mean_)
    assert scale.dtype == scaler.scale_.dtype and np.array_equal(scale, scaler.scale_)
    x = replica.scaler_transform(e_fit, mean, scale)
    assert np.array_equal(x, scaler.transform(e_fit))
    coef, intercept = replica.logistic_fit(x, y_fit, np.unique(y_fit))
    assert coef.dtype == regression.coef_.dtype and coef.shape == regression.coef_.shape
    assert np.array_equal(coef, regression.coef_) and np.array_equal(intercept, regression.intercept_)


def assert_same_as_reference(e: np.ndarray, y: np.ndarray, coefficients: bool = True) -> None:
    from sklearn.model_selection import StratifiedKFold

    expected, fold_labels, models = reference_cv(e, y)
    assert judges.logreg_cv_error(e, y) == expected
    k = min(5, int(np.bincount(y).min()))
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=judges.SPLIT_SEED).split(e, y)
    for (fit_rows, held_out), labels, model in zip(folds, fold_labels, models):
        fast = replica.fit_predict(e[fit_rows], y[fit_rows], e[held_out])
        assert fast.dtype == labels.dtype
        np.testing.assert_array_equal(fast, labels)
        if coefficients:
            assert_identical_fit(model, e[fit_rows], y[fit_rows])


def random_case(rng: np.random.Generator, n: int, d: int, classes: int, dtype, kind: str):
    """Labels with every class at least twice, and embeddings of one of several awkward kinds."""
    y = np.concatenate([np.arange(classes), np.arange(classes), rng.integers(0, classes, n - 2 * classes)])
    y = rng.permutation(y)
    e = rng.normal(size=(n, d))
    if kind == "separated":  # well apart classes: large coefficients
        e += 6.0 * rng.normal(size=(classes, d))[y]
    elif kind == "overlapping":
        e += 0.3 * rng.normal(size=(classes, d))[y]
    elif kind == "constant":  # a zero-variance feature (and a near-constant one)
        e += rng.normal(size=(classes, d))[y]
        e[:, 0] = 3.25
        if d > 1:
            e[:, -1] = 1.0 + 1e-13 * rng.normal(size=n)
    elif kind == "badly scaled":
        e += rng.normal(size=(classes, d))[y]
        e *= 10.0 ** rng.uniform(-4, 4, size=d)
        e += 10.0 ** rng.uniform(-2, 3, size=d)
    elif kind == "few per class":  # classes of 2 and 3 examples beside a large one
        small = np.concatenate([np.full(2 + c % 2, c) for c in range(1, classes)])
        y = rng.permutation(np.concatenate([np.zeros(n - len(small), dtype=int), small]))
        e = rng.normal(size=(n, d)) + rng.normal(size=(classes, d))[y]
    return np.ascontiguousarray(e, dtype=dtype), y.astype(np.int64)


KINDS = ["overlapping", "separated", "constant", "badly scaled", "few per class"]


@verified
@pytest.mark.parametrize("classes", [2, 3, 7])
@pytest.mark.parametrize("kind", KINDS)
def test_cross_validated_error_is_the_pipelines_bit_for_bit(classes, kind):
    rng = np.random.default_rng([classes, KINDS.index(kind)])
    for n, d, dtype in [(30, 16, np.float32), (45, 1, np.float32), (61, 33, np.float32), (90, 64, np.float32),
                        (40, 8, np.float64), (150, 24, np.float64)]:
        if kind == "few per class" and n < 5 * classes + 5:
            continue
        e, y = random_case(rng, n, d, classes, dtype, kind)
        assert_same_as_reference(e, y)


@verified
def test_many_random_problems_give_the_pipelines_errors():
    """Broader coverage at the error level: random sizes, class counts and scales."""
    rng = np.random.default_rng(2024)
    for _ in range(60):
        classes = int(rng.choice([2, 3, 4, 7]))
        n = int(rng.integers(2 * classes + 2, 120))
        d = int(rng.integers(1, 40))
        e, y = random_case(rng, n, d, classes, rng.choice([np.float32, np.float64]),
                           str(rng.choice(KINDS[:4])))
        expected, _, _ = reference_cv(e, y)
        assert judges.logreg_cv_error(e, y) == expected


@verified
def test_cbf_sized_and_larger_inputs_match_with_coefficients():
    rng = np.random.default_rng(7)
    for n, d, classes in [(30, 16, 3), (300, 32, 10)]:
        y = rng.permutation(np.arange(n) % classes)
        e = (rng.normal(size=(n, d)) + 0.3 * y[:, None]).astype(np.float32)
        assert_same_as_reference(e, y)


@verified
@pytest.mark.parametrize("classes", [2, 3, 7])
def test_test_error_is_the_pipelines_bit_for_bit(classes):
    rng = np.random.default_rng(classes)
    for kind in KINDS[:4]:
        for dtype_train, dtype_test in [(np.float32, np.float32), (np.float64, np.float64), (np.float64, np.float32),
                                        (np.float32, np.float64)]:
            e, y = random_case(rng, 80 + 10 * classes, 12, classes, dtype_train, kind)
            e_test, y_test = random_case(rng, 200, 12, classes, dtype_test, kind)
            e_test[3, 2], e_test[7, 5], e_test[9, 0] = np.inf, -np.inf, np.nan  # an exploding test sequence
            model = judges.logistic_regression().fit(e, y)
            expected_labels = model.predict(np.nan_to_num(e_test, posinf=1e30, neginf=-1e30))
            expected = float((expected_labels != y_test).mean())
            assert judges.logreg_error(e, y, e_test, y_test) == expected
            fast = replica.fit_predict(e, y, np.nan_to_num(e_test, posinf=1e30, neginf=-1e30))
            np.testing.assert_array_equal(fast, expected_labels)


@verified
@pytest.mark.parametrize("classes", [2, 3, 7])
@pytest.mark.parametrize("stacked_bytes, calls", [(replica.STACKED_BYTES, 3), (1, 35)])
def test_a_cohorts_members_judged_together_get_the_pipelines_errors(classes, stacked_bytes, calls, monkeypatch):
    """`logreg_cv_errors` and `logreg_errors` fit all members' regressions together (problems of one
    shape and dtype evaluated at once, as many as `STACKED_BYTES` of data allow): each member's errors
    are the pipeline's, one at a time; a member the fast path leaves (integer embeddings) takes the
    pipeline among the others."""
    rng = np.random.default_rng([classes, 99])
    y = rng.permutation(np.arange(45) % classes)
    y_test = rng.permutation(np.arange(60) % classes)
    members, tests = [], []
    for i, kind in enumerate(KINDS[:4] * 2):
        dtype, d = (np.float32, 16) if i % 3 else (np.float64, 16 if i % 2 else 5)  # three groups of shapes
        means = rng.normal(size=(classes, d))
        members.append(np.ascontiguousarray((rng.normal(size=(45, d)) + means[y]), dtype=dtype))
        tests.append(np.ascontiguousarray((rng.normal(size=(60, d)) + means[y_test]), dtype=dtype))
        if kind == "badly scaled":
            members[-1] *= np.asarray(10.0 ** rng.uniform(-4, 4, size=d), dtype=dtype)
    members[5], tests[5] = (np.round(4 * a).astype(np.int64) for a in (members[5], tests[5]))  # the pipeline's
    expected = [reference_cv(e, y)[0] for e in members]
    minimize_many, made = replica.lbfgsb.minimize_many, []
    monkeypatch.setattr(replica.lbfgsb, "minimize_many",
                        lambda f, x0s, **options: made.append(len(x0s)) or minimize_many(f, x0s, **options))
    monkeypatch.setattr(replica, "STACKED_BYTES", stacked_bytes)
    assert judges.logreg_cv_errors(members, y) == expected
    assert len(made) == calls and sum(made) == 35  # 3 shapes and dtypes; or, capped, each fold alone
    expected_test = [float((judges.logistic_regression().fit(e, y).predict(t) != y_test).mean())
                     for e, t in zip(members, tests)]
    assert judges.logreg_errors(members, y, tests, y_test) == expected_test


@verified
def test_on_an_unverified_scipy_the_judges_fit_through_scipys_minimize(monkeypatch):
    from trainables.kit import lbfgsb

    rng = np.random.default_rng(12)
    members = [random_case(rng, 40, 8, 3, np.float32, "overlapping")[0] for _ in range(3)]
    y = rng.permutation(np.arange(40) % 3)
    expected = [reference_cv(e, y)[0] for e in members]
    monkeypatch.setattr(lbfgsb, "available", lambda: False)
    monkeypatch.setattr(lbfgsb, "minimize_many", None)  # never called
    assert judges.logreg_cv_errors(members, y) == expected


@verified
def test_labels_need_not_be_0_to_k():
    """`logreg_error` takes any integer labels, as the pipeline does (its classes_ sorted)."""
    rng = np.random.default_rng(5)
    for labels in ([3, 7], [-1, 4, 9], [10, 2, 5, 40]):
        y = rng.choice(np.array(labels, dtype=np.int32), size=60)
        e = (rng.normal(size=(60, 6)) + 0.8 * rng.normal(size=(100, 6))[y]).astype(np.float32)
        e_test = rng.normal(size=(40, 6)).astype(np.float32)
        y_test = rng.choice(np.array(labels, dtype=np.int32), size=40)
        labels_expected = judges.logistic_regression().fit(e, y).predict(e_test)
        np.testing.assert_array_equal(replica.fit_predict(e, y, e_test), labels_expected)
        assert judges.logreg_error(e, y, e_test, y_test) == float((labels_expected != y_test).mean())


def test_uncommon_inputs_take_the_pipeline():
    """Layouts and dtypes the fast path does not replicate still give the pipeline's results."""
    rng = np.random.default_rng(3)
    e, y = random_case(rng, 40, 5, 3, np.float32, "overlapping")
    expected, _, _ = reference_cv(e, y)
    assert not replica.plain(np.asfortranarray(e), y)
    assert judges.logreg_cv_error(np.asfortranarray(e), y) == reference_cv(np.asfortranarray(e), y)[0]
    assert judges.logreg_cv_error(e.astype(np.float16), y) == reference_cv(e.astype(np.float16), y)[0]
    assert judges.logreg_cv_error(e, y.astype(np.int32)) == expected
    assert judges.logreg_cv_error(e[:, :1] * 0 + 1, y) == reference_cv(e[:, :1] * 0 + 1, y)[0]


def test_non_finite_embeddings_raise_the_pipelines_error():
    rng = np.random.default_rng(4)
    e, y = random_case(rng, 30, 4, 3, np.float32, "overlapping")
    for bad in (np.nan, np.inf):
        e_bad = e.copy()
        e_bad[5, 1] = bad
        with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
            judges.logreg_cv_error(e_bad, y)
        with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
            judges.logreg_error(e_bad, y, e, y)


def test_one_class_raises_the_pipelines_error():
    e = np.arange(12.0).reshape(6, 2)
    with pytest.raises(ValueError, match="only one class"):
        judges.logreg_error(e, np.zeros(6, dtype=int), e, np.zeros(6, dtype=int))


def test_a_class_with_one_example_is_refused():
    e = np.arange(14.0).reshape(7, 2)
    with pytest.raises(SeqrepError, match="a stratified validation needs at least 2 training examples "
                                          "per class, but a class has 1"):
        judges.logreg_cv_error(e, np.array([0, 0, 0, 1, 1, 1, 2]))
    with pytest.raises(SeqrepError, match="but a class has 0"):
        judges.logreg_cv_error(e, np.array([0, 0, 0, 2, 2, 2, 2]))


@verified
def test_convergence_warning_is_kept():
    """A fit stopped by max_iter warns as LogisticRegression does (same iterations, same message)."""
    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(11)
    e, y = random_case(rng, 30, 4, 3, np.float64, "overlapping")
    x = replica.scaler_transform(e, *replica.scaler_fit(e))
    original = replica.MAX_ITER
    try:
        replica.MAX_ITER = 2
        with pytest.warns(ConvergenceWarning, match="failed to converge after 2 iteration"):
            coef, intercept = replica.logistic_fit(x, y, np.unique(y))
    finally:
        replica.MAX_ITER = original
    with pytest.warns(ConvergenceWarning, match="failed to converge after 2 iteration"):
        model = judges.logistic_regression().set_params(logisticregression__max_iter=2).fit(e, y)
    assert np.array_equal(coef, model[-1].coef_) and np.array_equal(intercept, model[-1].intercept_)


def test_an_unverified_scikit_learn_uses_the_pipeline(monkeypatch):
    rng = np.random.default_rng(6)
    e, y = random_case(rng, 30, 16, 3, np.float32, "overlapping")
    expected, _, _ = reference_cv(e, y)
    monkeypatch.setattr(replica, "VERIFIED_SKLEARN", ())
    replica.routines.cache_clear()
    try:
        assert replica.routines() is None
        calls = []
        original = judges.logistic_regression
        monkeypatch.setattr(judges, "logistic_regression", lambda: calls.append(1) or original())
        assert judges.logreg_cv_error(e, y) == expected and len(calls) == 5
    finally:
        replica.routines.cache_clear()


def test_folds_are_stratified_kfolds_and_cached():
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(8)
    y = rng.permutation(np.arange(40) % 4)
    e = np.zeros((40, 3))
    first, second = judges._folds(y, 5, e), judges._folds(y.copy(), 5, e)
    expected = list(StratifiedKFold(n_splits=5, shuffle=True, random_state=judges.SPLIT_SEED).split(e, y))
    assert len(first) == len(expected)
    for (a, b), (c, d), (f, g) in zip(first, second, expected):
        assert a is c and b is d  # the cached arrays
        np.testing.assert_array_equal(a, f)
        np.testing.assert_array_equal(b, g)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        judges._folds(y, 5, np.zeros((39, 3)))


@verified
def test_no_warnings_on_ordinary_inputs():
    rng = np.random.default_rng(9)
    e, y = random_case(rng, 30, 16, 3, np.float32, "constant")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        judges.logreg_cv_error(e, y)
        judges.logreg_error(e, y, e, y)


@pytest.fixture(scope="module")
def cbf():
    if not os.environ.get("SEQREP_DATA"):
        pytest.skip("needs $SEQREP_DATA with ucr/CBF (the UCR 2018 archive)")
    from seqrep import data

    try:
        return data.load("ucr-cbf")
    except Exception as error:  # noqa: BLE001 - the data set is optional here
        pytest.skip(f"ucr-cbf not loadable from $SEQREP_DATA: {error}")


@verified
def test_random_projections_of_cbf_match_the_pipeline(cbf):
    """Real data: CBF's 30 training series (3 classes) projected to 16..64 features, as the
    reduction trials' embeddings are judged (float32, and float64 as the cohort embeds)."""
    train = np.stack([np.asarray(s, dtype=np.float64).reshape(-1) for s in cbf.train])
    test = np.stack([np.asarray(s, dtype=np.float64).reshape(-1) for s in cbf.test])
    y, y_test = np.asarray(cbf.y_train), np.asarray(cbf.y_test)
    rng = np.random.default_rng(0)
    for d in (16, 32, 64):
        for squash in (False, True):
            projection = rng.normal(size=(train.shape[1], d)) / np.sqrt(train.shape[1])
            e, e_test = train @ projection, test @ projection
            if squash:
                e, e_test = np.tanh(e), np.tanh(e_test)
            for dtype in (np.float32, np.float64):
                e_d, e_test_d = e.astype(dtype), e_test.astype(dtype)
                assert_same_as_reference(e_d, y)
                model = judges.logistic_regression().fit(e_d, y)
                expected = float((model.predict(e_test_d) != y_test).mean())
                assert judges.logreg_error(e_d, y, e_test_d, y_test) == expected
