"""The console's pages: Starlette routes over the audit, queue and policy code the command line uses.

Every route but the login form and the style sheet needs a session; the admin
routes need the admin role; every POST needs the session's CSRF token. Each
search, view, export, report, verification, access-log read, queue action and
replay is written to the auditor access log (mailgw/audit/access.py) with the
logged-in user *before* anything is read, as the commands do. An auditor with a
scope sees only exchanges with a party in its agencies or units: a search is
bounded by it in the query (mailgw/audit/query.py), and any other exchange is
"not found", whether listed or guessed by its URL.

The database and the spool are read off the event loop (Starlette's thread pool).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import html
import json
import logging
import os
import secrets
import threading
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator
from urllib.parse import urlencode

import jinja2
from sqlalchemy import Engine, select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from mailgw.audit import query
from mailgw.audit.access import log_access
from mailgw.audit.log import DELIVERY_STATUSES
from mailgw.audit.query import FILTER_NAMES, FilterError, Filters
from mailgw.audit.record import RecordError
from mailgw.audit.schema import ACCESS_CHAIN, Access, Exchange
from mailgw.audit.store import open_engine
from mailgw.classify.explain import CATEGORY_VI, CUE_VI, SECRECY_VI, URGENCY_VI, WHERE_VI
from mailgw.classify.vn.classification import CATEGORIES
from mailgw.config import settings as settings_mod
from mailgw.config.settings import ConsoleSettings, Settings
from mailgw.config.yamlfile import ConfigError, Problem
from mailgw.console import accounts as accounts_mod
from mailgw.console.guard import COOKIE, LOGIN_COOKIE, Session, Sessions, Throttle, same
from mailgw.directory import model as directory_mod
from mailgw.directory.model import Directory
from mailgw.queue import admin as queue_admin
from mailgw.queue.spool import Spool

log = logging.getLogger("mailgw.console")

def _vietnam() -> dt.tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("Asia/Ho_Chi_Minh")
    except Exception:  # no tz database on this host: Vietnam has kept UTC+7 without daylight saving since 1975
        return query.VN_TZ


VN = _vietnam()

DECISIONS = ("accept", "reject", "quarantine", "defer")
DECISION_VI = {"accept": "Chấp nhận", "reject": "Từ chối", "quarantine": "Cách ly", "defer": "Hoãn"}
DIRECTION_VI = {"inbound": "Đến / Inbound", "outbound": "Đi / Outbound", "internal": "Nội bộ / Internal"}
_TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")
_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'")
# The report is one self-contained page: its own inline styles and SVG charts, no script.
_REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'"


class Console:
    """What the pages share: the settings, directory, accounts, exchange log, spool, sessions, throttle."""

    def __init__(self, settings_path: str, settings: Settings | None = None):
        self.settings_path = os.path.abspath(settings_path)
        self.settings = settings or settings_mod.load(settings_path)
        if self.settings.console is None:
            raise ConfigError([Problem(self.settings.file, 0, "no 'console:' in the settings (listen, users)")])
        self.conf: ConsoleSettings = self.settings.console
        self.directory: Directory = directory_mod.load(self.settings.directory)
        self.accounts = accounts_mod.load(self.conf.users, self.directory)
        self.engine: Engine = open_engine(self.settings.database)
        self.spool = Spool(self.settings.spool)
        self.sessions = Sessions(self.conf.session_idle)
        self.throttle = Throttle()
        self.verifying = threading.BoundedSemaphore(2)
        self.secure = self.conf.tls or self.conf.behind_proxy

    def close(self) -> None:
        self.engine.dispose()


# -- presentation helpers ---------------------------------------------------------------------------


def vn_time(value: Any) -> str:
    """A UTC time (ISO text or naive UTC datetime) in Vietnam time, to the second."""
    if value in (None, ""):
        return ""
    if isinstance(value, str):
        try:
            t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    else:
        t = value
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(VN).strftime("%d/%m/%Y %H:%M:%S")


def _env(console: Console) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    d = console.directory

    def agency(code: str | None) -> str:
        a = d.agency(code) if code else None
        return a.name if a else (code or "")

    def unit(agency_code: str | None, code: str | None) -> str:
        a = d.agency(agency_code) if agency_code else None
        u = a.unit(code) if a and code else None
        return u.name if u else (code or "")

    env.filters.update(vn=vn_time, agency=agency, unit=unit, category=lambda c: CATEGORY_VI.get(c, c or ""),
                       decision=lambda c: DECISION_VI.get(c, c or ""), secrecy=lambda c: SECRECY_VI.get(c, c),
                       urgency=lambda c: URGENCY_VI.get(c, c), cue=lambda c: CUE_VI.get(c, c),
                       where=lambda c: WHERE_VI.get(c, c), direction=lambda c: DIRECTION_VI.get(c, c or ""))
    env.globals.update(CATEGORIES=CATEGORIES, CATEGORY_VI=CATEGORY_VI, DECISIONS=DECISIONS, DECISION_VI=DECISION_VI,
                       DELIVERY_STATUSES=DELIVERY_STATUSES)
    return env


# -- the application --------------------------------------------------------------------------------


Handler = Callable[[Request, Session], Awaitable[Response]]


def create_app(settings_path: str, settings: Settings | None = None) -> Starlette:
    """The console's ASGI application for the gateway settings at ``settings_path``."""
    console = Console(settings_path, settings)
    env = _env(console)

    def page(name: str, request: Request, s: Session | None, status: int = 200, **values: Any) -> Response:
        body = env.get_template(name).render(session=s, path=request.url.path, **values)
        return _secured(HTMLResponse(body, status_code=status), console)

    def refuse(request: Request, s: Session | None, status: int, vi: str, en: str) -> Response:
        return page("error.html", request, s, status=status, vi=vi, en=en)

    def client(request: Request) -> str:
        return request.client.host if request.client else "?"

    def who(s: Session, request: Request, args: dict[str, Any]) -> dict[str, Any]:
        return {**args, "auditor": s.account.login, "via": f"console from {client(request)}"}

    async def logged(s: Session, request: Request, command: str, args: dict[str, Any]) -> None:
        await run_in_threadpool(log_access, console.engine, command, who(s, request, args))

    def guarded(admin: bool = False, unscoped: bool = False) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
        def wrap(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
            @functools.wraps(fn)
            async def endpoint(request: Request) -> Response:
                s = console.sessions.get(request.cookies.get(COOKIE))
                if s is None:
                    if request.method == "GET" and not request.url.path.startswith("/api/"):
                        target = "/login?" + urlencode({"next": _local(request.url.path)})
                        return _secured(RedirectResponse(target, 303), console)
                    return _secured(JSONResponse({"error": "login required / cần đăng nhập"}, 401), console)
                if request.method == "POST":
                    if _oversized(request):
                        return refuse(request, s, 413, "Biểu mẫu quá lớn.", "Form too large.")
                    form = await request.form(max_files=0, max_fields=200)
                    if not same(str(form.get("csrf") or ""), s.csrf) or not _same_origin(request):
                        return refuse(request, s, 403, "Yêu cầu bị từ chối (mã CSRF không hợp lệ).",
                                      "Request refused (invalid CSRF token).")
                if admin and not s.account.is_admin:
                    return refuse(request, s, 403, "Chỉ quản trị viên được dùng trang này.", "Admins only.")
                if unscoped and s.account.scope is not None:
                    return refuse(request, s, 403, "Trang này tổng hợp mọi cơ quan: tài khoản của bạn chỉ xem "
                                  "được cơ quan, đơn vị được giao.",
                                  "This page covers every agency: your account sees only its own.")
                return await fn(request, s)
            return endpoint
        return wrap

    # -- login, logout ----------------------------------------------------------------------------

    async def login_form(request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        resp = page("login.html", request, None, token=token, next=_local(request.query_params.get("next", "/")),
                    message=None)
        _cookie(resp, console, LOGIN_COOKIE, token, max_age=3600)
        return resp

    async def login(request: Request) -> Response:
        if _oversized(request):  # before any session: nobody may make the console read a large body
            return _secured(PlainTextResponse("form too large / biểu mẫu quá lớn", 413), console)
        form = await request.form(max_files=0, max_fields=10)
        login_name = str(form.get("login") or "").strip().lower()[:200]
        password = str(form.get("password") or "")
        nxt = _local(str(form.get("next") or "/"))
        ip = client(request)

        def again(status: int, vi: str, en: str) -> Response:
            token = secrets.token_urlsafe(24)
            resp = page("login.html", request, None, status=status, token=token, next=nxt, message=(vi, en))
            _cookie(resp, console, LOGIN_COOKIE, token, max_age=3600)
            return resp

        if not same(str(form.get("csrf") or ""), request.cookies.get(LOGIN_COOKIE)) or not _same_origin(request):
            return again(403, "Phiên đăng nhập đã hết hạn, vui lòng thử lại.", "The login form expired: try again.")
        keys = (f"user:{login_name}", f"ip:{ip}")

        def attempt() -> tuple[float, accounts_mod.Account | None]:
            # Two argon2 verifications at a time (64 MiB each), and the lockout is looked at again once
            # it is this attempt's turn: guesses sent all at once cannot pass before the failures count.
            with console.verifying:
                wait = console.throttle.wait(*keys)
                if wait > 0:
                    return wait, None
                account = console.accounts.verify(login_name, password)
                if account is None:
                    console.throttle.failed(*keys)
                return 0.0, account

        wait = console.throttle.wait(*keys)
        account = None
        if wait <= 0:
            wait, account = await run_in_threadpool(attempt)
        if wait > 0:
            log.warning("console login locked out: user %r from %s (%.0f s left)", login_name, ip, wait)
            return again(429, f"Đăng nhập sai quá nhiều lần: tạm khóa, thử lại sau {int(wait) + 1} giây.",
                         f"Too many failed logins: locked out, try again in {int(wait) + 1} s.")
        if account is None:
            log.warning("console login failed: user %r from %s", login_name, ip)
            return again(401, "Sai tên đăng nhập hoặc mật khẩu.", "Wrong login or password.")
        console.throttle.succeeded(keys[0])
        s = console.sessions.start(account, ip)
        await logged(s, request, "console login", {})
        resp = RedirectResponse(nxt, 303)
        _cookie(resp, console, COOKIE, s.token)
        resp.delete_cookie(LOGIN_COOKIE, path="/")
        return _secured(resp, console)

    @guarded()
    async def logout(request: Request, s: Session) -> Response:
        console.sessions.end(s.token)
        await logged(s, request, "console logout", {})
        resp = RedirectResponse("/login", 303)
        resp.delete_cookie(COOKIE, path="/", secure=console.secure, httponly=True, samesite="strict")
        return _secured(resp, console)

    # -- auditors' pages ----------------------------------------------------------------------------

    def filters_of(request: Request, s: Session, default_limit: int | None) -> tuple[Filters, dict[str, str]]:
        raw = {k: request.query_params.get(k, "").strip() for k in FILTER_NAMES}
        f = Filters.parse(raw, default_limit=default_limit)
        if f.limit and f.limit > console.conf.max_rows and default_limit is not None:
            f = dataclasses.replace(f, limit=console.conf.max_rows)
        return dataclasses.replace(f, scope=s.account.scope), raw

    def agencies_for(s: Session) -> list[Any]:
        if s.account.scope is None:
            return list(console.directory.agencies)
        codes = {c.partition("/")[0] for c in s.account.scope}
        return [a for a in console.directory.agencies if a.code in codes]

    @guarded()
    async def home(request: Request, s: Session) -> Response:
        return _secured(RedirectResponse("/search", 303), console)

    @guarded()
    async def search(request: Request, s: Session) -> Response:
        searched = any(request.query_params.get(k) for k in FILTER_NAMES) or "go" in request.query_params
        try:
            f, raw = filters_of(request, s, query.DEFAULT_LIMIT)
        except FilterError as e:
            return page("search.html", request, s, status=400, raw=dict(request.query_params), rows=None, error=str(e),
                        agencies=agencies_for(s), export_query="", limited=False)
        rows = None
        if searched:
            await logged(s, request, "console search", f.as_args())
            rows = await run_in_threadpool(_search_rows, console, f)
        export_query = urlencode({k: v for k, v in raw.items() if v and k != "limit"})
        return page("search.html", request, s, raw=raw, rows=rows, error=None, agencies=agencies_for(s),
                    export_query=export_query, limited=bool(rows is not None and f.limit and len(rows) >= f.limit))

    @guarded()
    async def api_search(request: Request, s: Session) -> Response:
        try:
            f, _ = filters_of(request, s, query.DEFAULT_LIMIT)
        except FilterError as e:
            return _secured(JSONResponse({"error": str(e)}, 400), console)
        await logged(s, request, "console search", {**f.as_args(), "api": True})

        def read() -> list[dict[str, Any]]:
            with console.engine.connect() as conn:
                return [query.full_record(x).to_json() for x in query.search(conn, f)]
        return _secured(JSONResponse(await run_in_threadpool(read)), console)

    @guarded()
    async def exchange(request: Request, s: Session) -> Response:
        xid = request.path_params["id"]
        await logged(s, request, "console show", {"id": xid})
        found = await run_in_threadpool(_exchange, console, xid, s.account.scope)
        if found is None:  # absent and out of scope look the same: an id says nothing of another agency
            return refuse(request, s, 404, "Không tìm thấy trao đổi này.", "No such exchange.")
        return page("exchange.html", request, s, x=found, rec=found.record)

    @guarded()
    async def export(request: Request, s: Session) -> Response:
        fmt = request.query_params.get("format", "csv")
        if fmt not in ("csv", "jsonl"):
            return refuse(request, s, 400, "Định dạng phải là csv hoặc jsonl.", "The format must be csv or jsonl.")
        try:
            f, _ = filters_of(request, s, None)
        except FilterError as e:
            return refuse(request, s, 400, f"Bộ lọc không hợp lệ: {e}", f"Invalid filter: {e}")
        await logged(s, request, "console export", {**f.as_args(), "format": fmt})
        from mailgw.audit.commands import export_lines

        def lines() -> Iterator[str]:
            with console.engine.connect() as conn:
                yield from export_lines(fmt, query.iter_export(conn, f))

        stamp = dt.datetime.now(VN).strftime("%Y%m%d-%H%M")
        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson; charset=utf-8"
        resp = StreamingResponse(lines(), media_type=media, headers={
            "Content-Disposition": f'attachment; filename="mailgw-export-{stamp}.{fmt}"'})
        return _secured(resp, console)

    @guarded()
    async def report(request: Request, s: Session) -> Response:
        from mailgw.audit import report as reports

        period = request.query_params.get("period", "").strip()
        if not period:
            last = (dt.datetime.now(VN).replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
            return page("report.html", request, s, period=last, error=None)
        try:
            reports.period_bounds(period)
        except ValueError as e:
            return page("report.html", request, s, status=400, period=period, error=str(e))
        await logged(s, request, "console report", {"period": period, **(
            {"scope": ",".join(s.account.scope)} if s.account.scope is not None else {})})

        def make() -> str:  # an auditor of some agencies gets their report: the exchanges it may see
            names = reports.names_of(console.directory)
            return reports.render(reports.compute(console.engine, period, scope=s.account.scope), names)
        try:
            text = await run_in_threadpool(make)
        except RecordError as e:
            return page("report.html", request, s, status=500, period=period, error=str(e))
        back = ('<p style="font-family:sans-serif"><a href="/report">&larr; Bảng điều khiển / Console</a> · '
                f'mailgw console, {html.escape(s.account.login)}</p>')
        text = text.replace("<body>", "<body>" + back, 1)
        resp = HTMLResponse(text)
        _secured(resp, console)
        resp.headers["Content-Security-Policy"] = _REPORT_CSP
        return resp

    @guarded()
    async def verify(request: Request, s: Session) -> Response:
        from mailgw.audit.verify import verify_engine

        await logged(s, request, "console verify", {})
        problems, heads = await run_in_threadpool(verify_engine, console.engine)
        broken = {p.chain: str(p) for p in problems}
        chains = [{"chain": h.chain, "seq": h.seq, "hash": h.hash, "problem": broken.pop(h.chain, None)} for h in heads]
        chains += [{"chain": c, "seq": None, "hash": None, "problem": p} for c, p in broken.items()]
        return page("verify.html", request, s, chains=chains, ok=not problems, access_chain=ACCESS_CHAIN)

    @guarded(unscoped=True)
    async def access(request: Request, s: Session) -> Response:
        await logged(s, request, "console access", {})

        def read() -> list[dict[str, Any]]:
            with console.engine.connect() as conn:
                rows = conn.execute(select(Access).order_by(Access.seq.desc()).limit(300)).all()
            out = []
            for r in rows:
                try:
                    args = json.loads(r.args)
                except ValueError:
                    args = {"?": r.args}
                user = args.pop("auditor", None)
                via = args.pop("via", None)
                out.append({"seq": r.seq, "time": r.time, "os_user": r.os_user, "host": r.host, "command": r.command,
                            "user": user, "via": via, "args": args})
            return out
        return page("access.html", request, s, entries=await run_in_threadpool(read))

    # -- admins' pages ------------------------------------------------------------------------------

    @guarded(admin=True)
    async def queue(request: Request, s: Session) -> Response:
        await logged(s, request, "console queue", {})
        return page("queue.html", request, s, entries=await run_in_threadpool(_queue_rows, console), done=None,
                    problems=[])

    @guarded(admin=True)
    async def queue_action(request: Request, s: Session) -> Response:
        form = await request.form()
        action = str(form.get("action") or "")
        ids = [str(i) for i in form.getlist("id")]
        reason = str(form.get("reason") or "").strip()[:300] or None
        if action not in ("hold", "release", "delete", "requeue") or not ids:
            return refuse(request, s, 400, "Chọn thao tác và ít nhất một thư.", "Choose an action and a message.")
        await logged(s, request, "console queue " + action, {"ids": " ".join(ids), "reason": reason})
        by = f"console user {s.account.login} from {client(request)}"
        done, problems = await run_in_threadpool(_queue_act, console, action, ids, by, reason)
        return page("queue.html", request, s, entries=await run_in_threadpool(_queue_rows, console),
                    done=(action, done), problems=problems)

    @guarded(admin=True)
    async def policies(request: Request, s: Session) -> Response:
        await logged(s, request, "console policies", {})
        return page("policies.html", request, s, **await run_in_threadpool(_policies, console))

    @guarded(admin=True)
    async def replay_form(request: Request, s: Session) -> Response:
        return page("replay.html", request, s, candidates=_candidates(console), raw={}, result=None, problems=[])

    @guarded(admin=True)
    async def replay(request: Request, s: Session) -> Response:
        form = await request.form()
        raw = {k: str(form.get(k) or "").strip() for k in ("candidate", "period", *FILTER_NAMES)}
        values = {k: raw[k] for k in FILTER_NAMES if raw[k]}
        problems: list[str] = []
        if raw["period"]:
            from mailgw.audit.report import period_bounds

            try:
                start, end = period_bounds(raw["period"])
                values["since"], values["until"] = start.isoformat(), end.isoformat()
            except ValueError as e:
                problems.append(str(e))
        candidate = _candidate_path(console, raw["candidate"])
        if candidate is None:
            problems.append("Chọn một thư mục chính sách dự kiến trong thư mục được phép / Choose a candidate "
                            "policy folder inside the allowed folder")
        try:
            f = Filters.parse(values)
        except FilterError as e:
            problems.append(str(e))
        if problems or candidate is None:
            return page("replay.html", request, s, status=400, candidates=_candidates(console), raw=raw, result=None,
                        problems=problems)
        await logged(s, request, "console replay", {**f.as_args(), "candidate": candidate})
        result, problems = await run_in_threadpool(_replay, console, candidate, f)
        return page("replay.html", request, s, status=200 if result else 400, candidates=_candidates(console),
                    raw=raw, result=result, problems=problems)

    async def stylesheet(request: Request) -> Response:
        with open(os.path.join(_TEMPLATES, "console.css"), encoding="utf-8") as fh:
            resp = Response(fh.read(), media_type="text/css")
        return _secured(resp, console)

    routes = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/console.css", stylesheet, methods=["GET"]),
        Route("/", home, methods=["GET"]),
        Route("/search", search, methods=["GET"]),
        Route("/api/search", api_search, methods=["GET"]),
        Route("/exchange/{id}", exchange, methods=["GET"]),
        Route("/export", export, methods=["GET"]),
        Route("/report", report, methods=["GET"]),
        Route("/verify", verify, methods=["GET"]),
        Route("/access", access, methods=["GET"]),
        Route("/queue", queue, methods=["GET"]),
        Route("/queue", queue_action, methods=["POST"]),
        Route("/policies", policies, methods=["GET"]),
        Route("/replay", replay_form, methods=["GET"]),
        Route("/replay", replay, methods=["POST"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        s = console.sessions.get(request.cookies.get(COOKIE))
        if s is None:
            return _secured(PlainTextResponse("login required / cần đăng nhập", 401), console)
        return refuse(request, s, 404, "Không có trang này.", "No such page.")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        console.close()

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found}, lifespan=lifespan)
    app.state.console = console
    return app


# -- the work behind the pages (in the thread pool) -------------------------------------------------


@dataclasses.dataclass
class Row:
    id: str
    time: Any
    decision: str | None
    rule: str | None
    category: str | None
    doc_number: str | None
    sender: str | None
    sender_agency: str | None
    recipients: list[str]
    subject: str
    unreadable: str | None = None


def _search_rows(console: Console, f: Filters) -> list[Row]:
    from mailgw.audit import record

    out = []
    with console.engine.connect() as conn:
        for x in query.search(conn, f):
            try:
                rec = record.decode(x.record)
                rcpts = [r.address for r in rec.recipients] or list(rec.rcpts)
                subject, problem = str(rec.header.subject or ""), None
                if rec.redacted:
                    subject = "(mật: chỉ lưu mã băm / secret: hash only)"
            except RecordError as e:
                rcpts, subject, problem = [], "", str(e)
            out.append(Row(x.id, x.time, x.decision, x.rule, x.category, x.doc_number, x.sender, x.sender_agency,
                           rcpts, subject, problem))
    return out


def _exchange(console: Console, xid: str, scope: tuple[str, ...] | None) -> query.LoggedExchange | None:
    with console.engine.connect() as conn:
        if not query.in_scope(conn, xid, scope):
            return None
        x = conn.execute(select(Exchange).where(Exchange.id == xid)).first()
        if x is None:
            return None
        return query.full_record(x, query.deliveries(conn, [x.id]).get(x.id, []))


def _queue_rows(console: Console) -> list[dict[str, Any]]:
    rows = []
    for e in console.spool.entries():
        env = e.meta.get("envelope", {})
        rec = e.meta.get("record") or {}
        rows.append({"id": e.id, "state": queue_admin.state_of(e), "received": env.get("received_at"),
                     "mail_from": env.get("mail_from"), "rcpts": env.get("rcpts", []), "size": e.size,
                     "rule": (rec.get("decision") or {}).get("rule"),
                     "subject": (rec.get("header") or {}).get("subject"), "attempts": e.state.get("attempts", 0)})
    rows.sort(key=lambda r: -(r["received"] or 0))
    for r in rows:
        r["received"] = vn_time(dt.datetime.fromtimestamp(r["received"], dt.timezone.utc)) if r["received"] else ""
    return rows


def _queue_act(console: Console, action: str, ids: list[str], by: str,
               reason: str | None) -> tuple[list[str], list[str]]:
    """``action`` on ``ids`` as `mailgw queue ACTION` does it: each done action is an exchange-log event."""
    settings = console.settings
    when = dt.datetime.now(dt.timezone.utc)
    chosen, problems = queue_admin.select(console.spool, action, ids, queue_admin.Filters())
    done = []
    for entry in chosen:
        if queue_admin.perform(console.spool, action, entry, by):
            done.append(entry)
        else:
            problems.append(f"{entry.id}: no longer there (delivered or moved meanwhile)")
    try:
        queue_admin.record(settings.database, settings.node, queue_admin.journal_dir(settings.spool), action, done, by,
                           reason, when)
    except (OSError, ValueError, TypeError) as e:
        problems.append(f"the action is NOT in the exchange log: neither the log nor its journal took it: {e}")
    return [e.id for e in done], problems


def _policies(console: Console) -> dict[str, Any]:
    from mailgw import policy

    folder = console.settings.policies
    files = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as fh:
                files.append({"name": name, "text": fh.read()})
    def validated(path: str) -> dict[str, Any]:
        try:
            pack = policy.load(path, console.directory)
            return {"ok": True, "version": pack.version, "rules": len(pack.rules),
                    "problems": [str(p) for p in pack.warnings]}
        except ConfigError as e:
            return {"ok": False, "version": None, "rules": 0, "problems": [str(p) for p in e.problems]}

    root = console.conf.candidates or ""
    candidates = [{"name": name, **validated(os.path.join(root, name))} for name in _candidates(console)]
    return {"folder": folder, "files": files, "summary": validated(folder), "candidates": candidates}


def _candidates(console: Console) -> list[str]:
    root = console.conf.candidates
    if not root or not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)) and not n.startswith("."))


def _candidate_path(console: Console, name: str) -> str | None:
    """The candidate folder ``name`` inside the allowed folder, or None (nothing outside it is ever read)."""
    root = console.conf.candidates
    if not root or not name or name not in _candidates(console):
        return None
    path = os.path.realpath(os.path.join(root, name))
    return path if os.path.dirname(path) == os.path.realpath(root) else None


def _replay(console: Console, candidate_dir: str, f: Filters) -> tuple[dict[str, Any] | None, list[str]]:
    from mailgw import policy
    from mailgw.app import load_context
    from mailgw.policy.replay import replay

    try:
        ctx, _ = load_context(console.settings_path)
        candidate = policy.load(candidate_dir, ctx.directory)
    except ConfigError as e:
        return None, [str(p) for p in e.problems]
    assert ctx.policies is not None
    try:
        with console.engine.connect() as conn:
            report = replay(ctx, ctx.policies, candidate, (x.record for x in query.iter_export(conn, f)))
    except RecordError as e:
        return None, [str(e)]
    rules = sorted(set(report.rules["current"]) | set(report.rules["candidate"]))
    return {
        "current_version": ctx.policies.version, "candidate_version": candidate.version,
        "candidate": os.path.basename(candidate_dir), "summary": report.summary(), "changes": report.changes,
        "rules": [(r, report.rules["current"][r], report.rules["candidate"][r]) for r in rules],
        "decisions": sorted(set(report.decisions["current"]) | set(report.decisions["candidate"])),
        "counts": report.decisions,
    }, []


# -- HTTP details -----------------------------------------------------------------------------------


def _local(target: str) -> str:
    """A redirect target on this site only (no scheme, no host, no //)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


_MAX_FORM = 64 * 1024  # the largest form the pages post (the queue's ids) is far smaller


def _oversized(request: Request) -> bool:
    """A POST body without a length, or longer than any form of the console."""
    try:
        return int(request.headers.get("content-length", "")) > _MAX_FORM
    except ValueError:
        return True


def _same_origin(request: Request) -> bool:
    """The browser says the form came from this site: a cross-site form is refused even before its token.

    Browsers send Sec-Fetch-Site (``same-origin``; ``none`` when a person typed the address);
    older ones send Origin. A client that sends neither (a script) is left to the CSRF token.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin != "null" and origin.split("://", 1)[-1] == request.headers.get("host", "")


def _cookie(resp: Response, console: Console, name: str, value: str, max_age: int | None = None) -> None:
    resp.set_cookie(name, value, max_age=max_age, path="/", secure=console.secure, httponly=True, samesite="strict")


def _secured(resp: Response, console: Console) -> Response:
    h = resp.headers
    h["Content-Security-Policy"] = _CSP
    h["X-Content-Type-Options"] = "nosniff"
    h["X-Frame-Options"] = "DENY"
    h["Referrer-Policy"] = "same-origin"  # exchange ids in URLs never leave the site
    h["Cache-Control"] = "no-store"
    if console.secure:
        h["Strict-Transport-Security"] = "max-age=31536000"
    return resp


def run(settings_path: str) -> int:
    """`mailgw console`: serve the console on ``console.listen`` until stopped (SIGTERM, SIGINT)."""
    import uvicorn

    app = create_app(settings_path)
    console: Console = app.state.console
    conf, tls = console.conf, console.settings.tls
    options: dict[str, Any] = {"host": conf.host, "port": conf.port, "log_level": "info", "server_header": False,
                               "proxy_headers": conf.behind_proxy, "access_log": False}
    if conf.behind_proxy:
        options["forwarded_allow_ips"] = "127.0.0.1,::1"  # only a proxy on this host may name the client
    if conf.tls and tls is not None:
        options.update(ssl_certfile=tls.cert, ssl_keyfile=tls.key)
    log.info("console on %s://%s:%d (%d accounts)", "https" if conf.tls else "http", conf.host, conf.port,
             len(console.accounts.users))
    uvicorn.run(app, **options)
    return 0
