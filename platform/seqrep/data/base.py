"""Dataset containers shared by loaders and methods."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from seqrep.errors import SeqrepError


@dataclasses.dataclass(frozen=True)
class RegressionData:
    """Inputs (n, d_in) and targets (n, d_out) per split, float32, in the targets' original units."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    # Set when the targets above are standardised, (y - y_mean) / y_std per output dimension:
    # the methods then report MSE and NLL in the original units (trainables.kit.regression_fit).
    y_mean: np.ndarray | None = None
    y_std: np.ndarray | None = None
    # Known for generated data (the toy set): the input range and the true conditional mean and
    # variance, which the predictive plot draws beside the model's (Figure 6).
    x_range: tuple[float, float] | None = None
    true_mean: Callable[[np.ndarray], np.ndarray] | None = None
    true_variance: Callable[[np.ndarray], np.ndarray] | None = None

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split must be train, valid or test, got {split!r}")
        return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")


def standardise(name: str, x_train, y_train, x_valid, y_valid, x_test, y_test) -> RegressionData:
    """Standardise every split with the training rows' mean and std (constant columns: std 1)."""
    arrays = [np.asarray(a, dtype=np.float64) for a in (x_train, y_train, x_valid, y_valid, x_test, y_test)]
    for label, a in zip(("x_train", "y_train", "x_valid", "y_valid", "x_test", "y_test"), arrays):
        if not np.isfinite(a).all():
            row = int(np.argwhere(~np.isfinite(a))[0][0])
            raise SeqrepError(f"{name}: non-finite value in {label} (row {row}); the data must be finite")
    x_mean, x_std = arrays[0].mean(axis=0), arrays[0].std(axis=0)
    y_mean, y_std = arrays[1].mean(axis=0), arrays[1].std(axis=0)
    x_std = np.where(x_std > 0, x_std, 1.0)
    y_std = np.where(y_std > 0, y_std, 1.0)
    xs = [((a - x_mean) / x_std).astype(np.float32) for a in arrays[0::2]]
    ys = [((a - y_mean) / y_std).astype(np.float32) for a in arrays[1::2]]
    return RegressionData(name, xs[0], ys[0], xs[1], ys[1], xs[2], ys[2],
                          y_mean=y_mean.astype(np.float64), y_std=y_std.astype(np.float64))



@dataclasses.dataclass(frozen=True)
class UCISplits:
    """One UCI set with all of its train/test splits, in original units."""

    name: str
    x: np.ndarray  # (n, d_in) float64
    y: np.ndarray  # (n, 1) float64
    train_indices: tuple[np.ndarray, ...]
    test_indices: tuple[np.ndarray, ...]
    folder: str = ""

    @property
    def n_splits(self) -> int:
        return len(self.train_indices)

    def regression(self, split: int = 0, valid_fraction: float = 0.0) -> RegressionData:
        """Split `split` standardised on its training rows. With `valid_fraction` > 0 the last
        fraction of the training indices (in file order, deterministic) is held out as validation
        and not trained on; with 0 the validation split is empty (Section 2.6.4: "No separate
        validation set was used")."""
        if not 0 <= split < self.n_splits:
            raise SeqrepError(f"{self.name}: split {split} out of range; it has splits 0 .. {self.n_splits - 1}")
        train, test = self.train_indices[split], self.test_indices[split]
        n_valid = int(round(valid_fraction * len(train)))
        fit_rows, valid = train[: len(train) - n_valid], train[len(train) - n_valid:]
        return standardise(self.name, self.x[fit_rows], self.y[fit_rows], self.x[valid], self.y[valid],
                           self.x[test], self.y[test])


@dataclasses.dataclass(frozen=True)
class SequenceData:
    """Variable-length sequences per split: lists of float32 arrays (T_i, D), one per sequence.

    For the polyphonic music sets D = 88 and row t of a sequence is the binary piano roll of time
    step t (column j <-> MIDI note j + 21).
    """

    name: str
    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]

    def __post_init__(self):
        widths = {seq.shape[1] for split in ("train", "valid", "test") for seq in getattr(self, split)
                  if seq.ndim == 2}
        bad = [(split, i, seq.shape) for split in ("train", "valid", "test")
               for i, seq in enumerate(getattr(self, split)) if seq.ndim != 2]
        if bad:
            split, i, shape = bad[0]
            raise ValueError(f"{self.name}: every sequence must be a (T, D) array, but {split}[{i}] has shape {shape}")
        if len(widths) > 1:
            raise ValueError(f"{self.name}: all sequences must have the same number of features, got {sorted(widths)}")

    def split(self, split: str) -> list[np.ndarray]:
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split must be train, valid or test, got {split!r}")
        return getattr(self, split)

    @property
    def n_features(self) -> int:
        """D, the width of every sequence."""
        for split in ("train", "valid", "test"):
            if getattr(self, split):
                return getattr(self, split)[0].shape[1]
        raise ValueError(f"{self.name}: no sequences, so the number of features is unknown")


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A registry entry of `seqrep.data`: how to load a named data set and which files it needs."""

    name: str
    description: str
    load: Callable[[Path], Any]
    files: tuple[str, ...] = ()  # paths relative to the data directory; empty when generated
    sha256: tuple[tuple[str, str], ...] = ()  # (file, checksum) pairs that `verify` checks
    # Fetches the files into the data directory it is given: [(path, fetched or already good)].
    # None when generated or when there is no source to fetch from.
    download: Callable[[Path], list[tuple[Path, bool]]] | None = None
    source: str = ""  # where to get the files by hand when there is no download (named in errors)


@dataclasses.dataclass(frozen=True)
class ClassificationData:
    """Labelled variable-length sequences (thesis Chapter 3): train and test splits only.

    `train` / `test` are lists of float32 arrays (T_i, D); `y_train` / `y_test` int64 class indices
    0..K-1 into `classes` (the labels as written in the files, as strings). A validation split is
    the method's business (a seeded stratified split or folds of the training data, Section 3.5.2).
    """

    name: str
    train: list[np.ndarray]
    y_train: np.ndarray
    test: list[np.ndarray]
    y_test: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self):
        for split in ("train", "test"):
            seqs, labels = getattr(self, split), getattr(self, f"y_{split}")
            if len(seqs) != len(labels):
                raise ValueError(f"{self.name}: {len(seqs)} {split} sequences but {len(labels)} labels")
            bad = [(i, s.shape) for i, s in enumerate(seqs) if s.ndim != 2 or len(s) == 0]
            if bad:
                raise ValueError(f"{self.name}: every sequence must be a non-empty (T, D) array, "
                                 f"but {split}[{bad[0][0]}] has shape {bad[0][1]}")
        widths = {s.shape[1] for s in list(self.train) + list(self.test)}
        if len(widths) > 1:
            raise ValueError(f"{self.name}: all sequences must have the same number of features, got {sorted(widths)}")

    @property
    def n_features(self) -> int:
        return (self.train or self.test)[0].shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.classes)


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
