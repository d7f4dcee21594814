"""Cohorts of sequence-reduction trials (`ri`, `osp`, `sf`, `rim`; Tables 10-12): K trials as one stacked network.

`run_cohort(configs, sessions, make, make_cohort, method)` is the `train_cohort` of those methods
(`seqrep.method`'s cohort contract). The members' RNNs are stacked on a leading member axis
(`trainables.nn.stacked_rnn`) and trained by one climin rmsprop over all of them
(`trainables.nn.stacked_rmsprop`). Each member keeps what makes its solo run
(`trainables.kit.reduction_run.run`) its own, so every member session gets the reports and the
finish its solo `train(config, session)` would make, up to the float rounding of batched kernels:

- its network, drawn from its seed exactly as the solo run draws it (`reduction_run.build_problem`,
  then stacked), with its own transfer, pooling, init_std and spectral radius;
- its minibatch order and stochastic pooling's draws, from its own generators (seed + 1, seed + 2);
- its rmsprop step rate, decay and momentum and its L2 penalty weight, as (K, 1) columns;
- its per-epoch judgement: the logistic regression of `trainables.kit.judges` on its own
  embeddings, at climin's resting point (the members' regressions are fitted together, each to the
  numbers it gets alone: `judges.logreg_cv_errors`); its best state, plateau
  mark, `valid_initial_error` / `valid_improved` (`trainables.kit.improvement`), test error at the
  best state, test embeddings (for the report's t-SNE map) and model file;
- divergence: a member whose training loss or validation error is not finite is finished
  `diverged` at that epoch (its parameters frozen) while the others go on.

Checkpoints: each member's checkpoint is its solo run's (`trainables.kit.training.Progress`'s
layout: its slices of the stacked weights as a `PooledRNN` state dict, its rmsprop state as
`RmsProp.state_dict()`, the order generator, best state, score and epoch, plateau mark and the
initial validation error) plus `sampler`, the stochastic pooling generator's state (which the solo
checkpoint lacks, so a resumed solo run with stochastic pooling redraws). Members handed over with
checkpoints resume from them; members at different epochs are trained as separate cohorts, one
after another.

What a cohort cannot stack runs solo, one member after another, before the stacked members:
members with `transfer: lstm` (their weights have another shape) and, for the trained methods,
cohorts whose `optimizer` is not rmsprop (`optimizer` is one of their COHORT_KEYS, so a cohort has
one optimiser; Tables 10 and 12 use rmsprop throughout). `normalise` is a cohort key of every method:
the members share one padded copy of the data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from seqrep.method import ClassificationData, SeqrepError, Session, is_finite
from trainables.kit.improvement import ImprovementSession
from trainables.kit.judges import logreg_cv_errors, logreg_errors
from trainables.kit.reduction_config import Problem, ReductionConfig
from trainables.kit.reduction_data import load_classification, normalise
from trainables.kit.reduction_figures import figure_inputs, one_sequence_embedding
from trainables.kit.reduction_run import Make, batch_size, build_optimizer, build_problem, run, seeded_generators
from trainables.kit.training import Progress, prefixed
from trainables.kit.tsne import save_embeddings
from trainables.nn.sequences import pad
from trainables.nn.stacked_rmsprop import StackedRmsProp
from trainables.nn.stacked_rnn import StackedPooledRNN, pool_members

SHARED_CONTEXT = ("dataset", "max_epochs", "metric", "mode", "device")
EMBED_CHUNK = 256  # sequences per evaluation batch, as `reduction_run.Trial.embed`
EMBED_SEQUENCES = 1024  # member sequences per evaluation pass (`ReductionCohort.embed`)


@dataclasses.dataclass
class CohortProblem:
    """A method's stacked objective: `embed(x, mask, training, generators)` -> (K, B, E) and, for
    trained methods, `loss(x, mask, generators)` -> (K,) (x (T, K, B, D), mask (T, K, B))."""

    embed: Callable[..., torch.Tensor]
    loss: Callable[[torch.Tensor, torch.Tensor, Sequence[torch.Generator]], torch.Tensor] | None = None


MakeCohort = Callable[[StackedPooledRNN, list[ReductionConfig]], CohortProblem]


def pooled_embedding(model: StackedPooledRNN, configs: Sequence[ReductionConfig], outputs: bool) -> Callable[..., torch.Tensor]:
    """The members' embeddings rho_k(h_1:T) (RI, OSP) or rho_k(y_1:T) (`outputs`: SF, RIM)."""
    poolings = [c.pooling for c in configs]

    def embed(x, mask, training, generators):
        h = model.hidden(x)
        return pool_members(model.outputs(h) if outputs else h, mask, poolings, training, generators)

    return embed


class _MemberModel:
    """Member k of the stack as `Progress.checkpoint` / `Progress.restore` see a model."""

    def __init__(self, model: StackedPooledRNN, k: int):
        self.model, self.k = model, k

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.member_state(self.k)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.model.load_member_state(self.k, dict(state))


class _MemberOptimizer:
    """Member k's optimiser as `Progress` sees it: its part of the stacked rmsprop, or (a method
    that trains nothing) the state dict of the optimiser its solo run builds and never steps."""

    def __init__(self, cohort: "ReductionCohort", k: int):
        self.cohort, self.k = cohort, k

    def state_dict(self) -> dict[str, Any]:
        if self.cohort.optimizer is None:
            return self.cohort.fixed_optimizer_states[self.k]
        return self.cohort.optimizer.member_state(self.k)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.cohort.optimizer is None:
            self.cohort.fixed_optimizer_states[self.k] = dict(state)
        else:
            self.cohort.optimizer.load_member_state(self.k, state)


class ReductionCohort:
    """The stacked network, optimiser, generators and progress of members that start at one epoch."""

    def __init__(self, configs: list[ReductionConfig], sessions: list[ImprovementSession],
                 states: list[dict[str, Any] | None], problems: list[Problem], data: ClassificationData,
                 make_cohort: MakeCohort, method: str):
        self.configs, self.sessions, self.data, self.method = configs, sessions, data, method
        self.make_cohort = make_cohort
        self.context = sessions[0].context
        self.device = torch.device(self.context.device)
        train_x, test_x = normalise(data, configs[0].normalise)
        self.seqs = [torch.tensor(s) for s in train_x]  # copies: arrays from Ray's object store are read-only
        self.test_seqs = [torch.tensor(s) for s in test_x]
        self.y_all = np.asarray(data.y_train)
        x, mask = pad(self.seqs)
        self.train_x, self.train_mask = x.to(self.device), mask.to(self.device)
        self.lengths = torch.tensor([len(s) for s in self.seqs])
        self.model = StackedPooledRNN.of([p.model for p in problems]).to(self.device)
        self.problems = problems  # each member's solo net: Figure 11's Jacobian at its best state
        self.problem = make_cohort(self.model, configs)
        self.trains = problems[0].trains
        self.optimizer = (StackedRmsProp(list(self.model.params), [c.step_rate for c in configs],
                                         [c.decay for c in configs], [c.momentum for c in configs])
                          if self.trains else None)
        self.fixed_optimizer_states = [build_optimizer(c, p.model.parameters()).state_dict()
                                       for c, p in zip(configs, problems)] if not self.trains else []
        pairs = [seeded_generators(s.context.seed) for s in sessions]
        self.order, self.samplers = [p[0] for p in pairs], [p[1] for p in pairs]
        self.penalty = torch.tensor([c.penalty for c in configs], dtype=self.train_x.dtype, device=self.device)
        self.penalised = self.penalty > 0
        self.status = ["completed"] * len(configs)
        self.progress = [self._restore(k, state) for k, state in enumerate(states)]

    def _restore(self, k: int, state: dict[str, Any] | None) -> Progress:
        if state is None:
            return Progress()
        progress = Progress.restore(state, _MemberModel(self.model, k), _MemberOptimizer(self, k), self.order[k])
        if state.get("sampler") is not None:
            self.samplers[k].set_state(state["sampler"])
        return progress

    def checkpoint(self, k: int, epoch: int) -> dict[str, Any]:
        state = self.progress[k].checkpoint(epoch, _MemberModel(self.model, k), _MemberOptimizer(self, k),
                                            self.order[k])
        state["sampler"] = self.samplers[k].get_state()
        return state

    def train_epoch(self) -> list[float]:
        """One pass over the training set, each member in its own minibatch order; mean losses (K,)."""
        if not self.trains:
            return [0.0] * self.model.size
        n = len(self.seqs)
        size = batch_size(self.configs[0], n)
        order = torch.stack([torch.randperm(n, generator=g) for g in self.order])  # (K, n), as `sequences.batches`
        on_device = order.to(self.device)
        total = torch.zeros(self.model.size, dtype=torch.float64, device=self.device)
        any_penalised = bool(self.penalised.any())
        for start in range(0, n, size):
            t_max = int(self.lengths[order[:, start:start + size]].max())
            columns = on_device[:, start:start + size]
            x, mask = self.train_x[:t_max, columns], self.train_mask[:t_max, columns]  # (T, K, B, D), (T, K, B)
            loss = self.problem.loss(x, mask, self.samplers)
            if any_penalised:
                loss = torch.where(self.penalised, loss + self.penalty * self.model.penalty(), loss)
            for p in self.model.params:
                p.grad = None
            loss.sum().backward()  # members share no weight: each gets the gradient of its own loss
            self.optimizer.step()
            total += loss.detach().double() * columns.shape[1]
        return (total / n).tolist()

    def chunks(self, sequences: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`sequences` padded EMBED_CHUNK at a time, on the device."""
        return [tuple(t.to(self.device) for t in pad(sequences[start:start + EMBED_CHUNK]))
                for start in range(0, len(sequences), EMBED_CHUNK)]

    @torch.no_grad()
    def embed(self, model: StackedPooledRNN, configs: list[ReductionConfig], chunks: list[tuple[torch.Tensor, torch.Tensor]],
              problem: CohortProblem | None = None) -> torch.Tensor:
        """Every member's deterministic embeddings of the padded `chunks`, (K, N, E) float64 on the CPU.

        On the CPU at most EMBED_SEQUENCES member sequences go through the stack at once (a chunk
        of the test set for every member at once would not stay in the caches; a GPU takes them all
        at once); each member's numbers are the same either way. `problem`: the cohort's own
        problem of `model`, used for a single pass."""
        width = max(1, EMBED_SEQUENCES // max(x.shape[1] for x, _ in chunks))
        if width >= model.size or chunks[0][0].device.type != "cpu":
            passes = [problem or self.make_cohort(model, configs)]
        else:
            passes = [self.make_cohort(model.select(range(start, min(start + width, model.size))),
                                       configs[start:start + width]) for start in range(0, model.size, width)]
        return torch.cat([torch.cat([p.embed(x, mask, False, None).double().cpu() for x, mask in chunks], dim=1)
                          for p in passes])

    def valid_errors(self, e_train: torch.Tensor, members: list[int]) -> dict[int, float]:
        """Each member's `valid_error` from its row of `e_train` (the members' regressions fitted
        together, the numbers of one at a time); NaN for a member whose embeddings are not finite."""
        finite = [k for k in members if bool(torch.isfinite(e_train[k]).all())]  # else an exploding net: diverged
        errors = dict(zip(finite, logreg_cv_errors([e_train[k].numpy() for k in finite], self.y_all) if finite else []))
        return {k: errors.get(k, math.nan) for k in members}

    def evaluation_point(self):
        return self.optimizer.evaluation_point() if self.optimizer is not None else contextlib.nullcontext()

    def record(self, epoch: int, active: list[int], losses: list[float], valid: dict[int, dict[str, float]],
               candidates: dict[int, dict[str, torch.Tensor]]) -> list[int]:
        """`training.fit`'s bookkeeping and report for each active member; returns those that diverged."""
        diverged = []
        for k in active:
            ctx, progress = self.sessions[k].context, self.progress[k]
            if ctx.metric not in valid[k]:
                raise KeyError(f"selection metric {ctx.metric!r} not among the validation metrics {sorted(valid[k])}")
            score, metrics = valid[k][ctx.metric], {"epoch": epoch, "train_loss": losses[k], **valid[k]}
            if not (is_finite(losses[k]) and is_finite(score)):
                self.sessions[k].report(metrics)
                self.status[k] = "diverged"
                diverged.append(k)
                continue
            if k in candidates:
                progress.best, progress.best_epoch = score, epoch
                progress.best_state, progress.best_valid = candidates[k], valid[k]
            progress.track_plateau(score, epoch, ctx, 0.0)
            self.sessions[k].report(metrics, checkpoint=self.checkpoint(k, epoch))
        return diverged

    def run(self, fresh: bool) -> None:
        """Initial validation error (`fresh`), the epochs, and every member's finish."""
        train_chunks = self.chunks(self.seqs)
        if fresh:
            e_train = self.embed(self.model, self.configs, train_chunks, self.problem)
            for k, error in self.valid_errors(e_train, list(range(self.model.size))).items():
                self.sessions[k].initial = error
        active = list(range(self.model.size))
        ctx = self.context
        for epoch in range(self.progress[0].start, ctx.max_epochs + 1):
            losses = self.train_epoch()
            with torch.no_grad(), self.evaluation_point():
                e_train = self.embed(self.model, self.configs, train_chunks, self.problem)
                valid = {k: prefixed("valid", {"error": error}) for k, error in self.valid_errors(e_train, active).items()}
                candidates = {k: self.model.member_state(k) for k in active
                              if is_finite(valid[k].get(ctx.metric))
                              and ctx.better(valid[k][ctx.metric], self.progress[k].best)}
            diverged = self.record(epoch, active, losses, valid, candidates)
            if diverged:
                if self.optimizer is not None:
                    self.optimizer.freeze(diverged)
                self.finish(diverged)
                active = [k for k in active if k not in diverged]
            if not active:
                return
        self.finish(active)

    def finish(self, members: list[int]) -> None:
        """Test error at each member's best state, its test embeddings, model file and status (`training.finish`)."""
        best = [k for k in members if self.progress[k].best_state is not None]
        if best:
            stack = self.model.select(best, [self.progress[k].best_state for k in best])
            configs = [self.configs[k] for k in best]
            e_train = self.embed(stack, configs, self.chunks(self.seqs))
            e_test = self.embed(stack, configs, self.chunks(self.test_seqs))
        y_test = np.asarray(self.data.y_test)
        finite = [i for i in range(len(best)) if bool(torch.isfinite(e_train[i]).all())]
        tests = dict(zip(finite, logreg_errors([e_train[i].numpy() for i in finite], self.y_all,
                                               [e_test[i].numpy() for i in finite], y_test)))
        for k in members:
            progress, session = self.progress[k], self.sessions[k]
            final: dict[str, float] = {"best_epoch": progress.best_epoch}
            if progress.best_state is not None:
                i = best.index(k)
                test = tests.get(i, math.nan)
                final.update(progress.best_valid)
                final.update(prefixed("test", {"error": test}))
                title = f"{self.method} on {self.data.name}: t-SNE of the test embeddings"
                save_embeddings(session.artifact_dir, e_test[i].numpy(), y_test, self.data.classes, title,
                                session.context.seed, self.figure_inputs(k, e_test[i].numpy()))
            model = ({"model": progress.best_state, "config": self.configs[k].to_dict()}
                     if progress.best_state is not None else None)
            session.finish(final, model, self.status[k])


    def figure_inputs(self, k: int, e_test: np.ndarray) -> dict[str, np.ndarray]:
        """Figures 11 and 12's arrays for member k, its solo net at its best state (as a solo run's)."""
        problem = self.problems[k]
        problem.model.load_state_dict(self.progress[k].best_state)
        problem.model.eval()
        return figure_inputs(one_sequence_embedding(problem.embed, self.device), e_test, self.test_seqs,
                             self.data.test, self.sessions[k].context.seed)


def _check(configs: Sequence[ReductionConfig], sessions: Sequence[Session]) -> None:
    if not configs or len(configs) != len(sessions):
        raise SeqrepError(f"a cohort needs one session per config and at least one member, but got "
                          f"{len(configs)} configs and {len(sessions)} sessions")
    for key in SHARED_CONTEXT:
        values = [getattr(s.context, key) for s in sessions]
        if any(v != values[0] for v in values):
            raise SeqrepError(f"cohort members must share the context's {key!r}, but got {values}")


def run_cohort(configs: Sequence[ReductionConfig], sessions: Sequence[Session], make: Make, make_cohort: MakeCohort,
               method: str) -> None:
    """Train the members (`configs[k]` reports to `sessions[k]`) as the module docstring says."""
    configs, sessions = list(configs), list(sessions)
    _check(configs, sessions)
    data = load_classification(sessions[0])
    device = torch.device(sessions[0].context.device)  # each member drawn where its solo run draws it
    problems = [build_problem(c, s.context.seed, data, make, device) for c, s in zip(configs, sessions)]
    if any(p.judge != "logreg" or p.supervised for p in problems):
        raise SeqrepError(f"{method}: cohorts are built for the unsupervised methods judged by a logistic regression")
    solo = [k for k, (c, p) in enumerate(zip(configs, problems))
            if c.transfer == "lstm" or (p.trains and c.optimizer != "rmsprop")]
    for k in solo:  # what cannot be stacked: one solo run after another
        run(configs[k], sessions[k], make, method)
    stacked = [k for k in range(len(configs)) if k not in solo]
    wrapped = {k: ImprovementSession(sessions[k], exempt=not problems[k].trains) for k in stacked}
    states = {k: wrapped[k].restore() for k in stacked}
    epochs = sorted({int(states[k]["epoch"]) if states[k] is not None else 0 for k in stacked})
    for epoch in epochs:
        group = [k for k in stacked if (int(states[k]["epoch"]) if states[k] is not None else 0) == epoch]
        group.sort(key=lambda k: (configs[k].transfer, configs[k].pooling))  # one run per transfer and pooling
        cohort = ReductionCohort([configs[k] for k in group], [wrapped[k] for k in group],
                                 [states[k] for k in group], [problems[k] for k in group], data, make_cohort, method)
        cohort.run(fresh=epoch == 0)
