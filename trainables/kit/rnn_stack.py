"""The two ways `trainables.kit.rnn_cohort` trains the members of an `rnn` cohort, one epoch at a time.

- `Stacked` (tanh cells: sRNN and FD-RNN): one `trainables.nn.stacked_recurrent.StackedFDRNN` and
  one `trainables.nn.stacked_climin.StackedClimin` for all members. Each member is initialised as
  its solo run's `build_model` draws it (seed, ν, ρ; the K initialisations in parallel threads,
  `initialise.in_threads`: their eigenvalue problems were half a GPU cohort's first epoch), draws
  its minibatches from its own generator, takes one optimiser step per minibatch with its own
  hyperparameters (on a GPU the minibatches packed into one, `packed_training`), and is evaluated
  at climin's resting point; `model(k)` / `optimizer(k)` show member k's part in its solo run's
  state-dict layout, so that `trainables.kit.training.Progress` checkpoints and restores it as a
  solo run's.
- `Lockstep` (LSTM cells, which have no stacked recurrence): the members' solo nets and optimisers,
  trained one after another within each epoch; the same numbers as K solo runs, no speed-up.

Both offer `ids` (the members still training), `train_epoch()`, `validate()`, `test(states, ids)`,
`model(k)`, `optimizer(k)`, `generator(k)` and `drop(ids)`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from trainables.kit.rnn_model import (POOL, build_model, evaluate_nll, frame_nll, initialise_model, new_model,
                                      order_generator, train_epoch)
from trainables.kit.sequence_models import climin_optimizer, optimizer_defaults
from trainables.kit.training import clone_state
from trainables.nn.initialise import in_threads
from trainables.nn.sequences import batches, pad, shift, to_device
from trainables.nn.stacked_climin import StackedClimin
from trainables.nn.stacked_recurrent import Rates, StackedFDRNN

Splits = dict[str, list[torch.Tensor]]
Metrics = dict[str, float]


@torch.no_grad()
def evaluate_stacked(model: StackedFDRNN, params: list[torch.Tensor] | None, sequences, device: torch.device,
                     batch_size: int = 32) -> list[Metrics]:
    """`trainables.kit.rnn_model.evaluate_nll` for every member of `model` (at `params`) at once."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    totals, frames, per_sequence = [0.0] * model.size, 0, [[] for _ in range(model.size)]
    for start in range(0, len(order), batch_size):
        x, mask = pad([sequences[i] for i in order[start:start + batch_size]])
        x, mask = to_device(x, device), to_device(mask, device)
        mean, var = model.hidden_shared(shift(x), params)  # (K, T, B, H)
        nll = mean.new_empty(mean.shape[:3])  # (K, T, B), from a few steps' logits at a time
        for t0, t1, logits in model.logit_chunks(mean, var, params):
            nll[:, t0:t1] = frame_nll(logits, x[t0:t1].expand_as(logits), mask[t0:t1])
        seq_total, seq_frames = nll.sum(1), mask.sum(0)
        for k, (total, ratios) in enumerate(zip(seq_total.sum(1).tolist(), (seq_total / seq_frames).tolist())):
            totals[k] += total
            per_sequence[k] += ratios
        frames += int(seq_frames.sum())
    return [{"nll": total / frames, "nll_seq": sum(ratios) / len(ratios)}
            for total, ratios in zip(totals, per_sequence)]


def rates(config: Any) -> Rates:
    return Rates(1.0 - config.p_drop_input, 1.0 - config.p_drop_hidden, 1.0 - config.p_drop_output,
                 config.fd_final_layer)


class _MemberModel:
    """Member k of a `Stacked` cohort as `Progress` sees a model: `state_dict` / `load_state_dict`."""

    def __init__(self, stack: "Stacked", k: int):
        self.stack, self.k = stack, k

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.stack.net.member_state(self.stack.ids.index(self.k))

    def load_state_dict(self, state) -> None:
        self.stack.net.load_member(self.stack.ids.index(self.k), state)


class _MemberOptimizer:
    """Member k's optimiser state in the layout of its solo climin optimiser's `state_dict`."""

    def __init__(self, stack: "Stacked", k: int):
        self.stack, self.k = stack, k

    def state_dict(self) -> dict[str, Any]:
        return self.stack.climin.member_state_dict(self.stack.ids.index(self.k), self.stack.defaults[self.k])

    def load_state_dict(self, state) -> None:
        self.stack.climin.load_member_state_dict(self.stack.ids.index(self.k), state)


def packed_training(device: torch.device) -> bool:
    """Whether `Stacked` trains on packed minibatches: on a GPU, bound by kernel launches, the layers
    run once for all members; on a CPU, bound by arithmetic, each on its member's own rows."""
    return device.type == "cuda"


class Stacked:
    """Tanh members trained as one stacked model (module docstring)."""

    def __init__(self, configs: list, seeds: list[int], splits: Splits, n_features: int, device: torch.device):
        self.splits, self.device, self.batch_size = splits, device, configs[0].batch_size
        self.ids = list(range(len(configs)))
        self.rates = [rates(c) for c in configs]
        models = [new_model(c, n_features, seed) for c, seed in zip(configs, seeds)]
        states = [m.state_dict() for m in in_threads(initialise_model, models, configs, seeds)]  # as build_model
        self.net = StackedFDRNN(states, self.rates, device)
        self.climin = StackedClimin(self.net.params, configs[0].optimizer, [c.step_rate for c in configs],
                                        [c.decay for c in configs], [c.momentum for c in configs],
                                        [1e-8 if c.optimizer == "rmsprop" else c.offset for c in configs],
                                        [c.grad_norm for c in configs])
        self.defaults = [optimizer_defaults(c) for c in configs]
        self.generators = [order_generator(seed) for seed in seeds]

    def train_epoch(self) -> list[float]:
        """One pass over the training split, each member in its own minibatch order; mean NLL per frame."""
        epochs = [list(batches(self.splits["train"], self.batch_size, self.generators[k], pool=POOL)) for k in self.ids]
        total, frames = torch.zeros(len(self.ids), device=self.device), [0] * len(self.ids)
        packed = packed_training(self.device)
        for step in zip(*epochs):
            counts = [int(b.mask.sum()) for b in step]
            for p in self.net.params:
                p.grad = None
            total += self._packed_step(step) if packed else self._member_step(step, counts)
            self.climin.step()
            frames = [f + n for f, n in zip(frames, counts)]
        return [value / f for value, f in zip(total.tolist(), frames)]

    def _member_step(self, step: tuple, counts: list[int]) -> torch.Tensor:
        """Forward and backward of one minibatch per member, each member's layers on its own rows
        (`StackedFDRNN.forward_members`); each member's summed NLL (K,)."""
        xs = [to_device(b.x, self.device) for b in step]
        logits = self.net.forward_members([shift(x) for x in xs])
        nlls = [frame_nll(z, x, to_device(b.mask, self.device)).sum() for z, x, b in zip(logits, xs, step)]
        sum(nll / n for nll, n in zip(nlls, counts)).backward()  # each member: the gradient of its own loss
        return torch.stack([nll.detach() for nll in nlls])

    def _packed_step(self, step: tuple) -> torch.Tensor:
        """`_member_step` on packed minibatches (`StackedFDRNN.forward_packed`): packed on the host,
        moved at once; the inputs are the targets shifted by one step on the device."""
        plan = self.net.plan([b.x.shape[0] for b in step], [b.x.shape[1] for b in step], self.net.params[0])
        pin = self.device.type == "cuda"
        x, mask = (to_device(plan.pack(values, pin), self.device) for values in ([b.x for b in step],
                                                                                 [b.mask for b in step]))
        inputs = torch.zeros_like(x)
        inputs[:, 1:] = x[:, :-1]
        nlls = frame_nll(self.net.forward_packed(inputs, plan), x, mask).sum((1, 2))  # (K,), packed order
        frames = mask.sum((1, 2))  # each member's frame count, in packed order (whole numbers: exact)
        (nlls / frames).sum().backward()  # each member: the gradient of its own loss, nll / frames
        nlls = nlls.detach()
        return nlls if plan.identity else torch.empty_like(nlls).index_copy_(0, plan.index, nlls)

    def validate(self) -> tuple[list[Metrics], Callable[[int], dict]]:
        """Validation metrics per member at climin's resting point, and member `pos`'s state there."""
        point = self.climin.evaluation_point()
        metrics = evaluate_stacked(self.net, point, self.splits["valid"], self.device)
        return metrics, lambda pos: self.net.member_state(pos, point)

    def test(self, states: list[dict], ids: list[int]) -> list[Metrics]:
        """Test metrics of members `ids` at the given states (their solo state dicts)."""
        net = StackedFDRNN(states, [self.rates[k] for k in ids], self.device)
        net.eval_space = self.net.eval_space  # the validation's buffers, already in memory
        return evaluate_stacked(net, None, self.splits["test"], self.device)

    def model(self, k: int) -> _MemberModel:
        return _MemberModel(self, k)

    def optimizer(self, k: int) -> _MemberOptimizer:
        return _MemberOptimizer(self, k)

    def generator(self, k: int) -> torch.Generator:
        return self.generators[k]

    def drop(self, ids: list[int]) -> None:
        """Members `ids` leave the stack (diverged: their parameters stay as they were)."""
        if not ids:
            return
        keep = [pos for pos, k in enumerate(self.ids) if k not in ids]
        self.ids = [self.ids[pos] for pos in keep]
        if keep:
            self.net.select(keep)
            self.climin.select(keep, self.net.params)


class Lockstep:
    """LSTM members: their solo nets, trained one after another within each epoch (module docstring)."""

    def __init__(self, configs: list, seeds: list[int], splits: Splits, n_features: int, device: torch.device):
        self.configs, self.splits, self.device = configs, splits, device
        self.ids = list(range(len(configs)))
        self.nets = [build_model(c, n_features, seed).to(device) for c, seed in zip(configs, seeds)]
        self.optimizers = [climin_optimizer(c, net.parameters()) for c, net in zip(configs, self.nets)]
        self.generators = [order_generator(seed) for seed in seeds]

    def train_epoch(self) -> list[float]:
        losses = []
        for k in self.ids:
            self.nets[k].train()
            losses.append(train_epoch(self.nets[k], self.optimizers[k], self.splits["train"], self.configs[k],
                                      self.generators[k], self.device))
        return losses

    def validate(self) -> tuple[list[Metrics], Callable[[int], dict]]:
        metrics, states = [], []
        for k in self.ids:
            self.nets[k].eval()
            with torch.no_grad(), self.optimizers[k].climin_point():
                metrics.append(evaluate_nll(self.nets[k], self.splits["valid"], self.device))
                states.append(clone_state(self.nets[k]))
        return metrics, states.__getitem__

    def test(self, states: list[dict], ids: list[int]) -> list[Metrics]:
        metrics = []
        for state, k in zip(states, ids):
            self.nets[k].load_state_dict(state)
            self.nets[k].eval()
            metrics.append(evaluate_nll(self.nets[k], self.splits["test"], self.device))
        return metrics

    def model(self, k: int) -> torch.nn.Module:
        return self.nets[k]

    def optimizer(self, k: int):
        return self.optimizers[k]

    def generator(self, k: int) -> torch.Generator:
        return self.generators[k]

    def drop(self, ids: list[int]) -> None:
        self.ids = [k for k in self.ids if k not in ids]
