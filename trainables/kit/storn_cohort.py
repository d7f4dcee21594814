"""Cohorts of the `storn` method: K trials trained as one stacked model, each reported as its solo run.

`train_cohort(configs, sessions, new_model=, hooks=)` is `trainables.storn.train_cohort` (the cohort
contract of `seqrep.method`). The members must agree on `COHORT_KEYS`, which fix every tensor's
shape and the forward pass's form: the likelihood, the recognition net's direction and variance,
the cell, the numbers of latent, generating and recognition units, the optimiser's state layout
and the minibatch size. Everything else may differ per member and does in Tables 13 and 14's
searches: the generating net's dropout rates, the recognition net's initial ones, Adadelta's step
rate, decay, momentum and offset, sigma^2, sigma^2_in, rho, nu, b_y, the gradient renormalisation,
the importance sampler's K, and the seed. The contexts share data set, epoch budget, selection and
device (`kit.cohort.check_sessions`).

Training (`storn_stack.StackedStorn`): each member is initialised as its solo run (`new_model`:
its seed, nu, rho), draws its minibatch orders from its own generator (seed + 1, as
`sequence_vae.fit_sgvb`) and its z samples from its own (`sequence_vae.noise_generator`, made as its
solo run makes it), and takes Adadelta's (or rmsprop's) step with its
own hyperparameters (`nn.stacked_climin.StackedClimin`, climin's look-ahead point).

Evaluation is the solo run's, member by member: each member keeps its solo `Storn` module, into
which its parameters at climin's resting point are copied before `sequence_vae.make_evaluate`
measures the validation split (K = `valid_is_samples` draws, common random numbers from seed + 2;
sigma searched on Gaussian data, then `mse`); the test split is measured there at the best state,
and on Gaussian data the figures are drawn (`hooks`). A validation pass is a forward pass over
a third as many frames as an epoch trains on: evaluating member by member took 2.4 s of a
16-member cohort's 34 s JSB epoch on one CPU thread, and keeps every number of the evaluation the
solo run's.

Every epoch each member reports what its solo run reports, with a checkpoint in its solo run's
layout (`training.Progress.checkpoint`: its `Storn` state dict, log sigma included, its climin
optimiser's state dict and its minibatch generator), built only if its session reads it
(`kit.cohort.Deferred`). A member whose training loss or selection metric is not finite reports
that epoch without a checkpoint, is finished `diverged` (test metrics at its best state) and
leaves the stack. On a restart all members resume from checkpoints of one epoch, their minibatch
order and z generators included (`sequence_vae.Generators`), so a resumed cohort goes on as an
uninterrupted one.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import torch

from seqrep.method import Session
from trainables.kit import sequence_vae
from trainables.kit.cohort import Deferred, Member, Stateful, check_sessions, run_epochs
from trainables.kit.sequence_models import optimizer_defaults, sequence_trial
from trainables.kit.storn_stack import StackedStorn, lay_out
from trainables.kit.training import Progress, clone_state
from trainables.nn.sequences import batches
from trainables.nn.stacked_climin import StackedClimin

COHORT_KEYS = ("likelihood", "bidirectional", "recognition_variance", "cell", "latent_units", "hidden_units",
               "recognition_units", "optimizer", "batch_size")
POOL = 4  # `sequence_vae.make_train_epoch`'s length buckets


class StornCohort:
    """The members' stacked model and optimiser, their solo modules for evaluation, their generators."""

    def __init__(self, configs: Sequence, sessions: Sequence[Session], new_model: Callable, hooks: Callable):
        config = configs[0]
        data, self.splits, self.device = sequence_trial(sessions[0], config.likelihood, "storn")
        self.batch_size, self.n_latent = config.batch_size, config.latent_units
        self.shells, self.noise = [], []
        for c, session in zip(configs, sessions):
            self.shells.append(new_model(c, data.n_features, session.context.seed).to(self.device))
            self.noise.append(sequence_vae.noise_generator(self.device, session.context.seed))
        self.stack = StackedStorn(self.shells, configs, self.device)
        self.climin = StackedClimin(self.stack.params, config.optimizer, [c.step_rate for c in configs],
                                    [c.decay for c in configs], [c.momentum for c in configs],
                                    [1e-8 if c.optimizer == "rmsprop" else c.offset for c in configs],
                                    [c.grad_norm for c in configs])
        self.orders = [torch.Generator().manual_seed(s.context.seed + 1) for s in sessions]
        self.evaluators, self.on_finish = [], []
        for shell, c, session in zip(self.shells, configs, sessions):
            extra, on_finish = hooks(shell, c, self.splits, self.device, session)
            self.evaluators.append(sequence_vae.make_evaluate(
                shell, self.splits, self.device, session.context.seed + 2,
                {"valid": c.valid_is_samples, "test": c.is_samples}, extra))
            self.on_finish.append(on_finish)
        self.defaults = [optimizer_defaults(c) for c in configs]
        self.ids = list(range(len(configs)))

    def train_epoch(self) -> list[float]:
        """One pass over the training split, each member in its own order; its mean loss per frame."""
        epochs = [list(batches(self.splits["train"], self.batch_size, self.orders[k], pool=POOL)) for k in self.ids]
        noise = [self.noise[k] for k in self.ids]
        total = torch.zeros(len(self.ids), device=self.device)
        frames = torch.zeros(len(self.ids), device=self.device)
        for step in zip(*epochs):
            members = lay_out(step, noise, self.n_latent, self.device)
            counts = torch.stack([mask.sum() for _, mask, _ in members])
            for p in self.stack.params:
                p.grad = None
            losses = self.stack.losses(members)
            (losses / counts).sum().backward()  # each member: the gradient of its own loss per frame
            self.climin.step()
            total += losses.detach()
            frames += counts
        return (total / frames).tolist()

    @torch.no_grad()
    def validate(self) -> list[dict[str, float]]:
        """Each member's validation metrics at climin's resting point, its solo module left there."""
        point = self.climin.evaluation_point()
        metrics = []
        for pos, k in enumerate(self.ids):
            self._load_shell(k, self.stack.member_state(pos, point))
            metrics.append(self.evaluators[k]("valid"))
        return metrics

    @torch.no_grad()
    def _load_shell(self, k: int, params: dict[str, torch.Tensor]) -> None:
        shell = self.shells[k]
        for name, p in shell.named_parameters():
            p.copy_(params[name])
        shell.eval()

    def model_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's `Storn` state dict at the stack's current parameters (climin's look-ahead point)."""
        state = self.stack.member_state(self.ids.index(k))
        return {**state, "log_sigma": self.shells[k].log_sigma.detach().clone()}

    @torch.no_grad()
    def load_model(self, k: int, state: dict[str, torch.Tensor]) -> None:
        self.stack.load_member(self.ids.index(k), state)
        self.shells[k].log_sigma.copy_(state["log_sigma"])

    def optimizer_state(self, k: int) -> dict[str, Any]:
        """Member k's optimiser state in its solo climin optimiser's `state_dict` layout."""
        return self.climin.member_state_dict(self.ids.index(k), self.defaults[k])

    def load_optimizer(self, k: int, state: dict[str, Any]) -> None:
        self.climin.load_member_state_dict(self.ids.index(k), state)

    def checkpoint(self, member: Member, epoch: int) -> Deferred:
        k = member.index
        build = lambda: member.progress.checkpoint(  # noqa: E731
            epoch, Stateful(self.model_state(k)), Stateful(self.optimizer_state(k)), self.generators(k))
        return Deferred(build)

    def restore(self, member: Member, state: dict[str, Any]) -> Progress:
        k = member.index
        return Progress.restore(state, Stateful(load=functools.partial(self.load_model, k)),
                                Stateful(load=functools.partial(self.load_optimizer, k)), self.generators(k))

    def generators(self, k: int) -> sequence_vae.Generators:
        """Member k's minibatch-order and z generators as its solo run checkpoints them."""
        return sequence_vae.Generators(self.orders[k], self.noise[k])

    def finish(self, members: Sequence[Member], status: str) -> None:
        """`training.finish` for each member: test metrics and figures at its best state, then `finish`."""
        for member in members:
            k, best = member.index, member.progress.best_state
            test = None
            if best is not None:
                self.shells[k].load_state_dict(best)
                self.shells[k].eval()
                with torch.no_grad():
                    test = self.evaluators[k]("test")
                self.on_finish[k]()
            model = {"model": best, "config": member.config.to_dict()} if best is not None else None
            member.finish(test, model, status)

    def drop(self, members: Sequence[Member]) -> None:
        """Members leave the stack (diverged: their parameters stay as they were)."""
        gone = {m.index for m in members}
        keep = [pos for pos, k in enumerate(self.ids) if k not in gone]
        self.ids = [self.ids[pos] for pos in keep]
        if keep:
            self.stack.select(keep)
            self.climin.select(keep, self.stack.params)


def _epoch(cohort: StornCohort, members: list[Member], epoch: int) -> list[Deferred]:
    """Train, validate, keep the best, report; finish and drop the members that diverged."""
    losses = cohort.train_epoch()
    valid = cohort.validate()
    diverged, going = [], []
    for pos, member in enumerate(members):
        k = member.index
        outcome = member.record(epoch, losses[pos], valid[pos], lambda k=k: clone_state(cohort.shells[k]))
        (diverged if outcome == "diverged" else going).append(member)
    reported = [cohort.checkpoint(member, epoch) for member in going]
    for member, checkpoint in zip(going, reported):
        member.session.report(member.latest, checkpoint=checkpoint)
    for member in diverged:
        member.session.report(member.latest)
    if diverged:
        cohort.finish(diverged, "diverged")
        cohort.drop(diverged)
    return reported


def train_cohort(configs: Sequence, sessions: Sequence[Session], *, new_model: Callable, hooks: Callable) -> None:
    """Train the members to the shared epoch budget (module docstring). `new_model(config,
    n_features, seed)`: a member's `Storn` as its solo run builds it; `hooks(model, config, splits,
    device, session)`: its solo run's `extra` and `on_finish`."""
    check_sessions(configs, sessions)
    members = [Member(k, config, session) for k, (config, session) in enumerate(zip(configs, sessions))]
    cohort = StornCohort(configs, sessions, new_model, hooks)
    run_epochs(members, cohort.restore, lambda active, epoch: _epoch(cohort, active, epoch), cohort.finish)
