"""The method registry: a space's `method` names a module `trainables.<method>`.

A method module defines `Config` (a `seqrep.method.MethodConfig` dataclass), `train(config,
session)`, a one-line docstring summary and optionally `DECLARES` (a `seqrep.method.Declaration`);
it imports from the engine only `seqrep.method`. Packages under `trainables/` (the building blocks
in `nn/`, the shared method code in `kit/`) are not methods.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from seqrep.errors import SeqrepError
from seqrep.method import Declaration

PACKAGE = "trainables"


def available() -> list[str]:
    """Names of every method module, without importing any (packages are skipped)."""
    package = importlib.import_module(PACKAGE)
    return sorted(
        info.name
        for info in pkgutil.iter_modules(package.__path__)
        if not info.ispkg and not info.name.startswith("_")
    )


def check_name(name: str) -> None:
    """Raise naming the methods that exist unless `name` is one (imports nothing)."""
    names = available()
    if name not in names:
        raise SeqrepError(f"unknown method {name!r}; available: {', '.join(names)}")


def resolve(name: str) -> ModuleType:
    """Import the method `name`, or raise naming the methods that exist."""
    check_name(name)
    module = importlib.import_module(f"{PACKAGE}.{name}")
    if not hasattr(module, "Config") or not hasattr(module, "train"):
        raise SeqrepError(f"method module {module.__name__} must define Config and train(config, session)")
    return module


def declaration(name: str) -> Declaration:
    """What method `name` declares about its results (`DECLARES`; the default declares nothing)."""
    declared = getattr(resolve(name), "DECLARES", Declaration())
    if not isinstance(declared, Declaration):
        raise SeqrepError(f"{PACKAGE}.{name}.DECLARES must be a seqrep.method.Declaration, got {declared!r}")
    return declared
