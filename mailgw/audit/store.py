"""Opening the exchange log's database: engine settings per backend and schema migrations at open.

SQLite (the default) runs in WAL mode with ``synchronous=FULL``, so a commit
survives a power cut once ``append`` returns; writers start with
``BEGIN IMMEDIATE`` so two processes never both read the same chain head.
PostgreSQL (``postgresql+psycopg://``) is for several nodes sharing one log.
"""

from __future__ import annotations

import pathlib
import sqlite3
import time
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text

_MIGRATIONS = pathlib.Path(__file__).parent / "migrations"
# Any fixed number: the advisory lock that keeps two nodes from migrating at once.
_MIGRATION_LOCK = 0x6D61696C6777  # "mailgw"
_VERSION_TABLE = "mailgw_audit_version"

_WAL_PATIENCE = 60.0  # seconds, as the busy timeout

IMMEDIATE = {"sqlite_immediate": True}
"""Execution options for a write transaction (``BEGIN IMMEDIATE`` on SQLite, ignored elsewhere)."""


def open_engine(url: str) -> Engine:
    """An engine on ``url`` whose schema is at the newest migration (created if the database is new)."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
        if url.startswith("postgresql"):
            # A server that does not answer must not hold a gateway's replies for minutes.
            kwargs["connect_args"] = {"connect_timeout": 10}
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _sqlite_setup(engine)
    _migrate(engine)
    return engine


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so we can choose BEGIN IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=60000")
        _wal(cur)
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _wal(cur: Any) -> None:
    """Put the database in WAL mode (kept in the file: later opens find it so and change nothing).

    Switching a new file to WAL while another process opens it can fail at once with
    "database is locked", without waiting on the busy timeout (seen with two gateway
    processes starting on a fresh database on a loaded machine): try again for a while.
    """
    deadline = time.monotonic() + _WAL_PATIENCE
    while True:
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _config(conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def _migrate(engine: Engine) -> None:
    cfg = _config(None)  # type: ignore[arg-type]
    newest = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn, opts={"version_table": _VERSION_TABLE}).get_current_revision()
    if current == newest:
        return
    with engine.connect().execution_options(**IMMEDIATE) as conn:
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            command.upgrade(_config(conn), "head")
