"""Benchmark of the classify stage: CPU time for a typical message (target: under 5 ms).

Typical message: a Vietnamese text body of about 7 KB and one PDF of about 200 KB
whose page one carries the agency header and the number (the body of a real
government PDF is mostly embedded fonts and a scanned seal image). The subject
fixes the category but carries no secrecy mark, so the PDF's page one IS read
(a MẬT stamp there would change the outcome): this is the common, costly path.

Run: ``python bench/classify_bench.py [iterations]``. CPU time per message, median
and p95, counts this thread (``time.thread_time``) plus the CPU the PDF reader
worker process reports for the message (mailgw.classify.pdfworker). Figures:

- classify: ``classify(parsed message)``, page one read by PDFium in a worker;
- classify, pypdf only: the same with ``ReadLimits(pdfium=False)`` (the fallback);
- classify, settled: the subject carries a MẬT stamp, so no page can change the
  outcome and the PDF is not even decoded;
- stage from bytes: ``stages.classify.run`` on a fresh ``Message``, which includes
  parsing the MIME tree (shared with every later stage that reads the body) and the
  header section (shared with parse, author and the record);
- parse only, for reference.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import os
import statistics
import sys
import time
from email.message import EmailMessage
from typing import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from mailgw.classify import (
    docread,
    engine,  # noqa: E402
)
from mailgw.directory import model as directory  # noqa: E402
from mailgw.message.model import Context, Envelope, Message  # noqa: E402
from mailgw.stages import classify as stage  # noqa: E402

REPO = os.path.join(os.path.dirname(__file__), "..")


def _pdf_200k() -> bytes:
    """A real PDF (fpdf2, DejaVu) of ~200 KB: text plus an incompressible image, like a scanned seal."""
    import random

    from fpdf import FPDF
    from PIL import Image

    rng = random.Random(7)
    seal = Image.frombytes("RGB", (256, 250), bytes(rng.getrandbits(8) for _ in range(256 * 250 * 3)))

    pdf = FPDF()
    pdf.add_font("DejaVu", "", "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")
    pdf.set_font("DejaVu", "", 12)
    pdf.add_page()
    for line in ("UBND TỈNH BÌNH THUẬN", "SỞ THÔNG TIN VÀ TRUYỀN THÔNG", "Số: 112/KH-STTTT",
                 "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Độc lập - Tự do - Hạnh phúc", "KẾ HOẠCH",
                 "Triển khai chuyển đổi số năm 2025"):
        pdf.multi_cell(0, 7, line, new_x="LMARGIN", new_y="NEXT")
    for _ in range(30):
        pdf.multi_cell(0, 6, "Thực hiện nhiệm vụ được giao, Sở Thông tin và Truyền thông đề nghị các cơ quan, "
                             "đơn vị phối hợp triển khai, bảo đảm đúng tiến độ và chất lượng.",
                       new_x="LMARGIN", new_y="NEXT")
    for _ in range(3):
        pdf.add_page()
        pdf.multi_cell(0, 6, "Nội dung chi tiết của kế hoạch. " * 40, new_x="LMARGIN", new_y="NEXT")
    pdf.image(seal, x=120, y=230, w=40)
    return bytes(pdf.output())


def _message(subject: str, pdf: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"] = "vanthu.sotttt@binhthuan.gov.vn"
    msg["To"] = "vanthu.snv@binhthuan.gov.vn"
    msg["Subject"] = subject
    paragraph = ("Thực hiện Kế hoạch của UBND tỉnh về chuyển đổi số, Sở Thông tin và Truyền thông đề nghị "
                 "các cơ quan, đơn vị rà soát, cập nhật số liệu và gửi về Sở trước ngày 15/6/2025. ")
    body = "Kính gửi: các cơ quan, đơn vị\n\n" + "\n".join(paragraph for _ in range(40)) + "\nTrân trọng./."
    msg.set_content(body)
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="112_KH-STTTT.pdf")
    return msg.as_bytes().replace(b"\n", b"\r\n")  # as the SMTP edge hands it over


def _worker_cpu() -> float:
    """CPU seconds the PDF reader workers have reported so far (0 when there are none)."""
    pool = getattr(docread, "_POOL", None)
    return pool.cpu_seconds() if pool is not None else 0.0


def _measure(fn: Callable[[], object], iterations: int) -> tuple[float, float]:
    """(median, p95) in ms of this thread's CPU plus the PDF workers' CPU, per call."""
    for _ in range(5):
        fn()  # warm up imports, regex caches and the worker process
    samples = []
    for _ in range(iterations):
        cpu0, worker0 = time.thread_time(), _worker_cpu()
        fn()
        samples.append((time.thread_time() - cpu0 + _worker_cpu() - worker0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    pdf = _pdf_200k()
    raw = _message("Kế hoạch số 112/KH-STTTT triển khai chuyển đổi số", pdf)
    raw_settled = _message("[MẬT] Kế hoạch số 112/KH-STTTT triển khai chuyển đổi số", pdf)
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    settled = email.message_from_bytes(raw_settled, policy=email.policy.default)
    body_len = len(parsed.get_body().get_content())  # type: ignore[union-attr]
    result = engine.classify(parsed)  # type: ignore[arg-type]
    assert result.doc_number == "112/KH-STTTT" and any(e.where == "attachment_text" for e in result.evidence)

    ctx = Context(settings=None, directory=directory.load(os.path.join(REPO, "directory.yaml")))
    envelope = Envelope("vanthu.sotttt@binhthuan.gov.vn", ["vanthu.snv@binhthuan.gov.vn"], "relay", "relay", "127.0.0.1")
    # (Without the PDFium worker, as before it existed, the first two figures are the same.)
    has_pdfium = "pdfium" in {f.name for f in dataclasses.fields(docread.ReadLimits)}
    pypdf_only = engine.ClassifyLimits(read=docread.ReadLimits(pdfium=False)) if has_pdfium else engine.ClassifyLimits()

    def run_stage() -> None:
        message = Message("bench", envelope, raw)
        _ = message.headers  # the parse stage reads the header section first
        stage.run(message, ctx)

    figures = [
        ("classify, page one by PDFium (worker)", lambda: engine.classify(parsed)),  # type: ignore[arg-type]
        ("classify, page one by pypdf (fallback)", lambda: engine.classify(parsed, limits=pypdf_only)),  # type: ignore[arg-type]
        ("classify, settled by the subject", lambda: engine.classify(settled)),  # type: ignore[arg-type]
        ("stage from bytes (parse + classify)", run_stage),
        ("parse only, for reference", lambda: email.message_from_bytes(raw, policy=email.policy.default)),
    ]
    print(f"message: {len(raw)} bytes, body {body_len} chars, PDF {len(pdf)} bytes; {iterations} iterations")
    print("CPU per message (this thread + PDF worker), ms:      median     p95")
    for name, fn in figures:
        median, p95 = _measure(fn, iterations)
        print(f"  {name:<48} {median:7.2f} {p95:7.2f}")
    print("target: classify under 5 ms")


if __name__ == "__main__":
    main()
