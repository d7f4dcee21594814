"""Figure 9: a t-SNE map of embeddings (scikit-learn), coloured by class."""

from __future__ import annotations

import numpy as np


def plot_tsne(path, e: np.ndarray, y: np.ndarray, classes, title: str, seed: int, max_points: int = 500) -> None:
    """Figure 9: a 2-d t-SNE map (scikit-learn) of at most `max_points` embeddings, coloured by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    if len(e) > max_points:
        keep = np.sort(rng.choice(len(e), max_points, replace=False))
        e, y = e[keep], y[keep]
    if len(e) < 5 or not np.isfinite(e).all():
        return
    perplexity = float(min(30.0, (len(e) - 1) / 3))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(e)
    fig, ax = plt.subplots(figsize=(5, 5))
    for k in np.unique(y):
        ax.scatter(xy[y == k, 0], xy[y == k, 1], s=6, label=str(classes[k]))
    if len(np.unique(y)) <= 20:
        ax.legend(fontsize=6, markerscale=2, loc="best")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
