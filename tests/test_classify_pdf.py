"""Page one of PDFs through the PDFium workers: same text as pypdf, budgets, hostile files, and the stage's wiring."""

from __future__ import annotations

import email
import email.policy
import logging
import os
import pathlib
import zlib
from email.message import EmailMessage

import pytest

from mailgw.classify import docread, engine, pdfworker
from mailgw.classify.engine import ClassifyLimits, classify
from mailgw.directory import model as directory
from mailgw.message.model import Context, Envelope, Message
from mailgw.message.parsed import header_section
from mailgw.stages import classify as stage
from mailgw.warmup import one_page_pdf
from tests.data.classify.make_fixtures import make_pdf

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "classify"
PYPDF_ONLY = docread.ReadLimits(pdfium=False)


def _pdf(content: bytes, *, flate: bool = False) -> bytes:
    """A one-page PDF with ``content`` as its content stream (Helvetica as F1), xref offsets right."""
    return one_page_pdf(content, flate=flate)


def _message(subject: str, body: str, attachments: list[tuple[str, bytes]]) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "vanthu.sotttt@binhthuan.gov.vn"
    msg["To"] = "vanthu.snv@binhthuan.gov.vn"
    msg["Subject"] = subject
    msg.set_content(body)
    for name, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)  # type: ignore[return-value]


def _golden_pdfs() -> list[tuple[str, bytes]]:
    found = []
    for eml in sorted(DATA.glob("*.eml")):
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        for part in msg.walk():
            data = part.get_payload(decode=True) if not part.is_multipart() else None
            if isinstance(data, bytes) and docread.sniff(data) == "pdf":
                found.append((eml.name, data))
    return found


# --- the law: a secrecy stamp on page one is found whatever else the message says ---------


def test_a_secrecy_stamp_on_page_one_is_found_when_subject_body_and_name_are_innocent() -> None:
    pdf = make_pdf(["ỦY BAN NHÂN DÂN", "TỈNH BÌNH THUẬN", "MẬT", "Số: 15/BC-UBND", "BÁO CÁO",
                    "Tình hình bảo đảm an ninh trật tự"])
    msg = _message("Gửi anh tài liệu", "Anh xem giúp em tệp đính kèm.\nCảm ơn anh.", [("tailieu.pdf", pdf)])
    for limits in (ClassifyLimits(), ClassifyLimits(read=PYPDF_ONLY)):
        result = classify(msg, limits=limits)
        assert (result.secrecy, result.secrecy_strength) == ("mat", "strong")
        assert any(e.cue == "secrecy_stamp" and e.where == "attachment_text" for e in result.evidence)
        assert result.doc_number == "15/BC-UBND" and result.category == "report"
    # Without the stamp the same message is not secret: the stamp, not the reading, decided.
    clean = make_pdf(["ỦY BAN NHÂN DÂN", "TỈNH BÌNH THUẬN", "Số: 15/BC-UBND", "BÁO CÁO"])
    result = classify(_message("Gửi anh tài liệu", "Anh xem giúp em.", [("tailieu.pdf", clean)]))
    assert result.secrecy == "none"


def test_the_stage_finds_the_stamp_through_the_worker() -> None:
    pdf = make_pdf(["SỞ NỘI VỤ", "TỐI MẬT", "Số: 03/KH-SNV", "KẾ HOẠCH"])
    raw = _message("Tài liệu họp", "Kính gửi các đồng chí.", [("kh.pdf", pdf)]).as_bytes().replace(b"\n", b"\r\n")
    message = Message("T1", Envelope("a@binhthuan.gov.vn", ["b@binhthuan.gov.vn"], "relay", "relay", "127.0.0.1"), raw)
    stage.run(message, Context(settings=None, directory=directory.load(REPO / "directory.yaml")))
    facts = message.facts.classification
    assert facts is not None and (facts.secrecy, facts.secrecy_strength) == ("toi_mat", "strong")
    assert docread._POOL is not None and docread._POOL.cpu_seconds() > 0  # PDFium did read it


# --- PDFium and pypdf read the same page one ------------------------------------------


def test_pdfium_and_pypdf_read_the_same_words_from_every_golden_pdf() -> None:
    pdfs = _golden_pdfs()
    assert len(pdfs) >= 20
    for name, data in pdfs:
        fast, slow = docread.first_page(data, "pdf"), docread.first_page(data, "pdf", PYPDF_ONLY)
        assert (fast.skipped, fast.text.split()) == (slow.skipped, slow.text.split()), name
        assert "\r" not in fast.text


def test_classification_is_the_same_with_either_reader() -> None:
    for eml in sorted(DATA.glob("*.eml")):
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        both = [classify(msg, limits=limits).to_json()  # type: ignore[arg-type]
                for limits in (ClassifyLimits(), ClassifyLimits(read=PYPDF_ONLY))]
        assert both[0] == both[1], eml.name


# --- budgets and hostile files: the worker dies, the gateway does not ------------------------


def test_the_cpu_budget_ends_the_worker_and_the_next_file_is_read() -> None:
    heavy = _pdf(b"BT /F1 1 Tf " + b"1 0 Td (x) Tj " * 300_000 + b"ET", flate=True)
    page = docread.first_page(heavy, "pdf", docread.ReadLimits(max_seconds=0.03))
    assert page.text == "" and page.skipped == "time budget reached"
    assert 0.02 < page.cpu < 1.0  # measured from the dead worker's resource usage
    again = docread.first_page(_pdf(b"BT /F1 12 Tf 72 800 Td (MAT) Tj ET"), "pdf")
    assert again.text == "MAT" and again.skipped is None


def _bomb(megabytes: int) -> bytes:
    """A PDF whose page content inflates to ``megabytes`` MB of spaces (from under 1 MB)."""
    head = b"BT /F1 12 Tf 72 800 Td (MAT) Tj ET\n"
    chunk = b" " * (1 << 20)
    packer = zlib.compressobj(9)
    first = packer.compress(head + chunk[len(head):]) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(chunk) + packer.flush(zlib.Z_FULL_FLUSH)  # the same bytes every time
    checksum = zlib.adler32(head + chunk[len(head):])
    for _ in range(megabytes - 1):
        checksum = zlib.adler32(chunk, checksum)
    stream = first + block * (megabytes - 1) + b"\x03\x00" + checksum.to_bytes(4, "big")
    return _pdf(stream).replace(b"/Length", b"/Filter /FlateDecode /Length", 1)


def test_a_decompression_bomb_ends_the_worker_and_pypdf_refuses_it(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Over the worker's address-space cap (small here, to keep the test quick), and over
    # pypdf's decompression limit when it tries next.
    monkeypatch.setattr(docread, "_POOL", pdfworker.Pool(1, address_space=160 * 1024 * 1024))
    bomb = _bomb(300)
    with caplog.at_level(logging.WARNING, logger="mailgw.classify.docread"):
        page = docread.first_page(bomb, "pdf", docread.ReadLimits(max_seconds=30))
    assert page.text == "" and page.skipped is not None and "unreadable" in page.skipped
    assert any("PDF reader worker ended" in r.getMessage() for r in caplog.records)
    assert docread.first_page(_pdf(b"BT /F1 12 Tf 72 800 Td (MAT) Tj ET"), "pdf").text == "MAT"
    docread._POOL.close()


def test_a_zero_budget_reads_nothing() -> None:
    page = docread.first_page(_pdf(b"BT /F1 12 Tf 72 800 Td (MAT) Tj ET"), "pdf", docread.ReadLimits(max_seconds=0))
    assert page.skipped == "time budget reached" and page.text == ""


def test_without_a_worker_pypdf_reads_the_page() -> None:
    pool = pdfworker.Pool(1)
    pool.available = False  # as when pypdfium2 is not installed
    assert pool.read(b"%PDF-1.4", 1500, 1.0) is None
    page = docread.first_page(_pdf(b"BT /F1 12 Tf 72 800 Td (Bao cao) Tj ET"), "pdf", PYPDF_ONLY)
    assert page.text == "Bao cao" and page.cpu == 0.0


def test_a_worker_that_cannot_start_leaves_pypdf_to_read(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(pdfworker.sys, "executable", "/bin/false")  # starts, and exits 1 at once
    pool = pdfworker.Pool(1)
    monkeypatch.setattr(docread, "_POOL", pool)
    with caplog.at_level(logging.WARNING, logger="mailgw.classify.pdfworker"):
        page = docread.first_page(_pdf(b"BT /F1 12 Tf 72 800 Td (Bao cao) Tj ET"), "pdf")
    assert page.text == "Bao cao" and page.skipped is None  # read by pypdf
    (record,) = [r for r in caplog.records if "did not start" in r.getMessage()]
    assert "exit status 1" in record.getMessage() and "pypdfium2" in record.getMessage()
    assert pool.read(b"%PDF-1.4", 100, 1.0) is None  # no new start for a while: no process per message


def test_an_encrypted_pdf_is_reported(tmp_path: pathlib.Path) -> None:
    import pypdf

    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(__import__("io").BytesIO(make_pdf(["MẬT"]))))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-128")
    out = tmp_path / "e.pdf"
    with out.open("wb") as f:
        writer.write(f)
    for limits in (docread.ReadLimits(), PYPDF_ONLY):
        assert docread.first_page(out.read_bytes(), "pdf", limits).skipped == "encrypted"


def test_workers_are_reused_and_bounded() -> None:
    pool = pdfworker.Pool(2)
    data = _pdf(b"BT /F1 12 Tf 72 800 Td (MAT) Tj ET")
    pids = set()
    for _ in range(5):
        reply = pool.read(data, 100, 1.0)
        assert reply is not None and reply.status == pdfworker.OK and reply.text.strip() == "MAT"
        pids |= {w.proc.pid for w in pool._idle}
    assert len(pids) == 1
    pool.close()
    assert pool._idle == []


def test_a_document_goes_to_the_worker_in_one_write() -> None:
    """The worker's stdin holds 1 MiB (not Linux's 64 KiB): a 200 KB PDF is written at once,
    not in turns of the two processes waking each other."""
    import fcntl

    pool = pdfworker.Pool(1)
    padding = b"".join(b"%% %s\n" % os.urandom(48).hex().encode() for _ in range(2000))  # comments
    big = _pdf(padding + b"BT /F1 12 Tf 72 800 Td (MAT) Tj ET")
    assert len(big) > 3 * 64 * 1024
    reply = pool.read(big, 100, 1.0)
    assert reply is not None and reply.status == pdfworker.OK and reply.text.strip() == "MAT"
    (worker,) = pool._idle
    assert fcntl.fcntl(worker.proc.stdin.fileno(), fcntl.F_GETPIPE_SZ) >= 1 << 20
    pool.close()


# --- the stage: known issuers from the directory; the header section parsed once ---------


def test_the_directory_names_the_issuers_of_file_name_numbers() -> None:
    demo = directory.load(REPO / "directory.yaml")
    limits = engine.limits_for(demo)
    assert {"STTTT", "SNV", "UBND", "SKHĐT", "SKHDT"} <= limits.known_issuers
    msg = _message("Gửi văn bản", "Trân trọng.", [("456_STTTT-VP.pdf", b"not a pdf")])
    assert classify(msg, limits=limits).doc_number == "456/STTTT-VP"
    assert classify(msg).doc_number is None  # without the directory, an unknown code is not a number


@pytest.mark.parametrize("raw", [
    b"Subject: a\r\nFrom: b@c\r\n\r\nbody\r\n\r\nmore",
    b"Subject: a\nFrom: b@c\n\nbody",
    b"\r\nSubject: not a header\r\n",
    b"Subject: no body at all\r\n",
    b"Subject: a\r\n folded\r\nX: y\r\n\r\n",
    b"Subject: a\r\nnot a header line\r\nX: y\r\n\r\nbody",
    b"",
])
def test_the_header_section_parses_to_the_same_headers(raw: bytes) -> None:
    parser = email.parser.BytesHeaderParser(policy=email.policy.default)
    whole, section = parser.parsebytes(raw), parser.parsebytes(header_section(raw))
    assert whole.items() == section.items()
    assert [type(d) for d in whole.defects] == [type(d) for d in section.defects]


def test_headers_come_from_the_parsed_message_when_there_is_one() -> None:
    raw = (DATA / "005-e05-ke-hoach-112.eml").read_bytes()
    message = Message("T2", Envelope("", [], "mx", "mx", "127.0.0.1"), raw)
    parsed = message.parsed
    assert message.headers is parsed
    fresh = Message("T3", Envelope("", [], "mx", "mx", "127.0.0.1"), raw)
    assert fresh.headers.items() == parsed.items()
