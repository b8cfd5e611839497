"""Build the study's report from MLflow: <out>/README.md and <out>/figures/<name>.png (150 dpi) and .pdf.

    python scripts/build_report.py [--tracking-uri URI] [--experiment NAME] [--out DIR]

The report is built in a temporary directory inside <out> and then swapped in, so a failure leaves
the previous report as it was. The report owns <out>/README.md and <out>/figures/; other files in
<out> are left alone. A store that does not exist is an error (exit status 2); nothing is created.
Exit status 1: a figure failed to draw (a bug; the rest of the report is written).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from rnngrad import store

if TYPE_CHECKING:
    from rnngrad.report.build import Report

DPI = 150


def write(report: Report, out: Path) -> None:
    """Save the figures and README into a fresh directory, then replace the old ones."""
    out.mkdir(parents=True, exist_ok=True)
    build_dir = Path(tempfile.mkdtemp(prefix=".build-", dir=out))
    try:
        (build_dir / "figures").mkdir()
        for part in report.parts:
            if part.figure is not None:
                for suffix in ("png", "pdf"):
                    part.figure.savefig(build_dir / "figures" / f"{part.name}.{suffix}", dpi=DPI)
        (build_dir / "README.md").write_text(report.markdown("figures"))
        if (out / "figures").exists():
            (out / "figures").rename(build_dir / "old-figures")
        (build_dir / "figures").rename(out / "figures")
        (build_dir / "README.md").replace(out / "README.md")
    except BaseException:
        if (build_dir / "old-figures").exists() and not (out / "figures").exists():
            (build_dir / "old-figures").rename(out / "figures")
        raise
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command line (`rnngrad report`, scripts/build_report.py)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else <repo>/mlflow.db)")
    parser.add_argument("--experiment", default="rnngrad", help="MLflow experiment name (default: rnngrad)")
    parser.add_argument("--out", type=Path, default=store.PROJECT_ROOT / "reports", help="output directory (default: reports/)")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parser(prog).parse_args(argv)
    # imported once the arguments parse: --help, a usage error and completing the options answer at once
    from rnngrad.report.build import build
    from rnngrad.report.load import Study

    try:
        uri = store.resolve_uri(args.tracking_uri)
        study = Study.open(uri, args.experiment)
    except store.StoreNotFound as err:
        print(f"build_report: {err}; run a sweep first (make study) or pass --tracking-uri", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"build_report: {err}", file=sys.stderr)
        return 2
    report = build(study)
    write(report, args.out)
    drawn = sum(part.figure is not None for part in report.parts)
    print(f"report: {drawn} of {len(report.parts)} figures, {len(report.findings)} findings -> {args.out / 'README.md'}")
    for error in report.errors:
        print(f"build_report: {error}", file=sys.stderr)
    return 1 if report.errors else 0
