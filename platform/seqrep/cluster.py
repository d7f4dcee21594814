"""The Ray cluster a study runs on: start or join it, and check that it can hold one trial.

A trial that no node can hold would wait forever, so `check_resources` fails at once, naming
what the cluster has; live nodes count, and so do the node types an autoscaler can still start.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

from seqrep.errors import SeqrepError
from seqrep.logfilters import filtering


class _TokenNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


@contextlib.contextmanager
def _quiet_token_notice():
    """A new local cluster turns token authentication on and says so, a notice that the user of
    the embedded cluster cannot act on: drop that one message (token auth stays on; joining a
    cluster with --address still needs RAY_AUTH_MODE=token and the token)."""
    with filtering("ray._private.authentication.authentication_token_setup", _TokenNotice()):
        yield


def connect(address: str | None) -> bool:
    """Join `address` or start a local Ray; returns whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True,
                  logging_config=ray.LoggingConfig(log_level="WARNING"))
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            with _quiet_token_notice():
                ray.init(**kwargs)
    except Exception as err:  # ConnectionError, RuntimeError, auth errors
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise SeqrepError(f"cannot start or join {where}: {type(err).__name__}: {err}") from None
    return True


@contextlib.contextmanager
def joined(address: str | None):
    """Ray for this block: joined or started here (and then shut down at its end), or the session
    this process already has."""
    started = connect(address)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


AUTOSCALER_CONFIG = Path("~/ray_bootstrap_config.yaml")  # where `ray up` leaves the config on the head


def _autoscaled_node_types() -> dict[str, dict[str, float]]:
    """Resources of the node types the autoscaler may start (only on a `ray up` head node)."""
    path = AUTOSCALER_CONFIG.expanduser()
    if not path.exists():
        return {}
    import yaml

    config = yaml.safe_load(path.read_text()) or {}
    return {name: dict(spec.get("resources") or {}) for name, spec in (config.get("available_node_types") or {}).items()
            if (spec.get("max_workers") or 0) > 0 or name == config.get("head_node_type")}


def check_resources(cpus: float, gpus: float) -> None:
    """A trial that no node can hold would wait forever: fail now, naming what is there.

    Live nodes count, and so do the node types an autoscaler can still start.
    """
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if any(n["Resources"].get("CPU", 0) >= cpus and n["Resources"].get("GPU", 0) >= gpus for n in nodes):
        return
    node_types = _autoscaled_node_types()
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in node_types.values()):
        return
    have = ", ".join(f"{n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPU, "
                     f"{n['Resources'].get('GPU', 0):g} GPU" for n in nodes)
    scalable = "; node types the autoscaler can start: " + ", ".join(
        f"{name}: {r.get('CPU', 0):g} CPU, {r.get('GPU', 0):g} GPU" for name, r in node_types.items()) \
        if node_types else ""
    raise SeqrepError(f"no node of the Ray cluster can hold one trial ({cpus:g} CPU, {gpus:g} GPU); "
                      f"nodes: {have or 'none'}{scalable}; lower --cpus-per-trial/--gpus-per-trial or add nodes")


@contextlib.contextmanager
def local(num_cpus: int | None = None, num_gpus: int | None = None):
    """A local Ray cluster of the given (possibly logical) size for this block (benchmarks, tests)."""
    import ray

    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()


def available_gpus() -> float:
    """GPUs free right now in the cluster this process is connected to."""
    import ray

    return float(ray.available_resources().get("GPU", 0.0))


def slots(cpus: float, gpus: float, max_concurrent: int | None) -> int:
    """How many trials of this size the live cluster runs at once (at least 1; --max-concurrent caps it)."""
    import ray

    total = ray.cluster_resources()
    fits = [total.get("CPU", 0.0) / cpus if cpus else math.inf, total.get("GPU", 0.0) / gpus if gpus else math.inf]
    count = max(1, int(min(fits))) if min(fits) != math.inf else 1
    return min(count, max_concurrent) if max_concurrent else count
