"""The web console over HTTP: login, sessions, CSRF, throttling, roles and scopes, and the access log.

The console application runs in-process behind Starlette's HTTP test client (httpx),
on the settings and exchange log of a gateway home (tests/console_home.py): records
the gateway's own pipeline made, and a message a real gateway run held.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient

from mailgw.console.app import create_app
from mailgw.console.guard import FREE_FAILURES
from tests.console_home import PASSWORDS, Home, build

PAGES = ["/", "/search", "/search?go=1", "/exchange/M-snv-stc", "/export?format=csv", "/report?period=2025-03",
         "/verify", "/access", "/queue", "/policies", "/replay", "/api/search", "/no-such-page"]
POSTS = ["/queue", "/replay", "/logout"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return build(tmp_path_factory.mktemp("console"))


@pytest.fixture(scope="module")
def app(home: Home) -> Iterator[Any]:
    application = create_app(str(home.settings))
    yield application
    application.state.console.close()


def _client(app: Any, ip: str = "192.0.2.10") -> TestClient:
    return TestClient(app, base_url="https://console.test", client=(ip, 40000), follow_redirects=False)


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _report_data(page: str) -> dict[str, Any]:
    """The numbers the report page embeds (mailgw/audit/report.py: anyone can re-check them)."""
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert m, page[:500]
    return dict(json.loads(m.group(1).replace("<\\/", "</")))


def login(app: Any, user: str, password: str | None = None, ip: str = "192.0.2.10") -> TestClient:
    c = _client(app, ip)
    form = c.get("/login")
    r = c.post("/login", data={"login": user, "password": password or PASSWORDS[user], "csrf": _csrf(form.text),
                               "next": "/search"})
    assert r.status_code == 303 and r.headers["location"] == "/search", r.text
    return c


def test_no_page_and_no_api_without_login(app: Any, home: Home) -> None:
    before = len(home.access())
    c = _client(app)
    for path in PAGES:
        r = c.get(path)
        if path.startswith("/api/") or path == "/no-such-page":
            assert r.status_code == 401, path
        else:
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
        assert "Kế hoạch" not in r.text and "M-snv-stc" not in r.text
    for path in POSTS:
        r = c.post(path, data={"action": "release", "id": home.held, "csrf": "x"})
        assert r.status_code == 401, path
    assert c.post("/login", content=b"login=" + b"x" * 100_000,
                  headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 413
    c.cookies.set("mailgw_console", "a-guessed-session-token", domain="console.test")
    assert c.get("/search?go=1").status_code == 303
    assert len(home.access()) == before  # nothing was read, so nothing to log


def test_session_cookie_is_httponly_strict_and_secure_and_logout_ends_it(app: Any) -> None:
    c = _client(app)
    form = c.get("/login")
    assert "HttpOnly" in form.headers["set-cookie"] and "SameSite=strict" in form.headers["set-cookie"]
    r = c.post("/login", data={"login": "kiemtra", "password": PASSWORDS["kiemtra"], "csrf": _csrf(form.text)})
    assert r.status_code == 303
    cookie = next(v for v in r.headers.get_list("set-cookie") if v.startswith("mailgw_console="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie
    assert r.headers["strict-transport-security"] and "frame-ancestors 'none'" in r.headers["content-security-policy"]
    page = c.get("/search")
    assert page.status_code == 200 and "Thanh tra tỉnh" in page.text
    token = c.cookies.get("mailgw_console")
    assert c.post("/logout", data={"csrf": _csrf(page.text)}).status_code == 303
    again = _client(app)
    again.cookies.set("mailgw_console", token or "", domain="console.test")
    assert again.get("/search").status_code == 303  # the old cookie no longer opens anything


def test_after_login_only_a_page_of_the_console_is_followed(app: Any) -> None:
    for target, lands in (("//evil.example/x", "/"), ("https://evil.example/", "/"), ("/\\evil.example", "/"),
                          ("/exchange/M-snv-stc", "/exchange/M-snv-stc")):
        c = _client(app)
        form = c.get("/login?" + urlencode({"next": target}))
        r = c.post("/login", data={"login": "kiemtra", "password": PASSWORDS["kiemtra"], "csrf": _csrf(form.text),
                                   "next": target})
        assert r.status_code == 303 and r.headers["location"] == lands, target


def test_a_post_without_the_session_csrf_token_is_refused(app: Any, home: Home) -> None:
    c = login(app, "quantri")
    token = _csrf(c.get("/queue").text)
    for data, headers in (({"action": "release", "id": home.held}, {}),
                          ({"action": "release", "id": home.held, "csrf": "not-the-token"}, {}),
                          ({"action": "release", "id": home.held, "csrf": token}, {"origin": "https://evil.example"})):
        r = c.post("/queue", data=data, headers=headers)
        assert r.status_code == 403 and "CSRF" in r.text
    assert not any(s == "released" for s, _ in home.deliveries(home.held))
    # The login form too: a login posted without the form's own token (login CSRF) is refused.
    fresh = _client(app)
    r = fresh.post("/login", data={"login": "quantri", "password": PASSWORDS["quantri"], "csrf": "forged"})
    assert r.status_code == 403 and "mailgw_console=" not in r.headers.get("set-cookie", "")


def test_an_auditor_cannot_reach_admin_actions(app: Any, home: Home) -> None:
    c = login(app, "kiemtra")
    token = _csrf(c.get("/search").text)
    for path in ("/queue", "/policies", "/replay"):
        assert c.get(path).status_code == 403, path
    r = c.post("/queue", data={"action": "release", "id": home.held, "csrf": token})
    assert r.status_code == 403
    r = c.post("/replay", data={"candidate": "official-to-unofficial-audit", "period": "2025-03", "csrf": token})
    assert r.status_code == 403
    assert not any(s == "released" for s, _ in home.deliveries(home.held))
    assert 'href="/queue"' not in c.get("/search").text  # not even offered


def test_a_scoped_auditor_sees_only_exchanges_with_a_party_in_its_agency(app: Any, home: Home) -> None:
    c = login(app, "kiemtra.snv")
    found = c.get("/search?go=1&limit=100")
    ids = set(re.findall(r'href="/exchange/([^"]+)"', found.text))
    # Sở Nội vụ (snv) is the sender or a recipient of exactly these.
    assert ids == {"M-snv-stc", "M-citizen-snv", home.held, home.queued}
    other = c.get("/exchange/M-sotttt-mic")
    missing = c.get("/exchange/no-such-exchange")
    assert other.status_code == missing.status_code == 404
    assert "Giấy mời" not in other.text and other.text.count("Không tìm thấy") == missing.text.count("Không tìm thấy")
    assert c.get("/exchange/M-snv-stc").status_code == 200
    api = c.get("/api/search?sender=vanthu.sotttt@binhthuan.gov.vn")
    assert {x["id"] for x in api.json()} == {home.queued}  # sotttt's letter to snv only, not to the ministry
    rows = list(csv.DictReader(io.StringIO(c.get("/export?format=csv").text)))
    assert {r["id"] for r in rows} == ids
    page = c.get("/report?period=2025-03").text
    report = _report_data(page)  # the report of what this auditor may see
    assert report["scope"] == ["snv"] and report["total"] == 2  # M-snv-stc, M-citizen-snv; not Sở TTTT's three
    assert "sotttt" not in json.dumps(report) and "Phạm vi" in page
    assert "Sở Nội vụ (snv)" in page and "Kế hoạch (plan)" in page  # names from the directory, categories in Vietnamese
    everything = _report_data(login(app, "kiemtra").get("/report?period=2025-03").text)
    assert "scope" not in everything and everything["total"] == 5 and "sotttt" in json.dumps(everything)
    assert c.get("/access").status_code == 403
    assert ("console show", "M-sotttt-mic") in [(cmd, a.get("id")) for cmd, a in home.access()]  # the try is on record


def test_search_filters_beyond_the_command_line(app: Any, home: Home) -> None:
    c = login(app, "kiemtra")

    def ids(query: str) -> set[str]:
        return {x["id"] for x in c.get("/api/search?" + query).json()}

    assert ids("subject=KẾ HOẠCH SỐ 20") == {"M-snv-stc"}  # case-insensitive, Vietnamese letters too
    assert ids("tag=channel:dms") == {"M-snv-stc", home.queued}
    assert ids("tag=unsigned-document&agency=snv") == {"M-snv-stc"}
    with home.db() as db:
        message_id = db.execute("SELECT message_id FROM audit_exchange WHERE id = 'M-stc-mic'").fetchone()[0]
    assert ids("message_id=" + message_id.strip("<>")) == {"M-stc-mic"}
    assert len(ids("client_ip=127.0.0.1")) == 7 and ids("client_ip=127.0.0.2") == set()
    assert ids("decision=quarantine") == {home.held}
    assert c.get("/api/search?since=yesterday").status_code == 400
    page = c.get("/search?go=1&category=plan")
    assert "Kế hoạch" in page.text and "Sở Nội vụ" in page.text  # category and agency by name


def test_an_admin_release_is_an_exchange_log_event_with_the_console_user(app: Any, home: Home) -> None:
    c = login(app, "quantri")
    page = c.get("/queue")
    assert home.held in page.text and "cách ly / held" in page.text
    r = c.post("/queue", data={"action": "release", "id": home.held, "reason": "người nhận xác nhận",
                               "csrf": _csrf(page.text)})
    assert r.status_code == 200 and "1 thư: release xong" in r.text
    [(status, reply)] = [d for d in home.deliveries(home.held) if d[0] == "released"]
    assert "console user quantri from 192.0.2.10" in reply and "người nhận xác nhận" in reply
    assert home.held not in Path(home.path / "spool" / "hold").iterdir().__repr__()
    shown = c.get(f"/exchange/{home.held}")
    assert "released" in shown.text and "console user quantri" in shown.text
    assert {x["id"] for x in c.get("/api/search?delivery=released").json()} == {home.held}


def test_the_policies_in_force_with_their_validation(app: Any, home: Home) -> None:
    c = login(app, "quantri")
    page = c.get("/policies")
    assert page.status_code == 200 and 'id="validation"' in page.text and "Hợp lệ" in page.text
    assert "20-official.yaml" in page.text and "official-to-unofficial" in page.text
    assert "official-to-unofficial-audit" in page.text and "hợp lệ / valid" in page.text  # the candidates too
    assert ("console policies", "quantri") in [(cmd, a.get("auditor")) for cmd, a in home.access()]


def test_replay_of_a_month_with_a_changed_rule(app: Any, home: Home) -> None:
    c = login(app, "quantri")
    token = _csrf(c.get("/replay").text)
    r = c.post("/replay", data={"candidate": "official-to-unofficial-audit", "period": "2025-03", "csrf": token})
    assert r.status_code == 200, r.text
    changed = re.findall(r'<tr class="change"><td><a href="/exchange/([^"]+)"', r.text)
    assert changed == ["M-sotttt-citizen"]  # the refused letter to a citizen would pass in audit mode
    assert '<b id="changed">1</b>' in r.text
    outside = c.post("/replay", data={"candidate": "../policies", "period": "2025-03", "csrf": token})
    assert outside.status_code == 400  # only folders inside 'candidates' are ever read
    broken = home.path / "candidates" / "broken"
    broken.mkdir()
    (broken / "10-x.yaml").write_text("rules:\n  - id: x\n    when: {colour: red}\n    action: reject\n")
    r = c.post("/replay", data={"candidate": "broken", "period": "2025-03", "csrf": token})
    assert r.status_code == 400 and f"{broken / '10-x.yaml'}:3:" in r.text  # FILE:LINE, nothing replayed


def test_a_strangers_subject_is_shown_as_text_never_as_markup(app: Any, home: Home) -> None:
    from mailgw.app import load_context
    from mailgw.audit.log import AuditLog
    from tests.made_records import SNV, letter, made

    ctx, _ = load_context(str(home.settings))
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    log = AuditLog.open(ctx.settings.database, "gw1")
    log.append([made(ctx, "M-evil", "2025-04-01T00:00:00Z", "mx", letter(evil, "a@example.com", SNV),
                     "a@example.com", [SNV])])
    log.close()
    c = login(app, "kiemtra")
    for page in (c.get("/search?go=1&since=2025-04-01&until=2025-04-01"), c.get("/exchange/M-evil")):
        assert "<script>" not in page.text and "<img" not in page.text
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text


def test_an_unused_session_ends() -> None:
    from mailgw.console.accounts import Account
    from mailgw.console.guard import Sessions

    now = [1000.0]
    sessions = Sessions(idle=1800, clock=lambda: now[0])
    s = sessions.start(Account("a", "$argon2id$", "auditor", None), "192.0.2.1")
    now[0] += 1799
    assert sessions.get(s.token) is s  # used: its idle time starts again
    now[0] += 1799
    assert sessions.get(s.token) is s
    now[0] += 1800
    assert sessions.get(s.token) is None and sessions.get(s.token) is None


def test_bad_logins_are_slowed_per_login_and_per_address(home: Home) -> None:
    app = create_app(str(home.settings))  # a throttle of its own
    try:
        for _ in range(FREE_FAILURES):
            c = _client(app, "198.51.100.1")
            r = c.post("/login", data={"login": "kiemtra", "password": "sai", "csrf": _csrf(c.get("/login").text)})
            assert r.status_code == 401 and "Sai tên đăng nhập" in r.text
        c = _client(app, "198.51.100.1")
        right = {"login": "kiemtra", "password": PASSWORDS["kiemtra"], "csrf": _csrf(c.get("/login").text)}
        locked = c.post("/login", data=right)
        assert locked.status_code == 429 and "tạm khóa" in locked.text  # even the right password waits
        c = _client(app, "203.0.113.7")  # the same login from elsewhere: still locked
        assert c.post("/login", data={**right, "csrf": _csrf(c.get("/login").text)}).status_code == 429
        c = _client(app, "198.51.100.1")  # another login from the guessing address: locked too
        other = {"login": "quantri", "password": PASSWORDS["quantri"], "csrf": _csrf(c.get("/login").text)}
        assert c.post("/login", data=other).status_code == 429
        c = _client(app, "203.0.113.8")  # that login elsewhere is not
        assert c.post("/login", data={**other, "csrf": _csrf(c.get("/login").text)}).status_code == 303
    finally:
        app.state.console.close()


def test_every_search_view_and_export_is_in_the_access_log_with_the_user(app: Any, home: Home) -> None:
    c = login(app, "kiemtra")
    start = len(home.access())
    for path in ("/search?go=1&sender=vanthu.snv@binhthuan.gov.vn", "/exchange/M-snv-stc", "/export?format=jsonl&agency=snv",
                 "/report?period=2025-03", "/verify", "/access"):
        assert c.get(path).status_code == 200, path
    logged = home.access()[start:]
    assert [cmd for cmd, _ in logged] == ["console search", "console show", "console export", "console report",
                                          "console verify", "console access"]
    assert all(a["auditor"] == "kiemtra" and a["via"] == "console from 192.0.2.10" for _, a in logged)
    assert logged[0][1]["sender"] == "vanthu.snv@binhthuan.gov.vn" and logged[1][1]["id"] == "M-snv-stc"
    assert logged[2][1]["format"] == "jsonl" and logged[3][1]["period"] == "2025-03"
    verified = c.get("/verify").text
    assert 'id="verdict" class="ok"' in verified and "gw1" in verified and "nhật ký truy cập / access log" in verified
    page = c.get("/access")
    assert "console show" in page.text and "M-snv-stc" in page.text and "kiemtra" in page.text
    assert json.loads(c.get("/export?format=jsonl&agency=snv").text.splitlines()[0])["id"]


def test_the_console_unit_keeps_the_gateways_hardening() -> None:
    from tests.conftest import REPO

    gateway = (REPO / "systemd" / "mailgw.service").read_text().splitlines()
    console = (REPO / "systemd" / "mailgw-console.service").read_text().splitlines()
    hardening = [line for line in gateway if line.startswith((
        "Protect", "Private", "Restrict", "NoNewPrivileges", "LockPersonality", "MemoryDenyWriteExecute", "UMask",
        "SystemCallArchitectures", "SystemCallFilter=@", "SystemCallFilter=~", "RemoveIPC", "ProcSubset", "User="))]
    assert len(hardening) > 20 and [line for line in hardening if line not in console] == []
    assert "ExecStart=/opt/mailgw/.venv/bin/mailgw console" in console and "CapabilityBoundingSet=" in console


def test_mailgw_check_checks_the_console_accounts(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    from mailgw.cli import main

    users = home.path / "console-users.yaml"
    good = users.read_text(encoding="utf-8")
    assert main(["check", "--config", str(home.settings)]) == 0
    users.write_text(good.replace("- snv", "- snvx"), encoding="utf-8")
    try:
        assert main(["check", "--config", str(home.settings)]) == 1
        err = capsys.readouterr().err
        assert f"{users}:" in err and "no agency 'snvx' in the directory" in err
    finally:
        users.write_text(good, encoding="utf-8")


def test_console_settings_and_accounts_errors_name_the_file_and_line(home: Home, tmp_path: Path) -> None:
    import yaml

    from mailgw.config import settings
    from mailgw.config.yamlfile import ConfigError
    from mailgw.console import accounts
    from mailgw.directory import model as directory

    data = yaml.safe_load(home.settings.read_text(encoding="utf-8"))
    data.update(directory=str(home.path / "directory.yaml"), policies=str(home.path / "policies"))
    for console, message in (({"users": "u.yaml"}, "missing"),
                             ({"listen": "0.0.0.0:8443", "users": "u.yaml", "tls": False}, "plain HTTP"),
                             ({"listen": "127.0.0.1:8443", "users": "u.yaml", "colour": "red"}, "unknown key 'colour'"),
                             ({"listen": "127.0.0.1:8443", "users": "u.yaml", "session_idle": "soon"}, "duration")):
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump({**data, "console": console}, allow_unicode=True), encoding="utf-8")
        with pytest.raises(ConfigError) as e:
            settings.load(str(path))
        assert any(message in str(p) and str(p).startswith(f"{path}:") and p.line > 0 for p in e.value.problems), \
            (message, e.value.problems)
    users = tmp_path / "users.yaml"
    users.write_text("users:\n  a:\n    password: plain\n    role: auditor\n  b:\n    password: '$argon2id$x'\n"
                     "    role: root\n  c:\n    password: '$argon2id$x'\n    role: auditor\n    scope: [snv/nope, xyz]\n",
                     encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        accounts.load(str(users), directory.load(str(home.path / "directory.yaml")))
    assert [(p.line, p.message.split(" (")[0]) for p in e.value.problems] == [
        (3, "the password of a must be an argon2 hash"), (7, "role must be one of auditor, admin, not 'root'"),
        (11, "no agency 'xyz' in the directory"), (11, "no unit 'nope' in agency 'snv'")]


def test_the_added_filters_and_scopes_in_the_query_code_on_both_databases(audit_url: str) -> None:
    """mailgw/audit/query.py, which search, export, replay and the console share, on SQLite and PostgreSQL."""
    import dataclasses

    from mailgw.audit import query
    from mailgw.audit.log import AuditLog, DeliveryEvent
    from mailgw.audit.store import open_engine
    from tests.made_records import like, stock

    kinds = sorted(stock())
    records = [like(k, f"Q-{k}") for k in kinds]
    log = AuditLog.open(audit_url, "gw1")
    log.append(records)
    log.delivery([DeliveryEvent(exchange_id="Q-letter", recipient="vanthu@mic.gov.vn", time="2025-03-01T00:01:00Z",
                                status="bounced", reply="550 5.1.1 no such user", attempt=1)])
    log.close()
    engine = open_engine(audit_url)

    def ids(**values: Any) -> set[str]:
        scope = values.pop("scope", None)
        f = dataclasses.replace(query.Filters.parse(values), scope=scope)
        with engine.connect() as conn:
            found = {x.id for x in query.search(conn, f)}
            assert found == {x.record.id for x in query.iter_export(conn, f)}  # export agrees with search
        return found

    def parties(r: dict[str, Any]) -> list[dict[str, Any]]:
        return [p for p in [r.get("sender") or {}, *r["recipients"]] if p]

    try:
        assert ids(subject="KẾ HOẠCH SỐ 20") == {"Q-unsigned"}
        assert ids(subject="báo cáo") == set()  # the secret report's subject is kept as a hash only
        tagged = {r["id"] for r in records if "unsigned-document" in r["decision"]["tags"]}
        assert tagged and ids(tag="unsigned-document") == tagged
        assert ids(tag="unsigned") == set()  # a whole tag, not a part of one
        mid = next(r for r in records if r["id"] == "Q-citizen")["header"]["message_id"]
        assert ids(message_id=mid) == ids(message_id=mid.strip("<>")) == {"Q-citizen"}
        assert ids(client_ip="127.0.0.1") == {r["id"] for r in records} and ids(client_ip="127.0.0.11") == set()
        assert ids(delivery="bounced") == {"Q-letter"} and ids(delivery="sent") == set()
        assert ids(scope=("snv",)) == {r["id"] for r in records if any(p.get("agency") == "snv" for p in parties(r))}
        unit = next((p["agency"], p["unit"]) for r in records for p in parties(r) if p.get("unit"))
        in_unit = {r["id"] for r in records if any((p.get("agency"), p.get("unit")) == unit for p in parties(r))}
        assert in_unit and ids(scope=("/".join(unit),)) == in_unit
        assert ids(scope=()) == set()
        assert ids(scope=("snv",), sender="vanthu.stc@binhthuan.gov.vn") == {"Q-unsigned"}
        with engine.connect() as conn:
            assert query.in_scope(conn, "Q-unsigned", ("snv",)) and not query.in_scope(conn, "Q-letter", ("snv",))
    finally:
        engine.dispose()


def test_the_added_filters_on_the_command_line(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    from mailgw.cli import main

    def ids(*flags: str) -> list[str]:
        assert main(["audit", "search", "--config", str(home.settings), "--json", *flags]) == 0
        return [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]

    assert ids("--subject", "kế hoạch số 20") == ["M-snv-stc"]
    assert sorted(ids("--tag", "channel:dms")) == sorted(["M-snv-stc", home.queued])
    assert ids("--client-ip", "127.0.0.2") == [] and ids("--message-id", "<no-such@test>") == []
    assert ids("--delivery", "bounced-by-admin") == []


def test_guesses_sent_all_at_once_are_counted_before_they_pass(home: Home) -> None:
    from concurrent.futures import ThreadPoolExecutor

    app = create_app(str(home.settings))  # a throttle of its own
    try:
        clients = [_client(app, "198.51.100.99") for _ in range(12)]
        tokens = [_csrf(c.get("/login").text) for c in clients]

        def guess(i: int) -> int:
            r = clients[i].post("/login", data={"login": "quantri", "password": f"sai-{i}", "csrf": tokens[i]})
            return int(r.status_code)

        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(guess, range(12)))
        # Two verifications at a time: at most one guess past the fifth failure is tried.
        assert FREE_FAILURES <= codes.count(401) <= FREE_FAILURES + 1 and codes.count(429) == 12 - codes.count(401)
    finally:
        app.state.console.close()
