"""Dataset containers shared by loaders and methods."""

from __future__ import annotations

import dataclasses

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
