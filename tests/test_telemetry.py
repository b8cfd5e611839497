"""MLflow's telemetry is off in every process the project starts, unless the environment turns it on."""

import os
import subprocess
import sys

import pytest

# a clean environment: MLflow also switches telemetry off by itself under CI or pytest variables,
# which would hide whether the project does
CLEAN = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
PROBE = "from mlflow.telemetry.utils import is_telemetry_disabled; print(is_telemetry_disabled())"


def disabled(imports: str, **env) -> str:
    proc = subprocess.run([sys.executable, "-c", f"{imports}{PROBE}"], env={**CLEAN, **env}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize("entry", ["rnngrad.train", "rnngrad.report.cli", "rnngrad.core"])
def test_the_project_turns_telemetry_off(entry):
    assert disabled(f"import {entry}; ") == "True"


def test_mlflow_alone_would_send_it_in_this_environment():
    assert disabled("") == "False"  # so the test above can fail


def test_the_environment_can_turn_it_back_on():
    assert disabled("import rnngrad.app.main; ", MLFLOW_DISABLE_TELEMETRY="false") == "False"


def test_processes_the_project_starts_inherit_it():
    """A sweep's workers (loky, submitit, Slurm) are started from the entry point's environment."""
    child = f"import subprocess, sys; print(subprocess.run([sys.executable, '-c', {PROBE!r}], capture_output=True, text=True).stdout.strip()); "
    assert disabled(f"import rnngrad; {child}").splitlines()[0] == "True"
