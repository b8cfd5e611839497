"""The cluster test stack (tests/cluster/stack.sh), up once for the tests that ask for it, down at the end.

The tests that use it share one xdist group (`xdist_group("cluster")`, pyproject's `--dist loadgroup`), so
one pytest worker brings it up, and only if one of them is selected. Where the stack cannot be had
(not root, packages that cannot be installed) its tests are skipped with stack.sh's reason.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

STACK = Path(__file__).resolve().parent / "stack.sh"
UP_TIMEOUT = 1200  # seconds: the packages' installation (about a minute) and the components (about a minute)
DOWN_TIMEOUT = 300
CANNOT = 3  # stack.sh's exit code for "the packages are missing and cannot be installed, or not root"


@dataclass
class Stack:
    dir: Path
    env: dict  # what stack.sh up wrote in stack.env
    up_seconds: float

    @property
    def url(self) -> str:
        return self.env["STACK_MLFLOW_URL"]

    @property
    def password(self) -> str:
        return self.env["STACK_MLFLOW_PASSWORD"]

    def job_env(self, password: str | None = None) -> dict:
        """The environment of a sweep's submitting process: Slurm's config and the MLflow account."""
        return {"SLURM_CONF": self.env["SLURM_CONF"], "MLFLOW_TRACKING_USERNAME": self.env["STACK_MLFLOW_USER"],
                "MLFLOW_TRACKING_PASSWORD": self.password if password is None else password}

    def slurm(self, *args: str, timeout: float = 30) -> str:
        """A Slurm client command's output (sacct, squeue, scancel) against the stack's cluster."""
        env = dict(os.environ, SLURM_CONF=self.env["SLURM_CONF"])
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=True).stdout


def read_env(path: Path) -> dict:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.fixture(scope="session")
def stack():
    # a directory others may enter (initdb runs as the postgres user), short enough for the sockets' paths
    folder = Path(tempfile.mkdtemp(prefix="rnngrad-stack-"))
    env = dict(os.environ, PYTHON=sys.executable)
    start = time.monotonic()
    up = subprocess.run([str(STACK), "up", str(folder)], env=env, capture_output=True, text=True, timeout=UP_TIMEOUT)
    seconds = time.monotonic() - start
    if up.returncode == CANNOT:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"no cluster stack: {up.stderr.strip().splitlines()[-1]}")
    if up.returncode != 0:
        subprocess.run([str(STACK), "down", str(folder)], env=env, capture_output=True, timeout=DOWN_TIMEOUT)
        raise RuntimeError(f"stack.sh up failed ({up.returncode}):\n{up.stderr}")
    print(f"\ncluster stack up in {seconds:.0f} s: {up.stderr.strip().splitlines()[-1]}", flush=True)
    try:
        yield Stack(folder, read_env(folder / "stack.env"), seconds)
    finally:
        start = time.monotonic()
        down = subprocess.run([str(STACK), "down", str(folder)], env=env, capture_output=True, text=True,
                              timeout=DOWN_TIMEOUT)
        print(f"\ncluster stack down in {time.monotonic() - start:.0f} s (exit {down.returncode})", flush=True)
        if down.returncode == 0 and not os.environ.get("RNNGRAD_STACK_KEEP"):
            shutil.rmtree(folder, ignore_errors=True)
