"""The UCR time series archive, 2018 release (thesis Sections 3.4.3.1 and 3.5.2.1; Tables 9 and 10).

Layout: `ucr/<Name>/<Name>_TRAIN.tsv` and `ucr/<Name>/<Name>_TEST.tsv` in the data directory, one
series per line, tab-separated, the class label in column 0 and the values after it. Data set
names are `ucr-<name>` in lower case, for any folder in that layout (`ucr-cbf` -> `ucr/CBF/`,
matched case-insensitively); the twelve sets of Tables 9 and 10 are listed even when absent.

Variable lengths: the 2018 archive pads shorter series with trailing NaN, so trailing NaNs end a
series (sequences of different lengths are supported). Every other defect stops loading with the
file and line: a row with a different number of fields than the file's first row (ragged), a NaN
or non-number inside a series, an empty series, a missing label, a test class that has no
training example.

Where the data directory lacks the archive's test file of TwoPatterns or Wafer but holds the
partial copy its PROVENANCE.md describes (the first test series missing: 3,999 of 4,000 and 6,163
of 6,164), that copy is the test split (`PARTIAL_TESTS`), said when loading and in `seqrep data
list`: a test error on it is within 1/4,000 (1/6,164) of the full split's.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np

from seqrep.data.base import ClassificationData, DatasetInfo, encode
from seqrep.errors import SeqrepError

PREFIX = "ucr-"
SOURCE = ("the UCR time series archive 2018 (https://www.cs.ucr.edu/~eamonn/time_series_data_2018/, "
          "UCRArchive_2018.zip; unpack <Name>/ into <data dir>/ucr/)")
# Tables 9 and 10: seqrep name -> the archive's folder name
KNOWN = {
    "ucr-wafer": "Wafer", "ucr-twopatterns": "TwoPatterns", "ucr-swedishleaf": "SwedishLeaf",
    "ucr-osuleaf": "OSULeaf", "ucr-faceall": "FaceAll", "ucr-syntheticcontrol": "SyntheticControl",
    "ucr-ecg200": "ECG200", "ucr-yoga": "Yoga", "ucr-beef": "Beef", "ucr-cbf": "CBF",
    "ucr-lightning2": "Lightning2", "ucr-lightning7": "Lightning7",
}


# Non-standard test splits the data directory may hold where the archive's <Name>_TEST.tsv is absent
# (its PROVENANCE.md): third-party float32 copies of the 2018 test file that lost its first series
# (label in column 0, as the values' floats), with the labels they use -> the archive's labels
PARTIAL_TESTS = {
    "TwoPatterns": ("ucr/TwoPatterns/nonstandard_test_femartip/TwoPatterns_TEST_first_row_missing.npy",
                    {"1": "1", "2": "2", "3": "3", "4": "4"}, 4000),
    "Wafer": ("ucr/Wafer/nonstandard_test_femartip/Wafer_TEST_first_row_missing.npy", {"1": "-1", "2": "1"}, 6164),
}


def files(folder: str, root: Path | None = None) -> tuple[str, str]:
    """The training and test files of `folder`; the test file is its partial copy (`PARTIAL_TESTS`)
    where `root` lacks the archive's but holds that."""
    train, test = f"ucr/{folder}/{folder}_TRAIN.tsv", f"ucr/{folder}/{folder}_TEST.tsv"
    return train, partial_test(folder, root) or test


def partial_test(folder: str, root: Path | None) -> str | None:
    """The partial test copy `root` holds in place of the archive's test file, else None."""
    if root is None or folder not in PARTIAL_TESTS or (root / f"ucr/{folder}/{folder}_TEST.tsv").exists():
        return None
    path = PARTIAL_TESTS[folder][0]
    return path if (root / path).exists() else None


def read_partial(path: Path, labels: dict[str, str]) -> tuple[list[np.ndarray], list[str]]:
    """Series (T, 1) float32 and the archive's labels from a partial test copy (`PARTIAL_TESTS`)."""
    rows = np.load(path)
    if rows.ndim != 2 or rows.shape[1] < 2 or not np.isfinite(rows).all():
        raise SeqrepError(f"{path}: expected a finite (series, 1 + length) array, got shape {rows.shape}")
    written = [str(int(v)) if float(v).is_integer() else str(v) for v in rows[:, 0]]
    unknown = sorted(set(written) - set(labels))
    if unknown:
        raise SeqrepError(f"{path}: labels {', '.join(unknown)} are not among the copy's {', '.join(labels)}")
    return [r[1:, None].astype(np.float32) for r in rows], [labels[w] for w in written]


def folder_for(name: str, root: Path | None) -> str:
    """The archive folder of `ucr-<name>`: a known name, else a case-insensitive match under root/ucr."""
    key = name.lower()
    if key in KNOWN:
        return KNOWN[key]
    wanted = key[len(PREFIX):]
    if root is not None and (root / "ucr").is_dir():
        for entry in sorted((root / "ucr").iterdir()):
            if entry.is_dir() and entry.name.lower() == wanted:
                return entry.name
    return wanted


def read_tsv(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """Series (T_i, 1) float32 and their labels (text as written) from one UCR TSV file."""
    series, labels, width = [], [], None
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").rstrip("\r").split("\t")
            if len(fields) == 1 and "," in fields[0]:
                fields = fields[0].split(",")  # the older comma-separated copies
            if width is None:
                width = len(fields)
            elif len(fields) != width:
                raise SeqrepError(f"{path}, line {number}: {len(fields)} fields, but line 1 has {width} "
                                  "(ragged rows; pad shorter series with trailing NaN as the 2018 archive does)")
            label = fields[0].strip()
            if label == "" or label.lower() == "nan":
                raise SeqrepError(f"{path}, line {number}: the class label (column 0) is missing")
            try:
                values = np.array([float(v) if v.strip() else math.nan for v in fields[1:]], dtype=np.float64)
            except ValueError as err:
                raise SeqrepError(f"{path}, line {number}: not a number ({err})") from None
            finite = ~np.isnan(values)
            length = int(np.flatnonzero(finite)[-1]) + 1 if finite.any() else 0
            if length == 0:
                raise SeqrepError(f"{path}, line {number}: the series is empty (no values after the label)")
            if not finite[:length].all():
                column = int(np.flatnonzero(~finite[:length])[0]) + 1
                raise SeqrepError(f"{path}, line {number}: NaN inside the series at column {column} "
                                  "(only trailing NaNs, the archive's padding, are allowed)")
            if np.isinf(values[:length]).any():
                raise SeqrepError(f"{path}, line {number}: infinite value in the series")
            series.append(values[:length, None].astype(np.float32))
            labels.append(label)
    if not series:
        raise SeqrepError(f"{path}: no series in the file")
    return series, labels


def load(name: str, root: Path) -> ClassificationData:
    folder = folder_for(name, root)
    train_file, test_file = (root / f for f in files(folder, root))
    train, train_labels = read_tsv(train_file)
    if partial_test(folder, root):
        test, test_labels = read_partial(test_file, PARTIAL_TESTS[folder][1])
        _say_partial(name, test_file, len(test))
    else:
        test, test_labels = read_tsv(test_file)
    y_train, y_test, classes = encode(train_labels, test_labels, test_file)
    return ClassificationData(name, train, y_train, test, y_test, classes)


@functools.cache  # once per process and file: a table's studies each load their data set
def _say_partial(name: str, path: Path, series: int) -> None:
    full = PARTIAL_TESTS[path.parents[1].name][2]
    print(f"seqrep: {name}: the test split is the non-standard copy {path.name} ({series:,} of the archive's "
          f"{full:,} test series, the first missing; see the data directory's PROVENANCE.md): a test error (a mean "
          f"over the test series) is within 1/{full:,} of the full split's", flush=True)


def info(name: str, root: str | os.PathLike | None = None) -> DatasetInfo:
    """The registry entry of `ucr-<name>` (the folder resolved under `root` when not a known name)."""
    key = name.lower()
    root = Path(root) if root is not None else None
    folder = folder_for(key, root)
    partial = (f"; test split: the non-standard copy without the first of the archive's "
               f"{PARTIAL_TESTS[folder][2]:,} series (PROVENANCE.md)" if partial_test(folder, root) else "")
    return DatasetInfo(
        key,
        f"UCR time series archive 2018, {folder} (Sections 3.4.3.1, 3.5.2.1); labelled univariate series{partial}",
        lambda r: load(key, r),
        files(folder, root),
        source=SOURCE,
    )


def registry_entries() -> dict[str, DatasetInfo]:
    """`DatasetInfo`s of the twelve UCR sets of Tables 9-10 for `seqrep.data`'s registry.

    Other `ucr-<name>` names are resolved when looked up (`seqrep.data.info`), from the folder.
    """
    return {name: info(name) for name in KNOWN}
