"""A bounded fuzz session of the SMTP edge: random dialogues and random message content (hypothesis).

Run from the repository root:   .venv/bin/python bench/fuzz_edge.py [--examples N] [--seed S]

It starts the demo gateway (``gateway.yaml``, its listeners moved to ports of
its own, spool and log in a scratch directory, mail delivered to Maildir) as
``mailgw serve`` in a process of its own, then drives the mx and relay
listeners over loopback sockets with hypothesis-made sessions: commands in any
order with random arguments, over-long and non-ASCII lines, and DATA with
random header fields, From values, MIME nesting, NUL and bare line endings.
Every reply is checked and counted. It reports, and exits 1 if any is not 0:

- crashes: the gateway process died, or a session was cut without a reply;
- replies naming an exception (a Python class name or a traceback);
- malformed replies (not ``NNN`` + space or dash, a line over 512 octets,
  non-ASCII where the client did not say SMTPUTF8);
- 451/4.3.0 ("our own fault") for a message that is merely strange;
- tracebacks in the gateway's log.

Not in the default test suite: a run of 2,000 examples takes a few minutes.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
PORTS = {"mx": 22525, "relay": 22526, "submission": 22587}
LOCAL = "vanthu.snv@binhthuan.gov.vn"
SENDER = "vanthu.sotttt@binhthuan.gov.vn"
_EXCEPTION = re.compile(r"Traceback|Error\(|Exception|\w+Error\b")
_REPLY = re.compile(rb"^[2-5]\d\d[ -]")

counts: collections.Counter[str] = collections.Counter()
problems: list[str] = []

addresses = st.one_of(
    st.sampled_from([LOCAL, SENDER, "a@example.com", "", "<>", "x@[127.0.0.1]", "a%b@binhthuan.gov.vn",
                     "người@binhthuan.gov.vn", "a@b@c", "@binhthuan.gov.vn:x@y", '"a@b"@binhthuan.gov.vn']),
    st.text(min_size=0, max_size=80).filter(lambda t: "\r" not in t and "\n" not in t),
)
verbs = st.sampled_from(["EHLO", "HELO", "MAIL FROM:", "RCPT TO:", "DATA", "RSET", "NOOP", "VRFY", "EXPN",
                         "HELP", "STARTTLS", "AUTH PLAIN", "AUTH LOGIN", "BDAT", "XCLIENT", "QUIT", ""])
commands = st.tuples(verbs, addresses, st.sampled_from(["", " SIZE=100", " SMTPUTF8", " BODY=8BITMIME",
                                                         " SIZE=99999999999", " FOO=BAR"]))
field_names = st.sampled_from(["To", "Subject", "Sender", "Resent-From", "Content-Type",
                               "Content-Transfer-Encoding", "MIME-Version", "Received", "DKIM-Signature",
                               "From ", "from\t", "X-GovVN-Secrecy", "Message-ID"])
field_values = st.one_of(
    st.text(max_size=200).map(lambda t: t.replace("\r", " ").replace("\n", " ")),
    st.sampled_from(['multipart/mixed; boundary="b"', "base64", "=?utf-8?b?w6E=?=", "(((((a@b.vn", "a@b.vn, c@d.vn",
                     "undisclosed-recipients:;", '"x@y.vn" <z@w.vn>', "MẬT", "HỎA TỐC"]),
)
bodies = st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=2000).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(1, 300).map(lambda n: b"".join(b'--b\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n' for _ in range(n))),
)


def _dialog(sock: socket.socket, line: bytes, utf8: bool) -> bytes | None:
    sock.sendall(line)
    return _read_reply(sock, utf8)


def _read_reply(sock: socket.socket, utf8: bool) -> bytes | None:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            return None
        if not chunk:
            return data or None
        data += chunk
        lines = data.split(b"\r\n")
        complete = lines[:-1]
        if complete and complete[-1][3:4] == b" " and lines[-1] == b"":
            for line in complete:
                _check_line(line, utf8)
            return data


def _check_line(line: bytes, utf8: bool) -> None:
    counts["reply lines"] += 1
    if not _REPLY.match(line) or len(line) + 2 > 512:
        problems.append(f"malformed reply line: {line[:120]!r}")
    if not utf8 and not line.isascii():
        problems.append(f"non-ASCII reply without SMTPUTF8: {line[:120]!r}")
    text = line.decode("utf-8", "replace")
    if _EXCEPTION.search(text):
        problems.append(f"reply names an exception: {text[:160]}")


def _session(listener: str, script: list[tuple[str, str, str]]) -> None:
    with socket.create_connection(("127.0.0.1", PORTS[listener]), timeout=20) as sock:
        if _read_reply(sock, False) is None:
            problems.append("no greeting")
            return
        utf8 = False
        for verb, arg, option in script:
            if verb in ("MAIL FROM:", "RCPT TO:"):
                line = f"{verb}<{arg}>{option}"
                utf8 = utf8 or (verb == "MAIL FROM:" and "SMTPUTF8" in option)
            elif verb in ("EHLO", "HELO"):
                line = f"{verb} {arg or 'client.test'}"
            else:
                line = f"{verb} {arg}".rstrip() if verb else arg
            reply = _dialog(sock, line.encode("utf-8", "surrogatepass") + b"\r\n", utf8)
            counts["commands"] += 1
            if reply is None:
                if verb != "QUIT":
                    counts["closed by the gateway"] += 1
                return
            if verb == "DATA" and reply.startswith(b"354"):
                reply = _dialog(sock, b"Subject: fuzz\r\n\r\nbody\r\n.\r\n", utf8)
                if reply is None:
                    problems.append("cut without a reply after DATA")
                    return


def _message(listener: str, fields: list[tuple[str, str]], body: bytes) -> None:
    base = [("From", SENDER), ("To", LOCAL)]  # an author, so that most messages reach the deeper stages
    head = "".join(f"{n}: {v}\r\n" for n, v in base + fields).encode("utf-8", "surrogatepass")
    data = head + b"\r\n" + body
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    with socket.create_connection(("127.0.0.1", PORTS[listener]), timeout=60) as sock:
        _read_reply(sock, False)
        for line in (b"EHLO fuzz.test", f"MAIL FROM:<{SENDER}> SMTPUTF8".encode(), f"RCPT TO:<{LOCAL}>".encode(), b"DATA"):
            reply = _dialog(sock, line + b"\r\n", True)
            if reply is None:
                problems.append(f"cut without a reply to {line!r}")
                return
            if reply[:1] not in b"23":
                counts[f"refused before DATA {reply[:3].decode()}"] += 1
                return
        reply = _dialog(sock, data + b".\r\n", True)
        counts["messages"] += 1
        if reply is None:
            problems.append(f"cut without a reply to DATA ({len(data)} bytes)")
            return
        code = reply[:3].decode()
        counts[f"DATA {code}"] += 1
        if reply.startswith(b"451 4.3.0"):
            problems.append(f"451 4.3.0 (our fault) for a strange message: {data[:200]!r}")
        _dialog(sock, b"QUIT\r\n", True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=1000, help="sessions and messages each (default 1000)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mailgw-fuzz-"))
    try:
        for name in ("directory.yaml", "credentials.yaml"):
            shutil.copy(ROOT / name, work / name)
        shutil.copytree(ROOT / "policies", work / "policies")
        conf = yaml.safe_load((ROOT / "gateway.yaml").read_text())
        for listener in conf["listeners"]:
            listener["listen"] = f"127.0.0.1:{PORTS[listener['name']]}"
        conf["database"], conf["spool"] = "sqlite:///var/mailgw.db", "var/spool"
        conf["routes"] = {"local": "maildir:var/mail/local", "remote": "maildir:var/mail/remote"}
        conf.setdefault("limits", {}).update({"connections_per_ip": 1000, "commands": 100000})
        (work / "gateway.yaml").write_text(yaml.safe_dump(conf, allow_unicode=True))
        log = open(work / "gateway.log", "wb")
        gw = subprocess.Popen([sys.executable, "-m", "mailgw", "serve", "--config", str(work / "gateway.yaml")],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", PORTS["relay"]), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or gw.poll() is not None:
                    print("the gateway did not start; its log:\n" + (work / "gateway.log").read_text()[-3000:])
                    return 1
                time.sleep(0.2)
        started = time.monotonic()
        common = settings(max_examples=args.examples, deadline=None, database=None, derandomize=False,
                          suppress_health_check=list(HealthCheck))

        @seed(args.seed)
        @common
        @given(st.sampled_from(["mx", "relay"]), st.lists(commands, max_size=12))
        def dialogues(listener: str, script: list[tuple[str, str, str]]) -> None:
            _session(listener, script)

        @seed(args.seed)
        @common
        @given(st.sampled_from(["mx", "relay"]), st.lists(st.tuples(field_names, field_values), max_size=12), bodies)
        def messages(listener: str, fields: list[tuple[str, str]], body: bytes) -> None:
            _message(listener, fields, body)

        dialogues()
        messages()
        elapsed = time.monotonic() - started
        alive = gw.poll() is None
        gw.terminate()
        gw.wait(60)
        log.close()
        text = (work / "gateway.log").read_text(errors="replace")
        tracebacks = text.count("Traceback")
        if not alive:
            problems.append("the gateway process died")
        if tracebacks:
            kinds = collections.Counter(re.findall(r"\n(\w[\w.]*(?:Error|Exception|Warning)\b[^\n]{0,80})", text))
            problems.append(f"{tracebacks} traceback(s) in the gateway's log: " + "; ".join(
                f"{n} x {k}" for k, n in kinds.most_common(5)))
        print(f"fuzz: {args.examples} dialogues + {args.examples} messages (seed {args.seed}) in {elapsed:.0f} s")
        for key, value in sorted(counts.items()):
            print(f"  {key}: {value}")
        print(f"  crashes: {int(not alive)}, problems: {len(problems)}")
        for p in problems[:20]:
            print("  - " + p)
        return 1 if problems else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
