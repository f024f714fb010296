"""Cost of the policy stage per message: building the facts and running the shipped pack.

    .venv/bin/python bench/policy.py [--n 2000]

Prints the median and p95 CPU time per message for an internal message, an
outbound one to a private address (rejected by rule 4), and an inbound one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mailgw.app import load_context  # noqa: E402
from mailgw.message.model import Envelope, Message, new_id  # noqa: E402
from mailgw.stages import author, classify, parse, policy  # noqa: E402

CASES = {
    "internal": ("relay", "vanthu.sotttt@binhthuan.gov.vn", ["vanthu.snv@binhthuan.gov.vn"], "Kế hoạch số 112/KH-STTTT"),
    "outbound-private": ("relay", "nvan@binhthuan.gov.vn", ["nvan.canhan@gmail.com"], "Fwd: Quyết định số 25/QĐ-UBND"),
    "inbound": ("mx", "vanthu@mic.gov.vn", ["vanthu.snv@binhthuan.gov.vn"], "Quyết định 123/QĐ-BTTTT"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    ctx, _ = load_context(str(REPO / "gateway.yaml"))
    print(f"{'case':18} {'median ms':>10} {'p95 ms':>8}  decision")
    for name, (listener, sender, rcpts, subject) in CASES.items():
        raw = (f"From: {sender}\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\nMessage-ID: <b@x>\r\n\r\n" + "Nội dung.\r\n" * 200).encode()
        times = []
        for _ in range(args.n):
            m = Message(new_id(), Envelope(sender, rcpts, listener, listener, "127.0.0.1"), raw)
            for stage in (parse.run, author.run, classify.run):
                stage(m, ctx)
            t0 = time.process_time()
            policy.run(m, ctx)
            times.append((time.process_time() - t0) * 1000)
        times.sort()
        print(f"{name:18} {statistics.median(times):10.3f} {times[int(len(times) * 0.95)]:8.3f}  {m.verdict.kind} ({m.verdict.rule})")


if __name__ == "__main__":
    main()
