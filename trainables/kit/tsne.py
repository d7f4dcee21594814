"""Figure 9's input: a trial's test embeddings, kept for the report's t-SNE map (and, in the same
file, Figures 11 and 12's arrays: `trainables.kit.reduction_figures`).

A t-SNE map costs seconds (scikit-learn), more than a whole Table 10 trial on CBF, and only the
selected trial's map is read; so a trial keeps its test embeddings (`embeddings.npz` in its
artifact folder: the embeddings `e`, the labels `y`, the class names, a title and the trial's
seed) and `seqrep report` draws the map of each study's selected trial (`seqrep.figures.tsne`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

EMBEDDINGS_FILE = "embeddings.npz"


def save_embeddings(folder: Path, e: np.ndarray, y: np.ndarray, classes, title: str, seed: int,
                    figures: Mapping[str, np.ndarray] | None = None) -> None:
    """`folder/embeddings.npz`: the test embeddings (float32) with their labels, for Figure 9, and
    `figures`, the arrays of Figures 11 and 12 (`trainables.kit.reduction_figures.figure_inputs`)."""
    np.savez_compressed(Path(folder) / EMBEDDINGS_FILE, e=np.asarray(e, dtype=np.float32),
                        y=np.asarray(y, dtype=np.int64), classes=np.asarray([str(c) for c in classes]),
                        title=np.asarray(title), seed=np.asarray(int(seed)), **dict(figures or {}))
