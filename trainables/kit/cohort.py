"""Cohorts: K trials of the NN method (`mlp`) with one network shape, trained as one model.

Trials of one random search whose configurations share every tensor shape (hidden_layers,
hidden_units, transfer, batch_size) differ only in scalars: rmsprop's step rate, decay and
momentum, and the seed. `run_mlp_cohort` trains them together (`trainables.nn.stacked`: weights
stacked on a leading member axis, batched matmuls, climin's rmsprop with (K, 1) hyperparameter
columns) and returns, per member, what a solo `run_local("mlp", config, context)` records: the
per-epoch history (`epoch`, `train_loss`, `valid_*`), the final metrics (`best_epoch`, the best
`valid_*`, `test_*` at the best-validation state), the status and the best state. Each member
keeps what makes its solo run its own:

- initialisation: `torch.manual_seed(seed)`, then its `MLP` built as `trainables.mlp` builds it;
- minibatch order: its own `seeded_generator(seed)`, one permutation per epoch, as
  `trainables.kit.regression_fit`;
- rmsprop's α, γ, β, and the NLL's variance, fitted on its own training residuals
  (`trainables.mlp.residual_variance`) at every evaluation;
- selection and divergence: its best state by the context's metric, evaluated at climin's resting
  point; a member whose training loss or selection metric turns non-finite is reported
  `diverged` and frozen (its parameters stop changing) while the others go on.

The numbers equal the solo run's up to float rounding: batched matmul kernels round differently
from `addmm`, and the differences grow over training as in any two runs of one network
(tests/test_cohort.py: within 1e-5 relative over 20 epochs).

Not yet wired into studies. Nothing in a search reaches this module; the next step is the
platform side: a study option `--cohort-size K` that groups a random search's same-shape trials
and runs one Ray trial per cohort, whose members each still get their own trial folder, Parquet
row and MLflow run (per-epoch reports fanned out per member); a cohort checkpoint (the stacked
parameters, optimiser state, K generator states and per-member progress) from which a restarted
cohort resumes; the predictive plot per member (done here when `artifact_dirs` is given); and
the same for the reduction and RNN methods.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from seqrep.method import RegressionData, TrialContext, is_finite
from trainables.kit.predictive_plot import plot_predictive
from trainables.kit.regression_config import RegressionConfig
from trainables.kit.regression_fit import Tensors, as_tensors
from trainables.kit.training import prefixed
from trainables.nn.feedforward import MLP, seeded_generator
from trainables.nn.gaussian import gaussian_nll
from trainables.nn.stacked import StackedMLP, StackedRmsProp

SHAPE_KEYS = ("hidden_layers", "hidden_units", "transfer", "batch_size")
SHARED_CONTEXT_KEYS = ("dataset", "max_epochs", "metric", "mode", "device")


@dataclasses.dataclass
class MemberRun:
    """One member's record, as `seqrep.session.LocalSession` holds a solo run's."""

    config: RegressionConfig
    context: TrialContext
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    final: dict[str, float] | None = None
    status: str | None = None
    model: dict[str, Any] | None = None  # {"model": best state dict, "config": ...}, as a solo run keeps
    best: float | None = None
    best_epoch: int = 0
    best_valid: dict[str, float] = dataclasses.field(default_factory=dict)


def check_cohort(configs: Sequence[RegressionConfig], contexts: Sequence[TrialContext]) -> None:
    """Members must share every tensor shape and the run's budget and selection; ValueError names the key."""
    if not configs:
        raise ValueError("a cohort needs at least one member, but got no configs")
    if len(configs) != len(contexts):
        raise ValueError(f"one context per config must be given, but got {len(configs)} configs "
                         f"and {len(contexts)} contexts")
    for keys, items, what in ((SHAPE_KEYS, configs, "config"), (SHARED_CONTEXT_KEYS, contexts, "context")):
        for key in keys:
            values = [getattr(item, key) for item in items]
            if any(v != values[0] for v in values):
                raise ValueError(f"cohort members must share {what} key {key!r}, but got {values}")


def _as_config(config: RegressionConfig | Mapping[str, Any], k: int) -> RegressionConfig:
    if isinstance(config, RegressionConfig):
        return config
    return RegressionConfig.from_dict(dict(config), where=f"config of cohort member {k}")


def _residual_variance(prediction: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`trainables.mlp.residual_variance` per member: (K, 1, d) from (K, n, d) and (n, d)."""
    return ((y - prediction) ** 2).mean(dim=1, keepdim=True)


class Cohort:
    """The stacked model, optimiser, generators and data of one cohort, and its epoch steps."""

    def __init__(self, configs: list[RegressionConfig], contexts: list[TrialContext], data: RegressionData):
        self.data, self.device = data, torch.device(contexts[0].device)
        self.tensors: Tensors = as_tensors(data, self.device)
        n_in, n_out = self.tensors["train"][0].shape[1], self.tensors["train"][1].shape[1]
        members = []
        for config, context in zip(configs, contexts):
            torch.manual_seed(context.seed)  # each member's initialisation, drawn as its solo run draws it
            members.append(MLP(n_in, n_out, config.hidden_layers, config.hidden_units, config.transfer))
        self.model = StackedMLP(members).to(self.device)
        self.optimizer = StackedRmsProp(list(self.model.params), [c.step_rate for c in configs],
                                        [c.decay for c in configs], [c.momentum for c in configs])
        self.generators = [seeded_generator(context.seed) for context in contexts]
        self.batch_size = configs[0].batch_size
        self.best_params = [p.detach().clone() for p in self.model.params]

    def train_epoch(self) -> list[float]:
        """One pass over the training split, each member in its own minibatch order; mean losses (K,)."""
        x_train, y_train = self.tensors["train"]
        n = x_train.shape[0]
        # the permutations are drawn on the CPU, as `trainables.nn.feedforward.minibatches`
        order = torch.stack([torch.randperm(n, generator=g) for g in self.generators]).to(self.device)  # (K, n)
        params = list(self.model.params)
        total = torch.zeros(self.model.size, device=self.device)
        for x, y in zip(x_train[order].split(self.batch_size, dim=1), y_train[order].split(self.batch_size, dim=1)):
            loss = ((self.model(x) - y) ** 2).mean(dim=(1, 2))  # (K,): each member's mean squared error
            for p in params:
                p.grad = None
            loss.sum().backward()  # members share no parameter: each gets the gradient of its own loss
            self.optimizer.step()
            total += loss.detach() * x.shape[1]
        return [value / n for value in total.tolist()]

    @torch.no_grad()
    def evaluate(self, split: str, params: list[torch.Tensor]) -> list[dict[str, float]]:
        """Each member's `loss`, `mse`, `rmse`, `nll` on `split` at `params` (`regression_fit.metrics`)."""
        x, y = self.tensors[split]
        if x.shape[0] == 0:
            return [{"loss": math.nan, "mse": math.nan, "rmse": math.nan, "nll": math.nan}] * self.model.size
        x_train, y_train = self.tensors["train"]
        mean = self.model(x, params)  # (K, n, d)
        variance = _residual_variance(self.model(x_train, params), y_train)  # (K, 1, d)
        nll = gaussian_nll(y, mean, variance)  # (K, n)
        squared = (mean - y) ** 2
        if self.data.y_std is None:
            scaled, log_det = squared, 0.0
        else:
            scaled = squared * torch.as_tensor(np.asarray(self.data.y_std) ** 2, dtype=y.dtype, device=y.device)
            log_det = float(np.log(np.asarray(self.data.y_std)).sum())
        rows = torch.stack([squared.mean(dim=(1, 2)), scaled.mean(dim=(1, 2)), nll.mean(dim=1)]).T.tolist()
        return [{"loss": loss, "mse": mse, "rmse": math.sqrt(mse), "nll": nll + log_det} for loss, mse, nll in rows]

    def keep_best(self, improved: list[int], params: list[torch.Tensor]) -> None:
        if improved:
            index = torch.tensor(improved, device=self.device)
            for best, current in zip(self.best_params, params):
                best[index] = current[index]

    def member_predict(self, k: int):
        """Member k's predictive mean and variance at its best state, as `trainables.mlp`'s `predict`."""
        params = [p[k:k + 1] for p in self.best_params]
        x_train, y_train = self.tensors["train"]

        def predict(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mean = self.model(x, params)[0]
            return mean, _residual_variance(self.model(x_train, params), y_train)[0].expand_as(mean)

        return predict


def _record_epoch(run: MemberRun, epoch: int, train_loss: float, valid: dict[str, float]) -> tuple[bool, bool]:
    """`trainables.kit.training.fit`'s bookkeeping for one member; returns (improved, diverged)."""
    ctx = run.context
    score = valid[ctx.metric]
    run.history.append({"epoch": epoch, "train_loss": train_loss, **valid})
    if not (is_finite(train_loss) and is_finite(score)):
        run.status = "diverged"
        return False, True
    improved = ctx.better(score, run.best)
    if improved:
        run.best, run.best_epoch, run.best_valid = score, epoch, valid
    return improved, False


def _finish(cohort: Cohort, runs: list[MemberRun], artifact_dirs: Sequence[str | Path] | None) -> None:
    """Test metrics at each member's best state, the model to keep, the status (`training.finish`)."""
    test = cohort.evaluate("test", cohort.best_params)
    for k, run in enumerate(runs):
        run.status = run.status or "completed"
        run.final = {"best_epoch": run.best_epoch}
        if not run.best_epoch:
            continue
        run.final.update(run.best_valid)
        run.final.update(prefixed("test", test[k]))
        run.model = {"model": cohort.model.member_state(k, cohort.best_params), "config": run.config.to_dict()}
        if artifact_dirs is not None and cohort.tensors["train"][0].shape[1] == 1 and cohort.data.y_std is None:
            Path(artifact_dirs[k]).mkdir(parents=True, exist_ok=True)
            plot_predictive(Path(artifact_dirs[k]) / "predictive.png", cohort.data, cohort.member_predict(k),
                            f"NN (mlp) on {cohort.data.name}: test NLL {test[k]['nll']:.3f}", cohort.device)


def run_mlp_cohort(configs: Sequence[RegressionConfig | Mapping[str, Any]], contexts: Sequence[TrialContext],
                   data: RegressionData | None = None,
                   artifact_dirs: Sequence[str | Path] | None = None) -> list[MemberRun]:
    """Train K `mlp` trials of one shape together for `max_epochs`; one `MemberRun` per member.

    `configs`: `trainables.mlp.Config` objects (any `RegressionConfig`) or their dicts. `contexts`:
    one per member, each with its own seed, sharing data set, epoch budget, selection and device.
    `data`: the loaded data set (else the first context's). `artifact_dirs`: one folder per member
    for its predictive plot, as a solo run writes it; None writes none.
    """
    configs = [_as_config(c, k) for k, c in enumerate(configs)]
    contexts = list(contexts)
    check_cohort(configs, contexts)
    data = data if data is not None else contexts[0].data
    if not isinstance(data, RegressionData):
        raise ValueError(f"a cohort of mlp trials needs a RegressionData set, but got {type(data).__name__}")
    cohort = Cohort(configs, contexts, data)
    runs = [MemberRun(config, context) for config, context in zip(configs, contexts)]
    active = list(range(len(runs)))
    for epoch in range(1, contexts[0].max_epochs + 1):
        if not active:
            break
        cohort.model.train()
        train_loss = cohort.train_epoch()
        cohort.model.eval()
        params = cohort.optimizer.evaluation_point()
        valid = cohort.evaluate("valid", params)
        improved, diverged = [], []
        for k in active:
            better, stopped = _record_epoch(runs[k], epoch, train_loss[k], prefixed("valid", valid[k]))
            (improved if better else diverged if stopped else []).append(k)
        cohort.keep_best(improved, params)
        cohort.optimizer.freeze(diverged)
        active = [k for k in active if k not in diverged]
    _finish(cohort, runs, artifact_dirs)
    return runs
