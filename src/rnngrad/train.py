"""Entry point: `python -m rnngrad.train [overrides]`, or `-m` for a sweep.

A thin `@hydra.main` around `run(cfg) -> dict`, which tests call directly. A sweep goes through the
`grids` sweeper (hydra_plugins/rnngrad_sweeper), which composes every job and checks it (`check_job`),
then calls `open_sweep` here once, before any job starts: that creates the store, the experiment and
the sweep's parent run, whose ids reach the jobs as environment variables (hydra.job.env_set).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rnngrad import config as config_mod
from rnngrad.training import train

PARENT_ENV = "RNNGRAD_PARENT_RUN_ID"
EXPERIMENT_ENV = "RNNGRAD_EXPERIMENT_ID"

config_mod.register_configs()


def loggable_overrides(overrides) -> str:
    """The overrides as one string for a tag, with any credentials in tracking.uri redacted."""
    tracking = _tracking()
    # a job's overrides come escaped (http\://...): unescape before parsing the URI
    return " ".join(
        f"tracking.uri={tracking.redact(o.split('=', 1)[1].replace(chr(92), ''))}" if o.startswith("tracking.uri=") else o
        for o in overrides
    )


def _tracking():
    """The MLflow layer, imported only once a configuration has passed validation (it takes a second)."""
    from rnngrad import tracking

    return tracking


def _redacted_config(cfg: DictConfig) -> dict:
    tracking = _tracking()
    data = config_mod.resolved(cfg)
    if data["tracking"]["uri"]:
        data["tracking"]["uri"] = tracking.redact(data["tracking"]["uri"])
    return data


def checked_settings(cfg: DictConfig):
    """The run's Settings, every value checked by the module that uses it; raises ConfigError."""
    return config_mod.checked(cfg)


GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # recurrent (H, H) products per step, relative to the vanilla RNN


@dataclass
class JobCheck:
    """What the sweep needs to know of a job before anything is created (plain values: it crosses processes)."""

    error: str | None  # the configuration error, if any
    cost: float = 0.0  # relative work, for scheduling the longest jobs first
    target: tuple[str, str] | None = None  # (tracking uri, experiment)


def check_job(cfg: DictConfig) -> JobCheck:
    """Validate a composed job configuration and estimate its work.

    The estimate is the recurrent products of training: steps x T x B x H^2 x the cell's gate count
    (evaluation and instruments scale alike). It only orders the jobs: a sweep that starts its longest
    jobs first does not end with one worker running a long job while the others idle.
    """
    try:
        settings = checked_settings(cfg)
        length = settings.task.seq_len
    except config_mod.ConfigError as err:
        return JobCheck(str(err))
    tracking = _tracking()  # also imports MLflow in a sweep worker before its first job needs it
    cost = (settings.train.steps + 1) * length * settings.train.batch_size * settings.model.hidden_size ** 2 * GATES.get(settings.model.cell, 1)
    return JobCheck(None, float(cost), (tracking.resolve_uri(cfg.tracking.uri), cfg.tracking.experiment))


def run(cfg: DictConfig) -> dict:
    """One run: validate, log into MLflow, train. Returns the outcome and the final metrics."""
    settings = checked_settings(cfg)
    tracking = _tracking()
    uri = tracking.credentials_to_environment(tracking.resolve_uri(cfg.tracking.uri))
    parent_id = os.environ.get(PARENT_ENV)
    # a sweep's jobs are handed the experiment; a single run creates what it needs itself
    exp_id = os.environ.get(EXPERIMENT_ENV) if parent_id else tracking.prepare_store(uri, cfg.tracking.experiment)
    client = tracking.MlflowClient(uri)
    chash = config_mod.config_hash(cfg)
    name = config_mod.run_name(cfg)
    if cfg.tracking.skip_completed:
        done = tracking.find_finished(client, exp_id, chash)
        if done is not None:
            print(f"{name}: already finished as run {done} (config_hash {chash}); skipped", flush=True)
            return {"skipped": True, "run_id": done, "config_hash": chash}

    data = _redacted_config(cfg)
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    tags = {"config_hash": chash, "hydra.overrides": loggable_overrides(overrides)}
    run_id = tracking.start_run(client, exp_id, name, config_mod.flatten(data), tags, parent_id)
    logger = tracking.MlflowLogger(
        client, run_id, checkpoints=cfg.tracking.through_time_checkpoints,
        flush_seconds=cfg.tracking.flush_seconds, metric_every=cfg.tracking.metric_every, config_yaml=OmegaConf.to_yaml(OmegaConf.create(data)), run_name=name,
    )
    try:
        with interrupt_on_sigterm():
            result = train(settings, [logger])
    except KeyboardInterrupt:
        logger.flush(final=True)
        logger.finish("KILLED", reason="interrupted by SIGINT or SIGTERM")
        raise
    except BaseException:
        logger.flush(final=True)
        logger.finish("FAILED")
        raise
    logger.finish("FINISHED")
    return {
        "skipped": False, "run_id": run_id, "config_hash": chash, "outcome": result.outcome,
        "solved_at": result.solved_at, "diverged_at": result.diverged_at, "final": result.final,
        "wall_time": result.wall_time, "logging_seconds": logger.logging_seconds,
    }


@contextmanager
def interrupt_on_sigterm():
    """SIGTERM behaves like Ctrl-C inside the block, so a terminated run is closed as KILLED."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def config_errors_exit():
    """A configuration or store error ends the program with its message and exit code 2, no traceback."""
    try:
        yield
    except config_mod.ConfigError as err:  # tracking.StoreError is one too
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


@dataclass
class Sweep:
    client: object  # mlflow.tracking.MlflowClient
    parent_id: str
    exp_id: str

    def job_env(self) -> dict[str, str]:
        """What hands a job the parent run and the experiment: Hydra sets these as environment variables
        around the job (hydra.job.env_set), in whatever process or machine runs it."""
        return {PARENT_ENV: self.parent_id, EXPERIMENT_ENV: self.exp_id}

    def job_overrides(self) -> list[str]:
        """`job_env` as overrides, for a launcher that composes each job's config itself."""
        return [f"++hydra.job.env_set.{key}='{value}'" for key, value in self.job_env().items()]

    def close(self, status: str) -> None:
        self.client.set_terminated(self.parent_id, status)


def open_sweep(master_cfg: DictConfig, jobs: list[list[str]], checks: list[JobCheck]) -> Sweep:
    """Given every job's check, create the store, the experiment and the sweep's parent run once.

    jobs: each job's overrides (for error messages); checks: `check_job` of each. Raises ConfigError
    naming the first bad job, before anything exists.
    """
    for overrides, check in zip(jobs, checks):
        if check.error is not None:
            raise config_mod.ConfigError(f"job [{' '.join(overrides)}]: {check.error}")
    tracking = _tracking()
    targets = {check.target for check in checks}
    if len(targets) != 1:
        raise config_mod.ConfigError("all jobs of a sweep must log to the same tracking.uri and tracking.experiment")
    uri, experiment = targets.pop()
    uri = tracking.credentials_to_environment(uri)
    exp_id = tracking.prepare_store(uri, experiment)
    client = tracking.MlflowClient(uri)
    for run_id in tracking.mark_stale_runs(client, exp_id):
        print(f"run {run_id}: its process is gone; marked KILLED (its configuration will run again)", flush=True)
    choice = master_cfg.hydra.runtime.choices.get("experiment") or "adhoc"
    name = f"sweep-{choice}-{time.strftime('%Y%m%d-%H%M%S')}"
    parent = client.create_run(exp_id, run_name=name, tags={
        **tracking.process_tags(), "rnngrad.sweep": "true", "rnngrad.jobs": str(len(jobs)),
        "hydra.overrides": loggable_overrides(master_cfg.hydra.overrides.task),
    })
    print(f"sweep {name}: {len(jobs)} jobs into experiment {experiment!r} at {tracking.redact(uri)}", flush=True)
    return Sweep(client, parent.info.run_id, exp_id)


@hydra.main(config_path="../../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with config_errors_exit():
        run(cfg)


if __name__ == "__main__":
    sys.exit(main())
