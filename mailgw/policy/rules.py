"""Policy files: read every ``*.yaml`` of the policies folder, in name order, strictly.

A file is a mapping with one key, ``rules``: a list of rules, each::

    - id: official-to-unofficial          # unique across all files
      description: ...                    # what it does, for the admin
      basis: ...                          # the legal or practical basis
      mode: enforce                       # or audit: evaluate and log, change nothing
      valid_from: 2025-01-01              # optional, inclusive
      valid_until: 2025-12-31             # optional, inclusive
      when: {direction: outbound, ...}    # see conditions.py
      then:
        decision: reject                  # accept (default), reject, quarantine, defer
        reply: {code: 550, enhanced: 5.7.1, text: "Tiếng Việt / English"}
        tags: [channel:dms]
        headers: {X-Priority: "1"}
        archive: [luutru@binhthuan.gov.vn] # a copy to these addresses
        notify_sender: true               # tell the envelope sender (quarantine)
        redact: true                      # keep only metadata and hashes of it
        stop: true                        # accept and end the evaluation (an allow rule)

Every problem is reported as ``FILE:LINE: message``; a set with any error is
refused as a whole, so the gateway never runs half-loaded policies.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import os
import re
import string
import threading
from typing import Any, Iterable

from mailgw.config import yamlfile
from mailgw.config.yamlfile import Checker, ConfigError, Problem, YList, YMap
from mailgw.policy import conditions
from mailgw.policy.conditions import Known, Test

DECISIONS = ("accept", "reject", "quarantine", "defer")
_VERB = {"accept": "accepts (and stops at)", "reject": "rejects", "quarantine": "quarantines", "defer": "defers"}
_PAST = {"accept": "accepted", "reject": "rejected", "quarantine": "quarantined", "defer": "deferred"}
MODES = ("enforce", "audit")
# What reply texts, tags and header values may mention; filled in per message.
PLACEHOLDERS = (
    "rule", "category", "doc_type", "doc_number", "secrecy", "urgency", "sender",
    "unofficial_recipients", "dangerous_files", "encrypted_files", "damaged_files", "lookalike",
    "attachment_problems", "attachment_problems_en",  # dangerous files, and ambiguous parts with why (vi / en)
)
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}\Z")
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})\Z")
_HEADER_NAME = re.compile(r"[!-9;-~]+\Z")  # RFC 5322 ftext
_RULE_KEYS = ("id", "description", "basis", "mode", "valid_from", "valid_until", "when", "then")
_THEN_KEYS = ("decision", "reply", "tags", "headers", "archive", "notify_sender", "redact", "stop")
# Headers a rule must not set: they identify or route the message, or carry trust.
_PROTECTED_HEADERS = frozenset(
    h.lower() for h in ("From", "Sender", "To", "Cc", "Bcc", "Reply-To", "Message-ID", "Date", "Received",
                        "Return-Path", "DKIM-Signature", "Authentication-Results", "Content-Type",
                        "Content-Transfer-Encoding", "MIME-Version", "Subject")
)


@dataclasses.dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    text: str

    def detail(self) -> str:
        """The enhanced code without its class digit (replies.SmtpReply derives that from ``code``)."""
        return self.enhanced.split(".", 1)[1]


@dataclasses.dataclass(frozen=True)
class Then:
    decision: str = "accept"
    reply: Reply | None = None
    tags: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    archive: tuple[str, ...] = ()
    notify_sender: bool = False
    redact: bool = False
    stop: bool = False

    @property
    def decides(self) -> bool:
        """Whether matching ends the evaluation."""
        return self.decision != "accept" or self.stop


@dataclasses.dataclass(frozen=True)
class Rule:
    id: str
    description: str
    basis: str
    mode: str
    valid_from: datetime.date | None
    valid_until: datetime.date | None
    when: Test
    then: Then
    file: str
    line: int

    @functools.cached_property
    def memo_key(self) -> int | None:
        """A number naming the condition's canonical form when its answer depends on the message's facts
        alone (not on the tags and rules matched so far): two packs' rules with equal numbers answer alike
        on one message. None for a condition on the evaluation's own state."""
        if conditions.reads_state(self.when):
            return None
        key = self.when.key()
        with _NUMBERING:  # two threads (the console's) must never give one number to two conditions
            return _CONDITION_NUMBERS.setdefault(key, len(_CONDITION_NUMBERS))

    @functools.cached_property
    def templated(self) -> bool:
        """Whether a text of the action (a tag, a header, the reply) may hold a {placeholder}."""
        then = self.then
        texts = [*then.tags, *(v for _, v in then.headers), then.reply.text if then.reply else ""]
        return any("{" in t or "}" in t for t in texts)

    def in_force(self, day: datetime.date) -> bool:
        return (self.valid_from is None or self.valid_from <= day) and (self.valid_until is None or day <= self.valid_until)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclasses.dataclass(frozen=True)
class PolicySet:
    """The rules in force, in evaluation order, and a version naming their exact text."""

    rules: tuple[Rule, ...]
    version: str
    files: tuple[str, ...]
    warnings: tuple[Problem, ...] = ()

    def in_force(self, day: datetime.date) -> tuple[Rule, ...]:
        """The rules in force on ``day``, in order (worked out once per day: a replay asks for every exchange)."""
        days = self._days
        found = days.get(day)
        if found is None:
            found = days[day] = tuple(r for r in self.rules if r.in_force(day))
        return found

    @functools.cached_property
    def _days(self) -> dict[datetime.date, tuple[Rule, ...]]:
        return {}


# Each distinct condition a policy set holds, numbered (Rule.memo_key): a number is cheaper to look up than
# the nested form. Reloads add only conditions not seen before.
_CONDITION_NUMBERS: dict[Any, int] = {}
_NUMBERING = threading.Lock()


def load(folder: str, directory: Any = None) -> PolicySet:
    """Read every policy file of ``folder``; raise ConfigError naming every problem.

    ``directory`` (a mailgw.directory.model.Directory) lets rules name agencies and
    units, which are then checked against it.
    """
    if not os.path.isdir(folder):
        raise ConfigError([Problem(folder, 0, "the policies folder does not exist")])
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith((".yaml", ".yml")) and not f.startswith("."))
    agencies = frozenset(a.code for a in directory.agencies) if directory is not None else frozenset()
    units = frozenset(u.code for a in directory.agencies for u in a.units) if directory is not None else frozenset()
    problems: list[Problem] = []
    rules: list[Rule] = []
    first_seen: dict[str, Rule] = {}
    digest = hashlib.sha256()
    for path in files:
        try:
            with open(path, "rb") as f:
                text = f.read()
        except OSError as e:
            problems.append(Problem(path, 0, f"cannot read: {e.strerror}"))
            continue
        digest.update(os.path.basename(path).encode() + b"\0" + text + b"\0")
        c = Checker(path)
        try:
            tree = yamlfile.loads(text, path)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        for rule in _read_file(c, tree, Known(agencies, units, frozenset(first_seen))):
            if rule.id in first_seen:
                other = first_seen[rule.id]
                c.problems.append(Problem(path, rule.line, f"duplicate rule id {rule.id!r} (first at {other.where})"))
                continue
            first_seen[rule.id] = rule
            rules.append(rule)
        problems.extend(c.problems)
    problems.extend(_reachability(rules))
    if any(not p.warning for p in problems):
        raise ConfigError(problems)
    return PolicySet(
        rules=tuple(rules), version=digest.hexdigest()[:12], files=tuple(files), warnings=tuple(problems)
    )


def _read_file(c: Checker, tree: Any, known: Known) -> Iterable[Rule]:
    if tree is None:
        c.warn(None, None, "empty policy file")
        return
    if not isinstance(tree, YMap):
        c.error(None, None, "a policy file must be a mapping with a 'rules' list")
        return
    c.keys(tree, ("rules",), required=("rules",), what="a policy file")
    items = tree.get("rules")
    if items is None:
        return
    if not isinstance(items, YList):
        c.error(tree, "rules", "'rules' must be a list of rules")
        return
    ids = set(known.rule_ids)
    for i, item in enumerate(items):
        rule = _read_rule(c, item, items, i, dataclasses.replace(known, rule_ids=frozenset(ids)))
        if rule is not None:
            ids.add(rule.id)
            yield rule


def _read_rule(c: Checker, item: Any, items: YList, i: int, known: Known) -> Rule | None:
    m = c.mapping(item, items, i, "a rule")
    if m is None:
        return None
    before = len([p for p in c.problems if not p.warning])
    c.keys(m, _RULE_KEYS, required=("id", "description", "basis", "when", "then"), what="a rule")
    rule_id = c.typed(m, "id", str, "")
    if "id" in m and rule_id and not _ID.match(rule_id):
        c.error(m, "id", f"rule id {rule_id!r} must be lowercase letters, digits and '-' (like official-to-unofficial)")
    for key in ("description", "basis"):
        value = c.typed(m, key, str, "")
        if key in m and isinstance(m[key], str) and not value.strip():
            c.error(m, key, f"{key!r} must not be empty")
    mode = c.typed(m, "mode", str, "enforce")
    if mode not in MODES:
        c.error(m, "mode", f"mode must be 'enforce' or 'audit', not {mode!r}")
    valid_from = _date(c, m, "valid_from")
    valid_until = _date(c, m, "valid_until")
    if valid_from and valid_until and valid_until < valid_from:
        c.error(m, "valid_until", "valid_until is before valid_from: the rule would never be in force")
    when = conditions.compile_when(c, m["when"], m, "when", known) if "when" in m else None
    then = _read_then(c, m["then"], m) if "then" in m else None
    if len([p for p in c.problems if not p.warning]) > before or when is None or then is None:
        return None
    if isinstance(when, conditions.Always):
        if then.decides:
            c.error(m, "when", f"rule {rule_id!r} would {then.decision} every message ('always: true')")
            return None
        c.warn(m, "when", f"rule {rule_id!r} matches every message ('always: true')")
    return Rule(rule_id, m["description"].strip(), m["basis"].strip(), mode, valid_from, valid_until, when, then, c.file, m.line)


def _date(c: Checker, m: YMap, key: str) -> datetime.date | None:
    if key not in m:
        return None
    value = m[key]
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        return value
    c.error(m, key, f"{key!r} must be a date like 2025-12-31, not {value!r}")
    return None


def _read_then(c: Checker, node: Any, parent: YMap) -> Then | None:
    m = c.mapping(node, parent, "then", "'then'")
    if m is None:
        return None
    if not m:
        c.error(parent, "then", "'then' must say what to do (decision, tags, headers ...)")
        return None
    before = len(c.problems)
    c.keys(m, _THEN_KEYS, what="'then'")
    decision = c.typed(m, "decision", str, "accept")
    if decision not in DECISIONS:
        c.error(m, "decision", f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    reply = None
    if "reply" in m:
        reply = _read_reply(c, m, decision)
    elif decision == "reject":
        c.error(m, "decision", "a reject needs a 'reply' (code, enhanced, text in Vietnamese then English)")
    tags = _strings(c, m, "tags")
    for t in tags:
        if not re.fullmatch(r"[A-Za-z0-9:_.{}\-]+", t):
            c.error(m, "tags", f"tag {t!r} may hold only letters, digits and : _ . - (and {{placeholders}})")
        _placeholders(c, m, "tags", t)
    headers: list[tuple[str, str]] = []
    if "headers" in m:
        h = c.mapping(m["headers"], m, "headers", "'headers'")
        for name, value in (h or {}).items():
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                c.error(h, name, f"{name!r} is not a header field name")
            elif name.lower() in _PROTECTED_HEADERS:
                c.error(h, name, f"a rule may not set {name}: it identifies, routes or vouches for the message")
            elif not isinstance(value, (str, int)) or isinstance(value, bool) or "\n" in str(value) or "\r" in str(value):
                c.error(h, name, f"the value of {name} must be one line of text")
            else:
                _placeholders(c, h, name, str(value))
                headers.append((name, str(value)))
    archive = _strings(c, m, "archive")
    for a in archive:
        if a.count("@") != 1 or a.startswith("@") or a.endswith("@") or any(ch.isspace() for ch in a):
            c.error(m, "archive", f"archive takes e-mail addresses, not {a!r}")
    notify = c.typed(m, "notify_sender", bool, False)
    redact = c.typed(m, "redact", bool, False)
    stop = c.typed(m, "stop", bool, False)
    if stop and decision != "accept":
        c.error(m, "stop", "'stop' is for accept rules: reject, quarantine and defer always end the evaluation")
    if archive and decision in ("reject", "defer"):
        c.error(m, "archive", f"nothing is kept of a message that is {_PAST[decision]}: archive needs accept or quarantine")
    if notify and decision in ("reject", "defer"):
        c.error(m, "notify_sender", "the SMTP reply already tells the sender of a reject or defer")
    if len(c.problems) > before and any(not p.warning for p in c.problems[before:]):
        return None
    return Then(decision, reply, tuple(tags), tuple(headers), tuple(a.lower() for a in archive), notify, redact, stop)


def _read_reply(c: Checker, m: YMap, decision: str) -> Reply | None:
    r = c.mapping(m["reply"], m, "reply", "'reply'")
    if r is None:
        return None
    if decision not in ("reject", "defer"):
        c.error(m, "reply", f"a reply is only sent for reject or defer; a message that is {_PAST.get(decision, decision)} gets 250")
        return None
    c.keys(r, ("code", "enhanced", "text"), required=("code", "enhanced", "text"), what="'reply'")
    code = c.typed(r, "code", int, 0)
    enhanced = str(r.get("enhanced", ""))
    text = c.typed(r, "text", str, "")
    if "code" in r and code:
        if decision == "reject" and not 550 <= code <= 554:
            c.error(r, "code", f"a reject takes a 55x code (550 ... 554), not {code}")
        if decision == "defer" and not 450 <= code <= 454:
            c.error(r, "code", f"a defer takes a 45x code (450 ... 454), not {code}")
    match = _ENHANCED.match(enhanced)
    if "enhanced" in r:
        if not match:
            c.error(r, "enhanced", f"enhanced must be an RFC 3463 code like 5.7.1, not {r['enhanced']!r}")
        elif code and match.group(1) != str(code)[0]:
            c.error(r, "enhanced", f"enhanced code {enhanced} does not go with {code}: its first digit must be {str(code)[0]}")
    if "text" in r:
        if not text.strip() or "\n" in text.strip() or "\r" in text:
            c.error(r, "text", "the reply text must be one line (Vietnamese first, then English)")
        elif " / " not in text:
            c.warn(r, "text", "a reply text should be in Vietnamese, then ' / ', then English")
        _placeholders(c, r, "text", text)
    return Reply(code, enhanced, " ".join(text.split()))


def _strings(c: Checker, m: YMap, key: str) -> list[str]:
    if key not in m:
        return []
    value = m[key]
    items = list(value) if isinstance(value, list) else [value]
    if not all(isinstance(x, str) and x for x in items):
        c.error(m, key, f"{key!r} takes a string or a list of strings")
        return []
    return items


def _placeholders(c: Checker, where: YMap, key: Any, text: str) -> None:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as e:
        c.error(where, key, f"bad {{placeholder}} in {text!r}: {e}")
        return
    for name in names:
        if name not in PLACEHOLDERS:
            c.error(where, key, f"unknown placeholder {{{name}}} (known: {', '.join(PLACEHOLDERS)})")


def _reachability(rules: list[Rule]) -> list[Problem]:
    """Rules that can never match: an earlier enforced rule that decides matches every message they would.

    "Every message" is shown by ``conditions.implies``: the later rule's conditions imply the
    earlier one's (the same conditions and more, or narrower ones: ``secrecy: [mat]`` after
    ``secrecy: [mat, toi_mat, tuyet_mat]``). It claims only what is certain, so a rule reported
    here really never matches; a rule it cannot judge is not reported. Rules with validity dates
    do not shadow (they are not always in force), nor do rules in audit mode (they decide nothing).
    """
    problems = []
    deciders: list[Rule] = []
    for rule in rules:
        for earlier in deciders:
            if conditions.implies(rule.when, earlier.when):
                problems.append(Problem(
                    rule.file, rule.line,
                    f"rule {rule.id!r} can never match: rule {earlier.id!r} ({earlier.where}) above it "
                    f"{_VERB[earlier.then.decision]} every message this one would match",
                ))
                break
        if rule.mode == "enforce" and rule.then.decides and rule.valid_from is None and rule.valid_until is None:
            deciders.append(rule)
    return problems
