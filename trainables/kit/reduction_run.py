"""Sequence reduction (thesis Chapter 3): an RNN scans a sequence, pooling collapses it, an objective
shapes the embedding. The trial runner shared by the methods `nca`, `ce`, `ri`, `osp`, `rim`, `sf`.

Framework (Section 3.3, Eq. 27): hidden states h_t = sigma(W_in x_t + W_rec h_t-1 + b_h) (or LSTM
cells), outputs y_t = sigma_out(W_out h_t + b_out), embedding e = rho(y_1:T) (or rho(h_1:T) for RI
and OSP, which pool the hidden states, Sections 3.5.1.1-2), and the objective L({e_i}) is
minimised by gradient descent through rho and the network (`trainables.nn.pooled_rnn`,
`trainables.nn.pooling`; here rho is the pooling function, not the `rho` spectral radius of the
FD-RNN methods' configs, which sequence reduction calls `spectral_radius`).

Padding: the thesis prefixed sequences with zeros to equal length (Section 3.5.2); here batches
are padded at the end with a mask (`trainables.nn.sequences`), and pooling ignores the padding, so
every sequence is reduced over its own steps only (a unidirectional RNN's outputs at real steps
do not depend on the padding after them).

Optimisers: `rmsprop` is climin's rmsprop with Nesterov momentum (`trainables.nn.optim.RmsProp`;
Section 3.5.2: step 1e-4, momentum 0.9, decay 0.9); `rprop` and `lbfgs` are `torch.optim.Rprop`
(its defaults) and `torch.optim.LBFGS` (strong Wolfe line search, `lbfgs_iterations` inner
iterations per minibatch, the closure re-evaluating the minibatch) of Section 3.4.3.1.

Evaluation (scikit-learn, `trainables.kit.judges`): unsupervised embeddings are judged by a logistic
regression (features standardised, C = 1: the thesis does not give its settings) fitted on the
training embeddings; `valid_error` is its stratified k-fold (k = min(5, smallest class)) error
on the training set, `test_error` the error on the test set of the regression fitted on all
training embeddings (Section 3.5.2). Supervised methods hold out a seeded stratified
`valid_fraction` of the training set (the same split in every trial, `trainables.kit.reduction_data`).

The thesis keeps "only those trials where the classification performance improved during
optimisation" (Section 3.5.2): the validation error of the untrained network is measured before
the first epoch, and the final result carries `valid_initial_error` and `valid_improved` (1.0 when
the best validation error is below it, else 0.0; `trainables.kit.improvement`); the methods declare
it as `row_requires`, so rebuilt tables skip trials with 0.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import torch

from seqrep.method import ClassificationData, Session
from trainables.kit.improvement import ImprovementSession
from trainables.kit.judges import logreg_cv_error, logreg_error, one_nn_error
from trainables.kit.reduction_config import Problem, ReductionConfig
from trainables.kit.reduction_data import load_classification, normalise, split_indices
from trainables.kit.reduction_figures import figure_inputs, one_sequence_embedding
from trainables.kit.training import fit
from trainables.kit.tsne import save_embeddings
from trainables.nn.neighbourhood import nca_probabilities
from trainables.nn.optim import RmsProp
from trainables.nn.pooled_rnn import l2
from trainables.nn.sequences import batches, pad

Make = Callable[[ClassificationData, ReductionConfig], Problem]


def build_optimizer(config: ReductionConfig, parameters):
    parameters = list(parameters)
    if config.optimizer == "rmsprop":
        return RmsProp(parameters, step_rate=config.step_rate, decay=config.decay, momentum=config.momentum)
    if config.optimizer == "rprop":
        return torch.optim.Rprop(parameters, lr=config.step_rate)
    return torch.optim.LBFGS(parameters, lr=1.0, max_iter=config.lbfgs_iterations, line_search_fn="strong_wolfe")


@dataclasses.dataclass
class Trial:
    """One trial's network, data and split, as `run` prepares them."""

    config: ReductionConfig
    problem: Problem
    data: ClassificationData
    device: torch.device
    seqs: list[torch.Tensor]  # the (normalised) training sequences
    test_seqs: list[torch.Tensor]
    y_all: np.ndarray  # the training labels
    fit_idx: np.ndarray  # training rows fitted on
    valid_idx: np.ndarray  # training rows validated on (supervised methods)

    @property
    def model(self):
        return self.problem.model

    @property
    def fit_seqs(self) -> list[torch.Tensor]:
        return [self.seqs[i] for i in self.fit_idx]

    @torch.no_grad()
    def embed(self, sequences) -> torch.Tensor:
        """The (deterministic) embeddings of `sequences`, float64 on the CPU, 256 at a time."""
        out = []
        for start in range(0, len(sequences), 256):
            x, mask = pad(sequences[start:start + 256])
            out.append(self.problem.embed(x.to(self.device), mask.to(self.device), False, None).double().cpu())
        return torch.cat(out)


def build_problem(config: ReductionConfig, seed: int, data: ClassificationData, make: Make,
                  device: torch.device) -> Problem:
    """The trial's network, drawn from its seed: `torch.manual_seed(seed)`, `make`, then every
    weight from a generator seeded with `seed` (`PooledRNN.initialise`)."""
    torch.manual_seed(seed)
    problem = make(data, config)
    problem.model.to(device)
    problem.model.initialise(config.init_std, config.spectral_radius, torch.Generator().manual_seed(seed))
    return problem


def seeded_generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """The trial's minibatch order (seed + 1) and stochastic pooling's draws (seed + 2)."""
    return torch.Generator().manual_seed(seed + 1), torch.Generator().manual_seed(seed + 2)


def batch_size(config: ReductionConfig, n: int) -> int:
    """Minibatches of `batch_fraction` of the n fitted rows, rounded up."""
    return max(1, math.ceil(config.batch_fraction * n))


def prepare(config: ReductionConfig, session: Session, make: Make) -> Trial:
    """Data, normalisation, network (seeded and initialised) and the validation split."""
    ctx = session.context
    device = torch.device(ctx.device)
    data = load_classification(session)
    train_x, test_x = normalise(data, config.normalise)
    problem = build_problem(config, ctx.seed, data, make, device)
    fit_idx, valid_idx = split_indices(data, problem.supervised, config.valid_fraction)
    seqs = [torch.tensor(s) for s in train_x]  # copies: arrays from Ray's object store are read-only
    test_seqs = [torch.tensor(s) for s in test_x]
    return Trial(config, problem, data, device, seqs, test_seqs, np.asarray(data.y_train), fit_idx, valid_idx)


def make_train_epoch(trial: Trial, optimizer, order: torch.Generator, sampler: torch.Generator) -> Callable[[], float]:
    """One pass over the fitted rows in minibatches of `batch_fraction` of them (Rprop, rmsprop or
    L-BFGS, whose closure re-evaluates the minibatch), the L2 penalty added; returns the mean loss."""
    config, problem, model = trial.config, trial.problem, trial.model
    fit_seqs, y_fit = trial.fit_seqs, torch.as_tensor(trial.y_all[trial.fit_idx])
    size = batch_size(config, len(fit_seqs))

    def batch_loss(x, mask, y):
        loss = problem.loss(x, mask, y, sampler)
        if config.penalty > 0:
            loss = loss + config.penalty * l2(model)
        return loss

    def train_epoch() -> float:
        if not problem.trains:
            return 0.0
        total, count = 0.0, 0
        for batch in batches(fit_seqs, size, order):
            x, mask, y = batch.x.to(trial.device), batch.mask.to(trial.device), y_fit[batch.index].to(trial.device)

            def closure():
                optimizer.zero_grad(set_to_none=True)
                loss = batch_loss(x, mask, y)
                loss.backward()
                return loss

            if isinstance(optimizer, torch.optim.LBFGS):
                loss = optimizer.step(closure)
            else:
                loss = closure()
                optimizer.step()
            total += float(loss.detach()) * len(batch.index)
            count += len(batch.index)
        return total / count

    return train_epoch


def neighbour_metrics(trial: Trial, e_train: torch.Tensor, split: str) -> dict[str, float]:
    """The softmax's error, or 1-NN error and NCA probability with the fitted rows (validation) or
    the whole training set (test) as database."""
    y_all, data = trial.y_all, trial.data
    e_fit, y_f = e_train[trial.fit_idx], y_all[trial.fit_idx]
    if split == "valid":
        e, y = e_train[trial.valid_idx], y_all[trial.valid_idx]
    else:
        e, y = torch.nan_to_num(trial.embed(trial.test_seqs), nan=0.0), np.asarray(data.y_test)
        e_fit, y_f = e_train, y_all  # the whole training set is the database at test time
    if trial.problem.judge == "softmax":
        return {"error": float((e.argmax(1).numpy() != y).mean())}
    error = one_nn_error(e_fit.numpy(), y_f, e.numpy(), y)
    prob = float(nca_probabilities(e, torch.tensor(y), e_fit, torch.tensor(y_f)).mean())  # copies: y may be read-only
    # nca_error = 1 - nca_prob: Table 11's NCA cell (0.021 = 1 - 0.979, the mean NCA probability of
    # Section 3.4.3), which is not a 1-NN error
    metrics = {"error": error, "nca_prob": prob, "nca_error": 1.0 - prob}
    if split == "test":
        metrics["1nn_accuracy"] = 1.0 - error
    return metrics


def make_evaluate(trial: Trial) -> Callable[[str], dict[str, float]]:
    """`evaluate(split)` for `fit`, by the problem's judge (`trainables.kit.judges`)."""

    def evaluate(split: str) -> dict[str, float]:
        e_train = trial.embed(trial.seqs)
        if not bool(torch.isfinite(e_train).all()):  # an exploding net: `fit` ends the trial diverged
            return {"error": math.nan}
        if trial.problem.judge == "logreg":
            if split == "valid":
                return {"error": logreg_cv_error(e_train.numpy(), trial.y_all)}
            return {"error": logreg_error(e_train.numpy(), trial.y_all, trial.embed(trial.test_seqs).numpy(),
                                          trial.data.y_test)}
        return neighbour_metrics(trial, e_train, split)

    return evaluate


def run(config: ReductionConfig, session: Session, make: Make, method: str) -> None:
    """Train one sequence-reduction trial: data, split, network, `fit`, evaluation, test embeddings."""
    ctx = session.context
    trial = prepare(config, session, make)
    optimizer = build_optimizer(config, trial.model.parameters())
    order, sampler = seeded_generators(ctx.seed)
    train_epoch = make_train_epoch(trial, optimizer, order, sampler)
    evaluate = make_evaluate(trial)

    wrapped = ImprovementSession(session, exempt=not trial.problem.trains)
    if wrapped.restore() is None:
        trial.model.eval()
        with torch.no_grad():
            wrapped.initial = evaluate("valid")["error"]

    def on_finish() -> None:
        if trial.problem.judge == "nca":
            y_fit = torch.as_tensor(trial.y_all[trial.fit_idx])
            wrapped.extra["train_nca_prob"] = float(nca_probabilities(trial.embed(trial.fit_seqs), y_fit).mean())
        data = trial.data
        e_test = trial.embed(trial.test_seqs).numpy()
        kept = figure_inputs(one_sequence_embedding(trial.problem.embed, trial.device), e_test, trial.test_seqs,
                             data.test, ctx.seed)
        save_embeddings(session.artifact_dir, e_test, np.asarray(data.y_test), data.classes,
                        f"{method} on {data.name}: t-SNE of the test embeddings", ctx.seed, kept)

    fit(wrapped, model=trial.model, optimizer=optimizer, train_epoch=train_epoch, evaluate=evaluate,
        config=config.to_dict(), generator=order, on_finish=on_finish,
        evaluation_point=getattr(optimizer, "climin_point", None))
