"""`python -m rnngrad.train [overrides]`, or `-m` for a sweep: the command line of `rnngrad.app.main`."""

import sys

from rnngrad.app.main import cli

if __name__ == "__main__":
    sys.exit(cli())
