"""Build the study's report from MLflow into reports/ (README.md, findings.json and figures/): see rnngrad.report.cli.

    python scripts/build_report.py [--tracking-uri URI] [--experiment NAME] [--out DIR]
"""

import sys

from rnngrad.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
