"""MLflow tracking: the store, the runs, and a training callback that logs every measurement.

The training loop does not know MLflow exists: `MlflowLogger` subscribes to it as a callback.
Metrics go out in batches (`log_batch`); the full-resolution through-time arrays go to a parquet
artifact, with a few checkpoints also logged as metrics (`grad_through_time/log10_step_<N>`: log10 of
the norm, at MLflow step = T - t, the distance from the loss) so they can be browsed in the MLflow UI,
and the figures a user opens per run go with them as images (`figures/`).

What the UI shows about a run without code: the experiment and each sweep's parent run carry a
description (`mlflow.note.content`: the question, the grid, the command), and each run's description
says its configuration and, once it ends, its outcome in a sentence (`run_description`, `outcome_sentence`).

The store (a SQLite file by default) and the experiment are created by `prepare_store`, which only
code that runs once calls (a single run, or the sweep's start before any job is launched): several
processes creating a fresh SQLite store or the same experiment at once race inside MLflow.
Where the store is and what it may be is `rnngrad.store`'s business.
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import sqlite3
import tempfile
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from mlflow.entities import LifecycleStage, Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from sqlalchemy import event
from sqlalchemy.engine import Engine

from rnngrad import config as config_mod
from rnngrad.app import guard
from rnngrad.store import StoreError, artifact_location, check_store, encode_param, failure_message, redact, sqlite_path
from rnngrad.training import Callback, Result

ENTITIES_PER_BATCH = 1000  # MLflow's limit for one log_batch call: metrics + params + tags
PARAMS_PER_BATCH = 100  # and at most 100 params or tags
METRICS_PER_BATCH = ENTITIES_PER_BATCH - PARAMS_PER_BATCH  # room for the tags that ride along
HEATMAP = "figures/grad_heatmap.png"
CURVES = "figures/grad_through_time.png"
NOTE = "mlflow.note.content"  # the description MLflow's UI shows for a run or an experiment
STRIDES = (1, 2, 5)  # x 10^k: the spacing of the distances T - t logged as metrics


def prepare_store(uri: str, experiment: str, command: str | None = None) -> str:
    """Create the store (if new) and the experiment (if missing); return the experiment id.

    A new experiment is described (`experiment_description`, naming `command`, what created it), and
    the empty "Default" experiment MLflow puts in every new SQLite store is deleted, so the UI lists
    the study's experiments only. A new SQLite store is switched to write-ahead logging (see `_use_wal`).
    Call from one process only, before any job starts. Raises StoreError for a store that cannot work,
    an experiment deleted in it (MLflow refuses its runs), and a server that fails to answer.
    """
    check_store(uri)
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        _use_wal(path)  # before MLflow's first connection, which then commits as `_sync_wal_at_checkpoints` says
    client = MlflowClient(uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            exp_id = client.create_experiment(experiment, artifact_location=artifact_location(uri),
                                              tags={NOTE: experiment_description(command)})
            if path is not None:
                _delete_empty_default(client)
            return exp_id
    except MlflowException as err:
        if path is not None:
            raise
        raise StoreError(failure_message(uri, err)) from None
    if found.lifecycle_stage == LifecycleStage.DELETED:  # MLflow would refuse its runs, after the checks
        raise StoreError(
            f"tracking.experiment={experiment!r} is deleted in {redact(uri)} (experiment id {found.experiment_id}): "
            f"restore it (MLFLOW_TRACKING_URI=<the store> mlflow experiments restore --experiment-id "
            f"{found.experiment_id}) or choose another tracking.experiment; nothing was created")
    if NOTE not in found.tags:  # an experiment of an earlier version of rnngrad, or another program's
        client.set_experiment_tag(found.experiment_id, NOTE, experiment_description(command))
    return found.experiment_id


def _use_wal(path: Path) -> None:
    """Write-ahead logging for a new SQLite store (the file made here, empty; MLflow adds its tables):
    readers (the UI) no longer block the sweep's writers, and a commit appends to the log instead of
    rewriting pages and syncing the disk about three times. The mode is kept in the file."""
    with closing(sqlite3.connect(path, timeout=10)) as db:
        db.execute("PRAGMA journal_mode=WAL")


@event.listens_for(Engine, "connect")
def _sync_wal_at_checkpoints(dbapi_connection, _record) -> None:
    """On a write-ahead-logged SQLite store (`_use_wal`), commit without syncing the disk: SQLite's
    synchronous=NORMAL, a setting of each connection, which MLflow's engines leave at FULL. The WAL is
    synced at its checkpoints instead; a killed process loses nothing it committed, and the store stays
    intact through a power loss, which may take back the last commits before it (a rerun redoes their runs).
    0.3-1.3 ms a commit saved on this machine (measured), about ten commits a run."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        if dbapi_connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _delete_empty_default(client: MlflowClient) -> None:
    """Delete MLflow's "Default" experiment (id 0) if it holds no run: the UI would list it, empty.

    Deleted, not removed: MLflow recreates experiment 0 in a store that lacks it."""
    default = client.get_experiment("0")
    if default.name == "Default" and default.lifecycle_stage == LifecycleStage.ACTIVE and not client.search_runs(
            ["0"], run_view_type=ViewType.ALL, max_results=1):
        client.delete_experiment("0")


def experiment_description(command: str | None) -> str:
    """The experiment's description in the UI: what its runs are and how to read them."""
    made = f"\n\nDescribed when `{command}` first logged to it." if command else ""
    return (
        "rnngrad: how gradients vanish and explode through time in recurrent networks.\n\n"
        "Each sweep is a parent run (its description: the question, the grid, the command that made it); "
        "its jobs are the child runs, named by what sets them apart first: "
        "T<length>-<activation or cell>-<init>-<departures from the defaults>-s<seed>-<task>-<question>. "
        "Each run's description states its configuration and outcome.\n\n"
        "Metrics: train/, eval/, grad/, spectral/, act/, lyap/ over training steps; "
        "grad_through_time/log10_step_<N> is log10 ||dL/ds_t|| at training step N against T - t, the distance "
        "from the loss, so a straight line's slope is the decay rate per time step and runs of different T overlay. "
        f"Artifacts: config.yaml, grad_norms.parquet (every step x every t), {HEATMAP}, {CURVES}.{made}"
    )


def find_finished(client: MlflowClient, exp_id: str, config_hash: str) -> str | None:
    """The id of a FINISHED run with this config_hash, if any (used to resume a sweep)."""
    runs = client.search_runs(
        [exp_id], f"tags.config_hash = '{config_hash}' and attributes.status = 'FINISHED'",
        run_view_type=ViewType.ACTIVE_ONLY, max_results=1,
    )
    return runs[0].info.run_id if runs else None


def process_tags() -> dict[str, str]:
    """Who runs this: lets a later sweep tell a run whose process died from one still running."""
    return {"rnngrad.host": socket.gethostname(), "rnngrad.pid": str(os.getpid()),
            "rnngrad.pid_start": guard.start_token(os.getpid())}


def loggable_overrides(overrides) -> str:
    """The overrides as one string for a tag, with any credentials in tracking.uri redacted."""
    # Hydra's parser also undoes the escaping a sweep's job overrides come with (http\://...)
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return " ".join(
        f"{o.get_key_element()}={redact(o.value())}" if o.key_or_group == "tracking.uri" and isinstance(o.value(), str)
        else o.input_line
        for o in parsed
    )


def command_line(hydra_cfg) -> str:
    """The command that made a run or a sweep, as typed: Hydra's own overrides, then the run's
    (hydra_cfg: Hydra's node, HydraConfig.get() or a sweep's master config's `hydra`)."""
    own = [o for o in hydra_cfg.overrides.hydra if not o.startswith("hydra.mode=")]  # set by -m itself
    dash_m = ["-m"] if hydra_cfg.mode == RunMode.MULTIRUN else []
    return " ".join(["python -m rnngrad.train", *dash_m, loggable_overrides([*own, *hydra_cfg.overrides.task])]).strip()


def loggable_config(cfg) -> dict:
    """The run's resolved config as plain data, credentials in tracking.uri redacted."""
    data = config_mod.resolved(cfg)
    if data["tracking"]["uri"]:
        data["tracking"]["uri"] = redact(data["tracking"]["uri"])
    return data


def start_run(client: MlflowClient, exp_id: str, name: str, params: dict, tags: dict, parent_id: str | None):
    """Create a run with its params and tags; returns its RunInfo (run_id, artifact_uri)."""
    tags = dict(tags, **process_tags())
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    run = client.create_run(exp_id, run_name=name, tags=tags)
    items = [Param(k, encode_param(v)) for k, v in params.items()]
    for start in range(0, len(items), PARAMS_PER_BATCH):
        client.log_batch(run.info.run_id, params=items[start : start + PARAMS_PER_BATCH])
    return run.info


def run_description(cfg) -> str:
    """A run's configuration in a sentence, for its description in the UI (the outcome is added at the end)."""
    m, o, b, c, tr = cfg.model, cfg.optim, cfg.bptt, cfg.clip, cfg.train
    model = f"A {m.activation} RNN" if m.cell == "rnn" else f"An {m.cell.upper()}" if m.cell == "lstm" else "A GRU"
    model += f" with {m.norm} norm" if m.norm != "none" else ""
    init = f"{m.init} init" + (f" at spectral radius {m.spectral_radius:g}" if m.spectral_radius is not None else "")
    bptt = ("full BPTT" if b.truncation is None
            else f"{'chunked' if b.mode == 'chunked' else 'truncated'} BPTT ({b.truncation} steps)")
    clipping = "no clipping" if c.mode == "none" else f"{c.mode} clipping at {c.threshold:g}"
    training = (f"trained {tr.steps} steps with {o.name} (lr {o.lr:g}, batch {tr.batch_size}), {bptt}, {clipping}"
                if tr.steps else "measured at initialization, no training")
    question = f", for the {cfg.question} question" if cfg.question != "adhoc" else ""
    return (f"{model} ({m.hidden_size} units, {init}, {m.dtype}) on {cfg.task.name} with T = {cfg.task.seq_len}, "
            f"{training}; seed {cfg.seed}{question}.")


def outcome_sentence(result: Result) -> str:
    """How a run ended, in a sentence: the outcome, the final evaluation against the constant
    predictor's loss, the peak gradient norm and the decay rate through time."""
    if result.diverged_at is not None:
        head = f"Diverged at step {result.diverged_at} ({result.diverged_reason})"
    elif result.solved_at is not None:
        head = f"Solved at step {result.solved_at}"
    elif result.steps_done == 0:
        head = "At initialization"
    else:
        head = f"Unsolved after {result.steps_done} steps"
    final = result.final
    facts = []
    if "eval/loss" in final:
        facts.append(f"final eval loss {final['eval/loss']:.4g} (constant predictor {result.baseline:.4g})")
    if "eval/accuracy" in final:
        facts.append(f"accuracy {final['eval/accuracy']:.3g}")
    if np.isfinite(result.grad_norm_peak):
        facts.append(f"peak gradient norm {result.grad_norm_peak:.3g}")
    if "grad/decay_rate" in final:
        facts.append(f"gradient decay rate {final['grad/decay_rate']:+.3g} per time step (natural log)")
    return head + (": " + ", ".join(facts) if facts else "") + "."


def sweep_description(master_cfg, jobs: int, command: str) -> str:
    """A sweep's parent run description: its question(s) (the experiment preset's comment), its grid, the command."""
    choice = master_cfg.hydra.runtime.choices.get("experiment")
    lines = [f"Sweep of {jobs} jobs" + (f", experiment={choice}" if choice else "") + "."]
    lines += [f"> {line}" for line in preset_questions(master_cfg, choice)]
    sweeper = master_cfg.hydra.sweeper
    grids = {name: grid for name, grid in {"params": sweeper.get("params"), **(sweeper.get("grids") or {})}.items() if grid}
    if grids:
        lines += ["", "Grid (the union of these; the command line's values win over theirs):"]
        lines += [f"- {name}: " + ", ".join(f"{k}={v}" for k, v in grid.items()) for name, grid in grids.items()]
    lines += ["", f"Command (its comma-separated values are a grid too): `{command}`"]
    return "\n".join(lines)


def preset_questions(master_cfg, choice: str | None) -> list[str]:
    """The leading comment of conf/experiment/<choice>.yaml (its question) and the first line of each
    preset it includes (a study's questions), from the configuration's search path."""
    folders = [Path(src.path) / "experiment" for src in master_cfg.hydra.runtime.config_sources if src.schema == "file"]

    def read(name: str) -> tuple[list[str], list]:
        found = next((folder / f"{name}.yaml" for folder in folders if (folder / f"{name}.yaml").is_file()), None)
        if found is None:
            return [], []
        lines = itertools.takewhile(lambda line: line.startswith("#"), found.read_text().splitlines())
        head = [line.lstrip("#").strip() for line in lines]
        includes = OmegaConf.load(found).get("defaults") or []
        return [line for line in head if line and not line.startswith("@package")], includes

    lines, includes = read(choice) if choice else ([], [])
    for name in includes:
        if isinstance(name, str):
            lines += read(name)[0][:1]
    return lines


def distances(T: int, count: int) -> np.ndarray:
    """The distances from the loss, T - t, whose norms go to MLflow: 0, s, 2s, ... and the farthest, T - 1.

    Evenly spaced in the distance itself (the UI's axis is linear, and on log10 of the norm an exponential
    decay is a straight line whose slope every part of the range weighs equally), at the smallest stride
    s in 1, 2, 5, 10, 20, ... that keeps to `count` (>= 2) points: runs of different T share the distances
    that are multiples of the larger stride, which is where the UI's grouping averages them.
    """
    if T <= count:
        return np.arange(T)
    stride = next(m * 10**e for e in range(math.ceil(math.log10(T)) + 1) for m in STRIDES
                  if math.ceil((T - 1) / (m * 10**e)) + 1 <= count)
    return np.unique(np.r_[np.arange(0, T, stride), T - 1])


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
    bookkeeping) and a disk sync per commit (a run makes about ten; see `_use_wal`), so the points and
    calls decide the share of a short run's time. The defaults (`tracking.metric_every=50`, 3 through-time
    checkpoints of at most 25 distances each) and one log_batch at the end of a short run keep it to a few
    percent, the two figures included (`scripts/bench.py` measures the share; its budget is 3%).
    (MLflow's asynchronous logging is not used: closing a run joins its queue's threads, an idle wait
    of about a second per run, more than the synchronous batches cost.)
    """

    # checkpoints, points, flush_seconds, metric_every: tracking.through_time_checkpoints, .through_time_points,
    # .flush_seconds, .metric_every of the schema (rnngrad.config), their defaults' one home
    def __init__(self, client: MlflowClient, run_id: str, *, checkpoints: int, points: int, flush_seconds: float,
                 metric_every: int, artifact_uri: str | None = None, config_yaml: str | None = None,
                 run_name: str | None = None, description: str | None = None):
        self.client, self.run_id, self.run_name = client, run_id, run_name
        self.artifact_uri = artifact_uri  # the run's, from its creation: else MLflow asks the store for it
        self.description = description  # the configuration's sentence; the outcome's joins it at the end
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

    def through_time_table(self) -> tuple[list[int], dict[str, np.ndarray]]:
        """The logged steps and, per array name, their values as a (steps, T) matrix, T the longest batch's
        length, NaN where not measured. With variable lengths (task.min_seq_len) each batch has its own length
        L <= T: its values fill the last L columns, so that every column is one distance T - t from the loss
        at the last step (what the curves and the report read), its first T - L columns NaN."""
        names = ("ds_norm", "jac_norm", "bound", "dc_norm")
        steps = sorted(self.through_time)
        T = max((len(self.through_time[step]["ds_norm"]) for step in steps), default=0)
        data = {name: np.full((len(steps), T), np.nan) for name in names}
        for row, step in enumerate(steps):
            for name, values in self.through_time[step].items():
                data[name][row, T - len(values):] = values
        return steps, data

    def grad_norms_columns(self) -> dict[str, np.ndarray]:
        """The parquet's columns: step, t (1..T), ds_norm, jac_norm, bound, dc_norm (LSTM); NaN where not
        measured (through_time_table: a shorter batch's values aligned at the loss)."""
        steps, data = self.through_time_table()
        T = data["ds_norm"].shape[1]
        return {
            "step": np.repeat(np.asarray(steps, dtype=np.int64), T),
            "t": np.tile(np.arange(1, T + 1, dtype=np.int64), len(steps)),
            **{name: values.ravel() for name, values in data.items()},
        }

    def on_end(self, result: Result):
        now = int(time.time() * 1000)
        for step in checkpoint_steps(sorted(self.through_time), self.checkpoints):
            norms = self.through_time[step]["ds_norm"]
            # the curve at a few dozen distances (every t is in the parquet): MLflow's store spends
            # ~0.1 ms a point, and a T = 200 run would otherwise log 600 of them
            T = len(norms)
            self.buffer.extend(
                Metric(f"grad_through_time/log10_step_{step}", math.log10(norms[T - 1 - d]), now, int(d))
                for d in distances(T, self.points) if np.isfinite(norms[T - 1 - d]) and norms[T - 1 - d] > 0
            )
        if np.isfinite(result.grad_norm_peak):  # exact whatever metric_every thins grad/norm to
            self.buffer.append(Metric("grad/norm_peak", float(result.grad_norm_peak), now, result.steps_done))
        tags = {"outcome": result.outcome, "steps_done": str(result.steps_done)}
        if result.solved_at is not None:
            tags["solved_at"] = str(result.solved_at)
        if result.diverged_at is not None:
            tags["diverged_at"] = str(result.diverged_at)
            tags["diverged_reason"] = result.diverged_reason
        if self.description is not None:
            tags[NOTE] = f"{self.description} {outcome_sentence(result)}"
        self.tags.extend(RunTag(k, v) for k, v in tags.items())
        self.flush(final=True)
        self._timed(self._log_artifacts)

    def _log_artifacts(self) -> None:
        # matplotlib only when a run ends: imported at the start, its objects would lengthen every
        # garbage collection during training
        from rnngrad.app.heatmap import save_grad_curves, save_grad_heatmap

        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            if self.config_yaml is not None:
                (tmp / "config.yaml").write_text(self.config_yaml)
            # pyarrow straight from the arrays: a third of pandas' to_parquet time; no dictionary
            # encoding, which floats do not profit from
            pq.write_table(pa.table(self.grad_norms_columns()), tmp / "grad_norms.parquet", use_dictionary=False)
            steps, data = self.through_time_table()
            if steps:
                (tmp / HEATMAP).parent.mkdir()
                norms = data["ds_norm"]
                save_grad_heatmap(tmp / HEATMAP, np.asarray(steps), norms, title=self.run_name)
                shown = checkpoint_steps(steps, self.checkpoints)  # the steps of the log10_step_<N> metrics
                save_grad_curves(tmp / CURVES, np.asarray(shown), norms[[steps.index(k) for k in shown]],
                                 title=self.run_name)
            if self.artifact_uri is None:
                self.client.log_artifacts(self.run_id, str(tmp))
            else:  # what log_artifacts does after reading the whole run back from the store (~5 ms) for this URI
                get_artifact_repository(self.artifact_uri, tracking_uri=self.client.tracking_uri).log_artifacts(str(tmp))

    def finish(self, status: str = "FINISHED", reason: str | None = None) -> None:
        tags = [RunTag("rnngrad.killed_reason", reason)] if reason else []
        if status != "FINISHED" and self.description is not None:  # the outcome never came: say how it ended
            tags.append(RunTag(NOTE, f"{self.description} {status.capitalize()}{f': {reason}' if reason else ''}."))
        if tags:
            self._timed(self.client.log_batch, self.run_id, tags=tags)
        self._timed(self.client.set_terminated, self.run_id, status)
