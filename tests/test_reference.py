"""Checks of the thesis reference tables in results/reference/*.csv."""

from pathlib import Path

import pandas as pd
import pytest

REFERENCE_DIR = Path(__file__).parents[1] / "results" / "reference"

HEADER = ["dataset", "method", "metric", "thesis", "space", "note"]

# Row counts worked out from the thesis text (cells shown as "–" have no row).
ROW_COUNTS = {
    3: 15,   # 4 data sets x 4 columns, minus Deep RNN on Piano-midi.de
    6: 8,    # 2 data sets x 4 columns
    7: 27,   # 6 methods x 4 cells + GP (2) + LWPR (1)
    9: 32,   # 8 data sets x 4 columns
    10: 72,  # 6 data sets x 4 methods x (error, pooling, transfer)
    11: 18,  # 6 methods x (error, pooling, transfer)
    12: 14,  # 4 methods x 3 + 2 Fisher kernel errors
    13: 23,  # 4 data sets x 5 columns, minus Deep RNN on Piano-midi.de, plus 4 DMM baseline rows (no thesis value)
    14: 4,   # 3 MSE + 1 NLL
}

WORD_METRICS = {"pooling", "transfer"}

DATASETS = {
    "toy", "sarcos", "piano-midi", "nottingham", "musedata", "jsb",
    "ucr-wafer", "ucr-twopatterns", "ucr-swedishleaf", "ucr-osuleaf",
    "ucr-faceall", "ucr-syntheticcontrol", "ucr-ecg200", "ucr-yoga",
    "ucr-beef", "ucr-cbf", "ucr-lightning2", "ucr-lightning7",
    "tidigits", "characters", "mocap",
}

# (table, dataset, method, metric) -> value as printed in the thesis.
SPOT_CHECKS = [
    (3, "jsb", "FD", "test_nll", "8.01"),
    (3, "piano-midi", "plain", "test_nll", "7.58"),
    (3, "musedata", "RNN-NADE", "test_nll", "5.60"),
    (3, "nottingham", "Deep RNN", "test_nll", "2.95"),
    (6, "piano-midi", "sRNN", "test_nll", "7.89"),
    (6, "piano-midi", "FD-RNN", "test_nll", "7.44"),
    (6, "jsb", "FD-LSTM", "test_nll", "8.04"),
    (6, "jsb", "LSTM", "test_nll", "8.38"),
    (7, "toy", "NN", "test_mse", "4.2395"),
    (7, "toy", "NN", "test_nll", "2.2694"),
    (7, "toy", "DN", "test_mse", "3.8706"),
    (7, "toy", "DN", "test_nll", "9.7303"),
    (7, "toy", "FD", "test_nll", "43486.7"),
    (7, "sarcos", "NN", "test_nll", "-1.1893"),
    (7, "sarcos", "LWPR", "test_mse", "0.040"),
    (7, "sarcos", "FAWN-ROPD", "test_mse", "0.0123"),
    (9, "ucr-twopatterns", "NCA", "test_1nn_accuracy", "0.99725"),
    (9, "ucr-twopatterns", "1NN-DTW", "test_1nn_accuracy", "0.9985"),
    (9, "ucr-osuleaf", "NCA", "test_nca_prob", "0.457"),
    (9, "ucr-yoga", "NCA", "train_nca_prob", "0.684"),
    (10, "ucr-twopatterns", "SF", "transfer", "softsign"),
    (10, "ucr-beef", "SF", "test_error", "0.13"),
    (10, "ucr-cbf", "RIM", "test_error", "0.1"),
    (10, "ucr-lightning7", "OSP", "test_error", "0.6"),
    (10, "ucr-ecg200", "RIM", "pooling", "max"),
    (11, "tidigits", "RI", "test_error", "0.0637"),
    (11, "tidigits", "RIM", "test_error", "0.1434"),
    (11, "tidigits", "CE", "test_error", "0.079"),
    (11, "tidigits", "NCA", "test_nca_error", "0.021"),  # 1 - 0.979, the mean NCA probability (3.4.3.2)
    (7, "sarcos", "GP", "test_msll", "2.25"),  # R&W's MSLL (-2.25), not an NLL
    (11, "tidigits", "OSP", "transfer", "softplus"),
    (12, "characters", "RI", "test_error", "0.014"),
    (12, "characters", "RIM", "pooling", "sum"),
    (12, "characters", "Fisher Kernels", "test_error", "0.0446"),
    (12, "characters", "Discriminative Fisher Kernels", "test_error", "0.0326"),
    (13, "jsb", "STORN", "test_nll", "6.91"),
    (13, "nottingham", "STORN", "test_nll", "2.85"),
    (13, "piano-midi", "STORN", "test_nll", "7.13"),
    (13, "musedata", "sRNN", "test_nll", "6.99"),
    (14, "mocap", "STORN", "test_nll", "15.99"),
    (14, "mocap", "STORN", "test_mse", "6.58"),
    (14, "mocap", "RNN-RBM", "test_mse", "20.1"),
    (14, "mocap", "RT-RBM", "test_mse", "16.2"),
]


def load(table):
    path = REFERENCE_DIR / f"table{table}.csv"
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.mark.parametrize("table", sorted(ROW_COUNTS))
def test_header(table):
    with open(REFERENCE_DIR / f"table{table}.csv", encoding="utf-8") as fh:
        assert fh.readline().rstrip("\r\n") == ",".join(HEADER)
    assert list(load(table).columns) == HEADER


@pytest.mark.parametrize("table", sorted(ROW_COUNTS))
def test_row_count(table):
    assert len(load(table)) == ROW_COUNTS[table]


@pytest.mark.parametrize("table", sorted(ROW_COUNTS))
def test_keys_unique(table):
    df = load(table)
    assert not df.duplicated(["dataset", "method", "metric"]).any()


@pytest.mark.parametrize("table", sorted(ROW_COUNTS))
def test_values(table):
    df = load(table)
    assert set(df["dataset"]) <= DATASETS
    # only the DMM baseline, which the thesis does not have, may leave the thesis cell empty
    assert ((df["thesis"] != "") | (df["method"] == "DMM")).all()
    assert not df["thesis"].str.contains("–").any()
    for _, row in df.iterrows():
        if row["metric"] in WORD_METRICS:
            assert row["thesis"].isalpha(), row.to_dict()
        else:
            if row["thesis"] != "":
                float(row["thesis"])  # raises if not numeric


@pytest.mark.parametrize("table", [10, 11, 12])
def test_pooling_transfer_rows(table):
    df = load(table)
    errors = df[df["metric"].isin(["test_error", "test_nca_error"])]
    for _, row in errors.iterrows():
        others = df[(df["dataset"] == row["dataset"]) & (df["method"] == row["method"])]
        expected = {row["metric"]} if row["space"] == "" else {row["metric"], "pooling", "transfer"}
        assert set(others["metric"]) == expected


def test_readings_that_are_not_what_their_column_says():
    """Table 11's NCA cell is 1 - the mean NCA probability, compared with test_nca_error; Table 7's
    GP "NLL" is an MSLL, kept apart from the test_nll rows (results/reference/README.md)."""
    t11, t7 = load(11), load(7)
    assert set(t11[t11["metric"] == "test_nca_error"]["method"]) == {"NCA"}
    assert float(t11[(t11["method"] == "NCA") & (t11["metric"] == "test_nca_error")]["thesis"].iloc[0]) == \
        pytest.approx(1 - 0.979, abs=1e-12)
    assert "test_nll" not in set(t7[t7["method"] == "GP"]["metric"])
    assert "not comparable" in t7[t7["metric"] == "test_msll"]["note"].iloc[0]


def test_table8_holds_literature_rows_and_fawn_rows_without_thesis_numbers():
    """The thesis's Table 8 is lost: FAWN rows have no thesis number, PBP and MC-dropout rows are
    the published means with their source in the note (results/reference/README.md)."""
    df = load(8)
    fawn = df[df["method"].isin(["FAWN-VB", "FAWN-ROPD"])]
    assert (fawn["thesis"] == "").all() and set(fawn["space"]) == {"table8-fawn-vb", "table8-fawn-ropd"}
    literature = df[df["method"].isin(["PBP", "MC-dropout"])]
    assert (literature["space"] == "").all() and len(literature) == 40
    assert literature["note"].str.contains("Hernandez-Lobato and Adams \\(2015\\)|Gal and Ghahramani \\(2016\\)").all()
    assert "Table 8" in (REFERENCE_DIR / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("table,dataset,method,metric,value", SPOT_CHECKS)
def test_spot_checks(table, dataset, method, metric, value):
    df = load(table)
    hit = df[(df["dataset"] == dataset) & (df["method"] == method) & (df["metric"] == metric)]
    assert len(hit) == 1
    assert hit["thesis"].iloc[0] == value
    if metric not in WORD_METRICS:
        assert float(hit["thesis"].iloc[0]) == pytest.approx(float(value))


def test_spaces():
    assert set(load(3)["space"]) == {"table1-fd-rnn", "table3-srnn", ""}
    assert set(load(6)["space"]) == {"table4-srnn", "table4-lstm", "table4-fd-rnn", "table4-fd-lstm"}
    t7 = load(7)
    for _, row in t7.iterrows():
        if row["method"] in ("GP", "LWPR"):
            assert row["space"] == ""
        else:
            assert row["space"] == f"table7-{row['method'].lower()}-{row['dataset']}"
    t9 = load(9)
    assert set(t9.loc[t9["method"] == "NCA", "space"]) == {"table9-nca"}
    assert set(t9.loc[t9["method"] == "1NN-DTW", "space"]) == {""}
    for table in (10, 11):
        df = load(table)
        assert (df["space"] == f"table{table}-" + df["method"].str.lower()).all()
    t12 = load(12)
    ours = t12["method"].isin(["RI", "OSP", "SF", "RIM"])
    assert (t12.loc[ours, "space"] == "table12-" + t12.loc[ours, "method"].str.lower()).all()
    assert set(t12.loc[~ours, "space"]) == {""}
    assert dict(zip(load(13)["method"], load(13)["space"])) == {
        "STORN": "table13-storn", "FD-RNN": "table1-fd-rnn", "sRNN": "table3-srnn",
        "RNN-NADE": "", "Deep RNN": "", "DMM": "table13-dmm",
    }
    assert dict(zip(load(14)["method"], load(14)["space"])) == {
        "STORN": "table14-storn", "RNN-RBM": "", "RT-RBM": "",
    }
