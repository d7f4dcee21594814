"""Sequence reduction (thesis Chapter 3): the UCR / Characters / TIDIGITS loaders on small generated
files of the real layouts and their errors, the objectives against closed forms, every method's
run contract through `run_local`, and the tables' improved-rule and word columns."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import seqrep.data
from seqrep import reproduce, studies, tables
from seqrep.data import characters, tidigits, ucr
from seqrep.data.base import ClassificationData
from seqrep.errors import SeqrepError
from seqrep.method import TrialContext
from seqrep.session import run_local
from trainables.nn.neighbourhood import nca_probabilities
from trainables.rim import mutual_information
from trainables.sf import sparse_filtering

METHODS = ("nca", "ce", "ri", "osp", "rim", "sf")


def write_ucr(root: Path, folder: str, train_rows: list[str], test_rows: list[str]) -> None:
    d = root / "ucr" / folder
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{folder}_TRAIN.tsv").write_text("\n".join(train_rows) + "\n")
    (d / f"{folder}_TEST.tsv").write_text("\n".join(test_rows) + "\n")


def toy_rows(n: int, length: int, seed: int) -> list[str]:
    """Two easy classes: a rising ramp around +0.5 (label 1) or a falling one around -0.5 (label 2)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = 1 + i % 2
        ramp = (np.linspace(-1, 1, length) + 0.5) * (1 if label == 1 else -1)
        values = ramp + 0.1 * rng.normal(size=length)
        rows.append("\t".join([str(label)] + [f"{v:.5f}" for v in values]))
    return rows


# --- UCR ---------------------------------------------------------------------------------------

def test_ucr_loader_reads_labels_lengths_and_trailing_nan_padding(tmp_path):
    write_ucr(tmp_path, "MySet", ["1\t0.5\t1.5\t2.5", "-1\t3\t4\tNaN", "1\t7\tNaN\tNaN"], ["-1\t1\t2\t3"])
    data = seqrep.data.load("ucr-myset", tmp_path)  # any folder, found case-insensitively
    assert isinstance(data, ClassificationData)
    assert [len(s) for s in data.train] == [3, 2, 1]
    assert data.classes == ("-1", "1")
    assert data.y_train.tolist() == [1, 0, 1] and data.y_test.tolist() == [0]
    np.testing.assert_array_equal(data.train[0][:, 0], [0.5, 1.5, 2.5])
    assert data.n_features == 1


@pytest.mark.parametrize("rows,message", [
    (["1\t0.5\t1.5", "2\t1\t2\t3"], "TRAIN.tsv, line 2: 4 fields, but line 1 has 3 (ragged rows"),
    (["1\t0.5\tNaN\t1.5", "2\t1\t2\t3"], "TRAIN.tsv, line 1: NaN inside the series at column 2"),
    (["1\t0.5\t1\t1.5", "\t1\t2\t3"], "TRAIN.tsv, line 2: the class label (column 0) is missing"),
    (["1\t0.5\tabc\t1.5"], "TRAIN.tsv, line 1: not a number"),
])
def test_ucr_bad_rows_name_the_file_and_line(tmp_path, rows, message):
    write_ucr(tmp_path, "Bad", rows, ["1\t1\t2\t3"])
    with pytest.raises(SeqrepError, match=re.escape(f"Bad/Bad_{message}")):
        seqrep.data.load("ucr-bad", tmp_path)


def test_ucr_test_class_without_training_example(tmp_path):
    write_ucr(tmp_path, "Lonely", ["1\t1\t2", "1\t2\t3"], ["1\t1\t2", "3\t0\t0"])
    with pytest.raises(SeqrepError, match=r"Lonely_TEST.tsv, series 2: class '3' has no training example"):
        seqrep.data.load("ucr-lonely", tmp_path)


def test_registry_lists_the_twelve_ucr_sets_and_the_missing_test_file_error(tmp_path):
    names = seqrep.data.names()
    assert set(ucr.KNOWN) | {"characters", "tidigits"} <= set(names)
    assert seqrep.data.info("ucr-twopatterns", tmp_path).files == ("ucr/TwoPatterns/TwoPatterns_TRAIN.tsv",
                                                                  "ucr/TwoPatterns/TwoPatterns_TEST.tsv")
    write_ucr(tmp_path, "TwoPatterns", toy_rows(4, 5, 0), [])
    (tmp_path / "ucr/TwoPatterns/TwoPatterns_TEST.tsv").unlink()
    with pytest.raises(SeqrepError) as err:
        seqrep.data.load("ucr-twopatterns", tmp_path)
    assert str(err.value).startswith(
        f"data set 'ucr-twopatterns' needs {tmp_path}/ucr/TwoPatterns/TwoPatterns_TEST.tsv, which is not in the data directory")
    assert "UCRArchive_2018.zip" in str(err.value)


def test_a_partial_test_copy_stands_in_for_a_missing_test_file_and_says_so(tmp_path, capsys):
    """Wafer's copy (PROVENANCE.md): labels 1, 2 for the archive's -1, 1, the first test series missing."""
    write_ucr(tmp_path, "Wafer", ["-1\t0\t1\t2", "1\t2\t1\t0", "1\t1\t1\t1"], [])
    (tmp_path / "ucr/Wafer/Wafer_TEST.tsv").unlink()
    copy = tmp_path / ucr.PARTIAL_TESTS["Wafer"][0]
    copy.parent.mkdir()
    np.save(copy, np.array([[2, 5, 6, 7], [1, 8, 9, 10], [2, 1, 1, 1]], dtype=np.float32))
    assert seqrep.data.missing_files("ucr-wafer", tmp_path) == []
    assert seqrep.data.info("ucr-wafer", tmp_path).description.endswith(
        "; test split: the non-standard copy without the first of the archive's 6,164 series (PROVENANCE.md)")
    ucr._say_partial.cache_clear()
    data = seqrep.data.load("ucr-wafer", tmp_path)
    assert seqrep.data.load("ucr-wafer", tmp_path).y_test.tolist() == data.y_test.tolist()  # said once
    assert data.classes == ("-1", "1") and data.y_train.tolist() == [0, 1, 1] and data.y_test.tolist() == [1, 0, 1]
    np.testing.assert_array_equal(data.test[1][:, 0], [8, 9, 10])
    assert capsys.readouterr().out == (
        "seqrep: ucr-wafer: the test split is the non-standard copy Wafer_TEST_first_row_missing.npy (3 of the "
        "archive's 6,164 test series, the first missing; see the data directory's PROVENANCE.md): a test error "
        "(a mean over the test series) is within 1/6,164 of the full split's\n")
    np.save(copy, np.array([[3, 5, 6, 7]], dtype=np.float32))
    with pytest.raises(SeqrepError, match=r"Wafer_TEST_first_row_missing.npy: labels 3 are not among the copy's 1, 2$"):
        seqrep.data.load("ucr-wafer", tmp_path)
    (tmp_path / "ucr/Wafer/Wafer_TEST.tsv").write_text("1\t1\t2\t3\n")  # the archive's file wins
    assert seqrep.data.info("ucr-wafer", tmp_path).files[1] == "ucr/Wafer/Wafer_TEST.tsv"
    assert len(seqrep.data.load("ucr-wafer", tmp_path).test) == 1 and capsys.readouterr().out == ""


@pytest.mark.skipif(not (Path(seqrep.data.resolve_data_dir()) / "ucr/CBF/CBF_TEST.tsv").exists(),
                    reason="needs ucr/CBF in $SEQREP_DATA (the UCR 2018 archive)")
def test_real_cbf_counts():
    data = seqrep.data.load("ucr-cbf")
    assert (len(data.train), len(data.test), data.n_classes) == (30, 900, 3)
    assert {len(s) for s in data.train} == {128}


# --- Characters and TIDIGITS -------------------------------------------------------------------

def write_characters(path: Path, n_per_class: int = 5, classes: int = 4) -> list[int]:
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    cells = np.empty((1, n_per_class * classes), dtype=object)
    labels, lengths = [], []
    for i in range(n_per_class * classes):
        t = 6 + i % 5
        a = np.zeros((3, 12))
        a[:, :t] = rng.normal(size=(3, t)) + 0.1  # trailing zero columns: the shifted file's padding
        cells[0, i] = a
        labels.append(1 + i % classes)
        lengths.append(t)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"mixout": cells, "consts": {"charlabels": np.array(labels, dtype=np.uint8)[None, :],
                                               "key": np.array(["a", "b", "c", "d"], dtype=object)}})
    return lengths


def test_characters_loader_on_a_generated_mat_file(tmp_path):
    lengths = write_characters(tmp_path / characters.FILE)
    data = seqrep.data.load("characters", tmp_path)
    assert (len(data.train), len(data.test), data.n_classes, data.n_features) == (16, 4, 4, 3)
    assert np.bincount(data.y_test).tolist() == [1, 1, 1, 1]  # stratified 20%
    assert sorted(len(s) for s in data.train + data.test) == sorted(lengths)
    assert data.classes == ("a", "b", "c", "d")  # consts.key names the labels 1..4


def test_characters_and_tidigits_missing_files_say_where_to_get_them(tmp_path):
    with pytest.raises(SeqrepError, match=r"needs .*characters/mixoutALL_shifted.mat.*archive.ics.uci.edu/dataset/175"):
        seqrep.data.load("characters", tmp_path)
    with pytest.raises(SeqrepError, match=r"needs .*tidigits/tidigits_mfcc.npz.*LDC93S10"):
        seqrep.data.load("tidigits", tmp_path)


def test_tidigits_loader_layout_and_errors(tmp_path):
    path = tmp_path / tidigits.FILE
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lengths = np.array([3, 5, 2, 4])
    arrays = dict(train_frames=rng.normal(size=(14, 13)), train_lengths=lengths, train_y=np.array([0, 1, 0, 1]),
                  test_frames=rng.normal(size=(3, 13)), test_lengths=np.array([3]), test_y=np.array([1]))
    np.savez(path, **arrays)
    data = seqrep.data.load("tidigits", tmp_path)
    assert [len(s) for s in data.train] == [3, 5, 2, 4] and data.n_features == 13
    np.testing.assert_allclose(data.train[1], arrays["train_frames"][3:8].astype(np.float32))
    np.savez(path, **{**arrays, "train_lengths": np.array([3, 5, 2, 3])})
    with pytest.raises(SeqrepError, match="train_lengths sum to 13 but train_frames has 14 rows"):
        seqrep.data.load("tidigits", tmp_path)


def test_reproduce_table11_without_tidigits_fails_before_any_trial(tmp_path):
    options = studies.StudyOptions(data_dir=str(tmp_path), storage=str(tmp_path / "studies"))
    with pytest.raises(SeqrepError, match=r"data set 'tidigits' needs .*tidigits_mfcc.npz"):
        reproduce.reproduce("table11", None, options, tmp_path / "tables")
    assert not (tmp_path / "studies").exists()


# --- objectives against closed forms -----------------------------------------------------------

def test_nca_probabilities_by_brute_force():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(6, 2))
    y = np.array([0, 0, 1, 1, 2, 0])
    p = nca_probabilities(torch.tensor(e), torch.tensor(y)).numpy()
    for i in range(6):
        w = np.array([0.0 if j == i else math.exp(-((e[i] - e[j]) ** 2).sum()) for j in range(6)])
        np.testing.assert_allclose(p[i], (w * (y == y[i])).sum() / w.sum(), rtol=1e-12)
    q = nca_probabilities(torch.tensor(e[:2]), torch.tensor(y[:2]), torch.tensor(e[2:]), torch.tensor(y[2:])).numpy()
    w = np.exp(-((e[:2, None] - e[None, 2:]) ** 2).sum(-1))
    np.testing.assert_allclose(q, (w * (y[:2, None] == y[None, 2:])).sum(1) / w.sum(1), rtol=1e-12)


def test_rim_mutual_information_closed_forms():
    assert abs(float(mutual_information(torch.zeros(4, 3)))) < 1e-12  # every p(z|x) uniform: MI 0
    confident = torch.tensor([[50.0, 0.0], [0.0, 50.0]], dtype=torch.float64)
    assert math.isclose(float(mutual_information(confident)), math.log(2), rel_tol=1e-9)


def test_sparse_filtering_closed_form_and_scale_invariance():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert math.isclose(float(sparse_filtering(e, eps=0.0)), 1.0, rel_tol=1e-12)  # perfectly sparse rows: 1 each
    dense = torch.ones(3, 2, dtype=torch.float64)
    assert math.isclose(float(sparse_filtering(dense)), math.sqrt(2), rel_tol=1e-6)
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert math.isclose(float(sparse_filtering(3.0 * x)), float(sparse_filtering(x)), rel_tol=1e-6)


# --- the methods through run_local -------------------------------------------------------------

@pytest.fixture(scope="module")
def ramps(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_ucr(root, "Ramps", toy_rows(20, 12, 0), toy_rows(20, 12, 1))
    return root


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_reports_and_judges(method, ramps, tmp_path):
    epochs = 6 if method == "ce" else 2  # a softmax from random weights needs a few Rprop passes
    ctx = TrialContext(dataset="ucr-ramps", max_epochs=epochs, seed=0, metric="valid_error", mode="min")
    config = {"hidden_units": 6, "output_units": 3, "transfer": "tanh", "pooling": "mean", "init_std": 0.3}
    if method in ("nca", "ce"):
        config.update(optimizer="rprop", step_rate=0.05)
    session = run_local(method, config, ctx, data_dir=str(ramps), out_dir=tmp_path)
    assert session.status == "completed"
    assert [h["epoch"] for h in session.history] == list(range(1, epochs + 1))
    final = session.final
    assert {"valid_error", "test_error", "valid_initial_error", "valid_improved"} <= set(final)
    assert final["valid_improved"] in (0.0, 1.0)
    assert final["valid_improved"] == (1.0 if method == "ri" or final["valid_error"] < final["valid_initial_error"] else 0.0)
    assert final["test_error"] < 0.35, final  # two easy classes: chance is 0.5
    if method == "nca":
        assert {"valid_nca_prob", "test_nca_prob", "train_nca_prob", "test_1nn_accuracy"} <= set(final)
        assert final["test_1nn_accuracy"] == pytest.approx(1 - final["test_error"])
        # Table 11's NCA cell: 1 - the mean NCA probability, not the 1-NN error
        assert final["test_nca_error"] == 1.0 - final["test_nca_prob"]
        assert final["valid_nca_error"] == 1.0 - final["valid_nca_prob"]
    kept = np.load(tmp_path / "embeddings.npz")  # Figure 9's input, drawn by the report for the selected trial
    assert kept["e"].shape[0] == 20 and kept["e"].dtype == np.float32 and list(kept["y"]) == [0, 1] * 10
    assert int(kept["seed"]) == 0 and list(kept["classes"]) == ["1", "2"]
    # and Figures 11 and 12's arrays (`trainables.kit.reduction_figures`): up to four features; mean
    # pooling of tanh units is sensitive to every one of the 12 steps
    features = min(4, kept["e"].shape[1])
    assert kept["nn_index"].shape == (2, 6) and kept["nn_series"].shape == (2, 6, 12)
    assert kept["jac"].shape == (features, 12) and kept["jac_sample"].shape == (12, 1) and (kept["jac"] > 0).all()


def test_stochastic_pooling_and_lbfgs_and_normalisation_run(ramps, tmp_path):
    ctx = TrialContext(dataset="ucr-ramps", max_epochs=1, seed=1, metric="valid_error", mode="min")
    s = run_local("nca", {"hidden_units": 5, "output_units": 2, "transfer": "lstm", "pooling": "sum",
                          "optimizer": "lbfgs", "lbfgs_iterations": 3, "normalise": "dataset"}, ctx, data_dir=str(ramps),
                  out_dir=tmp_path)
    assert s.status == "completed"
    s = run_local("sf", {"hidden_units": 5, "output_units": 2, "transfer": "rectifier", "pooling": "stochastic",
                         "normalise": "sequence", "batch_fraction": 0.25}, ctx, data_dir=str(ramps), out_dir=tmp_path)
    assert s.status == "completed"


def test_config_rules_name_the_value():
    from trainables import sf

    with pytest.raises(SeqrepError, match=r"trainables.sf.Config: 0 < batch_fraction <= 1 must hold, but got batch_fraction=1.5"):
        sf.Config.from_dict({"batch_fraction": 1.5})


# --- tables ------------------------------------------------------------------------------------

IMPROVED = ("valid_improved",)  # what the reduction methods declare (DECLARES.row_requires)


def test_best_trial_skips_trials_that_did_not_improve():
    trials = pd.DataFrame({"trial_id": ["a", "b", "c"], "status": ["completed"] * 3,
                           "valid_error": [0.1, 0.2, 0.3], "valid_improved": [0.0, 1.0, 1.0]})
    assert tables.best_trial(trials, "valid_error", "min", IMPROVED)["trial_id"] == "b"
    assert tables.best_trial(trials.drop(columns="valid_improved"), "valid_error", "min", IMPROVED)["trial_id"] == "a"


def test_table10_rows_take_words_from_the_best_trials_config(tmp_path, monkeypatch):
    from seqrep import summary

    trials = pd.DataFrame({"trial_id": ["a", "b"], "status": ["completed"] * 2, "valid_error": [0.1, 0.2],
                           "valid_improved": [1.0, 1.0], "test_error": [0.15, 0.25],
                           "config.pooling": ["mean", "max"], "config.transfer": ["rectifier", "tanh"]})
    (tmp_path / summary.SUMMARY_FILE).write_text("")
    monkeypatch.setattr(summary, "read", lambda directory: trials)
    frame = tables.build("table10", lambda space, dataset: tmp_path if space == "table10-sf" else None, ["ucr-cbf"])
    sf_rows = frame[frame["space"] == "table10-sf"].set_index("metric")
    assert sf_rows.loc["test_error", "ours"] == 0.15
    assert sf_rows.loc["pooling", "ours"] == "mean" and sf_rows.loc["transfer", "ours"] == "rectifier"
    assert "| ucr-cbf | SF | 0.14 | 0.1500 | mean | mean | rectifier | rectifier |" in tables.to_markdown("table10", frame)


def test_cross_validated_error_is_a_count_over_n():
    from trainables.kit.judges import logreg_cv_error

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 10)
    e = rng.normal(size=(30, 2)) + y[:, None] * 0.8
    error = logreg_cv_error(e, y)
    assert error * 30 == pytest.approx(round(error * 30), abs=1e-12) and 0 < error < 2 / 3


def test_cross_validated_error_is_cross_val_predicts():
    """The judge's own fold loop gives scikit-learn's `cross_val_predict` error, to the last bit."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from trainables.kit.judges import logistic_regression, logreg_cv_error

    rng = np.random.default_rng(1)
    for _ in range(40):
        n, classes = int(rng.integers(12, 60)), int(rng.integers(2, 5))
        y = rng.permutation(np.arange(n) % classes)
        e = rng.normal(size=(n, int(rng.integers(2, 17)))) + y[:, None] * rng.normal()
        folds = StratifiedKFold(n_splits=min(5, int(np.bincount(y).min())), shuffle=True, random_state=0)
        expected = float((cross_val_predict(logistic_regression(), e, y, cv=folds) != y).mean())
        assert logreg_cv_error(e, y) == expected
