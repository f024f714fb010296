"""Header selection and header canonicalisation give exactly dkimpy's, for any input."""

from __future__ import annotations

import dkim as dkimpy
from dkim.canonicalization import CanonicalizationPolicy
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw.dkim import canon

RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
SIMPLE = CanonicalizationPolicy.from_c_value(b"simple/simple")


_NAMES = [b"From", b"from", b"To", b"Subject", b"X-A", b"Received"]
_VALUES = [b" a", b"\tb ", b"  c  d\r\n", b" e\r\n\tf\r\n", b"\r\n", b"", b" g\rh\n i\r\r\n", b" \t \r\n \t"]
_FIELDS = st.lists(st.tuples(st.sampled_from(_NAMES), st.lists(st.sampled_from(_VALUES), max_size=3).map(b"".join))
                   .map(list), max_size=8)
_INCLUDE = st.lists(st.sampled_from([b"from", b"to", b"subject", b"x-a", b"received", b"date"]), max_size=10)


@settings(max_examples=2000, deadline=None, database=None)
@given(_FIELDS, _INCLUDE)
def test_header_selection_and_canonicalisation_are_dkimpys_for_any_input(headers: list[list[bytes]],
                                                                          include: list[bytes]) -> None:
    assert canon.select_headers(headers, include) == dkimpy.select_headers(headers, include)
    for policy in (RELAXED, SIMPLE):
        assert canon.canonical_headers(headers, policy) == policy.canonicalize_headers(headers), headers
