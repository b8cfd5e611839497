"""The cluster path on real components (tests/cluster/stack.sh): the study's Slurm preset submits a sweep as
a job array to a one-node Slurm cluster with accounting; every job logs over HTTP, with basic auth, to an
MLflow server backed by PostgreSQL. Tiny runs: the machine has two cores."""

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from clihelpers import TINY, cli_args, environment, run_cli, runs, split_sweep
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster")]

ROOT = Path(__file__).resolve().parents[2]
SWEEP_TIMEOUT = 600  # seconds a sweep may take before the test calls it hung
POLL_TIMEOUT = 300
METRIC_POINTS = {"train/loss": 21, "grad/norm": 21, "eval/loss": 3, "spectral/radius": 3, "grad/norm_peak": 1}


def slurm_sweep(stack, name: str, *overrides: str) -> list[str]:
    """Overrides for a sweep on the stack's cluster through the project's Slurm preset (hydra/launcher=slurm):
    its partition, 1 GB per job (the node has 2), a job name to find the jobs by."""
    return [*TINY, *overrides, "hydra/launcher=slurm", f"hydra.launcher.partition={stack.env['STACK_PARTITION']}",
            "hydra.launcher.mem_gb=1", f"hydra.launcher.name={name}", f"tracking.experiment={name}"]


def array_jobs(stack, name: str) -> list[tuple[str, str]]:
    """(job id, state) of the allocations named `name`, from Slurm's accounting."""
    out = stack.slurm("sacct", "-n", "-X", "-P", "-o", "JobID,State", f"--name={name}")
    return sorted(tuple(line.split("|")) for line in out.splitlines() if line)


def every_point(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def files_with(secret: str, *folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def rows_with(stack, secret: str) -> list[tuple]:
    """Rows of the server's PostgreSQL tables (every table) that carry `secret`."""
    with psycopg.connect(stack.env["STACK_PG_URI"]) as db:
        tables = [r[0] for r in db.execute("select tablename from pg_tables where schemaname = 'public'")]
        return [(table, row) for table in tables for row in db.execute(f'select * from "{table}"')
                if secret in " ".join(map(str, row))]


@pytest.fixture(scope="module")
def client(stack):
    """A client of the server, with the jobs' account."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_USERNAME", stack.env["STACK_MLFLOW_USER"])
        patch.setenv("MLFLOW_TRACKING_PASSWORD", stack.password)
        yield MlflowClient(stack.url)


@pytest.fixture(scope="module")
def sweep(stack, client, tmp_path_factory):
    """A two-job sweep on the cluster, run once for the tests that read it."""
    tmp = tmp_path_factory.mktemp("sweep")
    start = time.monotonic()
    proc = run_cli(tmp, *slurm_sweep(stack, "cluster-sweep", "model.activation=tanh,relu"), multirun=True,
                   uri=stack.url, env=stack.job_env(), timeout=SWEEP_TIMEOUT)
    print(f"\nsweep of two jobs on the cluster: {time.monotonic() - start:.0f} s", flush=True)
    return tmp, proc


def test_slurm_preset_runs_a_sweep_as_a_job_array_logging_to_the_server(stack, client, sweep):
    tmp, proc = sweep
    assert proc.returncode == 0, proc.stderr
    jobs = array_jobs(stack, "cluster-sweep")
    array = jobs[0][0].split("_")[0]
    assert jobs == [(f"{array}_0", "COMPLETED"), (f"{array}_1", "COMPLETED")]  # one array, two tasks
    _, found = runs(tmp, "cluster-sweep", uri=stack.url)
    parents, children = split_sweep(found)
    assert len(parents) == 1 and sorted(r.info.run_name for r in children) == [
        "T8-relu-orth-s0-adding", "T8-tanh-orth-s0-adding"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.info.status for r in found} == {"FINISHED"}
    assert {r.info.experiment_id for r in found} == {client.get_experiment_by_name("cluster-sweep").experiment_id}
    assert client.search_runs(["0"]) == []  # nothing went astray into "Default"
    # each job ran on the cluster's node, under Slurm
    assert {r.data.tags["rnngrad.host"] for r in children} == {stack.slurm("sinfo", "-h", "-o", "%n").strip()}
    for run in children:
        for key, points in METRIC_POINTS.items():
            assert len(every_point(client, run.info.run_id, key)) == points, key
        assert every_point(client, run.info.run_id, "train/loss") == list(range(21))
        local = client.download_artifacts(run.info.run_id, "grad_norms.parquet", str(tmp))
        assert len(pd.read_parquet(local)) == 21 * 8
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"config.yaml", "figures", "grad_norms.parquet"}
        # the artifacts went through the server into its own artifact root
        assert (Path(stack.env["STACK_ARTIFACTS"]) / run.info.experiment_id / run.info.run_id / "artifacts"
                / "figures" / "grad_heatmap.png").is_file()
    # the server's store is the PostgreSQL database: the runs are its rows
    with psycopg.connect(stack.env["STACK_PG_URI"]) as db:
        (count,) = db.execute("select count(*) from runs where experiment_id = %s",
                              (int(found[0].info.experiment_id),)).fetchone()
    assert count == 3


def test_no_credential_reaches_params_tags_artifacts_hydra_files_or_job_logs(stack, client, sweep):
    tmp, proc = sweep
    assert proc.returncode == 0, proc.stderr
    assert any((tmp / "multirun").rglob(".hydra/overrides.yaml")) and any((tmp / "multirun").rglob("*_log.out"))
    # .hydra/ files, the jobs' logs and their submitit files; the server's artifact root; every table
    assert files_with(stack.password, tmp, Path(stack.env["STACK_ARTIFACTS"])) == []
    assert rows_with(stack, stack.password) == []
    assert stack.password not in proc.stdout + proc.stderr


def test_wrong_credentials_fail_fast_naming_the_server_not_the_password(stack, tmp_path):
    wrong = "not-the-password-" + stack.password[:4]
    proc = run_cli(tmp_path, *slurm_sweep(stack, "cluster-refused"), multirun=True, uri=stack.url,
                   env=stack.job_env(password=wrong), timeout=60)
    assert proc.returncode == 2
    assert f"tracking server {stack.url} refused user 'rnngrad' (HTTP 401)" in proc.stderr
    assert "Traceback" not in proc.stderr and wrong not in proc.stdout + proc.stderr
    assert not (tmp_path / "multirun").exists()  # nothing submitted
    assert array_jobs(stack, "cluster-refused") == []


def test_a_job_killed_by_slurm_ends_killed_and_a_rerun_redoes_only_it(stack, client, tmp_path):
    name = "cluster-kill"
    # a long job (20000 steps, about 20 s of training on a quiet machine: 4000 steps ended before scancel came,
    # once; few metrics, sent every second) and a short one, one at a time:
    # the long one launches first (the sweeper orders jobs by their work)
    long = ["train.eval_interval=1000", "train.diag_interval=1000", "tracking.metric_every=100",
            "tracking.flush_seconds=1", "hydra.launcher.array_parallelism=1"]
    args = cli_args(tmp_path, *slurm_sweep(stack, name, "train.steps=20,20000", *long), multirun=True, uri=stack.url)
    proc = subprocess.Popen(args, cwd=tmp_path, env=environment(stack.job_env()), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + POLL_TIMEOUT
        while True:  # until the long job is training
            _, found = runs(tmp_path, name, uri=stack.url)
            long_run = [r for r in found if r.data.params.get("train.steps") == "20000"]
            if long_run and client.get_metric_history(long_run[0].info.run_id, "train/loss"):
                break
            assert proc.poll() is None and time.monotonic() < deadline, [r.info.run_name for r in found]
            time.sleep(0.5)
        running = stack.slurm("squeue", "-h", "-t", "RUNNING", "-o", "%i", f"--name={name}").split()
        assert len(running) == 1 and running[0].endswith("_0")
        stack.slurm("scancel", running[0])
        out, err = proc.communicate(timeout=SWEEP_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode != 0, out[-2000:] + err[-3000:]
    # the sweep names the configuration whose job Slurm cancelled (the job closed its run KILLED on Slurm's SIGTERM)
    assert "KILLED   train.steps=20000" in err, err[-3000:]
    jobs = dict(array_jobs(stack, name))
    assert sorted(jobs.values()) == ["CANCELLED by 0", "COMPLETED"]
    _, found = runs(tmp_path, name, uri=stack.url)
    parents, children = split_sweep(found)
    assert [p.info.status for p in parents] == ["FAILED"]
    killed = [r for r in children if r.data.params["train.steps"] == "20000"]
    assert [r.info.status for r in killed] == ["KILLED"]
    assert killed[0].data.tags["rnngrad.killed_reason"] == "interrupted by SIGINT or SIGTERM"
    assert 0 < len(every_point(client, killed[0].info.run_id, "train/loss")) < 20000 // 100 + 1  # kept what it had logged, not the whole run

    rerun = subprocess.run(args, cwd=tmp_path, env=environment(stack.job_env()), capture_output=True, text=True,
                           timeout=SWEEP_TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr
    _, found = runs(tmp_path, name, uri=stack.url)
    parents, children = split_sweep(found)
    assert sorted(p.info.status for p in parents) == ["FAILED", "FINISHED"]
    by_config = {}
    for run in children:
        by_config.setdefault(run.data.params["train.steps"], []).append(run.info.status)
    # the short job was skipped (finished before), the killed one ran again to the end
    assert {k: sorted(v) for k, v in by_config.items()} == {"20": ["FINISHED"], "20000": ["FINISHED", "KILLED"]}
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len({r.data.tags["config_hash"] for r in finished}) == len(finished) == 2


def test_the_report_builds_from_the_server(stack, client, sweep, tmp_path):
    tmp, proc = sweep
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "report"
    build = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_report.py"), "--tracking-uri", stack.url,
         "--experiment", "cluster-sweep", "--out", str(out)],
        env=environment({k: v for k, v in stack.job_env().items() if k.startswith("MLFLOW_")}),
        capture_output=True, text=True, timeout=SWEEP_TIMEOUT)
    assert build.returncode == 0, build.stderr
    readme = (out / "README.md").read_text()
    assert stack.url in readme and stack.password not in readme
    assert any((out / "figures").glob("*.png"))
