"""The plot of a 1-d predictive distribution (the thesis's Figure 6), for the regression methods.

Generated data sets say what they know about themselves: a `RegressionData` with `x_range`,
`true_mean` and `true_variance` set (the toy set) gets its input range and the true mean and
+-2 true standard deviations drawn beside the model's; any other set is plotted over the range of
its inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from seqrep.method import RegressionData


def plot_predictive(
    path: Path,
    data: RegressionData,
    predict: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    title: str,
    device: torch.device | str,
) -> None:
    """Plot a 1-d predictive distribution like the thesis's Figure 6: the test points, the
    predictive mean with a band of +-2 predictive standard deviations, and where the data know
    them (the toy set) the true mean with +-2 true standard deviations. `predict(x)` returns mean
    and variance, (m, 1)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: no import-time cost
    from matplotlib.figure import Figure

    x_range = getattr(data, "x_range", None)
    if x_range is not None:
        lo, hi = x_range
    else:
        xs = np.concatenate([data.split(s)[0][:, 0] for s in ("train", "valid", "test")])
        lo, hi = float(xs.min()), float(xs.max())
    grid = np.linspace(lo, hi, 400, dtype=np.float32)
    with torch.no_grad():
        m, v = predict(torch.as_tensor(grid[:, None], device=device))
    m, s = m[:, 0].cpu().numpy(), np.sqrt(v[:, 0].cpu().numpy())

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)  # Agg without pyplot: no global backend switch inside a worker
    ax = fig.add_subplot()
    true_mean, true_variance = getattr(data, "true_mean", None), getattr(data, "true_variance", None)
    if true_mean is not None and true_variance is not None:
        mu, sd = true_mean(grid), np.sqrt(true_variance(grid))
        ax.plot(grid, mu, color="k", lw=1, label="true mean")
        ax.fill_between(grid, mu - 2 * sd, mu + 2 * sd, color="k", alpha=0.1, label="true $\\pm 2\\sigma$")
    ax.plot(grid, m, color="C0", label="predictive mean")
    ax.fill_between(grid, m - 2 * s, m + 2 * s, color="C0", alpha=0.25, label="predictive $\\pm 2\\sigma$")
    x_test, y_test = data.split("test")
    ax.scatter(x_test[:, 0], y_test[:, 0], s=10, color="C3", zorder=3, label="test points")
    ax.set_xlabel("x")
    ax.set_ylabel("z")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(Path(path), dpi=100)
