"""Transitional: the names that rnngrad.report, scripts/ and tests/test_report.py still import from here.

The MLflow layer is `rnngrad.app.tracking`, the store's helpers `rnngrad.store`; delete this module once
those callers import from there.
"""

from rnngrad.app.tracking import MlflowLogger, prepare_store, start_run  # noqa: F401
from rnngrad.store import PROJECT_ROOT, redact, resolve_uri  # noqa: F401
