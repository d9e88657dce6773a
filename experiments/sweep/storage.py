"""A sweep's study database: where it is, how to open it, and the locks that keep workers in step.

The study lives in an SQLite file beside the experiment's runs by default
(``lightning_logs/<experiment>/sweeps/optuna.db``), or in any database Optuna accepts: PostgreSQL through
the psycopg 3 driver this project installs. Workers take trials, and create Optuna's tables, under a
lock (``database_lock``): a file lock beside an SQLite file, an advisory lock in PostgreSQL.

A server's database can go away for a while (a restart, a failover, the network): ``Patience`` waits it
out, for a stated time, in the worker and in its trials' fits, and the engine checks a pooled connection
before using it (``pool_pre_ping``), so the first call after the server is back reconnects instead of
failing on a connection that died with the old server.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from core.errors import ExperimentError
from experiments.runs import LOG_ROOT, RunLayout

T = TypeVar("T")


def storage_url(url: str) -> str:
    """``url`` with the PostgreSQL driver this project installs (psycopg 3) when it names none:
    SQLAlchemy reads a bare ``postgresql://`` as psycopg2, which is not installed."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def shown_url(url: str) -> str:
    """``url`` without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def engine_options(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options for the study's database at ``url``.

    SQLite waits up to a minute for another worker's write instead of failing with "database is locked"
    after SQLAlchemy's 5 s. A server's pooled connections are checked before use and renewed every half
    hour, so that none that died with a restarted server (or a firewall's idle timeout) is reused; a
    PostgreSQL connection attempt gives up after 10 s, and TCP keepalives find a dead peer in about a
    minute, instead of a call hanging on a host that is gone.
    """
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    options: dict[str, Any] = {"pool_pre_ping": True, "pool_recycle": 1800}
    if url.startswith("postgresql"):
        options["connect_args"] = {
            "connect_timeout": 10,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
    return options


def open_storage(url: str, heartbeat: int | None = None) -> Any:
    """Optuna's RDBStorage for ``url``, with ``engine_options``."""
    import optuna

    url = storage_url(url)
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_options(url), heartbeat_interval=heartbeat)


def unreachable(error: BaseException) -> str | None:
    """Why the database cannot be reached, when ``error`` (or an error it was raised from) says so: the
    driver's OperationalError (connection refused, the server shutting down or gone mid-query, SQLite's
    "database is locked"), or a connection SQLAlchemy found dead. None for any other error: those are not
    waited out."""
    from sqlalchemy import exc

    try:
        import psycopg
    except ImportError:  # only the PostgreSQL driver this project installs is known by its own type
        psycopg = None

    seen: set[int] = set()
    found: BaseException | None = None
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if (
            isinstance(cause, (exc.OperationalError, exc.InterfaceError, ConnectionError))
            or (isinstance(cause, exc.DBAPIError) and cause.connection_invalidated)
            or (psycopg is not None and isinstance(cause, psycopg.OperationalError))
        ):
            found = cause
            if isinstance(cause, exc.DBAPIError) and cause.orig is not None:
                found = cause.orig  # the driver's own words, without SQLAlchemy's SQL and links
        cause = cause.__cause__ or cause.__context__
    if found is None:
        return None
    lines = [line.strip() for line in str(found).splitlines() if line.strip()]
    return lines[0] if lines else type(found).__name__


def duration(seconds: float) -> str:
    """``seconds`` as a person reads them: 45 s, 10 min, 1.5 h."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


class Patience:
    """Waits out a database that cannot be reached, for at most ``seconds`` from when it went away.

    ``patience(action)`` runs ``action`` and, while it fails because the database is unreachable
    (``unreachable``), runs it again after 1, 2, 4, then every 5 s; any other error is raised at once.
    The first failure prints one status line, the first success after it another; after ``seconds`` it
    raises an ``ExperimentError`` (the command's one ``error:`` line). Every thread of a process shares one
    ``Patience``: the outage is the database's, and its start is when any of them first met it.

    An action that is run again must be safe to repeat: a write whose commit reached the server just as
    the connection died is made twice (the callers make theirs idempotent or check the state first).

    Args:
        shown_url: The database's URL without its password, for the messages.
        seconds: How long to wait for it.
        who: Who waits, as the messages name it ("this worker", "this trial's fit").
        give_up: Called while waiting: True stops the wait at once (the process that waits has lost its
            reason to, e.g. the worker that started a trial's fit is gone).
    """

    def __init__(
        self,
        shown_url: str,
        seconds: float,
        who: str = "this worker",
        give_up: Callable[[], bool] | None = None,
    ) -> None:
        self.shown_url = shown_url
        self.seconds = seconds
        self.who = who
        self.give_up = give_up
        self._lock = threading.Lock()
        self._down_since: float | None = None
        #: ``time.monotonic()`` when the database last came back (-inf: this process saw no outage).
        self.back_at = -math.inf

    def __call__(self, action: Callable[[], T]) -> T:
        delay = 1.0
        while True:
            try:
                result = action()
            except Exception as error:
                reason = unreachable(error)
                if reason is None:
                    raise
                down_for = self._failed(reason)
                if down_for >= self.seconds or (self.give_up is not None and self.give_up()):
                    raise ExperimentError(
                        f"the database {self.shown_url} has been unreachable for {duration(down_for)} "
                        f"({reason}); {self.who} stopped waiting (--sweep.patience sets how long it "
                        "waits). When the database is back, run the same command again: the study goes "
                        "on, and a trial left running is failed as stale and run again"
                    ) from None
                time.sleep(min(delay, max(self.seconds - down_for, 0.1)))
                delay = min(delay * 2, 5.0)
            else:
                self._succeeded()
                return result

    def attempt(self, action: Callable[[], Any]) -> bool:
        """Runs ``action`` once (a heartbeat: the next one comes anyway); False when the database is
        unreachable, which counts toward the outage and its messages like a failure in ``__call__``."""
        try:
            action()
        except Exception as error:
            reason = unreachable(error)
            if reason is None:
                raise
            self._failed(reason)
            return False
        self._succeeded()
        return True

    def _failed(self, reason: str) -> float:
        """Records a failure; how long the database has been unreachable."""
        now = time.monotonic()
        with self._lock:
            if self._down_since is None:
                self._down_since = now
                print(
                    f"sweep: the database {self.shown_url} is unreachable ({reason}); {self.who} retries "
                    f"for up to {duration(self.seconds)}",
                    flush=True,
                )
            return now - self._down_since

    def _succeeded(self) -> None:
        with self._lock:
            if self._down_since is not None:
                now = time.monotonic()
                print(
                    f"sweep: the database {self.shown_url} is back after {duration(now - self._down_since)}",
                    flush=True,
                )
                self._down_since = None
                self.back_at = now


def has_lock(url: str) -> bool:
    """Whether ``database_lock`` locks anything for the database at ``url``: an SQLite file, PostgreSQL."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return bool(parsed.database) and parsed.database != ":memory:"
    return backend == "postgresql"


@contextlib.contextmanager
def database_lock(url: str, name: str, engine: Any = None) -> Iterator[None]:
    """Holds the lock ``name`` among every process using the database at ``url``: a file lock beside an
    SQLite file, an advisory lock in PostgreSQL (through ``engine``'s connections, else a connection of
    its own); released when the process dies. Other databases get no lock: workers started at the same
    moment may then run a trial or two more than asked."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if not has_lock(url):
        yield
    elif backend == "sqlite":
        with open(f"{parsed.database}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:  # PostgreSQL
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        own = engine is None
        engine = create_engine(url, **engine_options(url)) if own else engine
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                connection.commit()
                try:
                    yield
                finally:
                    try:
                        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                        connection.commit()
                    except Exception:
                        # The connection died (the server went away, and its locks with it), or the unlock
                        # failed on a live one: closed, not pooled, its session and lock end either way;
                        # the error of the block, if any, is the one to report.
                        with contextlib.suppress(Exception):
                            connection.invalidate()
        finally:
            if own:
                engine.dispose()


def server_uptime(url: str, engine: Any) -> float:
    """Seconds since the database server at ``url`` (re)started, through ``engine``: PostgreSQL says; any
    other database counts as up forever."""
    if not url.startswith("postgresql"):
        return math.inf
    from sqlalchemy import text

    with engine.connect() as connection:
        query = "SELECT EXTRACT(EPOCH FROM now() - pg_postmaster_start_time())"
        return float(connection.execute(text(query)).scalar_one())


def sweeps_folder(layout: RunLayout) -> Path:
    """Where an experiment's sweeps keep their database and reports: ``<experiment's runs>/sweeps``."""
    root = (
        layout.root
        if layout.kind == "folders" and layout.root is not None
        else Path(LOG_ROOT) / layout.experiment
    )
    return root / "sweeps"


def artifacts_folder(layout: RunLayout) -> Path:
    """Where an experiment's sweeps keep their trials' configs as Optuna artifacts, whatever the database:
    ``<experiment's runs>/sweeps/artifacts``, the folder to give ``optuna-dashboard --artifact-dir``."""
    return sweeps_folder(layout) / "artifacts"
