"""seqrep.metric_rows: the bulk metric path stores exactly what MlflowClient.log_batch stores."""

from __future__ import annotations

import math

import pytest

mlflow = pytest.importorskip("mlflow")

from mlflow.entities import Metric  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from seqrep import metric_rows  # noqa: E402

KEYS = ("train_loss", "valid_nll", "valid_mse")


@pytest.fixture
def client(tmp_path):
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _metrics(n_epochs: int = 1200, timestamp: int = 1_700_000_000_000) -> list[Metric]:
    out = [Metric(k, 0.25 * step + i, timestamp, step) for step in range(1, n_epochs + 1) for i, k in enumerate(KEYS)]
    out[0] = Metric("train_loss", math.nan, timestamp, 1)
    out[1] = Metric("valid_nll", math.inf, timestamp, 1)
    out[2] = Metric("valid_mse", -math.inf, timestamp, 1)
    out.append(Metric("valid_nll", 3.0, timestamp + 5, 7))  # one key twice at one step, other timestamp
    out.append(out[4])  # an identical entry: stored once
    out.append(Metric("valid_mse", 2, timestamp, n_epochs + 1))  # an int value
    return out


def _stored(c: MlflowClient, run_id: str):
    histories = {k: sorted((m.step, m.timestamp, repr(m.value)) for m in c.get_metric_history(run_id, k)) for k in KEYS}
    latest = {k: repr(v) for k, v in c.get_run(run_id).data.metrics.items()}
    return histories, latest


def _two_runs(c: MlflowClient):
    experiment = c.create_experiment("e")
    return c.create_run(experiment).info.run_id, c.create_run(experiment).info.run_id


def test_bulk_rows_equal_log_batch_rows(client, monkeypatch):
    metrics = _metrics()
    bulk_run, batch_run = _two_runs(client)
    for i in range(0, len(metrics), 1000):
        client.log_batch(batch_run, metrics=metrics[i:i + 1000])
    calls = []
    monkeypatch.setattr(client, "log_batch", lambda *a, **k: calls.append(a))
    metric_rows.log_metrics(client, bulk_run, metrics)
    assert calls == []  # the sqlite store took the bulk path
    histories, latest = _stored(client, bulk_run)
    assert (histories, latest) == _stored(client, batch_run)
    assert sum(len(h) for h in histories.values()) == len(metrics) - 1  # the identical entry once
    assert histories["train_loss"][0] == (1, 1_700_000_000_000, "nan")
    assert histories["valid_nll"][0] == (1, 1_700_000_000_000, "1.7976931348623157e+308")
    assert latest == {"train_loss": "300.0", "valid_nll": "301.0", "valid_mse": "2.0"}


def test_latest_values_compare_with_what_is_stored(client):
    run, _ = _two_runs(client)
    metric_rows.log_metrics(client, run, [Metric("valid_nll", 5.0, 10, 3)])
    metric_rows.log_metrics(client, run, [Metric("valid_nll", 9.0, 20, 2), Metric("train_loss", 1.0, 20, 1)])
    assert client.get_run(run).data.metrics == {"valid_nll": 5.0, "train_loss": 1.0}
    metric_rows.log_metrics(client, run, [Metric("valid_nll", 4.0, 30, 3)])  # same step, later
    assert client.get_run(run).data.metrics["valid_nll"] == 4.0


def test_rows_stored_already_go_through_log_batch(client, monkeypatch):
    run, _ = _two_runs(client)
    metrics = _metrics(50)
    metric_rows.log_metrics(client, run, metrics)
    batches = []
    original = client.log_batch
    monkeypatch.setattr(client, "log_batch", lambda run_id, metrics: batches.append(len(metrics)) or original(run_id, metrics=metrics))
    metric_rows.log_metrics(client, run, metrics)  # a resumed trial re-sending the same epochs
    assert batches == [len(metrics)]
    assert sum(len(h) for h in _stored(client, run)[0].values()) == len(metrics) - 1


def test_a_deleted_run_is_refused_as_log_batch_refuses_it(client):
    run, other = _two_runs(client)
    client.delete_run(run)
    client.delete_run(other)
    with pytest.raises(MlflowException) as bulk:
        metric_rows.log_metrics(client, run, _metrics(2))
    with pytest.raises(MlflowException) as batch:
        client.log_batch(other, metrics=_metrics(2))
    assert str(bulk.value).replace(run, "RUN") == str(batch.value).replace(other, "RUN")


def test_a_bad_value_gets_log_batchs_error(client):
    run, _ = _two_runs(client)
    with pytest.raises(MlflowException, match=r"Invalid value \"x\" for parameter 'metrics\[1\]\.value' supplied"):
        metric_rows.log_metrics(client, run, [Metric("valid_nll", 1.0, 1, 1), Metric("valid_nll", "x", 1, 2)])
    assert client.get_metric_history(run, "valid_nll") == []  # nothing of the call was stored


def test_other_stores_get_log_batch_in_thousands():
    class Remote:  # a client whose store is not SQL (a tracking server)
        def __init__(self):
            self.calls = []

        def log_batch(self, run_id, metrics):
            self.calls.append((run_id, len(metrics)))

    remote = Remote()
    metric_rows.log_metrics(remote, "r", _metrics(800))
    assert remote.calls == [("r", 1000), ("r", 1000), ("r", 403)]
    metric_rows.log_metrics(remote, "r", [])
    assert len(remote.calls) == 3
