"""Crafting MLflow stores for the report's tests with MlflowClient alone, the way the app writes them
(artifacts beside a SQLite database, params through store.encode_param), without importing the app."""

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from rnngrad import store

PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch call


def create_experiment(uri: str, name: str) -> str:
    """The id of experiment `name` in the store at `uri`, created if missing."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name, artifact_location=store.artifact_location(uri))


def fake_run(client, exp_id, name, params, *, metrics=None, tags=None, status="FINISHED", parent=None):
    """A run with these params (encoded as the app encodes them), tag config_hash = name, metric histories
    ({key: [(step, value), ...]}), tags, and a parent run; ended with `status` unless RUNNING. Returns its id."""
    run_tags = {"config_hash": name, **({"mlflow.parentRunId": parent} if parent else {})}
    run_id = client.create_run(exp_id, run_name=name, tags=run_tags).info.run_id
    items = [Param(k, store.encode_param(v)) for k, v in params.items()]
    for start in range(0, len(items), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + PARAMS_PER_BATCH])
    points = [Metric(k, v, 0, step) for k, history in (metrics or {}).items() for step, v in history]
    if points:
        client.log_batch(run_id, metrics=points)
    if tags:
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id
