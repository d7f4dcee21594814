"""The cohort trainer of the feed-forward regression methods NN, DN/MDN, FD and IVN (Table 7).

`train_regression_cohort(configs, sessions, ...)` trains K trials whose networks share every
tensor shape (or are padded to one, `trainables.kit.padded_networks`, the model file
still the member's own net) as one stacked network and gives each member's session what
`trainables.kit.regression_fit.fit_regression` gives a solo trial's: per epoch the report
(`train_loss` and the `valid_*` metrics) with a checkpoint, then one `finish` with the final
metrics (best epoch, best `valid_*`, `test_*` at the best state), the model `{"model": state dict
of the solo network, "config": ...}` and the Figure-6 plot in the member's `artifact_dir` (toy
set). Each member keeps what makes its solo run its own:

- initialisation: `torch.manual_seed(seed)`, then the method's own network built as its `train`
  builds it (`build`), whose parameters become the member's slice of the stacked one;
- transfer function, rmsprop's α, γ, β and gradient clipping (`max_grad_norms`) per member;
- minibatch order: its own `seeded_generator(seed)`, one permutation per epoch;
- selection, divergence and the final metrics (`trainables.kit.cohort.Member`): a member whose
  training loss or selection metric turns non-finite is reported and finished `diverged` at once
  (test metrics at its best state, as a solo run) and frozen, while the others go on.

A member's checkpoint has the fields of a solo run's (`trainables.kit.training.Progress.checkpoint`:
epoch, generator state, best score, epoch and validation metrics, plateau), but holds its network
(`model`), optimiser state (`optimizer`: s_{t-1}, then rmsprop's average) and best state
(`best_state`) each as one flat row of that member's numbers (`StackedModel.rows`,
`StackedRmsProp.rows`, each in a storage of its own): four tensors rather than a solo run's 25.
It is built only when the member's session reads it (`trainables.kit.cohort.Deferred`): a Ray
trial's sessions persist one at most once per report interval, and building every member's every
epoch cost an NN cohort on the toy set a tenth of its time. A restarted
cohort resumes every member it is handed from that member's checkpoint (all from one epoch) and
continues exactly as the uninterrupted cohort. The numbers equal the solo run's up to float
rounding: batched matmul kernels sum in another order than `addmm`, and the differences grow over
training as in any two runs of one network (tests/test_cohort.py: within 1e-5 relative over 20
epochs of the toy set; tests/test_cohort_fd.py for FD and IVN).

The method supplies its network (`build`) and `Heads`: its minibatch loss, its predictive
distribution and its scores, written for a leading member axis, and the loss's gradient at the
network's output in closed form (`Heads.gradient`, `trainables.nn.loss_gradients`: the same bits as
autograd's, without its recording and replay; NN, DN, FD and IVN have one, which took 15%, 20%,
8–11% and 11–13% off their cohorts of Table 7's configs). The stacked network is by default
the MLP that holds all of NN's and DN's parameters (`stack_mlps`, `trainables.nn.stacked.StackedMLP`);
FD and IVN pass `stack=trainables.nn.stacked_fdnet.StackedFastDropoutNet`. Either is a
`StackedModel`; the trainer needs nothing else of it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from seqrep.method import RegressionData, SeqrepError, Session
from trainables.kit import regression_fit
from trainables.kit.cohort import Deferred, Member, Stateful, check_sessions, run_epochs
from trainables.kit.padded_networks import pad
from trainables.kit.predictive_plot import plot_predictive
from trainables.kit.regression_config import RegressionConfig
from trainables.kit.regression_fit import Tensors, as_tensors
from trainables.kit.training import Progress
from trainables.nn.feedforward import MLP, seeded_generator
from trainables.nn.stacked import StackedMLP, StackedRmsProp, clip_member_grad_norms

Forward = Callable[[torch.Tensor], torch.Tensor]  # x -> the members' raw network outputs (M, n, width)
# (raw output (M, b, width), y) -> (each member's loss (M,), its gradient at the raw output)
Gradient = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class StackedModel(Protocol):
    """K networks of one shape with their parameters on a leading member axis, as `StackedMLP`
    lays them out: one flat `storage`, each parameter a (K, *shape) block of it (`views`), a
    member's parameters as one row of P = sum(`numels`) numbers (`rows`, `unflatten`,
    `load_member`). `forward_train(x)` on the members' own minibatches (K, b, in) returns the raw
    output (K, b, width) and what `backward(state, grad, grads)` needs to write the gradient of
    the members' losses, given theirs at the raw output, into `grads` (laid out as `views`).
    Called with `(x, params, members)`: the raw output of the members `params` hold."""

    size: int
    numels: list[int]
    storage: torch.Tensor

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]: ...
    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]: ...
    def backward(self, state: Any, grad: torch.Tensor, grads: Sequence[torch.Tensor]) -> None: ...
    def __call__(self, x: torch.Tensor, params: Sequence[torch.Tensor] | None = None,
                 members: Sequence[int] | None = None) -> torch.Tensor: ...
    def rows(self, params: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]: ...
    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]: ...
    def load_member(self, k: int, row: torch.Tensor) -> None: ...


# the members' networks, of one shape (and, for members padded to it, each member's own
# number of hidden layers) -> the stacked one
Stack = Callable[..., StackedModel]


@dataclasses.dataclass(frozen=True)
class Heads:
    """What a method computes from its network's raw outputs, for M members at once.

    `loss(raw, y)`: each member's minibatch objective (M,), from the network's output on its own
    minibatch (M, b, width) and targets y (M, b, d). `score(forward, x, y)`: (loss (M,),
    predictive mean (M, n, d), per-point NLL (M, n)) of a whole split, x (n, in) and y (n, d)
    shared. `predict(forward, x)`: predictive mean and variance, (M, n, d) each. `gradient(raw, y)`,
    where the method has one: the loss and its gradient at `raw` in closed form, the same bits as
    autograd's (`trainables.nn.loss_gradients`), which the trainer then need not ask for.
    """

    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    score: Callable[[Forward, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    predict: Callable[[Forward, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    gradient: Gradient | None = None


def mlp_body(module: nn.Module) -> MLP:
    """The MLP inside a method's network, which must hold all of its parameters (in order)."""
    body = next(m for m in module.modules() if isinstance(m, MLP))
    if [id(p) for p in module.parameters()] != [id(p) for p in body.parameters()]:
        raise ValueError(f"a cohort stacks networks whose parameters are all in one MLP, but "
                         f"{type(module).__name__} has others")
    return body


def stack_mlps(networks: list[nn.Module], device: torch.device,
               depths: Sequence[int] | None = None, widths: Sequence[int] | None = None) -> StackedMLP:
    """NN's and DN's networks (all their parameters in one MLP) as one `StackedMLP` (whose padded
    units need no care, so `widths` goes unused)."""
    return StackedMLP([mlp_body(network) for network in networks], device, depths)


class StackedRegression:
    """The stacked network, optimiser, generators and data of one cohort, and its epoch steps."""

    def __init__(self, members: Sequence[Member], data: RegressionData,
                 build: Callable[[Any, int, int], nn.Module], heads: Callable[[Tensors], Heads],
                 max_grad_norms: Sequence[float | None] | None = None, stack: Stack = stack_mlps):
        self.data, self.device = data, torch.device(members[0].session.context.device)
        self.tensors: Tensors = as_tensors(data, self.device)
        n_in, n_out = self.tensors["train"][0].shape[1], self.tensors["train"][1].shape[1]
        networks = []
        for member in members:
            torch.manual_seed(member.session.context.seed)  # each member's initialisation, as its solo run draws it
            networks.append(build(member.config, n_in, n_out))
        self.names = [name for name, _ in networks[0].named_parameters()]
        configs = [member.config for member in members]
        # members of different depths or widths: each padded to the largest (`trainables.kit.padded_networks`)
        # (a stack names the parameters with one entry per layer, which pad by layer: IVN's `rho`)
        self.padded = pad(configs, networks, build, n_in, n_out, getattr(stack, "PER_LAYER", ()))
        real = None
        if self.padded is None:
            self.model = stack(networks, self.device)
        else:
            self.model = stack(self.padded.networks, self.device, self.padded.depths, self.padded.widths)
            real = self.padded.real.to(self.device)
        self.optimizer = StackedRmsProp(self.model, [c.step_rate for c in configs],
                                        [c.decay for c in configs], [c.momentum for c in configs], real=real)
        self.grad = torch.zeros_like(self.model.storage)  # the flat gradient, laid out as the parameters
        self.grads = self.model.views(self.grad)
        self.generators = [seeded_generator(member.session.context.seed) for member in members]
        self.batch_size = configs[0].batch_size
        self.heads = heads(self.tensors)
        norms = list(max_grad_norms or [None] * len(members))
        self.clip = None if all(v is None for v in norms) else (
            torch.tensor([v or 0.0 for v in norms], device=self.device),
            torch.tensor([v is not None for v in norms], device=self.device))

    def train_epoch(self) -> list[float]:
        """One pass over the training split, each member in its own minibatch order; mean losses (K,)."""
        x_train, y_train = self.tensors["train"]
        n = x_train.shape[0]
        # the permutations are drawn on the CPU, as `trainables.nn.feedforward.minibatches`
        order = torch.stack([torch.randperm(n, generator=g) for g in self.generators]).to(self.device)  # (K, n)
        total = torch.zeros(self.model.size, device=self.device)
        for x, y in zip(x_train[order].split(self.batch_size, dim=1), y_train[order].split(self.batch_size, dim=1)):
            raw, inputs = self.model.forward_train(x)
            # (K,): members share no parameter, each gets its own loss's gradient
            if self.heads.gradient is not None:
                loss, grad = self.heads.gradient(raw, y)
            else:
                raw.requires_grad_(True)
                loss = self.heads.loss(raw, y)
                (grad,) = torch.autograd.grad(loss.sum(), raw)
            self.model.backward(inputs, grad, self.grads)
            if self.clip is not None:
                clip_member_grad_norms(self.grads, *self.clip)
            self.optimizer.step(self.grad)
            total += loss.detach() * x.shape[1]
        return [value / n for value in total.tolist()]

    @torch.no_grad()
    def evaluate(self, split: str, params: Sequence[torch.Tensor],
                 members: Sequence[int] | None = None) -> list[dict[str, float]]:
        """`loss`, `mse`, `rmse`, `nll` on `split` (`regression_fit.make_evaluate`) of the members
        `params` hold (all K, else those named by `members`)."""
        x, y = self.tensors[split]
        if x.shape[0] == 0:
            return [{"loss": math.nan, "mse": math.nan, "rmse": math.nan, "nll": math.nan}
                    for _ in range(params[0].shape[0])]
        loss, mean, nll = self.heads.score(self.forward(params, members), x, y)
        scaled = (mean - y) ** 2
        log_det = 0.0
        if self.data.y_std is not None:  # `regression_fit.metrics`: the original units
            y_std = np.asarray(self.data.y_std)
            scaled = scaled * torch.as_tensor(y_std ** 2, dtype=y.dtype, device=y.device)
            log_det = float(np.log(y_std).sum())
        rows = torch.stack([loss, scaled.mean(dim=(1, 2)), nll.mean(dim=1)], dim=1).tolist()
        return [{"loss": l, "mse": m, "rmse": math.sqrt(m), "nll": v + log_det} for l, m, v in rows]

    def forward(self, params: Sequence[torch.Tensor], members: Sequence[int] | None = None) -> Forward:
        return lambda x: self.model(x, params, members)

    def best_params(self, members: Sequence[Member]) -> list[torch.Tensor]:
        """The members' best states (their `rows`) as stacked parameters."""
        return self.model.unflatten(torch.stack([m.progress.best_state for m in members]))

    def model_file(self, member: Member) -> dict[str, Any] | None:
        """What a solo run keeps: its network's state dict at the best state, and its config."""
        best = member.progress.best_state
        if best is None:
            return None
        params = self.model.unflatten(best)
        model = dict(zip(self.names, params)) if self.padded is None else self.padded.state_dict(member.index, params)
        return {"model": model, "config": member.config.to_dict()}

    def checkpoints(self, members: Sequence[Member], epoch: int) -> list[Deferred]:
        """Each member's checkpoint (`Progress.checkpoint`, module docstring), each in its own
        storage, built when its session first reads it (`Deferred`: all members' rows at once)."""
        rows: dict[str, list[torch.Tensor]] = {}
        position = {m.index: j for j, m in enumerate(members)}  # a member's row of the optimiser's rows

        def build(member: Member) -> dict[str, Any]:
            if not rows:
                rows["model"] = self.model.rows()
                rows["optimizer"] = self.optimizer.rows([m.index for m in members])
            k = member.index
            return member.progress.checkpoint(epoch, Stateful(rows["model"][k]), Stateful(rows["optimizer"][position[k]]),
                                              self.generators[k])

        return [Deferred(functools.partial(build, m)) for m in members]

    def restore(self, member: Member, state: Mapping[str, Any]) -> Progress:
        """Load member k's network, optimiser and generator from its checkpoint; its progress."""
        k, width = member.index, sum(self.model.numels)
        shapes = [tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                  for v in (state.get("model"), state.get("optimizer"))]
        if shapes != [(width,), (2 * width,)]:
            raise SeqrepError(f"the checkpoint of cohort member {k} must hold its network and optimiser state as "
                              f"rows of shapes {[(width,), (2 * width,)]} (a cohort member's of this shape), "
                              f"but holds {shapes}")
        model = Stateful(load=lambda row: self.model.load_member(k, row))
        optimizer = Stateful(load=lambda row: self.optimizer.load_member(k, row))
        return Progress.restore(state, model, optimizer, self.generators[k])

    def plot(self, member: Member, test: Mapping[str, float], title: str) -> None:
        """The member's Figure-6 plot at its best state, where and when its solo run draws it."""
        if self.tensors["train"][0].shape[1] != 1 or self.data.y_std is not None:
            return
        forward = self.forward(self.best_params([member]), [member.index])

        def predict(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mean, variance = self.heads.predict(forward, x)
            return mean[0], variance[0]

        plot_predictive(member.session.artifact_dir / "predictive.png", self.data, predict,
                        f"{title} on {self.data.name}: test NLL {test['nll']:.3f}", self.device)


def _finish(cohort: StackedRegression, members: Sequence[Member], status: str, title: str) -> None:
    """Test metrics at each member's best state (one stacked pass), its plot, its `finish`."""
    kept = [m for m in members if m.progress.best_state is not None]
    tests = cohort.evaluate("test", cohort.best_params(kept), [m.index for m in kept]) if kept else []
    by_member = {m.index: test for m, test in zip(kept, tests)}
    for member in members:
        test = by_member.get(member.index)
        if test is not None:
            cohort.plot(member, test, title)
        member.finish(test, cohort.model_file(member), status)


def _epoch(cohort: StackedRegression, members: Sequence[Member], epoch: int, title: str) -> list[Deferred]:
    """One epoch of every unfinished member: train, evaluate, keep the best, report; the members
    that diverged are finished and frozen. Returns the checkpoints reported, to be expired before
    the next epoch trains (`Deferred`)."""
    train_loss = cohort.train_epoch()
    params = cohort.optimizer.evaluation_point()
    valid = cohort.evaluate("valid", params)
    at_evaluation: list[torch.Tensor] = []  # every member's row there, copied once if any improved

    def best_state(k: int) -> torch.Tensor:
        if not at_evaluation:
            at_evaluation.extend(cohort.model.rows(params))
        return at_evaluation[k]

    diverged, going = [], []
    for member in members:
        k = member.index
        outcome = member.record(epoch, train_loss[k], valid[k], lambda: best_state(k))
        (diverged if outcome == "diverged" else going).append(member)
    checkpoints = cohort.checkpoints(going, epoch)
    for member, checkpoint in zip(going, checkpoints):
        member.session.report(member.latest, checkpoint=checkpoint)
    for member in diverged:
        member.session.report(member.latest)
    if diverged:  # (freezing leaves the going members' rows, which a flush in `finish` may read, as they are)
        cohort.optimizer.freeze([m.index for m in diverged])
        _finish(cohort, diverged, "diverged", title)
    return checkpoints


def train_regression_cohort(configs: Sequence[RegressionConfig], sessions: Sequence[Session], *,
                            build: Callable[[Any, int, int], nn.Module], heads: Callable[[Tensors], Heads],
                            title: str, max_grad_norms: Sequence[float | None] | None = None,
                            stack: Stack = stack_mlps) -> None:
    """Train `configs` as one cohort, member k reporting through `sessions[k]` (module docstring).

    `build(config, n_inputs, n_outputs)`: the member's network as the method's solo `train`
    builds it (called right after `torch.manual_seed(seed)`). `stack(networks, device)`: those
    networks as one `StackedModel` (default: their MLPs, which must hold all their parameters).
    `heads(tensors)`: the method's `Heads`, given every split as tensors on the device. `title`:
    the plots' method name. `max_grad_norms`: per member, the gradient-norm clip (None: none).
    """
    check_sessions(configs, sessions)
    members = [Member(k, config, session) for k, (config, session) in enumerate(zip(configs, sessions))]
    cohort = StackedRegression(members, regression_fit.load(sessions[0]), build, heads, max_grad_norms, stack)
    run_epochs(members, cohort.restore, lambda active, epoch: _epoch(cohort, active, epoch, title),
               lambda going, status: _finish(cohort, going, status, title))
