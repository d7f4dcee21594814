"""The inputs of the thesis's Figures 11 and 12 for a sequence-reduction trial, kept beside Figure 9's.

Section 3.5.3 inspects the embeddings two more ways than the t-SNE map (Figure 9):

- Figure 11, the **sequential Jacobian** (Graves et al., 2008): the sensitivity of embedding
  features e_i to the inputs x_t of one sample, here |de_i/dx_t| (the Euclidean norm over the
  input dimensions of the normalised input the network reads) at every step t, for the
  `FEATURES` features whose values vary most over the test set (the thesis shows four features
  and does not say which);
- Figure 12, **nearest neighbours**: `PICKS` randomly picked test samples, each with its
  `NEIGHBOURS` nearest test samples by the Euclidean distance of their embeddings, drawn by the
  first dimension of their raw (not normalised) input.

A trial computes them once, at its best state (a few backward passes through one sequence), and
keeps the arrays in its `embeddings.npz` (`trainables.kit.tsne.save_embeddings`); `seqrep report`
draws them for each study's selected trial only (`seqrep.figures`). The picks come from the
trial's seed, so the solo run and its cohort member keep the same samples.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from trainables.nn.sequences import pad

FEATURES = 4  # Figure 11: the features shown
PICKS = 2  # Figure 12: the randomly picked samples
NEIGHBOURS = 5  # Figure 12: each pick's nearest neighbours


def one_sequence_embedding(embed: Callable, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """`x (T, D) -> e (E,)` through a `Problem.embed(x, mask, training, generator)`, deterministic."""

    def embed_one(x: torch.Tensor) -> torch.Tensor:
        batch, mask = pad([x])
        return embed(batch.to(device), mask.to(device), False, None)[0]

    return embed_one


def nearest_neighbours(e: np.ndarray, picks: np.ndarray, k: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """Each pick's row followed by its k nearest other rows of `e` among the finite ones (Euclidean,
    ties by index), and their distances: (len(picks), 1 + k) each."""
    finite = np.flatnonzero(np.isfinite(e).all(1))
    index, distance = [], []
    for p in picks:
        d = np.linalg.norm(e[finite] - e[p], axis=1)
        order = np.argsort(d, kind="stable")
        order = order[finite[order] != p][:k]
        index.append(np.concatenate([[p], finite[order]]))
        distance.append(np.concatenate([[0.0], d[order]]))
    return np.asarray(index, dtype=np.int64), np.asarray(distance, dtype=np.float32)


def sequential_jacobian(embed_one: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                        features: Sequence[int]) -> np.ndarray:
    """|d e_i / d x_t| (norm over the input dimensions) for each feature i: (len(features), T)."""
    x = x.detach().clone().float().requires_grad_(True)
    with torch.enable_grad():
        e = embed_one(x)
        rows = []
        for i in features:
            grad, = torch.autograd.grad(e[int(i)], x, retain_graph=True, allow_unused=True)
            rows.append(torch.zeros(len(x)) if grad is None else grad.detach().cpu().norm(dim=1))
    return torch.stack(rows).numpy().astype(np.float32)


def figure_inputs(embed_one: Callable[[torch.Tensor], torch.Tensor], e_test: np.ndarray,
                  test_seqs: Sequence[torch.Tensor], raw: Sequence[np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """The arrays Figures 11 and 12 are drawn from (module docstring); empty when fewer than
    1 + NEIGHBOURS test embeddings are finite. `e_test`: the test embeddings (N, E); `test_seqs`:
    the normalised test sequences the network reads; `raw`: the same sequences as the data set
    holds them (T, D)."""
    e_test = np.asarray(e_test, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(e_test).all(1))
    if len(finite) < 1 + NEIGHBOURS:
        return {}
    picks = np.random.default_rng(seed).choice(finite, size=min(PICKS, len(finite)), replace=False)
    index, distance = nearest_neighbours(e_test, picks)
    series = np.full(index.shape + (max(len(raw[i]) for i in index.ravel()),), np.nan, dtype=np.float32)
    for (a, b), i in np.ndenumerate(index):
        series[a, b, :len(raw[i])] = np.asarray(raw[i])[:, 0]
    features = np.argsort(-e_test[finite].var(0), kind="stable")[:FEATURES]
    sample = int(picks[0])
    return {"nn_index": index, "nn_distance": distance, "nn_series": series,
            "jac_sample": np.asarray(raw[sample], dtype=np.float32), "jac_index": np.asarray(sample),
            "jac_features": features.astype(np.int64),
            "jac": sequential_jacobian(embed_one, test_seqs[sample], features)}
