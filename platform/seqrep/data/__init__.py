"""The dataset registry: names used on the command line -> loaders reading the data directory.

The data directory is `--data-dir`, else `$SEQREP_DATA`, else a user cache directory; its layout
is documented in the README (`polyphonic/*.pickle`, `uci/<name>/`, `ucr/<Name>/`, `mocap/`,
`sarcos/`). Generated data sets (`toy`) need no files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, Callable

from seqrep.errors import SeqrepError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    load: Callable[[Path], Any]
    files: tuple[str, ...] = ()  # paths relative to the data directory; empty when generated
    sha256: tuple[tuple[str, str], ...] = ()  # (file, checksum) pairs that `verify` checks


def resolve_data_dir(cli_value: str | os.PathLike | None = None) -> Path:
    """`--data-dir`, else `$SEQREP_DATA`, else `$XDG_CACHE_HOME/seqrep` (default ~/.cache/seqrep)."""
    if cli_value:
        return Path(cli_value).expanduser()
    if os.environ.get("SEQREP_DATA"):
        return Path(os.environ["SEQREP_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "seqrep"


def _load_toy(_: Path):
    from seqrep.data import toy

    return toy.generate()


_REGISTRY: dict[str, DatasetInfo] = {
    "toy": DatasetInfo(
        "toy",
        "heteroscedastic toy regression of Le et al. (2005), Section 2.6.3.1; generated, 50/10/50",
        _load_toy,
    ),
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def info(name: str) -> DatasetInfo:
    if name not in _REGISTRY:
        raise SeqrepError(f"unknown dataset {name!r}; available: {', '.join(names())}")
    return _REGISTRY[name]


def missing_files(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    root = resolve_data_dir(data_dir)
    return [root / rel for rel in info(name).files if not (root / rel).exists()]


def load(name: str, data_dir: str | os.PathLike | None = None):
    """Load data set `name` from the data directory (a clear error if its files are missing)."""
    entry = info(name)
    root = resolve_data_dir(data_dir)
    missing = missing_files(name, root)
    if missing:
        raise SeqrepError(
            f"data set {name!r} needs {', '.join(str(p) for p in missing)}; "
            f"put the files there or point --data-dir / SEQREP_DATA at a folder that has them"
        )
    return entry.load(root)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """Check the data set's files against their checksums; returns a one-word state."""
    root = resolve_data_dir(data_dir)
    entry = info(name)
    for rel, expected in entry.sha256:
        actual = sha256(root / rel)
        if actual != expected:
            raise SeqrepError(f"{root / rel}: checksum mismatch (sha256 {actual}, expected {expected}); "
                              "the file is damaged or not the canonical one: fetch it again")
    return "verified" if entry.sha256 else "present"
