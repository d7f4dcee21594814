"""Sequence reduction (thesis Chapter 3): an RNN scans a sequence, pooling collapses it, an objective
shapes the embedding. Shared by the methods `nca`, `ce`, `ri`, `osp`, `rim` and `sf`.

Framework (Section 3.3, Eq. 27): hidden states h_t = sigma(W_in x_t + W_rec h_t-1 + b_h) (or LSTM
cells), outputs y_t = sigma_out(W_out h_t + b_out), embedding e = rho(y_1:T) (or rho(h_1:T) for RI
and OSP, which pool the hidden states, Sections 3.5.1.1-2), and the objective L({e_i}) is
minimised by gradient descent through rho and the network. The output transfer sigma_out is the
hidden one ("post-synaptic output", Figure 7), the identity for LSTM and for CE's logits.

Transfers (Sections 3.4.3.1, 3.5.2): tanh, softsign, rectifier, softplus, sigmoid, or LSTM cells
(`torch.nn.LSTM`). Initialisation (Sections 1.3.3, 3.5.1.1): every weight ~ N(0, init_std^2),
biases 0, and W_rec rescaled to spectral radius `spectral_radius` (not for LSTM).

Padding: the thesis prefixed sequences with zeros to equal length (Section 3.5.2); here batches
are padded at the end with a mask (`seqrep.data.sequences`), and pooling ignores the padding, so
every sequence is reduced over its own steps only (a unidirectional RNN's outputs at real steps
do not depend on the padding after them).

Optimisers: `rmsprop` is climin's rmsprop with Nesterov momentum (`trainables.nn.optim.RmsProp`;
Section 3.5.2: step 1e-4, momentum 0.9, decay 0.9); `rprop` and `lbfgs` are `torch.optim.Rprop`
(its defaults) and `torch.optim.LBFGS` (strong Wolfe line search, `lbfgs_iterations` inner
iterations per minibatch, the closure re-evaluating the minibatch) of Section 3.4.3.1.

Evaluation (scikit-learn, `Evaluator`): unsupervised embeddings are judged by a logistic
regression (features standardised, C = 1: the thesis does not give its settings) fitted on the
training embeddings; `valid_error` is its stratified k-fold (k = min(5, smallest class)) error
on the training set, `test_error` the error on the test set of the regression fitted on all
training embeddings (Section 3.5.2). Supervised methods hold out a seeded stratified
`valid_fraction` of the training set (the same split in every trial).

The thesis keeps "only those trials where the classification performance improved during
optimisation" (Section 3.5.2): the validation error of the untrained network is measured before
the first epoch, and the final result carries `valid_initial_error` and `valid_improved` (1.0 when
the best validation error is below it, else 0.0); `seqrep.tables` skips trials with 0.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqrep.config import MethodConfig
from seqrep.data.base import ClassificationData
from seqrep.data.sequences import batches, pad
from seqrep.errors import SeqrepError
from seqrep.session import Session
from trainables.nn.optim import RmsProp
from trainables.nn.recurrent import set_spectral_radius
from trainables.nn.training import fit

Transfer = Literal["tanh", "softsign", "rectifier", "softplus", "sigmoid", "lstm"]
TRANSFERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh, "softsign": F.softsign, "rectifier": F.relu, "softplus": F.softplus,
    "sigmoid": torch.sigmoid, "identity": lambda a: a,
}
SPLIT_SEED = 0  # the validation split is the same in every trial, so trials are compared on it


@dataclasses.dataclass(frozen=True)
class ReductionConfig(MethodConfig):
    """Fields shared by every sequence-reduction method (Sections 3.4.3.1 and 3.5.2)."""

    transfer: Transfer = "tanh"
    pooling: Literal["max", "sum", "mean", "stochastic"] = "mean"
    hidden_units: int = 32  # UCR 32, TIDIGITS and Characters 64 (Section 3.5.2)
    output_units: int = 16  # the embedding's size: UCR 16, TIDIGITS and Characters 32
    batch_fraction: float = 1.0  # batch size N/8, N/4, N/2 or N: 0.125, 0.25, 0.5, 1
    init_std: float = 0.1  # weights ~ N(0, init_std^2): uniform in [0.005, 1] (Section 3.5.2)
    spectral_radius: float | None = 1.0  # W_rec rescaled to this spectral radius; null: as drawn
    optimizer: Literal["rmsprop", "rprop", "lbfgs"] = "rmsprop"
    step_rate: float = 1e-4  # rmsprop (Section 3.5.2); Rprop's initial step size
    momentum: float = 0.9  # Nesterov momentum of rmsprop
    decay: float = 0.9  # rmsprop's decay
    lbfgs_iterations: int = 20  # inner iterations of L-BFGS per minibatch
    normalise: Literal["none", "sequence", "dataset"] = "none"  # centre and whiten (Section 3.4.3.1)
    penalty: float = 0.0  # lambda of the L2 penalty on all weights but the output bias
    valid_fraction: float = 0.2  # supervised methods: held-out stratified part of the training set

    def __post_init__(self):
        rules = [
            ("hidden_units", "hidden_units >= 1", self.hidden_units >= 1),
            ("output_units", "output_units >= 1", self.output_units >= 1),
            ("batch_fraction", "0 < batch_fraction <= 1", 0 < self.batch_fraction <= 1),
            ("init_std", "init_std > 0", self.init_std > 0),
            ("spectral_radius", "spectral_radius is null or > 0", self.spectral_radius is None or self.spectral_radius > 0),
            ("step_rate", "step_rate > 0", self.step_rate > 0),
            ("momentum", "0 <= momentum < 1", 0 <= self.momentum < 1),
            ("decay", "0 <= decay < 1", 0 <= self.decay < 1),
            ("lbfgs_iterations", "lbfgs_iterations >= 1", self.lbfgs_iterations >= 1),
            ("penalty", "penalty >= 0", self.penalty >= 0),
            ("valid_fraction", "0 < valid_fraction < 1", 0 < self.valid_fraction < 1),
        ]
        self.check(rules)


class PooledRNN(nn.Module):
    """One recurrent layer and an optional output layer; `hidden`, `outputs` and `embed` (docstring)."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int | None, transfer: str, out_transfer: str | None = None):
        super().__init__()
        if transfer not in TRANSFERS and transfer != "lstm":
            raise ValueError(f"transfer must be one of {', '.join([*TRANSFERS, 'lstm'])}, got {transfer!r}")
        self.transfer = transfer
        self.out_transfer = out_transfer or ("identity" if transfer == "lstm" else transfer)
        if transfer == "lstm":
            self.lstm = nn.LSTM(n_in, n_hidden)
        else:
            self.w_in = nn.Linear(n_in, n_hidden)
            self.w_rec = nn.Parameter(torch.zeros(n_hidden, n_hidden))
        self.out = nn.Linear(n_hidden, n_out) if n_out else None

    def initialise(self, std: float, spectral_radius: float | None, generator: torch.Generator) -> None:
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "bias" in name:
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=generator) * std)
            if self.transfer != "lstm" and spectral_radius is not None:
                set_spectral_radius(self.w_rec, spectral_radius)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """h_1:T (T, B, H) for inputs x (T, B, D), h_0 = 0."""
        if self.transfer == "lstm":
            return self.lstm(x)[0]
        f = TRANSFERS[self.transfer]
        pre = self.w_in(x)  # all input projections at once
        h = torch.zeros(x.shape[1], self.w_rec.shape[0], dtype=x.dtype, device=x.device)
        out = []
        for t in range(x.shape[0]):
            h = f(pre[t] + h @ self.w_rec.T)
            out.append(h)
        return torch.stack(out)

    def outputs(self, h: torch.Tensor) -> torch.Tensor:
        return TRANSFERS[self.out_transfer](self.out(h))

    def penalised(self) -> list[torch.Tensor]:
        """The parameters the L2 penalty covers: all but the output bias (Section 3.5.1.3)."""
        return [p for name, p in self.named_parameters() if name != "out.bias"]


def l2(model: PooledRNN) -> torch.Tensor:
    return sum((p ** 2).sum() for p in model.penalised())


def normalise(data: ClassificationData, how: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Centre and whiten each sequence or the whole set (Section 3.4.3.1); returns (train, test).

    `sequence`: every sequence's features to mean 0 and standard deviation 1 over its own steps
    (a constant feature is only centred). `dataset`: PCA whitening (scikit-learn, `whiten=True`)
    fitted on all training frames and applied to both splits.
    """
    train, test = list(data.train), list(data.test)
    if how == "none":
        return train, test
    if how == "sequence":
        def z(s: np.ndarray) -> np.ndarray:
            std = s.std(0)
            return ((s - s.mean(0)) / np.where(std > 0, std, 1.0)).astype(np.float32)
        return [z(s) for s in train], [z(s) for s in test]
    if how == "dataset":
        from sklearn.decomposition import PCA

        pca = PCA(whiten=True).fit(np.concatenate(train).astype(np.float64))
        return ([pca.transform(s).astype(np.float32) for s in train],
                [pca.transform(s).astype(np.float32) for s in test])
    raise ValueError(f"normalise must be none, sequence or dataset, got {how!r}")


# --- classifiers on embeddings (scikit-learn) --------------------------------------------------

def logistic_regression():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))


def logreg_cv_error(e: np.ndarray, y: np.ndarray) -> float:
    """Stratified k-fold error of the logistic regression on (e, y), k = min(5, smallest class) >= 2.

    The fraction of training points misclassified by the regression fitted without their fold
    (`cross_val_predict`): a multiple of 1/N, so equal errors compare equal (the improved rule).
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    k = min(5, int(np.bincount(y).min()))
    if k < 2:
        raise SeqrepError(f"a stratified validation needs at least 2 training examples per class, "
                          f"but a class has {k}")
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=SPLIT_SEED)
    return float((cross_val_predict(logistic_regression(), e, y, cv=folds) != y).mean())


def logreg_error(e_train: np.ndarray, y_train: np.ndarray, e_test: np.ndarray, y_test: np.ndarray) -> float:
    model = logistic_regression().fit(e_train, y_train)
    e_test = np.nan_to_num(e_test, posinf=1e30, neginf=-1e30)  # an exploding test sequence is misjudged, not fatal
    return float((model.predict(e_test) != y_test).mean())


def one_nn_error(e_db: np.ndarray, y_db: np.ndarray, e: np.ndarray, y: np.ndarray) -> float:
    """1-nearest-neighbour error with the database (e_db, y_db) (Section 3.4.2)."""
    from sklearn.neighbors import KNeighborsClassifier

    return float((KNeighborsClassifier(n_neighbors=1).fit(e_db, y_db).predict(e) != y).mean())


def nca_probabilities(e: torch.Tensor, y: torch.Tensor, e_db: torch.Tensor | None = None,
                      y_db: torch.Tensor | None = None) -> torch.Tensor:
    """p(correct class) of NCA's stochastic classifier for every row of e (Section 3.4.1).

    p_ij = exp(-||e_i - e_j||^2) / sum_{z != i} exp(-||e_i - e_z||^2) over the database; without a
    database the rows themselves are it, with p_ii = 0 (leave one out). Returns sum_j p_ij [y_i = y_j].
    """
    own = e_db is None
    e_db, y_db = (e, y) if own else (e_db, y_db)
    logits = -torch.cdist(e, e_db).pow(2)
    if own:
        logits = logits.masked_fill(torch.eye(len(e), dtype=torch.bool, device=e.device), -torch.inf)
    log_p = torch.log_softmax(logits, dim=1)
    same = y[:, None] == y_db[None, :]
    return torch.where(same, log_p.exp(), torch.zeros((), dtype=e.dtype)).sum(1)


# --- the trial ---------------------------------------------------------------------------------

class ImprovementSession(Session):
    """Wraps the trial's session: keeps the untrained network's validation error in the checkpoint
    and adds `valid_initial_error`, `valid_improved` and `extra` metrics to the final result."""

    def __init__(self, session: Session, exempt: bool = False):
        self._inner = session
        self.context = session.context
        self.initial: float | None = None
        self.exempt = exempt
        self.extra: dict[str, float] = {}

    def report(self, metrics, checkpoint=None):
        if checkpoint is not None:
            checkpoint = {**checkpoint, "initial_valid_error": self.initial}
        self._inner.report(metrics, checkpoint)

    def finish(self, metrics, model, status):
        metrics = dict(metrics)
        metrics.update(self.extra)
        if self.initial is not None:
            metrics["valid_initial_error"] = self.initial
            best = metrics.get("valid_error")
            improved = self.exempt or (best is not None and math.isfinite(best) and best < self.initial)
            metrics["valid_improved"] = 1.0 if improved else 0.0
        self._inner.finish(metrics, model, status)

    def restore(self):
        state = self._inner.restore()
        if state is not None and state.get("initial_valid_error") is not None:
            self.initial = float(state["initial_valid_error"])
        return state

    @property
    def artifact_dir(self):
        return self._inner.artifact_dir


@dataclasses.dataclass
class Problem:
    """What a method contributes: the network, its loss on a minibatch, what it embeds and how it is judged."""

    model: PooledRNN
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]  # (x, mask, y, gen)
    embed: Callable[[torch.Tensor, torch.Tensor, bool, torch.Generator | None], torch.Tensor]  # (x, mask, training, gen)
    judge: Literal["logreg", "nca", "softmax", "none"]
    supervised: bool
    trains: bool = True


def load_classification(ctx) -> ClassificationData:
    import seqrep.data

    data = seqrep.data.load(ctx.dataset, ctx.data_dir)
    if not isinstance(data, ClassificationData):
        raise SeqrepError(f"sequence reduction needs a labelled sequence data set (ucr-<name>, characters, "
                          f"tidigits), got {ctx.dataset!r}")
    return data


def build_optimizer(config: ReductionConfig, parameters):
    parameters = list(parameters)
    if config.optimizer == "rmsprop":
        return RmsProp(parameters, step_rate=config.step_rate, decay=config.decay, momentum=config.momentum)
    if config.optimizer == "rprop":
        return torch.optim.Rprop(parameters, lr=config.step_rate)
    return torch.optim.LBFGS(parameters, lr=1.0, max_iter=config.lbfgs_iterations, line_search_fn="strong_wolfe")


def run(config: ReductionConfig, session: Session, make: Callable[[ClassificationData, ReductionConfig], Problem],
        method: str) -> None:
    """Train one sequence-reduction trial: data, split, network, `fit`, evaluation, t-SNE figure."""
    from sklearn.model_selection import train_test_split

    ctx = session.context
    device = torch.device(ctx.device)
    data = load_classification(ctx)
    train_x, test_x = normalise(data, config.normalise)
    y_all = np.asarray(data.y_train)
    torch.manual_seed(ctx.seed)
    problem = make(data, config)
    model = problem.model.to(device)
    problem.model.initialise(config.init_std, config.spectral_radius, torch.Generator().manual_seed(ctx.seed))

    if problem.supervised:
        counts = np.bincount(y_all, minlength=data.n_classes)
        if counts.min() < 2:
            raise SeqrepError(f"{data.name}: class {data.classes[int(counts.argmin())]!r} has {int(counts.min())} "
                              "training example(s); a stratified validation split needs at least 2")
        fit_idx, valid_idx = train_test_split(np.arange(len(y_all)), test_size=config.valid_fraction,
                                              stratify=y_all, random_state=SPLIT_SEED)
        fit_idx, valid_idx = np.sort(fit_idx), np.sort(valid_idx)
    else:
        fit_idx, valid_idx = np.arange(len(y_all)), np.arange(0)
    seqs = [torch.tensor(s) for s in train_x]  # copies: arrays from Ray's object store are read-only
    test_seqs = [torch.tensor(s) for s in test_x]
    fit_seqs = [seqs[i] for i in fit_idx]
    y_fit = torch.as_tensor(y_all[fit_idx])
    batch_size = max(1, math.ceil(config.batch_fraction * len(fit_seqs)))
    optimizer = build_optimizer(config, model.parameters())
    order = torch.Generator().manual_seed(ctx.seed + 1)
    sampler = torch.Generator().manual_seed(ctx.seed + 2)  # stochastic pooling's draws

    def batch_loss(x, mask, y):
        loss = problem.loss(x, mask, y, sampler)
        if config.penalty > 0:
            loss = loss + config.penalty * l2(model)
        return loss

    def train_epoch() -> float:
        if not problem.trains:
            return 0.0
        total, count = 0.0, 0
        for batch in batches(fit_seqs, batch_size, order):
            x, mask, y = batch.x.to(device), batch.mask.to(device), y_fit[batch.index].to(device)

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

    @torch.no_grad()
    def embed(sequences) -> torch.Tensor:
        out = []
        for start in range(0, len(sequences), 256):
            x, mask = pad(sequences[start:start + 256])
            out.append(problem.embed(x.to(device), mask.to(device), False, None).double().cpu())
        return torch.cat(out)

    def evaluate(split: str) -> dict[str, float]:
        e_train = embed(seqs)
        if not bool(torch.isfinite(e_train).all()):  # an exploding net: `fit` ends the trial diverged
            return {"error": math.nan}
        if problem.judge == "logreg":
            if split == "valid":
                return {"error": logreg_cv_error(e_train.numpy(), y_all)}
            return {"error": logreg_error(e_train.numpy(), y_all, embed(test_seqs).numpy(), data.y_test)}
        e_fit, y_f = e_train[fit_idx], y_all[fit_idx]
        if split == "valid":
            e, y = e_train[valid_idx], y_all[valid_idx]
        else:
            e, y = torch.nan_to_num(embed(test_seqs), nan=0.0), np.asarray(data.y_test)
            e_fit, y_f = e_train, y_all  # the whole training set is the database at test time
        if problem.judge == "softmax":
            return {"error": float((e.argmax(1).numpy() != y).mean())}
        error = one_nn_error(e_fit.numpy(), y_f, e.numpy(), y)
        prob = float(nca_probabilities(e, torch.as_tensor(y), e_fit, torch.as_tensor(y_f)).mean())
        metrics = {"error": error, "nca_prob": prob}
        if split == "test":
            metrics["1nn_accuracy"] = 1.0 - error
        return metrics

    wrapped = ImprovementSession(session, exempt=not problem.trains)
    if wrapped.restore() is None:
        model.eval()
        with torch.no_grad():
            wrapped.initial = evaluate("valid")["error"]

    def on_finish() -> None:
        if problem.judge == "nca":
            e_fit = embed(fit_seqs)
            wrapped.extra["train_nca_prob"] = float(nca_probabilities(e_fit, y_fit).mean())
        plot_tsne(session.artifact_dir / "tsne.png", embed(test_seqs).numpy(), np.asarray(data.y_test),
                  data.classes, f"{method} on {data.name}: t-SNE of the test embeddings", ctx.seed)

    fit(
        wrapped,
        model=model,
        optimizer=optimizer,
        train_epoch=train_epoch,
        evaluate=evaluate,
        config=config.to_dict(),
        generator=order,
        on_finish=on_finish,
        evaluation_point=getattr(optimizer, "climin_point", None),
    )


def plot_tsne(path, e: np.ndarray, y: np.ndarray, classes, title: str, seed: int, max_points: int = 500) -> None:
    """Figure 9: a 2-d t-SNE map (scikit-learn) of at most `max_points` embeddings, coloured by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    if len(e) > max_points:
        keep = np.sort(rng.choice(len(e), max_points, replace=False))
        e, y = e[keep], y[keep]
    if len(e) < 5 or not np.isfinite(e).all():
        return
    perplexity = float(min(30.0, (len(e) - 1) / 3))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(e)
    fig, ax = plt.subplots(figsize=(5, 5))
    for k in np.unique(y):
        ax.scatter(xy[y == k, 0], xy[y == k, 1], s=6, label=str(classes[k]))
    if len(np.unique(y)) <= 20:
        ax.legend(fontsize=6, markerscale=2, loc="best")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
