"""Header selection and header canonicalisation give exactly dkimpy's, for any input."""

from __future__ import annotations

import random

import dkim as dkimpy
from dkim.canonicalization import CanonicalizationPolicy

from mailgw.dkim import canon

RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
SIMPLE = CanonicalizationPolicy.from_c_value(b"simple/simple")


def test_header_selection_and_canonicalisation_are_dkimpys_for_any_input():
    rng = random.Random(13)
    names = [b"From", b"from", b"To", b"Subject", b"X-A", b"Received"]
    values = [b" a", b"\tb ", b"  c  d\r\n", b" e\r\n\tf\r\n", b"\r\n", b"", b" g\rh\n i\r\r\n", b" \t \r\n \t"]
    for _ in range(5000):
        headers = [[rng.choice(names), b"".join(rng.choice(values) for _ in range(rng.randint(0, 3)))]
                   for _ in range(rng.randint(0, 8))]
        include = [rng.choice([b"from", b"to", b"subject", b"x-a", b"received", b"date"]) for _ in range(rng.randint(0, 10))]
        assert canon.select_headers(headers, include) == dkimpy.select_headers(headers, include)
        for policy in (RELAXED, SIMPLE):
            assert canon.canonical_headers(headers, policy) == policy.canonicalize_headers(headers), headers
