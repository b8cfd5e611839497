"""A sweep's life cycle, as the `grids` sweeper (hydra_plugins/rnngrad_sweeper) drives it.

1. `check_job(cfg)` for every composed job, before anything exists: its configuration error, if
   any, its work (to launch the longest jobs first) and where it logs.
2. `open_sweep(master_cfg, jobs, checks)`: fails naming the first bad job; otherwise compiles (or loads)
   the numba kernels once for all workers (nn.model.warm_up), creates the store
   and the experiment once, under the store's lock (processes creating them at once race inside MLflow),
   refuses an experiment another live sweep holds, waits for the jobs of a dead sweep to end, marks the
   runs whose process died as KILLED (their configurations run again), and opens the sweep's parent run
   (`rnngrad.app.guard`).
3. `Sweep.job_overrides()`: what hands each job the parent run, the experiment, the sweep's process and
   its stop file.
4. `run_jobs(launcher, jobs, batch_size, sweep)`: launches them; the parent run ends with the sweep, which
   lists the configurations that did not finish (a signal, a store that failed) and exits non-zero.

A job whose configuration already has a FINISHED run is skipped (tracking.skip_completed): decided here,
before the parent run exists, so that a sweep whose every job finished before says so and creates
nothing; the job itself checks again (`rnngrad.app.main.run`), in case another sweep finished it since.
So an interrupted sweep, run again, continues where it stopped.
"""

from __future__ import annotations

import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from rnngrad.app import guard, tracking
from rnngrad.app.main import EXPERIMENT_ENV, PARENT_ENV, checked
from rnngrad.config import ConfigError, config_hash, run_name
from rnngrad.nn.model import warm_up
from rnngrad.store import credentials_to_environment, failure_message, redact, resolve_uri

GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # recurrent (H, H) products per step, relative to the vanilla RNN


@dataclass
class JobCheck:
    """What the sweep needs to know of a job before anything is created (plain values: it crosses processes)."""

    error: str | None  # the configuration error, if any
    cost: float = 0.0  # relative work, for scheduling the longest jobs first
    target: tuple[str, str] | None = None  # (tracking uri, experiment)
    config_hash: str = ""  # config.config_hash: what a FINISHED run of the same configuration is found by
    skip_completed: bool = True  # tracking.skip_completed


def check_job(cfg: DictConfig) -> JobCheck:
    """Check a composed job configuration and estimate its work.

    The estimate is the recurrent products of training: steps x T x B x H^2 x the cell's gate count
    (evaluation and instruments scale alike). It only orders the jobs: a sweep that starts its longest
    jobs first does not end with one worker running a long job while the others idle.
    A tracking URI that cannot be used raises StoreError: it is the sweep's, not one job's.
    """
    try:
        run, length = checked(cfg)
    except ConfigError as err:
        return JobCheck(str(err))
    cost = (run.train.steps + 1) * length * run.train.batch_size * run.model.hidden_size ** 2 * GATES[run.model.cell]
    return JobCheck(None, float(cost), (resolve_uri(cfg.tracking.uri), cfg.tracking.experiment),
                    config_hash(cfg), cfg.tracking.skip_completed)


def mark_stale_runs(client: MlflowClient, exp_id: str) -> list[str]:
    """Mark RUNNING runs whose process is gone (killed, crashed machine) as KILLED, with a tag saying why.

    Only runs started on this host can be checked. Returns the ids marked.
    """
    host = socket.gethostname()
    marked = []
    for run in client.search_runs([exp_id], "attributes.status = 'RUNNING'", max_results=5000):
        if guard.run_process_alive(run) is not False:  # alive, or on another host
            continue
        pid = run.data.tags["rnngrad.pid"]
        reason = f"process {pid} on {host} ended without closing the run; marked KILLED at {time.strftime('%Y-%m-%d %H:%M:%S')}"
        client.set_tag(run.info.run_id, "rnngrad.killed_reason", reason)
        client.set_terminated(run.info.run_id, "KILLED")
        marked.append(run.info.run_id)
    return marked


@dataclass
class Sweep:
    client: MlflowClient
    parent_id: str | None  # None: every job had finished before, nothing was created
    exp_id: str
    uri: str = ""
    skipped: dict[int, str] = field(default_factory=dict)  # job index -> its FINISHED run
    stop_path: Path | None = None  # guard's stop file: its existence stops the sweep

    def pending(self, jobs: int) -> list[int]:
        """The indices of the jobs to launch."""
        return [i for i in range(jobs) if i not in self.skipped]

    def job_overrides(self) -> list[str]:
        """Hydra overrides that set the parent run, the experiment, the sweep's process and its stop file
        as environment variables around each job (hydra.job.env_set), wherever the launcher runs it."""
        env = {PARENT_ENV: self.parent_id, EXPERIMENT_ENV: self.exp_id, guard.SWEEP_PROCESS_ENV: guard.this_process(),
               guard.STOP_FILE_ENV: str(self.stop_path)}
        return [f"++hydra.job.env_set.{key}='{value}'" for key, value in env.items()]

    def close(self, status: str) -> None:
        self.client.set_terminated(self.parent_id, status)


def job_status(result) -> tuple[str, BaseException | None]:
    """A launched job's status (`rnngrad.app.main.run`'s), and the exception it raised, if any."""
    try:
        value = result.return_value
    except Exception as err:  # noqa: BLE001  the job's own error, raised after the sweep is closed
        return "FAILED", err
    return (value.get("status", "FINISHED") if isinstance(value, dict) else "FINISHED"), None


def run_jobs(launcher, jobs: list[list[str]], batch_size: int, sweep: Sweep) -> list:
    """Launch the jobs in batches, then close the sweep's parent run and say what did not finish.

    SIGTERM or SIGINT stops the sweep (guard.Stopping): the running jobs end KILLED, the others do not
    begin; a job whose store failed stops it too. A sweep that did not finish every configuration lists
    them (their status: KILLED, FAILED or NOT_RUN) and exits non-zero (128 + the signal's number after a
    signal, else 1); a job's own error is raised once the parent run is closed.
    """
    stopping = guard.Stopping(sweep.stop_path)
    statuses: list[str] = []
    errors: list[BaseException] = []
    returns = []
    from rnngrad.app import console

    with stopping.installed():
        try:
            with console.watch(sweep.client, sweep.uri, sweep.exp_id, sweep.parent_id, len(jobs),
                               list(sweep.skipped.values())):
                for start in range(0, len(jobs), max(batch_size, 1)):
                    batch = jobs[start : start + batch_size]
                    if guard.stop_reason(sweep.stop_path):
                        statuses += ["NOT_RUN"] * len(batch)
                        continue
                    try:
                        results = launcher.launch(batch, initial_job_idx=start)
                    except BaseException:
                        sweep.close("FAILED")
                        raise
                    returns.append(results)
                    for status, error in map(job_status, results):
                        statuses.append(status)
                        errors += [error] if error is not None else []
        except Exception as err:  # noqa: BLE001  the end table reads the store, which may have failed
            if not guard.is_store_failure(err):
                raise
            print(f"no end table: {failure_message(sweep.uri, err)}", file=sys.stderr, flush=True)
    # what the jobs were, as a tag would say it: without the sweep's own env_set overrides, credentials redacted
    shown = [tracking.loggable_overrides([o for o in job if not o.startswith("++hydra.job.env_set.")]).split()
             for job in jobs]
    unfinished = guard.report(shown, statuses)
    reason = guard.stop_reason(sweep.stop_path)
    status = "FINISHED" if not unfinished else "KILLED" if stopping.signum else "FAILED"
    try:
        sweep.close(status)
    except Exception as err:  # noqa: BLE001  a store that failed mid-sweep
        if not guard.is_store_failure(err):
            raise
        print(f"the sweep's parent run {sweep.parent_id} could not be closed (left RUNNING; the next sweep marks it KILLED)",
              file=sys.stderr, flush=True)
    sweep.stop_path.unlink(missing_ok=True)
    if unfinished:
        print(f"sweep {status}{f' ({reason})' if reason else ''}: {len(unfinished)} of {len(jobs)} configurations did not "
              "finish (a rerun of the same sweep runs them, and only them):", file=sys.stderr, flush=True)
        print("\n".join(unfinished), file=sys.stderr, flush=True)
    if errors:
        raise errors[0]
    if unfinished:
        sys.exit(128 + stopping.signum if stopping.signum else 1)
    return returns


def open_sweep(master_cfg: DictConfig, jobs: list[list[str]], checks: list[JobCheck]) -> Sweep:
    """Given every job's check, create the store, the experiment and the sweep's parent run once.

    jobs: each job's overrides (for error messages); checks: `check_job` of each. Raises ConfigError
    naming the first bad job, before anything exists.
    """
    for overrides, check in zip(jobs, checks):
        if check.error is not None:
            raise ConfigError(f"job [{tracking.loggable_overrides(overrides)}]: {check.error}")  # credentials redacted
    targets = {check.target for check in checks}
    if len(targets) != 1:
        raise ConfigError("all jobs of a sweep must log to the same tracking.uri and tracking.experiment")
    uri, experiment = targets.pop()
    # compile the numba kernels into their on-disk cache here, once, rather than in every worker at
    # once (about half a minute each on a fresh clone); with the cache warm this takes about a second
    warm_up()
    uri = credentials_to_environment(uri)
    shard = master_cfg.hydra.sweeper.get("shard")
    command = tracking.command_line(master_cfg.hydra)
    # one sweep at a time creates the store and claims the experiment (guard): a second identical sweep is
    # refused while this one's parent run and process live
    with guard.store_lock(uri):
        exp_id = tracking.prepare_store(uri, experiment, command=command)
        client = MlflowClient(uri)
        guard.refuse_if_busy(client, exp_id, experiment, shard)
        guard.wait_for_orphans(client, exp_id)
        for run_id in mark_stale_runs(client, exp_id):
            print(f"run {run_id}: its process is gone; marked KILLED (its configuration will run again)", flush=True)
        skipped = {i: done for i, check in enumerate(checks) if check.skip_completed
                   and (done := tracking.find_finished(client, exp_id, check.config_hash)) is not None}
        if len(skipped) == len(jobs):
            print(f"sweep: all {len(jobs)} jobs already have a FINISHED run in experiment {experiment!r} at "
                  f"{redact(uri)}; nothing to run, no run created (tracking.skip_completed=false runs them again)",
                  flush=True)
            return Sweep(client, None, exp_id, uri, skipped)
        choice = master_cfg.hydra.runtime.choices.get("experiment") or "adhoc"
        name = f"sweep-{choice}-{time.strftime('%Y%m%d-%H%M%S')}"
        parent = client.create_run(exp_id, run_name=name, tags={
            **tracking.process_tags(), "rnngrad.sweep": "true", "rnngrad.jobs": str(len(jobs) - len(skipped)),
            "hydra.overrides": tracking.loggable_overrides(master_cfg.hydra.overrides.task),
            tracking.NOTE: tracking.sweep_description(master_cfg, len(jobs), command),
            **({"rnngrad.shard": str(shard)} if shard else {}),
        })
        guard.keep_first_claim(client, exp_id, experiment, shard, parent.info.run_id)
    done = f" ({len(skipped)} more already finished: skipped)" if skipped else ""
    print(f"sweep {name}: {len(jobs) - len(skipped)} jobs{done} into experiment {experiment!r} at {redact(uri)}",
          flush=True)
    stop = guard.stop_file(master_cfg.hydra.sweep.dir, parent.info.run_id)
    return Sweep(client, parent.info.run_id, exp_id, uri, skipped, stop)
