"""Build a report from MLflow: <out>/README.md, <out>/findings.json and <out>/figures/ (png, pdf).

Which report: `study` (the default), the quick study's, into reports/; `classic`, the reproduction table of the
classic tier (the runs whose question starts with classic_, `rnngrad.report.classic`), into reports/classic/.

findings.json holds every number the findings print, with its interval (`rnngrad.report.compare` reads it);
the figures are <out>/figures/<name>.png (150 dpi) and .pdf.

    python scripts/build_report.py [study|classic] [--tracking-uri URI] [--experiment NAME] [--out DIR]

The report is staged in a folder <out>/.build-* and then swapped in, so a failure leaves the previous report
as it was. A build killed outright (SIGKILL) leaves its staging folder behind; the next build removes it, after
putting the previous figures back if the kill came mid-swap. The report owns <out>/README.md,
<out>/findings.json and <out>/figures/; other files in <out> are left alone. The store is only read (rnngrad.report.load.open_client).
Exit status 2, nothing created or changed: a store that does not exist, is not an MLflow store, is damaged or
would need migrating; an experiment the store does not have; an --out that is not a directory; a report other
than study or classic.
Exit status 1: a figure failed to draw (a bug; the rest of the report is written).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rnngrad import store

if TYPE_CHECKING:
    from rnngrad.report.build import Report

DPI = 150
# which report -> its default folder under the project's root
REPORTS = {"study": Path("reports"), "classic": Path("reports") / "classic"}
REPLACED = ("README.md", "findings.json")  # the files a build replaces, after its figures, in this order


STAGE = ".build-"  # the prefix of a build's staging folder in <out>
LOCK = "lock"  # a file in the staging folder, locked (flock) while its build runs
UNLOCKED_GRACE = 60.0  # seconds a staging folder without its lock file yet is taken to be another build's


def _check_out(out: Path) -> None:
    """--out must be a directory or a path that can become one (no file in its place or above it)."""
    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                what = "is a file" if folder == out else f"is under {folder}, a file"
                raise ValueError(f"--out {out} {what}, not a directory; name a directory for the report")
            return


def _held(stage: Path) -> bool:
    """Whether a live build holds this staging folder's lock."""
    try:
        fd = os.open(stage / LOCK, os.O_RDWR)
    except OSError:  # no lock file: a build killed before it took its lock, or one about to take it
        return time.time() - stage.stat().st_mtime < UNLOCKED_GRACE
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def clean_stale(out: Path) -> list[Path]:
    """Remove the staging folders of builds that were killed; return them. A build killed in its swap (`write`)
    is first finished one way: killed after moving the old figures aside, they are put back; killed after moving
    the new figures in, the new README follows them (either way README.md and figures/ belong together)."""
    removed = []
    for stage in sorted(out.glob(f"{STAGE}*")):
        if not stage.is_dir() or _held(stage):
            continue  # another build is writing it
        if (stage / "old-figures").is_dir():
            if not (out / "figures").exists():
                (stage / "old-figures").rename(out / "figures")
            elif not (stage / "figures").exists():
                for name in REPLACED:
                    if (stage / name).is_file():
                        (stage / name).replace(out / name)
        shutil.rmtree(stage, ignore_errors=True)
        removed.append(stage)
    return removed


def write(report: Report, out: Path) -> None:
    """Save the figures and README into a fresh staging folder, then replace the old ones."""
    out.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    build_dir = Path(tempfile.mkdtemp(prefix=STAGE, dir=out))
    lock = os.open(build_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when this process ends, however it ends
    try:
        (build_dir / "figures").mkdir()
        for part in report.parts:
            if part.figure is not None:
                for suffix in ("png", "pdf"):
                    part.figure.savefig(build_dir / "figures" / f"{part.name}.{suffix}", dpi=DPI)
        (build_dir / "README.md").write_text(report.markdown("figures"))
        (build_dir / "findings.json").write_text(report.findings_json())
        if (out / "figures").exists():
            (out / "figures").rename(build_dir / "old-figures")
        (build_dir / "figures").rename(out / "figures")
        for name in REPLACED:
            (build_dir / name).replace(out / name)
    except BaseException:
        if (build_dir / "old-figures").exists() and not (out / "figures").exists():
            (build_dir / "old-figures").rename(out / "figures")
        raise
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)
        os.close(lock)


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command line (`rnngrad report`, scripts/build_report.py)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("which", metavar="report", nargs="?", default="study", choices=list(REPORTS),
                        help="the report to build: study (the quick study, default) or classic (the reproductions)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else <repo>/mlflow.db)")
    parser.add_argument("--experiment", default="rnngrad", help="MLflow experiment name (default: rnngrad)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: reports/ for study, reports/classic/ for classic)")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parser(prog).parse_args(argv)
    # imported once the arguments parse: --help, a usage error and completing the options answer at once
    from rnngrad.report import build, classic
    from rnngrad.report.load import Study

    args.out = args.out if args.out is not None else store.PROJECT_ROOT / REPORTS[args.which]
    try:
        _check_out(args.out)
        uri = store.resolve_uri(args.tracking_uri)
        study = Study.open(uri, args.experiment)
    except store.StoreNotFound as err:
        print(f"build_report: {err}; run a sweep first (make study) or pass --tracking-uri", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"build_report: {err}", file=sys.stderr)
        return 2
    report = (classic.build if args.which == "classic" else build.build)(study)
    write(report, args.out)
    drawn = sum(part.figure is not None for part in report.parts)
    print(f"report: {drawn} of {len(report.parts)} figures, {len(report.findings)} findings -> {args.out / 'README.md'}")
    for error in report.errors:
        print(f"build_report: {error}", file=sys.stderr)
    return 1 if report.errors else 0
