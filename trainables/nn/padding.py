"""Feed-forward nets of different depths and widths as nets of one shape, so that they stack as one cohort.

A random search over `hidden_layers` and `hidden_units` rarely draws two configs of one shape, so
same-shape cohorts (`trainables.nn.stacked`) seldom form in the small searches of Table 7. A net of
depth L_k and width U_k computes exactly what a net of depth L >= L_k and width U >= U_k computes
when the larger one holds the smaller one's parameters and zeros elsewhere, and its hidden layers
L_k .. L-1 pass their input through unchanged:

- a padded unit has zero incoming weights and bias and zero outgoing weights, so whatever its
  transfer makes of its pre-activation 0 (the sigmoid's 1/2) reaches the next layer times 0;
- the output layer of member k is the padded net's last layer: the member's last hidden layer
  feeds it through the pass-through layers (`passing`: True where a layer is beyond a member's
  depth, for the stacked nets' `torch.where`).

The padded entries must stay zero: their gradients are not (an outgoing weight of a padded sigmoid
unit sees 1/2 times the error), so the optimiser is told which entries are real (`place` returns
the masks) and leaves the others alone. The sums of the padded matrix products then differ from the
member's own only in the order a kernel adds the same nonzero terms (float rounding).

`placements` says where each of a member's parameters goes in the padded net (the first entries of
each axis of its layer; `per_layer` for a parameter with one entry per layer); `place` copies them
there and `extract` reads them back (the member's model file holds its own net's shapes).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one parameter of a member's net goes: padded parameter `target`, entries `index`."""

    target: int
    index: tuple


def layer_targets(depth: int, padded_depth: int) -> list[int]:
    """The padded layer of each of a member's depth + 1 affine layers: hidden layers keep their
    place, the output layer is the padded net's last."""
    if not 1 <= depth <= padded_depth:
        raise ValueError(f"a member of depth {depth} cannot be padded to depth {padded_depth}")
    return list(range(depth)) + [padded_depth]


def placements(shapes: Sequence[torch.Size], depth: int, padded_depth: int) -> list[Placement]:
    """The placements of a member's parameters [W_0, b_0, ..., W_depth, b_depth] (its affine
    layers in order) in a net of `padded_depth` hidden layers laid out the same way."""
    if len(shapes) != 2 * (depth + 1):
        raise ValueError(f"a net of depth {depth} has {2 * (depth + 1)} parameters to place, "
                         f"but {len(shapes)} were given")
    targets = layer_targets(depth, padded_depth)
    return [Placement(2 * targets[j // 2] + j % 2, tuple(slice(0, n) for n in shape)) for j, shape in enumerate(shapes)]


def per_layer(target: int, depth: int, padded_depth: int) -> Placement:
    """The placement of a parameter with one entry per affine layer (IVN's beta parameters), padded
    parameter `target`: its entries go to their layers' places (`layer_targets`)."""
    return Placement(target, (layer_targets(depth, padded_depth),))


@torch.no_grad()
def place(params: Sequence[Tensor], padded: Sequence[Tensor], where: Sequence[Placement]) -> list[Tensor]:
    """Overwrite `padded` with zeros and the member's `params` at their placements; the masks of
    the real entries (bool, one per padded parameter)."""
    masks = [torch.zeros(p.shape, dtype=torch.bool, device=p.device) for p in padded]
    for p in padded:
        p.zero_()
    for value, placement in zip(params, where):
        target = padded[placement.target]
        if target[placement.index].shape != value.shape:
            raise ValueError(f"a parameter of shape {tuple(value.shape)} does not fit its padded place "
                             f"{tuple(target[placement.index].shape)}")
        target[placement.index] = value.detach()
        masks[placement.target][placement.index] = True
    return masks


def extract(padded: Sequence[Tensor], where: Sequence[Placement]) -> list[Tensor]:
    """The member's own parameters read back from its padded ones (copies)."""
    return [padded[p.target][p.index].clone() for p in where]


def passing(depths: Sequence[int], padded_depth: int, device: torch.device | str | None = None) -> list[Tensor | None]:
    """Per hidden layer l of the padded net, (K, 1, 1) True for the members whose depth is at most
    l (the layer passes their input through), or None where every member has that layer."""
    return [None if all(d > layer for d in depths)
            else torch.tensor([d <= layer for d in depths], device=device).view(-1, 1, 1)
            for layer in range(padded_depth)]


def padded_units(depths: Sequence[int], widths: Sequence[int], padded_depth: int, padded_width: int,
                 device: torch.device | str | None = None) -> list[Tensor | None]:
    """Per hidden layer l of the padded net, (K, 1, padded_width) True at the units that are not
    member k's own (beyond its width, or the whole layer beyond its depth); None where there are none."""
    units = torch.arange(padded_width, device=device)
    out = []
    for layer in range(padded_depth):
        own = torch.tensor([w if layer < d else 0 for d, w in zip(depths, widths)], device=device)
        mask = (units >= own.view(-1, 1)).view(len(depths), 1, padded_width)
        out.append(mask if bool(mask.any()) else None)
    return out
