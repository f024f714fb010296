"""Test support for the exchange log: a realistic record builder and throwaway PostgreSQL schemas.

Shipped in the package (as aiosmtpd ships ``aiosmtpd.testing``) so the
gateway's own tests and the benchmarks build records the same way.
"""

from __future__ import annotations

import contextlib
import copy
import os
import uuid
from typing import Any, Iterator

import msgspec
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from mailgw.audit.record import ExchangeRecord

PG_BASE_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)
REQUIRE_PG = "MAILGW_REQUIRE_PG"

_BASE: dict[str, Any] = {
    "id": "01JC9Z3K7Q2M5N8P",
    "time": "2025-03-03T02:15:30.123456+00:00",
    "node": "gw1",
    "listener": "relay",
    "role": "relay",
    "direction": "outbound",
    "client_ip": "10.0.0.5",
    "helo": "mail.stttt.binhthuan.gov.vn",
    "tls": "TLSv1.3",
    "auth_user": None,
    "mail_from": "vanthu@stttt.binhthuan.gov.vn",
    "rcpts": ["vanthu@sotc.binhthuan.gov.vn"],
    "header": {
        "from": "Văn thư Sở TT&TT <vanthu@stttt.binhthuan.gov.vn>",
        "to": "vanthu@sotc.binhthuan.gov.vn",
        "cc": None,
        "subject": "Giấy mời họp giao ban tháng 3 (Số: 07/GM-STTTT)",
        "message_id": "<gm07@stttt.binhthuan.gov.vn>",
        "in_reply_to": None,
        "references": None,
    },
    "sender": {"address": "vanthu@stttt.binhthuan.gov.vn", "agency": "STTTT", "unit": "VP",
               "official": True, "exception": False},
    "recipients": [{"address": "vanthu@sotc.binhthuan.gov.vn", "agency": "STC", "unit": "VP",
                    "official": True, "local": True}],
    "size": 48213,
    "sha256": "9f2c" + "0" * 60,
    "classification": {
        "category": "meeting_invitation", "doc_type": "GM", "doc_number": "07/GM-STTTT",
        "secrecy": "none", "secrecy_strength": "none", "declassified": False, "urgency": "none",
        "confidence": 0.93, "evidence": [{"cue": "doc_number", "where": "subject", "text": "07/GM-STTTT"}],
    },
    "dkim": {"signed": True, "status": "pass", "aligned_pass": True, "from_domain": "stttt.binhthuan.gov.vn",
             "signatures": [{"d": "stttt.binhthuan.gov.vn", "s": "mailgw", "a": "ed25519-sha256", "result": "pass",
                             "aligned": True}]},
    "attachments": {"count": 1, "total_size": 40211, "signed_any": True, "files": [{
        "name": "GM-07.pdf", "names": ["GM-07.pdf"], "location": "2", "size": 40211, "sha256": "ab12" + "0" * 60,
        "declared_type": "application/pdf", "true_type": "application/pdf", "extension": "pdf", "kind": "pdf",
        "pdf": {"signatures": 1, "signers": ["Sở Thông tin và Truyền thông tỉnh Bình Thuận"]}, "signed": True}]},
    "decision": {"decision": "accept", "rule": "default", "mode": "enforce", "tags": [],
                 "matched": [], "reply": "250 2.0.0 OK"},
    "policy_version": "policies@3f2a9c1",
    "directory_version": "2025-03-01",
}


def sample_record(**overrides: Any) -> dict[str, Any]:
    """A complete exchange record in the JSON form the gateway writes; keyword arguments replace
    top-level keys, and ``key__sub=value`` replaces one key of a nested mapping (``decision__rule="x"``).

    The result goes through the record's model (:mod:`mailgw.audit.record`) both ways, so it has
    exactly the shape the gateway writes: a field of the wrong name or type is an error here.
    Tests of what the gateway itself writes drive the gateway instead (tests/test_journeys.py).
    """
    rec = copy.deepcopy(_BASE)
    for key, value in overrides.items():
        if "__" in key:
            outer, inner = key.split("__", 1)
            rec[outer] = dict(rec.get(outer) or {})
            rec[outer][inner] = value
        else:
            rec[key] = value
    body = rec.pop("body", None)  # beside the record: the body the log archives (a quarantined message)
    out = msgspec.convert(rec, ExchangeRecord).to_json()
    if body is not None:
        out["body"] = body
    return out


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
