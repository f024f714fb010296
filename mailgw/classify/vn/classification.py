"""The classify stage's result: what official document a message carries."""

from __future__ import annotations

import dataclasses
from typing import Any

CATEGORIES = (
    "meeting_invitation", "meeting_material", "report", "announcement", "official_letter",
    "decision", "directive", "plan", "programme", "work_schedule", "direction", "submission",
    "official_telegram", "minutes", "guidance", "introduction_letter", "draft_for_comment",
    "legal_normative", "administrative_other", "general",
)
WHERE = ("header", "subject", "body", "attachment_name", "attachment_text")


@dataclasses.dataclass(frozen=True)
class Evidence:
    """One cue that counted: what it was, where it was found, and the text as written."""

    cue: str
    where: str
    text: str

    def to_json(self) -> dict[str, str]:
        return {"cue": self.cue, "where": self.where, "text": self.text}


@dataclasses.dataclass(frozen=True)
class Classification:
    """Category, number/symbol, secrecy and urgency of a message, with the evidence.

    The field names are published JSON names (the record, `policy test`, `mailgw classify`): keep them.
    """

    category: str = "general"
    doc_type: str | None = None
    doc_number: str | None = None
    secrecy: str = "none"             # none, mat, toi_mat, tuyet_mat
    secrecy_strength: str = "none"    # none, weak, strong
    declassified: bool = False
    urgency: str = "none"             # none, khan, thuong_khan, hoa_toc
    confidence: float = 0.0
    evidence: tuple[Evidence, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "doc_type": self.doc_type,
            "doc_number": self.doc_number,
            "secrecy": self.secrecy,
            "secrecy_strength": self.secrecy_strength,
            "declassified": self.declassified,
            "urgency": self.urgency,
            "confidence": round(self.confidence, 2),
            "evidence": [e.to_json() for e in self.evidence],
        }
