"""sRNN, LSTM, FD-RNN and FD-LSTM on the piano-roll benchmarks (thesis Section 2.5.2, Tables 1-6).

Each piece x_1:T of 88-d binary frames is modelled by the cascade p(x_1:T) = prod_t p(x_t | x_1:t-1)
(Section 2.5.2.1): the network reads x_0 = 0, x_1, ..., x_T-1 and its Bernoulli outputs at step t
give p(x_t | x_1:t-1). The loss is the Bernoulli negative log-likelihood summed over the 88 notes,
averaged over the frames of a minibatch; padding never counts.

Metrics per split: `nll`, the total negative log-likelihood over all frames divided by the number
of frames, in nats (the convention of Tables 3, 6 and 13), and `nll_seq`, the mean over sequences
of each sequence's per-frame NLL. Selection uses `valid_nll`; `test_*` are measured at the best
validation epoch.

The model is `trainables.nn.recurrent.FastDropoutRNN` (FD when any dropout rate is above 0). The
optimisers are climin's rmsprop and Adadelta with Nesterov momentum (`trainables.nn.optim`), as
the thesis authors used them; validation looks at climin's parameter point, not the look-ahead
point PyTorch's formulation keeps between steps.

Table 1's ν is sparse initialisation (`nu`: every unit keeps nu of its incoming weights in W_in,
W_rec and W_out, `trainables.nn.initialise`; "no" is `nu: null`), applied before ρ. Gradient
renormalisation (Section 1.3's τ, Pascanu et al. 2012: gradients projected to norm `grad_norm`
when longer) is a non-thesis option, off (`null`) in the thesis's spaces.

The LSTM of Tables 4 and 6 is the thesis's cell (`cell: lstm`, Section 1.3.4 and breze's FD-LSTM,
`trainables.nn.lstm_cells`): unsquashed cell input, output sigma(s_t) sigma(o_t). torch's LSTM
(`cell: torch-lstm`, tanh cell input and tanh(c_t) sigma(o_t), cuDNN on a GPU) is a non-thesis
option.

Choices the thesis leaves open: the minibatch size (`batch_size` sequences, bucketed by length),
the epoch budget (the space's `max_epochs`; the thesis trained "until convergence" and selected on
validation), and the rmsprop offset (climin's fixed 1e-8).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F

from seqrep.method import MethodConfig, Session
from trainables.kit.sequence_models import climin_optimizer, fd_rnn_rules, sequence_data, tensor_splits
from trainables.kit.training import fit
from trainables.nn.optim import renormalise_gradients
from trainables.nn.recurrent import FastDropoutRNN
from trainables.nn.sequences import batches, pad, shift


@dataclasses.dataclass(frozen=True)
class Config(MethodConfig):
    # tanh: sRNN / FD-RNN; lstm: the thesis's LSTM / FD-LSTM; torch-lstm: torch's cell (not the thesis's)
    cell: Literal["tanh", "lstm", "torch-lstm"] = "tanh"
    hidden_units: int = 200  # Table 1: 200, 400, 600; Table 4: 200...600 (tanh) / 100...300 (LSTM)
    p_drop_input: float = 0.0  # p("dropout input")
    p_drop_hidden: float = 0.0  # p("dropout hidden to hidden")
    p_drop_output: float = 0.0  # p("dropout hidden to output")
    fd_final_layer: bool = True  # "use fast dropout for final layer"
    optimizer: Literal["rmsprop", "adadelta"] = "rmsprop"
    step_rate: float = 1e-3
    momentum: float = 0.0  # Nesterov momentum
    decay: float = 0.9
    offset: float = 1e-4  # Adadelta's offset (climin's default); rmsprop uses climin's fixed 1e-8
    sigma2: float = 0.01  # initial variance of W_rec and W_out
    sigma2_in: float = 0.01  # initial variance of W_in
    b_h: float = 0.0
    b_y: float = -0.8
    rho: float | None = 1.1  # spectral radius of W_rec (tanh only); null: as drawn
    nu: int | None = None  # Table 1's ν: incoming weights kept per unit at initialisation; null: dense
    grad_norm: float | None = None  # not the thesis's: renormalise gradients above this norm; null: never
    batch_size: int = 16  # sequences per minibatch

    def __post_init__(self):
        self.check([("hidden_units", "hidden_units >= 1", self.hidden_units >= 1), *fd_rnn_rules(self)])


def frame_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Bernoulli NLL of each frame, summed over notes, zero on padding: (T, B)."""
    per_note = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return per_note.sum(-1) * mask


@torch.no_grad()
def evaluate_nll(model: FastDropoutRNN, sequences, device: torch.device, batch_size: int = 32) -> dict[str, float]:
    """Per-frame NLL over a whole split (total / frames) and the mean of per-sequence per-frame NLLs."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # similar lengths: less padding
    total, frames, per_sequence = 0.0, 0, []
    for start in range(0, len(order), batch_size):
        x, mask = pad([sequences[i] for i in order[start:start + batch_size]])
        x, mask = x.to(device), mask.to(device)
        nll = frame_nll(model(shift(x)), x, mask)  # (T, B)
        seq_total, seq_frames = nll.sum(0), mask.sum(0)
        total += float(seq_total.sum())
        frames += int(seq_frames.sum())
        per_sequence += (seq_total / seq_frames).tolist()
    return {"nll": total / frames, "nll_seq": sum(per_sequence) / len(per_sequence)}


def train(config: Config, session: Session) -> None:
    ctx = session.context
    device = torch.device(ctx.device)
    data = sequence_data(session, "rnn", "jsb, nottingham, piano-midi, musedata")
    splits = tensor_splits(data)

    torch.manual_seed(ctx.seed)
    init = torch.Generator().manual_seed(ctx.seed)
    model = FastDropoutRNN(data.n_features, config.hidden_units, data.n_features, config.cell,
                           config.p_drop_input, config.p_drop_hidden, config.p_drop_output, config.fd_final_layer)
    model.initialise(config.sigma2, config.sigma2_in, config.rho, config.b_h, config.b_y, generator=init, nu=config.nu)
    model.to(device)
    optimizer = climin_optimizer(config, model.parameters())
    order = torch.Generator().manual_seed(ctx.seed + 1)

    def train_epoch() -> float:
        total, frames = torch.zeros((), device=device), 0
        for batch in batches(splits["train"], config.batch_size, order, pool=4):
            x, mask = batch.x.to(device), batch.mask.to(device)
            nll = frame_nll(model(shift(x)), x, mask).sum()
            n = int(batch.mask.sum())
            optimizer.zero_grad(set_to_none=True)
            (nll / n).backward()
            renormalise_gradients(model.parameters(), config.grad_norm)
            optimizer.step()
            total += nll.detach()
            frames += n
        return float(total) / frames

    def evaluate(split: str) -> dict[str, float]:
        return evaluate_nll(model, splits[split], device)

    fit(session, model=model, optimizer=optimizer, train_epoch=train_epoch, evaluate=evaluate, config=config.to_dict(),
        generator=order, evaluation_point=optimizer.climin_point)
