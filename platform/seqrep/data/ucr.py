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
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from seqrep.data.base import ClassificationData, DatasetInfo
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


def files(folder: str) -> tuple[str, str]:
    return (f"ucr/{folder}/{folder}_TRAIN.tsv", f"ucr/{folder}/{folder}_TEST.tsv")


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


def _label_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def encode(train_labels: list[str], test_labels: list[str], test_path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Class indices for both splits; a test class without a training example is an error."""
    classes = tuple(sorted(set(train_labels), key=_label_key))
    index = {c: i for i, c in enumerate(classes)}
    for number, label in enumerate(test_labels, start=1):
        if label not in index:
            raise SeqrepError(f"{test_path}, series {number}: class {label!r} has no training example "
                              f"(training classes: {', '.join(classes)})")
    return (np.array([index[c] for c in train_labels], dtype=np.int64),
            np.array([index[c] for c in test_labels], dtype=np.int64), classes)


def load(name: str, root: Path) -> ClassificationData:
    folder = folder_for(name, root)
    train_file, test_file = (root / f for f in files(folder))
    train, train_labels = read_tsv(train_file)
    test, test_labels = read_tsv(test_file)
    y_train, y_test, classes = encode(train_labels, test_labels, test_file)
    return ClassificationData(name, train, y_train, test, y_test, classes)


def info(name: str, root: str | os.PathLike | None = None) -> DatasetInfo:
    """The registry entry of `ucr-<name>` (the folder resolved under `root` when not a known name)."""
    key = name.lower()
    folder = folder_for(key, Path(root) if root is not None else None)
    return DatasetInfo(
        key,
        f"UCR time series archive 2018, {folder} (Sections 3.4.3.1, 3.5.2.1); labelled univariate series",
        lambda r: load(key, r),
        files(folder),
        source=SOURCE,
    )


def registry_entries() -> dict[str, DatasetInfo]:
    """`DatasetInfo`s for `seqrep.data`'s registry: the twelve UCR sets of Tables 9-10, characters, tidigits.

    Other `ucr-<name>` names are resolved when looked up (`seqrep.data.info`), from the folder.
    """
    from seqrep.data import characters, tidigits

    entries = {name: info(name) for name in KNOWN}
    entries["characters"] = DatasetInfo(
        "characters", "UCI Character Trajectories, 20 classes, 3 variates, stratified 80/20 split (Section 3.5.2.3)",
        characters.load, (characters.FILE,), source=characters.SOURCE)
    entries["tidigits"] = DatasetInfo(
        "tidigits", "TIDIGITS adult speakers, your own 13-d MFCC features in a .npz (Sections 3.4.3.2, 3.5.2.2)",
        tidigits.load, (tidigits.FILE,), source=tidigits.SOURCE)
    return entries
