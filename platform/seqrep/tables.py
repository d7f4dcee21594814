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

import pandas as pd

from seqrep import paths, spaces, studydir, summary
from seqrep.errors import SeqrepError
from seqrep.method import Declaration
from seqrep.paths import atomic_write

REFERENCE_COLUMNS = ["dataset", "method", "metric", "thesis", "space", "note"]
OUTPUT_COLUMNS = ["dataset", "method", "metric", "thesis", "ours", "trials", "best_trial", "study", "space", "note",
                  "ours_std"]
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


def best_trial(trials: pd.DataFrame, metric: str, mode: str, requires: Iterable[str] = ()) -> pd.Series | None:
    """The finished trial with the best finite `metric`; `requires`: metrics that must not be 0 for
    a trial to count (what its method declares, e.g. Section 3.5.2's `valid_improved`)."""
    usable = trials[trials["status"].isin(USABLE)]
    for column in requires:
        if column in usable:
            usable = usable[usable[column].map(lambda v: not (isinstance(v, float) and v == 0.0))]
    if metric not in usable:
        return None
    usable = usable[usable[metric].map(lambda v: isinstance(v, float) and math.isfinite(v))]
    if usable.empty:
        return None
    index = usable[metric].idxmin() if mode == "min" else usable[metric].idxmax()
    return usable.loc[index]


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


def build(table: str, study_dir_of: Callable[[str, str], Path | None], datasets: Iterable[str] | None = None) -> pd.DataFrame:
    """The table in long format; `study_dir_of(space, dataset)` gives a finished study's folder."""
    frame = load_reference(table)
    if datasets:
        frame = frame[frame["dataset"].isin(set(datasets))]
    picks: dict[tuple[str, str], tuple[pd.Series | None, int, str]] = {}
    rows = []
    for ref in frame.itertuples():
        key = (ref.space, ref.dataset)
        if ref.space and key not in picks:
            directory = study_dir_of(ref.space, ref.dataset)
            if directory is not None and (Path(directory) / summary.SUMMARY_FILE).exists():
                picks[key] = study_pick(directory, ref.space)
        trial, trials, study = picks.get(key, (None, None, None))
        ours, ours_std = _ours(trial, ref.metric)
        rows.append({
            "dataset": ref.dataset, "method": ref.method, "metric": ref.metric, "thesis": ref.thesis,
            "ours": ours, "trials": trials, "best_trial": trial["trial_id"] if trial is not None else None,
            "study": study, "space": ref.space, "note": ref.note, "ours_std": ours_std,
        })
    return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.1f}"
    return str(value)


def to_markdown(table: str, frame: pd.DataFrame) -> str:
    """Readable: one line per (dataset, method), thesis and ours side by side for each metric."""
    metrics = list(dict.fromkeys(frame["metric"]))
    header = ["dataset", "method"] + [f"{m} {who}" for m in metrics for who in ("thesis", "ours")] + ["trials"]
    lines = [f"# {table}: thesis beside seqrep", "",
             "Ours: the best trial by the space's validation metric; empty where the method has no "
             "search space yet or is a literature baseline. Where a study runs one trial per data split "
             "(Table 8), ours is the mean ± standard deviation over the splits.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (dataset, method), group in frame.groupby(["dataset", "method"], sort=False):
        cells = [dataset, method]
        by_metric = {r.metric: r for r in group.itertuples()}
        for m in metrics:
            r = by_metric.get(m)
            ours = _fmt(r.ours) if r is not None else ""
            if r is not None and ours and isinstance(r.ours_std, float) and not math.isnan(r.ours_std):
                ours += f" ± {_fmt(r.ours_std)}"
            cells += [r.thesis if r is not None else "", ours]
        trials = group["trials"].dropna()
        cells.append(_fmt(int(trials.iloc[0])) if len(trials) else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(table: str, frame: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv = out_dir / f"{table}.md", out_dir / f"{table}.csv"
    for path, text in ((md, to_markdown(table, frame)), (csv, frame.to_csv(index=False))):
        atomic_write(path, lambda tmp, text=text: tmp.write_text(text))
    return md, csv
