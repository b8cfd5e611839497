"""Typed configuration: dataclass schemas registered in Hydra's ConfigStore, range checks, and the
translation of a composed config into `training.Settings`.

Enum fields make Hydra reject a wrong value while composing, naming the valid ones
(`model.activation=softplus` -> "Invalid value 'softplus', expected one of [sigmoid, tanh, relu, linear]");
`check(cfg)` adds the range checks a type cannot express (hidden_size > 0, lr > 0, ...).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from rnngrad.training import Settings


class ConfigError(ValueError):
    """A configuration value out of its valid range."""


Activation = Enum("Activation", {k: k for k in ("sigmoid", "tanh", "relu", "linear")})
Init = Enum("Init", {k: k for k in ("gaussian", "xavier", "he", "orthogonal", "identity", "sparse")})
Cell = Enum("Cell", {k: k for k in ("rnn", "lstm", "gru")})
Norm = Enum("Norm", {k: k for k in ("none", "layer", "batch")})
DType = Enum("DType", {k: k for k in ("float64", "float32")})
TaskName = Enum("TaskName", {k: k for k in ("adding", "temporal_order", "copy", "char_lm")})
OptimName = Enum("OptimName", {k: k for k in ("sgd", "momentum", "rmsprop", "adam")})
ClipMode = Enum("ClipMode", {k: k for k in ("none", "norm", "value")})
BPTTMode = Enum("BPTTMode", {k: k for k in ("window", "chunked")})

# which optimizer fields each optimizer takes (the rest of OptimConfig is ignored for it)
OPTIMIZER_OPTIONS = {"sgd": (), "momentum": ("momentum", "nesterov"), "rmsprop": ("alpha", "eps"), "adam": ("beta1", "beta2", "eps")}


@dataclass
class TaskConfig:
    name: TaskName = TaskName.adding
    seq_len: int = 50
    test_size: int = 1000
    options: dict[str, Any] = field(default_factory=dict)  # task-specific, e.g. char_lm's solve_fraction


@dataclass
class ModelConfig:
    cell: Cell = Cell.rnn
    norm: Norm = Norm.none
    activation: Activation = Activation.tanh
    hidden_size: int = 64
    init: Init = Init.orthogonal
    spectral_radius: Optional[float] = None
    scale: float = 1.0
    forget_bias: float = 1.0
    dtype: DType = DType.float64


@dataclass
class OptimConfig:
    name: OptimName = OptimName.adam
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    alpha: float = 0.99
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


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
    skip_completed: bool = True
    through_time_checkpoints: int = 3
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


def check(cfg: DictConfig) -> None:
    """Range checks a type cannot express; raises ConfigError listing every violation."""
    m, t, o, c, b, tr = cfg.model, cfg.task, cfg.optim, cfg.clip, cfg.bptt, cfg.train
    errors = [
        *_require(t.seq_len >= 2, "task.seq_len", ">= 2", t.seq_len),
        *_require(t.test_size >= 1, "task.test_size", ">= 1", t.test_size),
        *_require(m.hidden_size > 0, "model.hidden_size", "> 0", m.hidden_size),
        *_require(m.scale > 0, "model.scale", "> 0", m.scale),
        *_require(m.spectral_radius is None or m.spectral_radius > 0, "model.spectral_radius", "> 0 or null", m.spectral_radius),
        *_require(o.lr > 0, "optim.lr", "> 0", o.lr),
        *_require(c.threshold > 0, "clip.threshold", "> 0", c.threshold),
        *_require(b.truncation is None or b.truncation >= 1, "bptt.truncation", ">= 1 or null (full BPTT)", b.truncation),
        *_require(tr.steps >= 0, "train.steps", ">= 0", tr.steps),
        *_require(tr.batch_size >= 1, "train.batch_size", ">= 1", tr.batch_size),
        *_require(tr.eval_interval >= 1, "train.eval_interval", ">= 1", tr.eval_interval),
        *_require(tr.diag_interval >= 1, "train.diag_interval", ">= 1", tr.diag_interval),
        *_require(tr.lyapunov_k >= 1 and (m.hidden_size <= 0 or tr.lyapunov_k <= m.hidden_size),
                  "train.lyapunov_k", f"in [1, model.hidden_size={m.hidden_size}]", tr.lyapunov_k),
        *_require(cfg.tracking.metric_every >= 1, "tracking.metric_every", ">= 1", cfg.tracking.metric_every),
        *_require(cfg.tracking.through_time_checkpoints >= 1, "tracking.through_time_checkpoints", ">= 1", cfg.tracking.through_time_checkpoints),
    ]
    if b.mode.name == "chunked" and (t.name.name != "char_lm" or b.truncation is None):
        errors.append("bptt.mode=chunked needs task=char_lm and an integer bptt.truncation")
    if m.norm.name != "none" and m.cell.name != "rnn":
        errors.append(f"model.norm={m.norm.name} works with model.cell=rnn only, got model.cell={m.cell.name}")
    if m.norm.name == "batch" and tr.batch_size < 2:
        errors.append("model.norm=batch needs train.batch_size >= 2 (batch statistics)")
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))


def to_settings(cfg: DictConfig) -> Settings:
    """The training loop's Settings from a composed config (after `check`)."""
    check(cfg)
    t, m, o = cfg.task, cfg.model, cfg.optim
    task_options = dict(OmegaConf.to_container(t.options, resolve=True))
    task_options["test_size"] = t.test_size
    return Settings(
        task=t.name.name, seq_len=t.seq_len, task_options=task_options,
        cell=m.cell.name, norm=m.norm.name, activation=m.activation.name, hidden_size=m.hidden_size,
        init=m.init.name, spectral_radius=m.spectral_radius, scale=m.scale, forget_bias=m.forget_bias,
        dtype=m.dtype.name,
        optimizer=o.name.name, lr=o.lr, optimizer_options={k: o[k] for k in OPTIMIZER_OPTIONS[o.name.name]},
        clip_mode=cfg.clip.mode.name, clip_threshold=cfg.clip.threshold,
        truncation=cfg.bptt.truncation, bptt_mode=cfg.bptt.mode.name,
        steps=cfg.train.steps, batch_size=cfg.train.batch_size, eval_interval=cfg.train.eval_interval,
        diag_interval=cfg.train.diag_interval, stop_when_solved=cfg.train.stop_when_solved,
        lyapunov_k=cfg.train.lyapunov_k, seed=cfg.seed, verbose=cfg.train.verbose,
    )


def resolved(cfg: DictConfig) -> dict:
    """The run's config as plain data (enums as strings), without Hydra's own node."""
    data = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    data.pop("hydra", None)
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
    parts = [cfg.task.name.name, f"T{cfg.task.seq_len}"]
    parts.append(m.activation.name if m.cell.name == "rnn" else m.cell.name)
    if m.norm.name != "none":
        parts.append(f"{m.norm.name}norm")
    parts.append(m.init.name)
    if m.spectral_radius is not None:
        parts.append(f"rho{m.spectral_radius:g}")
    if m.dtype.name != "float64":
        parts.append(m.dtype.name)
    if cfg.clip.mode.name != "none":
        parts.append(f"clip{cfg.clip.mode.name}{cfg.clip.threshold:g}")
    if cfg.bptt.truncation is not None:
        parts.append(f"{'chunk' if cfg.bptt.mode.name == 'chunked' else 'k'}{cfg.bptt.truncation}")
    parts.append(f"s{cfg.seed}")
    return "-".join(parts)
