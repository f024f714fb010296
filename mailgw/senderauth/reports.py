"""DMARC aggregate reports (RFC 7489 section 7.2): the day's counted results, as XML, to the domains' ``rua=``.

The exchange log counts every evaluated inbound message into ``dmarc_source``
(mailgw.audit.dmarc). For one UTC day, :func:`build` makes one report per policy
domain (the Appendix C schema, gzip-ed, named as section 7.2.1.1 says);
:func:`destinations` reads the domain's ``rua=`` now and keeps the ``mailto:``
addresses that may have it; :func:`spool` puts the report in the gateway's own
queue, DKIM-signed with our keys, with a decision record of its own, so it is
delivered (retries, DSNs) like any message the gateway accepted.

Invariants:

- a ``rua=`` address whose organisational domain differs from the policy domain's
  gets the report only when ``<policy domain>._report._dmarc.<its domain>`` publishes
  a ``v=DMARC1`` record (section 7.1): a domain cannot make us mail a third party;
- a report larger than a destination's ``!size`` limit is not sent there (section 6.2);
- one report per domain and day: its exchange id is made from both, and a report
  already in the log or the spool is not made again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import gzip
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from typing import Any, Iterable, Protocol

from sqlalchemy import Engine, select

from mailgw.audit.schema import DmarcSource
from mailgw.config.resolver import DnsTemporaryError
from mailgw.dkim.orgdomain import normalise, organisational_domain

__all__ = ["Destination", "Published", "Report", "build", "counted", "destinations", "message", "parse_rua", "published",
           "report_id"]

_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")


class TxtResolver(Protocol):
    async def txt(self, name: str) -> list[bytes]: ...


@dataclasses.dataclass(frozen=True)
class Destination:
    """One ``mailto:`` URI of ``rua=``: the address and its size limit in bytes (None: no limit)."""

    address: str
    limit: int | None = None


@dataclasses.dataclass(frozen=True)
class Published:
    """A domain's DMARC record as published now: the tags a report needs."""

    domain: str
    tags: dict[str, str]
    rua: tuple[Destination, ...]


@dataclasses.dataclass(frozen=True)
class Report:
    """One aggregate report: its XML, the gzip attachment and what it covers."""

    domain: str
    day: dt.date
    report_id: str
    xml: bytes
    filename: str
    messages: int
    rows: int

    @property
    def gz(self) -> bytes:
        return gzip.compress(self.xml, mtime=0)


def parse_rua(value: str) -> tuple[Destination, ...]:
    """The ``mailto:`` URIs of a ``rua=`` value (other schemes are skipped), with their ``!size`` limits."""
    out = []
    for uri in value.split(","):
        uri = uri.strip()
        if not uri.lower().startswith("mailto:"):
            continue
        address, _, size = uri[len("mailto:"):].partition("!")
        address = email.utils.unquote(address.split("?", 1)[0]).strip()
        if "@" not in address or any(c in address for c in " <>,;\r\n"):
            continue
        out.append(Destination(address, _size(size)))
    return tuple(out)


def _size(text: str) -> int | None:
    text = text.strip().lower()
    if not text:
        return None
    unit = _UNITS.get(text[-1], 1)
    digits = text[:-1] if text[-1] in _UNITS else text
    return int(digits) * unit if digits.isdigit() else None


def _dmarc_tags(answers: Iterable[bytes]) -> dict[str, str] | None:
    found = []
    for a in answers:
        text = a[:2048].decode("ascii", "replace")
        tags: dict[str, str] = {}
        for part in text.split(";")[:32]:
            name, eq, value = part.partition("=")
            if eq:
                tags.setdefault(name.strip().lower(), value.strip())
        if tags.get("v") == "DMARC1" and text.lstrip().startswith("v"):
            found.append(tags)
    return found[0] if len(found) == 1 else None


async def published(domain: str, resolver: TxtResolver) -> Published | None:
    """The DMARC record at ``_dmarc.<domain>`` now; None when there is none (or more than one).

    Raises DnsTemporaryError when DNS does not answer.
    """
    domain = normalise(domain)
    tags = _dmarc_tags(await resolver.txt(f"_dmarc.{domain}"))
    if tags is None:
        return None
    return Published(domain, tags, parse_rua(tags.get("rua", "")))


async def destinations(record: Published, resolver: TxtResolver, size: int) -> tuple[list[str], list[str]]:
    """The addresses that get a report of ``size`` bytes for ``record``'s domain, and why the others do not.

    Section 7.1: an address outside the policy domain's organisation must be
    authorised by ``<domain>._report._dmarc.<address domain>``; a DNS failure there
    is "not authorised now" (the report is tried again the next time the command runs).
    """
    ok: list[str] = []
    notes: list[str] = []
    own = organisational_domain(record.domain)
    for dest in record.rua:
        target = normalise(dest.address.rpartition("@")[2])
        if organisational_domain(target) != own:
            name = f"{record.domain}._report._dmarc.{target}"
            try:
                answers = await resolver.txt(name)
            except DnsTemporaryError as e:
                notes.append(f"{dest.address}: could not verify {name} ({e})")
                continue
            if not any(a[:64].replace(b" ", b"").startswith(b"v=DMARC1") for a in answers):
                notes.append(f"{dest.address}: not authorised to receive reports for {record.domain} "
                             f"(no v=DMARC1 record at {name}, RFC 7489 section 7.1)")
                continue
        if dest.limit is not None and size > dest.limit:
            notes.append(f"{dest.address}: report of {size} bytes is over its limit of {dest.limit} bytes")
            continue
        if dest.address.lower() not in (a.lower() for a in ok):
            ok.append(dest.address)
    return ok, notes


def report_id(domain: str, day: dt.date) -> str:
    """The exchange id, Report-ID, file name's unique-id and spool name of the report for ``domain`` and ``day``.

    Letters and digits only (the file name's ``unique-id``, section 7.2.1.1), so also a safe spool name.
    """
    return f"DMARC{day:%Y%m%d}{hashlib.sha256(normalise(domain).encode()).hexdigest()[:24]}"


def _filename_part(name: str) -> str:
    """A domain as it may appear in a file name: the policy domain comes from mail (its From), so nothing
    in it may name another folder when a report is written to disk, by us or by its receiver."""
    return _UNSAFE.sub("_", name).lstrip(".") or "_"


def day_bounds(day: dt.date) -> tuple[int, int]:
    """The UTC day as epoch seconds, ``begin`` and ``end`` of ``date_range`` (end inclusive)."""
    begin = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())
    return begin, begin + 86399


def counted(engine: Engine, day: dt.date, domains: Iterable[str] | None = None) -> dict[str, list[Any]]:
    """The day's ``dmarc_source`` rows by policy domain (only ``domains`` when given)."""
    stmt = select(DmarcSource).where(DmarcSource.day == day)
    if domains is not None:
        stmt = stmt.where(DmarcSource.policy_domain.in_([normalise(d) for d in domains]))
    out: dict[str, list[Any]] = {}
    with engine.connect() as conn:
        for row in conn.execute(stmt.order_by(DmarcSource.policy_domain, DmarcSource.source_ip, DmarcSource.key)):
            out.setdefault(row.policy_domain, []).append(row)
    return out


def build(domain: str, day: dt.date, rows: list[Any], *, org_name: str, email_address: str,
          extra_contact_info: str | None = None, fo: str | None = None) -> Report:
    """The aggregate report of ``domain`` for ``day`` from its counted rows (RFC 7489 Appendix C)."""
    begin, end = day_bounds(day)
    rid = report_id(domain, day)
    root = ET.Element("feedback")
    ET.SubElement(root, "version").text = "1.0"
    meta = ET.SubElement(root, "report_metadata")
    ET.SubElement(meta, "org_name").text = org_name
    ET.SubElement(meta, "email").text = email_address
    if extra_contact_info:
        ET.SubElement(meta, "extra_contact_info").text = extra_contact_info
    ET.SubElement(meta, "report_id").text = rid
    dr = ET.SubElement(meta, "date_range")
    ET.SubElement(dr, "begin").text = str(begin)
    ET.SubElement(dr, "end").text = str(end)
    # The policy as we saw it when the mail came: the last one seen that day.
    seen = json.loads(max(rows, key=lambda r: r.last_seen).policy)
    pp = ET.SubElement(root, "policy_published")
    ET.SubElement(pp, "domain").text = domain
    ET.SubElement(pp, "adkim").text = seen.get("adkim") or "r"
    ET.SubElement(pp, "aspf").text = seen.get("aspf") or "r"
    ET.SubElement(pp, "p").text = seen.get("p") or "none"
    ET.SubElement(pp, "sp").text = seen.get("sp") or seen.get("p") or "none"
    ET.SubElement(pp, "pct").text = str(seen.get("pct", 100))
    ET.SubElement(pp, "fo").text = fo or "0"
    messages = 0
    for r in rows:
        messages += int(r.count)
        rec = ET.SubElement(root, "record")
        row = ET.SubElement(rec, "row")
        ET.SubElement(row, "source_ip").text = r.source_ip
        ET.SubElement(row, "count").text = str(int(r.count))
        pe = ET.SubElement(row, "policy_evaluated")
        ET.SubElement(pe, "disposition").text = r.disposition
        ET.SubElement(pe, "dkim").text = r.dkim
        ET.SubElement(pe, "spf").text = r.spf
        if r.reason:
            ET.SubElement(ET.SubElement(pe, "reason"), "type").text = r.reason
        ids = ET.SubElement(rec, "identifiers")
        # Required by the schema; empty for the null sender <> (SPF then checked HELO: see scope).
        ET.SubElement(ids, "envelope_from").text = r.envelope_from
        ET.SubElement(ids, "header_from").text = r.header_from
        auth = ET.SubElement(rec, "auth_results")
        for d, s, result in json.loads(r.dkim_results):
            sig = ET.SubElement(auth, "dkim")
            ET.SubElement(sig, "domain").text = d
            if s:
                ET.SubElement(sig, "selector").text = s
            ET.SubElement(sig, "result").text = result
        spf = ET.SubElement(auth, "spf")
        ET.SubElement(spf, "domain").text = r.spf_domain
        ET.SubElement(spf, "scope").text = r.spf_scope
        ET.SubElement(spf, "result").text = r.spf_result
    ET.indent(root)
    xml = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"
    receiver = normalise(email_address.rpartition("@")[2])
    filename = f"{_filename_part(receiver)}!{_filename_part(domain)}!{begin}!{end}!{rid}.xml.gz"
    return Report(domain, day, rid, xml, filename, messages, len(rows))


def message(report: Report, *, org_name: str, email_address: str, rcpts: list[str], hostname: str,
            now: float | None = None) -> bytes:
    """The report as mail (section 7.2.1.1): the Subject it prescribes, a short text, the gzip-ed XML attached."""
    from email.message import EmailMessage
    from email.policy import SMTP

    msg = EmailMessage(policy=SMTP)
    msg["From"] = email.utils.formataddr((org_name, email_address))
    msg["To"] = ", ".join(rcpts)
    submitter = normalise(email_address.rpartition("@")[2])
    msg["Subject"] = (f"Report Domain: {_filename_part(report.domain)} Submitter: {submitter} "
                      f"Report-ID: <{report.report_id}>")
    msg["Date"] = email.utils.formatdate(now, localtime=False)
    msg["Message-ID"] = f"<{report.report_id}.{submitter}@{hostname}>"
    msg.set_content(
        f"Báo cáo tổng hợp DMARC (RFC 7489) của {report.domain}, ngày {report.day.isoformat()} (UTC): "
        f"{report.messages} thư, {report.rows} dòng theo nguồn gửi.\n"
        f"DMARC aggregate report (RFC 7489) for {report.domain}, {report.day.isoformat()} (UTC): "
        f"{report.messages} message(s), {report.rows} row(s) by source.\n")
    msg.add_attachment(report.gz, maintype="application", subtype="gzip", filename=report.filename)
    return msg.as_bytes()
