"""A serving process pays for its first-use imports and its PDF readers before its listeners open, then freezes what it made.

Without mailgw.warmup the first message with a PDF imported pypdf (with PIL and
fontTools) and started the PDF reader's worker processes while every session of
the process waited (hundreds of milliseconds). Here a real gateway is started in
a fresh interpreter (a child process: this one has imported everything already),
and a real client sends it a message with a PDF (made by the classification corpus'
generator) and one of plain text: neither may import a module or start a worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO, message, write_config

CHILD = r"""
import asyncio, gc, json, sys
from pathlib import Path
import aiosmtplib
from mailgw import app
from mailgw.app import Gateway
from mailgw.classify import docread

async def main():
    gw = Gateway(sys.argv[1])
    gw.freeze_gc = True  # as `mailgw serve` does
    await gw.start()
    frozen_at_start = gc.get_freeze_count()
    pool = docread._pool()
    at_start = {"idle": len(pool._idle), "running": pool._running, "size": pool.size, "available": pool.available}
    port = gw.addresses["relay"][1]
    before = set(sys.modules)
    replies = []
    for raw in (Path(sys.argv[2]).read_bytes(), Path(sys.argv[3]).read_bytes()):
        _, reply = await aiosmtplib.send(raw, sender="vanthu.sotttt@binhthuan.gov.vn", recipients=["vanthu@hanoi.gov.vn"],
                                         hostname="127.0.0.1", port=port, start_tls=False)
        replies.append(reply)
    imported = sorted(set(sys.modules) - before)
    after = {"idle": len(pool._idle), "running": pool._running}
    app.REFREEZE_AFTER = 0.05
    reloaded = gw.reload()
    after_reload = gc.get_freeze_count()
    for _ in range(500):  # the timer set by the reload freezes again
        if gc.get_freeze_count():
            break
        await asyncio.sleep(0.01)
    frozen = {"at_start": frozen_at_start, "after_reload": after_reload, "reloaded": reloaded,
              "later": gc.get_freeze_count()}
    await gw.drain()
    print(json.dumps({"at_start": at_start, "after": after, "imported": imported, "replies": replies, "frozen": frozen}))

asyncio.run(main())
"""


def test_first_messages_import_nothing_and_start_no_pdf_reader(tmp_path, sink, ca, password_hash):
    config = write_config(tmp_path, sink.port, ca, password_hash)
    pdf_message = REPO / "tests/data/classify/005-e05-ke-hoach-112.eml"
    assert b"application/pdf" in pdf_message.read_bytes()
    text_message = tmp_path / "text.eml"
    text_message.write_bytes(message(subject="Thông báo lịch họp"))
    done = subprocess.run([sys.executable, "-c", CHILD, str(config), str(pdf_message), str(text_message)], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    seen = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert all(reply.startswith("2.0.0") or "queued" in reply for reply in seen["replies"]), seen["replies"]
    start = seen["at_start"]
    assert start["available"] and start["idle"] == start["running"] >= 2, start
    assert seen["after"] == {"idle": start["idle"], "running": start["running"]}, seen["after"]
    assert seen["imported"] == [], seen["imported"]
    # What start-up made is out of the collector's view (a full collection walked ~125,000 objects),
    # and back in it after a reload, so the replaced settings can be freed.
    assert seen["frozen"]["at_start"] > 50_000, seen["frozen"]
    assert seen["frozen"]["reloaded"] and seen["frozen"]["after_reload"] == 0, seen["frozen"]
    assert seen["frozen"]["later"] > 50_000, seen["frozen"]  # and frozen again once the old context is gone
    # The warm-up starts two PDF readers per serving process, not the pool's size on a large machine.
    assert start["idle"] == min(2, start["size"]), start
