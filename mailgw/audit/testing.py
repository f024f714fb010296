"""Test support for the exchange log: throwaway PostgreSQL schemas.

Shipped in the package (as aiosmtpd ships ``aiosmtpd.testing``) so the
gateway's own tests and the benchmarks use the same database set-up. Records
for tests are made by the gateway's own code (tests/made_records.py), never here.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

PG_BASE_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)
REQUIRE_PG = "MAILGW_REQUIRE_PG"

@contextlib.contextmanager
def pg_schema_url() -> Iterator[str | None]:
    """A PostgreSQL URL whose tables live in a new schema, dropped afterwards; None if no server answers."""
    for base in PG_BASE_URLS:
        engine = create_engine(base, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                schema = f"mailgw_audit_t_{os.getpid()}_{uuid.uuid4().hex[:10]}"
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        except OperationalError:
            engine.dispose()
            continue
        try:
            yield f"{base}?options=-csearch_path%3D{schema}"
        finally:
            with engine.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            engine.dispose()
        return
    yield None
