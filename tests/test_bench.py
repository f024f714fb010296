"""The Postfix comparison bench runs end to end on a tiny load and prints its table.

Not a timed test: it checks only that every part starts, that every message
reaches the sink exactly once and that the table has a row per case. It needs
root (Postfix's master starts as root; apt-get installs the packages when they
are missing) and skips with the reason otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "postfix_vs_mailgw.py"
CANNOT_INSTALL = 3  # the script's exit status when Postfix/OpenDKIM cannot be installed


def test_quick_bench_prints_the_table() -> None:
    if os.geteuid() != 0:
        pytest.skip("the Postfix bench needs root (Postfix's master starts as root, apt-get installs it)")
    if not shutil.which("smtp-sink", path="/usr/sbin:/usr/bin") and not shutil.which("apt-get"):
        pytest.skip("Postfix is not installed and there is no apt-get to install it")
    proc = subprocess.run(
        # --limit: mailgw with limits.in_flow on, so its MAIL waits are run through real worker processes too.
        [sys.executable, str(SCRIPT), "--quick", "--reply-steps", "--limit", "in_flow=2"], capture_output=True, text=True,
        timeout=240,
        cwd=SCRIPT.parent.parent,
    )
    if proc.returncode == CANNOT_INSTALL:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "Every message arrived at the sink exactly once." in out
    assert re.search(r"^mailgw: workers=.*, limits\.in_flow=2$", out, re.M), out
    for anchor in ("Postfix+OpenDKIM RSA: signed (DKIM-Signature d=binhthuan.gov.vn, a=rsa-sha256)",
                   "Postfix+OpenDKIM Ed25519: signed (DKIM-Signature d=binhthuan.gov.vn, a=ed25519-sha256)",
                   "Postfix alone: NOT signed", "mailgw: signed (DKIM-Signature d=binhthuan.gov.vn, a=ed25519-sha256)"):
        assert re.search(r"Signing check .*" + re.escape(anchor), out), out
    header = next(line for line in out.splitlines() if line.startswith("load "))
    for name in ("Postfix+OpenDKIM RSA", "Postfix+OpenDKIM Ed25519", "Postfix alone", "mailgw",
                 "ratio mailgw/RSA", "ratio mailgw/Ed25519", "ratio mailgw/alone"):
        assert name in header, header
    for load in ("smtp-source, 5 KB", "Python, 5 KB Vietnamese text", "Python, 200 KB with a PDF"):
        rows = [line for line in out.splitlines() if line.startswith(load)]
        assert len(rows) == 2, (load, out)  # sessions 1 and 5
        for row in rows:
            _, *systems, ratios = row.split("|")
            assert len(systems) == 4, row  # three anchors and mailgw
            for cell in systems:
                rate, p50, p99, txn99, rss, cpu = cell.split()  # no LOST/DUP flag in front
                # CPU is read in clock ticks (10 ms): the quick run's 10 messages of Postfix may round to 0.0.
                assert float(rate) > 0 and float(rss) > 0 and float(cpu) >= 0, row
                if not load.startswith("smtp-source"):  # the Python client measures end-of-DATA to 250, and MAIL to it
                    assert 0 < float(p50) <= float(p99) and float(txn99) > 0, row
                    assert float(txn99) >= float(p50), row  # the transaction holds the end of DATA
                else:
                    assert p50 == p99 == txn99 == "-", row
            assert len(ratios.split()) == 3 and all(float(r) > 0 for r in ratios.split()), row
    # --reply-steps: for each of mailgw's cases, where the reply to DATA waited, the steps adding up to the whole
    steps = re.findall(r"bench: mailgw (\S+) c=(\d) reply to DATA by step, p50/p99 ms over (\d+) messages: (.*)", proc.stderr)
    assert sorted((load, c) for load, c, _, _ in steps) == sorted(
        (load, c) for load in ("smtp-source", "text5k", "pdf200k") for c in "15"), proc.stderr[-3000:]
    for _, _, n, found in steps:
        p50s = {name: float(v.split("/")[0]) for name, v in re.findall(r"([a-zA-Z+ ]+?) (\S+/\S+)(?:, |$)", found)}
        assert int(n) >= 9 and len(p50s) == 8, found
        assert all(v >= 0 for v in p50s.values()) and p50s["spool write"] > 0 and p50s["log commit"] > 0, found
    # everything it started is gone, and so is its directory
    run_dir = re.search(r"bench: directory (\S+)", proc.stderr).group(1)
    assert not Path(run_dir).exists()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert run_dir.encode() not in cmdline.read_bytes(), cmdline
        except OSError:
            continue
