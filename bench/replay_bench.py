"""`mailgw policy replay` at scale: a month of 100,000 exchanges against a candidate pack.

    python bench/replay_bench.py                         # 100,000 exchanges, 2,000 distinct messages
    python bench/replay_bench.py --count 20000 --profile # and where the replay's time goes

The records are the gateway's own: each distinct message (a clerk's letter, an
invitation with a signed or unsigned PDF, a citizen's question, a lookalike
domain, a secret report, a HỎA TỐC telegram ...) between parties of the demo
directory goes through the real pipeline and :func:`mailgw.audit.record.build`
(tests/made_records.py ``made``), then the log holds ``--count`` exchanges, each
one of those records under its own id and arrival time spread over March 2025
(what ``made_records.like`` does for the tests), appended through
``AuditLog.append`` so every record is hashed and chained as in production.
(bench/make_month.py's records are shaped by hand and only decoded through the
model, so a replay of them would test our guess of what the gateway writes.)

The candidate is the shipped pack with ``official-to-unofficial`` put in audit
mode (the first change an admin tries). The replay runs as an admin runs it,
``mailgw policy replay --candidate DIR --json`` in a process of its own, and
its wall-clock and CPU time are printed, with the machine's load (on a shared
machine the wall-clock time is the CPU time stretched by the other jobs); ``--profile`` then runs the same replay in this
process under cProfile and prints the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import os
import pathlib
import pstats
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailgw.audit.log import AuditLog  # noqa: E402
from tests import attachment_fixtures as fx  # noqa: E402
from tests.made_records import gateway_context, letter, made  # noqa: E402  (the gateway's own records)

LOCAL = ["vanthu@binhthuan.gov.vn", "vp@binhthuan.gov.vn", "vanthu.sotttt@binhthuan.gov.vn",
         "vp.sotttt@binhthuan.gov.vn", "cbcc.sotttt@binhthuan.gov.vn", "vanthu.snv@binhthuan.gov.vn",
         "tdkt.snv@binhthuan.gov.vn", "vanthu.stc@binhthuan.gov.vn", "ketoan@binhthuan.gov.vn",
         "vanthu.skhdt@binhthuan.gov.vn", "dkkd.skhdt@binhthuan.gov.vn", "motcua@binhthuan.gov.vn"]
OFFICIAL = ["vanthu@mic.gov.vn", "vp@danang.gov.vn", "vanthu@moha.gov.vn", "vanthu@ninhthuan.gov.vn"]
OUTSIDE = ["dan{n}@gmail.com", "contact@congtyabc.com.vn", "info@thanhcong.vn", "ubnd.xatanthanh.htn@gmail.com"]
LOOKALIKE = ["vanthu@blnhthuan.gov.vn", "vp@binhthuan-gov.vn"]
SUBJECTS = [
    ("Trao đổi công việc tuần này", None),
    ("Công văn số {n}/STTTT-VP về việc cung cấp thông tin", None),
    ("Giấy mời họp giao ban", "GIAY MOI\nSo: {n}/GM-STTTT"),
    ("Báo cáo số {n}/BC-STC tình hình thu chi quý I", "BAO CAO\nSo: {n}/BC-STC"),
    ("Kế hoạch số {n}/KH-SNV triển khai công tác năm 2025", "KE HOACH\nSo: {n}/KH-SNV"),
    ("HỎA TỐC - Công điện số {n}/CĐ-UBND về phòng chống bão", None),
    ("THƯỢNG KHẨN - Công văn số {n}/UBND-KT", None),
    ("Lịch công tác tuần", None),
    ("Xin ý kiến dự thảo quy chế", None),
    ("Hỏi về thủ tục cấp phép", None),
    ("MẬT - Báo cáo số {n}/BC-STC", None),
    ("Gửi tài liệu", None),
]


def distinct_records(home: pathlib.Path, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` records the pipeline and the record builder made, of varied parties and documents."""
    ctx = gateway_context(home)
    ca = fx.TestCA()
    pdfs: dict[tuple[int, bool], bytes] = {}
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        kind = rnd.random()
        if kind < 0.45:  # inside the province and out to other agencies
            sender, listener = rnd.choice(LOCAL), "relay"
            to = rnd.choice(LOCAL + OFFICIAL + OUTSIDE).format(n=rnd.randrange(500))
        elif kind < 0.95:  # inbound from the Internet
            sender = rnd.choice(OFFICIAL + OUTSIDE).format(n=rnd.randrange(500))
            to, listener = rnd.choice(LOCAL), "mx"
        else:
            sender, to, listener = rnd.choice(LOOKALIKE), rnd.choice(LOCAL), "mx"
        s, doc = rnd.choice(SUBJECTS)
        number = rnd.randrange(1, 999)
        body = "Kính gửi Quý cơ quan,\r\nNội dung như trên.\r\n"
        if s.startswith("MẬT"):
            body = "MẬT\r\nBáo cáo tình hình.\r\n"
        elif s == "Gửi tài liệu":
            body = "Gửi kèm tài liệu mật để tham khảo.\r\n"
        pdf = None
        if doc and rnd.random() < 0.7:
            which = (SUBJECTS.index((s, doc)), rnd.random() < 0.5)
            if which not in pdfs:
                plain = fx.pdf_plain(doc.format(n=7))
                pdfs[which] = ca.sign_pdf(plain) if which[1] else plain
            pdf = pdfs[which]
        raw = letter(s.format(n=number), sender, to, body=body, pdf=pdf, filename=f"{number}.pdf")
        out.append(made(ctx, f"D{i:05d}", "2025-03-01T00:00:00Z", listener, raw, sender, [to]))
    return out


def fill(url: str, distinct: list[dict[str, Any]], count: int, seed: int, batch: int = 2000) -> None:
    """``count`` exchanges over March 2025 (Vietnam time), each a distinct record under its own id and time."""
    rnd = random.Random(seed)
    start = dt.datetime(2025, 2, 28, 17, tzinfo=dt.timezone.utc)
    times = sorted(rnd.random() * 31 * 86400 for _ in range(count))
    log = AuditLog.open(url, "gw1")
    buf: list[dict[str, Any]] = []
    for i, offset in enumerate(times):
        when = (start + dt.timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        buf.append({**distinct[rnd.randrange(len(distinct))], "id": f"R{i:08d}", "time": when})
        if len(buf) >= batch:
            log.append(buf)
            buf = []
    if buf:
        log.append(buf)
    log.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--distinct", type=int, default=2000, help="messages through the pipeline (default 2000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--home", help="keep the gateway's folder and log here (reused when it holds a log)")
    ap.add_argument("--profile", action="store_true", help="then replay in this process under cProfile")
    args = ap.parse_args(argv)
    home = pathlib.Path(args.home or tempfile.mkdtemp(prefix="mailgw-replay-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "mailgw.db").exists():
        t0 = time.perf_counter()
        distinct = distinct_records(home, args.distinct, args.seed)
        t1 = time.perf_counter()
        fill(f"sqlite:///{home}/mailgw.db", distinct, args.count, args.seed)
        print(f"{args.distinct} messages through the pipeline in {t1 - t0:.1f} s; {args.count} exchanges "
              f"appended in {time.perf_counter() - t1:.1f} s ({home})", file=sys.stderr)
    candidate = home / "candidate"
    if not candidate.exists():
        shutil.copytree(home / "policies", candidate)
        path = candidate / "20-official.yaml"
        path.write_text(path.read_text(encoding="utf-8").replace(
            "  - id: official-to-unofficial\n", "  - id: official-to-unofficial\n    mode: audit\n", 1), encoding="utf-8")
    command = [sys.executable, "-m", "mailgw", "policy", "replay", "--config", str(home / "gateway.yaml"),
               "--candidate", str(candidate), "--json"]
    t0, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    took, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if run.returncode != 0:
        print(run.stderr, file=sys.stderr)
        return 1
    summary = json.loads(run.stdout.splitlines()[-1])["summary"]
    print(f"policy replay: {summary['replayed']} replayed, {sum(summary['skipped'].values())} skipped, "
          f"{summary['changed']} changed, {summary['differs_from_record']} differ from the record; "
          f"{took:.1f} s wall-clock, {cpu:.1f} s CPU (the whole command: start, policies, directory, reads, "
          f"both packs); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  decisions before {summary['decisions']['before']}")
    print(f"  decisions after  {summary['decisions']['after']}")
    if args.profile:
        from mailgw.cli import main as cli_main

        prof = cProfile.Profile()
        prof.enable()
        cli_main([*command[3:-1], "--show", "0"])
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
