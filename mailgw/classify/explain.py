"""A readable account of a classification, Vietnamese then English (``mailgw classify``)."""

from __future__ import annotations

import types

from mailgw.classify.vn.classification import Classification

_CATEGORY_VI = types.MappingProxyType({
    "meeting_invitation": "Giấy mời họp", "meeting_material": "Tài liệu phục vụ họp",
    "report": "Báo cáo", "announcement": "Thông báo", "official_letter": "Công văn",
    "decision": "Quyết định", "directive": "Chỉ thị", "plan": "Kế hoạch", "programme": "Chương trình",
    "work_schedule": "Lịch công tác", "direction": "Thông tin chỉ đạo, điều hành",
    "submission": "Tờ trình", "official_telegram": "Công điện", "minutes": "Biên bản",
    "guidance": "Hướng dẫn", "introduction_letter": "Giấy giới thiệu",
    "draft_for_comment": "Dự thảo xin ý kiến", "legal_normative": "Văn bản quy phạm pháp luật",
    "administrative_other": "Văn bản hành chính khác", "general": "Thư thông thường (không có văn bản)",
})
_SECRECY_VI = types.MappingProxyType({"none": "Không mật", "mat": "Mật", "toi_mat": "Tối mật",
                                      "tuyet_mat": "Tuyệt mật"})
_STRENGTH_VI = types.MappingProxyType({"none": "không có / none", "weak": "yếu, chỉ gắn nhãn / weak, tag only",
                                       "strong": "mạnh, dấu độ mật / strong, a secrecy stamp"})
_URGENCY_VI = types.MappingProxyType({"none": "Thường", "khan": "Khẩn", "thuong_khan": "Thượng khẩn",
                                      "hoa_toc": "Hỏa tốc"})
_WHERE_VI = types.MappingProxyType({
    "header": "trường tiêu đề thư / header", "subject": "tiêu đề / subject", "body": "nội dung thư / body",
    "attachment_name": "tên tệp đính kèm / attachment name",
    "attachment_text": "trang đầu tệp đính kèm / attachment first page"})
_CUE_VI = types.MappingProxyType({
    "doc_number": "số, ký hiệu / number and symbol", "title": "tên loại văn bản / title word",
    "phrase": "cụm từ / phrase", "category_header": "khai báo loại / declared category",
    "calendar_request": "lời mời lịch / calendar invitation",
    "doc_number_format": "số, ký hiệu sai thể thức / number format",
    "secrecy_stamp": "dấu độ mật / secrecy stamp", "secrecy_word": "từ \"mật\" / the word \"mật\"",
    "declassified_stamp": "dấu giải mật / declassified stamp", "urgency": "độ khẩn / urgency",
    "urgency_hint": "cờ ưu tiên / priority flag", "attachment_skipped": "không đọc tệp / file not read",
    "unreadable": "không đọc được / unreadable"})


def explain(c: Classification) -> str:
    """A readable account, Vietnamese then English, of what was found where."""
    lines = [
        f"Loại văn bản / Category: {_CATEGORY_VI.get(c.category, c.category)} ({c.category})"
        + (f", ký hiệu / type {c.doc_type}" if c.doc_type else ""),
        f"Số, ký hiệu / Number: {c.doc_number or 'không có / none'}",
        f"Độ mật / Secrecy: {_SECRECY_VI.get(c.secrecy, c.secrecy)} ({c.secrecy});"
        f" căn cứ / evidence: {_STRENGTH_VI.get(c.secrecy_strength, c.secrecy_strength)}",
    ]
    if c.declassified:
        lines.append("Đã giải mật / Declassified: có dấu GIẢI MẬT / a GIẢI MẬT stamp was found")
    lines.append(f"Độ khẩn / Urgency: {_URGENCY_VI.get(c.urgency, c.urgency)} ({c.urgency})")
    lines.append(f"Độ tin cậy / Confidence: {c.confidence:.2f}")
    if c.evidence:
        lines.append("Căn cứ / Evidence:")
        for e in c.evidence:
            lines.append(f"  - {_CUE_VI.get(e.cue, e.cue)} — {_WHERE_VI.get(e.where, e.where)}: \"{e.text}\"")
    else:
        lines.append("Căn cứ / Evidence: không có dấu hiệu văn bản / no official-document cue found")
    return "\n".join(lines)



# The Vietnamese names, for the readers that show codes to people (the web console).
CATEGORY_VI = _CATEGORY_VI
SECRECY_VI = _SECRECY_VI
URGENCY_VI = _URGENCY_VI
WHERE_VI = _WHERE_VI
CUE_VI = _CUE_VI
