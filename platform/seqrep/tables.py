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

from seqrep import paths, spaces, summary
from seqrep.errors import SeqrepError

REFERENCE_COLUMNS = ["dataset", "method", "metric", "thesis", "space", "note"]
OUTPUT_COLUMNS = ["dataset", "method", "metric", "thesis", "ours", "trials", "best_trial", "study", "space", "note",
                  "ours_std"]
USABLE = ("completed", "diverged")
IMPROVED = "valid_improved"  # 0.0: the trial's classification did not improve in training (trainables.nn.reduction)


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


def best_trial(trials: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    usable = trials[trials["status"].isin(USABLE)]
    if IMPROVED in usable:  # Section 3.5.2: keep only trials whose classification improved in training
        usable = usable[usable[IMPROVED].map(lambda v: not (isinstance(v, float) and v == 0.0))]
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


def build(table: str, study_dir_of: Callable[[str, str], Path | None], datasets: Iterable[str] | None = None) -> pd.DataFrame:
    """The table in long format; `study_dir_of(space, dataset)` gives a finished study's folder."""
    frame = load_reference(table)
    if datasets:
        frame = frame[frame["dataset"].isin(set(datasets))]
    best: dict[tuple[str, str], tuple[pd.Series | None, int, str]] = {}
    rows = []
    for ref in frame.itertuples():
        ours, ours_std, trials, best_id, study = math.nan, math.nan, None, None, None
        key = (ref.space, ref.dataset)
        if ref.space:
            if key not in best:
                directory = study_dir_of(ref.space, ref.dataset)
                if directory is not None and (Path(directory) / summary.SUMMARY_FILE).exists():
                    space = spaces.load(ref.space)
                    frame_trials = summary.read(directory)
                    usable = int(frame_trials["status"].isin(USABLE).sum())
                    grid = any(d.kind == "grid" for d in space.space.values())
                    pick = aggregate_trials(frame_trials) if grid else best_trial(frame_trials, space.metric, space.mode)
                    best[key] = (pick, usable, Path(directory).name)
            if key in best:
                trial, trials, study = best[key]
                if trial is not None:
                    best_id = trial["trial_id"]
                    if ref.metric in trial.index and pd.notna(trial[ref.metric]):
                        ours = float(trial[ref.metric])
                        ours_std = float(trial.get(f"{ref.metric}__std", math.nan))
                    elif pd.notna(trial.get(f"config.{ref.metric}")):  # a word: Table 10's pooling, transfer
                        ours = str(trial[f"config.{ref.metric}"])
        rows.append({
            "dataset": ref.dataset, "method": ref.method, "metric": ref.metric, "thesis": ref.thesis,
            "ours": ours, "trials": trials, "best_trial": best_id, "study": study, "space": ref.space,
            "note": ref.note, "ours_std": ours_std,
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
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return md, csv
