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
[sigmoid, tanh, relu, linear]"); `check(cfg)` adds every range check a type cannot express (every float
of the schema finite unless `INF_MEANS` says what inf means), and `checked(cfg)` the memory the run will
need (`memory_estimate`) against the machine's. `check_command_line` and `check_launcher` check what Hydra
would record or launch before the configuration exists.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import json
import math
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Optional

import numpy as np
import psutil
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

from rnngrad import clip, optim, store, tasks, training
from rnngrad.nn import ACTIVATIONS, BN_VARIANTS, CELLS, DTYPES, INITS, NORMS, VALID_COMBINATIONS
from rnngrad.nn import model as nn_model
from rnngrad.nn.cells import N_GATES


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
BNVariant = _choices("BNVariant", BN_VARIANTS)


def _default_of(cls, name: str):
    """The default of keyword `name` in cls's signature: the library class is that default's home."""
    return inspect.signature(cls).parameters[name].default



@dataclass
class TaskConfig:
    name: TaskName = TaskName.adding
    seq_len: int = 50
    test_size: int = _default_of(tasks.Task, "test_size")
    # adding and temporal_order: train on lengths drawn per batch in [min_seq_len, seq_len], test at seq_len
    min_seq_len: Optional[int] = _default_of(tasks.VariableLengthTask, "min_seq_len")  # null: every batch at seq_len
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
    io_std: Optional[float] = _default_of(nn_model.init_params, "io_std")  # std of U and V; null: the init's own
    # norm=batch: cooijmans (x U and s W normalized apart, population statistics at evaluation) or summed
    # (their sum, batch statistics throughout); both gains start at bn_gain (bn_gain=1 and summed: the old batch norm)
    bn_variant: BNVariant = BNVariant.cooijmans
    bn_gain: float = _default_of(nn_model.init_params, "bn_gain")
    bn_momentum: float = _default_of(nn_model.Population, "momentum")  # cooijmans' running averages
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
    omega_alpha: float = 0.0  # the weight of Pascanu et al.'s regularizer Omega (vanilla RNN; they used 2); 0: off
    verbose: bool = True
    # the memory a run may need (`memory_estimate`), in GB: null = what this machine has available now
    # (psutil); a number for a machine the check misjudges; inf: no check
    max_memory_gb: Optional[float] = None


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


def _float_keys(cls: type = None, prefix: str = "") -> list[str]:
    """Every float field of the schema (Optional[float] included), as dotted keys: model.scale, optim.lr, ..."""
    keys = []
    for name, hint in typing.get_type_hints(cls or Config).items():
        if dataclasses.is_dataclass(hint):
            keys += _float_keys(hint, f"{prefix}{name}.")
        elif hint is float or hint == Optional[float]:
            keys.append(prefix + name)
    return keys


# The float fields where +inf means something (nan and -inf never do); every other float must be finite.
INF_MEANS = {
    "train.max_memory_gb": "no memory check",
    "tracking.flush_seconds": "metrics go out only when the buffer fills and when the run ends",
}
FLOAT_KEYS = tuple(_float_keys(Config))
SEED_LIMIT = 2**32  # numpy's seed range: 0 <= seed < 2**32
GB = 1e9


def _require(ok: bool, key: str, rule: str, value) -> list[str]:
    return [] if ok else [f"{key} must be {rule}, got {value!r}"]


def _positive(key: str, value, rule: str = "> 0 and finite") -> list[str]:
    return _require(math.isfinite(value) and value > 0, key, rule, value)


def _range_errors(cfg: DictConfig) -> list[str]:
    m, t, o, c, b, tr, tk = cfg.model, cfg.task, cfg.optim, cfg.clip, cfg.bptt, cfg.train, cfg.tracking
    return [
        *_require(t.seq_len >= 2, "task.seq_len", ">= 2", t.seq_len),
        *_require(t.test_size >= 1, "task.test_size", ">= 1", t.test_size),
        *_require(m.hidden_size > 0, "model.hidden_size", "> 0", m.hidden_size),
        *_positive("model.scale", m.scale),
        *([] if m.spectral_radius is None else
          _positive("model.spectral_radius", m.spectral_radius, "> 0 and finite, or null")),
        *_positive("optim.lr", o.lr),
        *_positive("clip.threshold", c.threshold),
        *_require(b.truncation is None or b.truncation >= 1, "bptt.truncation", ">= 1 or null (full BPTT)",
                  b.truncation),
        *_require(tr.steps >= 0, "train.steps", ">= 0", tr.steps),
        *_require(tr.batch_size >= 1, "train.batch_size", ">= 1", tr.batch_size),
        *_require(tr.eval_interval >= 1, "train.eval_interval", ">= 1", tr.eval_interval),
        *_require(tr.diag_interval >= 1, "train.diag_interval", ">= 1", tr.diag_interval),
        *_require(tr.lyapunov_k >= 1 and (m.hidden_size <= 0 or tr.lyapunov_k <= m.hidden_size),
                  "train.lyapunov_k", f"in [1, model.hidden_size={m.hidden_size}]", tr.lyapunov_k),
        *_require(tr.max_memory_gb is None or tr.max_memory_gb > 0, "train.max_memory_gb",
                  "> 0 (GB; inf: no check) or null (the memory this machine has available)", tr.max_memory_gb),
        *_require(tr.omega_alpha >= 0, "train.omega_alpha", ">= 0", tr.omega_alpha),
        *_require(m.io_std is None or m.io_std > 0, "model.io_std", "> 0 or null", m.io_std),
        *_require(m.bn_gain > 0, "model.bn_gain", "> 0", m.bn_gain),
        *_require(0 < m.bn_momentum <= 1, "model.bn_momentum", "in (0, 1]", m.bn_momentum),
        *_require(tk.metric_every >= 1, "tracking.metric_every", ">= 1", tk.metric_every),
        *_require(tk.through_time_checkpoints >= 1, "tracking.through_time_checkpoints", ">= 1",
                  tk.through_time_checkpoints),
        *_require(tk.through_time_points >= 2, "tracking.through_time_points", ">= 2", tk.through_time_points),
        *_require(tk.flush_seconds >= 0, "tracking.flush_seconds", ">= 0 (inf: only when the buffer fills)",
                  tk.flush_seconds),
        *_require(0 <= cfg.seed < SEED_LIMIT, "seed", "in [0, 2**32) (numpy's seed range)", cfg.seed),
    ]


def _finite_errors(cfg: DictConfig, named: list[str]) -> list[str]:
    """Every float of the schema finite (inf only where INF_MEANS says what it means), unless a range check
    has already named the key."""
    errors = []
    for key in FLOAT_KEYS:
        value = OmegaConf.select(cfg, key)
        if value is None or math.isfinite(value) or (value == math.inf and key in INF_MEANS):
            continue
        if not any(error.startswith(f"{key} must") for error in named):
            meaning = f" (or inf: {INF_MEANS[key]})" if key in INF_MEANS else ""
            errors.append(f"{key} must be a finite number{meaning}, got {value!r}")
    return errors


def credentials_error(key: str, value) -> str | None:
    """The refusal of a URI that carries user:password@ (credentials come from the environment only:
    Hydra writes every override and the composed config to .hydra/ and its job log)."""
    if not isinstance(value, str) or not store.has_credentials(value):
        return None
    return (f"{key} must not carry credentials ({store.redact(value)}): Hydra would write them to its .hydra/ "
            "files and logs; give the URI without user:password@ and set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD in the environment")


def check_command_line(arguments: list[str]) -> None:
    """Refuse credentials in command-line overrides before Hydra records them (it writes .hydra/overrides.yaml
    before a run starts). Raises ConfigError naming the key, the password left out."""
    for argument in arguments:
        key, sep, value = argument.partition("=")
        error = credentials_error(key.lstrip("+~"), value) if sep else None
        _raise_if([error] if error else [])


def check_launcher(launcher: DictConfig) -> None:
    """A sweep's launcher (hydra.launcher): joblib's worker count (n_jobs) at least 1, or -1 for one worker per
    core (joblib's default here; its other negative counts, cores + 1 + n_jobs, are refused as likely typos).
    Launchers without n_jobs (basic, submitit) pass. Raises ConfigError."""
    n_jobs = launcher.get("n_jobs") if "n_jobs" in launcher else None
    _raise_if(_require(n_jobs is None or n_jobs == -1 or (isinstance(n_jobs, int) and n_jobs >= 1),
                       "hydra.launcher.n_jobs", ">= 1 (worker processes) or -1 (one per core)", n_jobs))


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
    if tr.omega_alpha > 0 and (m.cell, m.norm) != ("rnn", "none"):
        errors.append(f"train.omega_alpha > 0 (Pascanu et al.'s Omega) needs the vanilla RNN (model.cell=rnn, "
                      f"model.norm=none), got model.cell={m.cell} model.norm={m.norm}")
    valid = [name for name in tasks.option_names(t.name) if name not in ("test_size", "min_seq_len")]  # own keys
    unknown = sorted(set(t.options) - set(valid))
    if unknown:
        errors.append(f"task.options {unknown} are not options of task {t.name}; valid options: "
                      f"{', '.join(valid) or 'none'}")
    return errors


def _raise_if(errors: list[str]) -> None:
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))


def check(cfg: DictConfig) -> None:
    """Every range and combination check a type cannot express; raises ConfigError listing each violation."""
    errors = _range_errors(cfg)
    errors += _finite_errors(cfg, errors) + _combination_errors(cfg)
    credentials = credentials_error("tracking.uri", cfg.tracking.uri)
    _raise_if(errors + ([credentials] if credentials else []))


# What a run holds in memory, in bytes, by what it scales with (`memory_estimate`; measured against peak RSS,
# see README "What is guaranteed"): the (T, B, H) arrays of a training step's forward cache and backward
# (nn.Workspace: about 3 for the vanilla RNN, 5 with a norm, 10 for the GRU, 13 for the LSTM, plus slack)
STEP_ARRAYS = {("rnn", "none"): 4, ("rnn", "layer"): 6, ("rnn", "batch"): 6, ("gru", "none"): 11, ("lstm", "none"): 14,
               ("rnn", "recurrent_batch"): 10}  # Cooijmans et al.'s batch norm, counted (numpy loops), not measured
# and those of evaluation's forward, which keeps no cache (1 to 5 with numpy's loops, about 1 with numba's)
EVAL_ARRAYS = {("rnn", "none"): 2, ("rnn", "layer"): 3, ("rnn", "batch"): 3, ("gru", "none"): 5, ("lstm", "none"): 6,
               ("rnn", "recurrent_batch"): 3}
PARAM_COPIES = 6  # float64 copies of the parameters: gradients, clipped ones, a full gradient, two optimizer moments
JACOBIAN_COPIES = 3  # (T, H, H) float64 stacks of the Jacobian instrument (the step Jacobians, a copy, the products)
THROUGH_TIME_COPIES = 16  # float64 values per (step, t) the logger keeps and turns into its parquet and heatmap
PROCESS_BYTES = 0.55 * GB  # the process itself: Python, numpy, numba, Hydra, MLflow (a tiny run peaks at 0.41 GB with the numba cache warm, 0.49 GB when it compiles the kernels)


def memory_estimate(run: Config, task) -> dict[str, float]:
    """The memory (bytes) a run will need, by part, from its sizes alone (before anything is allocated).

    task: the run's task (`training.make_run_task`, which allocates no data): its length T and its input
    and output sizes. Each part names the keys it scales with.
    """
    m, tr = run.model, run.train
    T, B, H, D, O = task.length, tr.batch_size, m.hidden_size, task.input_size, task.output_size
    N, item = task.test_size, np.dtype(str(m.dtype)).itemsize
    n_params = N_GATES[str(m.cell)] * H * (D + H + 2) + H * (O + 1) + O
    kind = (str(m.cell), nn_model.model_norm(str(m.norm), str(m.bn_variant)))
    eval_batch = min(N, training.EVAL_BATCH)
    return {
        "parameters (model.hidden_size)": n_params * (item + 8 * PARAM_COPIES),
        "BPTT cache (task.seq_len x train.batch_size x model.hidden_size)":
            T * B * (H * STEP_ARRAYS[kind] * item + (D + O) * (8 + item) + 2 * 8),
        "test set (task.seq_len x task.test_size)":
            T * N * ((D + 2) * 8 + D * item) + T * eval_batch * H * EVAL_ARRAYS[kind] * item,
        "instruments (task.seq_len x model.hidden_size^2, task.seq_len x train.steps)":
            JACOBIAN_COPIES * T * H * H * 8 + (tr.steps + 1) * T * 8 * THROUGH_TIME_COPIES,
        "process": PROCESS_BYTES,
    }


def _memory_errors(run: Config, task) -> list[str]:
    """The run refused when its estimate exceeds the memory it may use (train.max_memory_gb, or what this
    machine has available now), before it allocates gigabytes and dies of a MemoryError."""
    limit_gb = run.train.max_memory_gb
    if limit_gb == math.inf:
        return []
    parts = memory_estimate(run, task)
    need = sum(parts.values())
    memory = psutil.virtual_memory()
    limit = memory.available if limit_gb is None else limit_gb * GB
    if need <= limit:
        return []
    what = "; ".join(f"{name}: {_gb(size)}" for name, size in parts.items() if size >= 0.01 * need)
    where = "the memory this machine has available" if limit_gb is None else f"train.max_memory_gb={limit_gb:g}"
    return [f"the run needs about {_gb(need)} of memory ({what}), more than {where} (psutil: "
            f"{_gb(memory.available)} available of {_gb(memory.total)}): make the sizes named smaller, or set "
            "train.max_memory_gb (GB; inf: no check) on a machine that has the memory"]


def _gb(size: float) -> str:
    return f"{size / GB:,.0f} GB" if size >= 10 * GB else f"{size / GB:.2g} GB"


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
    made = {}
    for what, make in (("task", training.make_run_task), ("optim", training.make_run_optimizer)):
        try:
            made[what] = make(run)
        except ValueError as err:
            raise ConfigError(f"invalid configuration:\n  {what}: {err}") from None
    _raise_if(_memory_errors(run, made["task"]))
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
    data.get("train", {}).pop("max_memory_gb", None)  # nor does the memory check
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# short forms for run names (anything not listed is spelled out)
SHORT_INITS = {"orthogonal": "orth", "gaussian": "gauss", "identity": "id"}
SHORT_TASKS = {"temporal_order": "order", "char_lm": "charlm"}
DEFAULT_LR, DEFAULT_BN_GAIN = OptimConfig.lr, ModelConfig.bn_gain  # named only when a run departs from them


def run_name(cfg: DictConfig) -> str:
    """A short name that says what the run is, the part that tells runs of a sweep apart first.

    T, the activation (or gated cell), the init, then whatever departs from the defaults (the batch norm's
    gain, the learning rate among them), the seed, the task and the question, e.g.
    T100-tanh-orth-rho1.25-clipnorm1-s0-adding-init: MLflow's runs table
    shows the first 20 to 25 characters. The question makes the names of a study's sweep unique (its
    seqlen and truncation grids both hold the full-BPTT T = 20 tanh runs).
    """
    m = cfg.model
    t = cfg.task
    parts = [f"T{t.seq_len}" if t.min_seq_len is None else f"T{t.min_seq_len}to{t.seq_len}",
             str(m.activation if m.cell == "rnn" else m.cell)]
    if m.norm != "none":
        parts.append(f"{m.norm}norm" + ("-summed" if m.norm == "batch" and m.bn_variant == "summed" else ""))
        if m.norm == "batch" and m.bn_gain != DEFAULT_BN_GAIN:
            parts.append(f"gain{m.bn_gain:g}")
    parts.append(SHORT_INITS.get(str(m.init), str(m.init)))
    if m.spectral_radius is not None:
        parts.append(f"rho{m.spectral_radius:g}")
    if m.dtype != "float64":
        parts.append(str(m.dtype))
    if cfg.clip.mode != "none":
        parts.append(f"clip{cfg.clip.mode}{cfg.clip.threshold:g}")
    if cfg.bptt.truncation is not None:
        parts.append(f"{'chunk' if cfg.bptt.mode == 'chunked' else 'k'}{cfg.bptt.truncation}")
    if cfg.train.omega_alpha > 0:
        parts.append(f"omega{cfg.train.omega_alpha:g}")
    if cfg.optim.lr != DEFAULT_LR:
        parts.append(f"lr{cfg.optim.lr:g}")
    parts += [f"s{cfg.seed}", SHORT_TASKS.get(str(cfg.task.name), str(cfg.task.name))]
    if cfg.question != "adhoc":
        parts.append(str(cfg.question))
    return "-".join(parts)
