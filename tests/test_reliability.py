"""Faults and bad input: killed runs, diverging runs, concurrent writers, every bad input, determinism."""

import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from clihelpers import TINY, nothing_stored, run_cli, runs, split_sweep, store_uri
from mlflow.tracking import MlflowClient

from rnngrad.app import tracking

pytestmark = pytest.mark.slow

LONG = ["task.seq_len=8", "model.hidden_size=8", "train.steps=100000", "train.eval_interval=1000",
        "train.verbose=false", "tracking.flush_seconds=0.2", "task.test_size=32",
        "tracking.metric_every=1"]


def start_cli(tmp_path, *overrides):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RNNGRAD_"))}
    args = [sys.executable, "-m", "rnngrad.train", *overrides, f"tracking.uri={store_uri(tmp_path)}",
            f"hydra.run.dir={tmp_path / 'out'}"]
    return subprocess.Popen(args, cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_run(tmp_path, min_points=20, timeout=90) -> str:
    """Wait until the store holds a run with at least `min_points` train/loss points; return its id.

    Polls with read-only sqlite3: opening an MLflow client on a store that another process is still
    creating is the race this project avoids everywhere else.
    """
    db_path = tmp_path / "store" / "mlflow.db"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if not db_path.exists():
            continue
        try:
            with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
                row = db.execute("select run_uuid, count(*) from metrics where key = 'train/loss' group by run_uuid").fetchone()
        except sqlite3.Error:
            continue
        if row and row[1] >= min_points:
            return row[0]
    raise AssertionError("the run never logged its metrics")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_end_the_run_as_killed_keeping_its_metrics(tmp_path, sig):
    proc = start_cli(tmp_path, *LONG)
    run_id = wait_for_run(tmp_path)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    client = MlflowClient(store_uri(tmp_path))
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert "SIGINT or SIGTERM" in run.data.tags["rnngrad.killed_reason"]
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert len(steps) >= 20 and steps == list(range(len(steps)))  # flushed, none lost in between


def test_sigkilled_run_is_marked_killed_and_rerun_by_the_next_sweep(tmp_path):
    proc = start_cli(tmp_path, *LONG, "tracking.experiment=kill")
    run_id = wait_for_run(tmp_path, min_points=5)
    proc.kill()
    proc.wait(timeout=30)
    client = MlflowClient(store_uri(tmp_path))
    assert client.get_run(run_id).info.status == "RUNNING"  # SIGKILL leaves no chance to close it
    # the same configuration, shortened, in a sweep: the stale run is marked, the configuration reruns
    killed_hash = client.get_run(run_id).data.tags["config_hash"]
    proc = run_cli(tmp_path, *LONG, "tracking.experiment=kill", "train.steps=3", multirun=True)
    assert proc.returncode == 0, proc.stderr
    assert f"run {run_id}: its process is gone; marked KILLED" in proc.stdout
    stale = client.get_run(run_id)
    assert stale.info.status == "KILLED" and "ended without closing the run" in stale.data.tags["rnngrad.killed_reason"]
    _, found = runs(tmp_path, "kill")
    statuses = sorted(r.info.status for r in found if r.data.tags.get("rnngrad.sweep") != "true")
    assert statuses == ["FINISHED", "KILLED"]
    assert killed_hash != next(r.data.tags["config_hash"] for r in found if r.info.status == "FINISHED"
                               and r.data.tags.get("rnngrad.sweep") != "true")
    # rerunning the killed configuration itself (same hash) is not skipped: only FINISHED runs are
    assert tracking.find_finished(client, found[0].info.experiment_id, killed_hash) is None


def test_diverging_run_in_a_sweep_is_an_outcome_and_the_sweep_continues(tmp_path):
    exploding = ["task.seq_len=50", "model.hidden_size=32", "model.activation=relu", "model.init=gaussian",
                 "model.spectral_radius=1.6", "optim=sgd", "optim.lr=0.05", "train.steps=50",
                 "train.eval_interval=10", "train.verbose=false", "task.test_size=32"]
    proc = run_cli(tmp_path, *exploding, "clip=none,norm", multirun=True)
    assert proc.returncode == 0, proc.stderr
    client, found = runs(tmp_path)
    children = {r.data.params["clip.mode"]: r for r in found if r.data.tags.get("rnngrad.sweep") != "true"}
    assert all(r.info.status == "FINISHED" for r in found)
    diverged, clipped = children["none"], children["norm"]
    assert diverged.data.tags["outcome"] == "diverged" and int(diverged.data.tags["diverged_at"]) >= 1
    assert clipped.data.tags["outcome"] != "diverged"
    for run in children.values():  # no NaN or Inf reached any metric
        for key in run.data.metrics:
            assert all(math.isfinite(m.value) for m in client.get_metric_history(run.info.run_id, key)), key
    steps = [m.step for m in client.get_metric_history(diverged.info.run_id, "train/loss")]
    assert steps == list(range(len(steps))) and len(steps) >= int(diverged.data.tags["diverged_at"])


@pytest.mark.parametrize("repeat", range(5))
def test_eight_concurrent_writers_lose_nothing(tmp_path, repeat):
    proc = run_cli(tmp_path, *TINY, "seed=0,1,2,3,4,5,6,7", "hydra.launcher.n_jobs=8", "tracking.flush_seconds=0",
                   "tracking.experiment=concurrent", multirun=True)
    assert proc.returncode == 0, proc.stderr
    client, found = runs(tmp_path, "concurrent")
    parents, children = split_sweep(found)
    assert len(parents) == 1 and len(children) == 8
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.info.status for r in found} == {"FINISHED"}
    for run in children:  # every point of every metric it logged: 21 steps, 3 evaluations, T=8 through time
        rid = run.info.run_id
        assert len(client.get_metric_history(rid, "train/loss")) == 21
        assert len(client.get_metric_history(rid, "grad/norm")) == 21
        assert len(client.get_metric_history(rid, "eval/loss")) == 3
        assert len(client.get_metric_history(rid, "grad_through_time/log10_step_20")) == 8
        assert {a.path for a in client.list_artifacts(rid)} == {"config.yaml", "grad_norms.parquet", "figures"}


def test_same_seed_gives_identical_metrics_across_launchers(tmp_path):
    """The joblib launcher runs the configs the sweeper's checks composed; the basic launcher composes
    each job itself (Hydra's own path). Both must give every job the same config and the same metrics."""
    sweep = [*TINY, "model.activation=tanh,relu", "seed=0,1"]
    histories, job_files = [], []
    for launcher, store in (("joblib", "a"), ("basic", "b"), ("joblib", "c")):
        (tmp_path / store).mkdir()
        uri = f"sqlite:///{tmp_path / store / 'mlflow.db'}"
        proc = run_cli(tmp_path, *sweep, f"hydra/launcher={launcher}", multirun=True, uri=uri)
        assert proc.returncode == 0, proc.stderr
        text = lambda path: path.read_text().replace(str(tmp_path / store), "STORE")  # noqa: E731
        job_files.append({text(job / ".hydra" / "overrides.yaml"): text(job / ".hydra" / "config.yaml")
                          for job in (tmp_path / "multirun").iterdir() if job.is_dir()})
        shutil.rmtree(tmp_path / "multirun")
        client, found = runs(tmp_path, uri=uri)
        histories.append({
            r.info.run_name: {k: [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, k)]
                              for k in r.data.metrics}
            for r in found if r.data.tags.get("rnngrad.sweep") != "true"
        })
    assert len(histories[0]) == 4
    assert histories[0] == histories[1] == histories[2]
    assert len(job_files[0]) == 4 and all("seed: 1" in text or "seed: 0" in text for text in job_files[0].values())
    assert job_files[0] == job_files[1] == job_files[2]


def make_readonly(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return f"sqlite:///{folder / 'mlflow.db'}"


def make_corrupt(tmp_path):
    (tmp_path / "corrupt.db").write_bytes(b"this is not a database" * 10)
    return f"sqlite:///{tmp_path / 'corrupt.db'}"


def make_foreign(tmp_path):
    with sqlite3.connect(tmp_path / "foreign.db") as db:
        db.execute("create table songs (title text)")
    return f"sqlite:///{tmp_path / 'foreign.db'}"


def make_missing_folder(tmp_path):
    return f"sqlite:///{tmp_path / 'typo' / 'mlflow.db'}"


def make_folder(tmp_path):
    (tmp_path / "adir").mkdir()
    return f"sqlite:///{tmp_path / 'adir'}"


def make_under_file(tmp_path):
    (tmp_path / "afile").write_text("")
    return f"sqlite:///{tmp_path / 'afile' / 'mlflow.db'}"


BAD_INPUT = [
    (["model.activation=softplus"], "expected one of [sigmoid, tanh, relu, linear]"),
    (["model.init=kaiming"], "expected one of [gaussian, xavier, he, orthogonal, identity, sparse, normal]"),
    (["model.cell=transformer"], "expected one of [rnn, lstm, gru]"),
    (["model.norm=group"], "expected one of [none, layer, batch]"),
    (["model.dtype=float16"], "expected one of [float64, float32]"),
    (["task=fourier"], "Available options in 'task'"),
    (["optim.name=lbfgs"], "expected one of [sgd, momentum, rmsprop, adam]"),
    (["clip.mode=global"], "expected one of [none, norm, value]"),
    (["model.hidden_size=abc"], "could not be converted to Integer"),
    (["optim.lr=fast"], "could not be converted to Float"),
    (["train.stop_when_solved=maybe"], "is not a valid bool"),
    (["model.hidden_size=0"], "model.hidden_size must be > 0, got 0"),
    (["train.batch_size=-4"], "train.batch_size must be >= 1, got -4"),
    (["optim.lr=0"], "optim.lr must be > 0 and finite, got 0.0"),
    (["optim.lr=-0.1"], "optim.lr must be > 0 and finite, got -0.1"),
    (["clip=norm", "clip.threshold=-1"], "clip.threshold must be > 0 and finite, got -1.0"),
    (["bptt.truncation=0"], "bptt.truncation must be >= 1 or null (full BPTT), got 0"),
    (["task.seq_len=1"], "task.seq_len must be >= 2, got 1"),
    (["model.foo=1"], "Key 'foo' not in 'ModelConfig'"),
    (["foo=1"], "Key 'foo' not in 'Config'"),
    (["model=lstm", "model.norm=batch"], "model.norm=batch works with model.cell=rnn only"),
    (["bptt=chunked"], "bptt.mode=chunked needs task=char_lm"),
    (["tracking.uri=./mlruns"], "the ./mlruns file store is deprecated"),
    (["tracking.uri=ftp://host/store"], "unsupported tracking URI 'ftp://host/store'"),
    (["tracking.uri=http://127.0.0.1:9"], "tracking server http://127.0.0.1:9 is unreachable"),
    (["tracking.uri=http://alice:s3cret@127.0.0.1:9"], "tracking.uri must not carry credentials (http://***@127.0.0.1:9)"),
    (make_readonly, "is read-only"),
    (make_corrupt, "is not a SQLite database"),
    (make_foreign, "not an MLflow store; refusing to touch it"),
    (make_missing_folder, "does not exist: create the directory or fix tracking.uri"),
    (make_folder, "is a directory; name a database file in it"),
    (make_under_file, "is a file, not a directory"),
]


@pytest.mark.parametrize("bad, message", BAD_INPUT, ids=[str(b[0]) if isinstance(b[0], list) else b[0].__name__ for b in BAD_INPUT])
def test_bad_input_fails_clearly_and_leaves_nothing_running(tmp_path, bad, message):
    uri = bad(tmp_path) if callable(bad) else None
    overrides = [] if callable(bad) else bad
    if overrides and overrides[0].startswith("tracking.uri="):
        uri, overrides = overrides[0].split("=", 1)[1], []
    before = (tmp_path / "corrupt.db").read_bytes() if (tmp_path / "corrupt.db").exists() else None
    start = time.monotonic()
    proc = run_cli(tmp_path, *TINY, *overrides, uri=uri)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert message in output
    assert "Traceback" not in output
    assert "s3cret" not in output  # credentials are never echoed
    assert time.monotonic() - start < 60  # fails fast, no retry loop
    assert nothing_stored(tmp_path)  # nothing created, so nothing left RUNNING
    assert not (tmp_path / "typo").exists() and list((tmp_path / "adir").glob("*")) == []
    if callable(bad) and bad is make_foreign:
        with sqlite3.connect(tmp_path / "foreign.db") as db:
            assert [r[0] for r in db.execute("select name from sqlite_master")] == ["songs"]
    if before is not None:
        assert (tmp_path / "corrupt.db").read_bytes() == before
