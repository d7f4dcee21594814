"""A linear-Gaussian regressor, y ~ N(w·x + b, s²), fitted by Adam on the Gaussian NLL.

The whole contract of a seqrep method: a `Config` dataclass (unknown keys and wrong types are
errors, as for the built-in methods), and `train(config, session)`, which reads the data and the
budget from `session.context`, reports every epoch's metrics (`valid_*`, and `epoch`) and ends with
`session.finish` and the test metrics at the best validation epoch. From seqrep it imports only
`seqrep.method`.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from seqrep.method import MethodConfig, Session


@dataclasses.dataclass(frozen=True)
class Config(MethodConfig):
    step_rate: float = 0.05
    batch_size: int = 10

    def __post_init__(self):
        self.check([("step_rate", "step_rate > 0", self.step_rate > 0),
                    ("batch_size", "batch_size >= 1", self.batch_size >= 1)])


def train(config: Config, session: Session) -> None:
    ctx = session.context
    torch.manual_seed(ctx.seed)
    x, y = (torch.as_tensor(a) for a in ctx.data.split("train"))
    model = torch.nn.Linear(x.shape[1], y.shape[1])
    log_var = torch.nn.Parameter(torch.zeros(y.shape[1]))
    optimizer = torch.optim.Adam([*model.parameters(), log_var], lr=config.step_rate)

    def nll(split: str) -> dict[str, float]:
        xs, ys = (torch.as_tensor(a) for a in ctx.data.split(split))
        with torch.no_grad():
            mean, var = model(xs), log_var.exp()
            point = 0.5 * (torch.log(2 * math.pi * var) + (ys - mean) ** 2 / var).sum(-1)
        return {f"{split}_nll": float(point.mean()), f"{split}_mse": float(((ys - mean) ** 2).mean())}

    best, best_epoch, best_state = None, 0, None
    for epoch in range(1, ctx.max_epochs + 1):
        for batch in torch.randperm(len(x)).split(config.batch_size):
            mean, var = model(x[batch]), log_var.exp()
            loss = 0.5 * (torch.log(var) + (y[batch] - mean) ** 2 / var).sum(-1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        valid = nll("valid")
        if ctx.better(valid[ctx.metric], best):
            best, best_epoch, best_valid = valid[ctx.metric], epoch, valid
            best_state = {k: v.clone() for k, v in model.state_dict().items()} | {"log_var": log_var.detach().clone()}
        session.report({"epoch": epoch, "train_loss": float(loss), **valid})
    model.load_state_dict({k: v for k, v in best_state.items() if k != "log_var"})
    log_var.data.copy_(best_state["log_var"])
    session.finish({"best_epoch": best_epoch, **best_valid, **nll("test")}, {"model": best_state}, "completed")
