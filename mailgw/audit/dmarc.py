"""What the exchange log counts of each inbound message's DMARC result (table ``dmarc_source``).

:func:`source_row` turns one decision record into the row it adds one to: the
grouping columns of an RFC 7489 aggregate report's ``<record>`` (source address,
the disposition we applied and why, the aligned DKIM and SPF outcome, the
identifiers, every DKIM signature and the SPF check) and the policy as it was
published. Only messages whose From domain published a usable record (DMARC
``pass`` or ``fail``) are counted: ``none`` has nobody to report to, and a
``temperror`` or ``permerror`` message was not evaluated against a policy.

Counts and these columns only: a redacted (secret) exchange is counted like any
other, and nothing of its subject, body or recipients is written here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, Mapping

GROUPING = ("policy_domain", "header_from", "source_ip", "envelope_from", "disposition", "reason", "dkim", "spf",
            "result", "dkim_results", "spf_domain", "spf_scope", "spf_result", "policy")
"""The columns a row is counted by (``key`` is their hash)."""
COLUMNS = ("day", "key", *GROUPING, "count", "first_seen", "last_seen")
"""The columns of ``dmarc_source``, in the order :func:`source_row` and the writer use."""

_DKIM_RESULTS = ("none", "pass", "fail", "policy", "neutral", "temperror", "permerror")
_SPF_RESULTS = ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")
_DISPOSITIONS = ("none", "quarantine", "reject")


def source_row(record: Mapping[str, Any], time: dt.datetime) -> dict[str, Any] | None:
    """The ``dmarc_source`` row one record counts into (count 1), or None when it counts nowhere.

    ``time`` is the record's time as naive UTC (the writer derives it once).
    """
    dmarc = record.get("dmarc")
    if not isinstance(dmarc, Mapping) or dmarc.get("result") not in ("pass", "fail"):
        return None
    header_from = dmarc.get("from_domain")
    policy_domain = dmarc.get("record_domain")
    source_ip = record.get("client_ip")
    if not header_from or not policy_domain or not source_ip:
        return None
    decision = record.get("decision") or {}
    aligned = dmarc.get("aligned") or []
    result = str(dmarc["result"])
    # What we applied: a failing message we refused or held was given that disposition, whichever rule
    # did it; one we let through was given "none", and the reason says why that differs from the request.
    applied = str(decision.get("decision") or "accept")
    disposition = applied if result == "fail" and applied in ("reject", "quarantine") else "none"
    asked = dmarc.get("policy") if dmarc.get("policy") in _DISPOSITIONS else "none"
    reason = ""
    if result == "fail" and dmarc.get("sampled_out"):
        reason = "sampled_out"
    elif result == "fail" and disposition != asked:
        reason = "local_policy"
    dkim = record.get("dkim") or {}
    signatures = [[_cut(s.get("d"), 255).lower(), _cut(s.get("s"), 255),
                   s.get("result") if s.get("result") in _DKIM_RESULTS else "none"]
                  for s in dkim.get("signatures") or [] if isinstance(s, Mapping) and s.get("d")]
    spf = record.get("spf") or {}
    mail_from = str(record.get("mail_from") or "")
    envelope_from = mail_from.rpartition("@")[2].lower() if "@" in mail_from else ""
    spf_scope = "helo" if spf.get("identity") == "helo" else "mfrom"
    spf_domain = spf.get("domain") or (record.get("helo") if spf_scope == "helo" else envelope_from) or ""
    policy = {k: dmarc.get(k) for k in ("p", "sp", "pct", "adkim", "aspf")}
    row: dict[str, Any] = {
        "day": time.date(),
        "policy_domain": _cut(policy_domain, 255).lower(),
        "header_from": _cut(header_from, 255).lower(),
        "source_ip": _cut(source_ip, 45),
        "envelope_from": _cut(envelope_from, 255),
        "disposition": disposition,
        "reason": reason,
        "dkim": "pass" if "dkim" in aligned else "fail",
        "spf": "pass" if "spf" in aligned else "fail",
        "result": result,
        "dkim_results": json.dumps(sorted(signatures), ensure_ascii=False, separators=(",", ":")),
        "spf_domain": _cut(spf_domain, 255).lower(),
        "spf_scope": spf_scope,
        "spf_result": spf.get("result") if spf.get("result") in _SPF_RESULTS else "none",
        "policy": json.dumps(policy, sort_keys=True, separators=(",", ":")),
        "count": 1,
        "first_seen": time,
        "last_seen": time,
    }
    row["key"] = hashlib.sha256(json.dumps([row[c] for c in GROUPING], ensure_ascii=False).encode()).hexdigest()
    return row


def merge(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of one batch added up per (day, key), in key order (so concurrent writers lock rows in one order)."""
    out: dict[tuple[dt.date, str], dict[str, Any]] = {}
    for r in rows:
        k = (r["day"], r["key"])
        if k in out:
            m = out[k]
            m["count"] += r["count"]
            m["first_seen"] = min(m["first_seen"], r["first_seen"])
            m["last_seen"] = max(m["last_seen"], r["last_seen"])
        else:
            out[k] = dict(r)
    return [out[k] for k in sorted(out)]


def _cut(value: Any, size: int) -> str:
    return str(value or "")[:size]


__all__ = ["COLUMNS", "GROUPING", "merge", "source_row"]
