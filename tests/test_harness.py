"""The test harness itself: an xdist_group keeps its tests on one worker, as the cluster tests' one stack needs."""

import subprocess
import sys

GROUPED = """
import os
import pytest

pytestmark = pytest.mark.xdist_group("cluster")


@pytest.mark.parametrize("i", range(6))
def test_grouped(i):
    with open("workers.txt", "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
"""

LOOSE = """
import time

import pytest


@pytest.mark.parametrize("i", range(12))
def test_loose(i):
    time.sleep(0.05)
"""


def test_an_xdist_group_runs_on_one_worker(tmp_path):
    # pytest 9 with pytest-xdist 3.8 spread such a group over every worker: each brought up its own stack
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "test_loose.py").write_text(LOOSE)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q", "-p",
                           "no:cacheprovider"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "18 passed" in proc.stdout
    workers = (tmp_path / "workers.txt").read_text().split()
    assert len(workers) == 6 and len(set(workers)) == 1, workers
