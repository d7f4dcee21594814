"""Rebuild a thesis table from study summaries, beside the numbers the thesis published.

`results/reference/<table>.csv` holds the thesis's numbers in long format (dataset, method,
metric, thesis, space, note); `space` names the search space whose study reproduces the row (empty
for literature baselines). A row's "ours" is the metric of the best trial of that study, the best
trial being the one with the best selection metric (the space's `metric`/`mode`) among the trials
that finished (completed, or diverged after reaching a finite best epoch). For a space with a
`grid` (Table 8: one trial per UCI split) "ours" is instead the mean over its finished trials and
`ours_std` their standard deviation (ddof 1), as the thesis reports "means and standard deviations
coming from ten different random splits" (Section 2.6.4).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from seqrep import paths, spaces, studydir, summary
from seqrep.errors import SeqrepError
from seqrep.method import Declaration
from seqrep.paths import atomic_write

REFERENCE_COLUMNS = ["dataset", "method", "metric", "thesis", "space", "note"]
OUTPUT_COLUMNS = ["dataset", "method", "metric", "thesis", "ours", "trials", "best_trial", "study", "space", "note",
                  "ours_std", "repeats", "within"]
HIGHER_IS_BETTER = ("accuracy", "nca_prob")  # metric names containing these are maximised; the rest minimised
USABLE = ("completed", "diverged")


def available() -> list[str]:
    return sorted((p.stem for p in paths.reference_dir().glob("table*.csv")), key=lambda s: int(s[5:]))


def load_reference(table: str) -> pd.DataFrame:
    path = paths.reference_dir() / f"{table}.csv"
    if not path.exists():
        extra = " (Table 8 did not survive the thesis's text extraction; see results/reference/README.md)" \
            if table == "table8" else ""
        raise SeqrepError(f"unknown table {table!r}{extra}; available: {', '.join(available())}")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(frame.columns) != REFERENCE_COLUMNS:
        raise SeqrepError(f"{path}: expected columns {', '.join(REFERENCE_COLUMNS)}, got {', '.join(frame.columns)}")
    return frame


def studies_for(table: str, datasets: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """The (space, dataset) studies a table needs whose search space exists, in table order."""
    frame = load_reference(table)
    wanted = set(datasets) if datasets else None
    if wanted:
        unknown = sorted(wanted - set(frame["dataset"]))
        if unknown:
            raise SeqrepError(f"{table} has no data set(s) {', '.join(unknown)}; "
                              f"it covers {', '.join(dict.fromkeys(frame['dataset']))}")
    existing = {p.stem for p in paths.spaces_dir().glob("*.yaml")}
    out: list[tuple[str, str]] = []
    for row in frame.itertuples():
        key = (row.space, row.dataset)
        if row.space and row.space in existing and (wanted is None or row.dataset in wanted) and key not in out:
            out.append(key)
    return out


def finished(trials: pd.DataFrame, *metrics: str) -> pd.DataFrame:
    """The trials that finished (completed, or diverged after a finite best epoch) with a finite
    value of every one of `metrics` (none where a metric is not a column)."""
    usable = trials[trials["status"].isin(USABLE)]
    for metric in metrics:
        if metric not in usable:
            return usable.iloc[0:0]
        usable = usable[usable[metric].map(lambda v: isinstance(v, float) and math.isfinite(v))]
    return usable


def best_trial(trials: pd.DataFrame, metric: str, mode: str, requires: Iterable[str] = ()) -> pd.Series | None:
    """The finished trial with the best finite `metric`, the first drawn among equals (`draw`; row
    order where a summary has none); `requires`: metrics that must not be 0 for a trial to count
    (what its method declares, e.g. Section 3.5.2's `valid_improved`)."""
    usable = finished(trials, metric)
    for column in requires:
        if column in usable:
            usable = usable[usable[column].map(lambda v: not (isinstance(v, float) and v == 0.0))]
    if usable.empty:
        return None
    # ties go to the config drawn first, as a study of solo trials lists them: not to the order of a
    # cohort study's rows, which follows its grouping (and so the cluster's size)
    by_draw = "draw" in usable and usable["draw"].notna().all()
    keys, ascending = ([metric, "draw"], [mode == "min", True]) if by_draw else ([metric], [mode == "min"])
    return usable.sort_values(keys, ascending=ascending, kind="mergesort").iloc[0]


def aggregate_trials(trials: pd.DataFrame) -> pd.Series | None:
    """Mean (and `<metric>__std`, ddof 1) of every test_* metric over the finished trials of a grid
    study; `trial_id` says how many were averaged. None when none finished."""
    usable = trials[trials["status"].isin(USABLE)]
    if usable.empty:
        return None
    out: dict[str, object] = {"trial_id": f"mean of {len(usable)}"}
    for column in usable.columns:
        if column.startswith("test_"):
            values = pd.to_numeric(usable[column], errors="coerce")
            out[column] = float(values.mean())
            out[f"{column}__std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return pd.Series(out)


def study_pick(directory: Path, space_name: str) -> tuple[pd.Series | None, int, str]:
    """A finished study's row for the table (its best trial, or the mean of a grid study), how many
    trials finished, and the study's name."""
    space = spaces.load(space_name, check_config=False)
    trials = summary.read(directory)
    usable = int(trials["status"].isin(USABLE).sum())
    if any(d.kind == "grid" for d in space.space.values()):
        return aggregate_trials(trials), usable, Path(directory).name
    requires = Declaration.from_json((studydir.read_record(directory) or {}).get("declares")).row_requires
    return best_trial(trials, space.metric, space.mode, requires), usable, Path(directory).name


def _ours(trial: pd.Series | None, metric: str) -> tuple[object, float]:
    """The cell's value (a number, or a word such as Table 10's pooling) and its spread."""
    if trial is None:
        return math.nan, math.nan
    if metric in trial.index and pd.notna(trial[metric]):
        return float(trial[metric]), float(trial.get(f"{metric}__std", math.nan))
    if pd.notna(trial.get(f"config.{metric}")):  # a word: Table 10's pooling, transfer
        return str(trial[f"config.{metric}"]), math.nan
    return math.nan, math.nan


def higher_is_better(metric: str) -> bool:
    return any(word in metric for word in HIGHER_IS_BETTER)


def within(thesis: str, ours: object, std: float, metric: str) -> str:
    """Whether the thesis's number lies within two standard deviations of our mean ("yes"), ours is
    better beyond them ("better"), or worse ("no"); empty without a spread or a number."""
    try:
        value = float(thesis)
    except ValueError:
        return ""
    if not isinstance(ours, float) or math.isnan(ours) or math.isnan(std):
        return ""
    if abs(value - ours) <= 2 * std:
        return "yes"
    return "better" if (ours > value) == higher_is_better(metric) else "no"


def _cell(picks: list[tuple[pd.Series | None, int, str]], metric: str) -> tuple[object, float]:
    """One study: its value and spread (Table 8: over the splits); repeats: mean ± std (ddof 1)
    over the repeats' values (a word, such as Table 10's pooling, when every repeat agrees)."""
    values = [_ours(trial, metric) for trial, _, _ in picks]
    if len(values) == 1:
        return values[0]
    numbers = [v for v, _ in values if isinstance(v, float) and not math.isnan(v)]
    if numbers:
        return float(np.mean(numbers)), float(np.std(numbers, ddof=1)) if len(numbers) > 1 else math.nan
    words = sorted({v for v, _ in values if isinstance(v, str)})
    return ("/".join(words) if words else math.nan), math.nan


def build(table: str, study_dirs_of: Callable[[str, str], "Path | list[Path] | None"],
          datasets: Iterable[str] | None = None) -> pd.DataFrame:
    """The table in long format; `study_dirs_of(space, dataset)` gives a finished study's folder, or
    the folders of its repeats (`seqrep reproduce --repeats`)."""
    frame = load_reference(table)
    if datasets:
        frame = frame[frame["dataset"].isin(set(datasets))]
    picks: dict[tuple[str, str], list[tuple[pd.Series | None, int, str]]] = {}
    rows = []
    for ref in frame.itertuples():
        key = (ref.space, ref.dataset)
        if ref.space and key not in picks:
            found = study_dirs_of(ref.space, ref.dataset)
            directories = [found] if isinstance(found, (str, Path)) else list(found or [])
            done = [d for d in directories if (Path(d) / summary.SUMMARY_FILE).exists()]
            if done:
                picks[key] = [study_pick(d, ref.space) for d in done]
        chosen = picks.get(key, [])
        ours, ours_std = _cell(chosen, ref.metric) if chosen else (math.nan, math.nan)
        rows.append({
            "dataset": ref.dataset, "method": ref.method, "metric": ref.metric, "thesis": ref.thesis,
            "ours": ours, "trials": sum(c[1] for c in chosen) if chosen else None,
            "best_trial": ";".join(str(c[0]["trial_id"]) for c in chosen if c[0] is not None) or None,
            "study": ";".join(c[2] for c in chosen) or None, "space": ref.space, "note": ref.note,
            "ours_std": ours_std, "repeats": len(chosen),
            "within": within(ref.thesis, ours, ours_std, ref.metric) if len(chosen) > 1 else "",
        })
    return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


def format_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.1f}"
    return str(value)


def _row_cells(group: pd.DataFrame, metrics: list[str], spread: bool) -> list[str]:
    cells = list(group.iloc[0][["dataset", "method"]])
    by_metric = {r.metric: r for r in group.itertuples()}
    for m in metrics:
        r = by_metric.get(m)
        ours = format_value(r.ours) if r is not None else ""
        if r is not None and ours and isinstance(r.ours_std, float) and not math.isnan(r.ours_std):
            ours += f" ± {format_value(r.ours_std)}"
        cells += [r.thesis if r is not None else "", ours] + ([r.within if r is not None else ""] if spread else [])
    trials = group["trials"].dropna()
    return cells + [format_value(int(trials.iloc[0])) if len(trials) else ""]


def to_markdown(table: str, frame: pd.DataFrame) -> str:
    """Readable: one line per (dataset, method), thesis and ours side by side for each metric; with
    repeats, a third column per metric says whether the thesis lies within our spread."""
    metrics = list(dict.fromkeys(frame["metric"]))
    spread = bool((pd.to_numeric(frame["repeats"], errors="coerce").fillna(0) > 1).any())
    who = ("thesis", "ours", "within 2σ") if spread else ("thesis", "ours")
    header = ["dataset", "method"] + [f"{m} {w}" for m in metrics for w in who] + ["trials"]
    text = ("Ours: the best trial by the space's validation metric; empty where the method has no "
            "search space yet or is a literature baseline. Where a study runs one trial per data split "
            "(Table 8), ours is the mean ± standard deviation over the splits.")
    if spread:
        text += (" With repeats (`--repeats R`: the same study with R seeds), ours is the mean ± standard "
                 "deviation of the repeats' values, trials their sum, and \"within 2σ\" says whether the "
                 "thesis's number lies within two standard deviations of our mean (yes), ours is better "
                 "beyond them (better), or worse (no).")
    lines = [f"# {table}: thesis beside seqrep", "", text, "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, group in frame.groupby(["dataset", "method"], sort=False):
        lines.append("| " + " | ".join(_row_cells(group, metrics, spread)) + " |")
    return "\n".join(lines) + "\n"


def write(table: str, frame: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv = out_dir / f"{table}.md", out_dir / f"{table}.csv"
    for path, text in ((md, to_markdown(table, frame)), (csv, frame.to_csv(index=False))):
        atomic_write(path, lambda tmp, text=text: tmp.write_text(text))
    return md, csv


def write_manifest(table: str, out_dir: Path, manifest: dict) -> Path:
    """`<out>/<table>.json`: how the table was made and which study folders each row read."""
    path = Path(out_dir) / f"{table}.json"
    studydir.write_json(path, manifest)
    return path


def read_manifest(table: str, out_dir: Path) -> dict:
    path = Path(out_dir) / f"{table}.json"
    if not path.exists():
        raise SeqrepError(f"no {path}: rebuild the table first with `seqrep reproduce {table} --out {out_dir}`")
    return studydir.read_json(path)
