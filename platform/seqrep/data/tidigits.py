"""TIDIGITS, adult speakers, 13 MFCCs per frame (thesis Sections 3.4.3.2 and 3.5.2.2, Table 11).

TIDIGITS (Leonard and Doddington, LDC93S10) is licensed by the LDC, so seqrep cannot fetch it:
bring your own features in `tidigits/tidigits_mfcc.npz` in the data directory, with the arrays

    train_frames   (sum of train lengths, 13) float   all training frames, sequence after sequence
    train_lengths  (N_train,) int                    frames of each training sequence (>= 1)
    train_y        (N_train,) int or str             each sequence's digit label
    test_frames, test_lengths, test_y                the same for the test set

(`np.savez(path, train_frames=..., train_lengths=..., ...)`). The thesis used the official split
of the adult speakers, 2240 training and 2260 test utterances, MFCC analysis giving 13 values per
time step, and held out 240 training sequences for validation (the methods' `valid_fraction`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqrep.data.base import ClassificationData, DatasetInfo, encode
from seqrep.errors import SeqrepError

FILE = "tidigits/tidigits_mfcc.npz"
SOURCE = ("the LDC (TIDIGITS is licensed: LDC93S10, https://catalog.ldc.upenn.edu/LDC93S10); compute 13 MFCCs per "
          "frame for the adult speakers and save them in the .npz layout of the README")
HOW = ("TIDIGITS is licensed (LDC93S10, https://catalog.ldc.upenn.edu/LDC93S10): compute 13 MFCCs per frame "
       "for the adult speakers and save them as <data dir>/tidigits/tidigits_mfcc.npz in the layout of the README")
KEYS = ("frames", "lengths", "y")


def _split(arrays, split: str, path: Path) -> tuple[list[np.ndarray], list[str]]:
    missing = [f"{split}_{k}" for k in KEYS if f"{split}_{k}" not in arrays]
    if missing:
        raise SeqrepError(f"{path}: missing array(s) {', '.join(missing)}; expected {', '.join(f'{s}_{k}' for s in ('train', 'test') for k in KEYS)}")
    frames = np.asarray(arrays[f"{split}_frames"], dtype=np.float64)
    lengths = np.asarray(arrays[f"{split}_lengths"]).astype(np.int64).ravel()
    labels = [str(v) for v in np.asarray(arrays[f"{split}_y"]).ravel()]
    if frames.ndim != 2:
        raise SeqrepError(f"{path}: {split}_frames must be (frames, features), got shape {frames.shape}")
    if len(labels) != len(lengths):
        raise SeqrepError(f"{path}: {len(lengths)} {split} sequences in {split}_lengths but {len(labels)} labels in {split}_y")
    if (lengths < 1).any():
        raise SeqrepError(f"{path}: {split}_lengths[{int(np.flatnonzero(lengths < 1)[0])}] is below 1")
    if lengths.sum() != len(frames):
        raise SeqrepError(f"{path}: {split}_lengths sum to {int(lengths.sum())} but {split}_frames has {len(frames)} rows")
    bad = np.flatnonzero(~np.isfinite(frames).all(1))
    if len(bad):
        raise SeqrepError(f"{path}: {split}_frames row {int(bad[0])} holds NaN or infinite values")
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [frames[a:b].astype(np.float32) for a, b in zip(bounds[:-1], bounds[1:])], labels


def load(root: Path) -> ClassificationData:
    path = root / FILE
    try:
        arrays = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file
        raise SeqrepError(f"{path}: cannot read it as a .npz file ({err}); {HOW}") from None
    with arrays:
        train, train_labels = _split(arrays, "train", path)
        test, test_labels = _split(arrays, "test", path)
    y_train, y_test, classes = encode(train_labels, test_labels, path)
    return ClassificationData("tidigits", train, y_train, test, y_test, classes)


def registry_entries() -> dict[str, DatasetInfo]:
    return {"tidigits": DatasetInfo(
        "tidigits", "TIDIGITS adult speakers, your own 13-d MFCC features in a .npz (Sections 3.4.3.2, 3.5.2.2)",
        load, (FILE,), source=SOURCE)}
