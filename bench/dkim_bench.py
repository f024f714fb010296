"""Cost of DKIM signing and verification per message: ours (OpenSSL via cryptography) against dkimpy's pure-Python RSA.

Run from the repository root:  python bench/dkim_bench.py [--iterations N] [--message FILE.eml]
Keys and messages come from tests/data/dkim. Verification uses the answers-file
resolver, so the figures are CPU only (no DNS round trip).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dkim as dkimpy  # noqa: E402

from mailgw.config.resolver import FileResolver  # noqa: E402
from mailgw.directory import model as directory_file  # noqa: E402
from mailgw.dkim import SigningKey, sign, txt_record, verify  # noqa: E402
from mailgw.message.model import Context, Envelope, Message  # noqa: E402
from mailgw.stages import dkim_sign, dkim_verify  # noqa: E402

DATA = ROOT / "tests" / "data" / "dkim"
DOMAIN = "example.gov.vn"


def _per_call(fn: Callable[[], object], iterations: int, repeats: int = 5) -> float:
    """Median over ``repeats`` runs of the mean seconds per call."""
    fn()  # warm up
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(iterations):
            fn()
        runs.append((time.perf_counter() - started) / iterations)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--message", type=Path, default=DATA / "messages" / "multipart-attachment.eml")
    args = parser.parse_args()
    message = args.message.read_bytes()
    n = args.iterations

    rsa = SigningKey.from_file(DOMAIN, "rsa", DATA / "keys" / "rsa2048.pem")
    ed = SigningKey.from_file(DOMAIN, "ed", DATA / "keys" / "ed25519.pem")
    resolver = FileResolver.from_text("\n".join(txt_record(DOMAIN, k.selector, k.private_key) for k in (rsa, ed)))
    rsa_pem = (DATA / "keys" / "rsa2048.pem").read_bytes()
    records = {
        f"{k.selector}._domainkey.{DOMAIN}.".encode(): "".join(txt_record(DOMAIN, k.selector, k.private_key).split('"')[1::2]).encode()
        for k in (rsa, ed)
    }

    def dkimpy_sign() -> bytes:
        return dkimpy.sign(message, b"rsa", DOMAIN.encode(), rsa_pem, canonicalize=(b"relaxed", b"relaxed"))

    signed = {
        "rsa": sign(message, [rsa]) + message,
        "ed": sign(message, [ed]) + message,
        "dual": sign(message, [rsa, ed]) + message,
        "dkimpy-rsa": dkimpy_sign() + message,
    }
    loop = asyncio.new_event_loop()

    def ours_verify(kind: str) -> Callable[[], object]:
        def run() -> object:
            report = loop.run_until_complete(verify(signed[kind], resolver))
            assert all(s.result == "pass" for s in report.signatures), report
            return report
        return run

    def dkimpy_verify() -> bool:
        ok = dkimpy.verify(signed["dkimpy-rsa"], dnsfunc=lambda name, timeout=5: records[name])
        assert ok
        return ok

    # The pipeline stages around the library: dkim_verify runs each message's
    # lookups on a short-lived event loop of its own (asyncio.run in the worker
    # thread) and writes the Authentication-Results value; dkim_sign signs the
    # final bytes with the From domain's keys.
    settings = types.SimpleNamespace(hostname="mailgw.example.gov.vn", dns=types.SimpleNamespace(timeout=5.0))
    local = "binhthuan.gov.vn"
    ctx = Context(settings=settings, directory=directory_file.load(ROOT / "directory.yaml"), resolver=resolver,
                  signing_keys={local: (SigningKey(local, "rsa", rsa.algorithm, rsa.private_key),
                                        SigningKey(local, "ed", ed.algorithm, ed.private_key))})
    unsigned = message

    def stage(role: str, raw: bytes, run: Callable[[Message, Context], None], author: str) -> Callable[[], object]:
        def go() -> object:
            m = Message("BENCH", Envelope("a@" + author.rpartition("@")[2], ["b@binhthuan.gov.vn"], role, role, "127.0.0.1"), raw)
            m.facts.author = author
            run(m, ctx)
            return m
        return go

    rows = [
        ("sign   RSA-2048       ours (cryptography/OpenSSL)", _per_call(lambda: sign(message, [rsa]), n)),
        ("sign   Ed25519        ours (cryptography/OpenSSL)", _per_call(lambda: sign(message, [ed]), n)),
        ("sign   RSA+Ed25519    ours, dual signature", _per_call(lambda: sign(message, [rsa, ed]), n)),
        ("sign   RSA-2048       dkimpy (pure-Python RSA)", _per_call(dkimpy_sign, max(10, n // 10))),
        ("verify RSA-2048       ours", _per_call(ours_verify("rsa"), n)),
        ("verify Ed25519        ours", _per_call(ours_verify("ed"), n)),
        ("verify RSA+Ed25519    ours, both signatures", _per_call(ours_verify("dual"), n)),
        ("verify RSA-2048       dkimpy", _per_call(dkimpy_verify, n)),
        ("stage  dkim_verify    unsigned message (mx)", _per_call(stage("mx", unsigned, dkim_verify.run, "x@example.gov.vn"), n)),
        ("stage  dkim_verify    RSA+Ed25519 signed (mx)", _per_call(stage("mx", signed["dual"], dkim_verify.run, "x@example.gov.vn"), n)),
        ("stage  dkim_sign      RSA+Ed25519 (relay)", _per_call(stage("relay", unsigned, dkim_sign.run, "vanthu@binhthuan.gov.vn"), n)),
    ]
    loop.close()
    print(f"message: {args.message.name}, {len(message)} bytes; Python {sys.version.split()[0]}; "
          f"median of 5 runs of {n} calls (dkimpy signing: {max(10, n // 10)})")
    print(f"{'operation':52} {'ms/msg':>8} {'msgs/s':>9}")
    for label, seconds in rows:
        print(f"{label:52} {seconds * 1000:8.3f} {1 / seconds:9.0f}")


if __name__ == "__main__":
    main()
