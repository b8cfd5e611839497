"""The report: loading runs from MLflow, the figure functions on crafted frames, the findings, and the
whole build (scripts/build_report.py) on empty, partial and real stores."""

import importlib.util
import math
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from clihelpers import run_cli
from matplotlib.colors import to_rgba
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from rnngrad import tracking
from rnngrad.report import figures, findings, load

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("build_report", ROOT / "scripts" / "build_report.py")
build_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_report)

ALL_FIGURES = ["init_grad_through_time", "init_decay_rate", "grad_heatmaps", "success_vs_length", "loss_seqlen",
               "loss_clipping", "loss_truncation", "loss_remedies", "clipping", "truncation", "saturation", "charlm_bpc",
               "remedies"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="session")
def blank_db(tmp_path_factory):
    """An empty, migrated MLflow SQLite database: creating one takes seconds, copying it does not."""
    path = tmp_path_factory.mktemp("blank") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path, blank_db):
    """A fresh store at tmp_path/store (a copy of the blank database); returns its URI."""
    (tmp_path / "store").mkdir()
    shutil.copy(blank_db, tmp_path / "store" / "mlflow.db")
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


def line(ax, label):
    """The line with this label, as an (n, 2) array of its x, y data."""
    found = [l for l in ax.get_lines() if l.get_label() == label]
    assert len(found) == 1, [l.get_label() for l in ax.get_lines()]
    return found[0].get_xydata()


def fake_run(client, exp_id, name, params, *, metrics=None, tags=None, status="FINISHED", parent=None):
    """A run written straight into MLflow the way rnngrad.tracking writes one (params as strings)."""
    run_id = tracking.start_run(client, exp_id, name, params, {"config_hash": name}, parent)
    items = [Metric(k, v, 0, step) for k, history in (metrics or {}).items() for step, v in history]
    if items:
        client.log_batch(run_id, metrics=items)
    if tags:
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


def build(uri, out, experiment="rnngrad"):
    code = build_report.main(["--tracking-uri", uri, "--experiment", experiment, "--out", str(out)])
    return code, (out / "README.md").read_text() if (out / "README.md").exists() else None


# loading

PARAMS = {"question": "init", "task.name": "adding", "task.seq_len": 8, "model.activation": "tanh", "model.init": "orthogonal",
          "model.spectral_radius": None, "optim.lr": 0.01, "train.stop_when_solved": False, "train.steps": 0,
          "bptt.truncation": None, "bptt.mode": "window", "seed": 3}


def test_load_runs_types_params_skips_sweep_parents_and_keeps_last_metrics(store):
    client = MlflowClient(store)
    exp = tracking.prepare_store(store, "rnngrad")
    parent = client.create_run(exp, tags={"rnngrad.sweep": "true"}).info.run_id
    a = fake_run(client, exp, "a", PARAMS, metrics={"grad/norm": [(0, 2.0), (1, 5.0)]},
                 tags={"outcome": "unsolved", "task.baseline": 1 / 6}, parent=parent)
    b = fake_run(client, exp, "b", dict(PARAMS, **{"model.spectral_radius": 1.5, "bptt.truncation": 4}), status="RUNNING")
    runs = load.load_runs(client, exp).set_index("run_id")
    assert sorted(runs.index) == sorted([a, b])
    assert runs.loc[a, "parent_run_id"] == parent and pd.isna(runs.loc[b, "parent_run_id"])
    assert (runs.loc[a, "status"], runs.loc[a, "outcome"]) == ("FINISHED", "unsolved")
    assert runs.loc[b, "status"] == "RUNNING" and pd.isna(runs.loc[b, "outcome"])
    assert runs["seed"].dtype == np.int64 and runs["task.seq_len"].tolist() == [8, 8]
    assert math.isnan(runs.loc[a, "model.spectral_radius"]) and runs.loc[b, "model.spectral_radius"] == 1.5
    assert math.isnan(runs.loc[a, "bptt.truncation"]) and runs.loc[b, "bptt.truncation"] == 4
    assert runs.loc[a, "train.stop_when_solved"] is False and runs.loc[a, "optim.lr"] == 0.01
    assert runs.loc[a, "task.baseline"] == pytest.approx(1 / 6, rel=1e-15)
    assert runs.loc[a, "grad/norm"] == 5.0 and math.isnan(runs.loc[b, "grad/norm"])
    assert "seed" in runs.attrs["params"] and "outcome" not in runs.attrs["params"]


def test_load_histories_bulk_and_per_run_agree_with_get_metric_history(store, monkeypatch):
    client = MlflowClient(store)
    exp = tracking.prepare_store(store, "rnngrad")
    ids = [fake_run(client, exp, f"r{i}", PARAMS, metrics={"train/loss": [(s, i + s / 10) for s in range(5)],
                                                           "eval/loss": [(0, 1.0 + i)]}) for i in range(3)]
    bulk = load.load_histories(client, ids, ["train/loss", "eval/loss"])
    expected = [(r, k, m.step, m.value) for r in ids for k in ("eval/loss", "train/loss") for m in client.get_metric_history(r, k)]
    assert list(bulk.itertuples(index=False, name=None)) == sorted(expected)
    monkeypatch.setattr(load, "_bulk_history", lambda client: None)
    pd.testing.assert_frame_equal(load.load_histories(client, ids, ["train/loss", "eval/loss"]), bulk)


def test_load_grad_norms_reads_artifacts_and_records_missing_ones(store, tmp_path):
    client = MlflowClient(store)
    exp = tracking.prepare_store(store, "rnngrad")
    with_artifact, without = fake_run(client, exp, "with", PARAMS), fake_run(client, exp, "without", PARAMS)
    frame = pd.DataFrame({"step": [0, 0], "t": [1, 2], "ds_norm": [3.0, 4.0], "jac_norm": [np.nan, 1.0], "bound": [0.5, 1.0]})
    frame.to_parquet(tmp_path / "grad_norms.parquet")
    client.log_artifact(with_artifact, str(tmp_path / "grad_norms.parquet"))
    found = load.load_grad_norms(client, [with_artifact, without])
    assert list(found.frame.columns) == load.GRAD_NORMS_COLUMNS
    pd.testing.assert_frame_equal(found.frame.drop(columns="run_id"), frame)
    assert set(found.frame["run_id"]) == {with_artifact} and list(found.missing) == [without]


def test_missing_store_is_reported_not_created(tmp_path):
    with pytest.raises(load.StoreNotFound):
        load.check_store(f"sqlite:///{tmp_path / 'none.db'}")
    code, readme = build(f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}", tmp_path / "out")
    assert code == 2 and readme is None
    assert not (tmp_path / "none").exists() and not (tmp_path / "out").exists()


# figures: each plots exactly the values it is given

def test_grad_through_time_plots_median_norms_and_the_anchored_bounds():
    T = 3
    rows = []
    for run, scale in (("a", 1.0), ("b", 3.0)):  # two seeds of one configuration
        for t in range(1, T + 1):
            rows.append((run, 0, t, scale * 0.5 ** (T - t), 0.6 ** (T - t)))
            rows.append((run, 10, t, 99.0, np.nan))  # a later step: not the initialization
    for t in range(1, T + 1):
        rows.append(("lin", 0, t, 2.0 * 1.5 ** (T - t), 1.6 ** (T - t)))
    norms = pd.DataFrame(rows, columns=["run_id", "step", "t", "ds_norm", "bound"])
    runs = pd.DataFrame({"run_id": ["a", "b", "lin"], "model.activation": ["tanh", "tanh", "linear"],
                         "model.init": "orthogonal", "model.spectral_radius": [0.5, 0.5, 1.5],
                         "spectral/radius": [0.5, 0.5, 1.5]})
    fig = figures.grad_through_time(norms, runs)
    tanh, linear = fig.axes[0], fig.axes[1]
    assert tanh.get_title() == "tanh, orthogonal init" and tanh.get_yscale() == "log"
    distance = np.arange(T)
    np.testing.assert_allclose(line(tanh, r"tanh $\rho$ = 0.5"), np.c_[distance, 2.0 * 0.5 ** distance], rtol=1e-15)
    np.testing.assert_allclose(line(tanh, r"_bound tanh $\rho$ = 0.5"), np.c_[distance, 2.0 * 0.6 ** distance], rtol=1e-15)
    np.testing.assert_allclose(line(linear, r"linear $\rho$ = 1.5"), np.c_[distance, 2.0 * 1.5 ** distance], rtol=1e-15)
    np.testing.assert_allclose(line(linear, r"_rho linear $\rho$ = 1.5"), np.c_[distance, 2.0 * 1.5 ** distance], rtol=1e-15)
    np.testing.assert_allclose(line(linear, r"_bound linear $\rho$ = 1.5"), np.c_[distance, 2.0 * 1.6 ** distance], rtol=1e-15)
    assert fig.legends and tanh.get_legend() is None  # one legend, outside the axes


def test_decay_rate_vs_radius_plots_medians_theory_and_lyapunov_scatter():
    runs = pd.DataFrame({
        "model.activation": ["tanh", "tanh", "tanh", "sigmoid"], "model.init": "orthogonal",
        "model.spectral_radius": [0.5, 0.5, 2.0, 2.0], "spectral/radius": [0.5, 0.5, 2.0, 2.0],
        "grad/decay_rate": [-0.8, -0.6, 0.3, -0.9], "lyap/top": [-0.75, -0.65, 0.25, -0.85],
    })
    fig = figures.decay_rate_vs_radius(runs)
    sigmoid, tanh, lyap = fig.axes[:3]
    np.testing.assert_allclose(line(tanh, "tanh, orthogonal init"), [[0.5, -0.7], [2.0, 0.3]])
    theory = line(tanh, "_theory tanh")
    np.testing.assert_allclose(theory[:, 1], np.log(theory[:, 0]), rtol=1e-12)
    assert theory[0, 0] == pytest.approx(0.5) and theory[-1, 0] == pytest.approx(2.0)
    theory = line(sigmoid, "_theory sigmoid")
    np.testing.assert_allclose(theory[:, 1], np.log(theory[:, 0] / 4), rtol=1e-12)
    np.testing.assert_allclose(lyap.collections[1].get_offsets(), [[-0.75, -0.8], [-0.65, -0.6], [0.25, 0.3]])
    assert to_rgba(lyap.collections[1].get_facecolor()[0], 1) == to_rgba(figures.PALETTE["tanh"])


def test_grad_heatmaps_share_one_log_scale_and_blank_zero_norms():
    first = pd.DataFrame({"step": [0, 0, 1, 1], "t": [1, 2, 1, 2], "ds_norm": [1e-3, 1.0, 0.0, 10.0]})
    second = pd.DataFrame({"step": [0, 0], "t": [1, 2], "ds_norm": [1e2, 1e4]})
    fig = figures.grad_heatmaps({"vanishing": first, "exploding": second})
    one, two = fig.axes[0].images[0], fig.axes[1].images[0]
    np.testing.assert_allclose(one.get_array().filled(np.nan), [[-3, 0], [np.nan, 1]])
    np.testing.assert_allclose(two.get_array(), [[2, 4]])
    assert one.get_clim() == two.get_clim() == (-3, 4)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["vanishing", "exploding"]
    single = figures.grad_heatmap(first, title="run")  # the tracking layer's per-run figure
    assert single.axes[0].get_title() == "run"
    np.testing.assert_allclose(single.axes[0].images[0].get_array().filled(np.nan), [[-3, 0], [np.nan, 1]])


def test_success_vs_length_plots_the_fraction_solved_diverged_counting_as_failed():
    runs = pd.DataFrame({
        "task.seq_len": [10, 10, 10, 20, 20, 10, 20], "panel": "tanh, gaussian init", "colour": "tanh",
        "label": ["no clipping"] * 5 + ["norm clip 1"] * 2,
        "outcome": ["solved", "solved", "diverged", "unsolved", "solved", "solved", "diverged"],
    })
    ax = figures.success_vs_length(runs).axes[0]
    np.testing.assert_allclose(line(ax, "no clipping"), [[10, 2 / 3], [20, 1 / 2]])
    np.testing.assert_allclose(line(ax, "norm clip 1"), [[10, 1.0], [20, 0.0]])
    assert [l.get_linestyle() for l in ax.get_lines()] == ["-", "--"]
    assert {to_rgba(l.get_color()) for l in ax.get_lines()} == {to_rgba(figures.PALETTE["tanh"])}


def test_learning_curves_plot_median_per_configuration_and_the_scaled_baseline():
    history = pd.DataFrame({"run_id": ["a", "a", "b", "b", "c"], "step": [0, 10, 0, 10, 0], "value": [4.0, 2.0, 6.0, 3.0, 5.0]})
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "label": ["tanh", "tanh", "relu"], "colour": ["tanh", "tanh", "relu"],
                         "task.baseline": math.log(2) * 4.5, "panel": ["T = 8", "T = 8", "T = 16"]})
    fig = figures.learning_curves(history, runs, ylabel="bits", baseline_scale=1 / math.log(2), baseline_label="unigram")
    first, second = fig.axes[:2]
    assert (first.get_title(), second.get_title()) == ("T = 8", "T = 16")
    np.testing.assert_allclose(line(first, "tanh"), [[0, 5.0], [10, 2.5]])
    np.testing.assert_allclose(line(second, "relu"), [[0, 5.0]])
    np.testing.assert_allclose(line(first, "unigram (4.5)")[:, 1], [4.5, 4.5])


def test_clipping_plots_pre_clip_norms_and_divergence_rates():
    runs = pd.DataFrame({
        "run_id": list("abcdef"), "model.activation": "relu",
        "clip.mode": ["none", "none", "norm", "norm", "norm", "norm"], "clip.threshold": [1.0, 10.0, 1.0, 1.0, 10.0, 10.0],
        "outcome": ["diverged", "unsolved", "unsolved", "solved", "diverged", "unsolved"],
    })
    history = pd.DataFrame({"run_id": ["a", "b", "c", "d"], "step": [0, 0, 0, 0], "value": [1e9, 1e3, 2.0, 4.0]})
    fig = figures.clipping(history, runs)
    none, norm, divergence = fig.axes[:3]
    np.testing.assert_allclose(line(none, "no clipping"), [[0, (1e9 + 1e3) / 2]])
    np.testing.assert_allclose(line(norm, "norm clip 1"), [[0, 3.0]])
    np.testing.assert_allclose(line(norm, "_threshold 1")[:, 1], [1.0, 1.0])
    np.testing.assert_allclose(line(divergence, "relu, no clipping")[:, 1], [0.5, 0.5])
    np.testing.assert_allclose(line(divergence, "relu, norm clipping"), [[1.0, 0.0], [10.0, 0.5]])


def test_truncation_plots_cosine_success_and_loss_against_k_with_full_bptt_and_dependency():
    runs = pd.DataFrame({
        "model.activation": "tanh", "task.seq_len": 20, "task.dependency": 15, "task.baseline": 2.0,
        "bptt.truncation": [1, 1, 8, np.nan], "trunc_cosine": [0.4, 0.6, 0.9, np.nan],
        "outcome": ["unsolved", "unsolved", "solved", "solved"], "eval/loss": [2.0, 1.0, 0.5, 0.2],
    })
    cosine, solved, loss = figures.truncation(runs).axes[:3]
    np.testing.assert_allclose(line(cosine, "tanh"), [[1, 0.5], [8, 0.9]])
    np.testing.assert_allclose(line(solved, "tanh"), [[1, 0.0], [8, 1.0]])
    np.testing.assert_allclose(line(loss, "tanh"), [[1, 0.75], [8, 0.25]])
    np.testing.assert_allclose(line(loss, "tanh, full BPTT")[:, 1], [0.1, 0.1])
    np.testing.assert_allclose(line(solved, "tanh, full BPTT")[:, 1], [1.0, 1.0])
    np.testing.assert_allclose(line(cosine, "dependency distance (15 steps)")[:, 0], [15, 15])


def test_saturation_plots_one_line_per_activation_in_its_colour():
    history = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "step": [0, 5, 0, 5], "value": [0.1, 0.4, 0.0, 0.2]})
    runs = pd.DataFrame({"run_id": ["a", "b"], "model.activation": ["relu", "sigmoid"], "question": "seqlen"})
    ax = figures.saturation(history, runs).axes[0]
    np.testing.assert_allclose(line(ax, "relu"), [[0, 0.1], [5, 0.4]])
    np.testing.assert_allclose(line(ax, "sigmoid"), [[0, 0.0], [5, 0.2]])
    colours = {l.get_label(): to_rgba(l.get_color()) for l in ax.get_lines()}
    assert colours == {"relu": to_rgba(figures.PALETTE["relu"]), "sigmoid": to_rgba(figures.PALETTE["sigmoid"])}


# findings: the numbers come from the data

def test_decay_findings_state_the_measured_numbers_and_the_zero_crossing():
    rho = np.array([0.5, 1.0, 2.0, 4.0])
    runs = pd.DataFrame({
        "model.activation": ["linear"] * 4 + ["tanh"] * 4, "model.init": "orthogonal",
        "model.spectral_radius": np.r_[rho, rho], "spectral/radius": np.r_[rho, rho], "spectral/sigma_max": np.r_[rho, rho],
        "grad/decay_rate": np.r_[np.log(rho) + [0.0, 0.003, -0.001, 0.0], [-0.7, -0.1, 0.1, 0.4]],
        "lyap/top": np.r_[np.log(rho), [-0.7, -0.1, 0.1, 0.4]], "act/saturation": [0, 0, 0, 0, 0, 0, 0.1, 0.4],
    })
    text = " ".join(findings._decay_findings(runs, "fig"))
    assert "differs from log ρ by at most 0.003 nats per step over 4 runs, as the theory" in text
    assert "tanh: the measured decay rate lies at or below log(γρ) (γ = 1) in 4 of 4 (100%) runs" in text
    assert f"at the largest ρ = 4 it is +0.40 against {np.log(4):+.2f} predicted" in text and "40% of units saturated" in text
    assert "turns positive (gradients stop vanishing): at ρ ≈ 1.4 for orthogonal W" in text  # sqrt(2): halfway in log rho


def test_runs_table_counts_outcomes_and_statuses_per_question():
    runs = pd.DataFrame({"question": ["init", "seqlen", "seqlen", "seqlen", "seqlen"],
                         "status": ["FINISHED", "FINISHED", "FINISHED", "RUNNING", "KILLED"],
                         "outcome": ["unsolved", "solved", "diverged", None, None]})
    table = findings.runs_table(runs).set_index("question")
    assert table.loc["seqlen"].to_dict() == {"runs": 4, "solved": 1, "unsolved": 0, "diverged": 1, "running": 1,
                                             "killed": 1, "failed": 0, "no outcome": 0}
    assert table.loc["total", "runs"] == 5 and list(table.index) == ["init", "seqlen", "total"]


# the whole build

def test_empty_experiment_and_missing_experiment_report_what_to_run(store, tmp_path):
    tracking.prepare_store(store, "rnngrad")
    code, readme = build(store, tmp_path / "out")
    assert code == 0
    for question in findings.QUESTIONS:
        assert f"No runs with question={question}: `python -m rnngrad.train -m +experiment={question} tracking.uri={store}`" in readme
    assert "Not drawn" in readme and not list((tmp_path / "out" / "figures").iterdir())
    code, readme = build(store, tmp_path / "other", experiment="absent")
    assert code == 0 and "the experiment does not exist in this store" in readme
    assert "tracking.experiment=absent" in readme


def test_failed_build_leaves_the_old_report_and_a_good_one_keeps_other_files(store, tmp_path, monkeypatch):
    tracking.prepare_store(store, "rnngrad")
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "README.md").write_text("old report")
    (out / "figures" / "old.png").write_bytes(b"png")
    (out / ".gitkeep").write_text("")

    def broken(self, figure_dir="figures"):
        raise RuntimeError("disk full")

    monkeypatch.setattr(findings.Report, "markdown", broken)
    with pytest.raises(RuntimeError):
        build(store, out)
    assert (out / "README.md").read_text() == "old report" and (out / "figures" / "old.png").exists()
    assert sorted(p.name for p in out.iterdir()) == [".gitkeep", "README.md", "figures"]
    monkeypatch.undo()
    code, readme = build(store, out)
    assert code == 0 and readme.startswith("# rnngrad report")
    assert not (out / "figures" / "old.png").exists() and (out / ".gitkeep").exists()


def _diverging_run(uri, monkeypatch):
    """One real training run that diverges (relu, rho 3, SGD with lr 10), in this process."""
    from hydra import compose, initialize_config_dir

    from rnngrad import train

    monkeypatch.delenv(train.PARENT_ENV, raising=False)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "question=clipping", "model.activation=relu", "model.init=gaussian", "model.spectral_radius=3.0", "optim=sgd",
            "optim.lr=10.0", "task.seq_len=8", "model.hidden_size=8", "train.steps=20", "train.eval_interval=10",
            "train.diag_interval=10", "task.test_size=32", "train.verbose=false", f"tracking.uri={uri}"])
    result = train.run(cfg)
    assert result["outcome"] == "diverged"
    return result["run_id"]


def test_diverged_running_and_artifact_less_runs_are_reported_not_fatal(store, tmp_path, monkeypatch):
    diverged = _diverging_run(store, monkeypatch)
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("rnngrad").experiment_id
    fake_run(client, exp, "still-running", dict(PARAMS, question="seqlen", **{"train.steps": 100}), status="RUNNING",
             metrics={"train/loss": [(0, 1.0)]})
    fake_run(client, exp, "no-artifact", PARAMS, tags={"outcome": "unsolved", "task.baseline": 1 / 6},
             metrics={"grad/decay_rate": [(0, -0.5)], "spectral/radius": [(0, 0.6)], "spectral/sigma_max": [(0, 0.6)],
                      "lyap/top": [(0, -0.5)], "act/saturation": [(0, 0.0)]})
    out = tmp_path / "out"
    code, readme = build(store, out)
    assert code == 0
    drawn = {p.stem for p in (out / "figures").glob("*.png")}
    assert drawn == {p.stem for p in (out / "figures").glob("*.pdf")}
    assert {"clipping", "loss_clipping", "init_decay_rate", "saturation", "grad_heatmaps"} <= drawn
    assert "init_grad_through_time" not in drawn and "success_vs_length" not in drawn
    assert "none of the init runs has grad_norms.parquet" in readme
    assert "1 run(s) still running, left out of every figure: still-running." in readme
    assert "1 run(s) without a readable grad_norms.parquet" in readme and "no-artifact (" in readme
    assert "no finished runs with question=seqlen. Produce them with `python -m rnngrad.train -m +experiment=seqlen" in readme
    assert "| clipping | 1 | 0 | 0 | 1 | 0 | 0 | 0 | 0 |" in readme
    assert "| seqlen | 1 | 0 | 0 | 0 | 1 | 0 | 0 | 0 |" in readme
    assert "Runs diverged: no clipping 1 of 1 (100%)" in readme
    assert client.get_run(diverged).data.tags["outcome"] == "diverged"


TINY_STUDY = """# @package _global_
hydra:
  sweeper:
    grids:
      init: {question: init, task.seq_len: 8, train.steps: 0, model.activation: "tanh,linear", model.spectral_radius: "0.5,2.0"}
      seqlen: {question: seqlen, task.seq_len: "4,8", clip: "none,norm", train.steps: 20}
      clipping: {question: clipping, task.seq_len: 8, model.activation: relu, model.spectral_radius: 3.0, model.init: gaussian,
                 optim: sgd, optim.lr: 10.0, clip: "none,norm", train.steps: 20}
      truncation: {question: truncation, task.seq_len: 8, bptt.truncation: "2,null", train.steps: 20}
      charlm: {question: charlm, task: char_lm, task.seq_len: 8, bptt: chunked, bptt.truncation: 8, train.steps: 20}
      remedies: {question: remedies, model: irnn, task.seq_len: "4,8", train.steps: 20}
"""


@pytest.mark.slow
def test_report_from_a_real_sweep_draws_every_figure_and_links_it(tmp_path, blank_db):
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "tiny.yaml").write_text(TINY_STUDY)
    (tmp_path / "store").mkdir()
    shutil.copy(blank_db, tmp_path / "store" / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    proc = run_cli(tmp_path, "+experiment=tiny", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "model.hidden_size=8",
                   "train.eval_interval=10", "train.diag_interval=10", "task.test_size=32", "train.verbose=false",
                   "hydra.launcher.n_jobs=2", multirun=True, uri=uri)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "report"
    code, readme = build(uri, out)
    assert code == 0, readme
    for name in ALL_FIGURES:
        assert (out / "figures" / f"{name}.png").stat().st_size > 0 and (out / "figures" / f"{name}.pdf").stat().st_size > 0
        assert f"(figures/{name}.png)" in readme and f"(figures/{name}.pdf)" in readme
    assert "Not drawn" not in readme and "could not be drawn" not in readme
    # the table and the findings agree with what MLflow holds
    client = MlflowClient(uri)
    runs = [r for r in client.search_runs([client.get_experiment_by_name("rnngrad").experiment_id])
            if "rnngrad.sweep" not in r.data.tags]
    seqlen = [r for r in runs if r.data.params["question"] == "seqlen"]
    for T in (4, 8):
        at_T = [r for r in seqlen if r.data.params["task.seq_len"] == str(T)]
        solved = sum(r.data.tags["outcome"] == "solved" for r in at_T)
        assert f"T = {T}: {solved} of {len(at_T)} (" in readme
    diverged = sum(r.data.tags["outcome"] == "diverged" for r in runs)
    assert f"| total | {len(runs)} | " in readme and readme.count("| diverged |") == 1
    assert readme.split("| total |")[1].split("|")[3].strip() == str(diverged)
