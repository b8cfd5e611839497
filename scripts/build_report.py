"""Build a report from MLflow (README.md, findings.json and figures/): the quick study's into reports/, or with
`classic` the classic tier's reproduction table into reports/classic/; see rnngrad.report.cli.

    python scripts/build_report.py [study|classic] [--tracking-uri URI] [--experiment NAME] [--out DIR]
"""

import sys

from rnngrad.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
