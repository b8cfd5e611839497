"""A sweep's configurations finish exactly once whatever happens to its processes (issue 16): a killed or
signalled parent, two identical sweeps at once, a tracking server that dies mid-sweep."""

import os
import signal
import sqlite3
import time
from collections import Counter

import psutil
import pytest
from clihelpers import free_port, output, run_cli, runs, split_sweep, start_server, start_sweep, store_uri

from rnngrad.app import guard

pytestmark = pytest.mark.timeout(600)

# tiny runs; the tracking keys are not part of a configuration (config_hash), so a sweep that logs and
# commits every step (SLOW: seconds a job, long enough to be caught running) and one that logs every 50th
# step (FAST: the rerun that completes it) sweep the same configurations
GRID = ["task.seq_len=8", "model.hidden_size=8", "train.steps=400", "train.eval_interval=200", "task.test_size=32",
        "train.verbose=false", "seed=0,1,2,3"]
TWO = ["hydra.launcher.n_jobs=2"]  # two worker processes
SLOW = ["tracking.metric_every=1", "tracking.flush_seconds=0"]
FAST = ["tracking.metric_every=50"]
LONG = ["train.steps=100000"]  # never finishes by itself
# a dead server fails a client call in seconds, not MLflow's default minutes (7 retries, 120 s timeouts)
CLIENT = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
          "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def wait_for_runs(db_path, count: int, min_points: int = 3, timeout: float = 240) -> list[str]:
    """Wait until `count` runs of the SQLite database at db_path each logged `min_points` train/loss points
    (read-only sqlite3: a client could race the store's creation); returns their ids."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
                rows = db.execute("select run_uuid from metrics where key = 'train/loss' group by run_uuid "
                                  "having count(*) >= ?", (min_points,)).fetchall()
        except sqlite3.Error:
            continue
        if len(rows) >= count:
            return [r[0] for r in rows]
    raise AssertionError(f"{count} runs never logged {min_points} points")


def finished_per_config(found) -> list[int]:
    """How many FINISHED runs each configuration (config_hash) of the sweep's children has."""
    _, children = split_sweep(found)
    counts = Counter(r.data.tags["config_hash"] for r in children if r.info.status == "FINISHED")
    return sorted(counts.get(h, 0) for h in {r.data.tags["config_hash"] for r in children})


def statuses(found) -> tuple[list[str], list[str]]:
    parents, children = split_sweep(found)
    return sorted(r.info.status for r in parents), sorted(r.info.status for r in children)


def gone(pids, timeout: float) -> float:
    """Seconds until every pid is gone (a zombie counts as gone); fails after timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"processes {alive} outlived their sweep's parent by {timeout} s")


@pytest.mark.slow
def test_killed_parent_leaves_no_orphan_and_a_rerun_finishes_each_configuration_once(tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    store_uri(tmp_path)
    proc = start_sweep(tmp_path, *GRID, *TWO, *SLOW, name="killed")
    running = wait_for_runs(db, 2)
    descendants = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    assert len(descendants) >= 2  # the loky workers (and loky's resource tracker)
    proc.kill()
    proc.wait(timeout=30)
    rerun = start_sweep(tmp_path, *GRID, *TWO, *FAST)  # at once, not waiting for the orphans
    seconds = gone(descendants, timeout=30)
    print(f"the last of {len(descendants)} orphans ended {seconds:.1f} s after the parent's SIGKILL")
    assert seconds < 25  # the watchdog's poll (0.5 s), a step, the flush and the close; EXIT_GRACE (20 s) at most
    assert rerun.wait(timeout=400) == 0, output(tmp_path)
    client, found = runs(tmp_path)
    assert finished_per_config(found) == [1, 1, 1, 1]
    parents, children = statuses(found)
    assert parents == ["FINISHED", "KILLED"]
    killed = [r for r in found if r.info.status == "KILLED" and r.data.tags.get("rnngrad.sweep") != "true"]
    assert {r.info.run_id for r in killed} == set(running) and children == ["FINISHED"] * 4 + ["KILLED"] * 2
    # the orphans closed their own runs after flushing (their watchdog saw the parent die)
    for run in killed:
        assert "the sweep's parent process" in run.data.tags["rnngrad.killed_reason"]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert steps == list(range(len(steps))) and len(steps) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("fresh", [True, False], ids=["fresh-store", "existing-store"])
def test_two_identical_sweeps_at_once_run_each_configuration_once(tmp_path, fresh):
    if not fresh:
        from storehelpers import create_experiment

        create_experiment(store_uri(tmp_path), "rnngrad")
    # two jobs in the sweep's process (no workers to start), ten seconds or so each
    grid = [*GRID, *SLOW, "seed=0,1", "train.steps=200", "hydra.launcher.n_jobs=1"]
    procs = [start_sweep(tmp_path, *grid, f"hydra.sweep.dir={tmp_path / name}", name=name) for name in ("a", "b")]
    codes = [p.wait(timeout=400) for p in procs]
    texts = [output(tmp_path, name) for name in ("a", "b")]
    assert sorted(codes) == [0, 2], texts
    out, err = texts[codes.index(2)]
    assert "error: experiment 'rnngrad' is being swept by sweep sweep-adhoc-" in err and "Traceback" not in err
    winner_pid = procs[codes.index(0)].pid
    assert f"pid {winner_pid} on " in err and f"kill {winner_pid}" in err
    assert not any("already exists" in o + e for o, e in texts)
    _, found = runs(tmp_path)
    assert finished_per_config(found) == [1, 1]
    assert statuses(found) == (["FINISHED"], ["FINISHED", "FINISHED"])  # the refused sweep created no run


@pytest.mark.slow
# SIGINT to a sweep whose jobs run in its own process (the basic launcher): one job runs at a time, and
# hears the signal itself
@pytest.mark.parametrize("sig, launcher, running, reason", [
    (signal.SIGTERM, TWO, 2, "the sweep was stopped by SIGTERM"),
    (signal.SIGINT, ["hydra/launcher=basic"], 1, "interrupted by SIGINT or SIGTERM"),
], ids=["SIGTERM-joblib", "SIGINT-basic"])
def test_signal_to_the_sweeps_parent_ends_its_jobs_killed_and_names_the_rest(tmp_path, sig, launcher, running, reason):
    db = tmp_path / "store" / "mlflow.db"
    store_uri(tmp_path)
    proc = start_sweep(tmp_path, *GRID, *launcher, *SLOW, *LONG)
    running = wait_for_runs(db, running)
    descendants = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    out, err = output(tmp_path)
    assert code == 128 + sig, err
    assert gone(descendants, timeout=30) < 25  # no worker outlives the sweep
    client, found = runs(tmp_path)
    assert statuses(found) == (["KILLED"], ["KILLED"] * len(running))  # the others never began
    name = signal.Signals(sig).name
    for run in found:
        if run.data.tags.get("rnngrad.sweep") != "true":
            assert run.info.run_id in running
            assert run.data.tags["rnngrad.killed_reason"] == reason
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
            assert steps == list(range(len(steps))) and len(steps) >= 3  # flushed, none lost
    assert f"sweep KILLED (the sweep was stopped by {name}): 4 of 4 configurations did not finish" in err
    lines = [line.split() for line in err.splitlines() if line.startswith("  ")]
    assert sorted(line[0] for line in lines) == ["KILLED"] * len(running) + ["NOT_RUN"] * (4 - len(running))
    assert sorted(next(w for w in line if w.startswith("seed=")) for line in lines) == [f"seed={i}" for i in range(4)]
    assert "Traceback" not in err
    assert not list((tmp_path / "multirun").glob(".rnngrad-stop-*"))


@pytest.mark.slow
def test_a_server_dying_mid_sweep_fails_it_clearly_and_a_rerun_completes_it(tmp_path):
    root = tmp_path / "server"
    root.mkdir()
    port = free_port()
    server, url = start_server(root, port)
    try:
        proc = start_sweep(tmp_path, *GRID, *TWO, *SLOW, uri=url, env=CLIENT)
        wait_for_runs(root / "server.db", 2)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        start = time.monotonic()
        code = proc.wait(timeout=300)
        seconds = time.monotonic() - start
        out, err = output(tmp_path)
        print(f"the sweep ended {seconds:.1f} s after its server died")
        assert code == 1, err
        assert seconds < 90  # no hang: MLflow's defaults took 16.5 minutes
        assert f"error: tracking server {url} failed to answer (timeout 5 s, 1 retries" in err and "did not finish" in err
        assert "4 of 4 configurations did not finish" in err
        lines = [line.split()[0] for line in err.splitlines() if line.startswith("  ")]
        assert sorted(lines) == ["FAILED", "FAILED", "NOT_RUN", "NOT_RUN"]
        assert "left RUNNING; the next sweep marks it KILLED" in err
        assert "Traceback" not in err
        server, url = start_server(root, port)
        rerun = run_cli(tmp_path, *GRID, *TWO, *FAST, multirun=True, uri=url, env=CLIENT)
        assert rerun.returncode == 0, rerun.stderr
        _, found = runs(tmp_path, uri=url)
        assert finished_per_config(found) == [1, 1, 1, 1]
        parents, children = statuses(found)
        assert parents == ["FINISHED", "KILLED"] and children == ["FINISHED"] * 4 + ["KILLED"] * 2
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def test_the_store_lock_is_exclusive_and_its_wait_bounded(tmp_path):
    uri = store_uri(tmp_path)
    with guard.store_lock(uri):
        start = time.monotonic()
        with pytest.raises(guard.SweepBusy, match=r"held the lock on the store's directory .*store for over 0 s"):
            with guard.store_lock(uri, seconds=0.3):
                pass
        assert 0.3 <= time.monotonic() - start < 5
    with guard.store_lock(uri, seconds=0.3):  # released
        pass
    assert list((tmp_path / "store").iterdir()) == []  # no store created, nothing beside it


def test_only_shards_of_one_split_are_disjoint():
    assert not guard.shards_overlap("0/2", "1/2")
    assert guard.shards_overlap("0/2", "0/2") and guard.shards_overlap("0/2", "1/3")
    assert guard.shards_overlap(None, "1/2") and guard.shards_overlap(None, None)


def test_the_report_names_what_tells_the_unfinished_jobs_apart():
    jobs = [["model.hidden_size=8", "seed=0"], ["model.hidden_size=8", "seed=1"], ["model.hidden_size=8", "seed=2"]]
    assert guard.report(jobs, ["FINISHED", "KILLED", "NOT_RUN"]) == ["  KILLED   seed=1", "  NOT_RUN  seed=2"]
    assert guard.report(jobs[:1], ["FAILED"]) == ["  FAILED   model.hidden_size=8 seed=0"]


def test_a_process_is_known_by_its_start_ticks_whatever_the_wall_clock_did(monkeypatch):
    """A step of the wall clock (a virtual machine resumed after a pause) moved psutil's create_time of a live
    sweep parent past the time its workers had been given, and they killed their jobs as orphans: the
    parent is now named by its start in clock ticks since boot, which no clock step moves."""
    import os

    import psutil

    from rnngrad.app import guard

    token = guard.start_token(os.getpid())
    created = psutil.Process().create_time()
    monkeypatch.setattr(psutil.Process, "create_time", lambda self: created + 3600.0)  # the clock stepped an hour
    assert guard.same_process(os.getpid(), token)
    assert not guard.process_alive(os.getpid(), created)  # what the old test by create_time concluded
    assert not guard.same_process(os.getpid(), "ticks:1") and not guard.same_process(2**22 + 12345, token)
    host, pid, rest = guard.this_process().split(":", 2)
    assert int(pid) == os.getpid() and rest == token
