"""MLflow tracking: the store, the runs, and a training callback that logs every measurement.

The training loop does not know MLflow exists: `MlflowLogger` subscribes to it as a callback.
Metrics go out in batches (`log_batch`); the full-resolution through-time arrays go to a parquet
artifact, with a few checkpoints also logged as metrics (`grad_through_time/step_<N>`, step = t) so
they can be browsed in the MLflow UI.

The store (a SQLite file by default) and the experiment are created by `prepare_store`, which only
code that runs once calls (a single run, or the sweep's start before any job is launched): several
processes creating a fresh SQLite store or the same experiment at once race inside MLflow.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.tracking import MlflowClient

from rnngrad.config import ConfigError
from rnngrad.training import Callback, Result

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENTITIES_PER_BATCH = 1000  # MLflow's limit for one log_batch call: metrics + params + tags
PARAMS_PER_BATCH = 100  # and at most 100 params or tags
METRICS_PER_BATCH = ENTITIES_PER_BATCH - PARAMS_PER_BATCH  # room for the tags that ride along


class StoreError(ConfigError):
    """The tracking store (tracking.uri) cannot be used; the message names it (credentials redacted)."""


def default_uri() -> str:
    """$MLFLOW_TRACKING_URI if set, else the embedded SQLite store at the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def resolve_uri(uri: str | None) -> str:
    """The tracking URI to use; a relative sqlite path is made absolute (never relative to a run dir)."""
    uri = uri or default_uri()
    scheme = urlsplit(uri).scheme
    if scheme not in ("sqlite", "http", "https", "postgresql", "mysql", "databricks"):
        raise StoreError(
            f"unsupported tracking URI {redact(uri)!r}: use sqlite:///<absolute path>, http(s)://host:port "
            "or a database URI (the ./mlruns file store is deprecated and not used)"
        )
    if scheme == "sqlite":
        path = uri[len("sqlite:///"):]
        if not path or path == ":memory:":
            raise StoreError(f"tracking URI {uri!r} must name a database file")
        uri = f"sqlite:///{Path(path).expanduser().resolve()}"
    return uri


def redact(uri: str) -> str:
    """The URI without user:password@ (credentials must come from MLFLOW_TRACKING_USERNAME/PASSWORD)."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def credentials_to_environment(uri: str) -> str:
    """Move user:password@ from a server URI into MLFLOW_TRACKING_USERNAME/PASSWORD; return the bare URI.

    MLflow then takes the credentials from the environment only, and no URI it prints or stores
    carries them.
    """
    parts = urlsplit(uri)
    if parts.username is None:
        return uri
    os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(parts.username)
    if parts.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query, parts.fragment))


def artifact_location(uri: str) -> str | None:
    """For a SQLite store, artifacts live beside the database in mlartifacts/; a server decides its own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return None


def check_store(uri: str) -> None:
    """Fail fast, before anything is written, when the store cannot work.

    SQLite: the directory must be writable and an existing file must be an MLflow database (a corrupt
    file or another program's database is refused, never migrated). A server: it must answer its
    health check within a few seconds.
    """
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        folder = next(p for p in [path.parent, *path.parent.parents] if p.exists())
        if not (folder.stat().st_mode & 0o222) or not os.access(folder, os.W_OK):
            raise StoreError(f"tracking store directory {folder} is read-only: cannot write {path.name} there")
        if path.exists() and path.stat().st_size > 0:
            with open(path, "rb") as fh:
                if fh.read(16) != b"SQLite format 3\x00":
                    raise StoreError(f"tracking store {path} is not a SQLite database (corrupt?); move it away or "
                                     "point tracking.uri elsewhere")
            try:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                    tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
            except sqlite3.DatabaseError as err:
                raise StoreError(f"tracking store {path} cannot be read as SQLite ({err})") from None
            if tables and not {"experiments", "runs", "alembic_version"} <= tables:
                raise StoreError(f"tracking store {path} is a SQLite database of another program "
                                 f"(tables: {', '.join(sorted(tables)[:5])}), not an MLflow store; refusing to touch it")
    elif uri.startswith(("http://", "https://")):
        parts = urlsplit(uri)
        health = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path.rstrip("/") + "/health", "", ""))
        try:
            with urllib.request.urlopen(health, timeout=5) as response:
                response.read()
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise StoreError(f"tracking server {redact(uri)} is unreachable ({reason})") from None


def prepare_store(uri: str, experiment: str) -> str:
    """Create the store (if new) and the experiment (if missing); return the experiment id.

    Call from one process only, before any job starts.
    """
    check_store(uri)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(experiment, artifact_location=artifact_location(uri))


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


def _process_alive(pid: int, started_ms: int) -> bool:
    """Whether the process that started a run at started_ms (epoch ms) still exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a reused pid: a process younger than the run is another process
        start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + start_ticks / os.sysconf("SC_CLK_TCK") <= started_ms / 1000 + 5
    except (OSError, ValueError, IndexError, StopIteration):
        return True


def mark_stale_runs(client: MlflowClient, exp_id: str) -> list[str]:
    """Mark RUNNING runs whose process is gone (killed, crashed machine) as KILLED, with a tag saying why.

    Only runs started on this host can be checked. Returns the ids marked.
    """
    host = socket.gethostname()
    marked = []
    for run in client.search_runs([exp_id], "attributes.status = 'RUNNING'", max_results=5000):
        tags = run.data.tags
        if tags.get("rnngrad.host") != host or "rnngrad.pid" not in tags:
            continue
        pid = int(tags["rnngrad.pid"])
        if _process_alive(pid, run.info.start_time):
            continue
        reason = f"process {pid} on {host} ended without closing the run; marked KILLED at {time.strftime('%Y-%m-%d %H:%M:%S')}"
        client.set_tag(run.info.run_id, "rnngrad.killed_reason", reason)
        client.set_terminated(run.info.run_id, "KILLED")
        marked.append(run.info.run_id)
    return marked


def start_run(client: MlflowClient, exp_id: str, name: str, params: dict, tags: dict, parent_id: str | None):
    """Create a run with its params and tags; returns the run id."""
    tags = dict(tags, **process_tags())
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    run = client.create_run(exp_id, run_name=name, tags=tags)
    items = [Param(k, _param_value(v)) for k, v in params.items()]
    for start in range(0, len(items), PARAMS_PER_BATCH):
        client.log_batch(run.info.run_id, params=items[start : start + PARAMS_PER_BATCH])
    return run.info.run_id


def _param_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def checkpoint_steps(steps: list[int], count: int) -> list[int]:
    """First, last and evenly spaced recorded steps between them (at most `count`)."""
    if not steps:
        return []
    idx = np.unique(np.round(np.linspace(0, len(steps) - 1, min(count, len(steps)))).astype(int))
    return [steps[i] for i in idx]


class MlflowLogger(Callback):
    """Logs a training run into an existing MLflow run.

    Scalar metrics go to MLflow every `metric_every` steps, and at every step that evaluates or runs
    the diagnostics, and at the last step; the through-time arrays of every step go to the parquet
    artifact. Metrics are buffered and sent with log_batch when the buffer fills or every `flush_seconds`
    (0: at every step); tags ride along with them (a short run makes one log_batch call in all).

    What it costs: MLflow's SQL store spends about 70 us per metric point (ORM objects, latest-metric
    bookkeeping), so the points logged decide the share of a short run's time, and the defaults
    (`tracking.metric_every=50`, 3 through-time checkpoints) keep a default run's logging within 3%.
    (MLflow's asynchronous logging is not used: closing a run joins its queue's threads, an idle wait
    of about a second per run, more than the synchronous batches cost.)
    """

    def __init__(self, client: MlflowClient, run_id: str, *, checkpoints: int = 3, flush_seconds: float = 10.0,
                 metric_every: int = 50, config_yaml: str | None = None, run_name: str | None = None):
        self.client, self.run_id, self.run_name = client, run_id, run_name
        self.checkpoints, self.flush_seconds, self.metric_every = checkpoints, flush_seconds, metric_every
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

    def grad_norms_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.grad_norms_columns())

    def on_end(self, result: Result):
        now = int(time.time() * 1000)
        for step in checkpoint_steps(sorted(self.through_time), self.checkpoints):
            norms = self.through_time[step]["ds_norm"]
            self.buffer.extend(
                Metric(f"grad_through_time/step_{step}", float(v), now, t)
                for t, v in enumerate(norms, start=1) if np.isfinite(v)
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
        from rnngrad.heatmap import grad_heatmap_png  # Pillow and a colour table, only when a run ends

        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            if self.config_yaml is not None:
                (tmp / "config.yaml").write_text(self.config_yaml)
            # pyarrow straight from the arrays: a third of pandas' to_parquet time; no dictionary
            # encoding, which floats do not profit from
            pq.write_table(pa.table(self.grad_norms_columns()), tmp / "grad_norms.parquet", use_dictionary=False)
            steps = sorted(self.through_time)
            if steps:
                (tmp / "figures").mkdir()
                norms = np.stack([self.through_time[step]["ds_norm"] for step in steps])
                grad_heatmap_png(np.asarray(steps), norms, tmp / "figures" / "grad_heatmap.png", title=self.run_name)
            self.client.log_artifacts(self.run_id, str(tmp))

    def finish(self, status: str = "FINISHED", reason: str | None = None) -> None:
        if reason:
            self._timed(self.client.set_tag, self.run_id, "rnngrad.killed_reason", reason)
        self._timed(self.client.set_terminated, self.run_id, status)
