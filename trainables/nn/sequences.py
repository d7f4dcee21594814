"""Minibatches of variable-length sequences: time-major padding with a mask, and masked averages.

A batch of B sequences of lengths T_1 … T_B is one tensor x (T_max, B, D), zero past each
sequence's end, and a mask (T_max, B) that is 1 on real steps and 0 on padding. Losses and
metrics go through `masked_sum`, `masked_mean` and `frame_count`, so padding never counts. A
per-time-step score over a whole split (e.g. the negative log-likelihood per time step reported on
the polyphonic music sets) is the sum of `masked_sum` over its batches divided by the sum of
`frame_count`, not the average of per-batch means, which would weight short batches too much.
`shift` turns targets into the inputs of a next-step model (x_0 = 0, x_1, ..., x_T-1).
"""

from __future__ import annotations

import math
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch


class Batch(NamedTuple):
    x: torch.Tensor  # (T_max, B, D) float32, zero on padding
    mask: torch.Tensor  # (T_max, B) float32, 1 on real steps
    index: torch.Tensor  # (B,) int64, each column's position in the list given to `batches`


def to_device(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`x` (on the CPU) on `device`. To a GPU it goes from page-locked memory without waiting: a copy
    from pageable memory waits until the GPU has done all it was given, so that the host could not
    prepare the next minibatch while the GPU trains on this one."""
    if torch.device(device).type != "cuda":
        return x.to(device)
    return (x if x.is_pinned() else x.pin_memory()).to(device, non_blocking=True)


def pad(sequences: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack sequences (T_i, D) time-major into x (T_max, B, D) and their mask (T_max, B)."""
    if len(sequences) == 0:
        raise ValueError("pad needs at least one sequence, got none")
    tensors = [torch.as_tensor(s, dtype=torch.float32) for s in sequences]
    for b, t in enumerate(tensors):
        if t.dim() != 2:
            raise ValueError(f"every sequence must be a (T, D) array, but sequence {b} has shape {tuple(t.shape)}")
        if t.shape[1] != tensors[0].shape[1]:
            raise ValueError(f"all sequences must have the same D, but sequence 0 has {tensors[0].shape[1]} "
                             f"and sequence {b} has {t.shape[1]}")
    lengths = torch.tensor([t.shape[0] for t in tensors])
    x = torch.nn.utils.rnn.pad_sequence(tensors)  # (T_max, B, D), zeros past each sequence's end
    mask = (torch.arange(x.shape[0])[:, None] < lengths[None, :]).float()  # (T_max, 1) vs (1, B) -> (T_max, B)
    return x, mask


def batches(sequences: Sequence[np.ndarray | torch.Tensor], batch_size: int, generator: torch.Generator,
            pool: int = 1) -> Iterator[Batch]:
    """One epoch of padded minibatches, in an order drawn from `generator` when this is called.

    Each call draws a new permutation, so calling again with the same generator gives the next
    epoch, and generators seeded alike give identical epochs. Every sequence is in exactly one
    batch; the last batch is smaller when batch_size does not divide the number of sequences.

    pool > 1 buckets by length: the shuffled order is cut into pools of pool * batch_size
    sequences, each pool is sorted by length (ties keep the shuffled order) and cut into batches,
    and the epoch's batches are then put in random order. A batch holds sequences of similar
    length, so less of it is padding, while which sequences meet in a batch still varies from
    epoch to epoch. pool = 1 is a plain shuffle.
    """
    if batch_size < 1 or pool < 1:
        raise ValueError(f"batch_size >= 1 and pool >= 1 must hold, but got batch_size={batch_size}, pool={pool}")
    n = len(sequences)
    if n == 0:
        raise ValueError("batches needs at least one sequence, got none")
    order = torch.randperm(n, generator=generator).tolist()
    if pool > 1:
        lengths = [len(s) for s in sequences]
        size = pool * batch_size
        order = [i for start in range(0, n, size) for i in sorted(order[start:start + size], key=lengths.__getitem__)]
    groups = [order[start:start + batch_size] for start in range(0, n, batch_size)]
    if pool > 1:
        groups = [groups[k] for k in torch.randperm(len(groups), generator=generator).tolist()]
    return (Batch(*pad([sequences[i] for i in group]), torch.tensor(group)) for group in groups)


def shift(x: torch.Tensor) -> torch.Tensor:
    """Network inputs for targets x (T, B, D): x_0 = 0, x_1, ..., x_T-1 (time-major)."""
    return torch.cat([torch.zeros_like(x[:1]), x[:-1]], dim=0)


def _frame_mask(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if tuple(values.shape[: mask.dim()]) != tuple(mask.shape):
        raise ValueError(f"values must have the mask's shape {tuple(mask.shape)} as leading dimensions, "
                         f"got {tuple(values.shape)}")
    return mask.reshape(mask.shape + (1,) * (values.dim() - mask.dim())).bool()


def frame_count(mask: torch.Tensor) -> int:
    """The number of real (unpadded) time steps in the batch."""
    return int(torch.count_nonzero(mask))


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of `values` (T, B, ...) over the real steps; padding counts as 0 even if it holds inf or nan."""
    return torch.where(_frame_mask(values, mask), values, torch.zeros((), dtype=values.dtype)).sum()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` (T, B, ...) over the real steps (and over any trailing dimensions)."""
    n = frame_count(mask)
    if n == 0:
        raise ValueError("masked_mean of a batch without real time steps is undefined")
    per_frame = math.prod(values.shape[mask.dim():])
    return masked_sum(values, mask) / (n * per_frame)
