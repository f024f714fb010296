"""A gateway home for the console's tests: its settings with ``console:``, accounts, and a log the gateway wrote.

The exchange log holds (1) a month of exchanges decided by the gateway's own
pipeline with the shipped policies and directory (tests/made_records.py: only the
arrival times are chosen), and (2) what a real gateway run wrote: a message from a
look-alike domain sent over SMTP to the mx listener, held by rule
``lookalike-domain`` and left in the spool's hold, and an internal letter queued
for delivery. Accounts: an auditor of every agency, an auditor of Sở Nội vụ
(``snv``) only, and an admin. A candidate policy folder puts
``official-to-unofficial`` in audit mode (the replay's changed rule).
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import argon2
import trustme
import yaml

from mailgw.app import Gateway
from mailgw.audit.log import AuditLog
from tests.conftest import PASSWORD, message, send, write_config
from tests.made_records import MIC, SNV, STC, STTTT, letter, made

CITIZEN = "dan@gmail.com"
LOOKALIKE = "thongbao@binhthuan-gov.vn"
NAMES = {"kiemtra": "Thanh tra tỉnh", "kiemtra.snv": "Kiểm tra Sở Nội vụ", "quantri": "Quản trị cổng thư"}
PASSWORDS = {"kiemtra": "kiểm-tra-mật-khẩu-1", "kiemtra.snv": "sở-nội-vụ-mật-khẩu-2", "quantri": "quản-trị-mật-khẩu-3"}


# argon2id at its smallest costs: the tests log in dozens of times, and a hash names its own
# parameters, which verification follows (`mailgw passwd` makes the real ones: 64 MiB, 3 passes).
hash_password = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash


@dataclasses.dataclass
class Home:
    path: Path
    settings: Path
    ca: trustme.CA
    held: str  # the id of the message the live gateway held
    queued: str  # the id of the internal letter it queued
    ids: dict[str, str]  # name -> exchange id of the month's records

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path / "mailgw.db")

    def access(self) -> list[tuple[str, dict[str, Any]]]:
        """The access log: (command, args) in order."""
        import json

        with self.db() as c:
            return [(cmd, json.loads(args)) for cmd, args in c.execute("SELECT command, args FROM audit_access ORDER BY seq")]

    def deliveries(self, xid: str) -> list[tuple[str, str]]:
        with self.db() as c:
            return list(c.execute("SELECT status, reply FROM audit_delivery WHERE exchange_id = ? ORDER BY seq", (xid,)))


def build(tmp: Path) -> Home:
    ca = trustme.CA()
    (tmp / "answers.zone").write_text("\n")
    users = {
        "kiemtra": {"password": hash_password(PASSWORDS["kiemtra"]), "role": "auditor", "name": "Thanh tra tỉnh"},
        "kiemtra.snv": {"password": hash_password(PASSWORDS["kiemtra.snv"]), "role": "auditor", "scope": ["snv"],
                        "name": "Kiểm tra Sở Nội vụ"},
        "quantri": {"password": hash_password(PASSWORDS["quantri"]), "role": "admin", "name": "Quản trị cổng thư"},
    }
    (tmp / "console-users.yaml").write_text(yaml.safe_dump({"users": users}, allow_unicode=True), encoding="utf-8")
    settings = write_config(tmp, 9, ca, hash_password(PASSWORD), dns={"answers": "answers.zone"},
                            console={"listen": "127.0.0.1:0", "users": "console-users.yaml",
                                     "candidates": "candidates"})
    candidate = tmp / "candidates" / "official-to-unofficial-audit"
    shutil.copytree(tmp / "policies", candidate)
    rules = candidate / "20-official.yaml"
    rules.write_text(rules.read_text(encoding="utf-8").replace(
        "  - id: official-to-unofficial\n", "  - id: official-to-unofficial\n    mode: audit\n", 1), encoding="utf-8")

    from mailgw.app import load_context

    ctx, _ = load_context(str(settings))
    month = [
        ("sotttt-mic", "2025-03-05T02:00:00Z", "relay",
         letter("Giấy mời họp giao ban tháng 3", STTTT, MIC), STTTT, [MIC]),
        ("sotttt-citizen", "2025-03-06T03:00:00Z", "relay",
         letter("Công văn số 15/STTTT-VP về việc cung cấp thông tin", STTTT, CITIZEN), STTTT, [CITIZEN]),
        ("snv-stc", "2025-03-10T04:00:00Z", "relay",
         letter("Kế hoạch số 20/KH-SNV về thi đua khen thưởng", SNV, STC), SNV, [STC]),
        ("citizen-snv", "2025-03-12T05:00:00Z", "mx", letter("Hỏi về thủ tục tuyển dụng", CITIZEN, SNV),
         CITIZEN, [SNV]),
        ("stc-mic", "2025-03-20T06:00:00Z", "relay", letter("Báo cáo tài chính quý I", STC, MIC), STC, [MIC]),
    ]
    records = [made(ctx, f"M-{name}", when, listener, raw, frm, to) for name, when, listener, raw, frm, to in month]
    log = AuditLog.open(ctx.settings.database, "gw1")
    log.append(records)
    log.close()

    held, queued = asyncio.run(_live_run(str(settings)))
    return Home(tmp, settings, ca, held, queued, {name: f"M-{name}" for name, *_ in month})


async def _live_run(settings: str) -> tuple[str, str]:
    """The real gateway: one look-alike message held, one internal letter queued; both in its exchange log."""
    gw = Gateway(settings)
    await gw.start()
    try:
        reply = await send(gw, "mx", message(subject="Thông báo khẩn về lịch họp", sender=LOOKALIKE, to=SNV),
                           LOOKALIKE, [SNV])
        held = str(reply[1].rsplit(" ", 1)[1])
        assert gw.spool.locate(held) == "hold"
        reply = await send(gw, "relay", message(subject="Lịch công tác tuần", sender=STTTT, to=SNV), STTTT, [SNV])
        queued = str(reply[1].rsplit(" ", 1)[1])
    finally:
        await gw.drain()
    db = Path(settings).parent / "mailgw.db"
    deadline = time.monotonic() + 15
    while True:  # the log writer commits in its own thread; drain waits for it, this only confirms
        with sqlite3.connect(db) as c:
            n = c.execute("SELECT count(*) FROM audit_exchange WHERE id IN (?, ?)", (held, queued)).fetchone()[0]
        if n == 2:
            return held, queued
        assert time.monotonic() < deadline, "the gateway's records never reached its log"
        await asyncio.sleep(0.05)
