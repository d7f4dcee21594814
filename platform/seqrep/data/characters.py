"""UCI Character Trajectories (thesis Section 3.5.2.3, Table 12): data set `characters`.

File: `characters/mixoutALL_shifted.mat` in the data directory, as distributed by the UCI Machine
Learning Repository ("Character Trajectories", Williams; https://archive.ics.uci.edu/dataset/175).
Its MATLAB variables: `mixout`, a 1 x 2858 cell of 3 x T arrays (pen-tip velocities x, y and the
pen force, one column per time step), and `consts`, a struct whose `charlabels` (1 x 2858) holds
each trajectory's class 1..20 and whose `key` names the characters.

The thesis "selected a random stratified 20% of the data for testing and the rest for training";
the split here is scikit-learn's `train_test_split(test_size=0.2, stratify=labels,
random_state=0)`, fixed so that every trial and study sees the same test set. Trailing all-zero
columns (the "shifted" file's padding) are dropped, so sequences have their own lengths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqrep.data.base import ClassificationData, DatasetInfo
from seqrep.errors import SeqrepError

FILE = "characters/mixoutALL_shifted.mat"
SOURCE = "the UCI Machine Learning Repository, 'Character Trajectories' (https://archive.ics.uci.edu/dataset/175)"
HOW = ("download mixoutALL_shifted.mat from the UCI Machine Learning Repository, data set "
       "'Character Trajectories' (https://archive.ics.uci.edu/dataset/175), into <data dir>/characters/")
SPLIT_SEED = 0
TEST_FRACTION = 0.2


def _field(struct, name: str, path: Path):
    try:
        return struct[name] if isinstance(struct, dict) else getattr(struct, name)
    except (KeyError, AttributeError):
        raise SeqrepError(f"{path}: consts has no field {name!r}; expected the UCI mixoutALL_shifted.mat layout") from None


def load(root: Path) -> ClassificationData:
    from scipy.io import loadmat
    from sklearn.model_selection import train_test_split

    path = root / FILE
    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file
        raise SeqrepError(f"{path}: cannot read it as a MATLAB file ({err}); {HOW}") from None
    for key in ("mixout", "consts"):
        if key not in mat:
            raise SeqrepError(f"{path}: no variable {key!r}; expected the UCI mixoutALL_shifted.mat layout")
    cells = np.atleast_1d(mat["mixout"])
    labels = np.atleast_1d(np.asarray(_field(mat["consts"], "charlabels", path))).astype(np.int64).ravel()
    if len(labels) != len(cells):
        raise SeqrepError(f"{path}: {len(cells)} trajectories in mixout but {len(labels)} labels in consts.charlabels")
    sequences = []
    for i, cell in enumerate(cells, start=1):
        a = np.asarray(cell, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] != 3:
            raise SeqrepError(f"{path}: mixout{{{i}}} has shape {a.shape}, expected 3 x T (x, y, force)")
        if not np.isfinite(a).all():
            raise SeqrepError(f"{path}: mixout{{{i}}} holds NaN or infinite values")
        nonzero = np.flatnonzero(np.abs(a).sum(0) > 0)
        if len(nonzero) == 0:
            raise SeqrepError(f"{path}: mixout{{{i}}} is all zeros")
        sequences.append(a[:, : nonzero[-1] + 1].T.astype(np.float32))
    classes = np.unique(labels)
    counts = {int(c): int((labels == c).sum()) for c in classes}
    if min(counts.values()) < 2:
        lonely = [c for c, n in counts.items() if n < 2]
        raise SeqrepError(f"{path}: class(es) {lonely} have fewer than 2 trajectories; a stratified split needs 2")
    index = {int(c): k for k, c in enumerate(classes)}
    y = np.array([index[int(c)] for c in labels], dtype=np.int64)
    order = np.arange(len(y))
    train_idx, test_idx = train_test_split(order, test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return ClassificationData("characters", [sequences[i] for i in train_idx], y[train_idx],
                              [sequences[i] for i in test_idx], y[test_idx], _names(mat["consts"], classes))


def _names(consts, classes: np.ndarray) -> tuple[str, ...]:
    """The characters' names for the labels 1..20 (`consts.key`, 'a' .. 'z'), else the labels."""
    try:
        key = [str(k) for k in np.atleast_1d(_field(consts, "key", Path()))]
    except SeqrepError:
        key = []
    if classes.min() >= 1 and classes.max() <= len(key):
        return tuple(key[int(c) - 1] for c in classes)
    return tuple(str(int(c)) for c in classes)


def registry_entries() -> dict[str, DatasetInfo]:
    return {"characters": DatasetInfo(
        "characters", "UCI Character Trajectories, 20 classes, 3 variates, stratified 80/20 split (Section 3.5.2.3)",
        load, (FILE,), source=SOURCE)}
