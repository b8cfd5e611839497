"""`rnngrad`, the project's command: `rnngrad train ...`, `rnngrad report ...`, `rnngrad ui ...`.

- `rnngrad train [overrides]` is the Hydra app, `python -m rnngrad.train` under a shorter name
  (`rnngrad.app.main`); its `--help` is conf/hydra/help/rnngrad.yaml.
- `rnngrad report [...]` rebuilds reports/ from the store (`rnngrad.report.cli`, scripts/build_report.py).
- `rnngrad ui [--uri URI] [--port P]` serves the MLflow UI over an existing store, on 127.0.0.1:
  one process (uvicorn in this one), no job runner, no telemetry; Ctrl-C stops it.
- `-sc install=bash` (after `rnngrad` or `rnngrad train`) prints the bash completion script, which
  asks `rnngrad -sc query=bash` for the words that complete the line (`rnngrad.app.completion` for train).

Each command imports what it needs only once chosen: `rnngrad ui` never imports the model, and
`rnngrad --help` or a completion of the command's name answers at once.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import socket
import sys
import warnings

from rnngrad import store

COMMANDS = ("train", "report", "ui")
HELP_FILE = store.PROJECT_ROOT / "conf" / "hydra" / "help" / "rnngrad.yaml"
HOST = "127.0.0.1"
DEFAULT_PORT = 5000
GRACEFUL_SECONDS = 3  # Ctrl-C: open requests get this long before the server closes them

def help_header() -> str:
    """The opening of every --help: what the project is, its commands, the keys people override."""
    from omegaconf import OmegaConf

    # the file is a Hydra help template: string.Template's escaped dollar sign is $$
    return OmegaConf.load(HELP_FILE).header.replace("$$", "$")


def usage() -> str:
    return f"usage: rnngrad {{{','.join(COMMANDS)}}} ... (rnngrad --help)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command in ("-h", "--help"):
        print(help_header(), end="")
        return 0
    if command in ("-sc", "--shell-completion") or (command == "train" and rest[:1] in (["-sc"], ["--shell-completion"])):
        return shell_completion(rest if command != "train" else rest[1:])
    if command == "train":
        return train(rest)
    if command == "report":
        from rnngrad.report import cli as report_cli

        return report_cli.main(rest, prog="rnngrad report")
    if command == "ui":
        return ui(rest)
    print(f"rnngrad: unknown command {command!r}; choose one of {', '.join(COMMANDS)}\n{usage()}", file=sys.stderr)
    return 2


def train(overrides: list[str]) -> int:
    """The Hydra app, as `python -m rnngrad.train` runs it (Hydra reads its arguments from sys.argv)."""
    from rnngrad.app.main import main as hydra_main

    sys.argv = [sys.argv[0], *overrides]
    hydra_main()
    return 0


# ---- shell completion


def shell_completion(args: list[str]) -> int:
    """`-sc install=bash`, `-sc uninstall=bash` or `-sc query=bash` (the line in COMP_LINE, cursor COMP_POINT)."""
    action, _, shell = (args[0] if args else "").partition("=")
    if shell != "bash" or action not in ("install", "uninstall", "query"):
        print("rnngrad: shell completion is -sc install=bash, uninstall=bash or query=bash", file=sys.stderr)
        return 2
    if action == "query":
        line = os.environ.get("COMP_LINE", "")
        point = os.environ.get("COMP_POINT", "")
        complete(line[: int(point)] if point.isdigit() else line)
        return 0
    from rnngrad.app.completion import BASH_SCRIPT, UNINSTALL_SCRIPT

    print(BASH_SCRIPT if action == "install" else UNINSTALL_SCRIPT)
    return 0


def complete(line: str) -> None:
    """Print the words that may complete the last word of `line` (`rnngrad <command> <args>`, up to the cursor)."""
    words = line.split()
    word = "" if not line or line[-1].isspace() else words[-1]
    before = words[1 : len(words) - bool(word)]  # the complete words after the program's name
    if not before:
        print(" ".join(c for c in (*COMMANDS, "--help") if c.startswith(word)))
    elif before[0] == "train":
        from rnngrad.app.completion import query

        query(re.match(r"\s*\S+\s+\S+\s*(.*)", line, re.S).group(1))
    elif before[0] in ("report", "ui"):
        actions = _parser(before[0])._actions
        options = sorted(o for action in actions for o in action.option_strings if o.startswith("--"))
        # the report to build (study, classic), as the first word after the command
        choices = [c for action in actions if not action.option_strings for c in action.choices or ()] if len(before) == 1 else []
        print(" ".join(w for w in (*choices, *options) if w.startswith(word)))


def _parser(command: str) -> argparse.ArgumentParser:
    if command == "ui":
        return ui_parser()
    from rnngrad.report import cli as report_cli

    return report_cli.parser("rnngrad report")


# ---- the MLflow UI


def ui_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnngrad ui",
        description="The MLflow UI over an existing store, on 127.0.0.1 (Ctrl-C stops it). It prints the "
                    "address of the study's runs table.")
    parser.add_argument("--uri", default=None,
                        help="the store (default: $MLFLOW_TRACKING_URI, else mlflow.db at the project root)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the port (default: {DEFAULT_PORT})")
    parser.add_argument("--experiment", default="rnngrad",
                        help="the experiment whose runs the printed address opens (default: rnngrad)")
    return parser


def ui(argv: list[str]) -> int:
    args = ui_parser().parse_args(argv)
    try:
        uri = store.resolve_uri(args.uri)
        if uri.startswith(("http://", "https://", "databricks")):
            raise store.StoreError(f"{store.redact(uri)} is a tracking server, which serves its own UI: open it "
                                   "in a browser (rnngrad ui serves a database store)")
        store.check_store(uri, must_exist=True)
        _check_port(args.port)
    except store.StoreError as err:
        hint = "; run a sweep first (make study) or pass --uri" if isinstance(err, store.StoreNotFound) else ""
        print(f"rnngrad ui: {err}{hint}", file=sys.stderr)
        return 2
    serve(uri, args.port, args.experiment)
    return 0


def _check_port(port: int) -> None:
    """Refuse a port another program holds before the seconds spent loading MLflow."""
    if not 0 < port < 65536:
        raise store.StoreError(f"--port {port} is not a port number (1-65535)")
    with socket.socket() as probe:
        # as uvicorn binds: a port whose last server just stopped (its connections in TIME_WAIT) is free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as err:
            raise store.StoreError(f"port {port} on {HOST} is taken ({err.strerror}): pass --port") from None


def runs_url(port: int, experiment_id: str | None) -> str:
    """The address of an experiment's runs table in MLflow's classic (machine learning) view, or of the
    experiment list. MLflow 3 otherwise opens on its GenAI views (traces, an assistant); sorted by run
    name (the tag mlflow.runName, backquoted: %60), the table lists every run, where sorted by start
    time (its default) it folds a sweep's jobs under their parent run."""
    base = f"http://{HOST}:{port}/"
    if experiment_id is None:
        return base + "#/experiments"
    return (base + f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            "&orderByKey=tags.%60mlflow.runName%60&orderByAsc=true")


def serve(uri: str, port: int, experiment: str) -> None:
    """MLflow's tracking server (UI and REST API) in this process, until Ctrl-C or SIGTERM.

    What `mlflow server --workers 1` sets up, without its second process and job runner:
    the server reads its store from the environment variables of mlflow.server.constants.
    """
    from mlflow.server import constants

    os.environ.update({
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no huey job runner (it serves GenAI evaluation jobs)
        constants.BACKEND_STORE_URI_ENV_VAR: uri,
        constants.REGISTRY_STORE_URI_ENV_VAR: uri,
    })
    artifacts = store.artifact_location(uri)
    if artifacts is not None:  # experiments made in the UI keep their artifacts beside the database too
        os.environ[constants.ARTIFACT_ROOT_ENV_VAR] = artifacts
    # MLflow's ASGI app still wraps its Flask app in starlette's WSGI middleware, which warns at import
    warnings.filterwarnings("ignore", message=r"starlette\.middleware\.wsgi is deprecated",
                            module=r"mlflow\.server\.fastapi_app")
    # MLflow's server imports about 2500 modules: without the collector running over them as they load,
    # and with them frozen out of it afterwards (gc.freeze), the UI answers seconds sooner, and the
    # interpreter's exit after Ctrl-C takes 0.2 s instead of 3 to 5 s (its final collections)
    gc.disable()
    try:
        import uvicorn
        from mlflow.server.fastapi_app import app
        from mlflow.server.handlers import initialize_backend_stores
        from mlflow.tracking import MlflowClient
    finally:
        gc.freeze()
        gc.enable()

    initialize_backend_stores(uri, uri, artifacts)
    found = MlflowClient(uri).get_experiment_by_name(experiment)
    url = runs_url(port, None if found is None else found.experiment_id)
    what = f"experiment {experiment!r}" if found else f"the experiments (the store has no {experiment!r})"

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                print(f"MLflow UI over {store.describe(uri)}: {what} at\n  {url}\n(Ctrl-C stops it)", flush=True)

    config = uvicorn.Config(app, host=HOST, port=port, workers=1, log_level="warning",
                            timeout_graceful_shutdown=GRACEFUL_SECONDS)
    try:
        Server(config).run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it served by: the server has already stopped
        pass
    print("MLflow UI stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
