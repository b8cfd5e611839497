"""Every experiment preset composes, every job of its sweep passes validation, and a shrunken copy of each arm
trains; the classic tier's grid keeps the contract with its report (the question names, the arms, at least 5 seeds
per arm), and a shrunken copy of it runs."""

import functools
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from clihelpers import run_cli, shrunken_preset, store_uri
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra_plugins.rnngrad_sweeper.grids_sweeper import expand_grids

from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from rnngrad import cli as rnngrad_cli
from rnngrad import config
from rnngrad.tasks import make_task

CONF = Path(__file__).resolve().parents[1] / "conf"
QUESTIONS = ["init", "seqlen", "clipping", "truncation", "charlm", "remedies", "precision"]
# the classic tier (issue 19): the question names are the contract with its report (rnngrad report classic)
CLASSIC = ["classic_gated", "classic_irnn", "classic_order", "classic_copy", "classic_bn", "classic_truncation"]
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def preset_overrides(name: str, compose_jobs: bool = False) -> list:
    """The override list of every job the preset's sweep would launch (and their composed configs, composed once
    per preset: composing a job takes Hydra about 0.1 s)."""
    return composed_jobs(name) if compose_jobs else _preset_overrides(name)


@functools.cache
def composed_jobs(name: str) -> tuple:
    return _preset_overrides(name, compose_jobs=True)


def _preset_overrides(name: str, compose_jobs: bool = False) -> list:
    config.register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        master = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        jobs = expand_grids(master.hydra.sweeper.params, master.hydra.sweeper.grids, [f"experiment={name}"], parser)
        if compose_jobs:
            return jobs, [compose("config", overrides=list(job)) for job in jobs]
        return jobs


def test_presets_are_the_questions_and_the_study():
    assert PRESETS == sorted(QUESTIONS + ["study"] + CLASSIC + ["classic"])


@pytest.mark.parametrize("name", QUESTIONS + CLASSIC)
def test_every_job_of_every_question_is_valid(name):
    _, jobs = preset_overrides(name, compose_jobs=True)
    assert {cfg.question for cfg in jobs} == {name}
    for cfg in jobs:
        config.checked(cfg)
    # no two jobs of a sweep are the same configuration
    keys = [tuple(sorted(str(v) for v in cfg.values())) for cfg in jobs]
    assert len(set(keys)) == len(keys)
    # nor share a run name, which starts with what tells them apart and ends with the question: unique in
    # the study too, the union of the questions (test_a_tier_is_the_union_of_its_questions)
    names = [config.run_name(cfg) for cfg in jobs]
    assert [n for n, count in Counter(names).items() if count > 1] == []
    lengths = [f"T{cfg.task.seq_len}" if cfg.task.min_seq_len is None else f"T{cfg.task.min_seq_len}to{cfg.task.seq_len}"
               for cfg in jobs]
    assert all(n.startswith(f"{T}-") and n.endswith(f"-{name}") for n, T in zip(names, lengths))


@pytest.mark.parametrize("tier, parts", [("study", QUESTIONS), ("classic", CLASSIC)])
def test_a_tier_is_the_union_of_its_questions(tier, parts):
    """The study (and the classic tier) runs exactly the jobs of its questions (so the validity of theirs covers it)."""
    strip = lambda job: sorted(o for o in job if not o.startswith("experiment="))  # noqa: E731
    questions = {name: [strip(job) for job in preset_overrides(name)] for name in parts}
    study = [strip(job) for job in preset_overrides(tier)]
    assert sorted(study) == sorted(job for jobs in questions.values() for job in jobs)
    assert Counter(next(o for o in job if o.startswith("question=")) for job in study) == {
        f"question={name}": len(jobs) for name, jobs in questions.items()}
    if tier == "study":
        assert len(questions["init"]) == 4 * 2 * 6  # activation x init x spectral radius


def arms(name: str, keys: list[str]) -> Counter:
    """How many jobs of question `name` (all of its seeds) each combination of these keys' values has."""
    _, jobs = preset_overrides(name, compose_jobs=True)
    assert all(cfg.train.steps > 0 for cfg in jobs)  # every classic run trains and ends with an evaluation
    return Counter(tuple(OmegaConf.select(cfg, key) for key in keys) for cfg in jobs)


# the arms of each classic question, by the keys that tell them apart (what the classic report reads, src/rnngrad/report/classic.py), and the
# settings its paper's protocol fixes
CLASSIC_ARMS = {
    "classic_gated": (["task.name", "task.seq_len", "model.cell", "model.activation"],
                      {("adding", T, cell, "tanh") for T in (100, 200) for cell in ("rnn", "lstm", "gru")}),
    "classic_irnn": (["task.name", "task.seq_len", "optim.lr", "model.activation", "model.init", "optim.name",
                      "clip.mode", "clip.threshold"],
                     {("adding", 100, lr, "relu", "identity", "sgd", "norm", 10.0) for lr in (0.01, 0.001)}),
    "classic_order": (["task.seq_len", "clip.mode", "clip.threshold", "train.omega_alpha"],
                      {(T, clip, 1.0, omega) for T in (20, 35, 50)
                       for clip, omega in (("none", 0.0), ("norm", 0.0), ("norm", 2.0))}),
    "classic_copy": (["task.name", "task.seq_len", "model.cell", "model.activation", "model.init"],
                     {("copy", 100, "lstm", "tanh", "orthogonal"), ("copy", 100, "rnn", "tanh", "orthogonal"),
                      ("copy", 100, "rnn", "linear", "orthogonal")}),
    "classic_bn": (["task.name", "model.norm", "model.bn_gain", "model.bn_variant"],
                   {("adding", "none", 0.1, "cooijmans"), ("adding", "batch", 0.1, "cooijmans"),
                    ("adding", "batch", 1.0, "cooijmans")}),
    "classic_truncation": (["task.seq_len", "bptt.truncation"], {(50, k) for k in (10, 20, 25, 40, 45, None)}),
}


@pytest.mark.parametrize("name", CLASSIC)
def test_the_classic_questions_have_their_arms_with_five_seeds_each(name):
    keys, expected = CLASSIC_ARMS[name]
    found = arms(name, keys)
    assert set(found) == expected
    assert min(found.values()) >= 5  # Wilson intervals and Fisher's test get at least 5 runs an arm


def test_the_classic_order_question_is_pascanus_protocol():
    """Smart tanh, plain SGD at 0.01, batch 20, lengths drawn in [T/4, T], 10,000 test sequences."""
    _, jobs = preset_overrides("classic_order", compose_jobs=True)
    for cfg in jobs:
        assert (cfg.model.init, cfg.model.hidden_size, cfg.model.spectral_radius) == ("sparse", 50, 0.95)
        assert (cfg.optim.name, cfg.optim.lr, cfg.train.batch_size, cfg.task.test_size) == ("sgd", 0.01, 20, 10_000)
        assert cfg.task.min_seq_len == cfg.task.seq_len // 4


def test_the_truncation_windows_span_the_dependency():
    """Windows that reach neither relevant symbol, both ends of the band that reaches t2 only, one that reaches t1 for every
    sequence (k >= dependency + 1: a loss at step T reaches s_T .. s_{T-k+1}), and full BPTT."""
    _, jobs = preset_overrides("classic_truncation", compose_jobs=True)
    (T,) = {cfg.task.seq_len for cfg in jobs}
    task = make_task("temporal_order", seq_len=T)
    (lo1, hi1), (lo2, hi2) = task.windows  # 0-based positions; the window of k reaches positions T-k .. T-1
    windows = {cfg.bptt.truncation for cfg in jobs}
    assert None in windows
    assert any(k is not None and k < T - (hi2 - 1) for k in windows)  # no relevant symbol inside the window
    t2_only = {k for k in windows if k is not None and T - lo2 <= k < T - (hi1 - 1)}  # every t2, no t1
    assert {T - lo2, T - hi1} <= t2_only  # its smallest and its largest window
    assert any(k is not None and k >= T - lo1 == task.dependency + 1 for k in windows)  # every t1


@pytest.mark.slow
def test_a_shrunken_classic_tier_runs_every_arm(tmp_path):
    """Every arm and T of the classic grid, one seed, 3 steps at tiny sizes, into a temporary store, and the classic
    report built from it."""
    overrides = shrunken_preset(tmp_path, "classic")
    shrunk = yaml.safe_load((tmp_path / "conf" / "experiment" / "classic_shrunk.yaml").read_text())
    assert set(shrunk["hydra"]["sweeper"]["grids"]) == {
        name for part in CLASSIC for name in yaml.safe_load((CONF / "experiment" / f"{part}.yaml").read_text())[
            "hydra"]["sweeper"]["grids"]}
    proc = run_cli(tmp_path, *overrides, "train.verbose=false", multirun=True)
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(store_uri(tmp_path))
    runs = client.search_runs([client.get_experiment_by_name("rnngrad").experiment_id], max_results=1000)
    children = [r for r in runs if r.data.tags.get("rnngrad.sweep") != "true"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    by_question = Counter(r.data.params["question"] for r in children)
    # one run per arm and T: 6 + 2 + 9 + 3 + 3 + 6
    assert by_question == {"classic_gated": 6, "classic_irnn": 2, "classic_order": 9, "classic_copy": 3,
                           "classic_bn": 3, "classic_truncation": 6}
    assert all({"eval/loss", "eval/accuracy"} <= set(r.data.metrics) for r in children)
    # and the classic report reads every question of the real grid: no row without runs
    out = tmp_path / "report"
    assert rnngrad_cli.main(["report", "classic", "--tracking-uri", store_uri(tmp_path), "--out", str(out)]) == 0
    records = {f["id"]: f["text"] for f in json.loads((out / "findings.json").read_text())["findings"]}
    assert all(records[f"{question}_result"] != "no runs" for question in CLASSIC)


def test_a_grid_spells_null_and_booleans_as_overrides_do():
    """YAML's null in a grid is the override null (Python would print 'None', a string the schema refuses)."""
    parser = OverridesParser.create()
    jobs = expand_grids(None, {"g": {"task.min_seq_len": None, "train.stop_when_solved": True, "seed": "0,1"}}, [], parser)
    assert [job[0] for job in jobs] == ["task.min_seq_len=null"] * 2 and [job[2] for job in jobs] == ["seed=0", "seed=1"]
    config.register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=jobs[0])
    assert cfg.task.min_seq_len is None and config.checked(cfg).train.stop_when_solved is True


# every arm of every question, shrunk (seed 0; a short T, few units, steps and test sequences) and trained
SHRINK = {"task.seq_len": "12", "task.test_size": "20", "model.hidden_size": "16", "train.batch_size": "4",
          "train.eval_interval": "2", "train.diag_interval": "2", "train.verbose": "false"}
ARM_EXCLUDES = ("seed", "task.seq_len", "model.spectral_radius")  # what does not make an arm of its own


def shrunk(job: list[str]) -> list[str]:
    """The job's overrides with the SHRINK values (16 units: the smart tanh init keeps 15 nonzeros per row) and
    at most 3 training steps."""
    keys = {o.partition("=")[0]: o for o in job}
    out = [o for k, o in keys.items() if k not in SHRINK and k != "train.steps"]
    steps = min(int(keys["train.steps"].partition("=")[2]), 3) if "train.steps" in keys else 3
    return out + [f"{k}={v}" for k, v in SHRINK.items()] + [f"train.steps={steps}"]


@pytest.mark.parametrize("name", QUESTIONS)
def test_a_shrunken_copy_of_every_arm_trains(name):
    """One run per arm (the grid's jobs without seed, T and spectral radius), with the preset's protocol (model
    preset, optimizer, clipping, truncation, batch norm variant) kept and its sizes shrunk: none crashes and none
    diverges in 3 steps."""
    from rnngrad.training import train

    arms = {}
    for job in preset_overrides(name):
        arms.setdefault(tuple(sorted(o for o in job if o.partition("=")[0] not in ARM_EXCLUDES)), job)
    config.register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        runs = [config.checked(compose("config", overrides=shrunk(job))) for job in arms.values()]
    assert {run.question for run in runs} == {name}
    assert all(run.task.seq_len == 12 and run.train.steps <= 3 for run in runs)
    outcomes = [train(run).outcome for run in runs]
    assert "diverged" not in outcomes, outcomes
