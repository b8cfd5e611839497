"""The MLflow store: where it is, what it may be, and how values are written into it and read back.

Shared by the app (which creates stores and writes runs) and the report (which only reads them);
it imports nothing else of rnngrad, so the report can use it without the model stack.

- `resolve_uri`: the tracking URI to use (argument, $MLFLOW_TRACKING_URI, or the project's SQLite file).
- `sqlite_path`: the database file of a sqlite:/// URI (None for any other URI).
- `has_credentials`, `redact`, `credentials_to_environment`: credentials never stored or printed.
- `check_store`: refuse a store that cannot work before anything is written (`must_exist` for readers).
- `encode_param` / `decode_param`: the parameter codec (None <-> "null", bools <-> "true"/"false").
"""

from __future__ import annotations

import base64
import os
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SQLITE_PREFIX = "sqlite:///"
SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "databricks")
MLFLOW_TABLES = {"experiments", "runs", "alembic_version"}
HEALTH_TIMEOUT = 5.0  # seconds a tracking server has to answer its health check
HEALTH_ANSWER = b"OK"  # what an MLflow tracking server's /health answers
HEALTH_ANSWER_BYTES = 1024  # read no more of the answer than this


class StoreError(ValueError):
    """The tracking store (tracking.uri) cannot be used; the message names it (credentials redacted)."""


class StoreNotFound(StoreError, FileNotFoundError):
    """A reader was pointed at a store that does not exist (opening it would create an empty one)."""


def default_uri() -> str:
    """$MLFLOW_TRACKING_URI if set, else the embedded SQLite store at the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"{SQLITE_PREFIX}{PROJECT_ROOT / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI, None for any other kind of store."""
    return Path(uri[len(SQLITE_PREFIX):]) if uri.startswith(SQLITE_PREFIX) else None


def resolve_uri(uri: str | None) -> str:
    """The tracking URI to use; a relative sqlite path is made absolute (never relative to a run dir)."""
    uri = uri or default_uri()
    scheme = urlsplit(uri).scheme
    if scheme not in SCHEMES:
        raise StoreError(
            f"unsupported tracking URI {redact(uri)!r}: use sqlite:///<absolute path>, http(s)://host:port "
            "or a database URI (the ./mlruns file store is deprecated and not used)"
        )
    if scheme == "sqlite":
        path = uri[len(SQLITE_PREFIX):] if uri.startswith(SQLITE_PREFIX) else ""
        if not path or path == ":memory:":
            raise StoreError(f"tracking URI {uri!r} must name a database file (sqlite:///<path>)")
        uri = f"{SQLITE_PREFIX}{Path(path).expanduser().resolve()}"
    return uri


def _userinfo(uri: str) -> tuple[str, str, str] | None:
    """(scheme, user[:password], the rest) of a URI that carries user info, else None.

    The user info ends at the URI's last '@', so a password that holds '/', ':', '?', '#' or '@' (which
    urlsplit would take for the path or the host) is all of it. A sqlite:/// URI has no user info (its
    path may hold an '@')."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.strip("'\" ").lower() == "sqlite" or "@" not in rest:
        return None
    userinfo, _, rest = rest.rpartition("@")
    return scheme, userinfo, rest


def has_credentials(uri: str) -> bool:
    """Whether the URI carries user[:password]@."""
    return _userinfo(uri) is not None


def redact(uri: str) -> str:
    """The URI without user:password@ (credentials must come from MLFLOW_TRACKING_USERNAME/PASSWORD)."""
    parts = _userinfo(uri)
    return uri if parts is None else f"{parts[0]}://***@{parts[2]}"


def describe(uri: str) -> str:
    """The store as a reader of a committed report should see it: credentials redacted, and the project's
    own SQLite file named relative to the project root (another machine has other absolute paths)."""
    path = sqlite_path(uri)
    if path is not None and path.is_relative_to(PROJECT_ROOT):
        return str(path.relative_to(PROJECT_ROOT))
    return redact(uri)


def credentials_to_environment(uri: str) -> str:
    """Move user:password@ from a server URI into MLFLOW_TRACKING_USERNAME/PASSWORD; return the bare URI.

    MLflow then takes the credentials from the environment only, and no URI it prints or stores
    carries them.
    """
    parts = _userinfo(uri)
    if parts is None:
        return uri
    scheme, userinfo, rest = parts
    user, colon, password = userinfo.partition(":")
    os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(user)
    if colon:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
    return f"{scheme}://{rest}"


def artifact_location(uri: str) -> str | None:
    """For a SQLite store, artifacts live beside the database in mlartifacts/; a server decides its own."""
    path = sqlite_path(uri)
    return None if path is None else (path.parent / "mlartifacts").as_uri()


def _check_sqlite(path: Path, must_exist: bool) -> None:
    if must_exist and not path.is_file():
        raise StoreNotFound(f"no MLflow store at {path}")
    if not must_exist:
        # a writer creates the database file, never the folders above it: a mistyped path would
        # otherwise start an empty store somewhere and the runs would seem lost
        if path.is_dir():
            raise StoreError(f"tracking store {path} is a directory; name a database file in it "
                             f"(tracking.uri=sqlite:///{path / 'mlflow.db'})")
        folder = path.parent
        if not folder.is_dir():
            # the nearest existing path above the file may be a regular file, at any depth
            existing = next(p for p in (folder, *folder.parents) if p.exists())
            what = ("does not exist" if existing.is_dir() else "is a file, not a directory" if existing == folder
                    else f"is under {existing}, a file, not a directory")
            raise StoreError(f"the directory of tracking store {path} {what}: create the directory or fix "
                             "tracking.uri (nothing is created for a path that may be mistyped)")
        if not (folder.stat().st_mode & 0o222) or not os.access(folder, os.W_OK):
            raise StoreError(f"tracking store directory {folder} is read-only: cannot write {path.name} there")
    if not path.exists() or path.stat().st_size == 0:
        if must_exist and path.exists():  # a reader would let MLflow create its tables in it
            raise StoreError(f"tracking store {path} is an empty file, not an MLflow store; refusing to touch it")
        return
    with open(path, "rb") as fh:
        if fh.read(16) != b"SQLite format 3\x00":
            raise StoreError(f"tracking store {path} is not a SQLite database (corrupt?); move it away or "
                             "point tracking.uri elsewhere")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
    except sqlite3.DatabaseError as err:
        raise StoreError(f"tracking store {path} cannot be read as SQLite ({err})") from None
    if (tables or must_exist) and not MLFLOW_TABLES <= tables:
        raise StoreError(f"tracking store {path} is a SQLite database of another program "
                         f"(tables: {', '.join(sorted(tables)[:5])}), not an MLflow store; refusing to touch it")


def _authorization() -> dict[str, str]:
    """The Authorization header MLflow's client would send, from its environment variables."""
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user is not None and password is not None:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _check_server(uri: str) -> None:
    parts = urlsplit(uri)
    base = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path.rstrip("/"), "", ""))
    try:
        with urllib.request.urlopen(base + "/health", timeout=HEALTH_TIMEOUT) as response:
            answer = response.read(HEALTH_ANSWER_BYTES)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise StoreError(f"tracking server {redact(uri)} is unreachable ({reason})") from None
    if answer.strip() != HEALTH_ANSWER:  # e.g. a web server that happens to serve a file called health
        raise StoreError(f"{redact(uri)} is not an MLflow tracking server: its /health answered "
                         f"{len(answer)} bytes other than {HEALTH_ANSWER.decode()!r}; check tracking.uri")
    # /health answers anyone: one authenticated read tells refused credentials at once, before a sweep
    # submits jobs that would each fail on them (the message names the user, never the password)
    request = urllib.request.Request(base + "/api/2.0/mlflow/experiments/search?max_results=1", headers=_authorization())
    try:
        with urllib.request.urlopen(request, timeout=HEALTH_TIMEOUT) as response:
            response.read()
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            user = os.environ.get("MLFLOW_TRACKING_USERNAME")
            who = f"user {user!r}" if user else "no credentials (MLFLOW_TRACKING_USERNAME/PASSWORD unset)"
            what = "refused" if err.code == 401 else "gave no permission to"
            raise StoreError(f"tracking server {redact(uri)} {what} {who} (HTTP {err.code}): set "
                             "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account of that server") from None
    except (urllib.error.URLError, OSError, ValueError):
        pass  # a server that answers /health but not this read is left to MLflow's own errors


REASON_CHARS = 300  # of a store's or server's error, at most this much is shown


def failure_message(uri: str, err: BaseException) -> str:
    """A short message for a tracking store that failed a request: the store (credentials redacted), for a
    server the client's time bounds, and the first line of the error (not a page of the server's HTML)."""
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if len(reason) > REASON_CHARS:
        reason = reason[:REASON_CHARS] + "..."
    if sqlite_path(uri) is not None:
        return f"the tracking store {redact(uri)} failed ({type(err).__name__}: {redact(reason)})"
    return (f"tracking server {redact(uri)} failed to answer (timeout {os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT')} s, "
            f"{os.environ.get('MLFLOW_HTTP_REQUEST_MAX_RETRIES')} retries: MLFLOW_HTTP_REQUEST_TIMEOUT, "
            f"MLFLOW_HTTP_REQUEST_MAX_RETRIES): {redact(reason)}")


def check_store(uri: str, *, must_exist: bool = False) -> None:
    """Fail fast, before anything is written, when the store cannot work.

    SQLite: an existing file must be an MLflow database (a corrupt file or another program's database
    is refused, never migrated); a writer (must_exist=False) needs the file's directory to exist and be
    writable (it is never created: a mistyped path fails rather than starting a new store); a reader
    (must_exist=True) needs the file to exist (StoreNotFound). A server: it must answer its health
    check within HEALTH_TIMEOUT seconds and accept the credentials of MLFLOW_TRACKING_USERNAME/PASSWORD.
    """
    path = sqlite_path(uri)
    if path is not None:
        _check_sqlite(path, must_exist)
    elif uri.startswith(("http://", "https://")):
        _check_server(uri)


def encode_param(value) -> str:
    """A config value as an MLflow param string: None -> 'null', True -> 'true', else str(value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def decode_param(text: str | None):
    """The inverse of `encode_param`: 'null' -> None, 'true'/'false' -> bool, numbers -> int/float."""
    if text is None or text == "null":
        return None
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
