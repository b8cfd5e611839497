"""`python -m rnngrad.train [overrides]`, or `-m` for a sweep: the command line of `rnngrad.app.main`."""

import sys

from rnngrad.app.main import EXPERIMENT_ENV, PARENT_ENV, main, run  # noqa: F401  (transitional, see below)

# EXPERIMENT_ENV, PARENT_ENV and run are re-exported only for tests/test_report.py and scripts/bench.py,
# which still import them from here; drop them once those import rnngrad.app.main.

if __name__ == "__main__":
    sys.exit(main())
