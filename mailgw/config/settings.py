"""Gateway settings: gateway.yaml read strictly into frozen dataclasses, with defaults.

Built-in defaults first, then the file; every problem is reported as
``FILE:LINE: message``. Paths in the file are relative to the file itself.
The keys README's settings reference names are published: never renamed; the others are documented in
the README and in the demo gateway.yaml.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
from typing import Any

from mailgw.config import yamlfile
from mailgw.config.yamlfile import Checker, YList, YMap

ROLES = ("mx", "relay", "submission")
# Listeners that serve an existing MTA rather than SMTP clients (mailgw.milter): each
# transaction is given one of ROLES by the listener's `daemons` and `trusted_networks`.
MTA_ROLES = ("milter", "policy")


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    cert: str
    key: str
    self_signed: bool = False  # create a self-signed pair at start if missing (demo only)


@dataclasses.dataclass(frozen=True)
class Listener:
    name: str
    role: str
    host: str
    port: int
    trusted_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    tls: TlsFiles | None = None
    path: str = ""  # `listen: unix:PATH`: a UNIX socket (milter and policy listeners), host "" and port 0
    # milter and policy listeners: the MTA's service name ({daemon_name}, policy_context) -> mx | relay | submission
    daemons: tuple[tuple[str, str], ...] = ()

    def trusts(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.trusted_networks)


@dataclasses.dataclass(frozen=True)
class Route:
    """Where delivery goes: ``smtp`` (host, port), ``mx`` (DNS lookup) or ``maildir`` (path)."""

    kind: str
    host: str = ""
    port: int = 25
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "smtp":
            return f"smtp://{self.host}:{self.port}"
        if self.kind == "maildir":
            return f"maildir:{self.path}"
        return "mx"


@dataclasses.dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    key: str
    algorithm: str = ""  # from the key file when empty
    line: int = dataclasses.field(default=0, compare=False)  # where the entry is, for FILE:LINE problems


@dataclasses.dataclass(frozen=True)
class ArcSettings:
    """``arc:``: the key that seals inbound mail mailgw passes on (one of the RSA keys of ``dkim:``)."""

    domain: str
    selector: str = ""  # empty: the domain's only RSA key
    line: int = dataclasses.field(default=0, compare=False)


@dataclasses.dataclass(frozen=True)
class QueueSettings:
    retry_min: float = 300.0  # Postfix minimal_backoff_time
    retry_max: float = 4000.0  # Postfix maximal_backoff_time
    lifetime: float = 5 * 86400.0  # Postfix maximal_queue_lifetime
    scan_interval: float = 1.0  # how often the spool is rescanned for due and released messages
    concurrency: int = 20  # messages delivered at once
    connect_timeout: float = 30.0
    command_timeout: float = 300.0
    # HỎA TỐC and THƯỢNG KHẨN messages (the classification's urgency): delivered before the others
    # that are due, and retried on this shorter backoff.
    urgent_retry_min: float = 60.0
    urgent_retry_max: float = 900.0


@dataclasses.dataclass(frozen=True)
class Limits:
    message_size: int = 10 * 1024 * 1024  # 552 above this
    recipients: int = 100  # per message; 452 for the next (RFC 5321 4.5.3.1.8 minimum)
    commands: int = 1000  # per session; 421 and close above this
    idle_timeout: float = 300.0  # seconds without a command; 421 and close
    connections_per_ip: int = 20  # concurrent, per listener; 421 above this
    max_received: int = 50  # Received headers; more means a loop (Postfix hopcount_limit)
    header_size: int = 256 * 1024  # bytes of the header section; 552 above this (Exchange's MaxHeaderSize)
    header_lines: int = 5000  # lines of the header section, continuations included; 552 above this
    data_deadline: float = 3600.0  # seconds for one whole DATA stream (each read waits idle_timeout); 421 then
    auth_penalty: float = 1.0  # seconds: the wait after one failed login, doubling per failure (at most 15 s)
    min_free_space: int = 0  # bytes; 0 means 1.5 x message_size, as Postfix does
    drain_timeout: float = 30.0  # SIGTERM: how long open sessions may finish
    # While a serving process is deciding messages, at most this many of its sessions are in a
    # transaction (MAIL to the reply to DATA); a further MAIL waits for one to end, at most
    # in_flow_delay (then it goes on). 0 (the default): no limit. See mailgw.smtp.edge.Admission
    # and the README (Performance) for what it trades: a shorter wait after DATA, less throughput.
    in_flow: int = 0
    in_flow_delay: float = 1.0


@dataclasses.dataclass(frozen=True)
class DnsSettings:
    """Where DNS answers come from: the system resolver, given servers, or a local answers file."""

    answers: str | None = None  # zone-file lines (mailgw.config.resolver.FileResolver): tests, air-gapped rigs
    nameservers: tuple[str, ...] = ()  # empty: /etc/resolv.conf
    port: int = 53
    timeout: float = 5.0  # seconds for one whole lookup, retries included
    # Test rigs only: the port the `mx` route connects to. Real MX hosts listen on 25
    # alone, so any other value needs DNS answered by the rig itself (answers or nameservers).
    mx_port: int = 25


@dataclasses.dataclass(frozen=True)
class AttachmentLimits:
    """How far attachment inspection goes (mailgw.attachments); past a limit the policy decides."""

    max_depth: int = 20                          # MIME nesting (multipart and message/rfc822 levels)
    max_parts: int = 500                         # MIME parts in one message
    max_decoded_size: int = 64 * 1024 * 1024     # decoded bytes of all parts together
    max_archive_ratio: float = 100.0             # expanded / compressed, for archives expanding past 1 MiB
    max_archive_members: int = 1000              # files listed inside all archives of one message
    max_archive_total: int = 256 * 1024 * 1024   # bytes expanded out of all archives of one message
    max_archive_depth: int = 5                   # archives inside archives
    time_budget: float = 10.0                    # CPU seconds for one message's attachments
    trust_store: str | None = None               # PEM/DER file or directory: roots for PDF signatures


@dataclasses.dataclass(frozen=True)
class AuditSettings:
    """How long replies wait for the exchange log before its local journal takes a record (docs/auditors.md)."""

    timeout: float = 10.0  # a database slower than this: the record goes to the journal, the reply is sent
    retry: float = 30.0  # how often a database that failed is tried again and the journal replayed


@dataclasses.dataclass(frozen=True)
class ConsoleSettings:
    """``console:``, the auditors' and admins' web console (mailgw/console)."""

    host: str
    port: int
    users: str  # the accounts file: logins, argon2 hashes, roles, scopes
    tls: bool = True  # HTTPS with the gateway's certificate (settings 'tls'); False: plain HTTP
    behind_proxy: bool = False  # plain HTTP behind a TLS-terminating reverse proxy on this host
    candidates: str | None = None  # the folder replay candidates must lie in; None: replay is off
    session_idle: float = 1800.0  # a session unused this long ends
    max_rows: int = 500  # the most rows a search page shows (exports have no such limit)


@dataclasses.dataclass(frozen=True)
class DmarcSettings:
    """DMARC aggregate reports we send (``dmarc.reports``) and the records our domains publish (``dmarc.record``).

    mailgw.senderauth.reports reads both: ``mailgw dmarc report``, ``mailgw dmarc record``
    and the warnings of ``mailgw check``.
    """

    send: bool = False  # reports.send: send daily aggregate reports to other domains' rua= (opt-in)
    org_name: str | None = None  # reports.org_name: report_metadata/org_name
    email: str | None = None  # reports.email: report_metadata/email, and the From of the reports
    extra_contact_info: str | None = None  # reports.extra_contact_info
    line: int = 0  # where 'dmarc' is, for check's warnings
    p: str | None = None  # record.p: the policy our domains should publish (None: not checked; none printed)
    rua: str | None = None  # record.rua: where our domains ask for reports (default: reports.email)
    spf: tuple[str, ...] = ()  # record.spf: SPF terms (ip4:..., include:...); default: the listeners' addresses


@dataclasses.dataclass(frozen=True)
class Settings:
    file: str
    hostname: str
    node: str
    directory: str
    policies: str
    database: str
    spool: str
    credentials: str | None
    listeners: tuple[Listener, ...]
    routes: dict[str, Route]
    dkim: tuple[DkimKey, ...]
    tls: TlsFiles | None
    queue: QueueSettings
    limits: Limits
    log_level: str = "INFO"
    dns: DnsSettings = dataclasses.field(default_factory=lambda: DnsSettings())
    attachments: AttachmentLimits = dataclasses.field(default_factory=lambda: AttachmentLimits())
    audit: AuditSettings = dataclasses.field(default_factory=lambda: AuditSettings())
    workers: int = 1  # serving processes sharing the listening ports (mailgw.workers); the file's default is auto
    log_format: str = "text"  # log: {format: text|json} (mailgw.logsetup)
    metrics_listen: tuple[str, int] | None = None  # metrics: {listen: HOST:PORT} (mailgw.metrics); None: off
    console: ConsoleSettings | None = None  # console: {listen: HOST:PORT, users: FILE, ...} (mailgw.console)
    dmarc: DmarcSettings = dataclasses.field(default_factory=lambda: DmarcSettings())
    arc: ArcSettings | None = None  # arc: {domain, selector} (mailgw.stages.arc_seal); None: no sealing
    tags_header: tuple[str, ...] = ()  # the policy tags written into X-Mailgw-Tags (mailgw.message.ownfields)

    def effective(self) -> str:
        """The effective settings as one log line (chasquid's LogConfig)."""
        ls = ", ".join(f"{l.name}={l.role}@{l.path or f'{l.host}:{l.port}'}{'+tls' if l.tls else ''}" for l in self.listeners)
        return (
            f"hostname={self.hostname} node={self.node} listeners=[{ls}] "
            f"routes=local:{self.routes['local']},remote:{self.routes['remote']} spool={self.spool} "
            f"database={_redact_url(self.database)} queue={dataclasses.asdict(self.queue)} "
            f"limits={dataclasses.asdict(self.limits)} attachments={dataclasses.asdict(self.attachments)} "
            f"audit={dataclasses.asdict(self.audit)} workers={self.workers}"
            + (f" arc.seal={self.arc.domain}{'/' + self.arc.selector if self.arc.selector else ''}" if self.arc else "")
            + (f" dns.mx_port={self.dns.mx_port} (TEST RIG: MX hosts on a port other than 25)"
               if self.dns.mx_port != 25 else "")
        )


_TOP_KEYS = {
    "hostname", "node", "directory", "policies", "database", "spool", "credentials",
    "listeners", "routes", "dkim", "tls", "queue", "limits", "log_level", "dns", "attachments", "audit", "workers",
    "log", "metrics", "console", "dmarc", "arc", "tags_header",
}


def default_path() -> str:
    """``$MAILGW_CONFIG``, else ``./gateway.yaml``."""
    return os.environ.get("MAILGW_CONFIG") or "gateway.yaml"


def load(path: str) -> Settings:
    """Read and validate a settings file; raise ConfigError with every problem found."""
    data = yamlfile.load(path)
    c = Checker(path)
    if not isinstance(data, YMap):
        c.error(None, None, "the settings file must be a mapping")
        c.raise_if_errors()
    base = os.path.dirname(os.path.abspath(path))

    def rel(value: str) -> str:
        return value if os.path.isabs(value) else os.path.normpath(os.path.join(base, value))

    c.keys(data, _TOP_KEYS, required=("hostname", "directory", "policies", "database", "spool", "listeners", "routes"))
    hostname = c.typed(data, "hostname", str, "localhost")
    if hostname and not _HOSTNAME.fullmatch(hostname):
        c.error(data, "hostname", f"hostname {hostname!r} is not a valid host name")
    node = c.typed(data, "node", str, hostname or socket.gethostname())
    directory = rel(c.typed(data, "directory", str, "directory.yaml"))
    policies = rel(c.typed(data, "policies", str, "policies"))
    # Named at the settings line that names them, not at the missing path's "line 0".
    if isinstance(data.get("directory"), str) and not os.path.isfile(directory):
        c.error(data, "directory", f"directory file {data['directory']} does not exist (paths are relative to this file)")
    database = c.typed(data, "database", str, "sqlite:///var/mailgw.db")
    database = _rel_sqlite(database, base)
    spool = rel(c.typed(data, "spool", str, "var/spool"))
    credentials = c.typed(data, "credentials", str)
    credentials = rel(credentials) if credentials else None
    log_level = c.typed(data, "log_level", str, "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        c.error(data, "log_level", "log_level must be one of DEBUG, INFO, WARNING, ERROR")

    tls = _tls(c, data, "tls", rel)
    listeners = _listeners(c, data, rel, tls)
    if any(l.role == "submission" for l in listeners) and not credentials:
        c.error(data, "listeners", "a submission listener needs a 'credentials' file (logins and password hashes)")
    routes = _routes(c, data, rel)
    dkim = _dkim(c, data, rel)
    queue = _queue(c, data)
    limits = _limits(c, data)
    dns = _dns(c, data, rel)
    attachments = _attachments(c, data, rel)
    audit = _audit(c, data)
    workers = _workers(c, data, listeners)
    log_format = _log(c, data)
    metrics_listen = _metrics(c, data)
    console = _console(c, data, rel, tls)
    dmarc = _dmarc(c, data)
    arc = _arc(c, data)
    tags_header = _tags_header(c, data)
    c.raise_if_errors()
    return Settings(
        file=os.path.abspath(path), hostname=hostname, node=node, directory=directory, policies=policies,
        database=database, spool=spool, credentials=credentials, listeners=tuple(listeners), routes=routes,
        dkim=tuple(dkim), tls=tls, queue=queue, limits=limits, log_level=log_level,
        dns=dns, attachments=attachments, audit=audit, workers=workers,
        log_format=log_format, metrics_listen=metrics_listen, console=console, dmarc=dmarc, arc=arc,
        tags_header=tags_header,
    )


_HOSTNAME = re.compile(r"(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


def _rel_sqlite(url: str, base: str) -> str:
    """Make a relative SQLite path relative to the settings file, like every other path."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + os.path.normpath(os.path.join(base, url[len(prefix):]))
    return url


def _redact_url(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


def _tls(c: Checker, m: YMap, key: str, rel: Any) -> TlsFiles | None:
    if key not in m:
        return None
    t = c.mapping(m[key], m, key, key)
    if t is None:
        return None
    c.keys(t, ("cert", "key", "self_signed"), required=("cert", "key"), what="tls")
    cert, pkey = c.typed(t, "cert", str), c.typed(t, "key", str)
    self_signed = c.typed(t, "self_signed", bool, False)
    if not cert or not pkey:
        return None
    files = TlsFiles(rel(cert), rel(pkey), self_signed)
    if not self_signed:
        for k, p in (("cert", files.cert), ("key", files.key)):
            if not os.path.isfile(p):
                c.error(t, k, f"{k} file {p} does not exist")
    return files


def _listeners(c: Checker, data: YMap, rel: Any, tls: TlsFiles | None) -> list[Listener]:
    items = data.get("listeners")
    if not isinstance(items, YList) or not items:
        c.error(data, "listeners", "'listeners' must be a non-empty list")
        return []
    out: list[Listener] = []
    seen_names: dict[str, int] = {}
    seen_addrs: dict[tuple[str, int], int] = {}
    seen_paths: dict[str, int] = {}
    for i, item in enumerate(items):
        m = c.mapping(item, items, i, "a listener")
        if m is None:
            continue
        c.keys(m, ("name", "role", "listen", "trusted_networks", "tls", "daemons"), required=("name", "role", "listen"),
               what="a listener")
        name = c.typed(m, "name", str, "")
        role = c.typed(m, "role", str, "")
        if name in seen_names:
            c.error(m, "name", f"duplicate listener name {name!r} (first at line {seen_names[name]})")
        seen_names[name] = m.line_of("name")
        if role and role not in ROLES + MTA_ROLES:
            c.error(m, "role", f"unknown role {role!r} (one of: {', '.join(ROLES + MTA_ROLES)})")
        mta = role in MTA_ROLES
        path = ""
        listen = m.get("listen")
        if mta and isinstance(listen, str) and listen.startswith("unix:"):
            path = rel(listen[len("unix:"):])
            if not listen[len("unix:"):]:
                c.error(m, "listen", "'listen' must be unix:PATH or HOST:PORT, not 'unix:'")
            host, port = "", 0
            if path in seen_paths:
                c.error(m, "listen", f"socket {path} already used (line {seen_paths[path]})")
            seen_paths[path] = m.line_of("listen")
        else:
            host, port = _hostport(c, m, "listen")
            if (host, port) in seen_addrs and port != 0:
                c.error(m, "listen", f"address {host}:{port} already used (line {seen_addrs[(host, port)]})")
            seen_addrs[(host, port)] = m.line_of("listen")
        daemons = _daemons(c, m) if mta else ()
        if not mta and "daemons" in m:
            c.error(m, "daemons", f"'daemons' applies to milter and policy listeners only, not {role!r}")
        nets: list[Any] = []
        raw_nets = c.typed(m, "trusted_networks", YList, YList())
        for j, n in enumerate(raw_nets):
            try:
                nets.append(ipaddress.ip_network(str(n), strict=False))
            except ValueError:
                c.error(raw_nets, j, f"{n!r} is not a network (like 10.0.0.0/8)")
        if role == "relay" and not nets:
            c.error(m, None, f"relay listener {name!r} needs 'trusted_networks' (it would serve nobody)")
        if role not in ("relay",) + MTA_ROLES and "trusted_networks" in m:
            c.error(m, "trusted_networks", f"'trusted_networks' applies to relay, milter and policy listeners only, not {role!r}")
        own_tls = _tls(c, m, "tls", rel) if "tls" in m else tls
        if role == "submission" and own_tls is None:
            c.error(m, None, f"submission listener {name!r} needs TLS (AUTH is never offered in plain text): set 'tls'")
        out.append(Listener(name, role, host, port, tuple(nets), None if mta else own_tls, path, daemons))
    return out


def _daemons(c: Checker, m: YMap) -> tuple[tuple[str, str], ...]:
    """``daemons``: the MTA's service names ({daemon_name}, policy_context) and the role each stands for."""
    if "daemons" not in m:
        return ()
    d = c.mapping(m["daemons"], m, "daemons", "'daemons'")
    if d is None:
        return ()
    out = []
    for service, role in d.items():
        if role not in ROLES:
            c.error(d, service, f"daemon {service!r}: role must be one of {', '.join(ROLES)}, not {role!r}")
            continue
        out.append((str(service), str(role)))
    return tuple(out)


def _hostport(c: Checker, m: YMap, key: str) -> tuple[str, int]:
    value = m.get(key)
    if not isinstance(value, str):
        c.error(m, key, f"{key!r} must be HOST:PORT")
        return "", 0
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        c.error(m, key, f"{key!r} must be HOST:PORT, not {value!r}")
        return "", 0
    return host, int(port)


def _routes(c: Checker, data: YMap, rel: Any) -> dict[str, Route]:
    r = c.mapping(data.get("routes"), data, "routes", "'routes'") if "routes" in data else None
    out = {"local": Route("mx"), "remote": Route("mx")}
    if r is None:
        return out
    c.keys(r, ("local", "remote"), required=("local", "remote"), what="routes")
    for key in ("local", "remote"):
        value = c.typed(r, key, str)
        if value is None:
            continue
        route = parse_route(value, rel)
        if route is None:
            c.error(r, key, f"route {value!r} must be 'mx', 'smtp://HOST:PORT' or 'maildir:PATH'")
        else:
            out[key] = route
    return out


def parse_route(value: str, rel: Any = lambda p: p) -> Route | None:
    if value == "mx":
        return Route("mx")
    if value.startswith("maildir:") and len(value) > len("maildir:"):
        return Route("maildir", path=rel(value[len("maildir:"):]))
    m = re.fullmatch(r"smtp://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?/?", value)
    if m:
        port = int(m.group(2) or 25)
        if port <= 65535:
            return Route("smtp", host=m.group(1).strip("[]"), port=port)
    return None


def _dkim(c: Checker, data: YMap, rel: Any) -> list[DkimKey]:
    if "dkim" not in data or data["dkim"] is None:
        return []
    items = data["dkim"]
    if not isinstance(items, YList):
        c.error(data, "dkim", "'dkim' must be a list of {domain, selector, key}")
        return []
    out = []
    for i, item in enumerate(items):
        m = c.mapping(item, items, i, "a dkim key")
        if m is None:
            continue
        c.keys(m, ("domain", "selector", "key", "algorithm"), required=("domain", "selector", "key"), what="a dkim key")
        domain, selector, key = c.typed(m, "domain", str, ""), c.typed(m, "selector", str, ""), c.typed(m, "key", str, "")
        algorithm = c.typed(m, "algorithm", str, "")
        if algorithm and algorithm not in ("rsa", "ed25519"):
            c.error(m, "algorithm", "algorithm must be 'rsa' or 'ed25519'")
        out.append(DkimKey(domain.lower(), selector, rel(key) if key else "", algorithm, line=items.line_of(i)))
    return out


def _arc(c: Checker, data: YMap) -> ArcSettings | None:
    if "arc" not in data or data["arc"] is None:
        return None
    m = c.mapping(data["arc"], data, "arc", "'arc'")
    if m is None:
        return None
    c.keys(m, ("domain", "selector"), required=("domain",), what="arc")
    domain, selector = c.typed(m, "domain", str, ""), c.typed(m, "selector", str, "")
    return ArcSettings(domain.strip().lower().rstrip("."), selector.strip(), line=data.line_of("arc"))


MAX_WORKERS = 64


def _workers(c: Checker, data: YMap, listeners: list[Listener]) -> int:
    """``workers``: a number, or ``auto`` (the default): one per core, as Postfix uses every core.

    Several workers share each listening port, so they need fixed TCP ports: with a
    listener on port 0 (tests, a first try) or on a UNIX socket (a milter), ``auto``
    means one, and a number above one is an error.
    """
    value = data.get("workers", "auto")
    if value == "auto":
        return 1 if any(l.port == 0 or l.path for l in listeners) else auto_workers()
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        c.error(data, "workers", f"'workers' must be a whole number above 0 or auto, not {value!r}")
        return 1
    if value > MAX_WORKERS:
        c.error(data, "workers", f"'workers' must be at most {MAX_WORKERS}, not {value}")
    if value > 1:
        for l in listeners:
            if l.path:  # a UNIX socket is one process's: no SO_REUSEPORT
                c.error(data, "workers", f"listener {l.name!r} listens on a UNIX socket: several workers need a TCP port to share")
            elif l.port == 0:  # each worker would get a port of its own
                c.error(data, "workers", f"listener {l.name!r} listens on port 0: several workers need a fixed port to share")
    return value


def auto_workers() -> int:
    """``workers: auto``: the cores this process may run on (its CPU affinity), at most MAX_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


def _dns(c: Checker, data: YMap, rel: Any) -> DnsSettings:
    if "dns" not in data:
        return DnsSettings()
    m = c.mapping(data["dns"], data, "dns", "'dns'")
    if m is None:
        return DnsSettings()
    c.keys(m, ("answers", "nameservers", "port", "timeout", "mx_port"), what="dns")
    answers = c.typed(m, "answers", str)
    if answers and not os.path.isfile(rel(answers)):
        c.error(m, "answers", f"DNS answers file {rel(answers)} does not exist")
    servers: list[str] = []
    if "nameservers" in m:
        items = m["nameservers"]
        if not isinstance(items, YList) or not all(isinstance(x, str) for x in items):
            c.error(m, "nameservers", "nameservers must be a list of IP addresses")
        else:
            for i, x in enumerate(items):
                try:
                    ipaddress.ip_address(x)
                    servers.append(x)
                except ValueError:
                    c.error(items, i, f"nameserver {x!r} is not an IP address")
    if answers and servers:
        c.error(m, "answers", "give either an answers file or nameservers, not both")
    port = _positive_int(c, m, "port") if "port" in m else 53
    timeout = _duration(c, m, "timeout", positive=True) if "timeout" in m else 5.0
    mx_port = _positive_int(c, m, "mx_port") if "mx_port" in m else 25
    if mx_port is not None and mx_port > 65535:
        c.error(m, "mx_port", f"'mx_port' must be a port number (1-65535), not {mx_port}")
        mx_port = None
    if mx_port not in (None, 25) and not answers and not servers:
        c.error(m, "mx_port", "'mx_port' is for test rigs whose DNS is the rig's own ('answers' or "
                              "'nameservers'): real MX hosts listen on port 25 only")
    return DnsSettings(answers=rel(answers) if answers else None, nameservers=tuple(servers), port=port or 53,
                       timeout=timeout or 5.0, mx_port=mx_port or 25)


# Upper bounds keep a typo from disabling a limit: the MIME parser recurses once per
# level, and every archive level holds one member in memory.
_ATTACHMENT_CAPS = {"max_depth": 100, "max_parts": 100_000, "max_archive_depth": 20, "max_archive_members": 1_000_000}


def _attachments(c: Checker, data: YMap, rel: Any) -> AttachmentLimits:
    if "attachments" not in data:
        return AttachmentLimits()
    m = c.mapping(data["attachments"], data, "attachments", "'attachments'")
    if m is None:
        return AttachmentLimits()
    c.keys(m, {f.name for f in dataclasses.fields(AttachmentLimits)}, what="attachments")
    values: dict[str, Any] = {}
    for key, cap in _ATTACHMENT_CAPS.items():
        if key in m:
            value = _positive_int(c, m, key)
            if value is not None and value > cap:
                c.error(m, key, f"{key!r} must be at most {cap}, not {value}")
                value = None
            values[key] = value
    for key in ("max_decoded_size", "max_archive_total"):
        if key in m:
            size = _size(c, m, key)
            if size == 0:
                c.error(m, key, f"{key!r} must be above 0")
                size = None
            values[key] = size
    if "max_archive_ratio" in m:
        ratio = m["max_archive_ratio"]
        if isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and ratio >= 1:
            values["max_archive_ratio"] = float(ratio)
        else:
            c.error(m, "max_archive_ratio", f"'max_archive_ratio' must be a number of at least 1, not {ratio!r}")
    if "time_budget" in m:
        budget = _duration(c, m, "time_budget")
        if budget is not None and not 0 < budget <= 600:
            c.error(m, "time_budget", "'time_budget' must be above 0 and at most 10m")
            budget = None
        values["time_budget"] = budget
    if "trust_store" in m:
        store = c.typed(m, "trust_store", str)
        if store:
            path = rel(store)
            problem = _trust_store_problem(path)
            if problem:
                c.error(m, "trust_store", problem)
            else:
                values["trust_store"] = path
    return AttachmentLimits(**{k: v for k, v in values.items() if v is not None})


def _trust_store_problem(path: str) -> str | None:
    """Why ``path`` is not a usable trust store (a PEM/DER file or a directory of them), or None."""
    from mailgw.attachments.trust import load_roots

    if not os.path.exists(path):
        return f"trust store {path} does not exist"
    try:
        roots = load_roots(path)
    except (OSError, ValueError) as e:
        return f"trust store {path}: {e}"
    if not roots:
        return f"trust store {path} holds no certificate"
    return None


def _audit(c: Checker, data: YMap) -> AuditSettings:
    if "audit" not in data:
        return AuditSettings()
    m = c.mapping(data["audit"], data, "audit", "'audit'")
    if m is None:
        return AuditSettings()
    c.keys(m, ("timeout", "retry"), what="audit")
    values = {key: _duration(c, m, key) for key in ("timeout", "retry") if key in m}
    out = AuditSettings(**{k: v for k, v in values.items() if v})
    for key in ("timeout", "retry"):
        if key in m and values.get(key) == 0:
            c.error(m, key, f"audit {key} must be above 0")
    return out


def _log(c: Checker, data: YMap) -> str:
    if "log" not in data:
        return "text"
    m = c.mapping(data["log"], data, "log", "'log'")
    if m is None:
        return "text"
    c.keys(m, ("format",), what="log")
    fmt: str = c.typed(m, "format", str, "text")
    if fmt not in ("text", "json"):
        c.error(m, "format", f"log format must be text or json, not {fmt!r}")
        return "text"
    return fmt


_TAG_PATTERN = re.compile(r"[A-Za-z0-9:_.\-*?\[\]]+")


def _tags_header(c: Checker, data: YMap) -> tuple[str, ...]:
    """``tags_header: [unverified-official, "urgency:*"]``: tag names or shell patterns; none by default."""
    if "tags_header" not in data:
        return ()
    value = data["tags_header"]
    items = list(value) if isinstance(value, list) else [value]
    if not items or not all(isinstance(t, str) and t for t in items):
        c.error(data, "tags_header", "tags_header takes a list of tag names or patterns, like "
                "[unverified-official, \"urgency:*\"]")
        return ()
    for t in items:
        if not _TAG_PATTERN.fullmatch(t):
            c.error(data, "tags_header", f"{t!r} is not a tag name or pattern (letters, digits, : _ . - and * ? [ ])")
    return tuple(items)


DEFAULT_METRICS = ("127.0.0.1", 9464)  # Prometheus's registered default for exporters' 9xxx range


def _metrics(c: Checker, data: YMap) -> tuple[str, int] | None:
    if "metrics" not in data:
        return None
    m = c.mapping(data["metrics"], data, "metrics", "'metrics'")
    if m is None:
        return None
    c.keys(m, ("listen",), what="metrics")
    if "listen" not in m:
        return DEFAULT_METRICS  # loopback: the scraper runs on this machine or tunnels to it
    host, port = _hostport(c, m, "listen")
    return (host, port) if host else None


def _console(c: Checker, data: YMap, rel: Any, tls: TlsFiles | None) -> ConsoleSettings | None:
    if "console" not in data:
        return None
    m = c.mapping(data["console"], data, "console", "'console'")
    if m is None:
        return None
    c.keys(m, ("listen", "users", "tls", "behind_proxy", "candidates", "session_idle", "max_rows"),
           required=("listen", "users"), what="console")
    if "listen" not in m or "users" not in m:
        return None
    host, port = _hostport(c, m, "listen")
    users = c.typed(m, "users", str)
    if users is None:
        c.error(m, "users", "'users' must name the console's accounts file")
        return None
    behind_proxy = c.typed(m, "behind_proxy", bool, False)
    on_tls = c.typed(m, "tls", bool, not behind_proxy and tls is not None)
    if on_tls and tls is None:
        c.error(m, "tls", "the console serves HTTPS with the gateway's certificate: set the top-level 'tls' "
                          "(cert, key), or 'tls: false' with 'behind_proxy: true' behind a reverse proxy")
    if not on_tls and not behind_proxy and host not in ("127.0.0.1", "::1", "localhost"):
        c.error(m, "listen", "plain HTTP on a non-loopback address would send passwords and sessions in clear: "
                             "use TLS, or listen on loopback behind a reverse proxy ('behind_proxy: true')")
    candidates = c.typed(m, "candidates", str)
    out = ConsoleSettings(host=host, port=port, users=rel(users), tls=bool(on_tls), behind_proxy=bool(behind_proxy),
                          candidates=rel(candidates) if candidates else None)
    if "session_idle" in m:
        idle = _duration(c, m, "session_idle", positive=True)
        if idle:
            out = dataclasses.replace(out, session_idle=idle)
    if "max_rows" in m:
        rows = _positive_int(c, m, "max_rows")
        if rows:
            out = dataclasses.replace(out, max_rows=rows)
    return out
_ADDRESS = re.compile(r"[^@\s<>,;]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_SPF_TERM = re.compile(r"[+?~-]?(?:ip4:[0-9.]+(?:/\d+)?|ip6:[0-9A-Fa-f:.]+(?:/\d+)?|a(?::\S+)?(?:/\d+)?|mx(?::\S+)?(?:/\d+)?"
                       r"|include:\S+|exists:\S+)")


def spf_term_ok(term: str) -> bool:
    """Whether ``term`` is an SPF mechanism we may print (an ip4:/ip6: one with a valid address and prefix)."""
    if not _SPF_TERM.fullmatch(term):
        return False
    mech, _, value = term.lstrip("+?~-").partition(":")
    if mech not in ("ip4", "ip6"):
        return True
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return net.version == (4 if mech == "ip4" else 6)


def _dmarc(c: Checker, data: YMap) -> DmarcSettings:
    if "dmarc" not in data:
        return DmarcSettings()
    m = c.mapping(data["dmarc"], data, "dmarc", "'dmarc'")
    if m is None:
        return DmarcSettings()
    c.keys(m, ("reports", "record"), what="dmarc")
    values: dict[str, Any] = {"line": data.line_of("dmarc")}
    r = c.mapping(m["reports"], m, "reports", "'dmarc.reports'") if "reports" in m else None
    if r is not None:
        c.keys(r, ("send", "org_name", "email", "extra_contact_info"), what="dmarc.reports")
        values["send"] = bool(c.typed(r, "send", bool, False))
        for key in ("org_name", "email", "extra_contact_info"):
            value = c.typed(r, key, str)
            if value is not None:
                values[key] = value.strip()
        if values.get("email") and not _ADDRESS.fullmatch(values["email"]):
            c.error(r, "email", f"dmarc.reports.email {values['email']!r} is not an address (name@domain)")
        if values["send"]:
            for key in ("org_name", "email"):
                if not values.get(key):
                    c.error(r, "send", f"dmarc.reports.send needs dmarc.reports.{key} (RFC 7489 report_metadata)")
    d = c.mapping(m["record"], m, "record", "'dmarc.record'") if "record" in m else None
    if d is not None:
        c.keys(d, ("p", "rua", "spf"), what="dmarc.record")
        p = c.typed(d, "p", str)
        if p is not None and p not in ("none", "quarantine", "reject"):
            c.error(d, "p", f"dmarc.record.p must be none, quarantine or reject, not {p!r}")
        values["p"] = p
        rua = c.typed(d, "rua", str)
        if rua is not None:
            address = rua[len("mailto:"):] if rua.lower().startswith("mailto:") else rua
            if not _ADDRESS.fullmatch(address):
                c.error(d, "rua", f"dmarc.record.rua {rua!r} is not an address (mailto:name@domain)")
            values["rua"] = address
        spf = c.typed(d, "spf", list, [])
        terms = []
        for term in spf or []:
            if not isinstance(term, str) or not spf_term_ok(term):
                c.error(d, "spf", f"dmarc.record.spf: {term!r} is not an SPF term (ip4:ADDR[/N], ip6:..., a, mx, "
                                  "include:DOMAIN, exists:DOMAIN)")
            else:
                terms.append(term)
        values["spf"] = tuple(terms)
    return DmarcSettings(**values)


def _queue(c: Checker, data: YMap) -> QueueSettings:
    if "queue" not in data:
        return QueueSettings()
    q = c.mapping(data["queue"], data, "queue", "'queue'")
    if q is None:
        return QueueSettings()
    fields = {f.name: f.default for f in dataclasses.fields(QueueSettings)}
    c.keys(q, fields, what="queue")
    values: dict[str, Any] = {}
    for key in ("retry_min", "retry_max", "lifetime", "scan_interval", "connect_timeout", "command_timeout",
                "urgent_retry_min", "urgent_retry_max"):
        if key in q:
            values[key] = _duration(c, q, key, positive=True)
    if "concurrency" in q:
        values["concurrency"] = _positive_int(c, q, "concurrency")
    out = QueueSettings(**{k: v for k, v in values.items() if v is not None})
    if out.retry_max < out.retry_min:
        c.error(q, "retry_max", "retry_max must not be shorter than retry_min")
    if out.urgent_retry_max < out.urgent_retry_min:
        c.error(q, "urgent_retry_max" if "urgent_retry_max" in q else "urgent_retry_min",
                "urgent_retry_max must not be shorter than urgent_retry_min")
    return out


def _limits(c: Checker, data: YMap) -> Limits:
    if "limits" not in data:
        return Limits()
    m = c.mapping(data["limits"], data, "limits", "'limits'")
    if m is None:
        return Limits()
    c.keys(m, {f.name for f in dataclasses.fields(Limits)}, what="limits")
    values: dict[str, Any] = {}
    for key in ("message_size", "min_free_space", "header_size"):
        if key in m:
            values[key] = _size(c, m, key)
    for key in ("recipients", "commands", "connections_per_ip", "max_received", "header_lines"):
        if key in m:
            values[key] = _positive_int(c, m, key)
    if "in_flow" in m:
        values["in_flow"] = _non_negative_int(c, m, "in_flow")
    for key in ("idle_timeout", "drain_timeout", "auth_penalty", "data_deadline", "in_flow_delay"):
        if key in m:
            # No wait before the close (drain), after a failed login (penalty) or at a full MAIL
            # (in_flow_delay) is a choice; a zero idle or DATA timeout would drop every session.
            values[key] = _duration(c, m, key, positive=key in ("idle_timeout", "data_deadline"))
    out = Limits(**{k: v for k, v in values.items() if v is not None})
    if out.in_flow and out.in_flow_delay >= out.idle_timeout:
        # The session's idle timer runs while its MAIL waits: it would be closed by its own server.
        c.error(m, "in_flow_delay" if "in_flow_delay" in m else "idle_timeout",
                f"in_flow_delay ({out.in_flow_delay:g} s) must be shorter than idle_timeout ({out.idle_timeout:g} s): "
                "a MAIL waiting that long would be timed out by the gateway itself")
    return out


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> float | None:
    """Seconds from ``30s``, ``5m``, ``4h``, ``5d``, ``200ms`` or a plain number of seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    if isinstance(value, str):
        m = _DURATION.fullmatch(value.strip())
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    return None


def _duration(c: Checker, m: YMap, key: str, *, positive: bool = False) -> float | None:
    """The duration at ``key``; with ``positive``, zero is refused too (a wait of nothing is meaningless there)."""
    value = parse_duration(m[key])
    if value is None:
        c.error(m, key, f"{key!r} must be a duration like 30s, 5m, 4h or 5d, not {m[key]!r}")
    elif positive and value == 0:
        c.error(m, key, f"{key!r} must be above 0, not {m[key]!r}")
        return None
    return value


_SIZE = re.compile(r"(\d+)\s*([KMG]i?B?|B)?", re.IGNORECASE)


def _size(c: Checker, m: YMap, key: str) -> int | None:
    value = m[key]
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        mm = _SIZE.fullmatch(value.strip())
        if mm:
            unit = (mm.group(2) or "B").upper()[0]
            return int(mm.group(1)) * {"B": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[unit]
    c.error(m, key, f"{key!r} must be a size like 10M (K, M, G are powers of 1024), not {value!r}")
    return None


def _non_negative_int(c: Checker, m: YMap, key: str) -> int | None:
    value = m[key]
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    c.error(m, key, f"{key!r} must be a whole number, 0 or more, not {value!r}")
    return None


def _positive_int(c: Checker, m: YMap, key: str) -> int | None:
    value = m[key]
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    c.error(m, key, f"{key!r} must be a whole number above 0, not {value!r}")
    return None
