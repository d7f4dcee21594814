"""`seqrep report STUDY_DIR|TABLE`: a page per study or per rebuilt table, in HTML and Markdown.

A table's report holds the table (thesis, ours, spread, whether the thesis lies within it) and, for
every study behind it, its figures: the expected test value of the validation-selected best trial
after n = 1 .. N random trials with a bootstrap band (`seqrep.expected`; Dodge et al., 2019)
beside the thesis's number, the importance of each searched hyperparameter for the selection
metric (Optuna's fANOVA evaluator on an in-memory Optuna study built from the Parquet rows), the
selection metric against the most important parameters, and, where the study's method keeps its
trials' test embeddings (the sequence-reduction methods), the t-SNE map of the selected trial's
(Figure 9; drawn here rather than in every trial, where it cost more than a Table 10 trial's
training), its sequential Jacobians (Figure 11) and the nearest neighbours of two test samples in
its embedding space (Figure 12), from the arrays the trial kept beside its embeddings. Each
searched study's section names its selected trial (its selection metric and searched parameters)
and shows the figures that trial drew itself (`trial_figures`: Figure 6 of a toy regression,
Figures 15-16 of STORN on motion capture). The HTML page is self-contained (figures embedded); the
Markdown page links the PNG files written beside it. The expected-best numbers are also written to
the study folder (`expected_best.csv`)."""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import shutil
import struct
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from seqrep import cohorts, figures, spaces, studydir, summary, tables, tracking
from seqrep.errors import SeqrepError
from seqrep.method import Declaration
from seqrep.expected import bootstrap_band, expected_best

EXPECTED_FILE = "expected_best.csv"
EMBEDDINGS_FILE = "embeddings.npz"  # a trial's test embeddings (`trainables.kit.tsne`), Figure 9's input
WIDE_PIXELS = 1000  # a figure at least this wide gets a row of its own on the HTML page


def _load(study_dir: Path) -> tuple[dict, pd.DataFrame]:
    """The study's record and its Parquet rows, read once per study."""
    return studydir.read_record(study_dir) or {}, summary.read(study_dir)


def expected_curve(study_dir: Path, record: dict | None = None, trials: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """n, expected test value, band, for the study's selection metric (valid_q -> test_q); written to
    `<study>/expected_best.csv`. None without two finished trials that have both values."""
    if record is None or trials is None:
        record, trials = _load(study_dir)
    metric, mode = record.get("metric", ""), record.get("mode", "min")
    test_metric = "test_" + metric.removeprefix("valid_")
    usable = tables.finished(trials, metric, test_metric)
    if len(usable) < 2:
        return None
    valid, test = usable[metric].to_numpy(float), usable[test_metric].to_numpy(float)
    low, high = bootstrap_band(valid, test, mode, seed=0)
    curve = pd.DataFrame({"n": np.arange(1, len(valid) + 1), "expected": expected_best(valid, test, mode),
                          "low": low, "high": high})
    curve.attrs.update(metric=test_metric, selection=metric)
    curve.to_csv(Path(study_dir) / EXPECTED_FILE, index=False)
    return curve


def importance(study_dir: Path, record: dict | None = None, trials: pd.DataFrame | None = None) -> dict[str, float]:
    """fANOVA importance of every searched parameter for the selection metric (empty when the space
    searches nothing or fewer than three trials finished)."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    if record is None or trials is None:
        record, trials = _load(study_dir)
    space = _space(record)
    searched = dataclasses.replace(space, space={k: d for k, d in space.space.items() if d.kind != "grid"})
    distributions = spaces.to_optuna(searched)
    usable = tables.finished(trials, record.get("metric", ""))
    if not distributions or len(usable) < 3:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if record.get("mode") == "min" else "maximize")
    for _, row in usable.iterrows():
        params = {k: _param(row.get(f"config.{k}"), d) for k, d in distributions.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  value=float(row[record["metric"]])))
    found = optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    return {k: float(v) for k, v in found.items()}


def _param(value, distribution):
    """A Parquet cell back in the type its Optuna distribution holds."""
    if _missing(value):
        return None
    if hasattr(distribution, "choices"):
        return next((c for c in distribution.choices if c == value or str(c) == str(value)), value)
    return type(distribution.low)(value)


def selected_trial(study_dir: Path, record: dict, trials: pd.DataFrame) -> tuple[pd.Series, Path | None] | None:
    """The selected trial of a searched study (the table's pick: its Parquet row) and its kept
    folder (None where it kept none); None when no trial can be selected."""
    declares = Declaration.from_json(record.get("declares"))
    best = tables.best_trial(trials, record.get("metric", ""), record.get("mode", "min"), declares.row_requires)
    if best is None:
        return None
    cohort = best.get("cohort")
    return best, cohorts.kept_folder(study_dir, str(best["trial_id"]), cohort if isinstance(cohort, str) else None)


def selected_embeddings(study_dir: Path, record: dict, trials: pd.DataFrame) -> tuple[str, Path] | None:
    """The selected trial of a searched study and its kept test embeddings, where its method keeps
    them; None otherwise."""
    selected = selected_trial(study_dir, record, trials)
    path = _kept_embeddings(selected[1]) if selected is not None else None
    return (str(selected[0]["trial_id"]), path) if path is not None else None


def _kept_embeddings(folder: Path | None) -> Path | None:
    """A kept folder's test embeddings (and Figures 11-12's arrays), where its method keeps them."""
    path = folder / EMBEDDINGS_FILE if folder is not None else None
    return path if path is not None and path.is_file() else None


def trial_figures(folder: Path | None) -> list[Path]:
    """The figures a trial drew itself and kept with its model (PNG files of its kept folder, by
    name): Figure 6's predictive distribution of a toy regression trial (`predictive.png`), STORN's
    Figures 15 and 16 on motion capture (`imputation.png`, `samples.png`)."""
    return sorted(folder.glob("*.png")) if folder is not None else []


def selected_text(best: pd.Series, metric: str, searched: list[str]) -> str:
    """One line naming the selected trial, its selection metric and its searched parameters."""
    def shown(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    params = ", ".join(f"{k}={shown(best[f'config.{k}'])}" for k in searched
                       if f"config.{k}" in best.index and not _missing(best[f"config.{k}"]))
    value = f"{metric} {shown(float(best[metric]))}" if metric in best.index else ""
    return f"selected trial {best['trial_id']} ({'; '.join(p for p in (value, params) if p)})"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def grid_keys(record: dict) -> list[str]:
    """The study space's grid parameters (Table 8's `split`): one trial per value, not a random draw."""
    return space_keys(record)[0]


def space_keys(record: dict) -> tuple[list[str], list[str]]:
    """The study space's grid parameters (Table 8's `split`: one trial per value, not a random
    draw) and its searched ones, each in the space's order."""
    space = _space(record).space
    return [k for k, d in space.items() if d.kind == "grid"], [k for k, d in space.items() if d.kind != "grid"]


def _space(record: dict) -> spaces.SearchSpace:
    return spaces.load(record.get("space_path") or record["space"], check_config=False)


def study_section(study_dir: Path, out: Path, thesis: dict[str, float], metrics: tuple[str, ...] = ()) -> dict:
    """Figures of one study written to `out` (PNG), and what the page says about them: expected
    best of n, fANOVA importance, the metric against the top parameters, and the selected trial's
    t-SNE map, sequential Jacobians and nearest neighbours where its method keeps test embeddings
    (Figures 9, 11, 12), and the figures the selected trial drew itself. `metrics`: the table's
    columns for this study (a grid study's figure shows them, else its first three test metrics)."""
    study_dir, name = Path(study_dir), Path(study_dir).name
    record, trials = _load(study_dir)
    grid, searched = space_keys(record)
    # a grid's trials are its values (Table 8: the splits), not draws of a search: no best of n
    curve = None if grid else expected_curve(study_dir, record, trials)
    found = importance(study_dir, record, trials)
    images = []
    if grid:
        usable = tables.finished(trials)
        present = [c for c in usable.columns if c.startswith("test_") and not c.endswith("__std")
                   and pd.to_numeric(usable[c], errors="coerce").notna().any()]
        shown = [m for m in metrics if m in present] or present[:3]
        if len(usable) and shown:
            images.append(figures.per_value(usable, f"config.{grid[0]}", shown, name, out / f"{name}-per-{grid[0]}.png"))
    if curve is not None:
        images.append(figures.expected_best(curve, thesis.get(curve.attrs["metric"]), name,
                                            out / f"{name}-expected.png"))
    if found:
        images.append(figures.importance(found, record.get("metric", ""), name, out / f"{name}-importance.png"))
        top = list(found)[:3]
        images.append(figures.scatter(tables.finished(trials, record["metric"]), top, record["metric"],
                                      name, out / f"{name}-scatter.png"))
    selected = None if grid else selected_trial(study_dir, record, trials)
    lines = [selected_text(selected[0], record.get("metric", ""), searched)] if selected is not None else []
    images += _selected_figures(*selected, name, out) if selected is not None else []
    return {"name": name, "dir": study_dir, "trials": len(trials), "curve": curve, "grid": grid,
            "importance": found, "images": images, "lines": lines}


def _selected_figures(best: pd.Series, folder: Path | None, name: str, out: Path) -> list[Path]:
    """The selected trial's Figures 9, 11 and 12 (a sequence-reduction trial's kept arrays) and
    the figures it drew itself, copied beside the page: the Markdown page links them, and a study
    folder may be moved or pruned."""
    images, kept, trial = [], _kept_embeddings(folder), str(best["trial_id"])
    if kept is not None:
        drawn = [figures.tsne(kept, name, trial, out / f"{name}-tsne.png"),
                 figures.sequential_jacobian(kept, name, trial, out / f"{name}-jacobian.png"),
                 figures.neighbours(kept, name, trial, out / f"{name}-neighbours.png")]
        images += [d for d in drawn if d is not None]
    return images + [Path(shutil.copyfile(p, out / f"{name}-trial-{p.stem}.png")) for p in trial_figures(folder)]


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    # one panel per parameter, or a trial's figure of many panels (STORN's 48 channels): a row of its own
    wide = ' class="wide"' if path.stem.endswith("-scatter") or _png_width(path) >= WIDE_PIXELS else ""
    return f'<img alt="{html.escape(alt)}"{wide} src="data:image/png;base64,{data}">'


def _png_width(path: Path) -> int:
    """A PNG's width in pixels, from its header (0 for anything else)."""
    with open(path, "rb") as f:
        head = f.read(24)
    return struct.unpack(">I", head[16:20])[0] if head[:8] == b"\x89PNG\r\n\x1a\n" else 0


def _curve_text(curve: pd.DataFrame | None) -> str:
    if curve is None:
        return "fewer than two finished trials: no expected-best curve"
    picks = [n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n <= len(curve)] + [len(curve)]
    cells = ", ".join(f"n={n}: {curve.expected[n - 1]:.4g} [{curve.low[n - 1]:.4g}, {curve.high[n - 1]:.4g}]"
                      for n in dict.fromkeys(picks))
    return f"expected {curve.attrs['metric']} of the validation-best of n trials (95% bootstrap band): {cells}"


def _pages(title: str, table_md: str, table_html: str, sections: list[dict], header: str,
           out: Path, stem: str) -> tuple[Path, Path]:
    md = [f"# {title}", "", header, "", table_md, ""]
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{_code(header)}</p>", table_html]
    for s in sections:
        ranking = ", ".join(f"{k} {v:.2f}" for k, v in s["importance"].items()) or "not computed (a fixed " \
            "configuration, or fewer than three finished trials)"
        about = (f"a grid over {', '.join(s['grid'])}: one trial per value, not a random search, so no "
                 f"expected best of n; the test metrics per value are below" if s.get("grid") else _curve_text(s["curve"]))
        lines = [f"{s['trials']} trials; {about}", f"fANOVA importance: {ranking}", *s.get("lines", ())]
        md += [f"## {s['name']}", "", *[f"- {line}" for line in lines], ""]
        md += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in s["images"]] + [""]
        body += [f"<h2>{html.escape(s['name'])}</h2>", *[f"<p>{html.escape(line)}</p>" for line in lines],
                 *[_img_tag(p, p.stem) for p in s["images"]]]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}"
             "img{max-width:48%;margin:.2em;vertical-align:top}img.wide{max-width:98%}"
             "code{background:#f4f4f4;padding:0 .2em}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    md_path, html_path = out / f"{stem}.md", out / f"{stem}.html"
    md_path.write_text("\n".join(md) + "\n")
    html_path.write_text(page)
    return md_path, html_path


def _code(text: str) -> str:
    """Escaped text with its `backquoted` parts as <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _number_or_text(value) -> str:
    """A cell as the Markdown table shows it: numbers to four decimals (the CSV column holding
    numbers and words, such as a pooling function, reads back as text), words as they are."""
    try:
        return tables.format_value(float(value))
    except (TypeError, ValueError):
        return "" if pd.isna(value) else str(value)


def _table_html(frame: pd.DataFrame) -> str:
    shown = frame[["dataset", "method", "metric", "thesis", "ours", "ours_std", "within", "trials", "study"]].copy()
    shown["ours"] = shown["ours"].map(_number_or_text)
    shown["ours_std"] = shown["ours_std"].map(_number_or_text)
    shown["trials"] = shown["trials"].map(lambda v: "" if pd.isna(v) else str(int(v)))
    return shown.fillna("").to_html(index=False, escape=True, border=0)


def study_inputs(frame: pd.DataFrame, space: str, dataset: str) -> tuple[dict[str, float], tuple[str, ...]]:
    """What a study's section takes from its rows of a table (or of the table's reference): the
    thesis's numbers by metric and the table's metrics, in order."""
    rows = frame[(frame["space"] == space) & (frame["dataset"] == dataset)]
    thesis = {r.metric: float(r.thesis) for r in rows.itertuples() if _is_number(r.thesis)}
    return thesis, tuple(dict.fromkeys(rows["metric"]))


def figures_folder(table: str, out_dir: Path) -> Path:
    return Path(out_dir) / "figures" / table


def table_report(table: str, out_dir: Path, drawn: Mapping[Path, dict] | None = None) -> tuple[Path, Path]:
    """`<out>/<table>-report.md` and `.html` from the table and its manifest (`seqrep reproduce`).
    `drawn`: sections already drawn (`study_section` into `figures_folder`), by resolved study folder."""
    out_dir = Path(out_dir)
    drawn = drawn or {}
    manifest = tables.read_manifest(table, out_dir)
    frame = pd.read_csv(out_dir / f"{table}.csv", dtype={"thesis": str}, keep_default_na=False,
                        na_values=[""])
    figures_dir = figures_folder(table, out_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    order = list(dict.fromkeys(f"{r.space}|{r.dataset}" for r in frame.itertuples()))  # the table's order
    for key in sorted(manifest["studies"], key=lambda k: order.index(k) if k in order else len(order)):
        dirs, (space, dataset) = manifest["studies"][key], key.split("|")
        thesis, metrics = study_inputs(frame, space, dataset)
        found = [out_dir / d for d in dirs]  # relative to the manifest's folder (an absolute one stays)
        sections += [drawn.get(d.resolve()) or study_section(d, figures_dir, thesis, metrics) for d in found
                     if (d / studydir.SUMMARY_FILE).exists()]
    header = (f"Rebuilt by `{manifest.get('command', '')}` at commit {manifest.get('git_commit', '')} on "
              f"{manifest.get('started', '')}, {manifest.get('wall_s', 0):.0f} s of wall time; "
              f"{manifest.get('repeats', 1)} seed(s) per study.{_reused(manifest)}")
    table_md = (out_dir / f"{table}.md").read_text().split("\n", 2)[-1]
    return _pages(f"{table}: thesis beside seqrep", table_md, _table_html(frame), sections, header, out_dir,
                  f"{table}-report")


def _reused(manifest: dict) -> str:
    """What the header says when some studies' trials ran at another commit (reused, finished
    studies: the wall time above is then the rebuild's, not theirs)."""
    ran = {c: n for c, n in (manifest.get("study_commits") or {}).items() if c != manifest.get("git_commit")}
    if not ran:
        return ""
    counts = ", ".join(f"{c[:7] or 'an unknown commit'} ({n} {'study' if n == 1 else 'studies'})"
                       for c, n in sorted(ran.items(), key=lambda kv: -kv[1]))
    return f" Trials of studies reused from earlier runs ran at {counts}."


def _is_number(text) -> bool:
    try:
        return math.isfinite(float(text))
    except (TypeError, ValueError):
        return False


def study_report(study_dir: Path) -> tuple[Path, Path]:
    """`<study>/report.md` and `.html`; also logged to the study's MLflow parent run."""
    study_dir = Path(study_dir)
    record = studydir.read_record(study_dir)
    if record is None or not (study_dir / studydir.SUMMARY_FILE).exists():
        raise SeqrepError(f"{study_dir} is not a finished seqrep study (no {studydir.STUDY_FILE} or "
                          f"{studydir.SUMMARY_FILE}); give a folder `seqrep search` wrote")
    figures_dir = study_dir / "figures"
    figures_dir.mkdir(exist_ok=True)
    section = study_section(study_dir, figures_dir, {})
    header = f"`{record.get('command', '')}` at commit {record.get('git_commit', '')}, {record.get('created', '')}."
    pages = _pages(f"study {record['name']}", "", "", [section], header, study_dir, "report")
    if record.get("parent_run_id"):
        try:
            for path in (*pages, *section["images"]):
                tracking.client(record["tracking_uri"]).log_artifact(record["parent_run_id"], str(path), "report")
        except Exception as err:  # noqa: BLE001 - the report is on disk either way
            print(f"seqrep: could not log the report to MLflow: {err}")
    return pages
