"""The motion capture loader (Section 4.4.2): split, windows, bad files; the real file when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io

import seqrep.data
from seqrep.data import mocap
from seqrep.errors import SeqrepError

REAL = Path(os.environ.get("SEQREP_DATA", "/nonexistent")) / mocap.FILE


def write(root: Path, batchdata, seqlengths=(438, 260, 3128)) -> Path:
    path = root / mocap.FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"batchdata": batchdata, "seqlengths": np.array([seqlengths], dtype=np.uint16)})
    return path


def frames(n=3826, channels=49):
    return np.arange(n * channels, dtype=np.float64).reshape(n, channels) / 1000.0  # each row tells where it came from


def test_split_and_windows(tmp_path):
    data = frames()
    write(tmp_path, data)
    loaded = mocap.load(tmp_path)
    # training windows of 60 every 10 steps: 38 + 21 + 207 from 438, 260 and 2128 steps
    assert len(loaded.train) == 38 + 21 + 207 == 266
    assert all(w.shape == (60, 49) and w.dtype == np.float32 for w in loaded.train)
    np.testing.assert_array_equal(loaded.train[0], data[:60].astype(np.float32))
    np.testing.assert_array_equal(loaded.train[38], data[438:498].astype(np.float32))  # the second sequence
    np.testing.assert_array_equal(loaded.train[-1], data[698 + 2060:698 + 2120].astype(np.float32))
    # validation and test: 500 steps each at the end of the long sequence, cut into 8 x 60 + 20
    for split, start in (("valid", 698 + 2128), ("test", 698 + 2628)):
        windows = loaded.split(split)
        assert [len(w) for w in windows] == [60] * 8 + [20]
        np.testing.assert_array_equal(np.concatenate(windows), data[start:start + 500].astype(np.float32))
    # no training frame is a held-out frame
    held_out = {float(v) for w in loaded.valid + loaded.test for v in w[:, 0]}
    assert not held_out & {float(v) for w in loaded.train for v in w[:, 0]}


def test_windows():
    seq = np.arange(25)[:, None]
    assert [w[:, 0].tolist() for w in mocap.windows(seq, 10, 10, keep_tail=True)] == [
        list(range(10)), list(range(10, 20)), list(range(20, 25))]
    assert [w[0, 0] for w in mocap.windows(seq, 10, 5, keep_tail=False)] == [0, 5, 10, 15]


def test_wrong_shape_names_the_file(tmp_path):
    path = write(tmp_path, frames(channels=48))
    with pytest.raises(SeqrepError) as err:
        mocap.load(tmp_path)
    assert str(err.value) == f"{path}: batchdata has shape (3826, 48), expected (frames, 49)"


def test_lengths_that_do_not_add_up(tmp_path):
    path = write(tmp_path, frames(), seqlengths=(438, 260, 3000))
    with pytest.raises(SeqrepError, match="do not add up") as err:
        mocap.load(tmp_path)
    assert str(path) in str(err.value)


def test_nan_names_the_file_and_the_frame(tmp_path):
    data = frames()
    data[1000, 7] = np.nan
    data[2000, 3] = np.inf
    path = write(tmp_path, data)
    with pytest.raises(SeqrepError) as err:
        mocap.load(tmp_path)
    assert str(err.value) == f"{path}: batchdata holds 2 NaN or infinite value(s), the first at frame 1000, channel 7"


def test_missing_variable_and_unreadable_file(tmp_path):
    path = tmp_path / mocap.FILE
    path.parent.mkdir(parents=True)
    scipy.io.savemat(path, {"data": frames()})
    with pytest.raises(SeqrepError, match=r"has no variable 'batchdata'"):
        mocap.load(tmp_path)
    path.write_text("not a mat file")
    with pytest.raises(SeqrepError, match=r"not a readable MATLAB file"):
        mocap.load(tmp_path)


def test_registered():
    assert "mocap" in seqrep.data.names()
    assert seqrep.data.info("mocap").files == (mocap.FILE,)


@pytest.mark.skipif(not REAL.exists(), reason=f"set SEQREP_DATA to a folder with {mocap.FILE} to check the real file")
def test_real_file():
    assert seqrep.data.verify("mocap", REAL.parents[1]) == "verified"
    loaded = seqrep.data.load("mocap", REAL.parents[1])
    assert (len(loaded.train), len(loaded.valid), len(loaded.test)) == (266, 9, 9)
    everything, _ = mocap.read(REAL)
    assert everything.shape == (3826, 49)
    # normalised per dimension over all frames, as the file's documentation says
    np.testing.assert_allclose(everything.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(everything.std(0), 1.0, atol=1e-3)
