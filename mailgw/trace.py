"""`mailgw policy test`: one message through the real decision path, nothing sent.

The message runs through the same stages as on a listener (parse, author,
classify, attachments, DKIM verification, policy) with the files on disk;
the trace says what each stage found and, for every rule, whether it matched
and why. Nothing is queued, signed or recorded.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
from typing import Any, Sequence

import msgspec

from mailgw import pipeline
from mailgw.config.settings import MTA_ROLES
from mailgw.message import fastheaders
from mailgw.message.model import Context, Envelope, Message, new_id
from mailgw.milter.envelope import role_for

# What each stage contributes to the trace, by the fact it leaves.
_STAGE_FACTS = {"classify": "classification", "attachments": "attachments", "dkim_verify": "dkim", "spf": "spf",
                "arc": "arc", "dmarc": "dmarc"}


class UsageError(Exception):
    """The command line asks for something the settings do not have."""


class MessageError(UsageError):
    """This message cannot be traced as asked (no recipient given or found): the others can."""


def run(
    ctx: Context,
    raw: bytes,
    *,
    listener: str = "relay",
    mail_from: str | None = None,
    rcpts: Sequence[str] = (),
    auth_user: str | None = None,
    client_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """The trace of one message as a JSON-ready dict."""
    chosen = next((l for l in ctx.settings.listeners if l.name == listener), None)
    if chosen is None:
        names = ", ".join(l.name for l in ctx.settings.listeners)
        raise UsageError(f"no listener named {listener!r} in the settings (there are: {names})")
    raw = _crlf(raw)
    from_header, to_headers = _header_addresses(raw)
    if mail_from is None:
        mail_from = from_header or ""
    rcpts = list(rcpts) or to_headers
    if not rcpts:
        raise MessageError("no recipient: give --rcpt, or a message with To or Cc")
    role = chosen.role
    if role in MTA_ROLES:  # a milter or policy listener: the role its rules give (--auth-user, --client-ip)
        role = role_for(chosen, None, auth_user, client_ip)
    if role == "submission" and auth_user is None:
        auth_user = mail_from or None
    envelope = Envelope(
        mail_from=mail_from, rcpts=list(rcpts), listener=chosen.name, role=role, client_ip=client_ip,
        helo="policy-test", tls="TLSv1.3" if role == "submission" else None, auth_user=auth_user,
    )
    message = Message(id=new_id(), envelope=envelope, raw=raw)
    timings: list[pipeline.StageTime] = []
    v = pipeline.run(message, ctx, until=pipeline.DECIDED, timings=timings)  # the edge's own answer
    found = message.facts
    stages = []
    for t in timings:
        step: dict[str, Any] = {"stage": t.stage, "ms": t.ms}
        fact = _STAGE_FACTS.get(t.stage)
        if fact is not None:
            step[fact] = _json(getattr(found, fact))
        if t.stage == "policy":
            step["decision"] = v.kind
        stages.append(step)
    return {
        "id": message.id,
        "envelope": {"listener": envelope.listener, "role": envelope.role, "mail_from": envelope.mail_from,
                     "rcpts": envelope.rcpts, "auth_user": envelope.auth_user, "client_ip": envelope.client_ip},
        "classification": _json(found.classification),
        "decision": v.kind,
        "rule": v.rule,
        "mode": v.mode,
        "matched": list(v.matched),
        "reply": v.reply,
        "tags": list(v.tags),
        "headers": [list(h) for h in v.headers],
        "archive": list(v.archive),
        "audit": _json(v.audit),
        "dkim": _json(found.dkim),
        "spf": _json(found.spf),
        "dmarc": _json(found.dmarc),
        "arc": _json(found.arc),
        "attachments": _json(found.attachments),
        "facts": v.seen,
        "rules": [step.to_json() for step in v.steps],
        "stages": stages,
        "policy_version": v.policy_version,
        "directory_version": ctx.directory.version,
    }


def render(t: dict[str, Any]) -> str:
    """The trace for a reader: Vietnamese labels, then English."""
    env = t["envelope"]
    lines = [
        f"Phong bì / Envelope: cổng / listener {env['listener']} ({env['role']}), "
        f"từ / from <{env['mail_from']}> tới / to " + ", ".join(f"<{r}>" for r in env["rcpts"]),
    ]
    c = t.get("classification")
    if c:
        lines.append(
            f"Phân loại / Classification: {c['category']}"
            + (f", {c['doc_number']}" if c.get("doc_number") else "")
            + f", độ mật / secrecy {c['secrecy']} ({c['secrecy_strength']}), độ khẩn / urgency {c['urgency']}"
        )
    dk = t.get("dkim")
    if dk:
        lines.append(f"DKIM: {dk.get('status')}" + (" (khớp tên miền / aligned)" if dk.get("aligned_pass") else ""))
    spf = t.get("spf")
    if spf:
        lines.append(f"SPF: {spf.get('result')} ({spf.get('identity')} {spf.get('domain')})")
    arc = t.get("arc")
    if arc and arc.get("sets"):
        lines.append(f"ARC: {arc.get('result')}, {arc.get('sets')} bộ / sets, niêm phong cuối / sealed last by "
                     f"{arc.get('sealer')}" + (" (tin cậy / trusted forwarder)" if arc.get("trusted") else ""))
    dm = t.get("dmarc")
    if dm:
        lines.append(f"DMARC: {dm.get('result')}, p={dm.get('p')}, chính sách áp dụng / policy {dm.get('policy')}"
                     + (f", khớp / aligned: {', '.join(dm['aligned'])}" if dm.get("aligned") else "")
                     + (f", ngoại lệ / override: {dm['override']}" if dm.get("override") else ""))
    att = t.get("attachments")
    if att and att.get("files"):
        for f in att["files"]:
            danger = f" NGUY HIỂM / DANGEROUS: {', '.join(f['dangerous'])}" if f.get("dangerous") else ""
            signed = " có chữ ký số / signed" if f.get("signed") else ""
            locked = ""
            if f.get("encrypted"):
                locked = f" mã hóa / encrypted ({f.get('encryption')}: {f.get('encrypted_reason')})"
            elif f.get("decrypted"):
                locked = f" đã giải mã / decrypted ({f.get('encryption')})"
            damaged = f" hỏng / damaged: {f['damaged']}" if f.get("damaged") else ""
            lines.append(f"Tệp / File: {f.get('name') or '?'} ({f.get('true_type')}, {f.get('size')} B)"
                         f"{signed}{locked}{damaged}{danger}")
    lines.append(f"Quy tắc / Rules (phiên bản / version {t.get('policy_version')}):")
    for step in t.get("rules", []):
        mark = "KHỚP / MATCH" if step["matched"] else "-"
        extra = ""
        if step.get("decided"):
            extra = f" => {step['decided']}"
        elif step.get("would"):
            extra = f" => (audit) would {step['would']}"
        lines.append(f"  {mark:13} {step['rule']}{extra}  [{step['where']}]")
        lines.append(f"                {step['why']}")
    lines.append(f"Quyết định / Decision: {t['decision']} (quy tắc / rule {t['rule']})")
    lines.append(f"Trả lời SMTP / SMTP reply: {t['reply']}")
    if t["tags"]:
        lines.append("Nhãn / Tags: " + ", ".join(t["tags"]))
    if t["headers"]:
        lines.append("Thêm trường / Added headers: " + "; ".join(f"{n}: {v}" for n, v in t["headers"]))
    for a in t.get("audit", []):
        lines.append(f"Chế độ thử / Audit mode: {a['rule']} would {a['would']}")
    return "\n".join(lines)


def _json(value: Any) -> Any:
    """A fact as JSON-ready data (None stays None)."""
    return None if value is None else msgspec.to_builtins(value)


def _crlf(raw: bytes) -> bytes:
    """Files on disk often have LF line endings; SMTP carries CRLF."""
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _header_addresses(raw: bytes) -> tuple[str | None, list[str]]:
    """The From address and the To and Cc addresses, for an envelope the command line did not give.

    Read with the gateway's own linear reader (fastheaders) where it can, else
    with the stdlib's; a field neither can read (the stdlib's parser recurses,
    and a huge crafted field exhausts it) simply gives no address here: the
    stages judge the message itself, as on a listener.
    """
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    froms = _addresses(headers.get_all("From", []))
    tos = _addresses(headers.get_all("To", []) + headers.get_all("Cc", []))
    return (froms[0] if len(froms) == 1 else None), tos


def _addresses(values: list[Any]) -> list[str]:
    out: list[str] = []
    for value in values:
        found = fastheaders.addresses(str(value))
        if found is not None:
            out.extend(a.addr_spec for a in found if a.addr_spec)
            continue
        try:
            out.extend(a for _, a in email.utils.getaddresses([str(value)]) if a)
        except (RecursionError, ValueError, IndexError):
            continue
    return out
