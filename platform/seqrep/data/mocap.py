"""The motion capture walking data of Table 14 (thesis Section 4.4.2), dataset name `mocap`.

`mocap/MOCAP.mat` in the data directory is the file of Sutskever, Hinton and Taylor's RTRBM code
(also used by the RNN-RBM of Boulanger-Lewandowski et al., 2012, the baselines of Table 14):
`batchdata` (3826, 49), the 49 joint-angle channels of Taylor et al. (2006) that Hsu et al. (2005)
recorded, already normalised per dimension to zero mean and unit variance, and `seqlengths`
[438 260 3128], the three walking sequences stacked in that order.

Choices the thesis leaves open (Section 4.4.2 names only the 3128-step sequence and 49 channels):

- Split, by time and without overlap, so no test frame is seen in training: the two short
  sequences and the first 2128 steps of the long one are the training data, its steps 2128-2627
  the validation data and steps 2628-3127 the test data (500 steps each).
- Windows: the imputation protocol of Section 4.4.2 works on sequences of length 60, so every
  split is cut into windows of `WINDOW` = 60 steps; training windows start every `TRAIN_STRIDE` =
  10 steps (overlapping, 266 windows), validation and test windows do not overlap (8 windows of
  60 steps and one of the remaining 20 each, so every held-out frame counts exactly once).
- The per-dimension normalisation is the file's, computed over all 3826 frames (test included),
  as in the RTRBM/RNN-RBM experiments the thesis compares with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqrep.data.base import DatasetInfo, SequenceData
from seqrep.errors import SeqrepError

FILE = "mocap/MOCAP.mat"
CHANNELS = 49
SEQUENCE_LENGTHS = (438, 260, 3128)
WINDOW = 60
TRAIN_STRIDE = 10
HELD_OUT = 500  # validation and test steps, each, at the end of the long sequence


def windows(sequence: np.ndarray, length: int, stride: int, keep_tail: bool) -> list[np.ndarray]:
    """Windows sequence[s:s + length] for s = 0, stride, ...; with keep_tail the steps after the
    last full window form one shorter window (only sensible when stride == length)."""
    if length < 1 or stride < 1:
        raise ValueError(f"length >= 1 and stride >= 1 must hold, but got length={length}, stride={stride}")
    out = [sequence[s:s + length] for s in range(0, len(sequence) - length + 1, stride)]
    covered = (len(out) - 1) * stride + length if out else 0
    if keep_tail and covered < len(sequence):
        out.append(sequence[covered:])
    return out


def read(path: Path) -> tuple[np.ndarray, list[int]]:
    """`batchdata` (3826, 49) float32 and `seqlengths`, checked; errors name the file."""
    import scipy.io

    try:
        contents = scipy.io.loadmat(str(path))
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise SeqrepError(f"{path}: not a readable MATLAB file ({err}); expected the RTRBM MOCAP.mat") from err
    for key in ("batchdata", "seqlengths"):
        if key not in contents:
            raise SeqrepError(f"{path}: has no variable {key!r}; expected the RTRBM MOCAP.mat with batchdata "
                              f"({sum(SEQUENCE_LENGTHS)}, {CHANNELS}) and seqlengths")
    data = np.asarray(contents["batchdata"])
    lengths = [int(n) for n in np.asarray(contents["seqlengths"]).ravel()]
    if data.ndim != 2 or data.shape[1] != CHANNELS:
        raise SeqrepError(f"{path}: batchdata has shape {data.shape}, expected (frames, {CHANNELS})")
    if sum(lengths) != data.shape[0] or any(n < 1 for n in lengths):
        raise SeqrepError(f"{path}: seqlengths {lengths} do not add up to the {data.shape[0]} frames of batchdata")
    if lengths[-1] <= 2 * HELD_OUT:
        raise SeqrepError(f"{path}: the last sequence has {lengths[-1]} steps; the split needs more than "
                          f"{2 * HELD_OUT} (validation and test take {HELD_OUT} each)")
    bad = np.argwhere(~np.isfinite(data))
    if len(bad):
        row, col = bad[0]
        raise SeqrepError(f"{path}: batchdata holds {len(bad)} NaN or infinite value(s), the first at "
                          f"frame {row}, channel {col}")
    return data.astype(np.float32), lengths


def load(root: Path) -> SequenceData:
    data, lengths = read(Path(root) / FILE)
    starts = np.cumsum([0] + lengths[:-1])
    sequences = [data[s:s + n] for s, n in zip(starts, lengths)]
    *short, long = sequences
    train_parts = short + [long[: -2 * HELD_OUT]]
    valid, test = long[-2 * HELD_OUT: -HELD_OUT], long[-HELD_OUT:]
    return SequenceData(
        "mocap",
        train=[w for part in train_parts for w in windows(part, WINDOW, TRAIN_STRIDE, keep_tail=False)],
        valid=windows(valid, WINDOW, WINDOW, keep_tail=True),
        test=windows(test, WINDOW, WINDOW, keep_tail=True),
    )


SHA256 = "f81f70246b8c28fda63a5be5a64b93a22661805e58aa2a8e410f78a7f208497d"  # the RTRBM code's MOCAP.mat


def registry_entries() -> dict[str, DatasetInfo]:
    """The `mocap` entry of the data set registry (no download source: put the file there by hand)."""
    return {"mocap": DatasetInfo(
        "mocap",
        "motion capture walking, 49 channels (Section 4.4.2); windows of 60 steps, 266 / 9 / 9",
        load, (FILE,), ((FILE, SHA256),),
    )}
