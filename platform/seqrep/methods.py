"""The method registry: a space's `method` names a module `trainables.<method>`.

A method module defines `Config` (a `seqrep.config.MethodConfig` dataclass), `train(config,
session)` and a one-line docstring summary; nothing in it imports Ray.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from types import ModuleType

from seqrep.errors import SeqrepError

PACKAGE = "trainables"


def available() -> list[str]:
    """Names of every method module (skips the shared building blocks in `trainables.nn`)."""
    package = importlib.import_module(PACKAGE)
    return sorted(
        info.name
        for info in pkgutil.iter_modules(package.__path__)
        if not info.ispkg and not info.name.startswith("_")
    )


def resolve(name: str) -> ModuleType:
    """Import the method `name`, or raise naming the methods that exist."""
    names = available()
    if name not in names:
        raise SeqrepError(f"unknown method {name!r}; available: {', '.join(names)}")
    module = importlib.import_module(f"{PACKAGE}.{name}")
    if not hasattr(module, "Config") or not hasattr(module, "train"):
        raise SeqrepError(f"method module {module.__name__} must define Config and train(config, session)")
    return module
