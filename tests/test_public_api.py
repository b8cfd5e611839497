"""The code uses the libraries' public API only, and draws with matplotlib, not by hand."""

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
FORBIDDEN = {
    r"\b_internal\b": "Hydra's private modules",
    r"hydra_joblib_launcher\._core": "the joblib launcher's private module",
    r"\bPIL\b": "Pillow directly (images are matplotlib's)",
}


@pytest.mark.parametrize("pattern", FORBIDDEN)
def test_no_private_api_in_src(pattern):
    hits = [f"{path.relative_to(SRC)}:{n}" for path in sorted(SRC.rglob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), start=1) if re.search(pattern, line)]
    assert hits == [], f"{FORBIDDEN[pattern]} used in {hits}"


def test_the_app_draws_without_pyplot_or_global_backend_state():
    text = "\n".join(path.read_text() for path in (SRC / "rnngrad" / "app").rglob("*.py"))
    assert not re.search(r"^\s*(import|from)\s+matplotlib(\.pyplot| import .*pyplot)", text, re.M)
    assert "matplotlib.use(" not in text
