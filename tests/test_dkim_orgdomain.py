"""Organisational domains and alignment, from the bundled public suffix list."""

from __future__ import annotations

import pytest

from mailgw.dkim.orgdomain import aligned, is_public_suffix, normalise, organisational_domain


@pytest.mark.parametrize(("domain", "organisation"), [
    ("binhthuan.gov.vn", "binhthuan.gov.vn"),          # gov.vn is a public suffix
    ("stp.binhthuan.gov.vn", "binhthuan.gov.vn"),
    ("mail.stp.binhthuan.gov.vn", "binhthuan.gov.vn"),
    ("Mail.BinhThuan.Gov.Vn.", "binhthuan.gov.vn"),
    ("example.com.vn", "example.com.vn"),
    ("a.b.example.com", "example.com"),
    ("www.example.co.uk", "example.co.uk"),
    ("gov.vn", "gov.vn"),                              # a bare suffix is its own
])
def test_organisational_domain(domain, organisation):
    assert organisational_domain(domain) == organisation


def test_public_suffixes():
    assert is_public_suffix("gov.vn") and is_public_suffix("vn") and is_public_suffix("com.vn")
    assert not is_public_suffix("binhthuan.gov.vn")


@pytest.mark.parametrize(("signer", "author", "relaxed", "strict"), [
    ("binhthuan.gov.vn", "binhthuan.gov.vn", True, True),
    ("binhthuan.gov.vn", "stp.binhthuan.gov.vn", True, False),
    ("mail.binhthuan.gov.vn", "stp.binhthuan.gov.vn", True, False),
    ("daklak.gov.vn", "binhthuan.gov.vn", False, False),
    ("gov.vn", "binhthuan.gov.vn", False, False),
    ("gov.vn", "gov.vn", False, False),                 # a suffix vouches for nobody, not even itself
    ("binhthuan-gov.vn", "binhthuan.gov.vn", False, False),
    ("", "binhthuan.gov.vn", False, False),
])
def test_alignment(signer, author, relaxed, strict):
    assert aligned(signer, author) is relaxed
    assert aligned(signer, author, strict=True) is strict


def test_internationalised_names_compare_as_a_labels():
    assert normalise("Bình-Thuận.vn") == "xn--bnh-thun-21a0927e.vn"
    assert aligned("xn--bnh-thun-21a0927e.vn", "vanthu.Bình-Thuận.vn")
