"""The architecture is a test: import-linter's contracts (pyproject.toml) and the greps of issue 13."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 kept, 0 broken" in proc.stdout


def grep(pattern: str) -> list[str]:
    proc = subprocess.run(["grep", "-rnE", pattern, str(SRC), "--include=*.py"], capture_output=True, text=True)
    return proc.stdout.splitlines()


def test_no_cache_is_recognised_by_a_key():
    assert grep(r"\"cell\" in") == []


def test_no_private_code_of_hydra_or_its_launchers_and_no_hand_rasterizer():
    assert grep(r"_internal|hydra_joblib_launcher\._core|PIL") == []
