"""NCA's stochastic nearest-neighbour classifier (Goldberger et al. 2004; thesis Section 3.4.1).

`nca_probabilities` is both NCA's training objective (the expected number of correctly classified
points, `trainables.nca`) and a metric of any embedding (`nca_prob`, Table 9).
"""

from __future__ import annotations

import torch


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
