"""Benchmark of the classify stage: CPU time for a typical message (target: under 5 ms).

Typical message: a Vietnamese text body of about 8 KB and one PDF of about 200 KB
whose page one carries the agency header and the number (the body of a real
government PDF is mostly embedded fonts and a scanned seal image). The subject
fixes the category but carries no secrecy mark, so the PDF's page one IS read
(a MẬT stamp there would change the outcome): this is the common, costly path.

Run: ``python bench/classify_bench.py [iterations]``. Reports time.process_time()
per message for three figures: parse only, classify of the parsed message, and
classify when the subject settles everything (the PDF is not opened).
"""

from __future__ import annotations

import email
import email.policy
import os
import sys
import time
from email.message import EmailMessage

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from mailgw.stages.classify import classify  # noqa: E402


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
    return msg.as_bytes()


def _per_message(fn, iterations: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm up imports and regex caches
    start = time.process_time()
    for _ in range(iterations):
        fn()
    return (time.process_time() - start) / iterations * 1000


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    pdf = _pdf_200k()
    raw = _message("Kế hoạch số 112/KH-STTTT triển khai chuyển đổi số", pdf)
    raw_settled = _message("[MẬT] Kế hoạch số 112/KH-STTTT triển khai chuyển đổi số", pdf)
    body_len = len(email.message_from_bytes(raw, policy=email.policy.default).get_body().get_content())  # type: ignore[union-attr]
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    settled = email.message_from_bytes(raw_settled, policy=email.policy.default)
    result = classify(parsed)  # type: ignore[arg-type]
    assert result.doc_number == "112/KH-STTTT" and any(e.where == "attachment_text" for e in result.evidence)

    parse_ms = _per_message(lambda: email.message_from_bytes(raw, policy=email.policy.default), iterations)
    classify_ms = _per_message(lambda: classify(parsed), iterations)  # type: ignore[arg-type]
    settled_ms = _per_message(lambda: classify(settled), iterations)  # type: ignore[arg-type]
    print(f"message: {len(raw)} bytes, body {body_len} chars, PDF {len(pdf)} bytes; {iterations} iterations")
    print(f"parse (email.policy.default), for reference: {parse_ms:.2f} ms CPU")
    print(f"classify, PDF page one read:                 {classify_ms:.2f} ms CPU (target < 5 ms)")
    print(f"classify, settled by the subject (no PDF):   {settled_ms:.2f} ms CPU")


if __name__ == "__main__":
    main()
