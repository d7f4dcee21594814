"""Where the project's files live: the checkout (search spaces, reference tables) and defaults."""

from __future__ import annotations

import os
from pathlib import Path

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
