"""MLflow tracking: the store, the runs, and a training callback that logs every measurement.

The training loop does not know MLflow exists: `MlflowLogger` subscribes to it as a callback.
Metrics go out in batches (`log_batch`); the full-resolution through-time arrays go to a parquet
artifact, with a few checkpoints also logged as metrics (`grad_through_time/step_<N>`, step = t) so
they can be browsed in the MLflow UI.

The store (a SQLite file by default) and the experiment are created by `prepare_store`, which only
code that runs once calls (a single run, or the sweep's start before any job is launched): several
processes creating a fresh SQLite store or the same experiment at once race inside MLflow.
Where the store is and what it may be is `rnngrad.store`'s business.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow.entities import LifecycleStage, Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from rnngrad import config as config_mod
from rnngrad.store import StoreError, artifact_location, check_store, encode_param, redact, sqlite_path
from rnngrad.training import Callback, Result

ENTITIES_PER_BATCH = 1000  # MLflow's limit for one log_batch call: metrics + params + tags
PARAMS_PER_BATCH = 100  # and at most 100 params or tags
METRICS_PER_BATCH = ENTITIES_PER_BATCH - PARAMS_PER_BATCH  # room for the tags that ride along
HEATMAP = "figures/grad_heatmap.png"
REASON_CHARS = 300  # of a server's error, at most this much is shown


def prepare_store(uri: str, experiment: str) -> str:
    """Create the store (if new) and the experiment (if missing); return the experiment id.

    Call from one process only, before any job starts. Raises StoreError for a store that cannot work,
    an experiment deleted in it (MLflow refuses its runs), and a server that fails to answer.
    """
    check_store(uri)
    client = MlflowClient(uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return client.create_experiment(experiment, artifact_location=artifact_location(uri))
    except MlflowException as err:
        if sqlite_path(uri) is not None:
            raise
        raise StoreError(server_failure(uri, err)) from None
    if found.lifecycle_stage == LifecycleStage.DELETED:  # MLflow would refuse its runs, after the checks
        raise StoreError(
            f"tracking.experiment={experiment!r} is deleted in {redact(uri)} (experiment id {found.experiment_id}): "
            f"restore it (MLFLOW_TRACKING_URI=<the store> mlflow experiments restore --experiment-id "
            f"{found.experiment_id}) or choose another tracking.experiment; nothing was created")
    return found.experiment_id


def server_failure(uri: str, err: Exception) -> str:
    """A short message for a tracking server that failed a request: the server (credentials redacted), the
    client's time bounds, the first line of MLflow's error (not a page of the server's HTML)."""
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if len(reason) > REASON_CHARS:
        reason = reason[:REASON_CHARS] + "..."
    return (f"tracking server {redact(uri)} failed to answer (timeout {os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT')} s, "
            f"{os.environ.get('MLFLOW_HTTP_REQUEST_MAX_RETRIES')} retries: MLFLOW_HTTP_REQUEST_TIMEOUT, "
            f"MLFLOW_HTTP_REQUEST_MAX_RETRIES): {redact(reason)}")


def find_finished(client: MlflowClient, exp_id: str, config_hash: str) -> str | None:
    """The id of a FINISHED run with this config_hash, if any (used to resume a sweep)."""
    runs = client.search_runs(
        [exp_id], f"tags.config_hash = '{config_hash}' and attributes.status = 'FINISHED'",
        run_view_type=ViewType.ACTIVE_ONLY, max_results=1,
    )
    return runs[0].info.run_id if runs else None


def process_tags() -> dict[str, str]:
    """Who runs this: lets a later sweep tell a run whose process died from one still running."""
    return {"rnngrad.host": socket.gethostname(), "rnngrad.pid": str(os.getpid())}


def loggable_overrides(overrides) -> str:
    """The overrides as one string for a tag, with any credentials in tracking.uri redacted."""
    # Hydra's parser also undoes the escaping a sweep's job overrides come with (http\://...)
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return " ".join(
        f"{o.get_key_element()}={redact(o.value())}" if o.key_or_group == "tracking.uri" and isinstance(o.value(), str)
        else o.input_line
        for o in parsed
    )


def loggable_config(cfg) -> dict:
    """The run's resolved config as plain data, credentials in tracking.uri redacted."""
    data = config_mod.resolved(cfg)
    if data["tracking"]["uri"]:
        data["tracking"]["uri"] = redact(data["tracking"]["uri"])
    return data


def start_run(client: MlflowClient, exp_id: str, name: str, params: dict, tags: dict, parent_id: str | None):
    """Create a run with its params and tags; returns the run id."""
    tags = dict(tags, **process_tags())
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    run = client.create_run(exp_id, run_name=name, tags=tags)
    items = [Param(k, encode_param(v)) for k, v in params.items()]
    for start in range(0, len(items), PARAMS_PER_BATCH):
        client.log_batch(run.info.run_id, params=items[start : start + PARAMS_PER_BATCH])
    return run.info.run_id


def spaced(n: int, count: int) -> np.ndarray:
    """Indices 0 and n - 1 and evenly spaced ones between them, at most `count` (all n when n <= count)."""
    return np.unique(np.round(np.linspace(0, n - 1, min(count, n))).astype(int)) if n else np.zeros(0, int)


def checkpoint_steps(steps: list[int], count: int) -> list[int]:
    """First, last and evenly spaced recorded steps between them (at most `count`)."""
    return [steps[i] for i in spaced(len(steps), count)]


class MlflowLogger(Callback):
    """Logs a training run into an existing MLflow run.

    Scalar metrics go to MLflow every `metric_every` steps, and at every step that evaluates or runs
    the diagnostics, and at the last step; the through-time arrays of every step go to the parquet
    artifact. Metrics are buffered and sent with log_batch when the buffer fills or every `flush_seconds`
    (0: at every step); tags ride along with them (a short run makes one log_batch call in all).

    What it costs: MLflow's SQL store spends about 70 us per metric point (ORM objects, latest-metric
    bookkeeping), so the points logged decide the share of a short run's time, and the defaults
    (`tracking.metric_every=50`, 3 through-time checkpoints of at most 25 t each) keep a default run's logging to a
    few percent (`scripts/bench.py` measures the share; its budget is 3%, which reports/bench.md says it misses).
    (MLflow's asynchronous logging is not used: closing a run joins its queue's threads, an idle wait
    of about a second per run, more than the synchronous batches cost.)
    """

    # checkpoints, points, flush_seconds, metric_every: tracking.through_time_checkpoints, .through_time_points,
    # .flush_seconds, .metric_every of the schema (rnngrad.config), their defaults' one home
    def __init__(self, client: MlflowClient, run_id: str, *, checkpoints: int, points: int, flush_seconds: float,
                 metric_every: int, config_yaml: str | None = None, run_name: str | None = None):
        self.client, self.run_id, self.run_name = client, run_id, run_name
        self.checkpoints, self.points = checkpoints, points
        self.flush_seconds, self.metric_every = flush_seconds, metric_every
        self.config_yaml = config_yaml
        self.buffer: list[Metric] = []
        self.tags: list[RunTag] = []  # sent with the next batch of metrics
        self.last_step: tuple[int, dict] | None = None  # the latest step's metrics, if not yet logged
        self.last_flush = time.monotonic()
        self.through_time: dict[int, dict[str, np.ndarray]] = {}
        self.logging_seconds = 0.0  # time spent inside MLflow calls, for the performance budget

    def _timed(self, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.logging_seconds += time.perf_counter() - start

    def on_start(self, info):
        self.tags.extend(RunTag(f"task.{k}", str(v)) for k, v in info.items())

    def on_step(self, step, metrics):
        interval_step = any(key.startswith(("eval/", "spectral/", "act/", "lyap/")) for key in metrics)
        if step % self.metric_every and not interval_step:
            self.last_step = (step, metrics)
            return
        self._add(step, metrics)

    def _add(self, step: int, metrics: dict) -> None:
        self.last_step = None
        now = int(time.time() * 1000)
        self.buffer.extend(Metric(key, value, now, step) for key, value in metrics.items())
        if len(self.buffer) >= METRICS_PER_BATCH or time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def on_through_time(self, step, arrays):
        self.through_time[step] = arrays

    def flush(self, final: bool = False) -> None:
        """Send the buffered metrics (when the run ends, the last step's too, whatever its number)."""
        if self.last_step is not None and final:
            self._add(*self.last_step)
        while self.buffer or self.tags:
            batch, self.buffer = self.buffer[:METRICS_PER_BATCH], self.buffer[METRICS_PER_BATCH:]
            tags, self.tags = self.tags[:PARAMS_PER_BATCH], self.tags[PARAMS_PER_BATCH:]
            self._timed(self.client.log_batch, self.run_id, metrics=batch, tags=tags)
        self.last_flush = time.monotonic()

    def grad_norms_columns(self) -> dict[str, np.ndarray]:
        """The parquet's columns: step, t (1..T), ds_norm, jac_norm, bound, dc_norm (LSTM); NaN where not measured."""
        names = ("ds_norm", "jac_norm", "bound", "dc_norm")
        steps = sorted(self.through_time)
        T = self.through_time[steps[0]]["ds_norm"].shape[0] if steps else 0
        data = {name: np.full((len(steps), T), np.nan) for name in names}
        for row, step in enumerate(steps):
            for name, values in self.through_time[step].items():
                data[name][row] = values
        return {
            "step": np.repeat(np.asarray(steps, dtype=np.int64), T),
            "t": np.tile(np.arange(1, T + 1, dtype=np.int64), len(steps)),
            **{name: values.ravel() for name, values in data.items()},
        }

    def on_end(self, result: Result):
        now = int(time.time() * 1000)
        for step in checkpoint_steps(sorted(self.through_time), self.checkpoints):
            norms = self.through_time[step]["ds_norm"]
            # the curve's shape at a few dozen t, first and last included (every t is in the parquet):
            # MLflow's store spends ~0.1 ms a point, and a T = 200 run would otherwise log 600 of them
            self.buffer.extend(
                Metric(f"grad_through_time/step_{step}", float(norms[i]), now, int(i) + 1)
                for i in spaced(len(norms), self.points) if np.isfinite(norms[i])
            )
        if np.isfinite(result.grad_norm_peak):  # exact whatever metric_every thins grad/norm to
            self.buffer.append(Metric("grad/norm_peak", float(result.grad_norm_peak), now, result.steps_done))
        tags = {"outcome": result.outcome, "steps_done": str(result.steps_done)}
        if result.solved_at is not None:
            tags["solved_at"] = str(result.solved_at)
        if result.diverged_at is not None:
            tags["diverged_at"] = str(result.diverged_at)
            tags["diverged_reason"] = result.diverged_reason
        self.tags.extend(RunTag(k, v) for k, v in tags.items())
        self.flush(final=True)
        self._timed(self._log_artifacts)

    def _log_artifacts(self) -> None:
        # matplotlib only when a run ends: imported at the start, its objects would lengthen every
        # garbage collection during training
        from rnngrad.app.heatmap import save_grad_heatmap

        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            if self.config_yaml is not None:
                (tmp / "config.yaml").write_text(self.config_yaml)
            # pyarrow straight from the arrays: a third of pandas' to_parquet time; no dictionary
            # encoding, which floats do not profit from
            pq.write_table(pa.table(self.grad_norms_columns()), tmp / "grad_norms.parquet", use_dictionary=False)
            steps = sorted(self.through_time)
            if steps:
                (tmp / HEATMAP).parent.mkdir()
                norms = np.stack([self.through_time[step]["ds_norm"] for step in steps])
                save_grad_heatmap(tmp / HEATMAP, np.asarray(steps), norms, title=self.run_name)
            self.client.log_artifacts(self.run_id, str(tmp))

    def finish(self, status: str = "FINISHED", reason: str | None = None) -> None:
        if reason:
            self._timed(self.client.set_tag, self.run_id, "rnngrad.killed_reason", reason)
        self._timed(self.client.set_terminated, self.run_id, status)
