"""The Hydra entry point (`python -m rnngrad.train [overrides]`, `-m` for a sweep) and one run.

A thin `@hydra.main` around `run(cfg) -> dict`, which tests call directly; `cli` checks the command line
before Hydra sees it. In a sweep, the `grids`
sweeper (hydra_plugins/rnngrad_sweeper) has already created the store, the experiment and the
sweep's parent run (`rnngrad.app.sweep`); their ids reach each job as environment variables.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from contextlib import contextmanager, nullcontext
from typing import NamedTuple

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rnngrad import config as config_mod
from rnngrad.app import guard
from rnngrad.nn.model import backend_name
from rnngrad.store import PROJECT_ROOT, StoreError, credentials_to_environment, failure_message, resolve_uri
from rnngrad.training import Callback, make_run_task, train

# how a sweep hands each job its parent run and experiment (hydra.job.env_set, set by rnngrad.app.sweep)
PARENT_ENV = "RNNGRAD_PARENT_RUN_ID"
EXPERIMENT_ENV = "RNNGRAD_EXPERIMENT_ID"

config_mod.register_configs()


class Checked(NamedTuple):
    run: config_mod.Config  # the validated configuration, what training.train takes
    length: int  # T, the time steps the model sees (the task's, which may exceed task.seq_len)


def checked(cfg: DictConfig) -> Checked:
    """The run's validated configuration and its sequence length; raises ConfigError.

    The app's one way into the configuration's checks (`config.checked`).
    """
    run = config_mod.checked(cfg)
    return Checked(run, make_run_task(run).length)


def _tracking():
    """The MLflow layer, imported only once a configuration has passed its checks (it takes a second)."""
    from rnngrad.app import tracking

    return tracking


def _freeze_imports() -> None:
    """Move the objects alive now (the imported modules': MLflow's, Hydra's, some 400,000) out of the garbage
    collector's reach, once per process: they live as long as it, and neither training's collections nor
    the full one loky makes after a sweep's first job in each worker (~0.8 s) need to walk them again."""
    if not gc.get_freeze_count():
        gc.freeze()


def run(cfg: DictConfig) -> dict:
    """One run: check, log into MLflow, train. Returns the outcome and the final metrics, and its `status`:
    FINISHED, SKIPPED (already finished), or, for a sweep's job, KILLED, FAILED (the store failed) or
    NOT_RUN (the sweep had stopped), which a single run raises instead (KeyboardInterrupt, StoreError).

    Every line it prints starts with the run name (`console.job_output`): a sweep's workers share a terminal.
    """
    run_config = checked(cfg).run
    from rnngrad.app import console

    with console.job_output(config_mod.run_name(cfg)):
        console.quiet_libraries(HydraConfig.get().verbose if HydraConfig.initialized() else False)
        uri = credentials_to_environment(resolve_uri(cfg.tracking.uri))
        job = guard.SweepJob.from_environment() if os.environ.get(PARENT_ENV) else None
        try:
            return _run(cfg, run_config, uri, job)
        except Exception as err:
            if not guard.is_store_failure(err):
                raise
            message = f"{failure_message(uri, err)}; {config_mod.run_name(cfg)} did not finish"
            if job is None:
                raise StoreError(message) from None
            job.store_failed(message)
            return {"status": "FAILED", "skipped": False, "config_hash": config_mod.config_hash(cfg), "reason": message}


def _run(cfg: DictConfig, run_config: config_mod.Config, uri: str, job: guard.SweepJob | None) -> dict:
    tracking = _tracking()
    _freeze_imports()
    parent_id = os.environ.get(PARENT_ENV)
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    chash = config_mod.config_hash(cfg)
    name = config_mod.run_name(cfg)
    stopped = job.stopped() if job else None
    if stopped:
        print(f"not run ({stopped})", flush=True)
        return {"status": "NOT_RUN", "skipped": False, "config_hash": chash, "reason": stopped}
    # a sweep's jobs are handed the experiment; a single run creates what it needs itself
    if parent_id:
        exp_id = os.environ.get(EXPERIMENT_ENV)
    else:
        with guard.store_lock(uri):  # a fresh store: processes creating it at once race inside MLflow
            exp_id = tracking.prepare_store(uri, cfg.tracking.experiment,
                                            command=hydra_cfg and tracking.command_line(hydra_cfg))
    client = tracking.MlflowClient(uri)
    # a sweep's job whose configuration finished before is skipped (the sweep skips it before launching
    # it; a job checks again, in case another sweep finished it since); a single run asked for runs
    if parent_id and cfg.tracking.skip_completed:
        done = tracking.find_finished(client, exp_id, chash)
        if done is not None:
            print(f"already finished as run {done} (config_hash {chash}); skipped", flush=True)
            return {"status": "SKIPPED", "skipped": True, "run_id": done, "config_hash": chash}

    data = tracking.loggable_config(cfg)
    overrides = hydra_cfg.overrides.task if hydra_cfg else []
    tags = {"config_hash": chash, "hydra.overrides": tracking.loggable_overrides(overrides)}
    # which implementation ran the recurrences (numpy or numba: nn.backend) is part of what a run is, though
    # not of its configuration: the two agree to rounding, not bit for bit
    params = dict(config_mod.flatten(data), backend=backend_name())
    interrupts = Interrupts()
    # a sweep's job is never ended by a signal that comes after its run has closed: the run stands
    with interrupts.installed(raise_late=job is None), job.watched(interrupts) if job else nullcontext():
        info = tracking.start_run(client, exp_id, name, params, tags, parent_id)
        run_id = info.run_id
        logger = tracking.MlflowLogger(
            client, run_id, artifact_uri=info.artifact_uri, checkpoints=cfg.tracking.through_time_checkpoints,
            points=cfg.tracking.through_time_points, flush_seconds=cfg.tracking.flush_seconds,
            metric_every=cfg.tracking.metric_every, config_yaml=OmegaConf.to_yaml(OmegaConf.create(data)), run_name=name,
            description=tracking.run_description(cfg),
        )
        try:
            # a sweep stopped while this run was being created (the stop came after the check above)
            if job and job.stopped():
                interrupts.interrupt(job.stopped())
            interrupts.raise_if_received()
            result = train(run_config, [logger, interrupts])
        except KeyboardInterrupt:
            logger.flush(final=True)
            logger.finish("KILLED", reason=interrupts.reason)
            if job is None:
                raise
            print(f"KILLED ({interrupts.reason})", flush=True)
            return {"status": "KILLED", "skipped": False, "run_id": run_id, "config_hash": chash, "reason": interrupts.reason}
        except BaseException as err:
            if not guard.is_store_failure(err):  # a store that failed would fail these too, slowly
                logger.flush(final=True)
                logger.finish("FAILED")
            raise
        logger.finish("FINISHED")
    return {
        "status": "FINISHED", "skipped": False, "run_id": run_id, "config_hash": chash, "outcome": result.outcome,
        "solved_at": result.solved_at, "diverged_at": result.diverged_at, "final": result.final,
        "wall_time": result.wall_time, "logging_seconds": logger.logging_seconds,
    }


class Interrupts(Callback):
    """SIGTERM, like Ctrl-C (SIGINT), ends training with KeyboardInterrupt, so the run is closed as KILLED.

    The handler only notes the signal; the KeyboardInterrupt is raised between training steps, where no
    MLflow call is under way. Raised wherever Python happens to be, it could land inside MLflow's SQLite
    write (whose lock then blocks the flush that closes the run) or inside a garbage collector's callback
    (where Python prints and drops it).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    SIGNAL_REASON = "interrupted by SIGINT or SIGTERM"

    def __init__(self):
        self.received: int | str | None = None  # the signal, or why the job was interrupted (`interrupt`)
        self.reason: str | None = None
        self.previous: dict = {}

    def _handler(self, signum, frame):
        self.interrupt(self.SIGNAL_REASON, signum)
        # a job that runs in the sweep's own process (hydra/launcher=basic, joblib with n_jobs=1): the
        # sweep hears the signal too, and stops (guard.Stopping)
        stopping = self.previous.get(signum)
        if isinstance(getattr(stopping, "__self__", None), guard.Stopping):
            stopping(signum, frame)

    def interrupt(self, reason: str, received: int | str | None = None) -> None:
        """End training at the next step, as a signal does (callable from any thread)."""
        self.reason = reason
        self.received = received if received is not None else reason

    def on_step(self, step, metrics):
        self.raise_if_received()

    def raise_if_received(self) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(self.reason)

    @contextmanager
    def installed(self, raise_late: bool = True):
        """The handlers, inside the block (signals reach the main thread only); a signal that came after
        the last step is raised when the block ends (if raise_late)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self.previous = {signum: signal.signal(signum, self._handler) for signum in self.SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in self.previous.items():
                signal.signal(signum, handler)
        if raise_late:
            self.raise_if_received()


@contextmanager
def errors_exit():
    """A configuration or store error ends the program with its message and exit code 2, no traceback."""
    try:
        yield
    except (config_mod.ConfigError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


def refuse_sweep_without_multirun() -> None:
    """An experiment that defines grids is a sweep: without -m Hydra would quietly run the defaults once."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.RUN and hydra_cfg.sweeper.get("grids"):
        choice = hydra_cfg.runtime.choices.get("experiment")
        what = f"experiment={choice}" if choice else "this configuration"
        raise config_mod.ConfigError(
            f"{what} is a sweep (hydra.sweeper.grids: {', '.join(hydra_cfg.sweeper.grids)}): run it with -m, "
            f"e.g. python -m rnngrad.train -m {what if choice else '...'}")


def cli() -> None:
    """`python -m rnngrad.train`: the command line's overrides checked for credentials before Hydra records
    them (it writes them to .hydra/overrides.yaml before the run starts), then `main`."""
    with errors_exit():
        config_mod.check_command_line(sys.argv[1:])
    main()


# an absolute path: Hydra would look for a relative one inside the rnngrad.app package
@hydra.main(config_path=str(PROJECT_ROOT / "conf"), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    with errors_exit():
        refuse_sweep_without_multirun()
        return run(cfg)
