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
