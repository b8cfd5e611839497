"""Whether two report builds agree, number by number: see rnngrad.report.compare.

    python scripts/compare_findings.py OLD/findings.json NEW/findings.json

Exit 0 when every number both builds print agrees (one's value inside the other's 95% interval, or the same
printed text where neither has one), 1 when one does not, 2 on a missing or unreadable file.
"""

import sys

from rnngrad.report.compare import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
