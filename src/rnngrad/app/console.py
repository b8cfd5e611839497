"""What a run and a sweep print: run-name prefixes, the sweep's progress, its end table and UI link.

- `job_output(name)`: around one job, every line it prints (its own, training's `step ...` lines, the
  library loggers' lines) starts with the run name, so two workers' interleaved lines can be told apart.
- `watch(sweep, total)`: in the sweep's parent process, which blocks in the launcher, a thread polls the
  store for the parent run's children by status and shows jobs done of total, elapsed and an estimate of
  what remains: a redrawn bar (rich) on a terminal, a plain line at most every `PLAIN_EVERY` seconds
  otherwise (CI, pipes). When the sweep ends it prints a table of every job (name, outcome, final
  metrics, run id) and how to open them in the UI.
- `quiet_libraries(verbose)`: Hydra's launcher lines and MLflow's INFO lines stay out of the default
  output (conf/config.yaml sets Hydra's own logging to WARNING); `hydra.verbose=true` brings them back.
"""

from __future__ import annotations

import logging
import shlex
import sys
import threading
import time
from contextlib import contextmanager

from mlflow.tracking import MlflowClient

from rnngrad.store import redact

TERMINAL = ("FINISHED", "FAILED", "KILLED")
METRICS = ("train/loss", "eval/loss", "eval/accuracy", "eval/bpc")  # the final values the table shows
POLL_SECONDS = 1.0  # how often the progress thread reads the store
PLAIN_EVERY = 5.0  # seconds between plain progress lines (not a terminal)
STOP_SECONDS = 10.0  # the longest the sweep waits for the progress thread to stop
UI_PORT = 5000
CLEAR_LINE = "\r\x1b[K"  # on a terminal a job's line first clears the progress bar, which redraws below it


class Prefixed:
    """A text stream that starts every line written to it with `prefix` (written line by line)."""

    def __init__(self, stream, prefix: str):
        self.stream, self.prefix, self.pending = stream, prefix, ""
        self.lead = CLEAR_LINE if _isatty(stream) else ""

    def write(self, text: str) -> int:
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        if lines:
            self.stream.write("".join(f"{self.lead}{self.prefix}{line}\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def close_line(self) -> None:
        """Write out a last line that has no newline yet."""
        if self.pending:
            self.write("\n")
        self.flush()

    def isatty(self) -> bool:
        return _isatty(self.stream)

    def __getattr__(self, name):  # encoding, fileno, ...: the underlying stream's
        return getattr(self.stream, name)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _stream_handlers():
    """Every logging StreamHandler there is (the root's, Hydra's job logging's, MLflow's)."""
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    return {h for lg in loggers for h in lg.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)}


@contextmanager
def job_output(name: str):
    """Inside the block, stdout, stderr and the loggers writing to them start each line with `name`."""
    old = {"out": sys.stdout, "err": sys.stderr}
    new = {key: Prefixed(stream, f"{name} ") for key, stream in old.items()}
    by_stream = {id(old[key]): new[key] for key in old}
    moved = [(h, h.stream) for h in _stream_handlers() if id(h.stream) in by_stream]
    sys.stdout, sys.stderr = new["out"], new["err"]
    for handler, stream in moved:
        handler.setStream(by_stream[id(stream)])
    try:
        yield
    finally:
        for handler, stream in moved:
            handler.setStream(stream)
        sys.stdout, sys.stderr = old["out"], old["err"]
        for stream in new.values():
            stream.close_line()


def quiet_libraries(verbose) -> None:
    """MLflow's INFO lines (creating a store's tables, ...) at debug level only: shown with hydra.verbose."""
    if not verbose:
        logging.getLogger("mlflow").setLevel(logging.WARNING)


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def progress_text(done: int, total: int, elapsed: float) -> str:
    """'sweep: 2/4 jobs done, 0:12 elapsed, about 0:12 left' (no estimate before the first job ends)."""
    left = f"about {clock(elapsed / done * (total - done))} left" if done else "time left unknown yet"
    return f"sweep: {done}/{total} jobs done, {clock(elapsed)} elapsed, {left}"


def children(client: MlflowClient, exp_id: str, parent_id: str) -> list:
    return client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=50000)


class Progress:
    """The progress thread: counts the parent run's children that ended, plus the jobs skipped before."""

    def __init__(self, client: MlflowClient, exp_id: str, parent_id: str, total: int, stream=None):
        self.client, self.exp_id, self.parent_id, self.total = client, exp_id, parent_id, total
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.done = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="rnngrad-progress", daemon=True)
        self.bar = None
        if _isatty(self.stream):
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("jobs,"),
                           TimeElapsedColumn(), TextColumn("elapsed, about"), TimeRemainingColumn(), TextColumn("left"),
                           console=Console(file=self.stream), auto_refresh=False,
                           redirect_stdout=False, redirect_stderr=False)
            self.task = self.bar.add_task("sweep", total=total)

    def count(self) -> int:
        return sum(run.info.status in TERMINAL for run in children(self.client, self.exp_id, self.parent_id))

    def _loop(self) -> None:
        last_line, last_done = self.start, -1
        while not self.stopped.wait(POLL_SECONDS):
            try:
                self.done = min(self.count(), self.total)
            except Exception:  # noqa: BLE001  a busy store: the next poll tries again
                continue
            if self.bar is not None:
                self.bar.update(self.task, completed=self.done)
                self.bar.refresh()
            elif self.done != last_done and time.monotonic() - last_line >= PLAIN_EVERY:
                self._plain()
                last_line, last_done = time.monotonic(), self.done

    def _plain(self) -> None:
        print(progress_text(self.done, self.total, time.monotonic() - self.start), file=self.stream, flush=True)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join(STOP_SECONDS)
        try:
            self.done = min(self.count(), self.total)
        except Exception:  # noqa: BLE001  the table below will say what the store holds
            pass
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
            self.bar.stop()
        else:
            self._plain()
        return False


def _row(run, how: str) -> dict:
    outcome = run.data.tags.get("outcome") or run.info.status.lower()
    if how == "skipped":
        outcome += " (finished before: skipped)"
    elif run.info.status != "FINISHED":
        outcome = run.info.status.lower()
    return {"run": run.info.run_name, "outcome": outcome, **run.data.metrics, "run id": run.info.run_id}


def table(rows: list[dict]) -> str:
    """Fixed-width columns: run, outcome, the final METRICS any row has, run id."""
    metrics = [key for key in METRICS if any(key in row for row in rows)]
    columns = ["run", "outcome", *metrics, "run id"]
    cells = [[f"{row[key]:.4g}" if key in metrics and key in row else str(row.get(key, "")) for key in columns]
             for row in sorted(rows, key=lambda row: row["run"])]
    widths = [max(len(text) for text in column) for column in zip(columns, *cells)]
    lines = [columns, *cells]
    return "\n".join("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in lines)


def browse_hint(uri: str, exp_id: str) -> str:
    return (f"browse: rnngrad ui --uri {shlex.quote(redact(uri))}, then open "
            f"http://127.0.0.1:{UI_PORT}/#/experiments/{exp_id}/runs")


def summary(client: MlflowClient, uri: str, exp_id: str, parent_id: str | None, skipped: list[str]) -> str:
    """The end table of a sweep (its parent run's children and the runs it skipped) and the UI hint."""
    rows = [_row(run, "ran") for run in (children(client, exp_id, parent_id) if parent_id else [])]
    rows += [_row(client.get_run(run_id), "skipped") for run_id in skipped]
    return f"{table(rows)}\n{browse_hint(uri, exp_id)}"


@contextmanager
def watch(client: MlflowClient, uri: str, exp_id: str, parent_id: str, total: int, skipped: list[str]):
    """Progress over the sweep's launched jobs while the block runs; the end table after it (also after
    a failure, which then propagates)."""
    try:
        with Progress(client, exp_id, parent_id, total):
            yield
    finally:
        print(summary(client, uri, exp_id, parent_id, skipped), flush=True)
