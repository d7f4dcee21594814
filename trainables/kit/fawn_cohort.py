"""The cohort trainer of FAWN-VB and FAWN-ROPD (`trainables.fawn_vb`, `trainables.fawn_ropd`; Table 8).

`train_fawn_cohort(configs, sessions, point_loss, title)` trains K FAWN trials that agree on
`COHORT_KEYS` (layers, units and transfer fix every tensor shape and the moment rule, the batch
size every minibatch's) as one stacked network, and gives each member's session what
`trainables.kit.fawn_fit.train_fawn` gives a solo trial's: per epoch the report (`train_loss` and
the `valid_*` metrics, which are the TRAINING split's: selection on the training loss) with a
checkpoint, then one `finish` with the final metrics (best epoch, best `valid_*`, `test_*` at the
best state, original units), the model `{"model": state dict of the solo `FAWNNet`, "config":
...}` and, on 1-d data in original units (the toy set), the Figure-6 plot. Table 8's search is a
grid over the UCI `split`, so the members differ in their DATA: each trains and is measured on
its own split (`regression_fit.load(session, split=config.split)`), standardised on that split's
own training rows. Each member keeps what makes its solo run its own:

- initialisation: `torch.manual_seed(seed)`, then `FAWNNet(...)` from its config, as `train_fawn`;
- minibatch order: its own `seeded_generator(seed)`, one permutation per epoch, of its own rows;
- Adam with its own step rate (`trainables.nn.stacked_adam`, torch's defaults otherwise) on its
  row of the stacked parameters; loss = point-loss mean + KL / n_train, as `train_fawn`;
- selection, plateau stop and divergence (`trainables.kit.cohort.Member`, with the plateau
  tracked at the member's `tolerance` as `training.fit` does): a member whose training loss has
  gone `patience` epochs without improving finishes `completed` at the epoch its solo run stops,
  one whose training loss or selection metric turns non-finite is reported and finished
  `diverged`; either is then dropped from the stack (its rows of parameters and Adam moments),
  and nothing it computes afterwards exists.

Members whose splits have different numbers of training rows (not Table 8's: every PBP split of
a set has as many) cannot share minibatches; they form sub-cohorts (`Stack`, one per training
size) that take each epoch in turn, so every member still reports every epoch before any
reports the next, and the cohort's checkpoints stay from one epoch.

The stacked network (`StackedFAWN`) is `trainables.nn.fawn.FAWNNet` term by term with a leading
member axis: `variance.gaussian_affine` as batched matmuls (`torch.baddbmm`, `torch.bmm`), the
transfer's moment rule, the noise and the per-member KL; autograd differentiates the sum of the
members' losses on one (K, P) leaf (members share nothing, so row k gets member k's gradient).
Written out rather than `torch.func.vmap` over `functional_call`: forward and backward of one
epoch of 10 members on Boston's 455 rows (13 -> 50 -> 1) take 17 ms by batched matmuls and 22 ms
by vmap, one thread, and the flat (K, P) layout lets Adam update everything in a few whole-tensor
operations. What differs from the solo run is the float rounding of the batched kernels, ~1e-7
relative per epoch (tests/test_cohort_fawn.py: within 1e-5 relative over 20 epochs).

A member's checkpoint has the fields of a solo run's (`Progress.checkpoint`), but its network
(`model`) and best state (`best_state`) are one row of P numbers each and its optimiser state is
`{"step", "exp_avg", "exp_avg_sq"}` (`StackedAdam.member_state`). A restarted cohort resumes every
member it is handed from that member's checkpoint (all from one epoch) and continues exactly as
the uninterrupted cohort.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from seqrep.method import RegressionData, SeqrepError, Session
from trainables.kit import regression_fit
from trainables.kit.cohort import Member, Stateful, check_sessions, restored_states
from trainables.kit.fawn_fit import FAWNConfig
from trainables.kit.predictive_plot import plot_predictive
from trainables.kit.training import Progress
from trainables.nn.fawn import TRANSFER_MOMENTS, FAWNNet, expected_gaussian_log_likelihood
from trainables.nn.feedforward import seeded_generator
from trainables.nn.gaussian import gaussian_nll
from trainables.nn.stacked_adam import StackedAdam

COHORT_KEYS = ("hidden_layers", "hidden_units", "transfer", "batch_size")

# a per-point objective on the network's moments: (y, E[y], V[y], sigma_hat^2) -> (..., n)
MomentLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def vb_loss(y: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, noise_var: torch.Tensor) -> torch.Tensor:
    """FAWN-VB's per-point term (`trainables.nn.fawn.vb_point_loss`) from the moments."""
    return -expected_gaussian_log_likelihood(y, mean, var, noise_var)


def ropd_loss(y: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, noise_var: torch.Tensor) -> torch.Tensor:
    """FAWN-ROPD's per-point term (`trainables.nn.fawn.ropd_point_loss`) from the moments."""
    return gaussian_nll(y, mean, var + noise_var)


class StackedFAWN:
    """K `FAWNNet`s of one shape: row k of `flat` (K, P) holds member k's parameters, in the order
    of `FAWNNet.parameters()`; `views(flat)` gives each as (K, *shape)."""

    def __init__(self, nets: Sequence[FAWNNet], transfer: str, device: torch.device):
        shapes = [[tuple(p.shape) for p in net.parameters()] for net in nets]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"a FAWN stack needs networks of one shape, but got {shapes}")
        self.names = [name for name, _ in nets[0].named_parameters()]
        self.shapes = shapes[0]
        self.bounds = np.cumsum([0] + [math.prod(s) for s in self.shapes]).tolist()
        self.layers = len(nets[0].layers)
        self.transfer = TRANSFER_MOMENTS[transfer]
        rows = [torch.cat([p.detach().reshape(-1) for p in net.parameters()]) for net in nets]
        self.flat = torch.stack(rows).to(device).requires_grad_(True)

    @property
    def width(self) -> int:
        return self.bounds[-1]

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        m = flat.shape[0]
        return {name: flat[:, a:b].view(m, *shape)
                for name, shape, a, b in zip(self.names, self.shapes, self.bounds[:-1], self.bounds[1:])}

    def moments(self, p: Mapping[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E[y], V[y] (M, n, d) of x (M, n, in): `FAWNNet.forward` per member."""
        mean, var = x, None
        for i in range(self.layers):
            w_mean, b_mean = p[f"layers.{i}.weight_mean"], p[f"layers.{i}.bias_mean"]
            w_var = F.softplus(p[f"layers.{i}.weight_raw_std"]) ** 2
            b_var = F.softplus(p[f"layers.{i}.bias_raw_std"]) ** 2
            # `variance.gaussian_affine` with a member axis: E[x] E[W]^T + E[b], E[x]^2 V[W]^T (+ ...)
            mean_a = torch.baddbmm(b_mean.unsqueeze(1), mean, w_mean.transpose(1, 2))
            var_a = torch.bmm(mean.square(), w_var.transpose(1, 2))
            if var is not None:
                var_a = var_a + torch.bmm(var, (w_mean.square() + w_var).transpose(1, 2))
            mean, var = mean_a, var_a + b_var.unsqueeze(1)
            if i != self.layers - 1:
                mean, var = self.transfer(mean, var)
        return mean, var

    @staticmethod
    def noise_var(p: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """sigma_hat^2 per member, (M, 1, d)."""
        return (F.softplus(p["raw_noise"]) ** 2).unsqueeze(1)

    def kl(self, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """`FAWNNet.kl` per member, (M,)."""
        prior_mean, prior_std = p["prior_mean"], F.softplus(p["prior_raw_std"])
        total = torch.zeros_like(prior_mean)
        for i in range(self.layers):
            for kind in ("weight", "bias"):
                mean, std = p[f"layers.{i}.{kind}_mean"], F.softplus(p[f"layers.{i}.{kind}_raw_std"])
                shape = (-1,) + (1,) * (mean.dim() - 1)
                pm, ps = prior_mean.view(shape), prior_std.view(shape)
                term = torch.log(ps / std) + (std ** 2 + (mean - pm) ** 2) / (2 * ps ** 2) - 0.5
                total = total + term.flatten(1).sum(1)
        return total

    def state_dict(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """A member's row as the solo `FAWNNet`'s state dict."""
        return {name: value[0].clone() for name, value in self.views(row.detach()[None]).items()}


class Stack:
    """The members of a cohort that share a training size: stacked network, Adam, generators, data.

    Rows follow `members`; a finished member's rows are dropped (`drop`)."""

    def __init__(self, members: Sequence[Member], datas: Sequence[RegressionData], point_loss: MomentLoss,
                 title: str):
        self.members, self.point_loss, self.title = list(members), point_loss, title
        self.device = torch.device(members[0].session.context.device)
        self.datas = {m.index: data for m, data in zip(members, datas)}
        tensors = [regression_fit.as_tensors(data, self.device) for data in datas]
        self.tests = {m.index: t["test"] for m, t in zip(members, tensors)}
        self.x = torch.stack([t["train"][0] for t in tensors])  # (M, n, in)
        self.y = torch.stack([t["train"][1] for t in tensors])  # (M, n, d)
        self.n_train, n_in, n_out = self.x.shape[1], self.x.shape[2], self.y.shape[2]
        # `regression_fit.metrics` per member: squared errors scaled by y_std^2, NLL shifted by sum log y_std
        self.scale = torch.stack([self._scale(d, n_out) for d in datas])  # (M, 1, d)
        self.log_det = [0.0 if d.y_std is None else float(np.log(np.asarray(d.y_std)).sum()) for d in datas]
        nets = []
        for member in members:
            c: FAWNConfig = member.config
            torch.manual_seed(member.session.context.seed)  # each member's initialisation, as `train_fawn` draws it
            nets.append(FAWNNet(n_in, n_out, c.hidden_layers, c.hidden_units, c.transfer, c.init_std, c.init_noise))
        self.net = StackedFAWN(nets, members[0].config.transfer, self.device)
        self.adam = StackedAdam(self.net.flat, [m.config.step_rate for m in members])
        self.generators = [seeded_generator(m.session.context.seed) for m in members]
        self.batch_size = members[0].config.batch_size

    def _scale(self, data: RegressionData, n_out: int) -> torch.Tensor:
        squared = np.ones(n_out) if data.y_std is None else np.asarray(data.y_std) ** 2
        return torch.as_tensor(squared, dtype=torch.float32, device=self.device).reshape(1, n_out)

    def objective(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each member's loss (M,) (`train_fawn`'s: point-loss mean + KL / n_train), E[y], V[y] + sigma_hat^2."""
        p = self.net.views(flat)
        mean, var = self.net.moments(p, x)
        noise_var = self.net.noise_var(p)
        loss = self.point_loss(y, mean, var, noise_var).mean(dim=1) + self.net.kl(p) / self.n_train
        return loss, mean, var + noise_var

    def train_epoch(self) -> list[float]:
        """One pass over each member's training rows in its own order; mean minibatch losses (M,)."""
        n, m = self.n_train, len(self.members)
        # the permutations are drawn on the CPU, as `trainables.nn.feedforward.minibatches`
        order = torch.stack([torch.randperm(n, generator=g) for g in self.generators]).to(self.device)
        rows = torch.arange(m, device=self.device)[:, None]
        flat, total = self.net.flat, torch.zeros(m, device=self.device)
        for x, y in zip(self.x[rows, order].split(self.batch_size, dim=1),
                        self.y[rows, order].split(self.batch_size, dim=1)):
            loss = self.objective(flat, x, y)[0]
            flat.grad = None
            loss.sum().backward()  # members share no parameter: row k gets member k's gradient
            self.adam.step(flat, flat.grad)
            total += loss.detach() * x.shape[1]
        return [value / n for value in total.tolist()]

    @torch.no_grad()
    def evaluate(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                 rows: Sequence[int]) -> list[dict[str, float]]:
        """`regression_fit.make_evaluate`'s `loss`, `mse`, `rmse`, `nll` of the members whose rows
        `flat` holds (`rows` of this stack, for their units), on x (M, n, in), y (M, n, d)."""
        if x.shape[1] == 0:
            return [{"loss": math.nan, "mse": math.nan, "rmse": math.nan, "nll": math.nan} for _ in rows]
        loss, mean, predictive_var = self.objective(flat, x, y)
        nll = gaussian_nll(y, mean, predictive_var)  # the default `nll` of `fit_regression`
        mse = (((mean - y) ** 2) * self.scale[list(rows)]).mean(dim=(1, 2))
        out = []
        for row, (l, e, v) in zip(rows, torch.stack([loss, mse, nll.mean(dim=1)], dim=1).tolist()):
            out.append({"loss": l, "mse": e, "rmse": math.sqrt(e), "nll": v + self.log_det[row]})
        return out

    def test(self, member: Member) -> dict[str, float] | None:
        """The member's test metrics at its best state (None without one), and its plot."""
        best = member.progress.best_state
        if best is None:
            return None
        x, y = self.tests[member.index]
        test = self.evaluate(best[None], x[None], y[None], [self.row(member)])[0]
        data = self.datas[member.index]
        if x.shape[1] == 1 and data.y_std is None:  # the Figure-6 plot, as `fit_regression`'s on_finish

            def predict(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                p = self.net.views(best[None])
                mean, var = self.net.moments(p, grid[None])
                return mean[0], (var + self.net.noise_var(p))[0]

            plot_predictive(member.session.artifact_dir / "predictive.png", data, predict,
                            f"{self.title} on {data.name}: test NLL {test['nll']:.3f}", self.device)
        return test

    def finish(self, members: Sequence[Member], status: str) -> None:
        """Finish `members` (test metrics, model, plot at their best states) and drop their rows."""
        for member in members:
            best = member.progress.best_state
            model = None if best is None else {"model": self.net.state_dict(best), "config": member.config.to_dict()}
            member.finish(self.test(member), model, status)
        self.drop(members)

    def row(self, member: Member) -> int:
        return next(row for row, m in enumerate(self.members) if m.index == member.index)

    def drop(self, members: Sequence[Member]) -> None:
        if not members:
            return
        gone = {m.index for m in members}
        keep = [row for row, m in enumerate(self.members) if m.index not in gone]
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.net.flat = self.net.flat.detach()[index].requires_grad_(True)
        self.adam.keep(keep)
        self.x, self.y, self.scale = self.x[index], self.y[index], self.scale[index]
        self.log_det = [self.log_det[row] for row in keep]
        self.generators = [self.generators[row] for row in keep]
        self.members = [self.members[row] for row in keep]

    def epoch(self, epoch: int) -> None:
        """One epoch of every member: train, evaluate on the training split (selection on the
        training loss), keep the best, report; then finish the diverged and the plateaued."""
        train_loss = self.train_epoch()
        flat = self.net.flat.detach()
        valid = self.evaluate(flat, self.x, self.y, range(len(self.members)))
        diverged, going, stopped = [], [], []
        for row, member in enumerate(self.members):
            outcome = member.record(epoch, train_loss[row], valid[row], lambda row=row: flat[row].clone(),
                                   member.config.tolerance)
            (diverged if outcome == "diverged" else going).append(member)
        for member in going:
            row = self.row(member)
            checkpoint = member.progress.checkpoint(epoch, Stateful(flat[row].clone()),
                                                    Stateful(self.adam.member_state(row)), self.generators[row])
            member.session.report(member.latest, checkpoint=checkpoint)
            patience = member.config.patience
            if patience is not None and epoch - member.progress.plateau_epoch >= patience:
                stopped.append(member)  # `training.fit`'s plateau stop: completed at this epoch
        for member in diverged:
            member.session.report(member.latest)
        self.finish(diverged, "diverged")
        self.finish(stopped, "completed")

    def restore(self, member: Member, state: Mapping[str, Any]) -> Progress:
        """Load the member's row, Adam state and generator from its checkpoint; its progress."""
        row, width = self.row(member), self.net.width
        optimizer = state.get("optimizer")
        found = [_describe(state.get("model")), {k: _describe(v) for k, v in optimizer.items()}
                 if isinstance(optimizer, Mapping) else _describe(optimizer)]
        wanted = [(width,), {"step": "float", "exp_avg": (width,), "exp_avg_sq": (width,)}]
        if found != wanted:
            raise SeqrepError(f"the checkpoint of cohort member {member.index} must hold its network as a row "
                              f"{wanted[0]} and its Adam state as {wanted[1]} (a FAWN cohort member's of this "
                              f"shape), but holds {found}")

        def load_row(value: torch.Tensor) -> None:
            with torch.no_grad():
                self.net.flat[row] = value.to(self.net.flat)

        progress = Progress.restore(state, Stateful(load=load_row),
                                    Stateful(load=lambda s: self.adam.load_member(row, s)), self.generators[row])
        if progress.best_epoch == 0:
            progress.best_state = None
        else:
            progress.best_state = progress.best_state.to(self.net.flat.device)
        return progress


def _describe(value: Any) -> Any:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def check_configs(configs: Sequence[FAWNConfig]) -> None:
    """Members agree on every key of `COHORT_KEYS` (SeqrepError names the first that differs)."""
    for key in COHORT_KEYS:
        values = [getattr(config, key) for config in configs]
        if any(value != values[0] for value in values):
            raise SeqrepError(f"FAWN cohort members must share {key!r} (COHORT_KEYS: they fix the stacked "
                              f"network's shapes), but got {values}")


def train_fawn_cohort(configs: Sequence[FAWNConfig], sessions: Sequence[Session], point_loss: MomentLoss,
                      title: str) -> None:
    """Train `configs` as one cohort, member k reporting through `sessions[k]` (module docstring).

    `point_loss(y, mean, var, noise_var)`: the method's per-point term from the moments
    (`vb_loss`, `ropd_loss`); `title`: the plots' method name."""
    check_sessions(configs, sessions)
    check_configs(configs)
    members = [Member(k, config, session) for k, (config, session) in enumerate(zip(configs, sessions))]
    datas = [regression_fit.load(s, split=c.split) for c, s in zip(configs, sessions)]
    by_size: dict[int, list[int]] = {}  # sub-cohorts by training size, in the members' order
    for k, data in enumerate(datas):
        by_size.setdefault(data.x_train.shape[0], []).append(k)
    stacks = [Stack([members[k] for k in ks], [datas[k] for k in ks], point_loss, title) for ks in by_size.values()]
    states = restored_states(sessions)
    start = 1
    if states is not None:
        for stack in stacks:
            for member in stack.members:
                member.progress = stack.restore(member, states[member.index])
            steps = {float(states[m.index]["optimizer"]["step"]) for m in stack.members}
            if len(steps) > 1:
                raise SeqrepError(f"the members of a FAWN cohort take Adam's steps together, but their checkpoints "
                                  f"hold step counts {sorted(steps)}")
        start = members[0].progress.start
    for epoch in range(start, sessions[0].context.max_epochs + 1):
        live = [stack for stack in stacks if stack.members]
        if not live:
            break
        for stack in live:
            stack.epoch(epoch)
    for stack in stacks:
        stack.finish(list(stack.members), "completed")
