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
