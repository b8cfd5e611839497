"""The configuration is the one home of every default, choice list and range check."""

import dataclasses
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError
from runconfig import run_config

from rnngrad import config, core
from rnngrad.training import Callback, train

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("task", "model", "optim", "clip", "bptt", "train", "tracking")
IDENTITY = {"task": "name", "model": "cell", "optim": "name", "clip": "mode", "bptt": "truncation"}


def composed(*overrides):
    config.register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def schema_defaults() -> dict:
    return config.resolved(OmegaConf.structured(config.Config))


def test_the_default_groups_restate_nothing():
    """With no overrides the composed run is exactly the schema's defaults (conf/ adds only hydra's own)."""
    data = config.resolved(composed())
    assert data == schema_defaults()


@pytest.mark.parametrize("path", sorted(p for g in GROUPS for p in (CONF / g).glob("*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_group_option_sets_only_what_it_changes(path):
    """Each key of a group option's YAML names the option or differs from the schema's default."""
    group = path.parent.name
    values = yaml.safe_load(path.read_text()) or {}
    defaults = schema_defaults()[group]
    restated = [k for k, v in values.items() if k != IDENTITY.get(group) and defaults.get(k) == v]
    assert restated == [], f"{path.name} restates schema defaults {restated}"


def test_core_defaults_agree_with_the_schema():
    """Where the core's init_params has a default, it is the schema's."""
    model = schema_defaults()["model"]
    signature = inspect.signature(core.init_params).parameters
    shared = {name: p.default for name, p in signature.items() if name in model and p.default is not p.empty}
    assert set(shared) == {"cell", "norm", "spectral_radius", "scale", "forget_bias", "dtype", "io_std", "bn_gain"}
    shared["dtype"] = np.dtype(shared["dtype"]).name
    assert {name: model[name] for name in shared} == shared
    assert signature["init"].default is inspect.Parameter.empty  # the schema chooses the init


class Info(Callback):
    def on_start(self, info):
        self.info = info


def test_changing_a_schema_default_changes_the_run():
    """The loop has no defaults of its own: a new schema default reaches the trained model."""

    @dataclasses.dataclass
    class SmallModel(config.ModelConfig):
        hidden_size: int = 7

    @dataclasses.dataclass
    class Small(config.Config):
        model: config.ModelConfig = dataclasses.field(default_factory=SmallModel)

    try:
        ConfigStore.instance().store(name="config_schema", node=Small)
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=["train.steps=0", "train.verbose=false", "task.test_size=8"])
    finally:
        config.register_configs()
    assert cfg.model.hidden_size == 7
    probe = Info()
    train(config.checked(cfg), [probe])
    D, O, H = 2, 1, 7  # adding: (value, marker) in, one sum out
    assert probe.info["n_params"] == D * H + H * H + H + H * O + O


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.steps=-1", "train.steps must be >= 0"),
        ("train.batch_size=0", "train.batch_size must be >= 1"),
        ("task.seq_len=1", "task.seq_len must be >= 2"),
        ("optim.lr=-1", "optim.lr must be > 0"),
        ("clip.threshold=0", "clip.threshold must be > 0"),
        ("bptt.truncation=0", "bptt.truncation must be >= 1 or null"),
        ("bptt.mode=chunked", "bptt.mode=chunked needs task=char_lm"),
        ("model.norm=layer", None),  # valid with the rnn cell: no error
        ("task.options.nonsense=1", "valid options: test_seed"),
        ("model.lyapunov=1", "Key 'lyapunov' not in 'ModelConfig'"),
    ],
)
def test_range_and_combination_checks_name_the_key(override, message):
    if message is None:
        run_config(override)
        return
    with pytest.raises((config.ConfigError, OmegaConfBaseException), match=message):
        run_config(override)


def test_every_violation_is_listed_at_once():
    with pytest.raises(config.ConfigError) as err:
        run_config("train.steps=-1", "optim.lr=0", "model.cell=lstm", "model.norm=batch")
    text = str(err.value)
    assert "train.steps" in text and "optim.lr" in text and "model.norm=batch works with model.cell=rnn only" in text


@pytest.mark.parametrize("key, value, valid", [
    ("model.activation", "softplus", "sigmoid, tanh, relu, linear"),
    ("model.init", "random", "gaussian, xavier, he, orthogonal, identity, sparse, normal"),
    ("task.name", "fourier", "adding, temporal_order, copy, char_lm"),
    ("optim.name", "lbfgs", "sgd, momentum, rmsprop, adam"),
    ("bptt.mode", "sliding", "window, chunked"),
])
def test_choices_come_from_the_implementing_modules(key, value, valid):
    with pytest.raises(ValidationError, match=rf"expected one of \[{valid}\]"):
        run_config(f"{key}={value}")


@pytest.mark.parametrize("overrides, message", [
    (["task.name=char_lm", "task.options.train_fraction=2.0"], "task: train_fraction must lie in"),
    (["optim.name=momentum", "optim.momentum=1.5"], "optim: momentum must lie in (0, 1)"),
    (["optim.name=adam", "optim.beta2=1.0"], "optim: beta2 must lie in [0, 1)"),
])
def test_the_task_and_the_optimizer_check_their_own_options(overrides, message):
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        run_config(*overrides)


def test_the_run_is_the_schema_object_with_plain_string_choices():
    run = run_config("model.activation=relu")
    assert isinstance(run, config.Config) and run.model.activation == "relu" and f"{run.model.activation}" == "relu"
    assert run.optim.beta2 == inspect.signature(config.optim.Adam).parameters["beta2"].default
