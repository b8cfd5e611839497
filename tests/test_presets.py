"""Every experiment preset composes, every job of its sweep passes validation, and a shrunken copy of each arm trains."""

from collections import Counter
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra_plugins.rnngrad_sweeper.grids_sweeper import expand_grids

from rnngrad import config

CONF = Path(__file__).resolve().parents[1] / "conf"
QUESTIONS = ["init", "seqlen", "clipping", "truncation", "charlm", "remedies", "precision"]
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def preset_overrides(name: str, compose_jobs: bool = False) -> list:
    """The override list of every job the preset's sweep would launch (and their composed configs)."""
    config.register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        master = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        jobs = expand_grids(master.hydra.sweeper.params, master.hydra.sweeper.grids, [f"experiment={name}"], parser)
        if compose_jobs:
            return jobs, [compose("config", overrides=list(job)) for job in jobs]
        return jobs


def test_presets_are_the_questions_and_the_study():
    assert PRESETS == sorted(QUESTIONS + ["study"])


@pytest.mark.parametrize("name", QUESTIONS)
def test_every_job_of_every_question_is_valid(name):
    _, jobs = preset_overrides(name, compose_jobs=True)
    assert {cfg.question for cfg in jobs} == {name}
    for cfg in jobs:
        config.checked(cfg)
    # no two jobs of a sweep are the same configuration
    keys = [tuple(sorted(str(v) for v in cfg.values())) for cfg in jobs]
    assert len(set(keys)) == len(keys)
    # nor share a run name, which starts with what tells them apart and ends with the question: unique in
    # the study too, the union of the questions (test_study_is_the_union_of_the_questions)
    names = [config.run_name(cfg) for cfg in jobs]
    assert [n for n, count in Counter(names).items() if count > 1] == []
    assert all(n.startswith(f"T{cfg.task.seq_len}-") and n.endswith(f"-{name}") for n, cfg in zip(names, jobs))


def test_study_is_the_union_of_the_questions():
    """The study runs exactly the jobs of its questions (so the validity of theirs covers it)."""
    strip = lambda job: sorted(o for o in job if not o.startswith("experiment="))  # noqa: E731
    questions = {name: [strip(job) for job in preset_overrides(name)] for name in QUESTIONS}
    study = [strip(job) for job in preset_overrides("study")]
    assert sorted(study) == sorted(job for jobs in questions.values() for job in jobs)
    assert Counter(next(o for o in job if o.startswith("question=")) for job in study) == {
        f"question={name}": len(jobs) for name, jobs in questions.items()}
    assert len(questions["init"]) == 4 * 2 * 6  # activation x init x spectral radius


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
