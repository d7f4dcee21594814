"""Search-space files: `search_spaces/<name>.yaml` -> a validated `SearchSpace` -> Ray Tune / Optuna.

File format (every field is checked; unknown ones are errors)::

    name: table7-nn-toy              # must equal the file's stem
    method: mlp                      # a module trainables/<method>.py
    source: "Table 7, Section 2.6.3" # where in the thesis the space comes from
    datasets: [toy]                  # data sets it applies to (shell-style patterns allowed: ucr-*)
    metric: valid_nll                # selection metric, a `valid_*` name
    mode: min                        # min or max
    trials: 8                        # the thesis's count where it gives one (null: none given)
    max_epochs: 5000
    notes: "free text"               # optional
    fixed: {batch_norm: false}       # constant config values
    space:                           # one distribution per searched parameter
      hidden_layers: {choice: [1, 2, 3]}      # list of scalars, may hold null
      decay:         {uniform: [0.8, 0.99]}
      step_rate:     {loguniform: [1.0e-4, 0.1]}   # low > 0
      hidden_units:  {randint: [200, 600]}    # BOTH bounds inclusive, as in the thesis
      p_drop:        {quniform: [0.0, 0.5, 0.1]}   # low and high multiples of q; values low, low+q, ..., high
      split:         {grid: [0, 1, 2]}        # every value once (Ray's grid_search): trials x 3 runs

`grid` is not sampled: each `trials` draw of the other keys runs once per grid value (a study of
`trials` x len(grid) runs; Table 8 runs one per UCI split). The Optuna searcher cannot take it.

`randint` includes its upper bound (the thesis's "200 … 600" includes 600); Ray's `tune.randint`
excludes it, so the converter passes `high + 1`. Optuna's `IntDistribution` includes both bounds.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import typing
from pathlib import Path
from typing import Any

import yaml

from seqrep import methods, paths
from seqrep.errors import SeqrepError
from seqrep.method import coerce, is_finite

KINDS = ("choice", "uniform", "loguniform", "randint", "quniform", "grid")
FIELDS = ("name", "method", "source", "datasets", "metric", "mode", "trials", "max_epochs", "notes", "fixed", "space")
REQUIRED = ("name", "method", "source", "datasets", "metric", "mode", "max_epochs", "space")


class SpaceError(SeqrepError):
    """A search-space file that cannot be used; the message names the file, the key and the fix."""


@dataclasses.dataclass(frozen=True)
class Distribution:
    kind: str
    args: tuple

    @property
    def low(self):
        return self.args[0]

    @property
    def high(self):
        return self.args[1]

    def to_json(self) -> dict[str, Any]:
        if self.kind in ("choice", "grid"):
            return {"type": self.kind, "values": list(self.args)}
        out = {"type": self.kind, "low": self.low, "high": self.high}
        if self.kind == "randint":
            out["inclusive"] = True
        if self.kind == "quniform":
            out["q"] = self.args[2]
        return out

    def describe(self) -> str:
        if self.kind in ("choice", "grid"):
            return f"{self.kind} " + ", ".join("null" if v is None else str(v) for v in self.args)
        if self.kind == "randint":
            return f"randint {self.low} … {self.high} (inclusive)"
        if self.kind == "quniform":
            return f"quniform {self.low} … {self.high} step {self.args[2]}"
        return f"{self.kind} {self.low} … {self.high}"


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    name: str
    method: str
    source: str
    datasets: tuple[str, ...]
    metric: str
    mode: str
    trials: int | None
    max_epochs: int
    fixed: dict[str, Any]
    space: dict[str, Distribution]
    path: Path
    notes: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "source": self.source,
            "datasets": list(self.datasets),
            "metric": self.metric,
            "mode": self.mode,
            "trials": self.trials,
            "max_epochs": self.max_epochs,
            "notes": self.notes,
            "fixed": dict(self.fixed),
            "space": {k: d.to_json() for k, d in self.space.items()},
        }

    def check_dataset(self, dataset: str) -> None:
        """`dataset` must be listed, or match a listed shell-style pattern (`ucr-*`: any UCR folder)."""
        if not any(fnmatch.fnmatchcase(dataset, entry) for entry in self.datasets):
            raise SeqrepError(
                f"space {self.name} applies to data set(s) {', '.join(self.datasets)}, not {dataset!r}; "
                f"pass --dataset with one of those"
            )


def parse_distribution(spec: Any, where: str) -> Distribution:
    """One `{kind: args}` mapping -> Distribution, or a SpaceError naming what is allowed."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise SpaceError(f"{where}: expected one mapping like {{loguniform: [1.0e-4, 0.1]}}, got {spec!r}; "
                         f"distributions: {', '.join(KINDS)}")
    (kind, args), = spec.items()
    if kind not in KINDS:
        raise SpaceError(f"{where}: unknown distribution {kind!r}; allowed: {', '.join(KINDS)}")
    if not isinstance(args, list):
        raise SpaceError(f"{where}: {kind} takes a list, got {args!r}")
    if kind in ("choice", "grid"):
        if not args:
            raise SpaceError(f"{where}: {kind} needs at least one value")
        for value in args:
            if value is not None and not isinstance(value, (bool, int, float, str)):
                raise SpaceError(f"{where}: {kind} values must be null, booleans, numbers or strings, got {value!r}")
        return Distribution(kind, tuple(args))
    expected = 3 if kind == "quniform" else 2
    shape = "[low, high, q]" if kind == "quniform" else "[low, high]"
    if len(args) != expected or not all(is_finite(a) for a in args):
        raise SpaceError(f"{where}: {kind} takes {shape} as finite numbers, got {args!r}")
    low, high = args[0], args[1]
    if low > high:
        raise SpaceError(f"{where}: low <= high must hold, but got low={low}, high={high}")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"{where}: loguniform needs low > 0, but got low={low}")
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise SpaceError(f"{where}: randint takes integer bounds, got {args!r}")
    if kind == "quniform":
        q = args[2]
        if q <= 0:
            raise SpaceError(f"{where}: quniform needs q > 0, but got q={q}")
        for label, bound in (("low", low), ("high", high)):
            steps = bound / q
            if not math.isfinite(steps):
                raise SpaceError(f"{where}: quniform's q={q} is too small for {label}={bound}; take a larger q")
            if abs(steps - round(steps)) > 1e-9 * max(1.0, abs(steps)):
                raise SpaceError(f"{where}: quniform needs {label} to be a multiple of q, but got {label}={bound}, q={q}")
    return Distribution(kind, tuple(args))


def _check_value(config_cls, key: str, value: Any, where: str) -> None:
    """The value's type, then the method's own rules (its Config's __post_init__) with defaults elsewhere."""
    hints = typing.get_type_hints(config_cls)
    try:
        coerced = coerce(value, hints[key], where)
        config_cls(**{key: coerced})
    except SeqrepError as err:
        message = str(err)
        raise SpaceError(message if message.startswith(where) else f"{where}: {message}") from None


def _check_fields(data: Any, where: str, path: Path) -> None:
    if not isinstance(data, dict):
        raise SpaceError(f"{where}: expected a mapping of fields ({', '.join(FIELDS)}), got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in FIELDS)  # keys may be null, numbers, ...
    if unknown:
        raise SpaceError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(FIELDS)}")
    missing = [f for f in REQUIRED if f not in data]
    if missing:
        raise SpaceError(f"{where}: missing field(s) {', '.join(missing)}")
    if data["name"] != path.stem:
        raise SpaceError(f"{where}: name must equal the file name {path.stem!r}, got {data['name']!r}")


def _check_datasets(raw: Any, where: str) -> None:
    from seqrep import data as datasets  # imported here: the registry pulls in loaders

    if not isinstance(raw, list) or not raw or not all(isinstance(d, str) for d in raw):
        raise SpaceError(f"{where}: datasets must be a non-empty list of data set names, got {raw!r}")
    for dataset in raw:
        pattern = any(c in dataset for c in "*?[")  # a pattern must match a registered name
        if not (fnmatch.filter(datasets.names(), dataset) if pattern else dataset in datasets.names()):
            raise SpaceError(f"{where}: datasets: unknown data set {dataset!r}; available: {', '.join(datasets.names())}")


def _check_budget(data: dict, where: str) -> None:
    metric = data["metric"]
    if not isinstance(metric, str) or not metric.startswith("valid_"):
        raise SpaceError(f"{where}: metric must be a validation metric named valid_<quantity>, got {metric!r}")
    if data["mode"] not in ("min", "max"):
        raise SpaceError(f"{where}: mode must be min or max, got {data['mode']!r}")
    trials = data.get("trials")
    if trials is not None and (not isinstance(trials, int) or isinstance(trials, bool) or trials < 1):
        raise SpaceError(f"{where}: trials must be a positive integer or null, got {trials!r}")
    max_epochs = data["max_epochs"]
    if not isinstance(max_epochs, int) or isinstance(max_epochs, bool) or max_epochs < 1:
        raise SpaceError(f"{where}: max_epochs must be a positive integer, got {max_epochs!r}")


def _check_config(method: str, fixed: dict, dists: dict[str, Distribution], where: str) -> None:
    """Every key a field of the method's Config, every value (and range end) one it accepts."""
    config_cls = methods.resolve(method).Config
    allowed = config_cls.field_names()
    for section, keys in (("fixed", fixed), ("space", dists)):
        for key in keys:
            if key not in allowed:
                raise SpaceError(f"{where}: {section}.{key}: not a config key of method {method}; "
                                 f"allowed: {', '.join(allowed)}")
    for key, value in fixed.items():
        _check_value(config_cls, key, value, f"{where}: fixed.{key}")
    for key, dist in dists.items():
        for value in (dist.args if dist.kind in ("choice", "grid") else dist.args[:2]):
            _check_value(config_cls, key, value, f"{where}: space.{key}")


def _check_plain(value: Any, where: str) -> None:
    """A fixed value is plain data: null, a boolean, number or string, or lists and mappings of them."""
    if isinstance(value, list):
        for item in value:
            _check_plain(item, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SpaceError(f"{where}: mapping keys must be strings, got {key!r}")
            _check_plain(item, where)
    elif value is not None and not isinstance(value, (bool, int, float, str)):
        raise SpaceError(f"{where}: values must be null, booleans, numbers, strings, or lists and mappings of "
                         f"them, got {type(value).__name__} {value!r}")


def parse(data: Any, path: Path, check_config: bool = True) -> SearchSpace:
    """Validate the loaded YAML of one space file. `check_config=False` skips checking the keys and
    values against the method's Config, which imports the method (and torch): listing and showing
    spaces do without; every study checks them before it starts."""
    where = str(path)
    _check_fields(data, where, path)
    try:
        methods.check_name(str(data["method"]))
    except SeqrepError as err:
        raise SpaceError(f"{where}: method: {err}") from None
    _check_datasets(data["datasets"], where)
    _check_budget(data, where)
    fixed = data.get("fixed") or {}
    space = data["space"] or {}
    if not isinstance(fixed, dict):
        raise SpaceError(f"{where}: fixed must be a mapping of config keys to values, got {fixed!r}")
    if not isinstance(space, dict):
        raise SpaceError(f"{where}: space must be a mapping of config keys to distributions, got {space!r}")
    for key, value in fixed.items():
        _check_plain(value, f"{where}: fixed.{key}")
    both = sorted(set(fixed) & set(space))
    if both:
        raise SpaceError(f"{where}: {', '.join(both)} both fixed and searched; keep each key in one of fixed or space")
    dists = {key: parse_distribution(spec, f"{where}: space.{key}") for key, spec in space.items()}
    if check_config:
        _check_config(str(data["method"]), fixed, dists, where)
    return SearchSpace(
        name=data["name"], method=data["method"], source=str(data["source"]), datasets=tuple(data["datasets"]),
        metric=data["metric"], mode=data["mode"], trials=data.get("trials"), max_epochs=data["max_epochs"],
        fixed=dict(fixed), space=dists, path=path, notes=str(data.get("notes") or ""),
    )


def load(name_or_path: str | Path, check_config: bool = True) -> SearchSpace:
    """A space by name (`search_spaces/<name>.yaml`) or by path to a YAML file (`parse` says what
    `check_config` does)."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        path = candidate
        if path.is_dir():
            raise SpaceError(f"{path} is a folder, not a search-space file; give the path of a YAML file")
        if not path.is_file():
            raise SpaceError(f"no search-space file at {path}")
    else:
        path = paths.spaces_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            names = ", ".join(p.stem for p in sorted(paths.spaces_dir().glob("*.yaml")))
            raise SpaceError(f"unknown search space {str(name_or_path)!r}; available: {names} (or give a path to a YAML file)")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SpaceError(f"{path}: cannot read it ({err.strerror or err}); give a readable YAML file") from None
    return parse(read_yaml(raw, path), path, check_config)


def read_yaml(raw: bytes, path: Path) -> Any:
    """The YAML document of a space file's bytes, or a SpaceError naming the file and what is wrong."""
    if not raw.strip():
        raise SpaceError(f"{path}: the file is empty; a space file is a YAML mapping with the fields "
                         f"{', '.join(REQUIRED)}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpaceError(f"{path}: not a UTF-8 text file (byte 0x{raw[err.start]:02x} at offset {err.start}); "
                         "a space file is YAML text") from None
    if "\x00" in text:
        raise SpaceError(f"{path}: a binary file (it holds NUL bytes), not YAML text")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        what = " ".join(str(getattr(err, "problem", None) or getattr(err, "reason", None) or err).split())
        raise SpaceError(f"{path}:{line} not valid YAML: {what}") from None
    except RecursionError:
        raise SpaceError(f"{path}: not a usable YAML document (nested too deeply)") from None


def list_spaces(check_config: bool = True) -> tuple[list[SearchSpace], list[str]]:
    """Every space in search_spaces/, and the errors of files that do not load."""
    good, bad = [], []
    for path in sorted(paths.spaces_dir().glob("*.yaml")):
        try:
            good.append(load(path, check_config))
        except SeqrepError as err:
            bad.append(str(err))
    return good, bad


def to_optuna(space: SearchSpace) -> dict[str, Any]:
    """Optuna distributions for the searched keys (fixed values stay in Ray's param_space)."""
    from optuna import distributions as od

    out: dict[str, Any] = {}
    for key, dist in space.space.items():
        if dist.kind == "choice":
            out[key] = od.CategoricalDistribution(list(dist.args))
        elif dist.kind == "uniform":
            out[key] = od.FloatDistribution(dist.low, dist.high)
        elif dist.kind == "loguniform":
            out[key] = od.FloatDistribution(dist.low, dist.high, log=True)
        elif dist.kind == "randint":
            out[key] = od.IntDistribution(dist.low, dist.high)
        elif dist.kind == "quniform":
            out[key] = od.FloatDistribution(dist.low, dist.high, step=dist.args[2])
        elif dist.kind == "grid":
            raise SpaceError(f"{space.path}: space.{key}: the optuna searcher cannot run a grid; use --searcher random")
        else:
            raise AssertionError(dist.kind)
    return out


def format_space(space: SearchSpace) -> str:
    """A readable listing for `seqrep spaces NAME`."""
    lines = [
        f"{space.name}  ({space.path.name})",
        f"  method      {space.method}",
        f"  source      {space.source}",
        f"  datasets    {', '.join(space.datasets)}",
        f"  select by   {space.metric} ({space.mode})",
        f"  trials      {space.trials if space.trials is not None else '(the thesis gives no count)'}",
        f"  max_epochs  {space.max_epochs}",
    ]
    if space.notes:
        lines.append(f"  notes       {space.notes}")
    if space.fixed:
        lines.append("  fixed")
        width = max(len(k) for k in space.fixed)
        lines += [f"    {k:<{width}}  {json.dumps(v)}" for k, v in space.fixed.items()]
    lines.append("  searched")
    if space.space:
        width = max(len(k) for k in space.space)
        lines += [f"    {k:<{width}}  {d.describe()}" for k, d in space.space.items()]
    else:
        lines.append("    (nothing: a fixed configuration)")
    return "\n".join(lines)


def resolved_json(space: SearchSpace) -> str:
    return json.dumps(space.to_json(), indent=2)


def with_grid(space: SearchSpace, key: str, values: list) -> SearchSpace:
    """`space` with the grid over `key` replaced by `values` (`seqrep reproduce table8 --splits K`)."""
    if key not in space.space or space.space[key].kind != "grid":
        raise SpaceError(f"{space.path}: space.{key} is not a grid, so it cannot be narrowed")
    return dataclasses.replace(space, space={**space.space, key: Distribution("grid", tuple(values))})
