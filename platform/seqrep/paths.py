"""Where the project's files live: the checkout (search spaces, reference tables) and defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from seqrep.errors import SeqrepError

DEFAULT_STORAGE = Path("results/studies")
DEFAULT_TABLES = Path("results/tables")
DEFAULT_TRACKING_URI = "sqlite:///results/mlflow.db"


def project_root() -> Path:
    """The checkout holding `search_spaces/` and `results/reference/`.

    `SEQREP_HOME` overrides; otherwise the directory two levels above this package, which is the
    checkout for the editable install the README uses.
    """
    env = os.environ.get("SEQREP_HOME")
    root = Path(env) if env else Path(__file__).resolve().parents[2]
    if not (root / "search_spaces").is_dir():
        raise SeqrepError(
            f"no search_spaces/ folder under {root}: install seqrep from its checkout with "
            "`pip install -e .`, or set SEQREP_HOME to the checkout"
        )
    return root


def spaces_dir() -> Path:
    return project_root() / "search_spaces"


def reference_dir() -> Path:
    return project_root() / "results" / "reference"


def tracking_uri(cli_value: str | None) -> str:
    """`--tracking-uri`, else `$MLFLOW_TRACKING_URI`, else the embedded sqlite store."""
    return cli_value or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` through `write(tmp)` to a temporary name beside it, then rename: a reader sees
    the old file or the new one, never half of one (also on a shared file system)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_folder(flag: str, folder: str | os.PathLike, writable: bool = True, fix: str | None = None) -> None:
    """`folder` (given by `flag`) is a folder, or can be created, and (`writable`) this process can
    write in it; else a SeqrepError naming the flag, the folder and the fix. Nothing is left behind."""
    import tempfile

    fix = fix or f"pass {flag} with a folder you can {'write' if writable else 'read'}"
    folder = Path(folder).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is not a folder" if existing == folder else f"cannot be created: {existing} is a file"
        raise SeqrepError(f"{flag} {folder} {what}; {fix}")
    if not writable:
        if existing == folder and not os.access(folder, os.R_OK | os.X_OK):
            raise SeqrepError(f"{flag} {folder}: cannot read that folder; {fix}")
        return
    try:
        probe = tempfile.mkdtemp(prefix=".seqrep-probe-", dir=existing)
    except OSError as err:
        where = "in it" if existing == folder else f"in {existing}, where it would be created"
        raise SeqrepError(f"{flag} {folder}: cannot write {where} ({err.strerror or err}); {fix}") from None
    os.rmdir(probe)
