"""The report's figures (matplotlib's Agg canvas, no pyplot: no global backend, safe in any process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _figure(width: float = 5.0, height: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def expected_best(curve: pd.DataFrame, thesis: float | None, study: str, path: Path) -> Path:
    """Expected test value of the validation-selected best of n trials, its band, the thesis's number."""
    fig, ax = _figure()
    ax.fill_between(curve["n"], curve["low"], curve["high"], color="C0", alpha=0.2, label="95% bootstrap band")
    ax.plot(curve["n"], curve["expected"], color="C0", marker="o", ms=3, label="expected, best of n")
    if thesis is not None:
        ax.axhline(thesis, color="C3", ls="--", label=f"thesis {thesis:.4g}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("n random trials")
    ax.set_ylabel(curve.attrs.get("metric", "test"))
    ax.set_title(f"{study}: expected best of n", fontsize="medium")
    ax.legend(fontsize="small")
    return _save(fig, path)


def importance(found: dict[str, float], metric: str, study: str, path: Path) -> Path:
    """fANOVA importance of the searched parameters, largest on top."""
    names = list(found)[::-1]
    fig, ax = _figure(height=max(2.0, 0.45 * len(names) + 1.2))
    ax.barh(names, [found[n] for n in names], color="C2")
    ax.set_xlabel(f"fANOVA importance for {metric}")
    ax.set_title(f"{study}: what mattered", fontsize="medium")
    return _save(fig, path)


def scatter(trials: pd.DataFrame, params: list[str], metric: str, study: str, path: Path) -> Path:
    """The selection metric against each of the most important parameters, one panel each."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(params), 3.2))
    FigureCanvasAgg(fig)
    for i, param in enumerate(params):
        ax = fig.add_subplot(1, len(params), i + 1)
        x = trials[f"config.{param}"]
        numeric = pd.to_numeric(x, errors="coerce")
        if numeric.notna().all():
            ax.scatter(numeric, trials[metric], s=14, color="C0")
            if numeric.min() > 0 and numeric.max() / numeric.min() > 50:
                ax.set_xscale("log")
        else:  # a categorical parameter: its values in order of first appearance
            labels = list(dict.fromkeys(x.astype(str)))
            ax.scatter([labels.index(v) for v in x.astype(str)], trials[metric], s=14, color="C0")
            ax.set_xticks(np.arange(len(labels)), labels, rotation=30, fontsize="small")
        ax.set_xlabel(param)
        if i == 0:
            ax.set_ylabel(metric)
    fig.suptitle(f"{study}: {metric} against the top parameters", fontsize="medium")
    return _save(fig, path)
