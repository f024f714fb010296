"""The `mailgw` command: its subcommands and options are published names (README). Exit: 0 ok, 1 invalid input or failed check, 2 usage."""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import sys
import time
from typing import Any, Sequence

from mailgw import __version__
from mailgw.config.yamlfile import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.command_line = argv is None  # the process's own arguments (serve may start again with them)
    if not getattr(args, "func", None):
        parser.print_usage(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    from mailgw.config.settings import default_path

    top = argparse.ArgumentParser(add_help=False)
    top.add_argument("--config", default=default_path(), help="settings file (default: $MAILGW_CONFIG, else ./gateway.yaml)")
    # Every subcommand takes --config too; it has no default of its own there, so that
    # `mailgw --config F check` keeps F (a subparser's default would replace it).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="settings file (default: $MAILGW_CONFIG, else ./gateway.yaml)")
    p = argparse.ArgumentParser(prog="mailgw", description="SMTP gateway for official documents of state agencies", parents=[top])
    p.add_argument("--version", action="version", version=f"mailgw {__version__}")
    sub = p.add_subparsers(metavar="COMMAND")

    s = sub.add_parser("serve", parents=[common], help="run the gateway")
    # Set by the supervisor for its workers (settings 'workers' above 1; mailgw.workers), never by hand.
    s.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    s.add_argument("--notify-fd", type=int, help=argparse.SUPPRESS)
    s.add_argument("--balance", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("status", parents=[common], help="what the running gateway runs, its queue and exchange log")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("reload", parents=[common],
                       help="reload the running gateway (SIGHUP) and wait for the outcome: exit 1 if it kept the old files")
    s.add_argument("--pid", type=int, help="the gateway's pid (systemd: $MAINPID; default: from its status file)")
    s.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the outcome (default 60)")
    s.set_defaults(func=cmd_reload)

    s = sub.add_parser("check", parents=[common], help="validate settings, directory and policies")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("classify", parents=[common], help="the classification of one message")
    s.add_argument("file")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_classify)

    pol = sub.add_parser("policy", parents=[common], help="the policies")
    ps = pol.add_subparsers(metavar="ACTION")
    s = ps.add_parser("test", parents=[common], help="run messages through the whole decision path; send nothing")
    s.add_argument("files", nargs="+", metavar="FILE.eml")
    s.add_argument("--listener", default="relay", help="the listener the message arrives on (default: relay)")
    s.add_argument("--mail-from", help="envelope sender (default: the From header)")
    s.add_argument("--rcpt", action="append", default=[], help="envelope recipient; repeat for more (default: To and Cc)")
    s.add_argument("--auth-user", help="the login of a submission session (default: the sender)")
    s.add_argument("--client-ip", default="127.0.0.1")
    s.add_argument("--json", action="store_true", help="one JSON object per message")
    s.set_defaults(func=cmd_policy_test)
    s = ps.add_parser("replay", parents=[common, _filter_parser()],
                      help="what a candidate policies folder would have done to the exchanges in the log")
    s.add_argument("--candidate", required=True, metavar="DIR", help="the candidate policies folder")
    s.add_argument("--show", type=int, default=50, metavar="N", help="list at most N changed exchanges (default 50)")
    s.add_argument("--json", action="store_true",
                   help='one {"id", "before", "after"} line per changed exchange, then one {"summary": ...} line')
    s.set_defaults(func=cmd_policy_replay)

    q = sub.add_parser("queue", parents=[common], help="inspect and manage the spool")
    qs = q.add_subparsers(metavar="ACTION")
    select = argparse.ArgumentParser(add_help=False)
    g = select.add_argument_group("filters (all must match; with ALL or with ids)")
    g.add_argument("--sender", metavar="ADDR", help="envelope sender (case-insensitive)")
    g.add_argument("--recipient", metavar="ADDR", help="any envelope recipient (case-insensitive)")
    g.add_argument("--state", choices=("queued", "deferred", "held"),
                   help="queued (deferred ones included), deferred (tried, waiting to retry) or held")
    g.add_argument("--older-than", metavar="AGE", help="received longer ago than AGE (30m, 4h, 2d)")
    g.add_argument("--newer-than", metavar="AGE", help="received less than AGE ago")
    s = qs.add_parser("list", parents=[common, select], help="list queued and held messages")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_queue_list)
    s = qs.add_parser("show", parents=[common], help="one message: envelope, record, delivery state, header")
    s.add_argument("id")
    s.add_argument("--body", action="store_true", help="the whole message as spooled (postcat)")
    s.set_defaults(func=cmd_queue_show)
    ids_help = "message ids, ALL (every one the filters select) or - (ids on standard input)"
    for action, text in (("hold", "quarantine queued messages"), ("release", "release held messages"),
                         ("delete", "delete messages (no DSN)"),
                         ("requeue", "queued messages due now, their retry backoff started afresh"),
                         ("bounce", "return messages to their senders with a DSN, never sending them")):
        s = qs.add_parser(action, parents=[common, select], help=text)
        s.add_argument("ids", nargs="+", metavar="ID", help=ids_help)
        s.add_argument("--reason", help="why, kept in the exchange log with the action")
        s.set_defaults(func=cmd_queue_action, action=action)
    s = qs.add_parser("flush", aliases=["deliver"], parents=[common, select],
                      help="deliver now: the given queued messages, or every one")
    s.add_argument("ids", nargs="*", metavar="ID", help=ids_help + "; none: every queued message")
    s.set_defaults(func=cmd_queue_flush, action="flush")
    q.set_defaults(func=lambda a: _usage(q))

    d = sub.add_parser("directory", parents=[common], help="the official directory")
    ds = d.add_subparsers(metavar="ACTION")
    s = ds.add_parser("check", parents=[common], help="validate the directory")
    s.set_defaults(func=cmd_directory_check)
    s = ds.add_parser("publish", parents=[common], help="publish the list of official addresses")
    s.add_argument("--format", choices=("html", "csv"), required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_directory_publish)
    d.set_defaults(func=lambda a: _usage(d))

    k = sub.add_parser("dkim", parents=[common], help="DKIM keys")
    ks = k.add_subparsers(metavar="ACTION")
    s = ks.add_parser("keygen", parents=[common], help="make a key pair and print the DNS TXT record")
    s.add_argument("--domain", required=True)
    s.add_argument("--selector", required=True)
    s.add_argument("--algorithm", choices=("ed25519", "rsa"), default="ed25519")
    s.add_argument("--key-dir", help="where to write the key (default: keys/ beside the settings file)")
    s.set_defaults(func=cmd_dkim_keygen)
    k.set_defaults(func=lambda a: _usage(k))

    m = sub.add_parser("dmarc", parents=[common], help="DMARC: aggregate reports, and the records our domains publish")
    ms = m.add_subparsers(metavar="ACTION")
    s = ms.add_parser("report", parents=[common],
                      help="one day's aggregate reports (RFC 7489): written to a folder, or sent to the domains' rua=")
    s.add_argument("--day", metavar="YYYY-MM-DD", help="the UTC day (default: yesterday)")
    s.add_argument("--send", action="store_true",
                   help="queue each report for the domain's rua= addresses (settings dmarc.reports.send must be true)")
    s.add_argument("--out", metavar="DIR", help="write each report (.xml.gz) into DIR")
    s.add_argument("--domain", action="append", metavar="D", help="only this policy domain; repeat for more")
    s.set_defaults(func=cmd_dmarc_report)
    s = ms.add_parser("record", parents=[common],
                      help="print the SPF and DMARC records our domains should publish")
    s.add_argument("--domain", action="append", metavar="D", help="this domain (default: the directory's local domains)")
    s.add_argument("--spf", action="append", metavar="TERM",
                   help="an SPF term (ip4:203.0.113.5, include:...); default: dmarc.record.spf, else the listeners' addresses")
    s.add_argument("--p", choices=("none", "quarantine", "reject"), help="the DMARC policy (default: dmarc.record.p, else none)")
    s.add_argument("--rua", metavar="ADDR", help="where reports go (default: dmarc.record.rua, else dmarc.reports.email)")
    s.set_defaults(func=cmd_dmarc_record)
    m.set_defaults(func=lambda a: _usage(m))

    s = sub.add_parser("passwd", parents=[common], help="print an argon2 hash for the credentials file")
    s.add_argument("login")
    s.set_defaults(func=cmd_passwd)

    s = sub.add_parser("console", parents=[common], help="the auditors' and admins' web console (settings 'console:')")
    s.set_defaults(func=cmd_console)

    _audit_parsers(sub, common)
    return p


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    return 2


def _setup_logging(level: str = "INFO", who: str = "", fmt: str = "text") -> None:
    """``who`` names the process in every line when several share the log (``worker 2``)."""
    from mailgw import logsetup

    logsetup.setup(level, who, fmt)


def cmd_serve(args: argparse.Namespace) -> int:
    if "OPENSSL_CONF" not in os.environ and not args.worker and args.command_line:
        # OpenSSL reads its configuration once, when the ssl module loads: start again with
        # ours (the key-exchange groups of Mozilla's "intermediate", mailgw/smtp/openssl.cnf).
        conf = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smtp", "openssl.cnf")
        os.execve(sys.executable, [sys.executable, "-m", "mailgw", *sys.argv[1:]], {**os.environ, "OPENSSL_CONF": conf})
    from mailgw.config.settings import load

    settings = load(args.config)
    if settings.workers > 1 and settings.metrics_listen is not None and not args.worker:
        # Before prometheus_client loads (mailgw.app imports it): counters in SPOOL/metrics/, shared
        # by the supervisor and the workers it starts (they inherit the variable; mailgw/metrics.py).
        import shutil

        shared = os.path.join(settings.spool, "metrics")
        shutil.rmtree(shared, ignore_errors=True)
        os.makedirs(shared, mode=0o700, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared

    from mailgw.app import Gateway

    _setup_logging(settings.log_level, f"worker {args.worker}" if args.worker else "", settings.log_format)
    if args.worker:
        from mailgw import workers

        workers.die_with_parent()
        on_queued = workers.notifier(args.notify_fd) if args.notify_fd is not None else None

        async def run() -> None:
            gateway = Gateway(args.config, mode="receive", on_queued=on_queued)
            gateway.freeze_gc = True
            if args.balance:
                from mailgw.balance import Balancer

                gateway.balancer = Balancer.from_spec(args.balance)
            if args.notify_fd is not None:
                gateway.on_ready = workers.ready_sender(args.notify_fd)
            await gateway.serve_forever()
    elif settings.workers > 1:
        from mailgw import workers

        async def run() -> None:
            await workers.supervise(args.config, settings.workers)
    else:

        async def run() -> None:
            gateway = Gateway(args.config)
            gateway.freeze_gc = True
            await gateway.serve_forever()

    # libuv's event loop: under the Postfix bench it takes ~14 % less CPU per
    # message than asyncio's own (README, Performance); the tests run on it too.
    import uvloop

    uvloop.run(run())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 when the gateway runs, 1 when it does not (the rest is shown all the same)."""
    from mailgw import status
    from mailgw.config import settings

    info = status.gather(settings.load(args.config).spool)
    print(json.dumps(info, ensure_ascii=False) if args.json else status.render(info))
    return 0 if info["running"] else 1


def _spool_path(config: str) -> str:
    """The spool directory even from a settings file that no longer validates (what a failed reload is about)."""
    from mailgw.config import settings

    try:
        return settings.load(config).spool
    except ConfigError as e:
        import yaml

        try:
            with open(config, encoding="utf-8") as f:
                spool = (yaml.safe_load(f) or {}).get("spool")
        except (OSError, yaml.YAMLError, AttributeError):
            spool = None
        if not isinstance(spool, str):
            raise e from None
        return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(config)), spool))


def cmd_reload(args: argparse.Namespace) -> int:
    import signal

    from mailgw import status

    spool = _spool_path(args.config)
    before = status.read(spool) or {}
    pid = args.pid or before.get("pid")
    if not isinstance(pid, int) or not status.alive(pid) or (not args.pid and before.get("state") == "stopped"):
        print(f"mailgw reload: the gateway is not running (no live pid in {status.path(spool)})", file=sys.stderr)
        return 1
    seen = (before.get("reload") or {}).get("count", 0) if before.get("pid") == pid else 0
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        now = status.read(spool) or {}
        outcome = now.get("reload") or {}
        if now.get("pid") == pid and outcome.get("count", 0) > seen:
            if outcome.get("ok"):
                pol = now.get("policies") or {}
                print(f"reloaded: policies version {pol.get('version')}, directory version "
                      f"{(now.get('directory') or {}).get('version')}")
                return 0
            print(f"mailgw reload: FAILED, the gateway keeps its previous configuration: {outcome.get('error')}",
                  file=sys.stderr)
            return 1
        time.sleep(0.1)  # polling a file another process replaces; no event to wait on across processes
    print(f"mailgw reload: no outcome from pid {pid} in {args.timeout:.0f} s", file=sys.stderr)
    return 1


def cmd_check(args: argparse.Namespace) -> int:
    from mailgw.app import load_context
    from mailgw.directory import model as directory
    from mailgw.senderauth import commands as dmarc_commands
    from mailgw.stages import dkim_sign

    ctx, warnings = load_context(args.config)
    # Published DKIM records are looked up here only, not at start: a DNS
    # failure is a warning that they could not be checked.
    warnings += dkim_sign.check_published(ctx)
    if ctx.settings.console is not None:  # the console's accounts: its roles and scopes name the directory's codes
        from mailgw.console import accounts

        try:
            accounts.load(ctx.settings.console.users, ctx.directory)
        except ConfigError as e:
            warnings += e.problems
    warnings += dmarc_commands.check_published(ctx)
    problems = sorted(set(warnings) | set(directory.check(ctx.settings.directory)))
    for p in problems:
        print(p, file=sys.stderr)
    if any(not p.warning for p in problems):
        return 1
    policies = ctx.policies
    assert policies is not None  # load_context always loads the policies folder
    print(f"{args.config}: OK ({len(policies.rules)} policy rules from {len(policies.files)} files, "
          f"version {policies.version}; {len(ctx.directory.mailboxes)} mailboxes)")
    return 0


def cmd_policy_test(args: argparse.Namespace) -> int:
    from mailgw import trace
    from mailgw.app import load_context

    ctx, _ = load_context(args.config)
    status = 0
    for i, path in enumerate(args.files):
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            print(f"{path}:0: cannot read: {e.strerror}", file=sys.stderr)
            status = 1
            continue
        try:
            t = trace.run(ctx, raw, listener=args.listener, mail_from=args.mail_from, rcpts=args.rcpt,
                          auth_user=args.auth_user, client_ip=args.client_ip)
        except trace.MessageError as e:  # this message only: the batch goes on
            print(f"{path}:0: {e}", file=sys.stderr)
            status = 1
            continue
        except trace.UsageError as e:
            print(f"mailgw policy test: {e}", file=sys.stderr)
            return 2
        except Exception as e:  # a fault of ours: said, and the batch goes on
            print(f"{path}:0: internal error: {type(e).__name__}: {e}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            print(json.dumps({"file": path, **t}, ensure_ascii=False))
        else:
            if i:
                print()
            print(f"== {path}")
            print(trace.render(t))
    return status


def cmd_policy_replay(args: argparse.Namespace) -> int:
    from mailgw.app import load_context
    from mailgw.audit import query
    from mailgw.audit.access import log_access
    from mailgw.audit.query import FilterError, Filters
    from mailgw.audit.record import RecordError
    from mailgw.audit.store import open_engine
    from mailgw.config.yamlfile import ConfigError
    from mailgw.policy import load as load_policies
    from mailgw.policy.replay import replay

    ctx, _ = load_context(args.config)
    try:
        candidate = load_policies(args.candidate, ctx.directory)
    except ConfigError as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        return 1
    try:
        f = Filters.parse(_audit_filters(args))
    except FilterError as e:
        print(f"mailgw policy replay: {e}", file=sys.stderr)
        return 2
    assert ctx.policies is not None  # load_context loads the policies folder in force
    engine = open_engine(ctx.settings.database)
    try:
        log_access(engine, "policy replay", {**f.as_args(), "candidate": os.path.abspath(args.candidate)})
        with engine.connect() as conn:
            report = replay(ctx, ctx.policies, candidate, query.iter_records(conn, f))
    except RecordError as e:
        print(f"mailgw policy replay: {e}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if args.json:  # one line per changed exchange, then the summary (the published shape)
        for change in report.changes:
            print(json.dumps(change.to_json(), ensure_ascii=False))
        print(json.dumps({"summary": report.summary()}, ensure_ascii=False))
        return 0
    skipped = ", ".join(f"{why}: {n}" for why, n in sorted(report.skipped.items()))
    print(f"Phát lại / Replay: {report.replayed} thư / exchange(s) on their recorded facts, policies "
          f"{ctx.policies.version} -> candidate {candidate.version}" + (f"; bỏ qua / skipped: {skipped}" if skipped else ""))
    if report.differs_from_record:
        print(f"  {report.differs_from_record} decided otherwise by the policies in force than recorded (changed "
              "since, or a rule on facts a record does not keep: display name, Sender)")
    for name in ("current", "candidate"):
        counts = ", ".join(f"{d} {n}" for d, n in sorted(report.decisions[name].items()))
        print(f"Quyết định / Decisions, {name}: {counts or '-'}")
    rules = sorted(set(report.rules["current"]) | set(report.rules["candidate"]))
    moved = [r for r in rules if report.rules["current"][r] != report.rules["candidate"][r]]
    if moved:
        print("Quy tắc khớp / Rules matched (in force -> candidate):")
        for r in moved:
            print(f"  {r:32} {report.rules['current'][r]:6} -> {report.rules['candidate'][r]}")
    print(f"Thay đổi / Changes: {len(report.changes)}")
    for c in report.changes[: max(args.show, 0)]:
        tags = ""
        if c.current.tags != c.candidate.tags:
            tags = f"  tags {','.join(c.current.tags) or '-'} -> {','.join(c.candidate.tags) or '-'}"
        print(f"  {c.time}  {c.id}  {c.current.decision} ({c.current.rule}) -> "
              f"{c.candidate.decision} ({c.candidate.rule}){tags}")
    if len(report.changes) > args.show:
        print(f"  ... {len(report.changes) - args.show} more (--show N, or --json)")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    import email
    import email.policy

    from mailgw.classify.engine import classify, limits_for
    from mailgw.classify.explain import explain
    from mailgw.config import settings
    from mailgw.config.yamlfile import ConfigError
    from mailgw.directory import model as directory

    try:
        with open(args.file, "rb") as f:
            msg = email.message_from_binary_file(f, policy=email.policy.default)
    except OSError as e:
        print(f"{args.file}:0: cannot read: {e.strerror}", file=sys.stderr)
        return 1
    try:  # the gateway's directory names the agencies whose symbols appear in file names
        limits = limits_for(directory.load(settings.load(args.config).directory))
    except ConfigError:
        limits = limits_for(None)  # classifying one file needs no gateway configuration
    c = classify(msg, limits=limits)
    print(json.dumps(c.to_json(), ensure_ascii=False) if args.json else explain(c))
    return 0


def cmd_directory_check(args: argparse.Namespace) -> int:
    from mailgw.config import settings
    from mailgw.directory import model as directory

    path = settings.load(args.config).directory
    problems = directory.check(path)
    for p in problems:
        print(p, file=sys.stderr)
    if any(not p.warning for p in problems):
        return 1
    print(f"{path}: OK")
    return 0


def cmd_directory_publish(args: argparse.Namespace) -> int:
    from mailgw.config import settings
    from mailgw.directory import model as directory
    from mailgw.directory import publish

    d = directory.load(settings.load(args.config).directory)
    text = publish.publish_html(d) if args.format == "html" else publish.publish_csv(d)
    with open(args.out, "w", encoding="utf-8", newline="" if args.format == "csv" else None) as f:
        f.write(text)
    print(f"{args.out}: {len(d.mailboxes)} mailboxes of {len(d.agencies)} agencies")
    return 0


def cmd_dkim_keygen(args: argparse.Namespace) -> int:
    import os

    from mailgw.dkim import keygen

    key_dir = args.key_dir or os.path.join(os.path.dirname(os.path.abspath(args.config)), "keys")
    try:
        path, record = keygen(args.domain, args.selector, args.algorithm, key_dir)
    except FileExistsError as e:
        print(f"mailgw dkim keygen: {e.filename} exists; a published key is never overwritten", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"mailgw dkim keygen: {e}", file=sys.stderr)
        return 1
    print(f"# private key written to {path} (mode 0600); publish this record in DNS:")
    print(record)
    return 0


def cmd_dmarc_report(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from mailgw.app import load_context
    from mailgw.config import settings
    from mailgw.senderauth import commands

    try:
        day = commands.parse_day(args.day)
    except ValueError as e:
        print(f"mailgw dmarc report: {e}", file=sys.stderr)
        return 2
    ctx, _ = load_context(args.config)
    try:
        return commands.report(ctx, day, send=args.send, out=args.out, domains=args.domain, stdout=sys.stdout,
                               stderr=sys.stderr)
    except SQLAlchemyError as e:
        detail = str(getattr(e, "orig", None) or e).strip().splitlines()
        print(f"mailgw dmarc report: cannot read the exchange log at {settings._redact_url(ctx.settings.database)}: "
              f"{detail[0] if detail else type(e).__name__}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"mailgw dmarc report: {e}", file=sys.stderr)
        return 1


def cmd_dmarc_record(args: argparse.Namespace) -> int:
    from mailgw.app import load_context
    from mailgw.config.settings import spf_term_ok
    from mailgw.senderauth import commands

    bad = [t for t in args.spf or [] if not spf_term_ok(t)]
    if bad:
        print(f"mailgw dmarc record: {bad[0]!r} is not an SPF term (ip4:ADDR[/N], ip6:..., a, mx, include:DOMAIN)",
              file=sys.stderr)
        return 2
    ctx, _ = load_context(args.config)
    commands.print_records(commands.expected(ctx, args.domain, spf=tuple(args.spf or ()), p=args.p, rua=args.rua),
                           sys.stdout)
    return 0


def _spool(args: argparse.Namespace) -> Any:
    from mailgw.config import settings
    from mailgw.queue.spool import Spool

    return Spool(settings.load(args.config).spool)


def _queue_filters(args: argparse.Namespace) -> Any:
    from mailgw.config.settings import parse_duration
    from mailgw.queue.admin import Filters

    ages = {}
    for name in ("older_than", "newer_than"):
        value = getattr(args, name, None)
        if value is not None:
            ages[name] = parse_duration(value)
            if ages[name] is None:
                raise _UsageError(f"--{name.replace('_', '-')}: not an age like 30m, 4h or 2d: {value!r}")
    return Filters(sender=args.sender, recipient=args.recipient, state=args.state, **ages)


class _UsageError(Exception):
    pass


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_queue_list(args: argparse.Namespace) -> int:
    from mailgw.queue.admin import pending, state_of

    try:
        filters = _queue_filters(args)
    except _UsageError as problem:
        print(f"mailgw queue list: {problem}", file=sys.stderr)
        return 2
    spool = _spool(args)
    rows = []
    now = time.time()
    for e in spool.entries():
        if not filters.match(e, now):
            continue
        env = e.meta.get("envelope", {})
        last = next((s.get("reply") for s in e.state.get("rcpts", {}).values() if s.get("reply")), "")
        urgency = ((e.meta.get("record") or {}).get("classification") or {}).get("urgency") or "none"
        rows.append({
            "id": e.id, "state": "held" if e.where == "hold" else "queued", "size": e.size,
            "age": int(now - env.get("received_at", now)), "from": env.get("mail_from", ""),
            "rcpts": env.get("rcpts", []), "pending": pending(e), "attempts": e.state.get("attempts", 0),
            "next_try": e.state.get("next_try", 0.0), "last_reply": last,
            "deferred": state_of(e) == "deferred", "urgency": urgency,
            "bounce_requested": spool.bounce_requested(e.id),
        })
    if args.json:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
        return 0
    if not rows:
        print("queue empty")
        return 0
    print(f"{'ID':<26} {'STATE':<8} {'SIZE':>9} {'AGE':>8} {'TRIES':>5} {'NEXT TRY':<20}  FROM -> RCPTS")
    for r in rows:
        state = "deferred" if r["deferred"] else r["state"]
        if r["state"] == "held":
            next_try = "-"
        elif r["next_try"] <= now:
            next_try = "now"
        else:
            next_try = _when(r["next_try"])
        flags = "".join((" [" + r["urgency"] + "]" if r["urgency"] in ("hoa_toc", "thuong_khan") else "",
                         " [bounce requested]" if r["bounce_requested"] else ""))
        print(f"{r['id']:<26} {state:<8} {r['size']:>9} {_age(r['age']):>8} {r['attempts']:>5} {next_try:<20}  "
              f"<{r['from']}> -> {', '.join(r['pending'])}{flags}")
        if r["last_reply"]:
            print(f"{'':<26} last: {r['last_reply']}")
    total = sum(r["size"] for r in rows)
    held = sum(r["state"] == "held" for r in rows)
    # postqueue -p's footer
    print(f"-- {(total + 1023) // 1024} Kbytes in {len(rows)} Request{'s' if len(rows) != 1 else ''}."
          f" ({len(rows) - held} queued, {held} held)")
    return 0


def cmd_queue_show(args: argparse.Namespace) -> int:
    from mailgw.queue.admin import state_of
    from mailgw.queue.spool import SpoolError

    spool = _spool(args)
    try:
        entry, data = spool.read(args.id)
    except (FileNotFoundError, ValueError):
        print(f"mailgw queue show: no such message {args.id!r}", file=sys.stderr)
        return 1
    except SpoolError as problem:
        print(f"mailgw queue show: {problem}", file=sys.stderr)
        return 1
    state = "held" if entry.where == "hold" else "queued"
    print(json.dumps({"id": entry.id, "state": state, "deferred": state_of(entry) == "deferred",
                      "bounce_requested": spool.bounce_requested(entry.id), "size": entry.size,
                      "next_try": entry.next_try, "meta": entry.meta, "delivery": entry.state},
                     ensure_ascii=False, indent=2))
    if args.body:  # postcat: the message as it will be sent
        print()
        sys.stdout.flush()
        sys.stdout.buffer.write(data.replace(b"\r\n", b"\n"))
        sys.stdout.buffer.flush()
        return 0
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    print("\n" + head)
    return 0


def cmd_queue_action(args: argparse.Namespace) -> int:
    from mailgw.config import settings as settings_mod
    from mailgw.queue import admin

    action = args.action
    try:
        filters = _queue_filters(args)
        ids = admin.read_ids(args.ids, sys.stdin) if args.ids else ["ALL"]
    except (_UsageError, ValueError) as e:
        print(f"mailgw queue {action}: {e}", file=sys.stderr)
        return 2
    if "ALL" in ids and ids != ["ALL"]:
        print(f"mailgw queue {action}: ALL stands alone (use filters to narrow it)", file=sys.stderr)
        return 2
    settings = settings_mod.load(args.config)
    from mailgw.queue.spool import Spool

    spool = Spool(settings.spool)
    chosen, problems = admin.select(spool, action, ids, filters)
    by = admin.who()
    when = datetime.datetime.now(datetime.timezone.utc)
    if action == "flush":
        # All made due before one rescan request: the worker then chooses among all of them (urgent first).
        queued = set(spool.ids("queue"))
        spool.flush([e.id for e in chosen if e.id in queued])
        outcomes = [(e, e.id in queued) for e in chosen]
    else:
        if action == "delete":
            try:
                admin.keep_records(admin.journal_dir(settings.spool), chosen)
            except (OSError, ValueError, TypeError) as e:
                print(f"mailgw queue delete: nothing deleted: the records of the messages could not be journaled "
                      f"first: {e}", file=sys.stderr)
                return 1
        outcomes = [(e, admin.perform(spool, action, e, by)) for e in chosen]
    done = []
    for entry, ok in outcomes:
        if ok:
            done.append(entry)
            print(f"{entry.id}: {action} done")  # the line of earlier releases, which scripts may read
        else:
            problems.append(f"{entry.id}: no longer there (delivered or moved meanwhile)")
    status = 1 if problems else 0
    try:
        where = admin.record(settings.database, settings.node, admin.journal_dir(settings.spool), action, done,
                             by, getattr(args, "reason", None), when)
    except (OSError, ValueError, TypeError) as e:
        problems.append(f"the action is NOT in the exchange log: neither the log nor its journal took it: {e}")
        where, status = "", 1
    for p in problems:
        print(f"mailgw queue {action}: {p}", file=sys.stderr)
    print(f"{len(done)} message(s) {admin.ACTIONS[action][2]}" + (f"; recorded in {where}" if where else ""),
          file=sys.stderr)
    return status


def cmd_queue_flush(args: argparse.Namespace) -> int:
    if not args.ids and not any(getattr(args, k) for k in ("sender", "recipient", "state", "older_than", "newer_than")):
        n = _spool(args).flush()
        print(f"{n} queued messages due now")
        return 0
    return cmd_queue_action(args)


def cmd_passwd(args: argparse.Namespace) -> int:
    from mailgw.smtp.credentials import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.login}: ")
        if getpass.getpass("again: ") != password:
            print("passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("empty password refused", file=sys.stderr)
        return 1
    print(f'  {args.login}: "{hash_password(password)}"')
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    from mailgw.console.app import run

    _setup_logging()
    return run(args.config)


def _age(seconds: int) -> str:
    return str(datetime.timedelta(seconds=seconds))


# --- the exchange log for auditors: `mailgw audit ...` and `mailgw report` ----------------------------------


def _filter_parser() -> argparse.ArgumentParser:
    """The exchange log's filters, shared by `audit search`, `audit export` and `policy replay`."""
    filters = argparse.ArgumentParser(add_help=False)
    f = filters.add_argument_group("filters (all must match)")
    f.add_argument("--since", metavar="WHEN", help="from this time: 2025-03-01 (a day in Vietnam time), 2025-03-01T08:00 (UTC) or 7d, 12h")
    f.add_argument("--until", metavar="WHEN", help="before this time; a bare date includes that whole day")
    f.add_argument("--sender", metavar="ADDR", help="sender address (case-insensitive)")
    f.add_argument("--recipient", metavar="ADDR", help="any recipient address (case-insensitive)")
    f.add_argument("--agency", metavar="CODE", help="agency code of the sender or of any recipient (directory code)")
    f.add_argument("--category", metavar="NAME", help="classification category (official_letter, general, ...)")
    f.add_argument("--decision", choices=("accept", "reject", "quarantine", "defer"))
    f.add_argument("--rule", metavar="ID", help="the rule that decided, or any rule that matched")
    f.add_argument("--doc-number", metavar="NUMBER", help="number/symbol, e.g. 07/GM-STTTT (case and spaces ignored)")
    f.add_argument("--subject", metavar="TEXT", help="text the Subject contains (case-insensitive)")
    f.add_argument("--message-id", metavar="ID", help="the Message-ID, with or without <>")
    f.add_argument("--client-ip", metavar="IP", help="the address of the SMTP client")
    f.add_argument("--delivery", metavar="STATUS", help="a delivery-history status: sent, deferred, bounced, held, released, ...")
    f.add_argument("--tag", metavar="TAG", help="a tag the rules added (channel:dms, unsigned-document, ...)")
    f.add_argument("--limit", type=int, metavar="N", help="at most N exchanges")
    return filters


def _audit_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    filters = _filter_parser()
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--auditor", metavar="NAME", help="your name, kept in the auditor access log beside your OS user")

    a = sub.add_parser("audit", parents=[common], help="the exchange log: search, show, export, verify, prune")
    acts = a.add_subparsers(metavar="ACTION")
    s = acts.add_parser("search", parents=[common, filters, who], help="matching exchanges, newest first (100 unless --limit)")
    s.add_argument("--json", action="store_true", help="one JSON object per line: the whole decision record")
    s.set_defaults(func=cmd_audit_search)
    s = acts.add_parser("show", parents=[common, who], help="one exchange with its decision record and delivery history")
    s.add_argument("id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_audit_show)
    s = acts.add_parser("export", parents=[common, filters, who], help="every matching exchange to a file (csv or jsonl)")
    s.add_argument("--format", choices=("csv", "jsonl"), required=True)
    s.add_argument("--out", required=True, metavar="FILE")
    s.set_defaults(func=cmd_audit_export)
    s = acts.add_parser("verify", parents=[common, who], help="check the hash chains; exit 1 naming the first bad record")
    s.set_defaults(func=cmd_audit_verify)
    s = acts.add_parser("prune", parents=[common, who], help="remove records older than a date, keeping the chains verifiable")
    s.add_argument("--before", required=True, metavar="DATE", help="a date (Vietnam time) or date-time (UTC)")
    s.set_defaults(func=cmd_audit_prune)
    a.set_defaults(func=lambda args: _usage(a))

    s = sub.add_parser("report", parents=[common, who], help="the monthly compliance report for auditors (HTML)")
    s.add_argument("--period", required=True, metavar="YYYY-MM", help="a calendar month in Vietnam time")
    s.add_argument("--out", required=True, metavar="FILE.html")
    s.set_defaults(func=cmd_report)


def _audit_filters(args: argparse.Namespace) -> dict[str, Any]:
    from mailgw.audit.query import FILTER_NAMES

    return {name: getattr(args, name) for name in FILTER_NAMES}


def _audit(args: argparse.Namespace, run: Any) -> int:
    """Run an audit command on the log named by the settings' ``database``; a log that cannot be opened is exit 1."""
    from sqlalchemy.exc import SQLAlchemyError

    from mailgw.config import settings

    url = settings.load(args.config).database
    try:
        return int(run(url))
    except SQLAlchemyError as e:
        detail = str(getattr(e, "orig", None) or e).strip().splitlines()
        print(f"mailgw {args.command_name}: cannot read the exchange log at {settings._redact_url(url)}: "
              f"{detail[0] if detail else type(e).__name__}", file=sys.stderr)
        return 1


def _unknown_filter_values(args: argparse.Namespace, url: str) -> str | None:
    """A refusal naming the known values when ``--category`` or ``--agency`` names nothing that exists.

    Categories are the classifier's (CONTRACT section 4); agencies are the directory's codes and
    any code already in the exchange log (an agency removed from the directory keeps its history).
    """
    import difflib

    from mailgw.classify.vn.classification import CATEGORIES

    def refuse(flag: str, value: str, known: Sequence[str]) -> str:
        close = difflib.get_close_matches(value, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{flag}: unknown value {value!r}{hint} (known: {', '.join(known)})"

    category = (args.category or "").strip()
    if category and category not in CATEGORIES:
        return refuse("--category", category, CATEGORIES)
    agency = (args.agency or "").strip()
    if agency:
        from mailgw.config import settings
        from mailgw.directory import model as directory

        try:
            codes = sorted({a.code for a in directory.load(settings.load(args.config).directory).agencies})
        except ConfigError:
            codes = []  # a broken directory must not keep auditors from the log: the log alone says
        if agency in codes:
            return None
        from sqlalchemy import select

        from mailgw.audit.schema import AgencyHit
        from mailgw.audit.store import open_engine

        engine = open_engine(url)
        try:
            with engine.connect() as conn:
                logged = conn.execute(select(AgencyHit.agency).where(AgencyHit.agency == agency).limit(1)).first()
        finally:
            engine.dispose()
        if logged is None:
            return refuse("--agency", agency, codes)
    return None


def cmd_audit_search(args: argparse.Namespace) -> int:
    from mailgw.audit import commands

    args.command_name = "audit search"
    return _audit(args, lambda url: _refuse_unknown(args, url) or commands.search(url, _audit_filters(args), args.json, sys.stdout, sys.stderr,
                                                    auditor=args.auditor))


def _refuse_unknown(args: argparse.Namespace, url: str) -> int:
    """2 (a filter that cannot be understood, as the other filter errors) after saying why; 0 when all is known."""
    problem = _unknown_filter_values(args, url)
    if problem:
        print(f"mailgw {args.command_name}: {problem}", file=sys.stderr)
        return 2
    return 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    from mailgw.audit import commands

    args.command_name = "audit show"
    return _audit(args, lambda url: commands.show(url, args.id, args.json, sys.stdout, sys.stderr, auditor=args.auditor))


def cmd_audit_export(args: argparse.Namespace) -> int:
    from mailgw.audit import commands

    args.command_name = "audit export"
    # The progress bar is for a person watching; a script or a pipe gets none.
    return _audit(args, lambda url: _refuse_unknown(args, url) or commands.export(url, args.format, _audit_filters(args), args.out,
                                                    progress=sys.stderr.isatty(), err=sys.stderr,
                                                    auditor=args.auditor))


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from mailgw.audit import commands

    args.command_name = "audit verify"
    return _audit(args, lambda url: commands.verify(url, sys.stdout, auditor=args.auditor))


def cmd_audit_prune(args: argparse.Namespace) -> int:
    from mailgw.audit import commands

    args.command_name = "audit prune"
    return _audit(args, lambda url: commands.prune(url, args.before, sys.stdout, auditor=args.auditor))


def cmd_report(args: argparse.Namespace) -> int:
    from mailgw.audit import commands

    args.command_name = "report"
    names = _directory_names(args.config)
    return _audit(args, lambda url: commands.report(url, args.period, args.out, sys.stderr, auditor=args.auditor,
                                                    names=names))


def _directory_names(config: str) -> dict[str, dict[str, str]] | None:
    """Agency and unit names from the settings' directory, for the report; None (codes only) if it cannot be read."""
    from mailgw.audit.report import names_of
    from mailgw.config import settings
    from mailgw.config.yamlfile import ConfigError
    from mailgw.directory import model

    try:
        return names_of(model.load(settings.load(config).directory))
    except (ConfigError, OSError) as e:
        print(f"mailgw report: the directory cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
              "agencies are named by their codes", file=sys.stderr)
        return None
