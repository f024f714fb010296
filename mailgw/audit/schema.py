"""Exchange log tables: where each accepted, refused or delivered message ends up for auditors.

Every search filter has its own index whose second column is the time, so a
filtered search ordered newest first reads only the rows it returns. The full
decision record is kept as canonical JSON text (not JSONB): the chain hashes
those exact bytes, and a database that re-formats JSON would break them.

Chains: each gateway node writes its own chain (``node`` below), numbered by
``seq``; exchanges and delivery events of one node share one numbering, so a
node's chain is the union of both tables ordered by ``seq``. Auditor access
has a chain of its own (:data:`ACCESS_CHAIN`).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ACCESS_CHAIN = "~access"
"""The chain name of the auditor access log; ``~`` cannot start a host name, so no node has it."""

GENESIS = "0" * 64
"""The previous hash of the first record of every chain."""


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Exchange(Base):
    """One SMTP transaction as the gateway decided it; ``record`` is the whole decision record."""

    __tablename__ = "audit_exchange"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    node: Mapped[str] = mapped_column(String(255))
    seq: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=False))  # UTC
    direction: Mapped[str | None] = mapped_column(String(16))
    sender: Mapped[str | None] = mapped_column(String(320))
    sender_agency: Mapped[str | None] = mapped_column(String(255))
    sender_unit: Mapped[str | None] = mapped_column(String(255))
    category: Mapped[str | None] = mapped_column(String(40))
    doc_number: Mapped[str | None] = mapped_column(String(255))
    doc_key: Mapped[str | None] = mapped_column(String(255))
    decision: Mapped[str | None] = mapped_column(String(16))
    rule: Mapped[str | None] = mapped_column(String(128))
    message_id: Mapped[str | None] = mapped_column(String(998))
    record: Mapped[str] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("node", "seq"),
        Index("ix_audit_exchange_time", "time"),
        Index("ix_audit_exchange_sender_time", "sender", "time"),
        Index("ix_audit_exchange_category_time", "category", "time"),
        Index("ix_audit_exchange_decision_time", "decision", "time"),
        Index("ix_audit_exchange_doc_key", "doc_key"),
        Index("ix_audit_exchange_message_id", "message_id"),
    )


class Recipient(Base):
    """One recipient of an exchange (derived from the record; verify checks it still matches)."""

    __tablename__ = "audit_recipient"

    exchange_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    agency: Mapped[str | None] = mapped_column(String(255))
    unit: Mapped[str | None] = mapped_column(String(255))
    official: Mapped[bool | None] = mapped_column(Boolean)
    local: Mapped[bool | None] = mapped_column(Boolean)
    time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=False))

    __table_args__ = (Index("ix_audit_recipient_address_time", "address", "time"),)


class AgencyHit(Base):
    """An agency taking part in an exchange, as sender or recipient: what ``--agency`` searches."""

    __tablename__ = "audit_agency"

    exchange_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agency: Mapped[str] = mapped_column(String(255), primary_key=True)
    time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=False))

    __table_args__ = (Index("ix_audit_agency_agency_time", "agency", "time"),)


class RuleHit(Base):
    """A rule that matched an exchange: the deciding rule and every tag-only rule of ``matched``."""

    __tablename__ = "audit_rule_hit"

    exchange_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rule: Mapped[str] = mapped_column(String(128), primary_key=True)
    time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=False))

    __table_args__ = (Index("ix_audit_rule_hit_rule_time", "rule", "time"),)


class Delivery(Base):
    """One delivery attempt's outcome for one recipient; part of the writing node's chain."""

    __tablename__ = "audit_delivery"

    node: Mapped[str] = mapped_column(String(255), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    exchange_id: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(320))
    time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=False))
    status: Mapped[str] = mapped_column(String(16))
    reply: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("exchange_id", "recipient", "attempt", "status"),
        Index("ix_audit_delivery_exchange", "exchange_id"),
    )


class Head(Base):
    """The last record of each chain; writers lock this row, so one node's writes are serial."""

    __tablename__ = "audit_head"

    chain: Mapped[str] = mapped_column(String(255), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class Checkpoint(Base):
    """A chain head written down: every N records (``periodic``) and where a prune cut (``prune``)."""

    __tablename__ = "audit_checkpoint"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(String(255))
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=False))
    pruned: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (UniqueConstraint("chain", "seq", "kind"),)


class Access(Base):
    """One auditor command: who (OS user), which command, with which arguments, when."""

    __tablename__ = "audit_access"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=False))
    os_user: Mapped[str] = mapped_column(String(255))
    host: Mapped[str] = mapped_column(String(255))
    command: Mapped[str] = mapped_column(String(32))
    args: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class DmarcSource(Base):
    """DMARC results of inbound mail, counted per UTC day, policy domain, source address and outcome.

    The rows RFC 7489 aggregate reports and the monthly report's "who sends in our
    names" are made of (mailgw.senderauth.reports). Written in the same transaction as
    the exchanges they count (mailgw.audit.log), so a replayed record is never
    counted twice; counts only, so a redacted exchange reveals nothing more here.
    ``key`` is the SHA-256 of every other grouping column, the conflict target of the
    counting upsert (several nodes may count into one row).
    """

    __tablename__ = "dmarc_source"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)  # UTC
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    policy_domain: Mapped[str] = mapped_column(String(255))  # where the DMARC record was found
    header_from: Mapped[str] = mapped_column(String(255))
    source_ip: Mapped[str] = mapped_column(String(45))
    envelope_from: Mapped[str] = mapped_column(String(255))  # the MAIL FROM domain ("" for <>)
    disposition: Mapped[str] = mapped_column(String(16))  # none | quarantine | reject: what we applied
    reason: Mapped[str] = mapped_column(String(32))  # "" or an RFC 7489 PolicyOverrideType
    dkim: Mapped[str] = mapped_column(String(8))  # pass | fail: an aligned DKIM signature passed
    spf: Mapped[str] = mapped_column(String(8))  # pass | fail: SPF passed aligned
    result: Mapped[str] = mapped_column(String(16))  # the DMARC result (pass | fail)
    dkim_results: Mapped[str] = mapped_column(Text)  # JSON [[domain, selector, result], ...]
    spf_domain: Mapped[str] = mapped_column(String(255))
    spf_scope: Mapped[str] = mapped_column(String(8))  # mfrom | helo
    spf_result: Mapped[str] = mapped_column(String(16))
    policy: Mapped[str] = mapped_column(Text)  # JSON of the published policy as seen: p, sp, pct, adkim, aspf
    count: Mapped[int] = mapped_column(BigInteger)
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=False))  # UTC
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=False))

    __table_args__ = (
        Index("ix_dmarc_source_policy_domain_day", "policy_domain", "day"),
        Index("ix_dmarc_source_header_from_day", "header_from", "day"),
    )
