"""CPU time of each pipeline stage (and the decision record) for the messages of the Postfix bench.

Run from the repository root:  python bench/stages.py [--message text5k|pdf200k|smtpsource] [--iterations N]

smtpsource is what the bench's smtp-source load sends: Subject "Bao cao tuan" and
5 KB of ASCII lines, no MIME header (made here, like smtp-source makes it).

The settings are the bench's: the repository's directory and shipped policies,
an Ed25519 signing key (--key rsa: RSA-2048), the relay listener. Times are thread CPU time, so
they hold on a busy machine; what a stage waits for (a PDF worker) is not in them.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import shutil  # noqa: E402

import postfix_vs_mailgw as bench  # noqa: E402
import yaml  # noqa: E402

from mailgw import pipeline  # noqa: E402
from mailgw.app import load_context  # noqa: E402
from mailgw.audit import record  # noqa: E402
from mailgw.dkim import keygen  # noqa: E402
from mailgw.message.model import Envelope, Message, new_id  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--message", choices=("text5k", "pdf200k", "smtpsource"), default="text5k")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--key", choices=("rsa", "ed25519"), default="ed25519",
                        help="the signing key's algorithm (the Postfix bench signs with ed25519)")
    parser.add_argument("--profile", metavar="N", type=int, default=0,
                        help="also print the N functions with the most own time (cProfile, over the measured messages)")
    parser.add_argument("--callers", nargs="*", default=[], metavar="NAME",
                        help="with --profile: also print who calls the functions matching these names")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        shutil.copy(ROOT / "directory.yaml", home / "directory.yaml")
        shutil.copytree(ROOT / "policies", home / "policies")
        key, _ = keygen(bench.DOMAIN, bench.SELECTOR, args.key, home / "keys")
        (home / "gateway.yaml").write_text(yaml.safe_dump({
            "hostname": "mailgw.bench.test", "directory": "directory.yaml", "policies": "policies",
            "database": "sqlite:///audit.db", "spool": "spool",
            "listeners": [{"name": "relay", "role": "relay", "listen": "127.0.0.1:2525", "trusted_networks": ["127.0.0.0/8"]}],
            "routes": {"local": "smtp://127.0.0.1:2526", "remote": "smtp://127.0.0.1:2526"},
            "dkim": [{"domain": bench.DOMAIN, "selector": bench.SELECTOR, "key": str(key)}],
        }))
        ctx, _ = load_context(str(home / "gateway.yaml"))
        template = smtp_source_message() if args.message == "smtpsource" else bench.MESSAGES[args.message]()
        spent: collections.Counter[str] = collections.Counter()

        def one(i: int, count: bool) -> None:
            env = Envelope(mail_from=bench.SENDER, rcpts=[bench.RECIPIENT], listener="relay", role="relay",
                           client_ip="127.0.0.1", helo="client.bench.test")
            message = Message(new_id(), env, template.replace(b"@@ID@@", b"%d" % i))
            for stage in pipeline.STAGES:
                started = time.thread_time()
                stage(message, ctx)
                if count:
                    spent[stage.__module__.rpartition(".")[2]] += time.thread_time() - started
            started = time.thread_time()
            record.build(message, ctx, "250 2.0.0 queued").to_json()  # as the edge does: the JSON form is spooled
            if count:
                spent["(decision record)"] += time.thread_time() - started

        for i in range(20):  # warm up: imports, caches, the PDF worker pool
            one(i, False)
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        for i in range(args.iterations):
            one(i, True)
        if profiler:
            profiler.disable()
    n = args.iterations
    print(f"{args.message}: {len(template)} bytes, {args.key} key; CPU per message, mean of {n}")
    for name, seconds in spent.most_common():
        print(f"  {seconds / n * 1000:7.3f} ms  {name}")
    print(f"  {sum(spent.values()) / n * 1000:7.3f} ms  total")
    if profiler:
        stats = pstats.Stats(profiler).sort_stats("tottime")
        stats.print_stats(args.profile)
        if args.callers:
            for name in args.callers:
                stats.print_callers(name)


def smtp_source_message(size: int = 5120) -> bytes:
    """A message like Postfix's smtp-source sends with ``-S "Bao cao tuan" -l 5120``: a few headers, ASCII lines."""
    head = (f"From: <{bench.SENDER}>\r\nTo: <{bench.RECIPIENT}>\r\nDate: Mon, 16 Mar 2026 08:30:00 +0700\r\n"
            "Message-Id: <@@ID@@@client.bench.test>\r\nSubject: Bao cao tuan\r\n\r\n")
    lines = ["".join(chr(ord("a") + (n + i) % 26) for i in range(78)) for n in range(size // 80 + 1)]
    return (head + "\r\n".join(lines) + "\r\n").encode()


if __name__ == "__main__":
    main()
