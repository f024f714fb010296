"""`mailgw dmarc report`, `mailgw dmarc record`, and the DMARC and SPF warnings of `mailgw check`.

``report`` makes the day's aggregate reports (mailgw.senderauth.reports) and writes
them to a folder, or puts them in the gateway's spool for the running gateway to
deliver: DKIM-signed with the settings' keys, each with a decision record (rule
``dmarc-report``) in the exchange log. ``record`` prints the SPF and DMARC records
our domains should publish; ``check_published`` compares them with DNS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import logging
import os
from typing import Any, TextIO

from mailgw.config.resolver import DnsTemporaryError
from mailgw.config.yamlfile import Problem
from mailgw.dkim.orgdomain import normalise, organisational_domain
from mailgw.message.model import Context
from mailgw.senderauth import reports

log = logging.getLogger(__name__)

REPORT_RULE = "dmarc-report"
"""The rule and tag of a report's exchange record."""


# --- mailgw dmarc report --------------------------------------------------------------


def parse_day(text: str | None, today: dt.date | None = None) -> dt.date:
    """``YYYY-MM-DD``, ``yesterday`` or None (yesterday, UTC); ValueError otherwise."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    if text in (None, "yesterday"):
        return today - dt.timedelta(days=1)
    try:
        return dt.date.fromisoformat(str(text))
    except ValueError:
        raise ValueError(f"--day must be YYYY-MM-DD or yesterday, not {text!r}") from None


def report(ctx: Context, day: dt.date, *, send: bool, out: str | None, domains: list[str] | None,
           stdout: TextIO, stderr: TextIO) -> int:
    """Make ``day``'s reports; write them to ``out``, and/or spool them when ``send``. Exit status."""
    from mailgw.audit.store import open_engine

    s = ctx.settings
    d = s.dmarc
    if send and not d.send:
        print(f"mailgw dmarc report: {s.file}: dmarc.reports.send is not true: sending reports is opt-in",
              file=stderr)
        return 1
    if not d.org_name or not d.email:
        print(f"mailgw dmarc report: {s.file}: dmarc.reports.org_name and dmarc.reports.email are needed "
              "(the report_metadata of every report)", file=stderr)
        return 1
    engine = open_engine(s.database)
    try:
        by_domain = reports.counted(engine, day, domains)
        if not by_domain:
            print(f"{day.isoformat()}: no DMARC results counted", file=stdout)
            return 0
        resolver = ctx.resolver
        status = 0
        for domain, rows in by_domain.items():
            lookup = _published(domain, resolver, s.dns.timeout)
            current = lookup if isinstance(lookup, reports.Published) else None
            rep = reports.build(domain, day, rows, org_name=d.org_name, email_address=d.email,
                                extra_contact_info=d.extra_contact_info,
                                fo=current.tags.get("fo") if current else None)
            line = f"{day.isoformat()} {domain}: {rep.messages} message(s), {rep.rows} row(s)"
            if out:
                os.makedirs(out, exist_ok=True)
                path = os.path.join(out, rep.filename)
                with open(path, "wb") as f:
                    f.write(rep.gz)
                line += f"; written to {path}"
            if send:
                outcome, failed = _send(ctx, engine, rep, current, lookup, resolver)
                line += f"; {outcome}"
                status = max(status, failed)
            print(line, file=stdout)
        return status
    finally:
        engine.dispose()


def _published(domain: str, resolver: Any, timeout: float) -> reports.Published | str | None:
    """The domain's record now; a string says why DNS did not answer."""
    from mailgw.senderauth import bounded

    try:
        return asyncio.run(reports.published(domain, bounded(resolver, timeout)))
    except DnsTemporaryError as e:
        return f"could not look up _dmarc.{domain}: {e}"


def _send(ctx: Context, engine: Any, rep: reports.Report, current: reports.Published | None,
          lookup: Any, resolver: Any) -> tuple[str, int]:
    """Spool one report to its verified destinations: (what happened, exit status: 1 for a failure to retry)."""
    from sqlalchemy import select

    from mailgw.audit.schema import Exchange
    from mailgw.queue.spool import Spool
    from mailgw.senderauth import bounded

    s = ctx.settings
    if ctx.directory.is_local_domain(rep.domain):
        return "not sent: one of our own domains (see mailgw report)", 0
    spool = Spool(s.spool)
    with engine.connect() as conn:
        logged = conn.execute(select(Exchange.id).where(Exchange.id == rep.report_id)).first()
    if logged or spool.locate(rep.report_id):
        return f"already sent (exchange {rep.report_id})", 0
    if isinstance(lookup, str):
        return f"not sent: {lookup}; run again later", 1
    if current is None or not current.rua:
        return "not sent: the domain asks for no reports (no rua=mailto: in its DMARC record now)", 0
    assert s.dmarc.email and s.dmarc.org_name
    draft = reports.message(rep, org_name=s.dmarc.org_name, email_address=s.dmarc.email,
                            rcpts=[d.address for d in current.rua], hostname=s.hostname)
    rcpts, notes = asyncio.run(reports.destinations(current, bounded(resolver, s.dns.timeout), len(draft) + 2048))
    why = "; ".join(notes)
    if not rcpts:
        return f"not sent: {why}", 1 if any("could not verify" in n for n in notes) else 0
    data = reports.message(rep, org_name=s.dmarc.org_name, email_address=s.dmarc.email, rcpts=rcpts,
                           hostname=s.hostname)
    where = _spool_report(ctx, spool, rep, data, rcpts)
    return f"queued for {', '.join(rcpts)} (exchange {rep.report_id}, {where})" + (f"; {why}" if why else ""), 0


def _spool_report(ctx: Context, spool: Any, rep: reports.Report, data: bytes, rcpts: list[str]) -> str:
    """DKIM-sign, spool and record one report; returns where its record went."""
    from mailgw.audit import record
    from mailgw.audit.log import AuditLog
    from mailgw.audit.writer import JOURNAL, Journal
    from mailgw.dkim import sign
    from mailgw.message.facts import DkimFacts, DkimSignature
    from mailgw.message.model import Envelope, Message, Verdict
    from mailgw.stages.dkim_sign import keys_for

    s = ctx.settings
    assert s.dmarc.email
    keys = keys_for(ctx.signing_keys, s.dmarc.email)
    if keys:
        data = sign(data, keys) + data
    else:
        log.warning("dmarc report %s: no DKIM key for %s in the settings: sent unsigned", rep.report_id, s.dmarc.email)
    env = Envelope(mail_from=s.dmarc.email, rcpts=list(rcpts), listener=REPORT_RULE, role="report", client_ip="")
    msg = Message(rep.report_id, env, data, verdict=Verdict(rule=REPORT_RULE, tags=[REPORT_RULE]))
    msg.facts.author = s.dmarc.email
    if keys:
        msg.facts.dkim = DkimFacts(signed=True, signatures=[DkimSignature(d=k.domain, s=k.selector, a=k.algorithm)
                                                            for k in keys])
    rec = record.build(msg, ctx, "").to_json()
    # The spool first: once there, the message is delivered, and a gateway that starts logs the
    # records of spooled messages the log lacks.
    spool.put_sync(rep.report_id, {"envelope": env.to_json(), "record": rec}, data)
    try:
        audit = AuditLog.open(s.database, s.node)
        try:
            audit.append([rec])
        finally:
            audit.close()
        where = "recorded in the exchange log"
    except Exception as e:  # the database is down: the journal keeps the record for the gateway
        log.warning("dmarc report %s: exchange log unavailable (%s); record journaled", rep.report_id, e)
        Journal(os.path.join(s.spool, JOURNAL)).write([("record", rec)])
        where = "record journaled"
    spool.request_flush()
    return where


# --- mailgw dmarc record, and mailgw check ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Expected:
    """What one of our domains should publish."""

    domain: str
    spf: str  # the TXT value at the domain
    dmarc: str | None  # the TXT value at _dmarc.<domain>; None for a subdomain its organisation's record covers
    authorise: str | None  # the record a rua= domain outside ours must publish (RFC 7489 section 7.1)
    addresses: tuple[str, ...]  # the gateway's own sending addresses (checked against the published SPF)


def sending_addresses(ctx: Context, spf: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The addresses our mail leaves from: ip4:/ip6: terms given, else the listeners' public addresses."""
    given = [t.split(":", 1)[1].split("/")[0] for t in spf if t.lstrip("+").startswith(("ip4:", "ip6:"))
             and "/" not in t]
    if spf:
        return tuple(given)
    out = []
    for listener in ctx.settings.listeners:
        try:
            ip = ipaddress.ip_address(listener.host)
        except ValueError:
            continue
        if ip.is_global and str(ip) not in out:
            out.append(str(ip))
    return tuple(out)


def expected(ctx: Context, domains: list[str] | None = None, *, spf: tuple[str, ...] = (), p: str | None = None,
             rua: str | None = None) -> list[Expected]:
    d = ctx.settings.dmarc
    terms = spf or d.spf
    addresses = sending_addresses(ctx, terms)
    if not terms:
        terms = tuple(f"ip6:{a}" if ":" in a else f"ip4:{a}" for a in addresses) or ("mx",)
    spf_value = "v=spf1 " + " ".join(terms) + " -all"
    policy = p or d.p or "none"
    report_to = rua or d.rua or d.email
    if report_to and report_to.lower().startswith("mailto:"):
        report_to = report_to[len("mailto:"):]
    names = [normalise(x) for x in domains] if domains else sorted(ctx.directory.local_domains)
    out = []
    for name in names:
        org = organisational_domain(name)
        own_record = org == name or org not in names
        dmarc = None
        authorise = None
        if own_record:
            dmarc = f"v=DMARC1; p={policy}" + (f"; rua=mailto:{report_to}" if report_to else "")
            rua_domain = normalise(report_to.rpartition("@")[2]) if report_to else ""
            if rua_domain and organisational_domain(rua_domain) != org:
                authorise = f"{name}._report._dmarc.{rua_domain}"
        out.append(Expected(name, spf_value, dmarc, authorise, addresses))
    return out


def print_records(items: list[Expected], stdout: TextIO) -> None:
    """The zone-file lines, as `mailgw dkim keygen` prints its record."""
    for e in items:
        print(f"; {e.domain}: SPF, máy chủ được gửi thư của tên miền / the servers that send its mail", file=stdout)
        print(f'{e.domain}. IN TXT "{e.spf}"', file=stdout)
        if e.dmarc:
            print(f"; {e.domain}: DMARC, nơi nhận xử lý thư giả mạo thế nào / what receivers do with forgeries",
                  file=stdout)
            print(f'_dmarc.{e.domain}. IN TXT "{e.dmarc}"', file=stdout)
        if e.authorise:
            print("; do tên miền nhận báo cáo công bố / published by the domain that receives the reports "
                  "(RFC 7489 section 7.1)", file=stdout)
            print(f'{e.authorise}. IN TXT "v=DMARC1"', file=stdout)


def check_published(ctx: Context) -> list[Problem]:
    """Warnings for our domains whose published SPF or DMARC record is missing or disagrees with the settings.

    Only when the settings have a ``dmarc:`` section (what to publish is then said).
    Looked up through ``ctx.resolver``; a DNS failure is "could not check", never an error.
    """
    from mailgw.stages.dkim_sign import keys_for

    s = ctx.settings
    if not s.dmarc.line:
        return []
    found = []
    email = s.dmarc.email
    if s.dmarc.send and email and not ctx.directory.is_local(email):
        found.append(f"dmarc.reports.email {email} is not in a local domain: receivers cannot tell our reports "
                     "from forgeries")
    elif s.dmarc.send and email and not keys_for(ctx.signing_keys, email):
        found.append(f"no dkim: key for the domain of dmarc.reports.email {email}: reports would go out unsigned")
    if ctx.resolver is not None:
        found += asyncio.run(_check_all(ctx, expected(ctx)))
    return [Problem(s.file, s.dmarc.line, text, warning=True) for text in found]


async def _check_all(ctx: Context, items: list[Expected]) -> list[str]:
    from mailgw.senderauth import bounded
    from mailgw.senderauth.spf import check_host

    s = ctx.settings
    resolver = bounded(ctx.resolver, s.dns.timeout)
    problems: list[str] = []

    async def one(e: Expected) -> None:
        try:
            txt = await resolver.txt(e.domain)
        except DnsTemporaryError as err:
            problems.append(f"could not check the SPF record of {e.domain}: {err}")
        else:
            if not any(t.lower().startswith(b"v=spf1") for t in txt):
                problems.append(f"{e.domain} publishes no SPF record: receivers cannot tell our servers from "
                                f"forgers (publish what `mailgw dmarc record` prints: {e.spf})")
            else:
                for ip in e.addresses:
                    got = await check_host(ip, e.domain, f"postmaster@{e.domain}", resolver)
                    if got.result != "pass":
                        problems.append(f"the SPF record of {e.domain} does not allow this gateway's address {ip} "
                                        f"(SPF {got.result}): its mail may be refused (expected: {e.spf})")
        if e.dmarc is None:
            return
        try:
            current = await reports.published(e.domain, resolver)
        except DnsTemporaryError as err:
            problems.append(f"could not check the DMARC record of {e.domain}: {err}")
            return
        if current is None:
            problems.append(f"{e.domain} publishes no DMARC record at _dmarc.{e.domain}: spoofs of it are not "
                            f"refused by receivers and no reports come back (publish: {e.dmarc})")
            return
        want_p = s.dmarc.p
        if want_p and current.tags.get("p", "").lower() != want_p:
            problems.append(f"the DMARC record of {e.domain} says p={current.tags.get('p', '')}, the settings "
                            f"p={want_p} (dmarc.record.p; publish: {e.dmarc})")
        want_rua = s.dmarc.rua or s.dmarc.email
        if want_rua and want_rua.lower() not in (r.address.lower() for r in current.rua):
            problems.append(f"the DMARC record of {e.domain} does not send reports to {want_rua} "
                            f"(rua={current.tags.get('rua', '')}; publish: {e.dmarc})")

    await asyncio.gather(*(one(e) for e in items))
    return sorted(problems)
