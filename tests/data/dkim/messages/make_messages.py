"""Writes the DKIM test corpus (run once; the .eml files are checked in). CRLF line endings, as sent by SMTP."""

import base64
import random
from pathlib import Path

HERE = Path(__file__).parent


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def main() -> None:
    (HERE / "official-letter.eml").write_bytes(crlf(
        "From: =?utf-8?b?U+G7nyBUaMO0bmcgdGluIHbDoCBUcnV54buBbiB0aMO0bmc=?= <vanthu@stttt.example.gov.vn>\n"
        "To: Phong Van thu <vanthu@ubnd.example.gov.vn>,\n"
        "\tLanh dao <lanhdao@ubnd.example.gov.vn>\n"
        "Cc: luutru@stttt.example.gov.vn\n"
        "Reply-To: vanthu@stttt.example.gov.vn\n"
        "Subject: =?utf-8?q?C=C3=B4ng_v=C4=83n_s=E1=BB=91_25/STTTT-VP_v=E1=BB=81_vi=E1=BB=87c?=\n"
        " =?utf-8?q?_b=C3=A1o_c=C3=A1o?=\n"
        "Date: Mon, 03 Nov 2025 08:15:00 +0700\n"
        "Message-ID: <20251103081500.1234@stttt.example.gov.vn>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: quoted-printable\n"
        "\n"
        "K=C3=ADnh g=E1=BB=ADi: =E1=BB=A6y ban nh=C3=A2n d=C3=A2n t=E1=BB=89nh\n"
        "\n"
        "S=E1=BB=9F Th=C3=B4ng tin v=C3=A0 Truy=E1=BB=81n th=C3=B4ng =C4=91=E1=BB=81 ngh=\n"
        "=E1=BB=8B b=C3=A1o c=C3=A1o tr=C6=B0=E1=BB=9Bc ng=C3=A0y 10/11/2025.\n"
    ))
    (HERE / "utf8-headers.eml").write_bytes(crlf(
        "From: Sở Tư pháp <vanthu@stp.example.gov.vn>\n"
        "To: Văn phòng UBND <vanphong@ubnd.example.gov.vn>\n"
        "Subject: Giấy mời họp số 07/GM-STP   về  công tác    cải cách hành chính\n"
        "Date: Tue, 04 Nov 2025 14:00:00 +0700\n"
        "Message-ID: <gm07.20251104@stp.example.gov.vn>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n"
        "\n"
        "Kính mời đồng chí dự họp.  \n"
        "Thời gian:\t14 giờ 00, ngày 06/11/2025\n"
        "Địa điểm: Phòng họp số 2\n"
    ))
    rng = random.Random(20251105)
    blob = bytes(range(256)) + bytes(rng.randrange(256) for _ in range(6000))
    attachment = base64.encodebytes(blob).decode("ascii")
    (HERE / "multipart-attachment.eml").write_bytes(crlf(
        "From: vanthu@stc.example.gov.vn\n"
        "To: vanthu@ubnd.example.gov.vn\n"
        "Subject: Bao cao tai chinh quy III\n"
        "Date: Wed, 05 Nov 2025 09:30:00 +0700\n"
        "Message-ID: <bc-q3@stc.example.gov.vn>\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="==b0undary=="\n'
        "\n"
        "This is a multi-part message in MIME format.\n"
        "--==b0undary==\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
        "Kinh gui Van phong,\n"
        ".\n"
        "Bao cao dinh kem.\n"
        "--==b0undary==\n"
        'Content-Type: application/pdf; name="bao-cao-q3.pdf"\n'
        'Content-Disposition: attachment; filename="bao-cao-q3.pdf"\n'
        "Content-Transfer-Encoding: base64\n"
        "\n"
        + attachment
        + "--==b0undary==--\n"
    ))
    (HERE / "dot-lines.eml").write_bytes(crlf(
        "From: Test <test@example.gov.vn>\n"
        "To: someone@example.net\n"
        "Subject:    spaces\t and tabs   \n"
        "Date: Thu, 06 Nov 2025 10:00:00 +0700\n"
        "Message-ID: <dots@example.gov.vn>\n"
        "\n"
        ".\n"
        "..\n"
        ". \n"
        "line with trailing spaces   \n"
        "\t\tindented with tabs\t\n"
        "   \n"
        "several    inner     spaces\n"
        ".\n"
        "\n"
        "\n"
        "\n"
    ))
    (HERE / "empty-body.eml").write_bytes(crlf(
        "From: test@example.gov.vn\n"
        "To: someone@example.net\n"
        "Subject: empty\n"
        "Date: Thu, 06 Nov 2025 10:05:00 +0700\n"
        "Message-ID: <empty@example.gov.vn>\n"
        "\n"
    ))


if __name__ == "__main__":
    main()
