"""Publishing the official directory: the list of official addresses for the portal, as HTML or CSV.

Off the message path: ``mailgw directory publish`` calls it. Directive 34/2008
asks agencies to publish their official addresses so that citizens and other
agencies can tell a real one from an impostor.
"""

from __future__ import annotations

import csv
import datetime
import html
import io
from typing import Iterable

import idna

from mailgw.directory.model import ROLES, Agency, Directory, Mailbox, TemporaryException

# An exception this close to its end is flagged, so that it is renewed or replaced in time.
_EXPIRING_SOON = datetime.timedelta(days=30)

_CSS = """
:root {
  --ink: #1a1a1a; --muted: #5a5a5a; --line: #c8c8c8; --accent: #8b0000; --public: #fff3c4; --warn: #fde2e1;
}
* { box-sizing: border-box; }
body {
  font-family: "Times New Roman", "Noto Serif", serif; color: var(--ink);
  margin: 2rem auto; max-width: 60rem; padding: 0 1rem; line-height: 1.4;
}
h1 { font-size: 1.6rem; margin: 0; text-transform: uppercase; text-align: center; }
h2 { font-size: 1.2rem; margin: 2rem 0 0.3rem; border-bottom: 2px solid var(--accent); padding-bottom: 0.2rem; }
.en { display: block; font-size: 0.85em; font-style: italic; color: var(--muted); font-weight: normal; text-transform: none; }
header { margin-bottom: 1.5rem; text-align: center; }
.meta { color: var(--muted); font-size: 0.9rem; }
table { width: 100%; border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.95rem; }
th, td { border: 1px solid var(--line); padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; }
thead th { background: #f0f0f0; }
tr.unit th { background: #fafafa; font-weight: bold; }
td.address { font-family: "DejaVu Sans Mono", "Courier New", monospace; white-space: nowrap; }
a { color: inherit; }
tr.public-service td { background: var(--public); }
.badge {
  display: inline-block; font-size: 0.75rem; font-family: sans-serif; white-space: nowrap;
  border: 1px solid currentColor; border-radius: 0.2rem; padding: 0 0.25rem; margin-left: 0.3rem;
}
.badge.public-service { color: #7a5a00; }
.badge.temporary { color: var(--accent); }
tr.expired td { background: var(--warn); text-decoration: line-through; }
tr.expiring td.until { background: var(--warn); font-weight: bold; }
ul.plain { padding-left: 1.2rem; }
footer { margin-top: 2rem; color: var(--muted); font-size: 0.8rem; border-top: 1px solid var(--line); padding-top: 0.5rem; }
@media print {
  body { margin: 0; max-width: none; font-size: 11pt; }
  a { text-decoration: none; }
  thead { display: table-header-group; }
  tr { break-inside: avoid; }
  h2 { break-after: avoid; }
}
"""


def publish_html(directory: Directory, *, today: datetime.date | None = None) -> str:
    """A self-contained, printable page listing the official addresses, Vietnamese first then English."""
    today = today or datetime.date.today()
    e = _e
    title = directory.name
    parts = [
        "<!DOCTYPE html>",
        '<html lang="vi">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{e(title)}{_en(directory.name_en)}</h1>",
        '<p class="meta">',
    ]
    if directory.updated:
        parts.append(f"Cập nhật ngày / Updated: {e(_vn_date(directory.updated))} · ")
    parts += [
        f"Phiên bản / Version: <code>{e(directory.version)}</code>",
        "</p>",
        "<p>Chỉ các địa chỉ dưới đây là địa chỉ thư điện tử công vụ. Thư tự xưng là của cơ quan nhà nước "
        "nhưng gửi từ địa chỉ khác có thể là giả mạo."
        '<span class="en">Only the addresses below are official. Mail that claims to come from a state agency '
        "but is sent from another address may be forged.</span></p>",
        "</header>",
    ]
    public = [m for m in directory.mailboxes if m.is_public_service]
    if public:
        parts += [
            '<section id="public-service">',
            f"<h2>Hộp thư dịch vụ công{_en('Public-service mailboxes')}</h2>",
            "<p>Dành cho người dân và doanh nghiệp khi thực hiện dịch vụ công."
            '<span class="en">For citizens and businesses using public services.</span></p>',
            "<table>",
            _thead(("Địa chỉ thư", "Address"), ("Tên", "Name"), ("Cơ quan", "Agency")),
            "<tbody>",
        ]
        for m in public:
            parts.append(
                f'<tr class="public-service"><td class="address">{_mailto(m.address)}</td>'
                f"<td>{e(m.name)}</td><td>{e(m.agency.name)}</td></tr>"
            )
        parts += ["</tbody>", "</table>", "</section>"]

    by_agency: dict[str, list[Mailbox]] = {a.code: [] for a in directory.agencies}
    for m in directory.mailboxes:
        by_agency[m.agency.code].append(m)
    for agency in directory.agencies:
        parts += _agency_section(agency, by_agency[agency.code])

    parts += [
        '<section id="official-domains">',
        f"<h2>Tên miền công vụ{_en('Official domains')}</h2>",
        "<p>Mọi địa chỉ thuộc các tên miền sau cũng là địa chỉ công vụ."
        '<span class="en">Every address under these domains is also official.</span></p>',
        '<ul class="plain">',
    ]
    for suffix in directory.official_suffixes:
        parts.append(f"<li><code>*.{e(_display_domain(suffix))}</code> (tên miền cơ quan nhà nước / state bodies' domains)</li>")
    for partner in directory.partners:
        domains = ", ".join(f"<code>{e(_display_domain(d))}</code>" for d in partner.domains)
        parts.append(f"<li>{e(partner.name)}{_en(partner.name_en)}{domains}</li>")
    parts += ["</ul>", "</section>"]

    if directory.exceptions:
        parts += [
            '<section id="temporary-exceptions">',
            f"<h2>Địa chỉ được công nhận tạm thời{_en('Temporary exceptions')}</h2>",
            "<p>Các địa chỉ sau được coi là địa chỉ công vụ đến hết ngày ghi bên cạnh, "
            "trong khi chờ cấp hộp thư công vụ."
            '<span class="en">These addresses count as official up to and including the date shown, '
            "while an official mailbox is being issued.</span></p>",
            "<table>",
            _thead(("Địa chỉ thư", "Address"), ("Của", "Belongs to"), ("Lý do", "Reason"), ("Hiệu lực đến hết ngày", "Valid until")),
            "<tbody>",
        ]
        for x in directory.exceptions:
            parts.append(_exception_row(x, today))
        parts += ["</tbody>", "</table>", "</section>"]

    parts += [
        "<footer>",
        f"Lập bởi mailgw từ danh bạ phiên bản {e(directory.version)}, ngày {e(_vn_date(today))}."
        f'<span class="en">Generated by mailgw from directory version {e(directory.version)} on {e(today.isoformat())}.</span>',
        "</footer>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


def publish_csv(directory: Directory) -> str:
    """The official addresses as CSV, with a BOM so that Excel reads the Vietnamese correctly.

    Write the result with ``encoding="utf-8", newline=""``. A cell that would
    start with = + - @ (which spreadsheets run as a formula) gets a leading '.
    """
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(
        [
            "Loại / Kind",
            "Địa chỉ thư / Address",
            "Tên / Name",
            "Cơ quan / Agency",
            "Mã cơ quan / Agency code",
            "Mã định danh / Organ code",
            "Đơn vị / Unit",
            "Vai trò / Roles",
            "Dịch vụ công / Public service",
            "Hiệu lực đến / Valid until",
        ]
    )
    for m in directory.mailboxes:
        writer.writerow(
            _cells(
                (
                    "Hộp thư / mailbox",
                    m.address,
                    m.name,
                    m.agency.name,
                    m.agency.code,
                    m.agency.organ_code or "",
                    m.unit.name if m.unit else "",
                    "; ".join(f"{ROLES[r][0]} ({r})" for r in _ordered_roles(m.roles)),
                    "Có / yes" if m.is_public_service else "",
                    "",
                )
            )
        )
    for x in directory.exceptions:
        writer.writerow(
            _cells(
                (
                    "Ngoại lệ tạm thời / temporary exception",
                    x.address,
                    x.name,
                    x.agency.name if x.agency else "",
                    x.agency.code if x.agency else "",
                    (x.agency.organ_code or "") if x.agency else "",
                    "",
                    "",
                    "",
                    x.until.isoformat(),
                )
            )
        )
    return out.getvalue()


def _agency_section(agency: Agency, mailboxes: list[Mailbox]) -> list[str]:
    e = _e
    facts = []
    if agency.organ_code:
        facts.append(f"Mã định danh / Organ code: <code>{e(agency.organ_code)}</code>")
    facts.append("Tên miền / Domains: " + ", ".join(f"<code>{e(_display_domain(d))}</code>" for d in agency.domains))
    parts = [
        f'<section class="agency" id="agency-{e(agency.code)}">',
        f"<h2>{e(agency.name)}{_en(agency.name_en)}</h2>",
        f'<p class="meta">{" · ".join(facts)}</p>',
        "<table>",
        _thead(("Địa chỉ thư", "Address"), ("Tên", "Name"), ("Vai trò", "Role")),
        "<tbody>",
    ]
    # Agency-wide boxes (leadership, all-staff lists) first, then each unit in the file's order.
    groups: list[tuple[str, str | None, list[Mailbox]]] = [("Chung toàn cơ quan", "Agency-wide", [])]
    by_unit: dict[str, list[Mailbox]] = {}
    for unit in agency.units:
        by_unit[unit.code] = []
        groups.append((unit.name, unit.name_en, by_unit[unit.code]))
    for m in mailboxes:
        (by_unit[m.unit.code] if m.unit else groups[0][2]).append(m)
    for name, name_en, members in groups:
        if not members:
            continue
        parts.append(f'<tr class="unit"><th colspan="3">{e(name)}{_en(name_en)}</th></tr>')
        for m in members:
            row_class = ' class="public-service"' if m.is_public_service else ""
            roles = "<br>".join(f"{e(ROLES[r][0])}{_en(ROLES[r][1])}" for r in _ordered_roles(m.roles))
            badge = '<span class="badge public-service">Dịch vụ công / Public service</span>' if m.is_public_service else ""
            parts.append(f'<tr{row_class}><td class="address">{_mailto(m.address)}{badge}</td><td>{e(m.name)}</td><td>{roles}</td></tr>')
    parts += ["</tbody>", "</table>", "</section>"]
    return parts


def _exception_row(x: TemporaryException, today: datetime.date) -> str:
    e = _e
    if not x.valid_on(today):
        row_class, flag = "expired", "Đã hết hạn / Expired"
    elif x.until - today <= _EXPIRING_SOON:
        row_class, flag = "expiring", "Sắp hết hạn / Expires soon"
    else:
        row_class, flag = "temporary", "Tạm thời / Temporary"
    owner = e(x.name) + (f"<br>{e(x.agency.name)}" if x.agency else "")
    return (
        f'<tr class="{row_class}"><td class="address">{_mailto(x.address)}</td><td>{owner}</td><td>{e(x.reason)}</td>'
        f'<td class="until"><time datetime="{e(x.until.isoformat())}">{e(_vn_date(x.until))}</time>'
        f'<span class="badge temporary">{e(flag)}</span></td></tr>'
    )


def _thead(*columns: tuple[str, str]) -> str:
    cells = "".join(f"<th>{_e(vi)}{_en(en)}</th>" for vi, en in columns)
    return f"<thead><tr>{cells}</tr></thead>"


def _mailto(address: str) -> str:
    shown = _display_address(address)
    return f'<a href="mailto:{_e(address)}">{_e(shown)}</a>'


def _display_address(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local}@{_display_domain(domain)}"


def _display_domain(domain: str) -> str:
    """The Unicode form of an IDN domain, for people to read; the ASCII form if it cannot be decoded."""
    if "xn--" not in domain:
        return domain
    try:
        decoded: str = idna.decode(domain)
        return decoded
    except (idna.IDNAError, UnicodeError):
        return domain


def _en(text: str | None) -> str:
    return f'<span class="en">{_e(text)}</span>' if text else ""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _vn_date(day: datetime.date) -> str:
    return day.strftime("%d/%m/%Y")


def _ordered_roles(roles: Iterable[str]) -> list[str]:
    order = list(ROLES)
    return sorted(roles, key=order.index)


def _cells(values: tuple[str, ...]) -> list[str]:
    # Spreadsheets run a cell that starts with one of these as a formula (CSV injection).
    return ["'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v for v in values]
