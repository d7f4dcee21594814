"""Dataset containers shared by loaders and methods."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np


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
    # the methods then report MSE and NLL in the original units (trainables.nn.regression).
    y_mean: np.ndarray | None = None
    y_std: np.ndarray | None = None

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split must be train, valid or test, got {split!r}")
        return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")


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
