"""`rnngrad ui`: refuses a store that does not exist, serves one that does, and its printed address
opens, in a real headless Chromium, the runs table listing a sweep's jobs by name."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

import psutil
import pytest
from clihelpers import TINY, environment, free_port, run_cli, runs, split_sweep, store_uri

UI = [sys.executable, "-m", "rnngrad.cli", "ui"]
START_SECONDS = 180  # bounds on a loaded 2-core machine; the UI answers in a few seconds on a quiet one
STOP_SECONDS = 30
APT_SECONDS = 600


def test_ui_refuses_a_store_that_does_not_exist_and_creates_nothing(tmp_path):
    missing = tmp_path / "nodir" / "mlflow.db"
    proc = subprocess.run([*UI, "--uri", f"sqlite:///{missing}"], capture_output=True, text=True, timeout=120,
                          env=environment(), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == f"rnngrad ui: no MLflow store at {missing}; run a sweep first (make study) or pass --uri\n"
    assert list(tmp_path.iterdir()) == []  # no folder, no database, no mlruns/ or mlartifacts/
    # without --uri, MLFLOW_TRACKING_URI decides
    from_env = tmp_path / "env.db"
    proc = subprocess.run(UI, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=environment({"MLFLOW_TRACKING_URI": f"sqlite:///{from_env}"}))
    assert proc.returncode == 2 and f"no MLflow store at {from_env}" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_ui_refuses_a_tracking_server_uri():
    proc = subprocess.run([*UI, "--uri", "http://alice:s3cret@127.0.0.1:1"], capture_output=True, text=True,
                          timeout=120, env=environment())
    assert proc.returncode == 2
    assert "http://***@127.0.0.1:1 is a tracking server, which serves its own UI" in proc.stderr
    assert "s3cret" not in proc.stderr


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory):
    """A sweep of three jobs, made by the app: the parent run and its three children."""
    root = tmp_path_factory.mktemp("ui")
    proc = run_cli(root, *TINY, "model.activation=tanh,relu,sigmoid", "hydra.launcher.n_jobs=2", multirun=True)
    assert proc.returncode == 0, proc.stderr
    _, found = runs(root)
    parents, children = split_sweep(found)
    assert len(parents) == 1 and len(children) == 3
    return store_uri(root), parents[0], children


@contextmanager
def serving(uri: str):
    """`rnngrad ui` over `uri` on a free port, once it answers: (its address, the process, the URL it printed)."""
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([*UI, "--uri", uri, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=environment())
    try:
        started = time.monotonic()
        while True:
            try:
                get(address + "/health")
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() - started < START_SECONDS, "rnngrad ui did not answer"
                time.sleep(0.2)
        # printed before the server accepts its first request, so these lines are there
        assert proc.stdout.readline().startswith("MLflow UI over ")
        yield address, proc, proc.stdout.readline().strip()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_SECONDS)


def get(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read().decode()


@pytest.mark.slow
def test_ui_serves_the_store_in_one_process_and_stops_on_ctrl_c(sweep_store):
    uri, parent, children = sweep_store
    with serving(uri) as (address, proc, url):
        assert get(address + "/health") == (200, "OK")
        status, body = get(address + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=rnngrad")
        experiment_id = json.loads(body)["experiment"]["experiment_id"]
        assert status == 200 and experiment_id == parent.info.experiment_id
        assert url == (f"{address}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
                       "&orderByKey=tags.%60mlflow.runName%60&orderByAsc=true")
        _, body = get(address + f"/api/2.0/mlflow/runs/get?run_id={children[0].info.run_id}")
        assert json.loads(body)["run"]["info"]["run_name"] == children[0].info.run_name
        assert psutil.Process(proc.pid).children(recursive=True) == []  # no workers, no job runner
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=STOP_SECONDS) == 0
        err = proc.stderr.read()
        assert "warning" not in err.lower(), err  # MLflow's deprecation warnings silenced
        with pytest.raises(OSError):
            get(address + "/health")


@pytest.mark.slow
def test_the_printed_address_lists_the_sweeps_runs_by_name_in_chromium(sweep_store, tmp_path):
    uri, parent, children = sweep_store
    browser = chromium()
    with serving(uri) as (_, _, url):
        proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=30000",
                               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1600,900", "--dump-dom", url],
                              capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    exp = parent.info.experiment_id
    # every run is a row of the table (sorted by name, none folded under the parent): a link to the run
    # whose text is the run's full name
    for run in [parent, *children]:
        link = re.search(rf'href="#/experiments/{exp}/runs/{run.info.run_id}"><span[^>]*>([^<]*)</span>', proc.stdout)
        assert link is not None, f"{run.info.run_name} is not in the runs table"
        assert link.group(1) == run.info.run_name


def chromium() -> str:
    """Debian's chromium, installed with apt-get when absent (bounded); skipped, saying why, if it cannot be."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and cannot be (needs root and apt-get): apt-get install chromium")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        for step in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
            done = subprocess.run(step, capture_output=True, text=True, timeout=APT_SECONDS, env=env)
            if done.returncode != 0:
                pytest.skip(f"{' '.join(step)} failed: {done.stderr.strip()[-300:]}")
    except subprocess.TimeoutExpired:
        pytest.skip(f"installing chromium took over {APT_SECONDS} s")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium but it is not on PATH")
    return found


def test_a_port_whose_last_server_just_stopped_is_not_refused_as_taken():
    """Ctrl-C, then `rnngrad ui` again at once: the stopped server's connections sit in TIME_WAIT, which
    uvicorn's bind (SO_REUSEADDR) accepts, so the port check must too; a port in use stays refused."""
    import socket

    from clihelpers import free_port
    from rnngrad import cli, store

    port = free_port()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    with pytest.raises(store.StoreError, match=f"port {port} on 127.0.0.1 is taken"):
        cli._check_port(port)  # listening: taken
    conn.close()  # the server side closes first: its end of the connection enters TIME_WAIT
    server.close()
    client.close()
    cli._check_port(port)  # no error
