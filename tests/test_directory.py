"""The official directory: loading, lookups, delegation, and publishing the list of official addresses."""

from __future__ import annotations

import csv
import datetime
import html.parser
import io
import pathlib
import textwrap

import pytest
import yaml

from mailgw.config import yamlfile
from mailgw.directory import model as directory
from mailgw.directory.publish import publish_csv, publish_html

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEMO = ROOT / "directory.yaml"
BAD = pathlib.Path(__file__).resolve().parent / "data" / "bad_directories"
TODAY = datetime.date(2025, 6, 1)


@pytest.fixture(scope="module")
def demo() -> directory.Directory:
    return directory.load(DEMO, today=TODAY)


def _write(tmp_path: pathlib.Path, text: str, name: str = "directory.yaml") -> pathlib.Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --- the demo directory ------------------------------------------------------


def test_demo_directory_is_clean() -> None:
    assert directory.check(DEMO, today=TODAY) == []
    # And it stays clean with the real date: its dated entries run to 2099.
    assert directory.check(DEMO) == []


# Every address at the local domain used by the examples E1-E21 of VN-DOCUMENTS section 10.
EXAMPLE_ADDRESSES = {
    "hanh.vp@binhthuan.gov.vn": "sotttt",
    "cbcc.sotttt@binhthuan.gov.vn": "sotttt",
    "vp.sotttt@binhthuan.gov.vn": "sotttt",
    "vanthu.sotttt@binhthuan.gov.vn": "sotttt",
    "vanthu.snv@binhthuan.gov.vn": "snv",
    "it@binhthuan.gov.vn": "sotttt",
    "user@binhthuan.gov.vn": "ubnd",
    "nvan@binhthuan.gov.vn": "ubnd",
    "kh@binhthuan.gov.vn": "ubnd",
    "ld@binhthuan.gov.vn": "ubnd",
    "vp@binhthuan.gov.vn": "ubnd",
    "vanthu@binhthuan.gov.vn": "ubnd",
    "giamdoc@binhthuan.gov.vn": "stc",
    "ketoan@binhthuan.gov.vn": "stc",
}


@pytest.mark.parametrize("address, agency", sorted(EXAMPLE_ADDRESSES.items()))
def test_demo_has_the_example_mailboxes(demo: directory.Directory, address: str, agency: str) -> None:
    box = demo.mailbox(address)
    assert box is not None and box.address == address
    assert box.agency.code == agency
    assert demo.agency_of(address) is box.agency
    assert demo.is_local(address) and demo.is_official(address, TODAY)


def test_demo_shape(demo: directory.Directory) -> None:
    assert [a.code for a in demo.agencies] == ["ubnd", "sotttt", "snv", "stc", "skhdt"]
    assert demo.local_domains == frozenset({"binhthuan.gov.vn", "stttt.binhthuan.gov.vn"})
    assert demo.official_suffixes == ("gov.vn",)
    sotttt = demo.agency("sotttt")
    assert sotttt is not None and sotttt.name == "Sở Thông tin và Truyền thông" and sotttt.organ_code == "000.00.12.H11"
    clerk = demo.mailbox("vanthu.sotttt@binhthuan.gov.vn")
    assert clerk is not None and clerk.roles == frozenset({"clerk"}) and clerk.unit is not None and clerk.unit.code == "vp"
    # The long (mapping) form reads the same as the one-line form.
    hanh = demo.mailbox("hanh.vp@binhthuan.gov.vn")
    assert hanh is not None and hanh.name == "Nguyễn Thị Hạnh" and hanh.unit is clerk.unit and hanh.roles == frozenset({"staff"})
    moha = demo.partner_of("vanthu@moha.gov.vn")
    assert moha is not None and [(p.domain, p.selector) for p in moha.dkim] == [("moha.gov.vn", "mail")]
    assert demo.partner_of("vanthu@mic.gov.vn").dkim == ()
    assert demo.warnings == ()


def test_version_is_a_hash_of_the_bytes(tmp_path: pathlib.Path) -> None:
    text = DEMO.read_text(encoding="utf-8")
    a = directory.load(_write(tmp_path, text, "a.yaml"), today=TODAY)
    b = directory.load(_write(tmp_path, text, "b.yaml"), today=TODAY)
    c = directory.load(_write(tmp_path, text + "\n# một dòng chú thích\n", "c.yaml"), today=TODAY)
    assert a.version == b.version != c.version
    assert len(a.version) == 12 and int(a.version, 16) >= 0


# --- local, official, lookalike ---------------------------------------------


@pytest.mark.parametrize(
    "address, local, official",
    [
        ("vanthu@binhthuan.gov.vn", True, True),
        ("VanThu@BinhThuan.GOV.VN", True, True),
        ("unlisted@binhthuan.gov.vn", True, True),
        ("x@mail.binhthuan.gov.vn", True, True),  # a subdomain of a local domain
        ("vanthu@binhthuan.gov.vn.", False, False),  # a trailing dot is not the same domain
        ("vanthu@binhthuan..gov.vn", False, False),
        ("thongbao@binhthuan-gov.vn", False, False),  # E13
        ("a@gov.vn.evil.com", False, False),
        ("a@binhthuan.gov.vn.com", False, False),
        ("a@xgov.vn", False, False),  # a suffix only counts on a label boundary
        ("a@gov.vn", False, False),  # the suffix itself is no agency's domain
        ("vanthu@danang.gov.vn", False, True),  # partner, and under .gov.vn
        ("x@quangnam.gov.vn", False, True),  # official suffix only
        ("x@mail.mic.gov.vn", False, True),  # a partner's subdomain
        ("vanthu@binhthuаn.gov.vn", False, True),  # Cyrillic "а": not local, though under .gov.vn
        ("nvan.canhan@gmail.com", False, False),  # E12
        ("lienhe@gmail.com", False, False),  # E19
        ("ubnd.xatanthanh.htn@gmail.com", False, True),  # a temporary exception, valid to 2099
        ("UBND.XaTanThanh.HTN@Gmail.com", False, True),
        ("vanthu@ｂinhthuan。gov。vn", True, True),  # full-width letter and ideographic dots fold (UTS 46)
        ("no-at-sign", False, False),
        ("@binhthuan.gov.vn", False, False),
        ("", False, False),
    ],
)
def test_local_and_official(demo: directory.Directory, address: str, local: bool, official: bool) -> None:
    assert demo.is_local(address) is local
    assert demo.is_official(address, TODAY) is official


def test_local_domain(demo: directory.Directory) -> None:
    assert demo.is_local_domain("binhthuan.gov.vn")
    assert demo.is_local_domain("BinhThuan.GOV.VN")
    assert demo.is_local_domain("mail.stttt.binhthuan.gov.vn")
    assert not demo.is_local_domain("binhthuan.gov.vn.")
    assert not demo.is_local_domain("gov.vn")
    assert not demo.is_local_domain("binhthuan-gov.vn")
    assert not demo.is_local_domain("evilbinhthuan.gov.vn")


def test_agency_of_uses_the_mailbox_then_a_domain_of_one_agency(demo: directory.Directory) -> None:
    assert demo.agency_of("vanthu.snv@binhthuan.gov.vn") is demo.agency("snv")
    # binhthuan.gov.vn is shared by five agencies: an unlisted box there belongs to none of them.
    assert demo.agency_of("unlisted@binhthuan.gov.vn") is None
    # stttt.binhthuan.gov.vn belongs to Sở TT&TT alone, subdomains included.
    assert demo.agency_of("portal@stttt.binhthuan.gov.vn") is demo.agency("sotttt")
    assert demo.agency_of("x@mail.stttt.binhthuan.gov.vn") is demo.agency("sotttt")
    assert demo.agency_of("vanthu@mic.gov.vn") is None


def test_partner_of(demo: directory.Directory) -> None:
    danang = demo.partner_of("VanThu@DaNang.gov.vn")
    assert danang is not None and danang.name == "Ủy ban nhân dân thành phố Đà Nẵng" and danang.dkim == ()
    assert demo.partner_of("a@mic.gov.vn.evil.com") is None
    assert demo.partner_of("a@vanthu.binhthuan.gov.vn") is None


IDN_DIRECTORY = """\
    agencies:
      - code: ubnd
        name: Ủy ban nhân dân tỉnh
        domains: [bìnhthuận.vn, xn--lmng-boa7zy25p.vn]
        mailboxes:
          - vanthu@BìnhThuận.VN   | Văn thư | - | clerk
          - vp@xn--lmng-boa7zy25p.vn   | Văn phòng | - | unit
    partners:
      - name: Đối tác IDN
        domains: [đànẵng.vn]
"""


def test_idn_domains_compare_in_their_ascii_form(tmp_path: pathlib.Path) -> None:
    d = directory.load(_write(tmp_path, IDN_DIRECTORY), today=TODAY)
    binh = "bìnhthuận.vn".encode("idna").decode()
    assert binh.startswith("xn--")
    assert d.local_domains == frozenset({binh, "xn--lmng-boa7zy25p.vn"})
    # Written in Unicode or in xn-- form, any case: the same mailbox.
    for address in ("vanthu@bìnhthuận.vn", "VANTHU@BÌNHTHUẬN.VN", f"vanthu@{binh}", f"VanThu@{binh.upper()}"):
        box = d.mailbox(address)
        assert box is not None and box.address == f"vanthu@{binh}", address
    assert d.mailbox("vp@lâmđồng.vn") is d.mailbox("vp@xn--lmng-boa7zy25p.vn") is not None
    assert d.is_local("x@sub.bìnhthuận.vn")
    assert not d.is_local("x@binhthuan.vn")  # the letters without their marks are another domain
    assert d.partner_of("x@ĐÀNẴNG.VN") is not None
    assert d.is_official("x@đànẵng.vn", TODAY)
    assert not d.is_official("x@danang.vn", TODAY)


# --- temporary exceptions ----------------------------------------------------


EXCEPTIONS = """\
    agencies:
      - code: ubnd
        name: Ủy ban nhân dân tỉnh
        domains: [binhthuan.gov.vn]
        mailboxes:
          - vanthu@binhthuan.gov.vn | Văn thư | - | clerk
    exceptions:
      - address: old@gmail.com
        until: 2025-05-31
        name: Hộp thư cũ
        reason: đã có hộp thư công vụ
      - address: Tam@Gmail.com
        until: 2025-06-30
        name: Hộp thư tạm
        reason: chờ cấp hộp thư công vụ
        agency: ubnd
"""


def test_an_expired_exception_is_an_error_for_check_and_stops_counting_when_serving(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, EXCEPTIONS)
    problems = directory.check(path, today=TODAY)
    assert [str(p) for p in problems] == [
        f"{path}:9: temporary exception for old@gmail.com expired on 2025-05-31: remove it or set a new date"
    ]
    d = directory.load(path, today=TODAY)
    assert [str(p) for p in d.warnings] == [
        f"{path}:9: warning: temporary exception for old@gmail.com expired on 2025-05-31; it no longer counts"
    ]
    assert not d.is_official("old@gmail.com", TODAY)
    assert d.exception_for("old@gmail.com", TODAY) is None
    # A date passing while the gateway runs has the same effect, without a reload.
    assert d.is_official("tam@gmail.com", TODAY)
    assert d.is_official("tam@gmail.com", datetime.date(2025, 6, 30))  # the last day counts
    assert not d.is_official("tam@gmail.com", datetime.date(2025, 7, 1))
    exception = d.exception_for("TAM@gmail.com", TODAY)
    assert exception is not None and exception.until == datetime.date(2025, 6, 30) and exception.agency is d.agency("ubnd")


# --- delegation and public service --------------------------------------------


def test_may_send_as(demo: directory.Directory) -> None:
    clerk = "vanthu.sotttt@binhthuan.gov.vn"
    assert demo.may_send_as(clerk, clerk)
    assert demo.may_send_as("VanThu.SoTTTT@BinhThuan.gov.vn", clerk)
    assert demo.may_send_as(clerk, "giamdoc.sotttt@binhthuan.gov.vn")
    assert demo.may_send_as(clerk, "VP.SoTTTT@binhthuan.gov.vn")
    # Delegation is one way, and only what is listed.
    assert not demo.may_send_as("giamdoc.sotttt@binhthuan.gov.vn", clerk)
    assert not demo.may_send_as(clerk, "vanthu.snv@binhthuan.gov.vn")
    assert not demo.may_send_as(clerk, "giamdoc.sotttt@binhthuan.gov.vn.")
    assert not demo.may_send_as("hanh.vp@binhthuan.gov.vn", "vp.sotttt@binhthuan.gov.vn")
    assert not demo.may_send_as("", "")


def test_a_delegation_ends_on_its_date(tmp_path: pathlib.Path) -> None:
    path = _write(
        tmp_path,
        """\
        agencies:
          - code: snv
            name: Sở Nội vụ
            domains: [binhthuan.gov.vn]
            mailboxes:
              - vanthu.snv@binhthuan.gov.vn  | Văn thư | - | clerk
              - giamdoc.snv@binhthuan.gov.vn | Giám đốc | - | leader
        delegations:
          - login: vanthu.snv@binhthuan.gov.vn
            send_as: [giamdoc.snv@binhthuan.gov.vn]
            until: 2025-06-15
        """,
    )
    d = directory.load(path, today=TODAY)
    assert d.may_send_as("vanthu.snv@binhthuan.gov.vn", "giamdoc.snv@binhthuan.gov.vn", datetime.date(2025, 6, 15))
    assert not d.may_send_as("vanthu.snv@binhthuan.gov.vn", "giamdoc.snv@binhthuan.gov.vn", datetime.date(2025, 6, 16))
    assert directory.check(path, today=TODAY) == []


def test_public_service(demo: directory.Directory) -> None:
    assert demo.is_public_service("motcua@binhthuan.gov.vn")
    assert demo.is_public_service("MotCua@BinhThuan.gov.vn")
    assert not demo.is_public_service("vanthu@binhthuan.gov.vn")
    assert not demo.is_public_service("motcua@danang.gov.vn")
    box = demo.mailbox("motcua@binhthuan.gov.vn")
    assert box is not None and box.agency.code == "ubnd" and "public_service" in box.roles


# --- bad directories ----------------------------------------------------------


BAD_FILES = sorted(p.name for p in BAD.glob("*.yaml"))


def test_every_bad_directory_has_its_expected_error() -> None:
    assert len(BAD_FILES) >= 15
    for name in BAD_FILES:
        assert (BAD / name).with_suffix(".expected-error").is_file(), name


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_directory(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Run from the folder so that the file names in the messages are the bare names.
    monkeypatch.chdir(BAD)
    expected = (BAD / name).with_suffix(".expected-error").read_text(encoding="utf-8").splitlines()
    problems = directory.check(name, today=TODAY)
    assert [str(p) for p in problems] == expected
    # load reports the same errors, except that a date passing is no error for a running gateway.
    load_errors = [str(p) for p in problems if not p.warning and "expired on" not in p.message]
    if load_errors:
        with pytest.raises(yamlfile.ConfigError) as raised:
            directory.load(name, today=TODAY)
        assert [str(p) for p in raised.value.problems if not p.warning] == load_errors
    else:
        warnings = [str(p) for p in directory.load(name, today=TODAY).warnings]
        assert len(warnings) == len(expected)
        assert all(w in expected or "no longer counts" in w for w in warnings)


def test_a_missing_file_is_reported(tmp_path: pathlib.Path) -> None:
    problems = directory.check(tmp_path / "nothing.yaml")
    assert len(problems) == 1 and problems[0].line == 0 and "cannot read" in problems[0].message
    with pytest.raises(yamlfile.ConfigError):
        directory.load(tmp_path / "nothing.yaml")


def test_an_empty_file_is_reported(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "# chỉ có chú thích\n")
    assert [str(p) for p in directory.check(path)] == [f"{path}:1: the directory must be a mapping, not empty"]


# --- yamlfile with libyaml ---------------------------------------------------


def test_yamlfile_values_match_the_safe_loader() -> None:
    text = textwrap.dedent(
        """\
        base: &base {a: 1, b: [x, "y", 2.5, null, true]}
        merged:
          <<: *base
          c: 2025-06-01
        text: |
          hai dòng
          tiếng Việt
        quoted: '007'
        """
    )
    value = yamlfile.loads(text)
    assert value == yaml.safe_load(text)
    assert value.line_of("merged") == 2 and value["merged"].line_of("c") == 4


@pytest.mark.parametrize("path", [DEMO, *(BAD / name for name in sorted(p.name for p in BAD.glob("*.yaml")))], ids=lambda p: p.name)
def test_yamlfile_reads_the_same_with_or_without_libyaml(path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read() -> tuple[object, list[str]]:
        try:
            tree = yamlfile.load(path)
        except yamlfile.ConfigError as e:
            return None, [str(p) for p in e.problems]
        return (tree, _lines(tree)), [str(p) for p in directory.check(path, today=TODAY)]

    fast = read()
    monkeypatch.setattr(yamlfile, "_FAST_LOADER", yaml.SafeLoader)
    assert read() == fast


def _lines(value: object) -> list[object]:
    """Every line number a tree remembers, in order."""
    if isinstance(value, yamlfile.YMap):
        return [value.line, sorted(value.key_lines.items(), key=str), *(_lines(v) for v in value.values())]
    if isinstance(value, yamlfile.YList):
        return [value.line, value.item_lines, *(_lines(v) for v in value)]
    return []


def test_yamlfile_errors_are_the_pure_python_loaders() -> None:
    # libyaml says "mapping values are not allowed in this context"; the reference wording is kept.
    with pytest.raises(yamlfile.ConfigError) as raised:
        yamlfile.loads("a: b: c\n", "x.yaml")
    assert [str(p) for p in raised.value.problems] == ["x.yaml:1: YAML syntax: mapping values are not allowed here"]
    with pytest.raises(yamlfile.ConfigError) as raised:
        yamlfile.loads("a: *missing\n", "x.yaml")
    assert [str(p) for p in raised.value.problems] == ["x.yaml:1: YAML syntax: found undefined alias 'missing'"]
    with pytest.raises(yamlfile.ConfigError) as raised:
        yamlfile.loads("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n", "x.yaml")
    assert [str(p) for p in raised.value.problems] == [
        "x.yaml:4: duplicate key 'c' (first at line 3)",
        "x.yaml:5: duplicate key 'a' (first at line 1)",
    ]


# --- publishing --------------------------------------------------------------


class _Page(html.parser.HTMLParser):
    """Collects a page's text, links and classes, and checks that its elements nest properly."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []
        self.links: list[str] = []
        self.tags: list[str] = []
        self.rows: list[tuple[str, str]] = []  # (class of the <tr>, its text)
        self._row: list[str] | None = None
        self._row_class = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        if tag == "tr":
            self._row, self._row_class = [], a.get("class") or ""
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag == "tr" and self._row is not None:
            self.rows.append((self._row_class, " ".join(self._row)))
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._row is not None:
            self._row.append(data.strip())


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert parser.errors == [] and parser.stack == [], (parser.errors, parser.stack)
    return parser


def test_publish_html(demo: directory.Directory) -> None:
    page = publish_html(demo, today=TODAY)
    assert page.startswith("<!DOCTYPE html>")
    parsed = _parse(page)
    text = " ".join(parsed.text)
    assert "Danh bạ thư điện tử công vụ tỉnh Bình Thuận" in text and "Official e-mail directory" in text
    # Every official address is there, as a mail link; nothing is fetched from elsewhere.
    for box in demo.mailboxes:
        assert f"mailto:{box.address}" in parsed.links
    assert "mailto:ubnd.xatanthanh.htn@gmail.com" in parsed.links
    assert not {"script", "link", "img", "iframe"} & set(parsed.tags)
    assert all(link.startswith("mailto:") for link in parsed.links)
    # The public-service mailboxes are highlighted.
    public_rows = [row for cls, row in parsed.rows if cls == "public-service"]
    assert any("motcua@binhthuan.gov.vn" in row for row in public_rows)
    assert not any("vanthu@binhthuan.gov.vn" in row for row in public_rows)
    # The temporary exception shows its end date and a flag.
    exception_rows = [(cls, row) for cls, row in parsed.rows if "ubnd.xatanthanh.htn@gmail.com" in row]
    assert exception_rows == [("temporary", exception_rows[0][1])]
    assert "31/12/2099" in exception_rows[0][1] and "Tạm thời / Temporary" in exception_rows[0][1]
    assert "Văn thư" in text and "Clerk (records office)" in text
    assert "mic.gov.vn" in text and "*.gov.vn" in text


def test_publish_html_flags_expiring_and_expired_exceptions(tmp_path: pathlib.Path) -> None:
    d = directory.load(_write(tmp_path, EXCEPTIONS), today=TODAY)
    rows = dict((row.split()[0], cls) for cls, row in _parse(publish_html(d, today=TODAY)).rows if "@gmail.com" in row)
    assert rows == {"old@gmail.com": "expired", "tam@gmail.com": "expiring"}


PAGE_TAGS = "html head meta title style body header h1 h2 p span code section table thead tbody tr th td a br ul li footer time"


def test_publish_escapes_everything(tmp_path: pathlib.Path) -> None:
    path = _write(
        tmp_path,
        """\
        name: "<script>alert('danh bạ')</script>"
        agencies:
          - code: ubnd
            name: "UBND <b>tỉnh</b> & \\"Văn phòng\\""
            name_en: "</span><img src=x onerror=alert(1)>"
            domains: [binhthuan.gov.vn]
            units:
              - {code: vp, name: "<i>Văn phòng</i>"}
            mailboxes:
              - "o'brien&co@binhthuan.gov.vn | <em>Nguyễn</em> \\"An\\" | vp | clerk"
              - "=cmd@binhthuan.gov.vn | =HYPERLINK(\\"http://x\\") | vp | staff"
        """,
    )
    d = directory.load(path, today=TODAY)
    page = publish_html(d, today=TODAY)
    parsed = _parse(page)
    # Only the page's own structure: no element came from the data.
    assert set(parsed.tags) <= set(PAGE_TAGS.split())
    text = " ".join(parsed.text)
    assert "<script>alert('danh bạ')</script>" in text
    assert "<img src=x onerror=alert(1)>" in text and "<em>Nguyễn</em>" in text
    assert "mailto:o'brien&co@binhthuan.gov.vn" in parsed.links

    rows = list(csv.reader(io.StringIO(publish_csv(d).removeprefix("\ufeff"))))
    by_address = {row[1].lstrip("'"): row for row in rows[1:]}
    # A cell that a spreadsheet would run as a formula is quoted with a leading apostrophe.
    assert by_address["=cmd@binhthuan.gov.vn"][1] == "'=cmd@binhthuan.gov.vn"
    assert by_address["=cmd@binhthuan.gov.vn"][2] == '\'=HYPERLINK("http://x")'
    assert by_address["o'brien&co@binhthuan.gov.vn"][2] == '<em>Nguyễn</em> "An"'


def test_publish_csv(demo: directory.Directory, tmp_path: pathlib.Path) -> None:
    data = publish_csv(demo)
    out = tmp_path / "danh-ba.csv"
    out.write_text(data, encoding="utf-8", newline="")
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    with open(out, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header[:3] == ["Loại / Kind", "Địa chỉ thư / Address", "Tên / Name"]
    assert all(len(row) == len(header) for row in body)
    by_address = {row[1]: dict(zip(header, row, strict=True)) for row in body}
    assert set(by_address) == {m.address for m in demo.mailboxes} | {"ubnd.xatanthanh.htn@gmail.com"}
    motcua = by_address["motcua@binhthuan.gov.vn"]
    assert motcua["Dịch vụ công / Public service"] == "Có / yes"
    assert motcua["Cơ quan / Agency"] == "Ủy ban nhân dân tỉnh Bình Thuận"
    assert motcua["Đơn vị / Unit"] == "Trung tâm Phục vụ hành chính công tỉnh"
    clerk = by_address["vanthu.sotttt@binhthuan.gov.vn"]
    assert clerk["Vai trò / Roles"] == "Văn thư (clerk)" and clerk["Mã định danh / Organ code"] == "000.00.12.H11"
    assert clerk["Dịch vụ công / Public service"] == ""
    exception = by_address["ubnd.xatanthanh.htn@gmail.com"]
    assert exception["Hiệu lực đến / Valid until"] == "2099-12-31"
    assert exception["Loại / Kind"] == "Ngoại lệ tạm thời / temporary exception"
