"""The polyphonic music sets: the restricted unpickler, the piano-roll conversion, checksums and the
download, on pickles generated here; padding and masks; and, with SEQREP_DATA set, the reference
files against the split sizes and frame counts of PROVENANCE.md."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import pickle
import pickletools
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import seqrep.data
from seqrep.cli import main
from seqrep.data import polyphonic
from seqrep.data.base import SequenceData
from seqrep.errors import SeqrepError
from trainables.nn.sequences import batches, frame_count, masked_mean, masked_sum, pad

TINY = {
    "train": [[(21, 108), (), (60,)], [(60, 64, 67)]],
    "valid": [[(64, 67), (62,)]],
    "test": [[(21,)]],
}


def write(path: Path, obj, protocol: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def python2_pickle(splits: dict) -> bytes:
    """Bytes laid out as in Boulanger's JSB file: Python 2 str keys, notes as numpy.int64 built by
    numpy.core.multiarray.scalar(numpy.dtype('i8'), <8 raw bytes>)."""
    def string(s: str) -> bytes:
        return b"U" + bytes([len(s)]) + s.encode("latin1")  # SHORT_BINSTRING

    dtype = (b"cnumpy\ndtype\n" + string("i8") + b"K\x00K\x01\x87R"  # dtype('i8', 0, 1)
             b"(K\x03" + string("<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")  # BUILD with its state
    out = [b"\x80\x02}("]  # PROTO 2, EMPTY_DICT, MARK
    for key, sequences in splits.items():
        out += [string(key), b"]("]
        for sequence in sequences:
            out.append(b"](")
            for step in sequence:
                out.append(b"(")
                for note in step:
                    raw = struct.pack("<q", note).decode("latin1")
                    out.append(b"cnumpy.core.multiarray\nscalar\n" + dtype + string(raw) + b"\x86R")
                out.append(b"t")
            out.append(b"e")  # APPENDS
        out.append(b"e")
    out.append(b"u.")  # SETITEMS, STOP
    return b"".join(out)


# --- the roll conversion and the unpickler, on generated files ------------------------------------


def test_roll_conversion_is_exact_on_a_hand_written_example(tmp_path):
    data = polyphonic.read(write(tmp_path / "tiny.pickle", TINY), name="tiny")
    assert isinstance(data, SequenceData) and data.name == "tiny" and data.n_features == 88
    first = np.zeros((3, 88), np.float32)
    first[0, [0, 87]] = 1  # notes 21 and 108: the lowest and highest key
    first[2, 39] = 1  # middle C, MIDI 60
    assert data.train[0].dtype == np.float32
    np.testing.assert_array_equal(data.train[0], first)
    assert np.flatnonzero(data.train[1][0]).tolist() == [39, 43, 46]
    assert [np.flatnonzero(row).tolist() for row in data.split("valid")[0]] == [[43, 46], [41]]
    assert np.flatnonzero(data.test[0][0]).tolist() == [0]


def test_numpy_int64_notes_of_python_2_and_numpy_2_pickles_read_like_python_ints(tmp_path):
    as_ints = polyphonic.read(write(tmp_path / "ints.pickle", TINY))
    old = tmp_path / "py2.pickle"
    old.write_bytes(python2_pickle(TINY))
    globals_used = {arg for op, arg, _ in pickletools.genops(old.read_bytes()) if op.name == "GLOBAL"}
    assert globals_used == {"numpy.core.multiarray scalar", "numpy dtype"}
    numpy_ints = {split: [[tuple(np.int64(n) for n in step) for step in seq] for seq in seqs]
                  for split, seqs in TINY.items()}
    new = write(tmp_path / "np2.pickle", numpy_ints, protocol=4)  # numpy >= 2 writes numpy._core.multiarray
    for path in (old, new):
        data = polyphonic.read(path)
        for split in polyphonic.SPLITS:
            for a, b in zip(data.split(split), as_ints.split(split), strict=True):
                np.testing.assert_array_equal(a, b)


class _RunsAShellCommand:
    def __reduce__(self):
        return os.system, ("echo pwned > marker",)


class _CallsEval:
    def __reduce__(self):
        return eval, ("__import__('pathlib').Path('marker').write_text('pwned')",)


@pytest.mark.parametrize("payload, protocol, refused", [
    (_RunsAShellCommand(), 2, f"{os.system.__module__}.system"),
    (_CallsEval(), 2, "__builtin__.eval"),  # protocol 2 writes Python 2's module names
    (_CallsEval(), 4, "builtins.eval"),
    (np.float64(60.0), 4, "numpy.dtype('f8')"),  # an admitted global, but not for a non-integer dtype
])
def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path, monkeypatch, payload, protocol, refused):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "hostile.pickle", {"train": [[(60,)], [payload]], "valid": [], "test": []}, protocol)
    with pytest.raises(SeqrepError) as err:
        polyphonic.read(path)
    assert not (tmp_path / "marker").exists()
    assert f"refusing to load {path}" in str(err.value) and refused in str(err.value)
    if "numpy" not in refused:
        assert str(err.value) == (f"refusing to load {path}: it references {refused}, which a piano-roll pickle "
                                  "never needs")


def test_persistent_ids_are_refused(tmp_path):
    class WithPersistentIds(pickle.Pickler):
        def persistent_id(self, obj):
            return "outside" if obj == "x" else None

    path = tmp_path / "persistent.pickle"
    with open(path, "wb") as f:
        WithPersistentIds(f, protocol=2).dump({"train": [[("x",)]], "valid": [], "test": []})
    with pytest.raises(SeqrepError, match="it references persistent id 'outside', which a piano-roll pickle never"):
        polyphonic.read(path)


@pytest.mark.parametrize("keep", [0, 0.5, -1])
def test_truncated_file_names_the_file_and_says_it_is_truncated(tmp_path, keep):
    whole = pickle.dumps(TINY, protocol=2)
    path = tmp_path / "cut.pickle"
    path.write_bytes(whole[: int(len(whole) * keep) if keep >= 0 else keep])
    with pytest.raises(SeqrepError, match="truncated") as err:
        polyphonic.read(path)
    assert str(err.value).startswith(f"cannot read {path}: it ends early")


def test_musedata_has_no_checksum_but_is_still_unpickled_safely(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "polyphonic" / "MuseData.pickle", TINY)
    assert polyphonic.SOURCES["musedata"].sha256 is None and seqrep.data.info("musedata").sha256 == ()
    assert seqrep.data.verify("musedata", tmp_path) == "present, no checksum known"
    assert seqrep.data.load("musedata", tmp_path).name == "musedata"
    write(path, {"train": [[_RunsAShellCommand()]], "valid": [], "test": []})
    with pytest.raises(SeqrepError, match="refusing to load"):
        seqrep.data.load("musedata", tmp_path)
    assert not (tmp_path / "marker").exists()
    path.write_bytes(pickle.dumps(TINY, protocol=2)[:-20])
    with pytest.raises(SeqrepError, match=r"truncated\); fetch it again with `seqrep data download musedata`"):
        seqrep.data.load("musedata", tmp_path)


@pytest.mark.parametrize("note", [20, 109, 2**70])
def test_note_outside_the_piano_names_the_split_sequence_and_step(tmp_path, note):
    splits = {"train": [[(60,)]], "valid": [[(60,)], [(60,), (62, 64), (65, note), (67,)]], "test": []}
    path = write(tmp_path / "range.pickle", splits)
    with pytest.raises(SeqrepError) as err:
        polyphonic.read(path)
    assert str(err.value) == f"{path}: valid sequence 1, time step 2 holds note {note}, outside the piano's MIDI range 21…108"


@pytest.mark.parametrize("obj, message", [
    ([TINY["train"]], "is not a piano-roll pickle: expected a dict with keys train, valid, test -> lists of sequences"),
    ({"train": [], "test": []}, "expected exactly the keys train, valid, test, found 'test', 'train'"),
    ({**TINY, "extra": []}, "found 'extra', 'test', 'train', 'valid'"),
    ({**TINY, "valid": ([(60,)],)}, "split 'valid' must be a list of sequences, found a tuple"),
    ({**TINY, "test": [[(60,)], ((60,),)]}, "test sequence 1 must be a list of time steps, found a tuple"),
    ({**TINY, "test": [[(60,)], []]}, "test sequence 1 has no time steps"),
    ({**TINY, "train": [[(60,), 60]]}, "train sequence 0, time step 1 must be a tuple of MIDI note numbers, found a int"),
    ({**TINY, "train": [[(60,), (61, "62")]]}, "train sequence 0, time step 1 holds '62' (a str); notes must be integer"),
    ({**TINY, "train": [[(60.0,)]]}, "train sequence 0, time step 0 holds 60.0 (a float)"),
    ({**TINY, "train": [[(True,)]]}, "train sequence 0, time step 0 holds True (a bool)"),
])
def test_structural_errors_name_the_file_and_what_was_found(tmp_path, obj, message):
    path = write(tmp_path / "bad.pickle", obj)
    with pytest.raises(SeqrepError) as err:
        polyphonic.read(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_checksum_is_checked_before_unpickling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "hostile.pickle", _RunsAShellCommand())
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(SeqrepError) as err:
        polyphonic.read(path, name="jsb", sha256="0" * 64)
    assert str(err.value) == (f"{path}: checksum mismatch (sha256 {actual}, expected {'0' * 64}); the file is damaged "
                              "or not the reference copy: fetch it again with `seqrep data download jsb` or copy the "
                              "reference file there")
    assert not (tmp_path / "marker").exists()


# --- the registry and the download, with a file:// URL --------------------------------------------


@pytest.fixture
def served(tmp_path, monkeypatch):
    """The tiny pickle served from a file:// URL as the `jsb` source, with its own checksum."""
    source = write(tmp_path / "server" / "JSB Chorales.pickle", TINY)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    monkeypatch.setitem(polyphonic.SOURCES, "jsb",
                        dataclasses.replace(polyphonic.SOURCES["jsb"], url=source.as_uri(), sha256=digest))
    return source, digest


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_download_fetches_verifies_and_does_not_fetch_a_good_copy_again(tmp_path, served):
    source, _ = served
    target, fetched = polyphonic.download("jsb", tmp_path / "data")
    assert fetched and target == tmp_path / "data" / "polyphonic" / "JSB_Chorales.pickle"
    assert target.read_bytes() == source.read_bytes() and _leftovers(target.parent) == []
    np.testing.assert_array_equal(polyphonic.load("jsb", tmp_path / "data").train[0][0, [0, 87]], [1, 1])
    assert polyphonic.download("jsb", tmp_path / "data") == (target, False)


def test_download_with_a_wrong_checksum_writes_nothing_and_names_both(tmp_path, monkeypatch, served):
    source, digest = served
    monkeypatch.setitem(polyphonic.SOURCES, "jsb", dataclasses.replace(polyphonic.SOURCES["jsb"], sha256="f" * 64))
    with pytest.raises(SeqrepError) as err:
        polyphonic.download("jsb", tmp_path / "data")
    target = tmp_path / "data" / "polyphonic" / "JSB_Chorales.pickle"
    assert str(err.value) == (f"downloaded {source.as_uri()} for jsb, but its sha256 is {digest}, not the reference "
                              f"{'f' * 64}; nothing was written to {target}: copy the reference file there by hand")
    assert not target.exists() and _leftovers(target.parent) == []


def test_download_replaces_a_damaged_copy(tmp_path, served):
    source, _ = served
    target = tmp_path / "polyphonic" / "JSB_Chorales.pickle"
    target.parent.mkdir()
    target.write_bytes(source.read_bytes()[:-1])
    assert polyphonic.download("jsb", tmp_path) == (target, True)
    assert target.read_bytes() == source.read_bytes()


def test_download_from_an_unreachable_url_says_so(tmp_path, monkeypatch):
    missing = (tmp_path / "nowhere.pickle").as_uri()
    monkeypatch.setitem(polyphonic.SOURCES, "musedata", dataclasses.replace(polyphonic.SOURCES["musedata"], url=missing))
    with pytest.raises(SeqrepError, match=f"cannot download musedata from {missing}"):
        seqrep.data.download("musedata", tmp_path)
    assert _leftovers(tmp_path / "polyphonic") == []


def test_parallel_downloads_fetch_once(tmp_path, served):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: polyphonic.download("jsb", tmp_path), range(4)))
    assert sorted(fetched for _, fetched in results) == [False, False, False, True]


def test_cli_download_reports_what_it_fetched_and_skips_generated_sets(tmp_path, served, capsys):
    code = main(["data", "download", "jsb", "toy", "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    target = tmp_path / "polyphonic" / "JSB_Chorales.pickle"
    assert code == 0 and out == [
        f"{'jsb':<22} fetched (sha256 verified): {target}",
        f"{'toy':<22} skipped: generated, nothing to download",
        f"data directory: {tmp_path}",
    ]
    assert main(["data", "download", "jsb", "--data-dir", str(tmp_path)]) == 0
    assert "present, not fetched again (sha256 verified)" in capsys.readouterr().out


def test_missing_file_names_the_data_directory_and_the_download_command(tmp_path):
    with pytest.raises(SeqrepError) as err:
        seqrep.data.load("nottingham", tmp_path)
    assert str(err.value) == (
        f"data set 'nottingham' needs {tmp_path / 'polyphonic' / 'Nottingham.pickle'}, which is not in the data "
        f"directory {tmp_path}; fetch it with `seqrep data download nottingham --data-dir {tmp_path}`, or put the "
        "files there or point --data-dir / SEQREP_DATA at a folder that has them")
    assert seqrep.data.load("toy", tmp_path).name == "toy" and seqrep.data.verify("toy", tmp_path) == "present"


# --- padding, masks and the minibatch iterator ----------------------------------------------------


def _sequences(lengths, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(t, d)).astype(np.float32) for t in lengths]


def test_pad_is_time_major_with_zero_masked_padding():
    seqs = _sequences([4, 1, 3])
    x, mask = pad(seqs)
    assert x.shape == (4, 3, 3) and mask.shape == (4, 3) and x.dtype == mask.dtype == torch.float32
    assert mask.T.tolist() == [[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0]]
    for b, seq in enumerate(seqs):
        np.testing.assert_array_equal(x[: len(seq), b].numpy(), seq)
        assert torch.count_nonzero(x[len(seq):, b]) == 0
    assert frame_count(mask) == 8


def test_masked_mean_equals_the_mean_over_real_frames():
    seqs = _sequences([5, 2, 7, 1], d=4, seed=1)
    x, mask = pad(seqs)
    per_frame = x.sum(-1)  # (T_max, B): a per-step loss
    per_frame[mask == 0] = float("inf")  # what padding holds must not matter
    by_hand = np.mean([row.sum() for seq in seqs for row in seq])
    assert masked_mean(per_frame, mask).item() == pytest.approx(by_hand, rel=1e-6)
    assert masked_sum(per_frame, mask).item() == pytest.approx(by_hand * 15, rel=1e-6)
    assert masked_mean(x, mask).item() == pytest.approx(np.concatenate(seqs).mean(), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("pool", [1, 3])
def test_batches_cover_every_sequence_once_per_epoch_in_a_seeded_order(pool):
    seqs = _sequences(np.random.default_rng(2).integers(1, 30, size=23), d=2)

    def epochs(seed, n=3):
        g = torch.Generator().manual_seed(seed)
        return [[b.index.tolist() for b in batches(seqs, 4, g, pool=pool)] for _ in range(n)]

    first = epochs(0)
    assert first == epochs(0) and first != epochs(1)
    assert first[0] != first[1]  # a new order each epoch
    for epoch in first:
        assert sorted(i for group in epoch for i in group) == list(range(23))
        assert sorted(map(len, epoch)) == [3] + [4] * 5
    g = torch.Generator().manual_seed(0)
    for batch in batches(seqs, 4, g, pool=pool):
        lengths = [len(seqs[i]) for i in batch.index.tolist()]
        assert batch.mask.sum(0).tolist() == lengths and batch.x.shape[0] == max(lengths)
        if pool > 1:
            assert lengths == sorted(lengths)


def test_pooled_batches_hold_less_padding():
    seqs = _sequences(np.random.default_rng(3).integers(1, 200, size=64), d=1)

    def padding(pool):
        g = torch.Generator().manual_seed(0)
        return sum(b.mask.numel() - frame_count(b.mask) for b in batches(seqs, 8, g, pool=pool))

    assert padding(8) < 0.5 * padding(1)


# --- the reference files (SEQREP_DATA) -------------------------------------------------------------

# PROVENANCE.md: sequences and time steps per split, and the lowest and highest note sounding.
REFERENCE = {
    "jsb": ((229, 76, 77), (13807, 4602, 4725), (43, 96)),
    "nottingham": ((694, 173, 170), (176561, 45513, 44463), (31, 93)),
    "piano-midi": ((87, 12, 25), (75911, 8540, 19036), (21, 108)),
}


@pytest.fixture(scope="module")
def data_root() -> Path:
    if not os.environ.get("SEQREP_DATA"):
        pytest.skip("SEQREP_DATA is not set: the real piano-roll files are not available")
    return Path(os.environ["SEQREP_DATA"])


def _reference_file(root: Path, name: str) -> Path:
    path = root / polyphonic.SOURCES[name].file
    if not path.exists():
        pytest.skip(f"{path} is not in SEQREP_DATA")
    return path


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_file_has_the_published_splits_and_exact_rolls(data_root, name):
    path = _reference_file(data_root, name)
    (sizes, steps, (low, high)) = REFERENCE[name]
    assert seqrep.data.verify(name) == "verified"
    data = seqrep.data.load(name)
    assert tuple(len(data.split(s)) for s in polyphonic.SPLITS) == sizes
    assert tuple(sum(len(r) for r in data.split(s)) for s in polyphonic.SPLITS) == steps
    raw = polyphonic._PianoRollUnpickler(path.read_bytes(), path).load()
    active = set()
    for split in polyphonic.SPLITS:
        for roll, sequence in zip(data.split(split), raw[split], strict=True):
            assert roll.dtype == np.float32 and roll.shape == (len(sequence), 88)
            assert np.array_equal(roll, roll.astype(bool))  # binary
            np.testing.assert_array_equal(roll.sum(1), [len(step) for step in sequence])
            rows, cols = np.nonzero(roll)
            assert (cols + 21).tolist() == [int(n) for step in sequence for n in sorted(step)]
            active.update(np.unique(cols + 21).tolist())
    assert (min(active), max(active)) == (low, high)


def test_reference_jsb_pickle_needs_only_the_numpy_scalar_and_dtype(data_root):
    path = _reference_file(data_root, "jsb")
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(path.read_bytes())]
    assert {arg for name, arg in ops if "GLOBAL" in name} == {"numpy.core.multiarray scalar", "numpy dtype"}
    assert not {name for name, _ in ops} & {"INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_one_changed_byte_fails_the_checksum(data_root, tmp_path, name):
    path = _reference_file(data_root, name)
    copy = tmp_path / polyphonic.SOURCES[name].file
    copy.parent.mkdir(parents=True)
    shutil.copyfile(path, copy)
    damaged = bytearray(copy.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    copy.write_bytes(bytes(damaged))
    actual = hashlib.sha256(damaged).hexdigest()
    expected = polyphonic.SOURCES[name].sha256
    for check in (seqrep.data.load, seqrep.data.verify):
        with pytest.raises(SeqrepError) as err:
            check(name, tmp_path)
        assert f"{copy}: checksum mismatch (sha256 {actual}, expected {expected})" in str(err.value)
        assert f"seqrep data download {name}" in str(err.value)
