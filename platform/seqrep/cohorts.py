"""Cohorts: the configs of a random search grouped into same-shape sets, each set one Ray trial.

A method that can train several trials as one vectorised model (`seqrep.method`: `COHORT_KEYS`,
`train_cohort`) trains them in cohorts when the study is a seeded random search with the FIFO
scheduler and `--cohort-size` is above 1. The driver then draws the search's configs itself,
exactly as Ray Tune's `BasicVariantGenerator` with the study's seed would (`searchers.draw`: the same
`generate_variants` on the same seeded generator, so a study with cohorts and one without run the
same configs), groups them by the values of the method's `COHORT_KEYS`, or by its own
`cohort_group(config)` where it defines one (`group`: in the order they were drawn, each group cut
into near-equal cohorts of at most `--cohort-size` members), writes the grouping to
`<study>/cohorts.json` and runs one Ray trial per cohort (`{"cohort": i}`, a grid). NN and DN
group small nets of different depths and widths together and pad them to one shape
(`trainables.kit.padded_networks`).

Each member is still a trial to everything a user sees: its own id (`<cohort trial id>-m<k>`), its
own seed (`trial_seed` of its config, as a solo trial), Parquet row and MLflow child run with its
per-epoch metrics, best epoch, model and status. Optuna's TPE and ASHA keep one config per trial:
TPE proposes each config from the results before it, and ASHA stops trials one by one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

from seqrep import studydir

DEFAULT_SIZE = 16
MEMBER_SEPARATOR = "-m"


def group(configs: Sequence[Mapping[str, Any]], keys: Sequence[str], size: int,
          group_of: Callable[[Mapping[str, Any]], Hashable] | None = None) -> list[list[int]]:
    """Indices of `configs` in cohorts: same values of `keys` (or the same `group_of(config)`, the
    method's own grouping where it has one), at most `size` members each, the members of one group
    spread evenly over ceil(n / size) cohorts; ordered by first member."""
    if size < 1:
        raise ValueError(f"a cohort holds at least one member, got size={size}")
    group_of = group_of or (lambda config: tuple(repr(config.get(k)) for k in keys))
    groups: dict[Hashable, list[int]] = {}
    for index, config in enumerate(configs):
        groups.setdefault(group_of(config), []).append(index)
    cohorts = []
    for members in groups.values():
        parts = math.ceil(len(members) / size)
        cohorts += [members[_bounds(len(members), parts, j)] for j in range(parts)]
    return sorted(cohorts, key=lambda c: c[0])


def spread(cohorts: list[list[int]], slots: int) -> list[list[int]]:
    """Split the largest cohorts in two while fewer cohorts than `slots` (trials the cluster runs at
    once) would leave slots idle and the halves keep two members or more: sixteen same-shape configs
    on two slots are two cohorts of eight, not one of sixteen beside an idle slot."""
    cohorts = [list(c) for c in cohorts]
    while len(cohorts) < slots:
        largest = max(cohorts, key=len)
        if len(largest) < 4:
            break
        cohorts.remove(largest)
        cohorts += [largest[_bounds(len(largest), 2, 0)], largest[_bounds(len(largest), 2, 1)]]
    return sorted(cohorts, key=lambda c: c[0])


def _bounds(n: int, parts: int, j: int) -> slice:
    """The j-th of `parts` contiguous, near-equal slices of n items."""
    return slice(j * n // parts, (j + 1) * n // parts)


def member_id(trial_id: str, k: int) -> str:
    """The trial id of member k of the cohort trial `trial_id`."""
    return f"{trial_id}{MEMBER_SEPARATOR}{k}"


def member_folder(k: int) -> str:
    """Member k's subfolder of its cohort's checkpoint (its state, or its model and plots)."""
    return f"m{k}"


def kept_folder(study_dir: Path, trial_id: str, cohort: str | None = None) -> Path | None:
    """The kept checkpoint folder of a trial (the model and files of a finished one): its last
    `checkpoint_*` under the study's Ray folder; a cohort member's is its subfolder of the
    cohort's. None where there is none."""
    trial_dir = Path(study_dir) / studydir.RAY_DIR / (cohort or trial_id)
    folders = sorted(trial_dir.glob("checkpoint_*"))
    if not folders:
        return None
    if not cohort:
        return folders[-1]
    k = trial_id.removeprefix(f"{cohort}{MEMBER_SEPARATOR}")
    folder = folders[-1] / member_folder(int(k)) if k.isdigit() else None
    return folder if folder is not None and folder.is_dir() else None


def write(directory: Path, cohorts: list[list[dict[str, Any]]], keys: Sequence[str], size: int,
          draws: list[list[int]] | None = None) -> None:
    """`<study>/cohorts.json`: the member configs of every cohort, the keys they share, the size
    limit, and `draws`, each member's place in the search's draws (a table's tie-break)."""
    content = {"keys": list(keys), "size": size, "cohorts": cohorts}
    if draws is not None:
        content["draws"] = draws
    studydir.write_json(Path(directory) / studydir.COHORTS_FILE, content)


def read(directory: Path) -> list[list[dict[str, Any]]] | None:
    """The member configs of every cohort of a study, or None when it ran no cohorts."""
    path = Path(directory) / studydir.COHORTS_FILE
    return studydir.read_json(path)["cohorts"] if path.exists() else None


def read_draws(directory: Path) -> list[list[int]] | None:
    """Each cohort member's place in the search's draws, or None (no cohorts, or recorded before
    seqrep kept them)."""
    path = Path(directory) / studydir.COHORTS_FILE
    return studydir.read_json(path).get("draws") if path.exists() else None


def describe(cohorts: Sequence[Sequence[Mapping[str, Any]]], keys: Sequence[str],
             padded: Sequence[str] = ()) -> str:
    """One line for the study log: how the configs were grouped, and how many cohorts hold members
    that differ in the keys a method pads to one shape (`padded`, its `COHORT_PADDED`)."""
    sizes = sorted((len(c) for c in cohorts), reverse=True)
    total = sum(sizes)
    shown = ", ".join(str(s) for s in sizes[:12]) + (", ..." if len(sizes) > 12 else "")
    line = f"{total} configs in {len(cohorts)} cohort(s) of sizes {shown} (members share {', '.join(keys) or 'nothing'}"
    mixed = sum(any(len({repr(m.get(k)) for m in c}) > 1 for k in padded) for c in cohorts)
    if mixed:
        line += f"; {mixed} cohort(s) pad members of different {' and '.join(padded)} to one shape"
    return line + ")"
