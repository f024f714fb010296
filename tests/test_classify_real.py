"""The classifier on messages made from real issued documents (tests/data/real/).

Each document's text is its own, as published (SOURCES.md says where from); the
expected category, number/symbol and marks were decided by reading the document,
not by running the classifier. The messages are built by
tests/data/real/make_messages.py the ways clerks send them (PDF, DOCX with the
abstract in a table cell, the page pasted in the body, office copies without a
number, file names with dates and slugs, subjects with and without diacritics).
"""

from __future__ import annotations

import collections
import email
import email.policy
import re
import sys

import pytest

from mailgw.classify.engine import classify
from tests.data.real import make_messages

pytest.importorskip("fpdf")
pytest.importorskip("docx")

CATEGORY_MIN = 0.95
NUMBER_MIN = 0.90


def _norm(number: str | None) -> str | None:
    return re.sub(r"\s+", "", number).upper() if number else None


@pytest.fixture(scope="module")
def results() -> list[tuple[make_messages.Case, dict[str, object]]]:
    out = []
    for case in make_messages.cases():
        msg = email.message_from_bytes(case.message, policy=email.policy.default)
        out.append((case, classify(msg).to_json()))  # type: ignore[arg-type]
    return out


def _table(results: list[tuple[make_messages.Case, dict[str, object]]]) -> dict[str, tuple[int, int, int]]:
    """Per expected category: (messages, category right, number right)."""
    rows: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for case, got in results:
        row = rows[case.category]
        row[0] += 1
        row[1] += got["category"] == case.category
        row[2] += _norm(got["doc_number"]) == _norm(case.number)  # type: ignore[arg-type]
    return {k: (v[0], v[1], v[2]) for k, v in sorted(rows.items())}


def _report(results: list[tuple[make_messages.Case, dict[str, object]]]) -> tuple[float, float]:
    table = _table(results)
    total = sum(r[0] for r in table.values())
    cat = sum(r[1] for r in table.values()) / total
    num = sum(r[2] for r in table.values()) / total
    lines = [f"{len(make_messages.documents())} documents, {total} messages",
             f"{'category':22} {'n':>4} {'category':>9} {'number':>7}"]
    for name, (n, c, d) in table.items():
        lines.append(f"{name:22} {n:4} {c / n:9.0%} {d / n:7.0%}")
    lines.append(f"{'overall':22} {total:4} {cat:9.1%} {num:7.1%}")
    for case, got in results:
        if got["category"] != case.category or _norm(got["doc_number"]) != _norm(case.number):  # type: ignore[arg-type]
            lines.append(f"  miss {case.id}: {got['category']} {got['doc_number']!r}"
                         f" (want {case.category} {case.number!r})")
    print("\n".join(lines), file=sys.stderr)
    return cat, num


@pytest.mark.xfail(reason="before the fixes: category 80.9 %, number/symbol 80.1 %", strict=False)
def test_accuracy_on_real_documents(results: list[tuple[make_messages.Case, dict[str, object]]]) -> None:
    category, number = _report(results)
    assert category >= CATEGORY_MIN, f"category right on {category:.1%} of the real messages"
    assert number >= NUMBER_MIN, f"number/symbol right on {number:.1%} of the real messages"


def test_no_false_secrecy_block(results: list[tuple[make_messages.Case, dict[str, object]]]) -> None:
    """No document of the corpus carries a secrecy mark unless the manifest says so: none is blocked."""
    blocked = [case.id for case, got in results
               if got["secrecy_strength"] == "strong" and case.secrecy == "none"]
    assert blocked == []
    missed = [case.id for case, got in results
              if case.secrecy != "none" and (got["secrecy"], got["secrecy_strength"]) != (case.secrecy, "strong")]
    assert missed == []


def test_urgency_as_marked(results: list[tuple[make_messages.Case, dict[str, object]]]) -> None:
    wrong = [(case.id, got["urgency"]) for case, got in results if got["urgency"] != case.urgency]
    assert wrong == []
