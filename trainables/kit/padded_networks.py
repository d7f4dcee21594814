"""A cohort of NN, DN, FD or IVN nets of different depths and widths, padded to one shape.

Which configs may differ in `hidden_layers` and `hidden_units` and still train as one cohort
(`cohort_group`, the grouping the engine asks the method for), and how their nets become nets of
one shape (`pad`, with `trainables.nn.padding`): each member's own net is built as its solo run
builds it (its seed, its initialisation), then copied into a net of the cohort's largest depth and
width whose other entries are zero, and the optimiser is told which entries are real. Members
still share their minibatch size: one of 10 takes five steps an epoch of the toy set where one of
50 takes one, and a padded step for both would cost the small minibatch's number of steps on the
large minibatch's rows (tried: FD 3 x 100 on minibatches of 10 with FD 1 x 10 on 50 took 158 s,
the two alone 61 s).

Padding makes every member compute the largest member's products. On one thread a step of these
small nets costs mostly its number of operations, so a padded cohort costs little more than its
largest member alone; but the arithmetic grows with the padded width times the minibatch, and past
`PADDED_WORK` (minibatch size x units^2) it eats the gain. Measured with `run_local_cohort`
against the same configs one after another (8 configs of `table7-nn-toy` / `table7-dn-toy`, one
thread, 200 epochs): up to 50 units, NN 1.47 / 1.19 / 1.12 times faster on minibatches of 10 /
25 / 50 and DN 2.3 / 1.39 (10 / 50); up to 100 units on minibatches of 10, NN 1.14 and DN 1.45;
on minibatches of 50 with up to 100 units, NN 0.88 (slower). FD (8 configs of `table7-fd-toy`,
both transfers, 1-3 layers): 1.44 up to 100 units on minibatches of 10, 1.47 up to 50 units on 50;
past the bound 1.18 (100 units on 25) and 1.01 (50 or 100 units on 50). Configs past the bound
group only with configs of their own shape. FD's and IVN's padded cohorts pay since their stacked
net's gradient is written out (`trainables.nn.stacked_fdnet`; with autograd's, whose cost grew
with every padded unit, Table 7's took 0.8-1.0 times their members' solo time). A padded unit's
pre-activation variance is lifted to 1 there, so that the rectifier's moment rule keeps off its
v = 0 branch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from trainables.nn import padding

PADDED_KEYS = ("hidden_layers", "hidden_units")  # what members of one cohort may differ in
PADDED_WORK = 125_000  # the largest batch_size x hidden_units^2 of a config that may be padded (module docstring)


def paddable(batch_size: int, hidden_units: int) -> bool:
    """Whether a net of `hidden_units` on minibatches of `batch_size` is small enough to share a
    padded cohort (module docstring)."""
    return batch_size * hidden_units ** 2 <= PADDED_WORK


def cohort_group(keys: Sequence[str], config_type: type) -> Callable[[Mapping[str, Any]], tuple]:
    """The engine's grouping for a method whose members must share `keys` and whose `Config` is
    `config_type`: configs small enough to pad group by `keys` alone, the others also by
    `PADDED_KEYS`. A key a config leaves out has the `Config`'s default."""
    defaults = {f.name: f.default for f in dataclasses.fields(config_type)}

    def group(config: Mapping[str, Any]) -> tuple:
        shared = tuple(repr(config.get(k)) for k in keys)
        value = {k: config.get(k, defaults.get(k)) for k in ("batch_size", "hidden_units")}
        if paddable(int(value["batch_size"]), int(value["hidden_units"])):
            return shared
        return shared + tuple(repr(config.get(k)) for k in PADDED_KEYS)

    return group


@dataclasses.dataclass
class Padded:
    """The members' nets padded to one shape and how to read each member's own parameters back."""

    networks: list[nn.Module]  # of the largest depth and width, each holding one member's parameters
    depths: list[int]  # each member's own number of hidden layers
    widths: list[int]  # each member's own number of units per hidden layer
    placements: list[list[padding.Placement]]
    names: list[list[str]]  # each member's own parameter names (its model file's keys)
    real: torch.Tensor  # bool, laid out as a stack's flat storage: True at the members' own entries

    def state_dict(self, k: int, params: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Member k's state dict (its own net's names and shapes) from its padded parameters."""
        return dict(zip(self.names[k], padding.extract(params, self.placements[k])))


def pad(configs: Sequence[Any], networks: Sequence[nn.Module],
        build: Callable[[Any, int, int], nn.Module], n_inputs: int, n_outputs: int,
        per_layer: Sequence[str] = ()) -> Padded | None:
    """The members' `networks` (built by `build` from `configs`) padded to the largest depth and
    width among them; None where they already share both. Their parameters other than those named
    in `per_layer` (each with one entry per affine layer: IVN's `rho`) must be, in
    `named_parameters()` order, [W_0, b_0, ..., W_L, b_L] (an MLP's)."""
    depths = [int(c.hidden_layers) for c in configs]
    widths = [int(c.hidden_units) for c in configs]
    if len(set(depths)) == 1 and len(set(widths)) == 1:
        return None
    depth, width = max(depths), max(widths)
    padded, placements, masks = [], [], []
    for config, network in zip(configs, networks):
        large = build(dataclasses.replace(config, hidden_layers=depth, hidden_units=width), n_inputs, n_outputs)
        placements.append(_placements(network, large, config.hidden_layers, depth, per_layer))
        masks.append(padding.place(list(network.parameters()), list(large.parameters()), placements[-1]))
        padded.append(large)
    real = torch.cat([torch.stack(per_member).reshape(-1) for per_member in zip(*masks)])
    names = [[name for name, _ in network.named_parameters()] for network in networks]
    return Padded(padded, depths, widths, placements, names, real)


def _placements(network: nn.Module, large: nn.Module, depth: int, padded_depth: int,
                per_layer: Sequence[str]) -> list[padding.Placement]:
    """Where each of `network`'s parameters (in `named_parameters()` order) goes in `large`'s."""
    own = dict(network.named_parameters())
    targets = [name for name, _ in large.named_parameters()]
    affine = [name for name in own if name not in per_layer]
    large_affine = [name for name in targets if name not in per_layer]
    where = dict(zip(affine, padding.placements([own[name].shape for name in affine], depth, padded_depth)))
    return [padding.per_layer(targets.index(name), depth, padded_depth) if name in per_layer
            else dataclasses.replace(where[name], target=targets.index(large_affine[where[name].target]))
            for name in own]
