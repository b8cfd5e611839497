"""What keeps a sweep's configurations finished exactly once, whatever happens to its processes.

The sweep's side (`rnngrad.app.sweep.open_sweep` and the `grids` sweeper):
- `store_lock(uri)`: an flock on a SQLite store's directory (nothing is written beside the store), held while a sweep creates the
  store and the experiment and claims the experiment; processes creating a fresh store at once would
  race inside MLflow's migration ("table ... already exists").
- `claim_experiment`: a RUNNING sweep parent run whose process is alive is the lock on its experiment
  (on any store, a server's too): a second sweep over the same experiment (and an overlapping shard)
  is refused (`SweepBusy`, exit 2) naming the running sweep's run and pid.
- `wait_for_orphans`: jobs still running for a sweep whose parent is gone end within seconds (below);
  the next sweep waits for them before it marks what is left KILLED and reruns it, so a configuration
  an orphan was finishing is not started twice.
- `Stopping`: SIGTERM or SIGINT to the sweep's parent writes the sweep's stop file; the running jobs end
  KILLED after flushing, the jobs not yet begun do not begin, and the sweep lists them (`report`).

A job's side (`rnngrad.app.main.run`, through `SweepJob`):
- a watchdog thread polls the sweep's parent process and the stop file every `WATCH_SECONDS`: when the
  parent is gone, or the sweep stops, it interrupts the job between two training steps (the run ends
  KILLED after flushing, as on SIGTERM); an orphaned worker then exits (`os._exit`) instead of living on.
- a tracking store that fails (a server that died) ends the job with a clear message instead of a
  traceback, and writes the stop file: the sweep launches no more jobs.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from rnngrad.store import StoreError, check_store, sqlite_path

SWEEP_PROCESS_ENV = "RNNGRAD_SWEEP_PROCESS"  # "host:pid:start token" of the sweep's parent process (start_token)
STOP_FILE_ENV = "RNNGRAD_SWEEP_STOP"  # the file whose existence stops the sweep (its text: why)
START_SLACK = 5.0  # seconds: a process started this long after its run's start time did not start the run
LOCK_SECONDS = 120.0  # how long a sweep waits for another one's store creation and claim (seconds each)
ORPHAN_SECONDS = 30.0  # how long a sweep waits for the jobs of a dead sweep to end
WATCH_SECONDS = 0.5  # how often a job looks at its sweep's parent process and stop file
EXIT_GRACE = 20.0  # how long an orphaned job may take to close its run before its process exits anyway
ORPHAN_EXIT = 70  # the exit code of a worker whose sweep's parent died
PROC_STAT = Path("/proc/self/stat")  # Linux: processes' start ticks (start_token)


class SweepBusy(StoreError):
    """Another sweep holds the experiment, or its jobs still run."""


def process_alive(pid: int, started: float | None = None) -> bool:
    """Whether process `pid` of this host exists (a zombie does not count) and, if `started` (epoch
    seconds) is given, was started by then (a reused pid is another, younger process)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or process.create_time() <= started + START_SLACK
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def start_token(pid: int) -> str:
    """A token for process `pid`'s start, the same whenever and by whichever process it is read, so that a pid
    reused by another process has another token. On Linux the start in clock ticks since boot (/proc/<pid>/stat,
    field 22): a step of the wall clock (NTP, a virtual machine resumed after a pause) does not move it, where
    psutil's create_time does (boot time + ticks, the boot time taken from the wall clock when psutil first asks),
    so that a worker started after a step once took its live parent for a younger process. Elsewhere psutil's
    create_time. Raises psutil.NoSuchProcess for a process that does not exist."""
    if not PROC_STAT.exists():
        return repr(psutil.Process(pid).create_time())
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        raise psutil.NoSuchProcess(pid) from None
    return "ticks:" + text[text.rindex(")") + 2:].split()[19]  # the fields after "pid (comm) ", from field 3


def same_process(pid: int, token: str) -> bool:
    """Whether process `pid` of this host exists (a zombie does not count) and is the one `token` names."""
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return False
        return start_token(pid) == token
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def run_process_alive(run) -> bool | None:
    """Whether the process that started an MLflow run lives: None when it ran on another host (or has no
    process tags), which this host cannot tell. Runs tagged with their process's start token are told by it
    (same_process); older runs by their start time against the process's (process_alive)."""
    tags = run.data.tags
    if tags.get("rnngrad.host") != socket.gethostname() or "rnngrad.pid" not in tags:
        return None
    if "rnngrad.pid_start" in tags:
        return same_process(int(tags["rnngrad.pid"]), tags["rnngrad.pid_start"])
    return process_alive(int(tags["rnngrad.pid"]), run.info.start_time / 1000)


@contextmanager
def store_lock(uri: str, seconds: float = LOCK_SECONDS):
    """Exclusive use of a SQLite store's creation and claims: an flock on the store's directory, taken once
    the store has passed its checks (a lock on the directory, not a file beside the store: a refused run
    leaves the directory as it was; SQLite's own locks are fcntl locks, which flock does not touch); other
    stores serialize themselves (a server's database), so only their checks run. Raises StoreError (the
    store cannot be used) or SweepBusy (the lock stays taken)."""
    check_store(uri)
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    folder = path.parent
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise StoreError(f"cannot open the store's directory {folder} to lock it: {err.strerror}") from None
    try:
        deadline = time.monotonic() + seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SweepBusy(f"another process has held the lock on the store's directory {folder} "
                                    f"for over {seconds:.0f} s") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # releases the lock


def shards_overlap(a: str | None, b: str | None) -> bool:
    """Whether two sweeps' shards ('i/n' or None: every job) may share a job: only the shards i != j of
    the same n are disjoint."""
    if not a or not b:
        return True
    (i, n), (j, m) = (tuple(int(x) for x in s.split("/")) for s in (a, b))
    return n != m or i == j


def live_sweeps(client, exp_id: str, shard: str | None) -> list:
    """The experiment's RUNNING sweep parent runs whose process lives (or runs on another host) and whose
    shard overlaps `shard`, oldest first."""
    found = client.search_runs([exp_id], "attributes.status = 'RUNNING' and tags.`rnngrad.sweep` = 'true'", max_results=1000)
    live = [r for r in found if run_process_alive(r) is not False and shards_overlap(shard, r.data.tags.get("rnngrad.shard"))]
    return sorted(live, key=lambda r: (r.info.start_time, r.info.run_id))


def describe_sweep(run) -> str:
    tags = run.data.tags
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.info.start_time / 1000))
    return (f"sweep {run.info.run_name} (run {run.info.run_id}, pid {tags.get('rnngrad.pid', '?')} on "
            f"{tags.get('rnngrad.host', '?')}, started {started})")


def busy_message(run, experiment: str) -> str:
    where = "" if run_process_alive(run) else (
        "; it runs on another host, which this one cannot check: if it is gone, end its run as KILLED "
        f"(MlflowClient().set_terminated('{run.info.run_id}', 'KILLED'))")
    return (f"experiment {experiment!r} is being swept by {describe_sweep(run)}: wait for it to end or stop it "
            f"(kill {run.data.tags.get('rnngrad.pid', '<pid>')}); running both would run its configurations twice{where}")


def refuse_if_busy(client, exp_id: str, experiment: str, shard: str | None) -> None:
    live = live_sweeps(client, exp_id, shard)
    if live:
        raise SweepBusy(busy_message(live[0], experiment))


def keep_first_claim(client, exp_id: str, experiment: str, shard: str | None, parent_id: str) -> None:
    """After creating its parent run: if an older live sweep also claimed the experiment (two sweeps into
    a server at once; a SQLite store's lock rules this out), this one withdraws (its run deleted)."""
    live = live_sweeps(client, exp_id, shard)
    first = live[0] if live else None
    if first is not None and first.info.run_id != parent_id:
        client.delete_run(parent_id)
        raise SweepBusy(busy_message(first, experiment))


def orphans(client, exp_id: str) -> list:
    """RUNNING child runs of this host whose process lives but whose sweep does not (its parent run ended,
    or is RUNNING with its process gone)."""
    running = client.search_runs([exp_id], "attributes.status = 'RUNNING'", max_results=5000)
    live_parents = {r.info.run_id for r in running
                    if r.data.tags.get("rnngrad.sweep") == "true" and run_process_alive(r) is not False}
    return [r for r in running if r.data.tags.get("mlflow.parentRunId") not in (None, *live_parents)
            and run_process_alive(r)]


def wait_for_orphans(client, exp_id: str, seconds: float = ORPHAN_SECONDS) -> None:
    """Wait until no job of a dead sweep still runs (their watchdogs end them within seconds)."""
    deadline = time.monotonic() + seconds
    left = orphans(client, exp_id)
    if left:
        print(f"waiting for {len(left)} job(s) of an earlier sweep whose parent is gone to end", flush=True)
    while left:
        if time.monotonic() > deadline:
            names = ", ".join(f"{r.info.run_name} (pid {r.data.tags['rnngrad.pid']})" for r in left)
            raise SweepBusy(f"jobs of an earlier sweep still run after {seconds:.0f} s: {names}; stop them first")
        time.sleep(0.5)
        left = orphans(client, exp_id)


def this_process() -> str:
    """This process as SWEEP_PROCESS_ENV names it."""
    return f"{socket.gethostname()}:{os.getpid()}:{start_token(os.getpid())}"


def stop_file(sweep_dir: str, parent_id: str) -> Path:
    return Path(sweep_dir) / f".rnngrad-stop-{parent_id}"


def request_stop(path: Path, reason: str) -> None:
    """Stop the sweep: its jobs running end KILLED, the jobs not yet begun do not begin."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(reason + "\n")


def stop_reason(path: Path | None) -> str | None:
    try:
        return path.read_text().strip() if path is not None else None
    except OSError:
        return None


class Stopping:
    """SIGTERM and SIGINT to the sweep's parent, while its jobs run: the stop file is written (the jobs'
    watchdogs end the running ones KILLED after flushing, the rest do not begin) and the launch goes on
    until every job has returned. Only in the main thread (where signals arrive)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, path: Path):
        self.path, self.signum = path, None

    def _handler(self, signum, frame):
        if self.signum is None:
            self.signum = signum
            request_stop(self.path, f"the sweep was stopped by {signal.Signals(signum).name}")
            print(f"{signal.Signals(signum).name}: stopping the sweep; running jobs end KILLED, no new job starts", flush=True)

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {signum: signal.signal(signum, self._handler) for signum in self.SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


# --- a job's side --------------------------------------------------------------------------------------


class _Watchdog:
    """One per process: polls the sweep's parent and stop file; interrupts the current job and, when
    the parent is gone, ends the process once the job has closed its run (or EXIT_GRACE has passed)."""

    def __init__(self, parent_pid: int, parent_token: str):
        self.parent_pid, self.parent_token = parent_pid, parent_token
        self.lock = threading.Lock()
        self.interrupts = None  # the running job's rnngrad.app.main.Interrupts
        self.stop_path: Path | None = None
        self.idle = threading.Event()
        self.idle.set()
        threading.Thread(target=self._watch, name="rnngrad-sweep-watchdog", daemon=True).start()

    def attach(self, interrupts, stop_path: Path | None) -> None:
        with self.lock:
            self.interrupts, self.stop_path = interrupts, stop_path
            self.idle.clear()

    def detach(self) -> None:
        with self.lock:
            self.interrupts = None
            self.idle.set()

    def _watch(self) -> None:
        while True:
            time.sleep(WATCH_SECONDS)
            if not same_process(self.parent_pid, self.parent_token):
                with self.lock:
                    if self.interrupts is not None:
                        self.interrupts.interrupt(f"the sweep's parent process {self.parent_pid} died")
                self.idle.wait(EXIT_GRACE)
                os._exit(ORPHAN_EXIT)
            with self.lock:
                reason = stop_reason(self.stop_path) if self.interrupts is not None else None
                if reason is not None:
                    self.interrupts.interrupt(reason)


_watchdog: _Watchdog | None = None


@dataclass
class SweepJob:
    """A sweep's job, as the environment its sweep set describes it (None outside a sweep)."""

    stop_path: Path | None
    watchdog: _Watchdog | None

    @classmethod
    def from_environment(cls) -> SweepJob:
        global _watchdog
        stop = os.environ.get(STOP_FILE_ENV)
        host, _, rest = os.environ.get(SWEEP_PROCESS_ENV, "").partition(":")
        if host == socket.gethostname() and _watchdog is None:
            pid, _, token = rest.partition(":")
            _watchdog = _Watchdog(int(pid), token)
        return cls(Path(stop) if stop else None, _watchdog if host == socket.gethostname() else None)

    def stopped(self) -> str | None:
        """Why the sweep stopped, if it did (its parent died, or it was stopped)."""
        watchdog = self.watchdog
        if watchdog is not None and not same_process(watchdog.parent_pid, watchdog.parent_token):
            return f"the sweep's parent process {watchdog.parent_pid} died"
        return stop_reason(self.stop_path)

    @contextmanager
    def watched(self, interrupts):
        """The watchdog may interrupt the job (`interrupts`) inside the block."""
        if self.watchdog is None:
            yield
            return
        self.watchdog.attach(interrupts, self.stop_path)
        try:
            yield
        finally:
            self.watchdog.detach()

    def store_failed(self, message: str) -> None:
        """The store failed: say so, and stop the sweep (its next jobs would fail the same way)."""
        print(f"error: {message}", file=sys.stderr, flush=True)
        if self.stop_path is not None:
            request_stop(self.stop_path, message)


def is_store_failure(err: BaseException) -> bool:
    """Whether an error came from talking to the tracking store (a server gone or stalled, a database
    that cannot be written), rather than from the run itself."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException
    from sqlalchemy.exc import OperationalError

    return isinstance(err, (MlflowException, RequestException, OperationalError, ConnectionError, TimeoutError))


# --- the end of a sweep ----------------------------------------------------------------------------------

UNFINISHED = ("KILLED", "FAILED", "NOT_RUN")


def report(jobs: list[list[str]], statuses: list[str]) -> list[str]:
    """A line for each configuration that did not finish: what happened to it and the overrides that tell
    it from the sweep's other jobs (all of its overrides when it has no other)."""
    values: dict[str, set[str]] = {}
    for overrides in jobs:
        for override in overrides:
            values.setdefault(override.partition("=")[0], set()).add(override)
    varying = {key for key, seen in values.items() if len(seen) > 1}
    return [f"  {status:8s} {' '.join(o for o in overrides if not varying or o.partition('=')[0] in varying)}"
            for overrides, status in zip(jobs, statuses) if status in UNFINISHED]
