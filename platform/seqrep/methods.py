"""The method registry: what a space's `method` names.

A name is, in this order: a built-in method, the module `trainables.<name>`; a method another
package registers under the entry-point group `seqrep.methods` (`name = "mypkg.mymethod"` in its
pyproject's `[project.entry-points."seqrep.methods"]`); or an importable module path with a dot
(`mypkg.mymethod`). Each is a module with the same contract: `Config` (a
`seqrep.method.MethodConfig` dataclass), `train(config, session)`, optionally `DECLARES` (a
`seqrep.method.Declaration`), and from the engine it imports only `seqrep.method`. Packages under
`trainables/` (the building blocks in `nn/`, the shared method code in `kit/`) are not methods.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import pkgutil
from types import ModuleType

from seqrep.errors import SeqrepError
from seqrep.method import Declaration

PACKAGE = "trainables"
ENTRY_POINTS = "seqrep.methods"


def available() -> list[str]:
    """Names of every method module, without importing any (packages are skipped)."""
    package = importlib.import_module(PACKAGE)
    return sorted(
        info.name
        for info in pkgutil.iter_modules(package.__path__)
        if not info.ispkg and not info.name.startswith("_")
    )


def registered() -> dict[str, importlib.metadata.EntryPoint]:
    """Methods that installed packages register under the entry-point group `seqrep.methods`."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINTS)}


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that does not exist or fails to import
        return False


def check_name(name: str) -> None:
    """Raise naming the methods that exist unless `name` is one (imports at most its package)."""
    if name in available() or name in registered() or ("." in name and _importable(name)):
        return
    names = ", ".join(available() + sorted(registered()))
    if "." in name:
        raise SeqrepError(f"unknown method {name!r}: no module of that name can be imported; a method is one of "
                          f"{names}, a name registered under the entry-point group {ENTRY_POINTS}, or an "
                          "importable module path such as mypkg.mymethod")
    raise SeqrepError(f"unknown method {name!r}; available: {names}")


def resolve(name: str) -> ModuleType:
    """Import the method `name` (module docstring), or raise naming the methods that exist."""
    check_name(name)
    if name in available():
        module = importlib.import_module(f"{PACKAGE}.{name}")
    elif name in registered():
        module = registered()[name].load()
    else:
        module = importlib.import_module(name)
    if not isinstance(module, ModuleType) or not hasattr(module, "Config") or not hasattr(module, "train"):
        raise SeqrepError(f"method {name!r} ({getattr(module, '__name__', module)}) must be a module that defines "
                          "Config and train(config, session)")
    return module


def declaration(name: str) -> Declaration:
    """What method `name` declares about its results (`DECLARES`; the default declares nothing)."""
    declared = getattr(resolve(name), "DECLARES", Declaration())
    if not isinstance(declared, Declaration):
        raise SeqrepError(f"{PACKAGE}.{name}.DECLARES must be a seqrep.method.Declaration, got {declared!r}")
    return declared
