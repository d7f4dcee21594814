"""Rebuild a thesis table from study summaries, beside the numbers the thesis published.

`results/reference/<table>.csv` holds the thesis's numbers in long format (dataset, method,
metric, thesis, space, note); `space` names the search space whose study reproduces the row (empty
for literature baselines). A row's "ours" is the metric of the best trial of that study, the best
trial being the one with the best selection metric (the space's `metric`/`mode`) among the trials
that finished (completed, or diverged after reaching a finite best epoch).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from seqrep import paths, spaces, summary
from seqrep.errors import SeqrepError

REFERENCE_COLUMNS = ["dataset", "method", "metric", "thesis", "space", "note"]
OUTPUT_COLUMNS = ["dataset", "method", "metric", "thesis", "ours", "trials", "best_trial", "study", "space", "note"]
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


def best_trial(trials: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    usable = trials[trials["status"].isin(USABLE)]
    if metric not in usable:
        return None
    usable = usable[usable[metric].map(lambda v: isinstance(v, float) and math.isfinite(v))]
    if usable.empty:
        return None
    index = usable[metric].idxmin() if mode == "min" else usable[metric].idxmax()
    return usable.loc[index]


def build(table: str, study_dir_of: Callable[[str, str], Path | None], datasets: Iterable[str] | None = None) -> pd.DataFrame:
    """The table in long format; `study_dir_of(space, dataset)` gives a finished study's folder."""
    frame = load_reference(table)
    if datasets:
        frame = frame[frame["dataset"].isin(set(datasets))]
    best: dict[tuple[str, str], tuple[pd.Series | None, int, str]] = {}
    rows = []
    for ref in frame.itertuples():
        ours, trials, best_id, study = math.nan, None, None, None
        key = (ref.space, ref.dataset)
        if ref.space:
            if key not in best:
                directory = study_dir_of(ref.space, ref.dataset)
                if directory is not None and (Path(directory) / summary.SUMMARY_FILE).exists():
                    space = spaces.load(ref.space)
                    frame_trials = summary.read(directory)
                    usable = int(frame_trials["status"].isin(USABLE).sum())
                    best[key] = (best_trial(frame_trials, space.metric, space.mode), usable, Path(directory).name)
            if key in best:
                trial, trials, study = best[key]
                if trial is not None:
                    best_id = trial["trial_id"]
                    if ref.metric in trial.index and pd.notna(trial[ref.metric]):
                        ours = float(trial[ref.metric])
        rows.append({
            "dataset": ref.dataset, "method": ref.method, "metric": ref.metric, "thesis": ref.thesis,
            "ours": ours, "trials": trials, "best_trial": best_id, "study": study, "space": ref.space,
            "note": ref.note,
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
             "search space yet or is a literature baseline.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (dataset, method), group in frame.groupby(["dataset", "method"], sort=False):
        cells = [dataset, method]
        by_metric = {r.metric: r for r in group.itertuples()}
        for m in metrics:
            r = by_metric.get(m)
            cells += [r.thesis if r is not None else "", _fmt(r.ours) if r is not None else ""]
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
