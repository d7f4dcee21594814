"""The dataset registry: names used on the command line -> loaders reading the data directory.

The data directory is `--data-dir`, else `$SEQREP_DATA`, else a user cache directory; its layout
is documented in the README (`polyphonic/*.pickle`, `uci/<name>/`, `ucr/<Name>/`, `mocap/`,
`sarcos/`). Generated data sets (`toy`, `toy-printed`) need no files; those with a download source (the polyphonic
music sets) are fetched by `seqrep data download`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from seqrep.data import characters, mocap, polyphonic, regression, tidigits, ucr
from seqrep.data.base import DatasetInfo, file_sha256
from seqrep.errors import SeqrepError


def resolve_data_dir(cli_value: str | os.PathLike | None = None) -> Path:
    """`--data-dir`, else `$SEQREP_DATA`, else `$XDG_CACHE_HOME/seqrep` (default ~/.cache/seqrep)."""
    if cli_value:
        return Path(cli_value).expanduser()
    if os.environ.get("SEQREP_DATA"):
        return Path(os.environ["SEQREP_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "seqrep"


def _load_toy(reading: str, _: Path):
    from seqrep.data import toy

    return toy.generate(reading=reading)


def _download_polyphonic(name: str, root: Path) -> list[tuple[Path, bool]]:
    return [polyphonic.download(name, root)]


def _polyphonic(name: str) -> DatasetInfo:
    source = polyphonic.SOURCES[name]
    return DatasetInfo(
        name,
        source.description,
        functools.partial(polyphonic.load, name),
        (source.file,),
        ((source.file, source.sha256),) if source.sha256 else (),
        functools.partial(_download_polyphonic, name),
    )


_REGISTRY: dict[str, DatasetInfo] = {
    "toy": DatasetInfo(
        "toy",
        "heteroscedastic toy regression of Le et al. (2005), Section 2.6.3.1, noise standard deviation "
        "exp(sin 2πx) (Table 7's reading); generated, 50/10/50",
        functools.partial(_load_toy, "sd"),
    ),
    "toy-printed": DatasetInfo(
        "toy-printed",
        "the toy set with the noise variance exp(sin 2πx) as Section 2.6.3.1 prints it; same seed, x and draws as toy",
        functools.partial(_load_toy, "printed"),
    ),
    **{name: _polyphonic(name) for name in polyphonic.SOURCES},
    **regression.registry_entries(),  # sarcos, uci-<name> (Section 2.6)
    **ucr.registry_entries(),  # ucr-<name> of Tables 9-10 (Chapter 3)
    **characters.registry_entries(),  # Table 12
    **tidigits.registry_entries(),  # Table 11
    **mocap.registry_entries(),  # mocap, Table 14 (Section 4.4.2)
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def info(name: str, data_dir: str | os.PathLike | None = None) -> DatasetInfo:
    if name.lower().startswith(ucr.PREFIX) and len(name) > len(ucr.PREFIX):
        # any ucr/<Name>/ folder, and the test file the data directory holds, resolved at lookup time
        return ucr.info(name, resolve_data_dir(data_dir))
    if name not in _REGISTRY:
        raise SeqrepError(f"unknown dataset {name!r}; available: {', '.join(names())}")
    return _REGISTRY[name]


def missing_files(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    root = resolve_data_dir(data_dir)
    return [root / rel for rel in info(name, root).files if not (root / rel).exists()]


def _missing_message(name: str, root: Path, missing: list[Path]) -> str:
    how = f"fetch it with `seqrep data download {name} --data-dir {root}`, or " if info(name).download else ""
    how += f"get it from {info(name).source} and " if info(name).source else ""
    return (f"data set {name!r} needs {', '.join(str(p) for p in missing)}, which is not in the data directory "
            f"{root}; {how}put the files there or point --data-dir / SEQREP_DATA at a folder that has them")


def require(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory, once every file of data set `name` is in it (else a clear error)."""
    info(name)
    root = resolve_data_dir(data_dir)
    missing = missing_files(name, root)
    if missing:
        raise SeqrepError(_missing_message(name, root, missing))
    return root


def load(name: str, data_dir: str | os.PathLike | None = None):
    """Load data set `name` from the data directory (a clear error if its files are missing).

    The driver of a study loads it once and hands it to every trial (through Ray's object store);
    a trial never loads data itself.
    """
    return info(name).load(require(name, data_dir))


def download(name: str, data_dir: str | os.PathLike | None = None) -> list[tuple[Path, bool]]:
    """Fetch data set `name` into the data directory; returns [(path, whether it was fetched)]."""
    entry = info(name)
    if entry.download is None:
        why = ("it is generated" if not entry.files
               else f"no download source is known; put {', '.join(entry.files)} into the data directory by hand")
        raise SeqrepError(f"data set {name!r} cannot be downloaded: {why}")
    return entry.download(resolve_data_dir(data_dir))


def verify(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """Check the data set's files against their checksums; returns the state in a few words.

    "verified" when every checksum matches, "present, no checksum known" for files without a
    reference checksum (MuseData), "present" for generated data sets.
    """
    root = resolve_data_dir(data_dir)
    entry = info(name)
    missing = missing_files(name, root)
    if missing:
        raise SeqrepError(_missing_message(name, root, missing))
    fix = (f"fetch it again with `seqrep data download {name}` (it replaces a damaged copy)" if entry.download
           else "fetch it again")
    for rel, expected in entry.sha256:
        actual = file_sha256(root / rel)
        if actual != expected:
            raise SeqrepError(f"{root / rel}: checksum mismatch (sha256 {actual}, expected {expected}); "
                              f"the file is damaged or not the reference copy: {fix}")
    if entry.sha256:
        return "verified"
    return "present, no checksum known" if entry.files else "present"
