"""The report: loading runs from MLflow, the figure functions on crafted frames, the findings, and the
whole build (scripts/build_report.py) on empty, partial and real stores."""

import fcntl
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from clihelpers import run_preset
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient
from storehelpers import create_experiment, fake_run

from rnngrad.report import build as report_build
from rnngrad.report import cli
from rnngrad.report import figures, findings, frames, load, markdown, sections
from rnngrad.store import StoreNotFound

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("build_report", ROOT / "scripts" / "build_report.py")
build_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_report)

ALL_FIGURES = ["init_grad_through_time", "init_decay_rate", "precision", "grad_heatmaps", "success_vs_length", "loss_seqlen",
               "loss_clipping", "loss_truncation", "loss_remedies", "clipping", "truncation", "saturation", "charlm_bpc",
               "remedies", "remedies_grad_through_time"]


def line(ax, label):
    """The line with this label, as an (n, 2) array of its x, y data."""
    found = [l for l in ax.get_lines() if l.get_label() == label]
    assert len(found) == 1, [l.get_label() for l in ax.get_lines()]
    return found[0].get_xydata()


def line_style(ax, label):
    return [l for l in ax.get_lines() if l.get_label() == label][0].get_linestyle()


def line_colour(ax, label):
    return [l for l in ax.get_lines() if l.get_label() == label][0].get_color()


def build(uri, out, experiment="rnngrad"):
    code = build_report.main(["--tracking-uri", uri, "--experiment", experiment, "--out", str(out)])
    return code, (out / "README.md").read_text() if (out / "README.md").exists() else None


# loading

PARAMS = {"question": "init", "task.name": "adding", "task.seq_len": 8, "model.activation": "tanh", "model.init": "orthogonal",
          "model.spectral_radius": None, "optim.lr": 0.01, "train.stop_when_solved": False, "train.steps": 0,
          "bptt.truncation": None, "bptt.mode": "window", "seed": 3}


def test_load_runs_types_params_skips_sweep_parents_and_keeps_last_metrics(store):
    client = MlflowClient(store)
    exp = create_experiment(store, "rnngrad")
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
    exp = create_experiment(store, "rnngrad")
    ids = [fake_run(client, exp, f"r{i}", PARAMS, metrics={"train/loss": [(s, i + s / 10) for s in range(5)],
                                                           "eval/loss": [(0, 1.0 + i)]}) for i in range(3)]
    bulk = load.load_histories(client, ids, ["train/loss", "eval/loss"])
    expected = [(r, k, m.step, m.value) for r in ids for k in ("eval/loss", "train/loss") for m in client.get_metric_history(r, k)]
    assert list(bulk.itertuples(index=False, name=None)) == sorted(expected)
    monkeypatch.setattr(load, "_bulk_history", lambda client: None)
    pd.testing.assert_frame_equal(load.load_histories(client, ids, ["train/loss", "eval/loss"]), bulk)


def test_load_grad_norms_reads_artifacts_and_records_missing_ones(store, tmp_path):
    client = MlflowClient(store)
    exp = create_experiment(store, "rnngrad")
    with_artifact, without = fake_run(client, exp, "with", PARAMS), fake_run(client, exp, "without", PARAMS)
    frame = pd.DataFrame({"step": [0, 0], "t": [1, 2], "ds_norm": [3.0, 4.0], "jac_norm": [np.nan, 1.0], "bound": [0.5, 1.0]})
    frame.to_parquet(tmp_path / "grad_norms.parquet")
    client.log_artifact(with_artifact, str(tmp_path / "grad_norms.parquet"))
    found = load.load_grad_norms(client, [with_artifact, without])
    assert list(found.frame.columns) == load.GRAD_NORMS_COLUMNS
    pd.testing.assert_frame_equal(found.frame.drop(columns="run_id"), frame)
    assert set(found.frame["run_id"]) == {with_artifact} and list(found.missing) == [without]


def test_missing_store_is_reported_not_created(tmp_path):
    with pytest.raises(StoreNotFound):
        load.Study.open(f"sqlite:///{tmp_path / 'none.db'}", "rnngrad")
    code, readme = build(f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}", tmp_path / "out")
    assert code == 2 and readme is None
    assert not (tmp_path / "none").exists() and not (tmp_path / "out").exists()


# the layering: the report needs neither the model stack nor pyplot

def test_the_report_imports_only_the_store_of_rnngrad_and_no_pyplot():
    code = ("import sys; import rnngrad.report.cli; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('rnngrad') or m == 'matplotlib.pyplot')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [m for m in loaded if not m.startswith("rnngrad.report")] == ["rnngrad", "rnngrad.store"], loaded


def test_the_constants_the_report_restates_agree_with_the_model_stack():
    from rnngrad.core import GAMMA
    from rnngrad.tasks import SOLVED_ACCURACY

    assert frames.GAMMA == GAMMA and frames.SOLVED_ACCURACY == SOLVED_ACCURACY


def test_markdown_table_from_a_frame_or_rows():
    frame = pd.DataFrame({"question": ["init", "total"], "runs": [3, 3]})
    assert markdown.table(frame, align="-r") == "| question | runs |\n|---|---:|\n| init | 3 |\n| total | 3 |"
    assert markdown.table([["a", 1.5]], ["what", "value"]) == "| what | value |\n|---|---|\n| a | 1.5 |"


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
    rows = frames.through_time(norms, runs)
    fig = figures.grad_through_time(frames.through_time_curves(rows), frames.radius_grid(rows))
    assert isinstance(fig, Figure) and fig.canvas.manager is None  # no pyplot state
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
    data = frames.decay_runs(runs)
    fig = figures.decay_rate_vs_radius(frames.decay_curves(data), data)
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


def _heatmap_norms(run_id, T, steps, earlier):
    """grad_norms of one run: ||dL/ds_T|| = 1 and `earlier(step, t)` at every t < T, at each training step."""
    return pd.DataFrame([(run_id, step, t, 1.0 if t == T else earlier(step, t)) for step in steps for t in range(1, T + 1)],
                        columns=["run_id", "step", "t", "ds_norm"])


def test_heatmap_examples_leave_out_dead_gradients_and_share_one_sequence_length():
    pool = pd.DataFrame({
        "run_id": ["dead", "t10_explode", "vanish", "explode", "healthy", "half_dead"],
        "task.seq_len": [20, 10, 20, 20, 20, 20], "decay": [0.0, 0.9, -0.5, 0.3, 0.05, -0.01],
        "outcome": "unsolved",
    })
    norms = pd.concat([
        _heatmap_norms("dead", 20, range(4), lambda step, t: 0.0),  # a dead relu run: 0 at every t < T
        _heatmap_norms("t10_explode", 10, range(4), lambda step, t: 2.0 ** (10 - t)),
        _heatmap_norms("vanish", 20, range(4), lambda step, t: 0.5 ** (20 - t)),
        _heatmap_norms("explode", 20, range(4), lambda step, t: 1.3 ** (20 - t)),
        _heatmap_norms("healthy", 20, range(4), lambda step, t: 1.0),
        _heatmap_norms("half_dead", 20, range(4), lambda step, t: 1.0 if step == 0 else 0.0),  # alive at 1 step of 4
    ])
    alive = frames.live_runs(norms)
    assert alive.to_dict() == {"dead": False, "t10_explode": True, "vanish": True, "explode": True, "healthy": True,
                               "half_dead": False}
    picks = frames.heatmap_picks(pool, norms)
    # without the filter the dead run (decay 0) would be the healthy example, and the T = 10 run the exploding one
    assert {kind: p["run_id"] for kind, p in picks.items()} == {"vanishing": "vanish", "exploding": "explode", "healthy": "healthy"}
    assert frames.representative_runs(pool)["healthy"]["run_id"] == "dead"
    assert frames.representative_runs(pool)["exploding"]["run_id"] == "t10_explode"
    # the examples never mix lengths: one kind at T = 10 and one at T = 20 give the longer's one, not both
    one_each = frames.heatmap_picks(pool[pool["run_id"].isin(["t10_explode", "vanish"])], norms)
    assert {kind: p["run_id"] for kind, p in one_each.items()} == {"vanishing": "vanish"}
    # a length with more kinds wins over a longer one with fewer
    more_at_t10 = pd.concat([pool, pd.DataFrame({"run_id": ["t10_flat"], "task.seq_len": [10], "decay": [0.01], "outcome": "unsolved"})])
    norms_t10 = pd.concat([norms, _heatmap_norms("t10_flat", 10, range(4), lambda step, t: 1.0)])
    picks_t10 = frames.heatmap_picks(more_at_t10[more_at_t10["run_id"].isin(["t10_explode", "t10_flat", "vanish"])], norms_t10)
    assert {kind: p["run_id"] for kind, p in picks_t10.items()} == {"exploding": "t10_explode", "healthy": "t10_flat"}
    assert frames.heatmap_picks(pool[pool["run_id"] == "dead"], norms) == {}
    candidates = frames.heatmap_candidates(pool, per_kind=1, healthy=1)
    assert set(candidates["run_id"]) == {"t10_explode", "vanish", "explode", "dead"}  # per T: lowest, highest, closest to 0


def test_success_vs_length_plots_the_fraction_solved_diverged_counting_as_failed():
    runs = pd.DataFrame({
        "task.seq_len": [10, 10, 10, 20, 20, 10, 20], "panel": "tanh, gaussian init", "colour": "tanh",
        "label": ["no clipping"] * 5 + ["norm clip 1"] * 2,
        "outcome": ["solved", "solved", "diverged", "unsolved", "solved", "solved", "diverged"],
    })
    ax = figures.success_vs_length(frames.success_rates(runs)).axes[0]
    np.testing.assert_allclose(line(ax, "no clipping"), [[10, 2 / 3], [20, 1 / 2]])
    np.testing.assert_allclose(line(ax, "norm clip 1"), [[10, 1.0], [20, 0.0]])
    assert [l.get_linestyle() for l in ax.get_lines()] == ["-", "--"]
    assert {to_rgba(l.get_color()) for l in ax.get_lines()} == {to_rgba(figures.PALETTE["tanh"])}


def test_learning_curves_plot_median_per_configuration_and_the_scaled_baseline():
    history = pd.DataFrame({"run_id": ["a", "a", "b", "b", "c"], "step": [0, 10, 0, 10, 0], "value": [4.0, 2.0, 6.0, 3.0, 5.0]})
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "label": ["tanh", "tanh", "relu"], "colour": ["tanh", "tanh", "relu"],
                         "task.baseline": math.log(2) * 4.5, "panel": ["T = 8", "T = 8", "T = 16"]})
    fig = figures.learning_curves(*frames.learning_curves(history, runs), "bits", baseline_scale=1 / math.log(2),
                                  baseline_label="unigram")
    first, second = fig.axes[:2]
    assert (first.get_title(), second.get_title()) == ("T = 8", "T = 16")
    np.testing.assert_allclose(line(first, "tanh"), [[0, 5.0], [10, 2.5]])
    np.testing.assert_allclose(line(second, "relu"), [[0, 5.0]])
    np.testing.assert_allclose(line(first, "unigram")[:, 1], [4.5, 4.5])  # one legend entry, the value on the panel
    assert [t.get_text() for t in first.texts] == ["4.5"]


def test_clipping_plots_pre_clip_norms_and_divergence_rates():
    runs = pd.DataFrame({
        "run_id": list("abcdef"), "model.activation": "relu",
        "clip.mode": ["none", "none", "norm", "norm", "norm", "norm"], "clip.threshold": [1.0, 10.0, 1.0, 1.0, 10.0, 10.0],
        "outcome": ["diverged", "unsolved", "unsolved", "solved", "diverged", "unsolved"],
    })
    history = pd.DataFrame({"run_id": ["a", "b", "c", "d"], "step": [0, 0, 0, 0], "value": [1e9, 1e3, 2.0, 4.0]})
    fig = figures.clipping(*frames.clipping_curves(history, runs))
    none, norm, divergence = fig.axes[:3]
    np.testing.assert_allclose(line(none, "no clipping"), [[0, (1e9 + 1e3) / 2]])
    np.testing.assert_allclose(line(norm, "norm clip 1"), [[0, 3.0]])
    np.testing.assert_allclose(line(norm, "_threshold 1")[:, 1], [1.0, 1.0])
    np.testing.assert_allclose(line(divergence, "relu, no clipping")[:, 1], [0.5, 0.5])
    np.testing.assert_allclose(line(divergence, "relu, norm clipping"), [[1.0, 0.0], [10.0, 0.5]])
    np.testing.assert_allclose(line(divergence, "relu, no clipping: solved")[:, 1], [0.0, 0.0])
    np.testing.assert_allclose(line(divergence, "relu, norm clipping: solved"), [[1.0, 0.5], [10.0, 0.0]])


def test_truncation_plots_cosine_success_and_loss_against_k_with_full_bptt_and_dependency():
    runs = pd.DataFrame({
        "model.activation": "tanh", "task.seq_len": 20, "task.dependency": 15, "task.baseline": 2.0,
        "bptt.truncation": [1, 1, 8, np.nan], "trunc_cosine": [0.4, 0.6, 0.9, np.nan],
        "outcome": ["unsolved", "unsolved", "solved", "solved"], "eval/loss": [2.0, 1.0, 0.5, 0.2],
    })
    cosine, solved, loss = figures.truncation(*frames.truncation_curves(runs), runs).axes[:3]
    np.testing.assert_allclose(line(cosine, "tanh"), [[1, 0.5], [8, 0.9]])
    np.testing.assert_allclose(line(solved, "tanh"), [[1, 0.0], [8, 1.0]])
    np.testing.assert_allclose(line(loss, "tanh"), [[1, 0.75], [8, 0.25]])
    np.testing.assert_allclose(line(loss, "tanh, full BPTT")[:, 1], [0.1, 0.1])
    np.testing.assert_allclose(line(solved, "tanh, full BPTT")[:, 1], [1.0, 1.0])
    np.testing.assert_allclose(line(cosine, "dependency distance (15 steps)")[:, 0], [15, 15])


def test_saturation_plots_one_line_per_activation_in_its_colour():
    history = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "step": [0, 5, 0, 5], "value": [0.1, 0.4, 0.0, 0.2]})
    runs = pd.DataFrame({"run_id": ["a", "b"], "model.activation": ["relu", "sigmoid"], "question": "seqlen"})
    ax = figures.saturation(frames.saturation_curves(history, runs)).axes[0]
    np.testing.assert_allclose(line(ax, "relu"), [[0, 0.1], [5, 0.4]])
    np.testing.assert_allclose(line(ax, "sigmoid"), [[0, 0.0], [5, 0.2]])
    colours = {l.get_label(): to_rgba(l.get_color()) for l in ax.get_lines()}
    assert colours == {"relu": to_rgba(figures.PALETTE["relu"]), "sigmoid": to_rgba(figures.PALETTE["sigmoid"])}


def test_remedies_plots_relative_loss_medians_the_baseline_ratio_and_the_runs_solved():
    runs = pd.DataFrame({
        "task.name": ["adding"] * 6 + ["copy"], "task.seq_len": [10, 10, 20, 10, 20, 10, 5],
        "label": ["gru", "gru", "gru", "tanh, gaussian init", "tanh, gaussian init", "tanh, gaussian init, norm clip 1", "gru"],
        "colour": ["gru", "gru", "gru", "tanh", "tanh", "tanh", "gru"],
        "eval/loss": [0.1, 0.3, 0.5, 0.5, 0.6, 0.45, 3.0], "task.baseline": [0.5] * 6 + [2.0],
        "outcome": ["solved", "unsolved", "unsolved", "unsolved", "diverged", "unsolved", "unsolved"],
    })
    fig = figures.remedies(*frames.remedy_curves(runs.assign(relative_loss=frames.relative_loss(runs))))
    adding, copy, adding_solved, copy_solved = fig.axes[:4]
    assert (adding.get_title(), copy.get_title()) == ("adding", "copy") and adding.get_yscale() == "log"
    np.testing.assert_allclose(line(adding, "gru"), [[10, 0.4], [20, 1.0]])
    np.testing.assert_allclose(line(adding, "tanh, gaussian init"), [[10, 1.0], [20, 1.2]])
    np.testing.assert_allclose(line(adding, "tanh, gaussian init, norm clip 1"), [[10, 0.9]])
    np.testing.assert_allclose(line(copy, "gru"), [[5, 1.5]])
    np.testing.assert_allclose(line(adding, "constant predictor (ratio 1)")[:, 1], [1.0, 1.0])
    (bars,) = [c for c in adding.collections if len(c.get_segments()) == 2 and to_rgba(c.get_color()[0]) == to_rgba(figures.PALETTE["gru"])]
    np.testing.assert_allclose([seg[:, 1] for seg in bars.get_segments()], [[0.3, 0.5], [1.0, 1.0]])  # the IQR over seeds
    assert line_style(adding, "tanh, gaussian init, norm clip 1") == "--" and line_style(adding, "gru") == "-"
    # the runs solved: rows in the legend's order (tanh before gru), columns T; blank where a remedy has no runs
    np.testing.assert_allclose(adding_solved.images[0].get_array().filled(np.nan), [[0, 0], [0, np.nan], [0.5, 0]])
    assert [t.get_text() for t in adding_solved.texts] == ["0/1", "0/1", "0/1", "1/2", "0/1"]
    assert [t.get_text() for t in adding_solved.get_yticklabels()] == ["tanh, gaussian init", "tanh, gaussian init, norm clip 1", "gru"]
    assert [t.get_text() for t in copy_solved.texts] == ["0/1"]
    assert fig.legends and adding.get_legend() is None


def remedies_grad_through_time(norms, runs):
    rows = frames.remedy_init_rows(norms, runs)
    return figures.remedies_grad_through_time(frames.remedy_init_curves(rows), frames.task_lengths(rows), runs)


def test_remedies_grad_through_time_plots_medians_at_the_longest_T_and_the_lstm_cell_state():
    rows = []
    for run, scale in (("a", 1.0), ("b", 3.0)):  # two seeds of the LSTM at T = 3
        rows += [(run, 0, t, scale * 0.5 ** (3 - t), scale * 0.8 ** (3 - t)) for t in (1, 2, 3)]
        rows += [(run, 10, t, 99.0, 99.0) for t in (1, 2, 3)]  # a later training step: not the initialization
    rows += [("c", 0, t, 0.0 if t == 1 else 0.1 ** (3 - t), np.nan) for t in (1, 2, 3)]  # zero: left out
    rows += [("d", 0, t, 7.0, np.nan) for t in (1, 2)]  # a shorter T of the same task: not shown
    rows += [("e", 0, t, 2.0 ** (4 - t), np.nan) for t in (1, 2, 3, 4)]  # copy: 4 steps for T = 2
    norms = pd.DataFrame(rows, columns=["run_id", "step", "t", "ds_norm", "dc_norm"])
    runs = pd.DataFrame({"run_id": list("abcdef"), "task.name": ["adding"] * 4 + ["copy"] * 2, "task.seq_len": [3, 3, 3, 2, 2, 2],
                         "label": ["lstm", "lstm", "tanh, gaussian init", "tanh, gaussian init", "gru", "gru"],
                         "colour": ["lstm", "lstm", "tanh", "tanh", "gru", "gru"]})  # f: no grad_norms
    fig = remedies_grad_through_time(norms, runs)
    adding, copy = fig.axes[:2]
    assert (adding.get_title(), copy.get_title()) == ("adding, T = 3", "copy, T = 2 (4 steps)") and adding.get_yscale() == "log"
    distance = np.arange(3)
    np.testing.assert_allclose(line(adding, "lstm"), np.c_[distance, 2.0 * 0.5 ** distance], rtol=1e-15)
    cell = f"lstm, {figures.CELL_STATE_LABEL}"
    np.testing.assert_allclose(line(adding, cell), np.c_[distance, 2.0 * 0.8 ** distance], rtol=1e-15)
    assert line_style(adding, cell) == "--" and to_rgba(line_colour(adding, cell)) == to_rgba(figures.PALETTE["lstm"])
    np.testing.assert_allclose(line(adding, "tanh, gaussian init"), [[0, 1.0], [1, 0.1]])
    np.testing.assert_allclose(line(copy, "gru"), np.c_[np.arange(4), 2.0 ** np.arange(4)])
    assert [l.get_label() for l in copy.get_lines()] == ["gru"]  # no cell-state line without dc_norm


def test_remedies_grad_through_time_without_a_dc_norm_column():
    norms = pd.DataFrame({"run_id": "a", "step": 0, "t": [1, 2], "ds_norm": [0.5, 1.0]})
    runs = pd.DataFrame({"run_id": ["a"], "task.name": "adding", "task.seq_len": 2, "label": "gru", "colour": "gru"})
    np.testing.assert_allclose(line(remedies_grad_through_time(norms, runs).axes[0], "gru"), [[0, 1.0], [1, 0.5]])


def precision_norms():
    """Crafted grad_norms at initialization (T = 4, distances 3..0 at t = 1..4) and runs, float64 and float32 of
    four configurations: tanh rho 0.5 (float32 subnormal, then 0 where float64 is 1e-50), tanh rho 1 (float32 0 where
    float64 is 1e-300, float64 0 one step further), sigmoid rho 0.5 (both 0 at the same step), sigmoid rho 1 (two
    seeds, never 0)."""
    by_distance = {  # (activation, rho, dtype, seed scale) -> ||dL/ds|| at distance 0, 1, 2, 3
        ("tanh", 0.5, "float64", 1.0): [1.0, 1e-20, 1e-40, 1e-50],
        ("tanh", 0.5, "float32", 1.0): [1.0, 1e-20 * (1 + 2e-7), 1.2e-40, 0.0],
        ("tanh", 1.0, "float64", 1.0): [1.0, 0.5, 1e-300, 0.0],
        ("tanh", 1.0, "float32", 1.0): [1.0, 0.5, 0.0, 0.0],
        ("sigmoid", 0.5, "float64", 1.0): [1.0, 1e-10, 0.0, 0.0],
        ("sigmoid", 0.5, "float32", 1.0): [1.0, 1e-10, 0.0, 0.0],
        **{("sigmoid", 1.0, dtype, scale): [scale * 0.5 ** d for d in range(4)]
           for dtype in ("float64", "float32") for scale in (1.0, 3.0)},
    }
    rows, runs = [], []
    for k, ((act, rho, dtype, _), norms) in enumerate(by_distance.items()):
        run = f"r{k}"
        rows += [(run, 0, 4 - d, norm) for d, norm in enumerate(norms)]
        rows += [(run, 10, t, 99.0) for t in range(1, 5)]  # a later training step: not the initialization
        runs.append((run, act, rho, rho, dtype))
    return (pd.DataFrame(rows, columns=["run_id", "step", "t", "ds_norm"]),
            pd.DataFrame(runs, columns=["run_id", "model.activation", "model.spectral_radius", "spectral/radius", "model.dtype"]))


def test_precision_plots_both_precisions_marks_where_float32_first_reports_zero_and_its_limits():
    norms, runs = precision_norms()
    fig = figures.precision(frames.precision_curves(norms, runs), frames.radius_grid(runs))
    sigmoid, tanh = fig.axes[:2]
    assert (sigmoid.get_title(), tanh.get_title()) == ("sigmoid", "tanh") and tanh.get_yscale() == "log"
    half, one = r"$\rho$ = 0.5", r"$\rho$ = 1"
    distance = np.arange(4)
    np.testing.assert_allclose(line(tanh, f"tanh {half}, float64"), np.c_[distance, [1.0, 1e-20, 1e-40, 1e-50]], rtol=1e-15)
    np.testing.assert_allclose(line(tanh, f"tanh {half}, float32"), np.c_[distance, [1.0, 1e-20 * (1 + 2e-7), 1.2e-40, np.nan]],
                               rtol=1e-15)  # 0 left out of the log axis
    np.testing.assert_allclose(line(tanh, f"tanh {one}, float32"), np.c_[distance, [1.0, 0.5, np.nan, np.nan]])
    np.testing.assert_allclose(line(sigmoid, f"sigmoid {one}, float64"), np.c_[distance, 2.0 * 0.5 ** distance])  # median of 2 seeds
    assert (line_style(tanh, f"tanh {half}, float64"), line_style(tanh, f"tanh {half}, float32")) == ("-", "--")
    light, dark = figures.shades(figures.PALETTE["tanh"], 2)
    assert to_rgba(line_colour(tanh, f"tanh {half}, float32")) == to_rgba(light)
    assert to_rgba(line_colour(tanh, f"tanh {one}, float64")) == to_rgba(dark)
    # float32's first zero: a tick at that distance, and a circle on float64 where it is still positive
    assert line(tanh, f"_float32 zero tanh {half}")[:, 0].tolist() == [3, 3]
    np.testing.assert_allclose(line(tanh, f"_float64 at float32 zero tanh {half}"), [[3, 1e-50]], rtol=1e-15)
    assert line(tanh, f"_float32 zero tanh {one}")[:, 0].tolist() == [2, 2]
    np.testing.assert_allclose(line(tanh, f"_float64 at float32 zero tanh {one}"), [[2, 1e-300]], rtol=1e-15)
    assert line(sigmoid, f"_float32 zero sigmoid {half}")[:, 0].tolist() == [2, 2]
    labels = [l.get_label() for l in sigmoid.get_lines()]
    assert f"_float64 at float32 zero sigmoid {half}" not in labels  # float64 is 0 there too
    assert not any(label.endswith(f"zero sigmoid {one}") for label in labels)  # float32 never 0
    for ax in (sigmoid, tanh):
        assert line(ax, "_smallest subnormal")[:, 1].tolist() == [np.finfo(np.float32).smallest_subnormal] * 2
        assert line(ax, "_smallest normal")[:, 1].tolist() == [np.finfo(np.float32).tiny] * 2
    assert fig.legends and tanh.get_legend() is None


# findings: the numbers come from the data

def test_below_epsilon_is_where_a_term_falls_below_float32_eps_times_the_largest():
    halving = pd.Series(0.5 ** np.arange(40.0))
    assert np.finfo(np.float32).eps == 0.5 ** 23  # so 0.5**23 is not below eps times the largest (1), 0.5**24 is
    assert frames.below_epsilon(halving) == 24 and frames.below_epsilon(4 * halving) == 24  # relative to the largest
    rising = pd.Series([1e-9, 1.0, 0.5, 1e-8], index=[0, 1, 2, 3])  # the largest need not be at the loss
    assert frames.below_epsilon(rising) == 0 and frames.below_epsilon(pd.Series([1.0, 0.0, 1.0])) == 1  # 0 is below
    assert math.isnan(frames.below_epsilon(pd.Series([1.0, 0.5, 0.25]))) and math.isnan(frames.below_epsilon(pd.Series([0.0, 0.0])))


def test_precision_findings_state_where_float32_loses_the_long_range_terms_and_where_it_reaches_zero():
    curves = frames.precision_curves(*precision_norms())
    lost = [f.text for f in findings.float32_lost(curves, "precision")]
    (agree,) = [f.text for f in findings.float32_agreement(curves, "adding, T = 4", "precision")]
    assert lost == [
        # float32 [1, 1e-10, 0, 0]: 1e-10 is below 1.2e-07 x 1 at distance 1; float64 is 0 where float32 is: no second finding
        "sigmoid, ρ = 0.5: float32's ||dL/ds_t|| falls below ε = 1.2e-07 times its largest at T − t = 1, so the summed "
        "weight gradient loses longer-range terms; it reports 0 only from T − t = 2 (figure `precision`).",
        "sigmoid, ρ = 1: float32's ||dL/ds_t|| stays above ε = 1.2e-07 times its largest over 3 steps back; it never "
        "reports 0 (figure `precision`).",  # medians 2, 1, 0.5, 0.25
        "tanh, ρ = 0.5: float32's ||dL/ds_t|| falls below ε = 1.2e-07 times its largest at T − t = 1, so the summed "
        "weight gradient loses longer-range terms; it reports 0 only from T − t = 3 (figure `precision`).",
        "tanh, ρ = 0.5: where float32 first reports exactly 0 (T − t = 3), float64 still measures 1e-50, from the same "
        "weights (figure `precision`).",
        "tanh, ρ = 1: float32's ||dL/ds_t|| falls below ε = 1.2e-07 times its largest at T − t = 2, so the summed "
        "weight gradient loses longer-range terms; it reports 0 only from T − t = 2 (figure `precision`).",
        "tanh, ρ = 1: where float32 first reports exactly 0 (T − t = 2), float64 still measures 1e-300, from the same "
        "weights (figure `precision`).",
    ]
    # the largest relative differences: 2e-07 at tanh rho 0.5, distance 1 (normal); 0.2 at distance 2 (1.2e-40,
    # subnormal); printed as bounds rounded up to one significant digit
    assert agree == ("On adding, T = 4, while float32's ||dL/ds_t|| is normal (≥ 1.2e-38), it agrees with float64 to a "
                     "relative difference of at most 2e-07 in 4 settings; in its subnormal range it differs by up to "
                     "0.2 (figure `precision`).")
    only_float64 = curves[curves["model.dtype"] == "float64"]
    assert findings.float32_lost(only_float64, "precision") == []  # nothing to compare
    assert findings.float32_agreement(only_float64, "adding, T = 4", "precision") == []


def test_decay_findings_state_the_measured_numbers_and_the_zero_crossing():
    rho = np.array([0.5, 1.0, 2.0, 4.0])
    runs = pd.DataFrame({
        "model.activation": ["linear"] * 4 + ["tanh"] * 4, "model.init": "orthogonal",
        "model.spectral_radius": np.r_[rho, rho], "spectral/radius": np.r_[rho, rho], "spectral/sigma_max": np.r_[rho, rho],
        "grad/decay_rate": np.r_[np.log(rho) + [0.0, 0.003, -0.001, 0.0], [-0.7, -0.1, 0.1, 0.4]],
        "lyap/top": np.r_[np.log(rho), [-0.7, -0.1, 0.1, 0.4]], "act/saturation": [0, 0, 0, 0, 0, 0, 0.1, 0.4],
    })
    data = frames.decay_runs(runs)
    found = [*findings.linear_decay(data, "fig"), *findings.decay_per_activation(data, frames.decay_curves(data), "fig"),
             *findings.decay_tracks_lyapunov(data, "fig")]
    text = {f.id: f.text for f in found}
    assert "differs from log ρ by at most 0.003 nats per step over 4 runs, as the theory" in text["decay_linear"]
    assert "tanh: the measured decay rate lies at or below log(γρ) (γ = 1) in 4 of 4 (95% CI 51–100%) runs" in text["decay_theory_tanh"]
    # one run at rho = 4: no spread, so two significant digits
    assert text["decay_largest_tanh"] == (f"tanh at the largest ρ = 4: measured decay rate +0.40 per step (median, 1 run), "
                                          f"log(γρ) = {np.log(4):+.2f}; with 40% of units saturated, f'(a) < γ contracts "
                                          "each step more than log(γρ) assumes (figure `fig`).")
    # one run per rho: the sign change is placed between the grid points around it, not at the interpolated sqrt(2)
    crossing = next(f for f in found if f.id == "decay_crossing_tanh_orthogonal")
    assert "turns positive (gradients stop vanishing) between ρ = 1 and 2;" in crossing.text
    (number,) = crossing.quoted
    assert number.value == pytest.approx(np.sqrt(2)) and number.interval == (1.0, 2.0) and number.n == 2
    # tanh's decay rates equal its exponents, linear's differ by at most 0.003: the correlation and its bootstrap
    # interval to the decimals the interval supports; the largest difference as a bound rounded up
    lyapunov = text["decay_lyapunov"]
    assert lyapunov.startswith("The measured decay rate tracks the top Lyapunov exponent over 8 runs: correlation 0.99")
    assert "at most 0.003 nats per step" in lyapunov


def _remedy(run_id, cell="rnn", activation="tanh", init="gaussian", norm="none", clip="none", **values):
    """One remedies run as load_runs gives it (params typed, last metrics), adding task, baseline 0.5."""
    row = {"run_id": run_id, "question": "remedies", "train.steps": 100, "task.name": "adding", "task.baseline": 0.5,
           "model.cell": cell, "model.activation": activation, "model.init": init, "model.norm": norm,
           "clip.mode": clip, "clip.threshold": 1.0, "outcome": "unsolved", "eval/accuracy": 0.1}
    return dict(row, **values)


def test_remedy_findings_state_the_measured_ratios_and_where_they_disagree_with_the_classic_account():
    runs = pd.DataFrame([
        _remedy("g1", cell="gru", **{"task.seq_len": 2, "eval/loss": 0.005, "outcome": "solved", "eval/accuracy": 0.995}),
        _remedy("g2", cell="gru", **{"task.seq_len": 2, "eval/loss": 0.015}),
        _remedy("g3", cell="gru", **{"task.seq_len": 4, "eval/loss": 0.05}),
        _remedy("t1", **{"task.seq_len": 2, "eval/loss": 0.5}), _remedy("t2", **{"task.seq_len": 4, "eval/loss": 0.5}),
        _remedy("r1", activation="relu", init="identity", **{"task.seq_len": 2, "eval/loss": 0.25}),
        _remedy("r2", activation="relu", init="identity", **{"task.seq_len": 4, "eval/loss": 1.0}),
        _remedy("l2", cell="lstm", **{"task.seq_len": 4, "eval/loss": 0.45}),
    ])
    data = frames.remedy_runs(runs)
    text = {f.id: f.text for f in findings.remedy_losses(data, "remedies")}
    # T = 2: gru's losses 0.01 and 0.03 (median 0.02, bootstrap interval 0.01-0.03: two significant digits)
    assert text["remedy_loss_adding_T2"] == (
        "Remedies on adding, T = 2 (1–2 runs each, 100 steps): gru (0.020), relu, identity init (0.50) beat the constant "
        "predictor (median final test loss below 0.9 of its); tanh, gaussian init does not (1.0) (figure `remedies`).")
    assert text["remedy_loss_adding_T4"].startswith("Remedies on adding, T = 4 (1 run each, 100 steps): gru (0.10) beats "
                                                    "the constant predictor") and "the other 3 do not (0.90–2.0)" in text["remedy_loss_adding_T4"]
    assert text["remedies_solved_adding"] == ("Remedies on adding: 1 of 8 (95% CI 2–47%) runs solved (test accuracy ≥ 0.99); "
                                              "the best median final test accuracy is 0.5 (gru, T = 2) (figure `remedies`).")
    assert ("on adding at T = 4, 2 of 3 remedies stay above 0.9 of the constant predictor's loss in 100 steps, like the "
            "plain RNN (1.0)") in text["classic_account_adding"]
    assert "remedy_tests_adding" not in text  # one run against one: no test
    # at initialization, T = 4 (3 steps back): ||dL/ds_1|| / ||dL/ds_4|| = per-step factor ** 3
    factors = {"g3": (0.01, np.nan), "t2": (0.1, np.nan), "r2": (0.8 ** (1 / 3), np.nan), "l2": (0.6, 0.9), "t1": (0.5, np.nan)}
    init = pd.DataFrame([(run, 0, t, f ** (T - t), c ** (T - t)) for run, (f, c) in factors.items()
                         for T in [4 if run != "t1" else 2] for t in range(1, T + 1)],
                        columns=["run_id", "step", "t", "ds_norm", "dc_norm"])
    text = {f.id: f.text for f in findings.gradient_at_initialization(frames.remedy_init_rows(init, data), data, "grad")}
    assert text["init_gradient_adding"] == ("On adding, T = 4, ||dL/ds_1||/||dL/ds_last|| at initialization (median) spans "
                                            "0.80, ×0.93 per step (relu, identity init) to 1.0e-06, ×0.010 per step (gru); "
                                            "plain RNN 0.0010 (figure `grad`).")
    assert text["init_cell_state_adding_lstm"] == ("lstm on adding, T = 4: its cell state keeps ||dL/dc_1||/||dL/dc_last|| = "
                                                   "0.73, ×0.90 per step at initialization, its hidden state 0.22 (figure `grad`).")
    assert ("relu, identity init keeps it closest to its size at the loss (0.80) yet ends at 2.0 times the constant predictor's loss"
            in text["gradient_kept_adding"])
    assert ("gru beats the constant predictor (0.10) though its gradient vanishes as fast as the plain RNN's or faster "
            "(1.0e-06 against 0.0010)") in text["gradient_learns_adding_gru"]


def test_runs_table_counts_outcomes_and_statuses_per_question():
    runs = pd.DataFrame({"question": ["init", "seqlen", "seqlen", "seqlen", "seqlen"],
                         "status": ["FINISHED", "FINISHED", "FINISHED", "RUNNING", "KILLED"],
                         "outcome": ["unsolved", "solved", "diverged", None, None], "train.steps": [0, 5, 5, 5, 5]})
    table = report_build.runs_table(runs).set_index("question")
    assert table.loc["seqlen"].to_dict() == {"runs": 4, "measured at initialization": 0, "solved": 1, "unsolved": 0,
                                             "diverged": 1, "running": 1, "killed": 1, "failed": 0, "no outcome": 0}
    # a run that does not train is measured at initialization, never counted unsolved
    assert table.loc["init", ["measured at initialization", "unsolved"]].tolist() == [1, 0]
    assert table.loc["total", "runs"] == 5 and list(table.index) == ["init", "seqlen", "total"]


# the whole build

def test_an_empty_experiment_reports_what_to_run(store, tmp_path):
    create_experiment(store, "rnngrad")
    code, readme = build(store, tmp_path / "out")
    assert code == 0
    for question in sections.QUESTIONS:
        assert f"No runs with question={question}: `python -m rnngrad.train -m experiment={question} tracking.uri={store}`" in readme
    assert "Not drawn" in readme and not list((tmp_path / "out" / "figures").iterdir())


def test_a_missing_experiment_is_refused_naming_those_there_are_and_the_report_is_untouched(store, tmp_path, capsys):
    create_experiment(store, "rnngrad")
    create_experiment(store, "pilot")
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "README.md").write_text("the good report")
    (out / "figures" / "a.png").write_bytes(b"png")
    code, readme = build(store, out, experiment="rnngard")
    assert code == 2 and readme == "the good report"
    assert sorted(p.name for p in out.rglob("*")) == ["README.md", "a.png", "figures"]
    err = capsys.readouterr().err
    assert "no experiment 'rnngard'" in err and "'pilot'" in err and "'rnngrad'" in err
    with pytest.raises(load.ExperimentNotFound, match="no experiment 'absent'"):
        load.Study.open(store, "absent")


def test_failed_build_leaves_the_old_report_and_a_good_one_keeps_other_files(store, tmp_path, monkeypatch):
    create_experiment(store, "rnngrad")
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "README.md").write_text("old report")
    (out / "figures" / "old.png").write_bytes(b"png")
    (out / ".gitkeep").write_text("")

    def broken(self, figure_dir="figures"):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_build.Report, "markdown", broken)
    with pytest.raises(RuntimeError):
        build(store, out)
    assert (out / "README.md").read_text() == "old report" and (out / "figures" / "old.png").exists()
    assert sorted(p.name for p in out.iterdir()) == [".gitkeep", "README.md", "figures"]
    monkeypatch.undo()
    code, readme = build(store, out)
    assert code == 0 and readme.startswith("# rnngrad report")
    assert not (out / "figures" / "old.png").exists() and (out / ".gitkeep").exists()


REMEDY_PARAMS = dict(PARAMS, question="remedies", **{"train.steps": 100, "task.seq_len": 3, "model.cell": "rnn", "model.norm": "none",
                                                     "model.init": "gaussian", "clip.mode": "none", "clip.threshold": 1.0})


def test_remedies_with_one_task_and_some_runs_without_grad_norms_still_draw(store, tmp_path):
    client = MlflowClient(store)
    exp = create_experiment(store, "rnngrad")
    done = {"outcome": "unsolved", "task.baseline": 1 / 6}
    lstm = fake_run(client, exp, "lstm", dict(REMEDY_PARAMS, **{"model.cell": "lstm"}), tags=done,
                    metrics={"eval/loss": [(100, 0.1)], "eval/accuracy": [(100, 0.5)]})
    fake_run(client, exp, "tanh", REMEDY_PARAMS, tags=done, metrics={"eval/loss": [(100, 0.2)], "eval/accuracy": [(100, 0.1)]})
    pd.DataFrame({"step": 0, "t": [1, 2, 3], "ds_norm": [0.25, 0.5, 1.0], "jac_norm": np.nan, "bound": np.nan,
                  "dc_norm": [0.5, 0.7, 1.0]}).to_parquet(tmp_path / "grad_norms.parquet")
    client.log_artifact(lstm, str(tmp_path / "grad_norms.parquet"))
    code, readme = build(store, tmp_path / "out")
    assert code == 0 and "could not be drawn" not in readme
    assert {"remedies", "remedies_grad_through_time"} <= {p.stem for p in (tmp_path / "out" / "figures").glob("*.png")}
    assert "1 run(s) without grad_norms.parquet left out." in readme
    assert ("Remedies on adding, T = 3 (1 run each, 100 steps): lstm (0.60) beats the constant predictor (median final "
            "test loss below 0.9 of its); tanh, gaussian init does not (1.2) (figure `remedies`).") in readme
    assert ("lstm on adding, T = 3: its cell state keeps ||dL/dc_1||/||dL/dc_last|| = 0.50, ×0.71 per step at initialization, "
            "its hidden state 0.25 (figure `remedies_grad_through_time`).") in readme
    create_experiment(store, "bare")  # no artifacts at all
    fake_run(client, client.get_experiment_by_name("bare").experiment_id, "tanh", REMEDY_PARAMS, tags=done,
             metrics={"eval/loss": [(100, 0.2)]})
    code, readme = build(store, tmp_path / "bare", experiment="bare")
    assert code == 0 and (tmp_path / "bare" / "figures" / "remedies.png").exists()
    assert "Not drawn: none of the remedies runs has grad_norms.parquet" in readme


PRECISION_PARAMS = dict(PARAMS, question="precision", **{"task.seq_len": 3, "model.activation": "sigmoid", "model.init": "gaussian",
                                                         "model.spectral_radius": 0.5})


def test_precision_runs_draw_the_figure_and_state_where_float32_underflows(store, tmp_path):
    client = MlflowClient(store)
    exp = create_experiment(store, "rnngrad")
    done = {"outcome": "unsolved", "task.baseline": 1 / 6}
    for dtype, norms in (("float64", [1e-46, 1e-20, 1.0]), ("float32", [0.0, 1e-20, 1.0]), ("float32-again", None)):
        run = fake_run(client, exp, dtype, dict(PRECISION_PARAMS, **{"model.dtype": dtype.split("-")[0], "seed": len(dtype)}),
                       tags=done, metrics={"spectral/radius": [(0, 0.5)]})
        if norms:
            frame = pd.DataFrame({"step": 0, "t": [1, 2, 3], "ds_norm": norms, "jac_norm": np.nan, "bound": np.nan})
            frame.to_parquet(tmp_path / "grad_norms.parquet")
            client.log_artifact(run, str(tmp_path / "grad_norms.parquet"))
    code, readme = build(store, tmp_path / "out")
    assert code == 0 and (tmp_path / "out" / "figures" / "precision.png").exists()
    assert "1 run(s) without grad_norms.parquet left out." in readme
    assert ("sigmoid, ρ = 0.5: float32's ||dL/ds_t|| falls below ε = 1.2e-07 times its largest at T − t = 1, so the summed "
            "weight gradient loses longer-range terms; it reports 0 only from T − t = 2 (figure `precision`).") in readme
    assert ("sigmoid, ρ = 0.5: where float32 first reports exactly 0 (T − t = 2), float64 still measures 1e-46, from the same "
            "weights (figure `precision`).") in readme
    assert "On adding, T = 3, while float32's" in readme and "No runs with question=precision" not in readme


def _diverging_run(uri, monkeypatch):
    """One real training run that diverges (relu, rho 3, SGD with lr 10), in this process."""
    from hydra import compose, initialize_config_dir

    from rnngrad.app import main

    monkeypatch.delenv(main.PARENT_ENV, raising=False)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "question=clipping", "model.activation=relu", "model.init=gaussian", "model.spectral_radius=3.0", "optim=sgd",
            "optim.lr=10.0", "task.seq_len=8", "model.hidden_size=8", "train.steps=20", "train.eval_interval=10",
            "train.diag_interval=10", "task.test_size=32", "train.verbose=false", f"tracking.uri={uri}"])
    result = main.run(cfg)
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
    assert "no finished runs with question=seqlen. Produce them with `python -m rnngrad.train -m experiment=seqlen" in readme
    assert ("Not drawn: no finished runs with question=precision. Produce them with "
            f"`python -m rnngrad.train -m experiment=precision tracking.uri={store}`") in readme
    assert "| clipping | 1 | 0 | 0 | 0 | 1 | 0 | 0 | 0 | 0 |" in readme
    assert "| seqlen | 1 | 0 | 0 | 0 | 0 | 1 | 0 | 0 | 0 |" in readme
    assert "Without clipping 1 of 1 (95% CI 21–100%) runs diverged" in readme
    assert client.get_run(diverged).data.tags["outcome"] == "diverged"


TINY_STUDY = """# @package _global_
hydra:
  sweeper:
    grids:
      init: {question: init, task.seq_len: 8, train.steps: 0, model.activation: "tanh,linear", model.spectral_radius: "0.5,2.0"}
      precision: {question: precision, task.seq_len: 100, train.steps: 0, model.activation: sigmoid, model.init: gaussian,
                  model.spectral_radius: 0.5, model.dtype: "float64,float32"}
      seqlen: {question: seqlen, task.seq_len: "4,8", clip: "none,norm", train.steps: 20}
      clipping: {question: clipping, task.seq_len: 8, model.activation: relu, model.spectral_radius: 3.0, model.init: gaussian,
                 optim: sgd, optim.lr: 10.0, clip: "none,norm", train.steps: 20}
      truncation: {question: truncation, task.seq_len: 8, bptt.truncation: "2,null", train.steps: 20}
      charlm: {question: charlm, task: char_lm, task.seq_len: 8, bptt: chunked, bptt.truncation: 8, train.steps: 20}
      remedies: {question: remedies, model: irnn, task.seq_len: "4,8", train.steps: 20}
"""


@pytest.mark.slow
def test_report_from_a_real_sweep_draws_every_figure_and_links_it(tmp_path, blank_db):
    proc, uri = run_preset(tmp_path, blank_db, TINY_STUDY)
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
    assert readme.split("| total |")[1].split("|")[4].strip() == str(diverged)
    # one claim per finding, each naming its figure; the opening states each question's budget as read from the runs
    data = json.loads((out / "findings.json").read_text())
    for record in data["findings"]:
        quoted = tuple(findings.Number(n["id"], 0.0, None, None, n["printed"]) for n in record["numbers"] if n["n"] is not None)
        assert findings.words(findings.Finding(record["id"], record["text"], quoted=quoted)) <= findings.MAX_WORDS, record["text"]
        assert re.search(r"figures? `\w+`", record["text"]), record["text"]
    steps = {r.data.params["train.steps"] for r in seqlen}
    assert f"seqlen ({len(seqlen)} runs, {'–'.join(sorted(steps, key=int))} training steps" in readme
    assert "[reports/classic/README.md](classic/README.md)" in readme
    # determinism: a second build of the same store writes the same findings.json, and the same README but its build time
    again = tmp_path / "again"
    assert build(uri, again)[0] == 0
    assert (again / "findings.json").read_bytes() == (out / "findings.json").read_bytes()
    built = re.compile(r"^Built .* UTC ", re.M)
    assert built.sub("", (again / "README.md").read_text()) == built.sub("", readme)


def _foreign(path):
    with sqlite3.connect(path) as db:
        db.execute("create table songs (title text)")


def _tableless(path):
    sqlite3.connect(path).close()
    with sqlite3.connect(path) as db:
        db.execute("create table t (x)")
        db.execute("drop table t")


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "is an empty file, not an MLflow store"),
    (lambda p: p.write_bytes(b"not a database" * 20), "is not a SQLite database"),
    (_foreign, "is a SQLite database of another program"),
    (_tableless, "is a SQLite database of another program"),
])
def test_the_report_refuses_a_file_that_is_not_an_mlflow_store_and_leaves_it_as_it_was(tmp_path, capsys, make, message):
    path = tmp_path / "other.db"
    make(path)
    before = path.read_bytes()
    code, readme = build(f"sqlite:///{path}", tmp_path / "out")
    assert code == 2 and readme is None and not (tmp_path / "out").exists()
    assert message in capsys.readouterr().err
    assert path.read_bytes() == before  # no MLflow tables added, nothing migrated


# the builder as a command, against stores it must only read (issue 16): each case a subprocess of scripts/build_report.py

def build_command(uri, out, *more, timeout=300):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "build_report.py"), "--tracking-uri", uri, "--out", str(out),
                           *more], capture_output=True, text=True, timeout=timeout, env=environment,
                          cwd=next(p for p in out.parents if p.is_dir()))


def state(*paths):
    """Each file under these paths: its bytes' hash and its mtime (ns), to show that nothing changed."""
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()]
    return {str(f): (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns) for f in files}


@pytest.fixture
def previous(tmp_path):
    """A previous report in tmp_path/report: README.md and one figure."""
    out = tmp_path / "report"
    (out / "figures").mkdir(parents=True)
    (out / "README.md").write_text("the previous report")
    (out / "figures" / "old.png").write_bytes(b"png")
    return out


def _truncated(path, blank_db):
    data = blank_db.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damaged_page(path, blank_db):
    data = bytearray(blank_db.read_bytes())
    size = int.from_bytes(data[16:18], "big")  # the page size, from the header
    data[2 * size : 3 * size] = b"\xff" * size  # page 3: a table's b-tree page (the schema on page 1 still reads)
    path.write_bytes(bytes(data))


def _old_schema(path, blank_db):
    shutil.copy(blank_db, path)
    with sqlite3.connect(path) as db:
        db.execute("update alembic_version set version_num = '0a8213491aaa'")  # MLflow 1.x's first revision


def _table_missing(path, blank_db):
    shutil.copy(blank_db, path)
    with sqlite3.connect(path) as db:
        db.execute("drop table latest_metrics")


@pytest.mark.parametrize("make, message", [
    (lambda p, blank: p.write_bytes(np.random.default_rng(0).bytes(4096)), "is not a SQLite database"),
    (_truncated, "cannot be read as SQLite (database disk image is malformed)"),
    (_damaged_page, "is a damaged SQLite database (*** in database main *** Page 3: btreeInitPage() returns error code 11)"),
    (_old_schema, "has MLflow schema revision 0a8213491aaa (this MLflow writes"),
    (_table_missing, "and some of its tables are missing"),
])
def test_the_builder_refuses_a_corrupt_or_unmigrated_store_and_changes_nothing(tmp_path, blank_db, previous, make, message):
    path = tmp_path / "mlflow.db"
    make(path, blank_db)
    before = state(path, previous)
    proc = build_command(f"sqlite:///{path}", previous)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert state(path, previous) == before and sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "report"]


def test_the_builder_refuses_an_out_that_is_a_file_and_leaves_it(tmp_path, store, capsys):
    create_experiment(store, "rnngrad")
    (tmp_path / "report.md").write_text("my notes")
    before = state(tmp_path)
    proc = build_command(store, tmp_path / "report.md")
    assert proc.returncode == 2 and f"--out {tmp_path / 'report.md'} is a file, not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr and state(tmp_path) == before
    deeper = tmp_path / "report.md" / "deeper"  # the same check, in this process
    assert build(store, deeper) == (2, None) and f"--out {deeper} is under {tmp_path / 'report.md'}, a file" in capsys.readouterr().err
    assert state(tmp_path) == before


def _one_figure_store(uri, question="init", name="init-tanh"):
    """A store whose one init run draws the decay-rate figure (its metrics need no artifact)."""
    client = MlflowClient(uri)
    fake_run(client, create_experiment(uri, "rnngrad"), name, dict(PARAMS, question=question),
             tags={"outcome": "unsolved", "task.baseline": 1 / 6},
             metrics={"grad/decay_rate": [(0, -0.5)], "spectral/radius": [(0, 0.6)], "lyap/top": [(0, -0.5)]})
    return client


def test_a_build_leaves_the_store_byte_for_byte_and_escapes_param_text_in_the_markdown(tmp_path, store):
    awkward = "a|b *c* _d_ `e`\n# f <g> [h](i) $j$"
    client = _one_figure_store(store, question=awkward, name="run|*1*")
    fake_run(client, client.get_experiment_by_name("rnngrad").experiment_id, "still|`running`", PARAMS, status="RUNNING")
    path = Path(store[len("sqlite:///"):])
    before = state(path.parent)
    out = tmp_path / "out"
    proc = build_command(store, out)
    assert proc.returncode == 0, proc.stderr
    assert state(path.parent) == before  # not a byte, not an mtime: no migration, no write, no journal
    readme = (out / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| a")]
    assert rows == [r"| a\|b \*c\* \_d\_ \`e\` # f \<g> \[h\](i) \$j\$ | 1 | 1 | 0 | 0 | 0 | 0 | 0 | 0 | 0 |"]
    assert "1 run(s) still running, left out of every figure: still\\|\\`running\\`." in readme
    # the read-only connection: a write through the report's client fails and leaves the file as it was
    with pytest.raises(Exception, match="readonly"):
        load.open_client(store).create_experiment("written")
    assert state(path.parent) == before


HOLD = """import sys, time
from pathlib import Path
from matplotlib.figure import Figure
save, marker = Figure.savefig, Path(sys.argv[1])
def held(self, *args, **kwargs):  # the first figure saved, the build waits mid-way to be killed
    save(self, *args, **kwargs)
    marker.write_text("saving")
    time.sleep(120)
Figure.savefig = held
sys.argv = sys.argv[2:]
exec(compile(Path(sys.argv[0]).read_text(), sys.argv[0], "exec"), {"__name__": "__main__"})
"""


def test_a_killed_build_leaves_the_previous_report_and_the_next_build_cleans_its_folder(tmp_path, store, previous):
    _one_figure_store(store)
    before, marker = state(previous), tmp_path / "saving"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(marker), str(ROOT / "scripts" / "build_report.py"),
                             "--tracking-uri", store, "--out", str(previous)], env=environment,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), proc.stderr.read() if proc.poll() is not None else "the build never saved a figure"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert {k: v for k, v in state(previous).items() if cli.STAGE not in k} == before  # the previous report, intact
    assert len(list(previous.glob(f"{cli.STAGE}*"))) == 1  # what SIGKILL leaves behind
    done = build_command(store, previous)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in previous.iterdir()) == ["README.md", "figures", "findings.json"]
    assert [p.name for p in (previous / "figures").iterdir()] and (previous / "figures" / "init_decay_rate.png").exists()


def test_stale_staging_folders_are_finished_one_way_and_removed_and_a_live_one_is_kept(tmp_path):
    out = tmp_path / "report"
    # killed after moving the old figures aside: they go back
    (out / ".build-a" / "old-figures").mkdir(parents=True)
    (out / ".build-a" / "old-figures" / "old.png").write_bytes(b"old")
    (out / ".build-a" / "lock").write_text("")
    (out / "README.md").write_text("old")
    assert cli.clean_stale(out) == [out / ".build-a"]
    assert (out / "figures" / "old.png").read_bytes() == b"old" and (out / "README.md").read_text() == "old"
    # killed after moving the new figures in: the new README follows them
    (out / ".build-b" / "old-figures").mkdir(parents=True)
    (out / ".build-b" / "README.md").write_text("new")
    (out / ".build-b" / "lock").write_text("")
    cli.clean_stale(out)
    assert (out / "README.md").read_text() == "new" and not (out / ".build-b").exists()
    # a build that holds its lock, and one that has not taken it yet, are left alone
    (out / ".build-live").mkdir()
    (out / ".build-new").mkdir()
    with open(out / ".build-live" / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert cli.clean_stale(out) == []
    assert (out / ".build-live").exists() and (out / ".build-new").exists()


def test_the_quick_report_states_each_protocol_against_its_paper():
    from rnngrad.report.protocol import quick_protocols

    runs = pd.DataFrame({"question": ["clipping"] * 4 + ["init"], "task.name": "temporal_order",
                         "task.seq_len": 20, "model.hidden_size": 50, "optim.name": "sgd", "optim.lr": 0.3,
                         "clip.mode": ["none", "none", "norm", "norm", "none"], "clip.threshold": 1.0,
                         "train.steps": [2000] * 4 + [0], "train.batch_size": 20, "seed": [0, 1, 0, 1, 0]})
    table = quick_protocols(runs, ["clip.mode", "seed", "task.seq_len"]).splitlines()
    assert len(table) == 3  # the header, its rule, the one trained question (init trains nothing)
    assert table[2].startswith("| clipping | Pascanu et al. 2013 (Algorithm 1) | task temporal order, T 50–200, H 50,")
    assert ("| task temporal order, T 20 (the paper: 50–200), H 50, optimizer SGD, lr 0.3 (the paper: 0.01), "
            "clip none, norm 1, updates 2e3 (the paper: 5e6), batch 20, seeds 2 per arm and T |") in table[2]
    assert quick_protocols(runs[runs["question"] == "init"], ["seed"]) == ""


def test_truncation_findings_split_k_by_the_relevant_inputs_its_window_reaches():
    # temporal order at T = 20: t2 8-9 and t1 16-17 steps before the loss (tag task.relevant); k = 8 misses both,
    # k = 10 reaches t2 only, k = 17 reaches t2 and some sequences' t1, k = 18 both; nan is full BPTT
    outcomes = {8.0: 0, 10.0: 3, 17.0: 2, 18.0: 3, float("nan"): 3}
    runs = pd.DataFrame([{"bptt.truncation": k, "task.dependency": 17, "task.relevant": "8-9,16-17",
                          "outcome": "solved" if i < solved else "unsolved"} for k, solved in outcomes.items() for i in range(3)])
    found = findings.truncation_bands(runs, "truncation")
    assert [f.text for f in found] == [
        "Truncated BPTT, k misses t2 and t1 (k = 8): 0 of 3 (95% CI 0–56%) runs solved; full BPTT 3 of 3 (95% CI "
        "44–100%) (p = 0.1, Fisher's exact test) (figure `truncation`).",
        "Truncated BPTT, k reaches t2, misses t1 (k = 10): 3 of 3 (95% CI 44–100%) runs solved; full BPTT 3 of 3 (95% CI "
        "44–100%) (p = 1, Fisher's exact test) (figure `truncation`).",
        "Truncated BPTT, k reaches t2, partly t1 (k = 17): 2 of 3 (95% CI 21–94%) runs solved; full BPTT 3 of 3 (95% CI "
        "44–100%) (p = 1, Fisher's exact test) (figure `truncation`).",
        "At k = 10 the gradient never reaches t1, yet most runs solved: the state carries t1 forward, and the weights "
        "learned inside the window act on every step (figure `truncation`).",
    ]
