"""What the `rnn` method's solo run and its cohorts share: the loss, the evaluation, the model as
a trial draws it, and one solo training epoch.

- `frame_nll`: each frame's Bernoulli NLL summed over notes, zero on padding;
- `evaluate_nll`: a split's per-frame NLL (total / frames) and the mean per-sequence per-frame NLL,
  in minibatches of similar length (`trainables.rnn`'s metrics);
- `build_model`: the trial's `FastDropoutRNN`, initialised from its seed exactly as `trainables.rnn`
  draws it (so a cohort member starts where its solo run starts);
- `train_epoch`: one pass over the training split in the order the `order` generator draws.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from trainables.kit.sequence_models import climin_optimizer
from trainables.nn.optim import renormalise_gradients
from trainables.nn.recurrent import FastDropoutRNN
from trainables.nn.sequences import batches, pad, shift, to_device

POOL = 4  # minibatches bucketed by length within pools of POOL * batch_size sequences


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
        x, mask = to_device(x, device), to_device(mask, device)
        nll = frame_nll(model(shift(x)), x, mask)  # (T, B)
        seq_total, seq_frames = nll.sum(0), mask.sum(0)
        total += float(seq_total.sum())
        frames += int(seq_frames.sum())
        per_sequence += (seq_total / seq_frames).tolist()
    return {"nll": total / frames, "nll_seq": sum(per_sequence) / len(per_sequence)}


def build_model(config: Any, n_features: int, seed: int) -> FastDropoutRNN:
    """The trial's net, drawn from `seed` (the global seed, then its own initialisation generator)."""
    return initialise_model(new_model(config, n_features, seed), config, seed)


def new_model(config: Any, n_features: int, seed: int) -> FastDropoutRNN:
    """The trial's net as built after the global seed is set, before `initialise_model`."""
    torch.manual_seed(seed)
    return FastDropoutRNN(n_features, config.hidden_units, n_features, config.cell,
                          config.p_drop_input, config.p_drop_hidden, config.p_drop_output, config.fd_final_layer)


def initialise_model(model: FastDropoutRNN, config: Any, seed: int) -> FastDropoutRNN:
    """The thesis's initialisation (draws, ν, ρ) from the trial's own generator, seeded with `seed`:
    nothing global, so that a cohort's members can be initialised in parallel threads."""
    model.initialise(config.sigma2, config.sigma2_in, config.rho, config.b_h, config.b_y,
                     generator=torch.Generator().manual_seed(seed), nu=config.nu)
    return model


def order_generator(seed: int) -> torch.Generator:
    """The generator a trial draws its minibatch orders from."""
    return torch.Generator().manual_seed(seed + 1)


def train_epoch(model: FastDropoutRNN, optimizer, train: list[torch.Tensor], config: Any, order: torch.Generator,
                device: torch.device) -> float:
    """One pass over `train` in minibatches drawn from `order`; the mean training NLL per frame."""
    total, frames = torch.zeros((), device=device), 0
    for batch in batches(train, config.batch_size, order, pool=POOL):
        x, mask = to_device(batch.x, device), to_device(batch.mask, device)
        nll = frame_nll(model(shift(x)), x, mask).sum()
        n = int(batch.mask.sum())
        optimizer.zero_grad(set_to_none=True)
        (nll / n).backward()
        renormalise_gradients(model.parameters(), config.grad_norm)
        optimizer.step()
        total += nll.detach()
        frames += n
    return float(total) / frames
