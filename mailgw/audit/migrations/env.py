"""Alembic environment for the exchange log; run only through :func:`mailgw.audit.store.open_engine`.

The caller passes an open connection already inside a transaction (holding a
lock, so two nodes starting on a fresh shared database do not both create the
tables); this script only runs the migrations on it.
"""

from alembic import context

from mailgw.audit.schema import Base

VERSION_TABLE = "mailgw_audit_version"

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
