"""Run the real CLI in a subprocess against a temporary store, and read the store back."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from mlflow.tracking import MlflowClient

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = ["task.seq_len=8", "model.hidden_size=8", "train.steps=20", "train.eval_interval=10",
        "train.diag_interval=10", "task.test_size=32", "train.verbose=false", "tracking.metric_every=1"]


def nothing_stored(tmp_path: Path) -> bool:
    """Whether the tests' store folder holds nothing: no database, no artifacts."""
    return not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())


def store_uri(tmp_path: Path) -> str:
    """The tests' store, in a folder of its own that exists (the project never creates a store's folder)."""
    (tmp_path / "store").mkdir(exist_ok=True)
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


def cli_args(tmp_path: Path, *overrides: str, multirun: bool = False, uri: str | None = None) -> list[str]:
    """The CLI's command line: these overrides, the store, and Hydra's output under tmp_path."""
    args = [sys.executable, "-m", "rnngrad.train"] + (["-m"] if multirun else [])
    return args + list(overrides) + [f"tracking.uri={uri or store_uri(tmp_path)}",
                                     f"hydra.run.dir={tmp_path / 'out'}", f"hydra.sweep.dir={tmp_path / 'multirun'}"]


def run_cli(tmp_path: Path, *overrides: str, multirun: bool = False, uri: str | None = None, env=None, timeout=300):
    return subprocess.run(cli_args(tmp_path, *overrides, multirun=multirun, uri=uri), cwd=tmp_path,
                          env=environment(env), capture_output=True, text=True, timeout=timeout)


def environment(env=None) -> dict:
    """This process's environment without MLFLOW_* and RNNGRAD_* (a test decides those), plus `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RNNGRAD_"))}
    clean.update(env or {})
    return clean


def rnngrad_command() -> list[str]:
    """The `rnngrad` console script `pip install -e .` put beside this Python (make test's install).

    Skipped only when the installed metadata predates the entry point (an install from an older
    checkout: reinstall); declared but missing is a failure."""
    if not entry_points(group="console_scripts", name="rnngrad"):
        pytest.skip("the installed rnngrad predates its console script: pip install -e . (make test does)")
    script = Path(sys.executable).parent / "rnngrad"
    assert script.is_file(), f"the rnngrad entry point is declared but {script} is missing"
    return [str(script)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sweep(tmp_path: Path, *overrides: str, uri: str | None = None, env=None, name: str = "sweep"):
    """The CLI's sweep in the background, its stdout and stderr into tmp_path/<name>.out and .err
    (read them with `output`)."""
    args = cli_args(tmp_path, *overrides, multirun=True, uri=uri)
    with open(tmp_path / f"{name}.out", "w") as out, open(tmp_path / f"{name}.err", "w") as err:
        return subprocess.Popen(args, cwd=tmp_path, env=environment(env), stdout=out, stderr=err)


def output(tmp_path: Path, name: str = "sweep") -> tuple[str, str]:
    return (tmp_path / f"{name}.out").read_text(), (tmp_path / f"{name}.err").read_text()


def start_server(root: Path, port: int, timeout: float = 120):
    """`mlflow server` on 127.0.0.1:port with its SQLite backend and artifact root in `root`, in a session of
    its own (kill it with os.killpg); returns (process, url) once it answers /health."""
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=2).read()
            return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("mlflow server did not start")
            time.sleep(0.5)


def runs(tmp_path: Path, experiment: str = "rnngrad", uri: str | None = None):
    client = MlflowClient(uri or store_uri(tmp_path))
    exp = client.get_experiment_by_name(experiment)
    return client, ([] if exp is None else client.search_runs([exp.experiment_id], max_results=5000))


def split_sweep(found):
    """(the sweeps' parent runs, the other runs)."""
    parents = [r for r in found if r.data.tags.get("rnngrad.sweep") == "true"]
    return parents, [r for r in found if r not in parents]


def run_preset(tmp_path: Path, blank_db: Path, preset: str, *overrides: str, env=None):
    """Run the experiment preset text `preset` (as experiment=tiny, from tmp_path/conf) as a sweep into a fresh
    store (a copy of the blank database `blank_db`) with the overrides: (the finished process, the store's URI)."""
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "tiny.yaml").write_text(preset)
    (tmp_path / "store").mkdir()
    shutil.copy(blank_db, tmp_path / "store" / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    proc = run_cli(tmp_path, "experiment=tiny", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "model.hidden_size=8",
                   "train.eval_interval=10", "train.diag_interval=10", "task.test_size=32", "train.verbose=false",
                   "hydra.launcher.n_jobs=2", *overrides, multirun=True, uri=uri, env=env)
    return proc, uri


# A tier's grids shrunk for the suite: every arm and every T of the preset kept (so that each row of its report
# has runs), one seed, a few steps, tiny sizes.
SHRUNK = {"train.steps": 3, "train.eval_interval": 3, "train.diag_interval": 3, "train.batch_size": 4,
          "task.test_size": 20, "model.hidden_size": 8}


def _shrunk_lengths(value) -> str:
    """A grid's task.seq_len values (an int or "100,200"), each T made 4 + T // 10: small, still distinct."""
    return ",".join(str(4 + int(T) // 10) for T in str(value).split(","))


def shrunken_preset(tmp_path: Path, name: str) -> list[str]:
    """Write a shrunken copy of experiment `name` (a preset of sub-presets, as conf/experiment/classic.yaml) to
    tmp_path/conf/experiment/<name>_shrunk.yaml; returns the CLI overrides that select it."""
    preset = yaml.safe_load((CONF / "experiment" / f"{name}.yaml").read_text())
    grids = {}
    for part in preset.get("defaults", []):
        grids.update(yaml.safe_load((CONF / "experiment" / f"{part}.yaml").read_text())["hydra"]["sweeper"]["grids"])
    for grid in grids.values():
        grid.update(SHRUNK, seed=str(grid.get("seed", 0)).split(",")[0])
        if "task.seq_len" in grid:
            grid["task.seq_len"] = _shrunk_lengths(grid["task.seq_len"])
        if grid.get("task.min_seq_len") is not None:  # the shortest training length stays below the test length
            grid["task.min_seq_len"] = max(2, min(int(T) for T in grid["task.seq_len"].split(",")) // 4)
    folder = tmp_path / "conf" / "experiment"
    folder.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump({"hydra": {"sweeper": {"grids": grids}}}, sort_keys=False)
    (folder / f"{name}_shrunk.yaml").write_text("# @package _global_\n" + text)
    return [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"experiment={name}_shrunk"]
