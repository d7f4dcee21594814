"""Typed method configurations: a YAML file or the CLI only fills the fields of a dataclass.

A typo in a key must never silently train every trial with a default (STYLE.md, habit 4), so
`from_dict` rejects unknown keys and names the allowed ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping

from seqrep.errors import SeqrepError


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Base class of every method's `Config`. Subclasses declare typed fields with defaults."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "config") -> "MethodConfig":
        allowed = cls.field_names()
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise SeqrepError(
                f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__module__}.{cls.__qualname__}; "
                f"allowed: {', '.join(allowed)}"
            )
        hints = typing.get_type_hints(cls)
        coerced = {k: _coerce(v, hints[k], f"{where}: {k}") for k, v in values.items()}
        return cls(**coerced)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self, rules: "list[tuple[str, str, bool]]") -> None:
        """Raise for the first (field, rule, holds) whose rule does not hold, naming rule and value."""
        for field, rule, holds in rules:
            if not holds:
                raise SeqrepError(f"{type(self).__module__}.Config: {rule} must hold, "
                                  f"but got {field}={getattr(self, field)!r}")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a field's annotation; integral floats become ints (Ray's quniform)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except SeqrepError as err:
                errors.append(str(err))
        raise SeqrepError(errors[0] if errors else f"{where}: got {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise SeqrepError(f"{where}: got {value!r}, allowed: {', '.join(map(repr, allowed))}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise SeqrepError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise SeqrepError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise SeqrepError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise SeqrepError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise SeqrepError(f"{where}: expected a string, got {value!r}")
    return value
