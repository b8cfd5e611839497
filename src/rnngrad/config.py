"""Configuration: the one home of every choice list, default and range check.

The schema dataclasses below are registered in Hydra's ConfigStore (`conf/config.yaml` lists
`config_schema` first in its defaults) and are the single source of every default: a YAML file in
`conf/` sets only the key that names its group option (`cell: lstm`, `name: sgd`) and what that
option changes, and the training loop receives the validated schema object itself (`checked(cfg)`),
so no default is restated anywhere. Defaults whose natural home is a library class (an optimizer's
betas, a task's test-set size, the model's initial scale) are read from its signature.

Choice fields are string enums built from the constants of the modules that implement the choices
(`rnngrad.nn`, `tasks`, `optim`, `clip`, `training`): Hydra rejects a wrong value while composing,
naming the valid ones (`model.activation=softplus` -> "Invalid value 'softplus', expected one of
[sigmoid, tanh, relu, linear]"); `check(cfg)` adds every range check a type cannot express.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

from rnngrad import clip, optim, tasks, training
from rnngrad.nn import ACTIVATIONS, CELLS, DTYPES, INITS, NORMS, VALID_COMBINATIONS
from rnngrad.nn import model as nn_model


class ConfigError(ValueError):
    """A configuration value out of its valid range."""


def _choices(name: str, values) -> type[StrEnum]:
    """A string enum of the valid values: its members compare equal to the plain strings."""
    return StrEnum(name, {v: v for v in values})


Activation = _choices("Activation", ACTIVATIONS)
Init = _choices("Init", INITS)
Cell = _choices("Cell", CELLS)
Norm = _choices("Norm", NORMS)
DType = _choices("DType", DTYPES)
TaskName = _choices("TaskName", tasks.TASKS)
OptimName = _choices("OptimName", optim.OPTIMIZERS)
ClipMode = _choices("ClipMode", clip.CLIP_MODES)
BPTTMode = _choices("BPTTMode", training.BPTT_MODES)


def _default_of(cls, name: str):
    """The default of keyword `name` in cls's signature: the library class is that default's home."""
    return inspect.signature(cls).parameters[name].default



@dataclass
class TaskConfig:
    name: TaskName = TaskName.adding
    seq_len: int = 50
    test_size: int = _default_of(tasks.Task, "test_size")
    options: dict[str, Any] = field(default_factory=dict)  # task-specific, e.g. char_lm's solve_fraction


@dataclass
class ModelConfig:
    cell: Cell = Cell.rnn
    norm: Norm = Norm.none
    activation: Activation = Activation.tanh
    hidden_size: int = 64
    init: Init = Init.orthogonal
    spectral_radius: Optional[float] = _default_of(nn_model.init_params, "spectral_radius")  # null: W as drawn
    scale: float = _default_of(nn_model.init_params, "scale")
    forget_bias: float = _default_of(nn_model.init_params, "forget_bias")  # the LSTM's, at initialization
    dtype: DType = DType.float64


@dataclass
class OptimConfig:
    name: OptimName = OptimName.adam
    lr: float = 1e-3
    momentum: float = _default_of(optim.Momentum, "momentum")
    nesterov: bool = _default_of(optim.Momentum, "nesterov")
    alpha: float = _default_of(optim.RMSProp, "alpha")
    beta1: float = _default_of(optim.Adam, "beta1")
    beta2: float = _default_of(optim.Adam, "beta2")
    eps: float = _default_of(optim.Adam, "eps")


@dataclass
class ClipConfig:
    mode: ClipMode = ClipMode.none
    threshold: float = 1.0


@dataclass
class BPTTConfig:
    truncation: Optional[int] = None  # null: full BPTT
    mode: BPTTMode = BPTTMode.window


@dataclass
class TrainConfig:
    steps: int = 1000  # 0: measure at initialization only
    batch_size: int = 32
    eval_interval: int = 100
    diag_interval: int = 100  # the instruments stay under 10% of a step (scripts/bench.py)
    stop_when_solved: bool = False
    lyapunov_k: int = 1
    verbose: bool = True


@dataclass
class TrackingConfig:
    uri: Optional[str] = None  # null: $MLFLOW_TRACKING_URI, else sqlite:///<project root>/mlflow.db
    experiment: str = "rnngrad"
    skip_completed: bool = True  # a rerun sweep skips configurations that already have a FINISHED run
    through_time_checkpoints: int = 3
    through_time_points: int = 25  # of each checkpoint's T norms, at most this many t go to MLflow as metrics
    metric_every: int = 50  # per-step scalars to MLflow every N steps (and at every eval/diagnostic step)
    flush_seconds: float = 10.0


@dataclass
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    bptt: BPTTConfig = field(default_factory=BPTTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 0
    question: str = "adhoc"  # which question of the study a run answers: set by conf/experiment, read by the report


def register_configs() -> None:
    """Register the schema: conf/config.yaml lists `config_schema` first in its defaults."""
    ConfigStore.instance().store(name="config_schema", node=Config)


def _require(ok: bool, key: str, rule: str, value) -> list[str]:
    return [] if ok else [f"{key} must be {rule}, got {value!r}"]


def _range_errors(cfg: DictConfig) -> list[str]:
    m, t, o, c, b, tr, tk = cfg.model, cfg.task, cfg.optim, cfg.clip, cfg.bptt, cfg.train, cfg.tracking
    return [
        *_require(t.seq_len >= 2, "task.seq_len", ">= 2", t.seq_len),
        *_require(t.test_size >= 1, "task.test_size", ">= 1", t.test_size),
        *_require(m.hidden_size > 0, "model.hidden_size", "> 0", m.hidden_size),
        *_require(m.scale > 0, "model.scale", "> 0", m.scale),
        *_require(m.spectral_radius is None or m.spectral_radius > 0, "model.spectral_radius", "> 0 or null",
                  m.spectral_radius),
        *_require(o.lr > 0, "optim.lr", "> 0", o.lr),
        *_require(c.threshold > 0, "clip.threshold", "> 0", c.threshold),
        *_require(b.truncation is None or b.truncation >= 1, "bptt.truncation", ">= 1 or null (full BPTT)",
                  b.truncation),
        *_require(tr.steps >= 0, "train.steps", ">= 0", tr.steps),
        *_require(tr.batch_size >= 1, "train.batch_size", ">= 1", tr.batch_size),
        *_require(tr.eval_interval >= 1, "train.eval_interval", ">= 1", tr.eval_interval),
        *_require(tr.diag_interval >= 1, "train.diag_interval", ">= 1", tr.diag_interval),
        *_require(tr.lyapunov_k >= 1 and (m.hidden_size <= 0 or tr.lyapunov_k <= m.hidden_size),
                  "train.lyapunov_k", f"in [1, model.hidden_size={m.hidden_size}]", tr.lyapunov_k),
        *_require(tk.metric_every >= 1, "tracking.metric_every", ">= 1", tk.metric_every),
        *_require(tk.through_time_checkpoints >= 1, "tracking.through_time_checkpoints", ">= 1",
                  tk.through_time_checkpoints),
        *_require(tk.through_time_points >= 2, "tracking.through_time_points", ">= 2", tk.through_time_points),
    ]


def _combination_errors(cfg: DictConfig) -> list[str]:
    m, t, b, tr = cfg.model, cfg.task, cfg.bptt, cfg.train
    errors = []
    if b.mode == "chunked" and (t.name != "char_lm" or b.truncation is None):
        errors.append("bptt.mode=chunked needs task=char_lm and an integer bptt.truncation")
    if (m.cell, m.norm) not in VALID_COMBINATIONS:
        valid = ", ".join(f"{cell}/{norm}" for cell, norm in VALID_COMBINATIONS)
        errors.append(f"model.norm={m.norm} works with model.cell=rnn only, got model.cell={m.cell} "
                      f"(valid model.cell/model.norm: {valid})")
    if m.norm == "batch" and tr.batch_size < 2:
        errors.append("model.norm=batch needs train.batch_size >= 2 (batch statistics)")
    valid = [name for name in tasks.option_names(t.name) if name != "test_size"]
    unknown = sorted(set(t.options) - set(valid))
    if unknown:
        errors.append(f"task.options {unknown} are not options of task {t.name}; valid options: "
                      f"{', '.join(valid) or 'none'}")
    return errors


def check(cfg: DictConfig) -> None:
    """Every range and combination check a type cannot express; raises ConfigError listing each violation."""
    errors = _range_errors(cfg) + _combination_errors(cfg)
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))


def checked(cfg: DictConfig) -> Config:
    """The validated run configuration, as the schema object the training loop receives.

    cfg: a composed config (Hydra's own `hydra` node, if present, is left out). Raises ConfigError.
    """
    check(cfg)
    if "hydra" in cfg:  # a sweep's composed job carries Hydra's node; the schema has no such field
        cfg = copy.copy(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
    run = OmegaConf.to_object(cfg)
    # the task's and the optimizer's own options (char_lm's fractions, momentum) are checked by their constructors
    for what, make in (("task", training.make_run_task), ("optim", training.make_run_optimizer)):
        try:
            make(run)
        except ValueError as err:
            raise ConfigError(f"invalid configuration:\n  {what}: {err}") from None
    return run


def resolved(cfg: DictConfig) -> dict:
    """The run's config as plain data (enums as strings), without Hydra's own node (left unresolved: a
    sweep's job composed before it is launched has no hydra.job.num yet)."""
    data = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]),
                                  resolve=True, enum_to_str=True)
    return data


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{'model': {'activation': 'tanh'}} -> {'model.activation': 'tanh'}."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def config_hash(cfg: DictConfig) -> str:
    """A short hash of everything that determines a run's result (the tracking keys excluded)."""
    data = resolved(cfg)
    data.pop("tracking", None)  # where and how often a run logs does not change its result
    data.get("train", {}).pop("verbose", None)  # printing does not change a result
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def run_name(cfg: DictConfig) -> str:
    """A readable name that says what the run is, e.g. adding-T100-tanh-orthogonal-clipnorm1-s0."""
    m = cfg.model
    parts = [str(cfg.task.name), f"T{cfg.task.seq_len}"]
    parts.append(str(m.activation if m.cell == "rnn" else m.cell))
    if m.norm != "none":
        parts.append(f"{m.norm}norm")
    parts.append(str(m.init))
    if m.spectral_radius is not None:
        parts.append(f"rho{m.spectral_radius:g}")
    if m.dtype != "float64":
        parts.append(str(m.dtype))
    if cfg.clip.mode != "none":
        parts.append(f"clip{cfg.clip.mode}{cfg.clip.threshold:g}")
    if cfg.bptt.truncation is not None:
        parts.append(f"{'chunk' if cfg.bptt.mode == 'chunked' else 'k'}{cfg.bptt.truncation}")
    parts.append(f"s{cfg.seed}")
    return "-".join(parts)
