"""Address parsing: RFC 5321 §4.1.2 grammar, RFC 6531 UTF-8, IDNA canonical domains."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hato.core.address import Address, domain_to_ascii, normalize_domain
from hato.core.errors import AddressError


@pytest.mark.parametrize(
    ("text", "key", "ascii_domain"),
    [
        ("demo@example.test", "demo@example.test", "example.test"),
        ("Foo.Bar@EXAMPLE.Test", "foo.bar@example.test", "example.test"),
        ("user@XN--WGV71A119E.JP", "user@日本語.jp", "xn--wgv71a119e.jp"),
        ("ユーザー@例え.jp", "ユーザー@例え.jp", "xn--r8jz45g.jp"),
        ('"a b"@x.org', "a b@x.org", "x.org"),
        ('"a\\"b"@x.org', 'a"b@x.org', "x.org"),
        ("x@[127.0.0.1]", "x@[127.0.0.1]", "[127.0.0.1]"),
        ("x@[IPv6:0::1]", "x@[IPv6:::1]", "[IPv6:::1]"),
    ],
)
def test_parse_valid(text: str, key: str, ascii_domain: str) -> None:
    address = Address.parse(text)
    assert address.key == key
    assert address.ascii_domain() == ascii_domain


@pytest.mark.parametrize(
    "text",
    [
        "a@",
        "@b.example",
        "a b@c.example",
        "a@b..c",
        "a@-b.example",
        "a@b.example.",
        "a..b@c.example",
        ".a@c.example",
        "a@[999.1.1.1]",
        "a@[IPv6:zz::1]",
        "x" * 65 + "@example.test",  # RFC 5321 §4.5.3.1.1: local part ≤ 64 octets
        "a@" + "b" * 64 + ".example",  # RFC 1035 §2.3.4: labels ≤ 63 octets
    ],
)
def test_parse_invalid(text: str) -> None:
    with pytest.raises(AddressError):
        Address.parse(text)


def test_subaddress_split() -> None:
    # RFC 5233 §3: user+detail
    assert Address.parse("user+folder@example.test").split_detail() == ("user", "folder")
    assert Address.parse("user@example.test").split_detail() == ("user", None)


def test_needs_smtputf8() -> None:
    assert Address.parse("ユーザー@example.test").needs_smtputf8
    assert not Address.parse("user@例え.jp").needs_smtputf8  # the domain has an A-label form


def test_domain_round_trip() -> None:
    assert normalize_domain(domain_to_ascii("例え.jp")) == "例え.jp"


@given(st.text(max_size=80))
def test_parse_never_raises_anything_but_address_error(text: str) -> None:
    try:
        address = Address.parse(text)
    except AddressError:
        return
    assert "@" in str(address)
    assert Address.parse(str(address)).key == address.key


def test_recent_parses_are_reused_and_bounded() -> None:
    from hato.core import address as module

    first = Address.parse("Cache.Test@Example.ORG")
    assert Address.parse("Cache.Test@Example.ORG") is first  # immutable: the same object
    assert first == Address("Cache.Test", "example.org")
    for _ in range(2):  # failures are never remembered
        with pytest.raises(AddressError):
            Address.parse("no-at-sign")
    for i in range(module._CACHE_SIZE + 10):
        Address.parse(f"user{i}@example.org")
    assert len(module._addresses) <= module._CACHE_SIZE
    assert len(module._domains) <= module._CACHE_SIZE
