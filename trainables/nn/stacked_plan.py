"""How K members' minibatches share one packed (K, T, B, ...) layout (`Plan`), the per-member
columns (`column`) and the packed buffers kept between minibatches (`Workspace`), for
`trainables.nn.stacked_recurrent` and its loops (`trainables.nn.stacked_loops`, `fused_tanh`)."""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import Tensor

from trainables.nn.sequences import to_device


def column(values: list[float], like: Tensor) -> Tensor:
    """Per-member scalars as a (K, 1, 1) column (Python floats rounded once, as a scalar operand is).
    Made once per values, dtype and device (`_column`: a GPU's training step asks for a dozen, each
    a copy to the device): shared, so never written to."""
    return _column(tuple(values), like.dtype, like.device)


@functools.lru_cache(maxsize=256)
def _column(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    return to_device(torch.tensor(values, dtype=dtype), device).reshape(-1, 1, 1)


class Workspace:
    """The packed buffers, kept between minibatches (fresh pages cost 16 members of 200 units a tenth
    of a step). `busy` from a forward until its backward is done; a busy one means fresh buffers."""

    def __init__(self):
        self._store: dict[str, Tensor] = {}
        self.busy = False

    def take(self, name: str, like: Tensor) -> Tensor:
        """An uninitialised tensor of `like`'s shape, dtype and device, in buffer `name`."""
        size, buffer = like.numel(), self._store.get(name)
        if buffer is None or buffer.numel() < size or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = self._store[name] = torch.empty(size + size // 4, dtype=like.dtype, device=like.device)
        return buffer[:size].view(like.shape)


@dataclasses.dataclass
class Plan:
    """How K members' minibatches (lengths T_k, sizes B_k) share the packed (K, T, B, H) layout."""

    lengths: list[int]
    sizes: list[int]
    order: list[int]  # member at each packed position: by decreasing length (`sort`), else k at k
    counts: list[int]  # members still running at step t (by length: a prefix of the packed positions)
    keeps: list[float]  # keep_hidden per member, in member order
    keep: Tensor  # (K, 1, 1) keep_hidden, in packed order
    keep_var: Tensor  # keep (1 - keep), for the variance of the dropped h_{t-1}
    keep_var2: Tensor  # 2 keep (1 - keep), its gradient
    index: Tensor  # `order` on the device, for gathering members' parameters and scattering their losses
    fd: bool
    space: Workspace | None = None

    @classmethod
    def build(cls, lengths: list[int], sizes: list[int], keeps: list[float], fd: bool, like: Tensor,
              space: Workspace | None = None, sort: bool = True) -> "Plan":
        """`sort`: members by decreasing length, as the eager loops need (the members running at a
        step are a prefix); the fused loops run every member every step, in member order."""
        order = sorted(range(len(lengths)), key=lambda k: -lengths[k]) if sort else list(range(len(lengths)))
        descending = sorted(lengths, reverse=True)
        counts, running = [], len(order)  # members still running at step t: those longer than t
        for t in range(descending[0]):
            while descending[running - 1] <= t:
                running -= 1
            counts.append(running)
        packed = [keeps[k] for k in order]
        return cls(lengths, sizes, order, counts, keeps, column(packed, like),
                   column([k * (1.0 - k) for k in packed], like), column([2.0 * k * (1.0 - k) for k in packed], like),
                   _index(tuple(order), like.device), fd, space)

    @property
    def by_length(self) -> bool:
        """Whether the members are packed by decreasing length (as the eager loops need)."""
        return all(self.lengths[a] >= self.lengths[b] for a, b in zip(self.order, self.order[1:]))

    @property
    def identity(self) -> bool:
        """Whether packed position k holds member k (nothing to gather or scatter)."""
        return self.order == list(range(len(self.order)))

    @property
    def packed_lengths(self) -> list[int]:
        """The steps of the member at each packed position."""
        return [self.lengths[k] for k in self.order]

    def pack(self, values: list[Tensor], pin: bool = False) -> Tensor:
        """Member k's (T_k, B_k, ...) tensor at its position of one (K, T, B, ...), zero elsewhere
        (`pin`: in page-locked host memory, for `sequences.to_device`)."""
        shape = (len(values), max(self.lengths), max(self.sizes), *values[0].shape[2:])
        out = torch.zeros(shape, dtype=values[0].dtype, pin_memory=pin) if pin else values[0].new_zeros(shape)
        for pos, k in enumerate(self.order):
            out[pos, : self.lengths[k], : self.sizes[k]] = values[k]
        return out


@functools.lru_cache(maxsize=256)
def _index(order: tuple[int, ...], device: torch.device) -> Tensor:
    """`Plan.index`: made once per order and device (shared, never written to)."""
    return to_device(torch.tensor(order), device)
