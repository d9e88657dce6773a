"""A sweep's study database: where it is, how to open it, and the locks that keep workers in step.

The study lives in an SQLite file beside the experiment's runs by default
(``lightning_logs/<experiment>/sweeps/optuna.db``), or in any database Optuna accepts: PostgreSQL through
the psycopg 3 driver this project installs. Workers take trials, and create Optuna's tables, under a
lock (``database_lock``): a file lock beside an SQLite file, an advisory lock in PostgreSQL.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from experiments.runs import LOG_ROOT, RunLayout


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


def open_storage(url: str, heartbeat: int | None = None) -> Any:
    """Optuna's RDBStorage for ``url``. SQLite waits up to a minute for another worker's write instead of
    failing with "database is locked" after SQLAlchemy's 5 s."""
    import optuna

    url = storage_url(url)
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat)


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
    if backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        with open(f"{parsed.database}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif backend == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        own = engine is None
        engine = create_engine(url) if own else engine
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                connection.commit()
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    connection.commit()
        finally:
            if own:
                engine.dispose()
    else:
        yield


def sweeps_folder(layout: RunLayout) -> Path:
    """Where an experiment's sweeps keep their database and reports: ``<experiment's runs>/sweeps``."""
    root = (
        layout.root
        if layout.kind == "folders" and layout.root is not None
        else Path(LOG_ROOT) / layout.experiment
    )
    return root / "sweeps"
