"""Runs that tell their story in the MLflow UI: descriptions, readable names, the through-time curves
against the distance from the loss, the per-run figures, and no empty "Default" experiment."""

import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest
from clihelpers import TINY, run_cli, runs, split_sweep
from matplotlib.image import imread
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from runconfig import run_config

from rnngrad import config
from rnngrad.app import tracking
from rnngrad.training import Result

TINY_PRESET = """# @package _global_
# Question: does a tiny sweep tell its story? Two activations at T = 8.
# A second line of the question.
hydra:
  sweeper:
    grids:
      tiny:
        question: tiny
        model.activation: tanh,relu
"""


@pytest.mark.parametrize("T, count, expected", [
    (8, 25, list(range(8))),  # every distance when they fit
    (25, 25, list(range(25))),
    (26, 25, list(range(0, 26, 2)) + [25]),  # stride 2 (14 points), the farthest distance included
    (100, 25, list(range(0, 100, 5)) + [99]),
    (200, 25, list(range(0, 200, 10)) + [199]),
    (8, 3, [0, 5, 7]),
    (1000, 2, [0, 999]),
])
def test_distances_are_a_1_2_5_stride_from_the_loss_and_the_farthest_one(T, count, expected):
    d = tracking.distances(T, count)
    assert d.tolist() == expected and len(d) <= count


def test_distances_keep_to_the_count_at_the_finest_1_2_5_stride():
    strides = [m * 10**e for e in range(4) for m in (1, 2, 5)]
    for T in range(2, 400):
        for count in (2, 3, 7, 25):
            d = tracking.distances(T, count)
            assert d[0] == 0 and d[-1] == T - 1 and len(d) <= count
            if T > count and len(d) > 2:  # (two points: 0 and T - 1 at any stride >= T - 1)
                stride = int(d[1])
                assert set(np.diff(d[:-1]).tolist()) <= {stride} and d[-1] - d[-2] <= stride
                finer = strides[strides.index(stride) - 1]  # would not keep to the count
                assert -(-(T - 1) // finer) + 1 > count


def test_run_names_put_T_activation_and_init_first_and_the_task_short():
    assert config.run_name(run_config()) == "T50-tanh-orth-s0-adding"
    cfg = run_config("task.name=temporal_order", "task.seq_len=20", "model.init=gaussian", "model.spectral_radius=1.5",
                     "clip.mode=norm", "clip.threshold=10", "bptt.truncation=4", "seed=2", "question=truncation")
    assert config.run_name(cfg) == "T20-tanh-gauss-rho1.5-clipnorm10-k4-s2-order-truncation"
    cfg = run_config("model.cell=lstm", "task.name=copy", "task.seq_len=10", "model.dtype=float32")
    assert config.run_name(cfg) == "T10-lstm-orth-float32-s0-copy"
    # the learning rate and the batch norm's gain only when they depart from the schema's defaults (1e-3, 0.1)
    cfg = run_config("model.norm=batch", "model.bn_gain=1", "optim.name=sgd", "optim.lr=0.01")
    assert config.run_name(cfg) == "T50-tanh-batchnorm-gain1-orth-lr0.01-s0-adding"
    assert config.run_name(run_config("model.norm=batch", "model.bn_gain=0.1")) == "T50-tanh-batchnorm-orth-s0-adding"


def test_a_run_description_states_its_configuration_and_outcome():
    cfg = run_config("model.activation=relu", "model.spectral_radius=1.3", "clip.mode=norm", "seed=4",
                     "question=clipping")
    assert tracking.run_description(cfg) == (
        "A relu RNN (64 units, orthogonal init at spectral radius 1.3, float64) on adding with T = 50, trained "
        "1000 steps with adam (lr 0.001, batch 32), full BPTT, norm clipping at 1; seed 4, for the clipping question.")
    assert tracking.run_description(run_config("train.steps=0", "model.cell=gru")).startswith(
        "A GRU (64 units, orthogonal init, float64) on adding with T = 50, measured at initialization, no training;")
    final = {"eval/loss": 0.01234, "eval/accuracy": 0.97, "grad/decay_rate": -0.0512}
    solved = Result("solved", 300, solved_at=300, final=final, grad_norm_peak=12.5, baseline=0.1667)
    assert tracking.outcome_sentence(solved) == (
        "Solved at step 300: final eval loss 0.01234 (constant predictor 0.1667), accuracy 0.97, peak gradient "
        "norm 12.5, gradient decay rate -0.0512 per time step (natural log).")
    diverged = Result("diverged", 12, diverged_at=12, diverged_reason="non-finite loss")
    assert tracking.outcome_sentence(diverged) == "Diverged at step 12 (non-finite loss)."
    assert tracking.outcome_sentence(Result("unsolved", 0, final=final)).startswith("At initialization: final eval")
    assert tracking.outcome_sentence(Result("unsolved", 1000)) == "Unsolved after 1000 steps."


@pytest.fixture(scope="module")
def blank_store(tmp_path_factory):
    """A migrated MLflow SQLite store with only MLflow's own "Default" experiment (copies are cheap)."""
    path = tmp_path_factory.mktemp("blank") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def test_prepare_store_deletes_an_empty_default_experiment_and_keeps_one_with_runs(tmp_path, blank_store):
    for name in ("empty", "used"):
        (tmp_path / name).mkdir()
        shutil.copy(blank_store, tmp_path / name / "mlflow.db")
    used = f"sqlite:///{tmp_path / 'used' / 'mlflow.db'}"
    MlflowClient(used).create_run("0")
    for name, visible in (("empty", ["study"]), ("used", ["study", "Default"])):
        uri = f"sqlite:///{tmp_path / name / 'mlflow.db'}"
        exp_id = tracking.prepare_store(uri, "study", command="python -m rnngrad.train")
        client = MlflowClient(uri)
        # what the UI lists: the active experiments
        assert sorted(e.name for e in client.search_experiments()) == sorted(visible), name
        assert tracking.prepare_store(uri, "study") == exp_id  # found again, nothing more deleted
        assert sorted(e.name for e in client.search_experiments(view_type=ViewType.ALL)) == ["Default", "study"]
        note = client.get_experiment(exp_id).tags[tracking.NOTE]
        assert "grad_through_time/log10_step_<N>" in note and note.endswith(
            "Described when `python -m rnngrad.train` first logged to it.")


def pragmas(uri: str) -> tuple[str, int]:
    """The journal mode and the synchronous level (1 NORMAL, 2 FULL) of MLflow's own connection to a store."""
    with MlflowClient(uri)._tracking_client.store.engine.connect() as db:
        return (db.exec_driver_sql("PRAGMA journal_mode").scalar(), db.exec_driver_sql("PRAGMA synchronous").scalar())


def test_a_new_store_is_write_ahead_logged_and_mlflow_commits_to_it_without_syncing_the_disk(tmp_path, blank_store):
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    tracking.prepare_store(uri, "study")
    assert pragmas(uri) == ("wal", 1)
    shutil.copy(blank_store, tmp_path / "old.db")  # a store made without WAL keeps SQLite's defaults
    old = f"sqlite:///{tmp_path / 'old.db'}"
    tracking.prepare_store(old, "study")
    assert pragmas(old) == ("delete", 2)


def test_an_experiment_without_a_description_is_given_one_and_one_with_keeps_it(tmp_path, blank_store):
    shutil.copy(blank_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    old, mine = client.create_experiment("old"), client.create_experiment("mine", tags={tracking.NOTE: "my words"})
    assert tracking.prepare_store(uri, "old", command="python -m rnngrad.train seed=1") == old
    assert tracking.prepare_store(uri, "mine", command="python -m rnngrad.train seed=1") == mine
    assert client.get_experiment(old).tags[tracking.NOTE] == tracking.experiment_description(
        "python -m rnngrad.train seed=1")
    assert client.get_experiment(mine).tags[tracking.NOTE] == "my words"


@pytest.mark.slow
def test_a_sweep_tells_its_story_in_the_store(tmp_path):
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "tiny.yaml").write_text(TINY_PRESET)
    proc = run_cli(tmp_path, *TINY, "experiment=tiny", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                   "hydra/launcher=basic", multirun=True)
    assert proc.returncode == 0, proc.stderr
    client, found = runs(tmp_path)
    # a new store: no "Default" experiment in the UI, and write-ahead logging
    assert [e.name for e in client.search_experiments()] == ["rnngrad"]
    with sqlite3.connect(tmp_path / "store" / "mlflow.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    experiment = client.get_experiment_by_name("rnngrad")
    assert experiment.tags[tracking.NOTE].startswith("rnngrad: how gradients vanish and explode")
    assert "Described when `python -m rnngrad.train -m " in experiment.tags[tracking.NOTE]

    (parent,), children = split_sweep(found)
    note = parent.data.tags[tracking.NOTE]
    assert note.startswith("Sweep of 2 jobs, experiment=tiny.\n> Question: does a tiny sweep tell its story? "
                           "Two activations at T = 8.\n> A second line of the question.\n")
    assert "\n- tiny: question=tiny, model.activation=tanh,relu\n" in note
    command = note.split("Command (its comma-separated values are a grid too): `")[1]
    assert command.startswith("python -m rnngrad.train -m hydra.searchpath=") and "hydra/launcher=basic" in command
    assert all(o in command for o in TINY + ["experiment=tiny"]) and "hydra.mode" not in command
    assert sorted(r.info.run_name for r in children) == ["T8-relu-orth-s0-adding-tiny", "T8-tanh-orth-s0-adding-tiny"]
    for run in children:
        activation = run.data.params["model.activation"]
        outcome = {"unsolved": "Unsolved after 20 steps", "solved": "Solved at step"}[run.data.tags["outcome"]]
        assert run.data.tags[tracking.NOTE].startswith(
            f"A {activation} RNN (8 units, orthogonal init, float64) on adding with T = 8, trained 20 steps with "
            f"adam (lr 0.001, batch 32), full BPTT, no clipping; seed 0, for the tiny question. {outcome}")
        assert f"peak gradient norm {float(run.data.metrics['grad/norm_peak']):.3g}" in run.data.tags[tracking.NOTE]

        # the through-time metrics: log10 of the parquet's norms, at step T - t, for the 3 checkpoints
        frame = pd.read_parquet(client.download_artifacts(run.info.run_id, "grad_norms.parquet", str(tmp_path)))
        keys = sorted(k for k in run.data.metrics if k.startswith("grad_through_time/"))
        assert keys == [f"grad_through_time/log10_step_{n}" for n in (0, 10, 20)]
        for step in (0, 10, 20):
            history = client.get_metric_history(run.info.run_id, f"grad_through_time/log10_step_{step}")
            at = frame[frame.step == step].set_index("t").ds_norm
            logged = {m.step: m.value for m in history}
            assert sorted(logged) == list(range(8))
            assert [logged[8 - t] for t in range(1, 9)] == pytest.approx(np.log10(at.loc[1:8].to_numpy()), rel=1e-14)

        # the figures a user opens, as images
        figures = [a.path for a in client.list_artifacts(run.info.run_id, "figures")]
        assert figures == ["figures/grad_heatmap.png", "figures/grad_through_time.png"]
        for path in figures:
            png = imread(client.download_artifacts(run.info.run_id, path, str(tmp_path)))
            assert png.shape[:2] == (300, 480) and png[..., :3].std() > 0.05  # drawn, not blank
