"""Past one machine: a real MLflow tracking server and the submitit launcher (Slurm's code path)."""

import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from clihelpers import TINY, free_port, run_cli, runs, split_sweep, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 and a free port, with its own SQLite backend and artifact root."""
    root = tmp_path_factory.mktemp("server")
    proc, url = start_server(root, free_port())
    yield url, root
    proc.terminate()
    proc.wait(timeout=30)


def test_sweep_into_a_tracking_server_with_credentials_from_the_environment(server, tmp_path):
    url, root = server
    proc = run_cli(tmp_path, *TINY, "model.activation=tanh,relu", "tracking.experiment=remote", multirun=True, uri=url,
                   env={"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "s3cret"})
    assert proc.returncode == 0, proc.stderr
    client, found = runs(tmp_path, "remote", uri=url)
    parents, children = split_sweep(found)
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.info.status for r in found} == {"FINISHED"}
    for run in children:  # the artifacts went through the server to its artifact root
        local = client.download_artifacts(run.info.run_id, "grad_norms.parquet", str(tmp_path))
        assert len(pd.read_parquet(local)) == 21 * 8
        assert run.data.params["tracking.uri"] == url
        config = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text()
        assert "s3cret" not in config and f"uri: {url}" in config
    assert any((root / "artifacts").rglob("grad_heatmap.png"))
    # nothing the server stored carries the password: params, tags, experiment
    with sqlite3.connect(root / "server.db") as db:
        for table in ("params", "tags", "experiment_tags", "experiments"):
            leaks = [row for row in db.execute(f"select * from {table}") if any("s3cret" in str(v) for v in row)]
            assert leaks == [], table
    assert "s3cret" not in proc.stdout + proc.stderr
    assert not [p for p in (tmp_path / "multirun").rglob("*") if p.is_file() and b"s3cret" in p.read_bytes()]


def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    proc = run_cli(tmp_path, *TINY, "model.activation=tanh,relu", "hydra/launcher=submitit_local", multirun=True)
    assert proc.returncode == 0, proc.stderr
    client, found = runs(tmp_path)
    parents, children = split_sweep(found)
    assert len(parents) == 1 and sorted(r.info.run_name for r in children) == [
        "T8-relu-orth-s0-adding", "T8-tanh-orth-s0-adding"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.info.status for r in found} == {"FINISHED"}
    assert len(client.get_metric_history(children[0].info.run_id, "train/loss")) == 21


def test_slurm_preset_composes(tmp_path):
    """The documented Slurm preset: one CPU and one BLAS thread per job, partition set by the user."""
    from hydra import compose, initialize_config_dir

    import rnngrad.app.main  # noqa: F401  (registers the schema)

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=cpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.cpus_per_task, launcher.array_parallelism) == ("cpu", 1, 64)
    assert "OPENBLAS_NUM_THREADS=1" in launcher.setup[0]
