"""The layering as a failing test: rnngrad.nn imports numpy and the standard library only (nothing else of
rnngrad), and the instruments reach the models through rnngrad.nn alone."""

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rnngrad"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def foreign(names: set[str], allowed: tuple[str, ...]) -> set[str]:
    return {n for n in names if n.split(".")[0] not in sys.stdlib_module_names and not n.startswith(allowed)}


@pytest.mark.parametrize("path", sorted((SRC / "nn").glob("*.py")), ids=lambda p: p.name)
def test_nn_imports_nothing_else_of_rnngrad(path):
    assert foreign(imported_modules(path), ("numpy", "rnngrad.nn")) == set()


def test_diagnostics_reaches_the_models_through_nn_only():
    assert foreign(imported_modules(SRC / "diagnostics.py"), ("numpy", "rnngrad.nn")) == set()
