"""Benchmark: load a province-sized directory and look addresses up in it.

Generates a directory of 30,000 mailboxes (default) in a temporary folder,
in the one-line form and, for comparison, in the long mapping form, then
reports the time to load each and the time per lookup.

    python bench/directory_bench.py [--mailboxes N] [--repeat R]

Target: the one-line form loads well under a second.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mailgw.config import yamlfile
from mailgw.directory import model as directory  # noqa: E402

_SURNAMES = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng"]
_MIDDLE = ["Văn", "Thị", "Hữu", "Minh", "Thanh", "Ngọc", "Đức", "Quang"]
_GIVEN = ["An", "Bình", "Chi", "Dũng", "Hạnh", "Hùng", "Lan", "Long", "Mai", "Nam", "Phương", "Thảo", "Trang", "Tuấn"]


def generate(path: str, mailboxes: int, long_form: bool, seed: int = 1) -> list[str]:
    """Write a directory with ``mailboxes`` boxes spread over 100 agencies; return the addresses."""
    rng = random.Random(seed)
    agencies = 100
    per_agency = mailboxes // agencies
    addresses: list[str] = []
    out = [
        "name: Danh bạ thử tải / load-test directory",
        "official_suffixes: [.gov.vn]",
        "agencies:",
    ]
    for a in range(agencies):
        code = f"cq{a:03d}"
        out += [
            f"  - code: {code}",
            f"    name: Cơ quan thử số {a}",
            f"    organ_code: 000.00.{a % 100:02d}.H{a // 100 + 11:02d}",
            "    domains: [tinh.gov.vn]",
            "    units:",
        ]
        out += [f"      - {{code: p{u}, name: Phòng số {u}}}" for u in range(10)]
        out.append("    mailboxes:")
        count = per_agency + (mailboxes % agencies if a == agencies - 1 else 0)
        for i in range(count):
            roles = "clerk" if i == 0 else rng.choice(["staff", "staff", "staff", "leader", "unit"])
            name = f"{rng.choice(_SURNAMES)} {rng.choice(_MIDDLE)} {rng.choice(_GIVEN)}"
            address = f"cb{i:04d}.{code}@tinh.gov.vn"
            addresses.append(address)
            if long_form:
                out.append(f"      - {{address: {address}, name: {name}, unit: p{i % 10}, roles: [{roles}]}}")
            else:
                out.append(f"      - {address} | {name} | p{i % 10} | {roles}")
    out += [
        "partners:",
        "  - {name: Bộ thử, domains: [bo.gov.vn]}",
        "exceptions:",
        "  - {address: tam@gmail.com, until: 2099-12-31, name: Hộp thư tạm, reason: chưa có hộp thư công vụ}",
    ]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    return addresses


def _time(fn, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=30_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    today = datetime.date(2025, 6, 1)
    print(f"PyYAML with libyaml: {yamlfile._FAST_LOADER.__name__ == 'CSafeLoader'}")
    with tempfile.TemporaryDirectory() as tmp:
        for long_form in (False, True):
            path = os.path.join(tmp, f"directory-{'long' if long_form else 'line'}.yaml")
            addresses = generate(path, args.mailboxes, long_form)
            size = os.path.getsize(path)
            parse_best, parse_median = _time(lambda p=path: yamlfile.load(p), args.repeat)
            best, median = _time(lambda p=path: directory.load(p, today=today), args.repeat)
            form = "mapping per mailbox" if long_form else "one line per mailbox"
            print(f"{len(addresses)} mailboxes, {form}, {size / 1e6:.1f} MB:")
            print(f"  YAML only : best {parse_best * 1000:7.1f} ms, median {parse_median * 1000:7.1f} ms")
            print(f"  load      : best {best * 1000:7.1f} ms, median {median * 1000:7.1f} ms")

        d = directory.load(path, today=today)
        assert len(d.mailboxes) == args.mailboxes, len(d.mailboxes)
        rng = random.Random(2)
        sample = [rng.choice(addresses).upper() for _ in range(20_000)]
        sample += [f"x{i}@somewhere{i % 50}.example.com" for i in range(10_000)]
        sample += [f"vanthu@xa{i % 50}.huyen.gov.vn" for i in range(10_000)]
        rng.shuffle(sample)
        for label, fn in (
            ("mailbox", d.mailbox),
            ("is_official", lambda a: d.is_official(a, today)),
            ("is_local", d.is_local),
            ("agency_of", d.agency_of),
        ):
            start = time.perf_counter()
            for address in sample:
                fn(address)
            per = (time.perf_counter() - start) / len(sample)
            print(f"  {label:<12}: {per * 1e6:.2f} µs per address ({len(sample)} addresses, 1/2 listed, 1/4 foreign, 1/4 .gov.vn)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
