"""The Hydra + MLflow layer through the real command line, into temporary stores."""

import io
import re
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from clihelpers import TINY, nothing_stored, run_cli, runs, split_sweep

from rnngrad import store
from rnngrad.app.tracking import loggable_overrides
from rnngrad.nn.model import backend_name

METRICS = {"train/loss", "eval/loss", "eval/accuracy", "grad/norm", "grad/clipped", "grad/ds_first",
           "grad/ds_last", "grad/decay_rate", "spectral/radius", "spectral/sigma_max", "act/saturation",
           "lyap/top"}


@pytest.mark.slow
def test_single_run_logs_params_tags_metrics_and_artifacts(tmp_path):
    proc = run_cli(tmp_path, *TINY, "clip=norm", "bptt.truncation=3", "seed=3")
    assert proc.returncode == 0, proc.stderr
    client, found = runs(tmp_path)
    assert len(found) == 1
    run = found[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "T8-tanh-orth-clipnorm1-k3-s3-adding"
    p = run.data.params
    assert (p["model.activation"], p["task.seq_len"], p["clip.mode"], p["bptt.truncation"], p["seed"]) == \
        ("tanh", "8", "norm", "3", "3")
    assert p["model.spectral_radius"] == "null" and p["task.name"] == "adding"
    assert p["backend"] == backend_name()  # the subprocess resolves $RNNGRAD_BACKEND as this one does
    tags = run.data.tags
    assert tags["outcome"] in ("solved", "unsolved") and len(tags["config_hash"]) == 16
    assert "clip=norm" in tags["hydra.overrides"] and "mlflow.parentRunId" not in tags
    assert (tags["task.length"], tags["task.dependency"], tags["steps_done"]) == ("8", "7", "20")  # sent with the metrics
    assert METRICS | {"grad/trunc_cosine"} <= set(run.data.metrics)
    history = client.get_metric_history(run.info.run_id, "grad/norm")
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "grad/norm_peak")] == \
        [(20, max(m.value for m in history))]
    # every step's scalar metrics, at step = training step
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == list(range(21))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/loss")] == [0, 10, 20]
    # log10 of the gradient norms through time at first, last and evenly spaced steps, against T - t
    through = sorted(k for k in run.data.metrics if k.startswith("grad_through_time/"))
    assert through == [f"grad_through_time/log10_step_{n}" for n in (0, 10, 20)]  # 3 checkpoints by default
    history = sorted(client.get_metric_history(run.info.run_id, "grad_through_time/log10_step_20"), key=lambda m: m.step)
    # T - t for t = 8..1 (every t when T <= 25 points) inside the truncation window k = 3: the norm is zero
    # beyond it, where log10 has no value
    assert [m.step for m in history] == [0, 1, 2]
    # artifacts
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {"config.yaml", "grad_norms.parquet", "figures"}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "figures")] == [
        "figures/grad_heatmap.png", "figures/grad_through_time.png"]
    local = client.download_artifacts(run.info.run_id, "grad_norms.parquet", str(tmp_path))
    frame = pd.read_parquet(local)
    assert list(frame.columns) == ["step", "t", "ds_norm", "jac_norm", "bound", "dc_norm"]
    assert len(frame) == 21 * 8 and frame["jac_norm"].notna().sum() == 3 * 8
    last = frame[frame.step == 20].sort_values("t")
    assert (last.ds_norm.to_numpy()[:-3] == 0).all()
    assert [m.value for m in history] == pytest.approx(np.log10(last.ds_norm.to_numpy()[::-1][:3]).tolist(), rel=1e-15)
    config = yaml.safe_load(io.StringIO(open(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read()))
    assert config["model"]["activation"] == "tanh" and config["bptt"]["truncation"] == 3


@pytest.mark.slow
def test_metric_every_thins_the_scalars_but_not_the_parquet(tmp_path):
    proc = run_cli(tmp_path, *TINY, "train.steps=23", "train.eval_interval=7", "tracking.metric_every=5",
                   "tracking.through_time_points=3")
    assert proc.returncode == 0, proc.stderr
    client, (run,) = runs(tmp_path)
    steps = lambda key: [m.step for m in client.get_metric_history(run.info.run_id, key)]  # noqa: E731
    # every 5th step, every evaluation/diagnostic step (7, 14, 21 and 10, 20) and the last step
    assert steps("train/loss") == [0, 5, 7, 10, 14, 15, 20, 21, 23]
    assert steps("eval/loss") == [0, 7, 14, 21, 23]
    # the through-time curves at 3 of the T = 8 distances T - t: 0, a 1-2-5 stride (5), the farthest
    assert steps("grad_through_time/log10_step_23") == [0, 5, 7]
    frame = pd.read_parquet(client.download_artifacts(run.info.run_id, "grad_norms.parquet", str(tmp_path)))
    assert sorted(frame.step.unique()) == list(range(24))


@pytest.mark.slow
def test_multirun_makes_one_parent_and_children_then_resumes(tmp_path):
    sweep = ["model.activation=tanh,relu", "seed=0,1", *TINY, "train.verbose=true", "hydra.launcher.n_jobs=2"]
    proc = run_cli(tmp_path, *sweep, "tracking.experiment=sweeptest", multirun=True)
    assert proc.returncode == 0, proc.stderr
    client, found = runs(tmp_path, "sweeptest")
    parents, children = split_sweep(found)
    assert len(parents) == 1 and len(children) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert all(r.info.status == "FINISHED" for r in found)
    assert sorted(r.info.run_name for r in children) == [
        "T8-relu-orth-s0-adding", "T8-relu-orth-s1-adding", "T8-tanh-orth-s0-adding", "T8-tanh-orth-s1-adding"]
    assert len({r.data.tags["config_hash"] for r in children}) == 4
    # the console: each job's lines start with its run name (3 step lines: steps 0, 10, 20, and the outcome)
    names = {r.info.run_name: r for r in children}
    job_lines = [line for line in proc.stdout.splitlines() if re.search(r"\bstep +\d|\boutcome \w", line)]
    assert len(job_lines) == 4 * 4
    for name, run in names.items():
        assert sum(line.startswith(f"{name} step ") for line in job_lines) == 3
        assert f"{name} outcome {run.data.tags['outcome']}" in job_lines
    # progress over the sweep (a pipe: plain lines), ending with every job done
    progress = [line for line in proc.stderr.splitlines() if line.startswith("sweep: ")]
    assert progress and progress[-1].startswith("sweep: 4/4 jobs done, ") and "elapsed" in progress[-1]
    # the end table: a row per job with its outcome, final train loss and run id; then the UI's address
    fields = [line.split() for line in proc.stdout.splitlines() if line not in job_lines]
    rows = {f[0]: f for f in fields if f and f[0] in names}
    assert set(rows) == set(names)
    for name, run in names.items():
        assert rows[name][1] == run.data.tags["outcome"] and rows[name][-1] == run.info.run_id
        assert float(rows[name][2]) == pytest.approx(run.data.metrics["train/loss"], rel=1e-3)
    assert f"http://127.0.0.1:5000/#/experiments/{children[0].info.experiment_id}/runs" in proc.stdout
    assert "Joblib.Parallel" not in proc.stdout + proc.stderr and "Launching jobs" not in proc.stdout + proc.stderr
    # resume: the same sweep again says every job finished before and creates nothing, not even a parent run
    proc = run_cli(tmp_path, *sweep, "tracking.experiment=sweeptest", multirun=True)
    assert proc.returncode == 0, proc.stderr
    assert "all 4 jobs already have a FINISHED run" in proc.stdout and "no run created" in proc.stdout
    assert proc.stdout.count("(finished before: skipped)") == 4 and " step " not in proc.stdout
    _, again = runs(tmp_path, "sweeptest")
    assert sorted(r.info.run_id for r in again) == sorted(r.info.run_id for r in found)


@pytest.mark.slow
def test_a_single_run_asked_for_again_runs_again(tmp_path):
    # only a sweep skips what finished before; and its lines start with its run name
    first = run_cli(tmp_path, *TINY, "train.verbose=true")
    again = run_cli(tmp_path, *TINY, "train.verbose=true")
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    _, found = runs(tmp_path)
    assert len(found) == 2 and {r.info.status for r in found} == {"FINISHED"}
    assert len({r.data.tags["config_hash"] for r in found}) == 1
    assert "skipped" not in again.stdout
    assert f"T8-tanh-orth-s0-adding outcome {found[0].data.tags['outcome']}" in again.stdout.splitlines()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.activation=softplus"], "expected one of [sigmoid, tanh, relu, linear]"),
        (["task=fourier"], "Available options in 'task'"),
        (["model.hidden_size=-3"], "model.hidden_size must be > 0, got -3"),
        (["model.foo=1"], "Key 'foo' not in 'ModelConfig'"),
        (["optim.lr=0"], "optim.lr must be > 0"),
        (["-m", "model.hidden_size=8,-3"], "model.hidden_size must be > 0, got -3"),
        # checked on 2 workers in chunks of 2 jobs: the first bad job in the sweep's order is named
        (["-m", "model.hidden_size=8,4,12,16,20,-5,2,-3,24"], "model.hidden_size must be > 0, got -5"),
        (["-m", "model.activation=tanh,softplus"], "expected one of [sigmoid, tanh, relu, linear]"),
    ],
)
def test_bad_overrides_fail_without_creating_anything(tmp_path, overrides, message):
    multirun = overrides[0] == "-m"
    proc = run_cli(tmp_path, *TINY, *[o for o in overrides if o != "-m"], multirun=multirun)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert nothing_stored(tmp_path)  # no store, no experiment, no run


def test_uri_resolution_and_redaction(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert store.resolve_uri(None) == f"sqlite:///{store.PROJECT_ROOT / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert store.resolve_uri(None) == "http://127.0.0.1:5999"
    monkeypatch.chdir(tmp_path)
    assert store.resolve_uri("sqlite:///rel/x.db") == f"sqlite:///{tmp_path / 'rel' / 'x.db'}"
    with pytest.raises(ValueError, match="file store is deprecated"):
        store.resolve_uri("./mlruns")
    assert store.redact("http://alice:s3cret@host:5000/path") == "http://***@host:5000/path"
    assert store.artifact_location("sqlite:////a/b/mlflow.db") == "file:///a/b/mlartifacts"


def test_a_grid_experiment_without_multirun_is_refused_naming_dash_m(tmp_path):
    proc = run_cli(tmp_path, *TINY, "experiment=seqlen")
    assert proc.returncode == 2
    assert "experiment=seqlen is a sweep" in proc.stderr and "run it with -m" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert nothing_stored(tmp_path)  # no store, no experiment, no run


@pytest.mark.slow
def test_an_experiment_is_selected_without_a_plus(tmp_path):
    # the precision grid (8 jobs), shrunk by the command line, which wins over grid values; 2 of its jobs
    proc = run_cli(tmp_path, *TINY, "experiment=precision", "hydra.sweeper.shard=0/4", multirun=True)
    assert proc.returncode == 0, proc.stderr
    _, found = runs(tmp_path)
    parents, children = split_sweep(found)
    assert len(parents) == 1 and parents[0].info.run_name.startswith("sweep-precision-")
    assert len(children) == 2 and {r.data.params["question"] for r in children} == {"precision"}
    assert {r.info.status for r in found} == {"FINISHED"}


def test_logged_overrides_are_parsed_by_hydra_and_redacted():
    overrides = ["model.activation=relu", r"tracking.uri=http\://alice\:s3cret@host\:5000/p", "tracking.uri=null",
                 "++tracking.uri=http://bob:pw@host:5000", "seed=3"]
    assert loggable_overrides(overrides) == ("model.activation=relu tracking.uri=http://***@host:5000/p "
                                             "tracking.uri=null ++tracking.uri=http://***@host:5000 seed=3")


def test_a_jobs_lines_and_log_records_start_with_its_run_name(capsys):
    import logging

    from rnngrad.app.console import job_output

    logger = logging.getLogger("rnngrad.test.console")
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    try:
        with job_output("T8-relu-orth-s1-adding"):
            print("step      0  loss 1\noutcome unsolved")
            sys.stdout.write("no newline yet")
            logger.warning("from a logger")
    finally:
        logger.removeHandler(handler)
    out, err = capsys.readouterr()
    assert out.splitlines() == ["T8-relu-orth-s1-adding step      0  loss 1",
                                "T8-relu-orth-s1-adding outcome unsolved",
                                "T8-relu-orth-s1-adding no newline yet"]
    assert err == "T8-relu-orth-s1-adding from a logger\n"
    print("after")
    assert capsys.readouterr().out == "after\n"
