"""Loading the study from MLflow into tidy pandas frames.

- `load_runs`: one row per training run (sweep parents left out): ids, status, outcome, the typed
  params, the tags, and the last value of every metric.
- `load_histories`: metric histories, one row per (run_id, key, step), for the keys a figure needs.
- `load_grad_norms`: the `grad_norms.parquet` artifacts, with the runs whose artifact is missing.
- `Study`: one experiment of a store opened for the report: its runs, and loaders for their histories and
  artifacts that record what could not be loaded.

Nothing here writes outside a temporary directory, and nothing creates, migrates or writes a store: a SQLite
store is checked (an MLflow database at the schema this MLflow writes, intact) and then read through a
read-only connection (`open_client`).
"""

from __future__ import annotations

import math
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import mlflow.store.db.utils as mlflow_db
import pandas as pd
import sqlalchemy
from mlflow.entities import ViewType
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking import MlflowClient

from rnngrad import store

PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "rnngrad.sweep"
GRAD_NORMS = "grad_norms.parquet"
GRAD_NORMS_COLUMNS = ["run_id", "step", "t", "ds_norm", "jac_norm", "bound"]
HISTORY_COLUMNS = ["run_id", "key", "step", "value"]
RUN_COLUMNS = ["run_id", "run_name", "status", "outcome", "parent_run_id", "start_time", "end_time"]
# tags whose values are numbers (the rest stay strings)
NUMERIC_TAGS = ("task.baseline", "task.length", "task.dependency", "task.n_params", "solved_at", "diverged_at", "steps_done")
SEARCH_PAGE = 1000  # runs per search_runs request
BULK_RUNS = 500  # run ids per bulk history query
DOWNLOAD_THREADS = 8  # artifact downloads in flight (they are one request each on a server)
# params that do not describe a configuration
BOOKKEEPING = ("tracking.", "train.verbose", "train.max_memory_gb", "question")


def _typed(column: pd.Series) -> pd.Series:
    """A column of parsed values: numeric when every non-null value is a number (None -> NaN)."""
    values = [store.decode_param(v) if isinstance(v, str) else v for v in column]
    present = [v for v in values if v is not None]
    numeric = present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)
    if numeric:
        series = pd.Series([math.nan if v is None else v for v in values], index=column.index, dtype=float)
        if all(isinstance(v, int) for v in present) and len(present) == len(values):
            return series.astype("int64")
        return series
    return pd.Series(values, index=column.index, dtype=object)


def _search_all(client: MlflowClient, exp_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([exp_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=SEARCH_PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def load_runs(client: MlflowClient, exp_id: str) -> pd.DataFrame:
    """One row per training run of the experiment (sweep parents excluded).

    Columns: run_id, run_name, status (FINISHED/RUNNING/FAILED/KILLED), outcome (solved/unsolved/diverged,
    None while a run has not ended), parent_run_id, start_time, end_time (pandas timestamps); every param
    under its own name (numbers parsed, 'null' -> NaN or None, 'true'/'false' -> bool); the tags (numeric
    ones in NUMERIC_TAGS parsed; a tag whose name is also a param's gets the prefix 'tag.'); and the last
    logged value of every metric under its key (NaN where a run never logged it).
    frame.attrs["params"] lists the param columns.
    """
    rows, param_keys = [], set()
    for run in _search_all(client, exp_id):
        tags = run.data.tags
        if tags.get(SWEEP_TAG) == "true":
            continue
        params = run.data.params
        param_keys.update(params)
        row = {
            "run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
            "outcome": tags.get("outcome"), "parent_run_id": tags.get(PARENT_TAG),
            "start_time": pd.to_datetime(run.info.start_time, unit="ms"),
            "end_time": pd.to_datetime(run.info.end_time, unit="ms") if run.info.end_time else pd.NaT,
        }
        row.update(params)
        for key, value in tags.items():
            if key.startswith("mlflow.") or key == "outcome":
                continue
            row[f"tag.{key}" if key in params else key] = value
        row.update(run.data.metrics)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else RUN_COLUMNS)
    for key in param_keys:
        frame[key] = _typed(frame[key])
    for key in NUMERIC_TAGS:
        if key in frame:
            frame[key] = pd.to_numeric(frame[key], errors="coerce")
    frame = frame.reset_index(drop=True)
    frame.attrs["params"] = sorted(param_keys)
    return frame


def _bulk_history(client: MlflowClient):
    """The SQL store's one-query-per-key history reader, if the client's store has it (else None)."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    return getattr(store, "get_metric_history_bulk", None)


def load_histories(client: MlflowClient, run_ids, keys) -> pd.DataFrame:
    """The full histories of `keys` for `run_ids`. Columns run_id, key, step (int), value (float).

    On a SQL store one query per key and block of runs; elsewhere one get_metric_history call per
    run and key, several in flight at once.
    """
    run_ids, keys = list(dict.fromkeys(run_ids)), list(dict.fromkeys(keys))
    records: list[tuple] = []
    bulk = _bulk_history(client)
    if bulk is not None:
        for key in keys:
            for start in range(0, len(run_ids), BULK_RUNS):
                found = bulk(run_ids[start : start + BULK_RUNS], key, 2**62)
                records.extend((m.run_id, key, m.step, m.value) for m in found)
    else:
        pairs = [(run_id, key) for run_id in run_ids for key in keys]
        with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
            histories = pool.map(lambda pair: client.get_metric_history(*pair), pairs)
            for (run_id, key), history in zip(pairs, histories):
                records.extend((run_id, key, m.step, m.value) for m in history)
    frame = pd.DataFrame.from_records(records, columns=HISTORY_COLUMNS)
    frame["step"] = frame["step"].astype("int64")
    frame["value"] = frame["value"].astype(float)
    # a step logged twice (a resumed flush) keeps its last value
    return frame.drop_duplicates(["run_id", "key", "step"], keep="last").sort_values(["run_id", "key", "step"], ignore_index=True)


@dataclass
class GradNorms:
    """The grad_norms.parquet artifacts: `frame` (columns GRAD_NORMS_COLUMNS) and the runs without one."""

    frame: pd.DataFrame
    missing: dict[str, str] = field(default_factory=dict)  # run_id -> why


def load_grad_norms(client: MlflowClient, run_ids) -> GradNorms:
    """Download and read grad_norms.parquet for each run (columns step, t, ds_norm, jac_norm, bound, and any
    others the artifact has, e.g. an LSTM's dc_norm), with run_id first.

    A run whose artifact cannot be downloaded or read is recorded in `missing`, never raised.
    """
    run_ids = list(dict.fromkeys(run_ids))
    with tempfile.TemporaryDirectory(prefix="rnngrad-report-") as tmp:

        def fetch(run_id: str):
            try:
                path = client.download_artifacts(run_id, GRAD_NORMS, str(Path(tmp) / run_id))
                return pd.read_parquet(path).assign(run_id=run_id), None
            except Exception as err:  # a missing or unreadable artifact is reported, not fatal
                return None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"

        for run_id in run_ids:
            (Path(tmp) / run_id).mkdir()
        with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
            results = list(pool.map(fetch, run_ids))
    frames = [frame for frame, _ in results if frame is not None]
    missing = {run_id: why for run_id, (_, why) in zip(run_ids, results) if why is not None}
    if not frames:
        return GradNorms(pd.DataFrame(columns=GRAD_NORMS_COLUMNS), missing)
    frame = pd.concat(frames, ignore_index=True)
    return GradNorms(frame[["run_id", *(c for c in frame.columns if c != "run_id")]], missing)


READ_ONLY = "?mode=ro"  # the suffix of the URI under which a store's read-only engine is registered


def _read_only_engine(path: Path) -> sqlalchemy.engine.Engine:
    """MLflow's engine for the database file (its SQL functions registered), every connection opened read-only."""
    engine = mlflow_db.create_sqlalchemy_engine(f"{store.SQLITE_PREFIX}{path}")

    @sqlalchemy.event.listens_for(engine, "do_connect")
    def read_only(dialect, record, cargs, cparams):
        cargs[:] = [f"file:{quote(str(path))}?mode=ro"]
        cparams["uri"] = True

    return engine


def _check_schema(path: Path, engine: sqlalchemy.engine.Engine) -> None:
    """Refuse a database MLflow would migrate or could not read: tables missing or a schema revision other than
    this MLflow's (opening it would upgrade it in place), or a corrupt (e.g. truncated) file."""
    try:
        with engine.connect() as db:
            problems = [" ".join(row[0].split()) for row in db.exec_driver_sql("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise store.StoreError(f"tracking store {path} is a damaged SQLite database ({'; '.join(problems[:3])}); "
                                   "nothing was read or changed")
        complete, found = mlflow_db._all_tables_exist(engine), mlflow_db._get_schema_version(engine)
    except sqlalchemy.exc.DBAPIError as err:
        raise store.StoreError(f"tracking store {path} cannot be read as SQLite ({err.orig}); nothing was changed") from None
    head = mlflow_db._get_latest_schema_revision()
    if not complete or found != head:
        raise store.StoreError(
            f"tracking store {path} has MLflow schema revision {found or 'none'} (this MLflow writes {head}"
            + ("" if complete else ", and some of its tables are missing") + "): the report never migrates a store; "
            f"back it up and run `mlflow db upgrade sqlite:///{path}`, or read it with the MLflow that wrote it")


def open_client(uri: str) -> MlflowClient:
    """A client for the store that cannot change it. A SQLite store is first checked (`_check_schema`), then read
    through a read-only connection: MLflow, which migrates or initializes a database when it opens one, gets
    an engine already open read-only, so any write it tried would fail instead of changing the file."""
    path = store.sqlite_path(uri)
    if path is None:
        return MlflowClient(uri)
    key = f"{uri}{READ_ONLY}"
    engine = SqlAlchemyStore._engine_map.get(key) or _read_only_engine(path)
    _check_schema(path, engine)
    SqlAlchemyStore._engine_map[key] = engine  # MLflow keeps one engine per URI; this key is used only here
    return MlflowClient(key)


class ExperimentNotFound(ValueError):
    """The store exists but holds no (active) experiment of that name."""


class Study:
    """The runs of one experiment, whatever their status (`runs`, from `load_runs`), with loaders for their histories
    and grad_norms artifacts; `missing_artifacts` (run_id -> reason) records the artifacts that could not be read.

    params: the param columns that describe a configuration (BOOKKEEPING left out).
    """

    def __init__(self, client: MlflowClient | None, exp_id: str | None, runs: pd.DataFrame, *, uri: str, experiment: str):
        self.client, self.exp_id, self.runs = client, exp_id, runs
        self.uri, self.experiment = uri, experiment
        self.params = sorted(k for k in runs.attrs.get("params", []) if not k.startswith(BOOKKEEPING))
        self.missing_artifacts: dict[str, str] = {}

    @classmethod
    def open(cls, uri: str, experiment: str) -> Study:
        """Read the experiment's runs (nothing is created).

        Raises store.StoreNotFound when the store itself does not exist, store.StoreError when it cannot be read
        or would have to be migrated (`open_client`), ExperimentNotFound (naming the experiments there are) when the store has no such experiment: a mistyped
        name must not replace a report by an empty one.
        """
        store.check_store(uri, must_exist=True)
        client = open_client(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None or found.lifecycle_stage != "active":
            names = sorted(e.name for e in client.search_experiments())
            raise ExperimentNotFound(f"no experiment {experiment!r} in {store.describe(uri)}; its experiments: "
                                     + (", ".join(repr(n) for n in names) or "none"))
        return cls(client, found.experiment_id, load_runs(client, found.experiment_id), uri=uri, experiment=experiment)

    def only(self, mask: pd.Series) -> Study:
        """The same experiment with the runs where mask is true (a tier of the study: `frames.is_classic`); the
        artifacts found missing are shared."""
        runs = self.runs[mask.to_numpy(dtype=bool)].reset_index(drop=True)
        runs.attrs = dict(self.runs.attrs)
        part = Study(self.client, self.exp_id, runs, uri=self.uri, experiment=self.experiment)
        part.missing_artifacts = self.missing_artifacts
        return part

    def history(self, runs: pd.DataFrame, key: str) -> pd.DataFrame:
        """Columns run_id, step, value of metric `key` for these runs."""
        return load_histories(self.client, runs["run_id"], [key])[["run_id", "step", "value"]]

    def grad_norms(self, runs: pd.DataFrame) -> pd.DataFrame:
        """The grad_norms.parquet rows of these runs; runs without the artifact are recorded as missing."""
        found = load_grad_norms(self.client, runs["run_id"])
        self.missing_artifacts.update(found.missing)
        return found.frame

    def command(self, question: str) -> str:
        """The command that produces the runs of a question into this report's store and experiment."""
        parts = ["python -m rnngrad.train -m", f"experiment={question}"]  # the preset conf/experiment/<question>.yaml
        if self.uri != store.resolve_uri(None):
            parts.append(f"tracking.uri={store.redact(self.uri)}")
        if self.experiment != "rnngrad":
            parts.append(f"tracking.experiment={self.experiment}")
        return " ".join(parts)
