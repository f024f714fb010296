"""The classifier's vocabulary: category cues, reference words and the headers it reads.

Data only: which words name which kind of document (Decree 30/2020/NĐ-CP Phụ lục III), which words before a number make it a
reference to another document, and the ``X-GovVN-*`` header names. The engine
(``mailgw.classify.engine``) decides what they weigh.
"""

from __future__ import annotations

import dataclasses
import re
import types

from mailgw.classify.vn import text as vtext


@dataclasses.dataclass(frozen=True)
class CueDef:
    category: str
    phrase: str          # as Vietnamese writes it
    title: bool          # a title word (a heading); otherwise a phrase of the text
    generic: bool = False  # says "a letter" but not which kind ("V/v", "Về việc")
    abbr: str | None = None
    purpose: bool = False  # says what a letter asks for ("mời họp", "xin ý kiến"), even after "V/v"
    # A title that is also the formula of such a text, specific enough to count as a phrase
    # in running text ("Sau khi xem xét, Chủ tịch UBND tỉnh có ý kiến chỉ đạo: ...").
    anywhere: bool = False


def _c(category: str, abbr: str | None, *phrases: str, title: bool = True, generic: bool = False,
       purpose: bool = False, anywhere: bool = False) -> list[CueDef]:
    return [CueDef(category, p, title, generic, abbr, purpose, anywhere) for p in phrases]


CUE_DEFS: tuple[CueDef, ...] = tuple(
    _c("meeting_invitation", "GM", "giấy mời")
    + _c("meeting_invitation", "GM", "mời họp", "mời dự họp", purpose=True)
    + _c("meeting_invitation", "GM", "kính mời", "trân trọng kính mời", title=False)
    + _c("meeting_material", None, "tài liệu họp", "tài liệu cuộc họp", "tài liệu phục vụ họp",
         "tài liệu phục vụ cuộc họp", "tài liệu phục vụ hội nghị", "phục vụ cuộc họp", "phục vụ họp",
         "phục vụ hội nghị", "tài liệu hội nghị")
    + _c("report", "BC", "báo cáo")
    + _c("report", "BC", "để báo cáo", "kính báo", title=False)
    # "để biết" (for information) closes a report, and also every forward of anything: alone it never decides.
    + _c("report", "BC", "để biết", title=False, generic=True)
    + _c("announcement", "TB", "thông báo")
    + _c("official_letter", None, "công văn")
    + _c("official_letter", None, "v/v", "về việc", generic=True)
    + _c("official_letter", None, "kính gửi", title=False, generic=True)
    + _c("decision", "QĐ", "quyết định")
    + _c("directive", "CT", "chỉ thị")
    + _c("plan", "KH", "kế hoạch")
    + _c("programme", "CTr", "chương trình công tác", "chương trình hành động")
    + _c("programme", "CTr", "chương trình", title=False)
    + _c("work_schedule", None, "lịch công tác", "lịch làm việc", "lịch tiếp công dân", "lịch trực")
    + _c("direction", None, "kết luận của", "giao nhiệm vụ", "thông tin chỉ đạo", "chỉ đạo điều hành")
    # The formula of a leader's direction ("Chủ tịch UBND tỉnh có ý kiến chỉ đạo như sau:").
    + _c("direction", None, "ý kiến chỉ đạo", "có ý kiến như sau", anywhere=True)
    + _c("submission", "TTr", "tờ trình")
    + _c("submission", "TTr", "kính trình", title=False)
    + _c("official_telegram", "CĐ", "công điện")
    + _c("minutes", "BB", "biên bản")
    + _c("guidance", "HD", "hướng dẫn")
    + _c("guidance", "HDLN", "hướng dẫn liên ngành")
    + _c("submission", "TTr", "phiếu trình")
    + _c("introduction_letter", "GGT", "giấy giới thiệu")
    + _c("draft_for_comment", None, "dự thảo", "xin ý kiến", "góp ý dự thảo", "lấy ý kiến", purpose=True)
    + _c("legal_normative", "NĐ", "nghị định")
    + _c("legal_normative", "TT", "thông tư")
    + _c("legal_normative", None, "luật số")
    + _c("administrative_other", "NQ", "nghị quyết")
    + _c("administrative_other", "QC", "quy chế")
    + _c("administrative_other", "ĐA", "đề án")
    + _c("administrative_other", "PA", "phương án")
    + _c("administrative_other", "HĐ", "hợp đồng")
    + _c("administrative_other", "GUQ", "giấy ủy quyền")
    + _c("administrative_other", "BGN", "bản ghi nhớ")
    + _c("administrative_other", "BTT", "bản thỏa thuận")
    + _c("administrative_other", "GNP", "giấy nghỉ phép")
    + _c("administrative_other", "PC", "phiếu chuyển")
    + _c("administrative_other", "PG", "phiếu gửi")
    # Permits and certificates are not in the contract's list: the closest is administrative_other.
    + _c("administrative_other", "GP", "giấy phép")
    + _c("administrative_other", "GCN", "giấy chứng nhận")
)


def _cue_maps() -> tuple[vtext.PhraseFinder, types.MappingProxyType[str, CueDef],
                         vtext.PhraseFinder, types.MappingProxyType[str, CueDef]]:
    marked: dict[str, CueDef] = {}
    folded: dict[str, CueDef] = {}
    for cue in CUE_DEFS:
        key = vtext.tone_key(vtext.nfc(cue.phrase))
        marked[key] = cue
        folded.setdefault(vtext.fold(key), cue)
    # Marked cues are searched in tone_key form, found from the lower-case text: in either tone placement.
    return (vtext.PhraseFinder(list(marked), vtext.tone_spellings), types.MappingProxyType(marked),
            vtext.PhraseFinder(list(folded)), types.MappingProxyType(folded))


MARKED_CUES, MARKED, FOLDED_CUES, FOLDED = _cue_maps()
ABBR_OF_CATEGORY = types.MappingProxyType({
    "meeting_invitation": "GM", "report": "BC", "announcement": "TB", "decision": "QĐ",
    "directive": "CT", "plan": "KH", "programme": "CTr", "submission": "TTr",
    "official_telegram": "CĐ", "minutes": "BB", "guidance": "HD", "introduction_letter": "GGT",
})

# A number right after these words (folded) names another document, not this one.
REFERENCE_WORDS = ("can cu", "thuc hien", "trien khai", "theo", "tai", "kem theo", "tra loi",
                   "phuc dap", "sua doi", "bo sung", "thay the", "bai bo", "dinh chinh", "huy bo",
                   "goi la", "goi tat la")
TYPE_WORDS = ("thong tu lien tich", "nghi quyet lien tich", "huong dan lien nganh", "phap lenh",
              "giay phep", "giay chung nhan", "cong van", "quyet dinh", "nghi dinh", "thong tu", "luat", "chi thi", "ke hoach",
              "thong bao", "bao cao", "giay moi", "to trinh", "cong dien", "huong dan",
              "chuong trinh", "bien ban", "nghi quyet", "van ban", "so", "ky hieu")
# In a subject (folded): the words that name a kind of document, "V/v" among them. A number
# right after one of them that is not the subject's first is what the document is about:
# "Công văn vướng mắc ... và Nghị định số 69/2018/NĐ-CP", "V/v trả lời Công văn số 99/...".
SUBJECT_TYPE = re.compile(r"(?<!\w)(?:v/v|ve viec|" + "|".join(t for t in TYPE_WORDS if t not in ("so", "ky hieu"))
                          + r")(?!\w)")
SUBJECT_TYPE_BEFORE = re.compile(r"(?<!\w)(?:" + "|".join(t for t in TYPE_WORDS if t not in ("so", "ky hieu"))
                                 + r")(?:\s+so)?[\s:]*$")
REF_TAIL = re.compile(r"(?:[\s:(\[,]+|(?<!\w)(?:" + "|".join(TYPE_WORDS) + r"))$")
REF_END = re.compile(r"(?<!\w)(?:" + "|".join(REFERENCE_WORDS) + r")$")

# Anywhere before a type word and its number, these make it a reference too:
# "sửa đổi, bổ sung một số điều của Thông tư số 145/2013/TT-BTC".
REF_ANY = re.compile(r"(?<!\w)(?:" + "|".join(REFERENCE_WORDS + (
    "cua", "thi hanh", "ket qua", "giay phep", "huong dan thi hanh", "quy dinh chi tiet")) + r")(?!\w)")

NOT_A_CUE = re.compile(r"\s+(?:them|duoc|ro|ve viec nay)(?!\w)")
# "Thời gian:" and "Địa điểm:" opening a line, searched for in "\n" + text: a pattern
# that starts with a line feed lets the regex engine jump from line to line, where
# "(?m)^" would have it try the pattern at every character.
# A draft: the "DỰ THẢO" stamp on a line of its own at the top of the page (Decree 30 leaves
# the number blank until signing), or a portal's call for comments opening the text
# ("Lấy ý kiến nhân dân về dự thảo văn bản quy phạm pháp luật ...").
DRAFT_STAMP = re.compile(r"^[ \t(\[]*(?:DỰ THẢO|Dự thảo)(?:[ \t]+(?:LẦN|lần)?[ \t]*\d{1,2})?[ \t)\].:]*$",
                         re.MULTILINE)
DRAFT_CALL = re.compile(r"\A\W{0,3}(?:Lấy ý kiến|LẤY Ý KIẾN|Góp ý|GÓP Ý)[^\n]{0,80}?(?:dự thảo|DỰ THẢO)")

TIME_PLACE = (re.compile(r"\n\W{0,3}(?:thời gian|thoi gian)\s*:", re.IGNORECASE),
              re.compile(r"\n\W{0,3}(?:địa điểm|dia diem)\s*:", re.IGNORECASE))

CATEGORY_HEADERS = ("X-GovVN-Category", "X-GovVN-Doc-Category")
TYPE_HEADERS = ("X-GovVN-Doc-Type", "X-GovVN-DocType")
NUMBER_HEADERS = ("X-GovVN-Doc-Number", "X-GovVN-DocNumber", "X-GovVN-Number")
SECRECY_HEADERS = ("X-GovVN-Secrecy",)
URGENCY_HEADERS = ("X-GovVN-Urgency",)
