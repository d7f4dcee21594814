"""The report's figures (matplotlib's Agg canvas, no pyplot: no global backend, safe in any process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _grid(rows: int, cols: int, width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False, sharex="col")


def _figure(width: float = 5.0, height: float = 3.6):
    fig, axes = _grid(1, 1, width, height)
    return fig, axes[0, 0]


def _save(fig, path: Path, tight: bool = True) -> Path:
    if tight:  # (a grid of many panels sets its margins itself: tight_layout took 0.3 s for twelve)
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


def per_value(trials: pd.DataFrame, column: str, metrics: list[str], study: str, path: Path) -> Path:
    """Each trial's test metrics against its grid value (Table 8: one bar per split), with their
    mean as a line; one panel per metric."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = trials.assign(_value=pd.to_numeric(trials[column], errors="coerce")).sort_values("_value")
    fig = Figure(figsize=(3.6 * len(metrics), 3.2))
    FigureCanvasAgg(fig)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        values = pd.to_numeric(rows[metric], errors="coerce")
        ax.bar(rows[column].astype(str), values, color="C0")
        ax.axhline(values.mean(), color="C3", ls="--", label=f"mean {values.mean():.4g} ± {values.std(ddof=1):.2g}")
        ax.set_xlabel(column.removeprefix("config."))
        ax.set_ylabel(metric)
        ax.legend(fontsize="small")
    fig.suptitle(f"{study}: test metrics per {column.removeprefix('config.')}", fontsize="medium")
    return _save(fig, path)


def tsne(embeddings: Path, study: str, trial: str, path: Path, max_points: int = 500) -> Path | None:
    """Figure 9: a 2-d t-SNE map (scikit-learn) of a trial's test embeddings (`embeddings.npz`, as
    the sequence-reduction methods keep them), at most `max_points` of them, coloured by class.
    None where there are fewer than five points or any is not finite."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    kept = np.load(embeddings)
    e, y, classes, seed = kept["e"], kept["y"], kept["classes"], int(kept["seed"])
    if len(e) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(e), max_points, replace=False))
        e, y = e[keep], y[keep]
    if len(e) < 5 or not np.isfinite(e).all():
        return None
    perplexity = float(min(30.0, (len(e) - 1) / 3))
    # 500 iterations (scikit-learn's default is 1,000): a map of a few hundred points has settled
    # by then, and the report draws one per study while other studies train; on one thread (the
    # same map on every machine, and 500 points took 0.8 s of CPU alone against 1.3 s on two
    # threads, whose OpenMP workers competed with the trials for the cores)
    with threadpool_limits(1):
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", max_iter=500, random_state=seed).fit_transform(e)
    fig, ax = _figure(5.0, 5.0)
    for k in np.unique(y):
        ax.scatter(xy[y == k, 0], xy[y == k, 1], s=6, label=str(classes[k]))
    if len(np.unique(y)) <= 20:
        ax.legend(fontsize=6, markerscale=2, loc="best")
    ax.set_title(f"{study}: selected trial {trial},\n{kept['title']}", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, path)


def neighbours(embeddings: Path, study: str, trial: str, path: Path) -> Path | None:
    """Figure 12: randomly picked test samples (top row of each column) and their nearest test
    samples by the distance of the trial's embeddings, drawn by the first input dimension
    (`trainables.kit.reduction_figures`). None where the trial kept no such arrays."""
    kept = np.load(embeddings)
    if "nn_index" not in kept.files:
        return None
    index, distance, series = kept["nn_index"], kept["nn_distance"], kept["nn_series"]
    y, classes = kept["y"], kept["classes"]
    fig, axes = _grid(index.shape[1], index.shape[0], 4.0 * index.shape[0], 1.0 * index.shape[1] + 0.8)
    for (row, col), ax in np.ndenumerate(axes):
        i = index[col, row]
        ax.plot(series[col, row], color="black" if row == 0 else "tab:blue", linewidth=1)
        what = "sample" if row == 0 else f"neighbour {row}, distance {distance[col, row]:.3g}"
        ax.set_title(f"test #{i} ({what}), class {classes[y[i]]}", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{study}: selected trial {trial}, nearest neighbours in embedding space (first input "
                 f"dimension; cf. thesis Figure 12)", fontsize=8)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.05, top=1 - 0.6 / fig.get_figheight(), hspace=0.7,
                        wspace=0.12)
    return _save(fig, path, tight=False)


def sequential_jacobian(embeddings: Path, study: str, trial: str, path: Path) -> Path | None:
    """Figure 11: a test sample and the sequential Jacobians |d e_i / d x_t| of the trial's most
    varying embedding features on it (`trainables.kit.reduction_figures`). None where the trial
    kept no such arrays."""
    kept = np.load(embeddings)
    if "jac" not in kept.files:
        return None
    jac, sample, features = kept["jac"], kept["jac_sample"], kept["jac_features"]
    y, classes = kept["y"], kept["classes"]
    i = int(kept["jac_index"])
    fig, axes = _grid(1 + len(jac), 1, 6.0, 1.1 * (1 + len(jac)) + 0.8)
    top = axes[0, 0]
    if sample.shape[1] <= 4:
        for d in range(sample.shape[1]):
            top.plot(sample[:, d], linewidth=1, label=f"input {d}")
        if sample.shape[1] > 1:
            top.legend(fontsize=6, loc="upper right")
    else:
        top.imshow(sample.T, aspect="auto", origin="lower", interpolation="nearest", cmap="viridis")
    top.set_title(f"test #{i}, class {classes[y[i]]}", fontsize=7)
    for ax, row, f in zip(axes[1:, 0], jac, features):
        ax.fill_between(np.arange(len(row)), row, color="tab:red", alpha=0.6, linewidth=0)
        ax.set_ylabel(f"|de{f}/dx|", fontsize=7)
    for ax in axes[:, 0]:
        ax.tick_params(labelsize=6)
    axes[-1, 0].set_xlabel("t", fontsize=7)
    fig.suptitle(f"{study}: selected trial {trial}, sequential Jacobians (cf. thesis Figure 11)", fontsize=8)
    fig.subplots_adjust(left=0.12, right=0.98, bottom=0.45 / fig.get_figheight(), top=1 - 0.65 / fig.get_figheight(),
                        hspace=0.35)
    return _save(fig, path, tight=False)
