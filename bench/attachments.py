"""Benchmark of attachment inspection: a message with a 10 MB PDF and a 5 MB zip.

The message (about 20 MB once base64-encoded): a text body; a signed 10 MB PDF
(eight pages of Vietnamese text, each with a scanned-looking, incompressible
image, signed with pyHanko by a test CA, as an agency's digitised copy is); a
5 MB zip of twenty Vietnamese text documents (about 14 MB unpacked) and a 2.4 MB
incompressible "scan". Inspection runs twice: without a trust store, and with
one (pyHanko validates the PDF signature), each in a fresh process.

Figures, per run: CPU time of inspect_message (median of 3, tracemalloc off);
peak memory traced by tracemalloc during one call (Python allocations made by
the call; the raw message, held by the caller, is not counted); and the growth
of ru_maxrss across that call (the whole process, C libraries included).

Bound (checked at the end, exit 1 when broken): peak traced memory under
3 x the raw message size + 16 MiB, and ru_maxrss growth under 4 x the raw
size + 32 MiB; CPU time under the default time budget (10 s). Where the
memory goes: the walker's own compat32 parse, fed in 64 KiB slices, keeps the
encoded parts (about 1 x raw); one decoded part at a time is alive (the PDF,
10 MB) with pypdf's reader over it (and pyHanko's, with a trust store); an
archive holds one member at a time. For comparison the run also reports
``Message.parsed`` (the policy.default tree the classify stage shares), which
the pipeline builds once besides.

Run: ``.venv/bin/python bench/attachments.py`` (needs the test extras:
fpdf2, pyhanko; the DejaVu font from Debian's fonts-dejavu-core).
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

MiB = 1024 * 1024
_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"


def _pdf_10mb(rng: random.Random) -> bytes:
    from fpdf import FPDF
    from PIL import Image

    pdf = FPDF()
    if os.path.exists(_FONT):
        pdf.add_font("DejaVu", "", _FONT)
        pdf.set_font("DejaVu", "", 11)
        line = "Thực hiện nhiệm vụ được giao, Sở Thông tin và Truyền thông báo cáo kết quả triển khai. "
    else:
        pdf.set_font("helvetica", size=11)
        line = "Thuc hien nhiem vu duoc giao, So Thong tin va Truyen thong bao cao ket qua trien khai. "
    side = 660  # 660 x 660 RGB noise: about 1.25 MB per page, as a colour scan at 200 dpi would be
    for page in range(8):
        pdf.add_page()
        pdf.multi_cell(0, 6, f"Số: {112 + page}/BC-STTTT\n" + line * 12, new_x="LMARGIN", new_y="NEXT")
        noise = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
        pdf.image(noise, x=20, y=120, w=170)
    return bytes(pdf.output())


def _zip_5mb(rng: random.Random) -> bytes:
    import io
    import zipfile

    words = ("báo cáo kế hoạch triển khai chuyển đổi số ủy ban nhân dân tỉnh bình thuận sở thông tin "
             "truyền thông quyết định công văn đề nghị các cơ quan đơn vị phối hợp thực hiện").split()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(20):
            text = " ".join(rng.choice(words) for _ in range(120_000))
            z.writestr(f"tai lieu/van ban {i + 1:02d}.txt", text.encode("utf-8"))
        z.writestr("tai lieu/scan.jpg", b"\xff\xd8\xff\xe0" + rng.randbytes(int(2.4 * MiB)))
    return buf.getvalue()


def build() -> tuple[bytes, bytes]:
    """The raw message and the test CA's root certificate (PEM)."""
    from tests import attachment_fixtures as fx

    rng = random.Random(11)
    ca = fx.TestCA()
    pdf = ca.sign_pdf(_pdf_10mb(rng))
    archive = _zip_5mb(rng)
    raw = fx.mail(fx.attachment(pdf, ctype="application/pdf", filename="Báo cáo tháng 11.pdf"),
                  fx.attachment(archive, ctype="application/zip", filename="Tài liệu kèm theo.zip"))
    print(f"message {len(raw) / MiB:.1f} MiB: PDF {len(pdf) / MiB:.1f} MiB (signed), zip {len(archive) / MiB:.1f} MiB")
    return raw, ca.ca_pem()


def measure(path: str, store: str | None) -> dict[str, float]:
    """Run in a fresh process: time, tracemalloc peak and ru_maxrss growth of inspect_message."""
    from mailgw.attachments import inspect_message
    from mailgw.config.settings import AttachmentLimits

    with open(path, "rb") as f:
        raw = f.read()
    from tests import attachment_fixtures as fx

    limits = AttachmentLimits(trust_store=store)
    warm_up = fx.mail(fx.attachment(fx.TestCA().sign_pdf(fx.pdf_plain()), filename="a.pdf"),
                      fx.attachment(fx.zip_bytes([("a.txt", b"x")]), filename="a.zip"))
    inspect_message(warm_up, limits)  # the libraries' imports and caches: not part of the figures
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    facts = inspect_message(raw, limits)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    times = []
    for _ in range(3):
        start = time.process_time()
        inspect_message(raw, limits)
        times.append(time.process_time() - start)
    tracemalloc.start()
    inspect_message(raw, limits)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    from mailgw.message.model import Envelope, Message

    tracemalloc.start()
    tree = Message("bench", Envelope("", [], "relay", "relay", "127.0.0.1"), raw).parsed
    _, parsed_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del tree
    pdf = facts["files"][0]["pdf"]
    assert not facts["ambiguous"], facts["ambiguous_reason"]
    return {"raw": len(raw), "cpu_s": statistics.median(times), "traced_peak": peak, "maxrss_growth": grown,
            "parsed_peak": parsed_peak,
            "files": facts["count"], "signers": pdf["signers"], "trusted": pdf["trusted"]}


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--measure":
        print(json.dumps(measure(sys.argv[2], sys.argv[3] or None)))
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "--build":
        raw, ca_pem = build()
        with open(os.path.join(sys.argv[2], "message.eml"), "wb") as f:
            f.write(raw)
        with open(os.path.join(sys.argv[2], "roots.pem"), "wb") as f:
            f.write(ca_pem)
        return 0
    # Every step runs in its own process, started from this small one: Linux carries
    # ru_maxrss over fork and exec, so a parent that built the 20 MB message itself
    # would hand its peak to the measuring child.
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, __file__, "--build", tmp], check=True)
        message_path, store_path = os.path.join(tmp, "message.eml"), os.path.join(tmp, "roots.pem")
        for label, store in (("no trust store", ""), ("trust store", store_path)):
            out = subprocess.run([sys.executable, __file__, "--measure", message_path, store],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            traced_bound = 3 * r["raw"] + 16 * MiB
            rss_bound = 4 * r["raw"] + 32 * MiB
            print(f"{label:>15}: CPU {r['cpu_s']:.2f} s, traced peak {r['traced_peak'] / MiB:.1f} MiB "
                  f"(bound {traced_bound / MiB:.0f}), ru_maxrss +{r['maxrss_growth'] / MiB:.1f} MiB "
                  f"(bound {rss_bound / MiB:.0f}); {r['files']} files, signer {r['signers']}, trusted {r['trusted']}; "
                  f"Message.parsed alone: traced peak {r['parsed_peak'] / MiB:.1f} MiB")
            ok = ok and r["traced_peak"] < traced_bound and r["maxrss_growth"] < rss_bound and r["cpu_s"] < 10
    print("within bounds" if ok else "BOUND EXCEEDED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
