"""SPF unit tests beyond the openspf suite: RFC 7208 examples, limits, identities, fuzzing."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hato.core.clock import FixedClock
from hato.core.dns import TIMEOUT, MxRecord, StaticResolver
from hato.mailauth.spf import (
    SpfRecord,
    SpfStatus,
    SpfSyntaxError,
    check_host,
    parse_record,
    verify_helo,
    verify_mailfrom,
)
from hato.mailauth.spf_macro import MacroContext, expand, parse_macro_string


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# RFC 7208 §7.4 examples: sender strong-bad@email.example.com, IP 192.0.2.3 / 2001:db8::cb01.
RFC_MACRO_EXAMPLES = [
    ("%{s}", "strong-bad@email.example.com"),
    ("%{o}", "email.example.com"),
    ("%{d}", "email.example.com"),
    ("%{d4}", "email.example.com"),
    ("%{d3}", "email.example.com"),
    ("%{d2}", "example.com"),
    ("%{d1}", "com"),
    ("%{dr}", "com.example.email"),
    ("%{d2r}", "example.email"),
    ("%{l}", "strong-bad"),
    ("%{l-}", "strong.bad"),
    ("%{lr}", "strong-bad"),
    ("%{lr-}", "bad.strong"),
    ("%{l1r-}", "strong"),
    ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
    ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
    ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
    ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
    ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
]


@pytest.mark.parametrize(("macro", "expected"), RFC_MACRO_EXAMPLES)
def test_rfc7208_section_7_4_examples(macro: str, expected: str) -> None:
    context = MacroContext(
        sender="strong-bad@email.example.com",
        local_part="strong-bad",
        sender_domain="email.example.com",
        ip=ipaddress.ip_address("192.0.2.3"),
        helo="mx.example.org",
    )
    assert expand(parse_macro_string(macro), context, domain="email.example.com") == expected


def test_rfc7208_ipv6_macro_example() -> None:
    context = MacroContext(
        sender="strong-bad@email.example.com",
        local_part="strong-bad",
        sender_domain="email.example.com",
        ip=ipaddress.ip_address("2001:db8::cb01"),
        helo="mx.example.org",
    )
    got = expand(parse_macro_string("%{ir}.%{v}._spf.%{d2}"), context, domain="email.example.com")
    assert (
        got
        == "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
    )


def test_explanation_macros_and_url_escape() -> None:
    context = MacroContext(
        sender="a b@example.com",
        local_part="a b",
        sender_domain="example.com",
        ip=ipaddress.ip_address("192.0.2.3"),
        helo="h.example",
        receiver="mx.hato.test",
        timestamp=1234,
    )
    text = parse_macro_string("%{c} %{r} %{t} %{S} %% %_ %-", explain=True)
    got = expand(text, context, domain="example.com")
    assert got == "192.0.2.3 mx.hato.test 1234 a%20b%40example.com %   %20"


@pytest.mark.parametrize(
    "bad",
    ["%{c}", "%{x}", "%{d0}", "%", "%{d", "a%b", "%{ir"],
)
def test_bad_macros_are_syntax_errors(bad: str) -> None:
    with pytest.raises(SpfSyntaxError):  # RFC 7208 §7.1/§7.2: c/r/t only in exp, DIGIT nonzero
        parse_macro_string(bad)


def test_parse_record_terms() -> None:
    record = parse_record(
        "v=spf1 +a -mx:example.com/24//64 ~ip4:192.0.2.0/24 ?ip6:2001:db8::/32 "
        "include:_spf.example.net exists:%{i}.x.example ptr redirect=other.example "
        "exp=exp.example moo.cow=%{d} -all"
    )
    assert isinstance(record, SpfRecord)
    names = [(m.qualifier, m.name) for m in record.mechanisms]
    assert names == [
        ("+", "a"),
        ("-", "mx"),
        ("~", "ip4"),
        ("?", "ip6"),
        ("+", "include"),
        ("+", "exists"),
        ("+", "ptr"),
        ("-", "all"),
    ]
    assert record.mechanisms[1].cidr4 == 24 and record.mechanisms[1].cidr6 == 64
    assert record.redirect is not None and record.redirect.source == "other.example"
    assert record.has_all


@pytest.mark.parametrize(
    "text",
    [
        "v=spf1 redirect=a.example redirect=b.example",  # RFC 7208 §6: at most once
        "v=spf1 exp=a.example exp=b.example",
        "v=spf1 ip4:192.0.2.1/33",  # RFC 7208 §5.6 range
        "v=spf1 ip4:192.0.2.1/024",  # no leading zeros
        "v=spf1 ip4:192.0.02.1",
        "v=spf1 a:example.com/",
        "v=spf1 foo",  # unknown mechanism
        "v=spf1 a:museum",  # RFC 7208 §7.1 domain-end needs a dot
        "v=spf1 all:x",
        "v=spf1 -redirect=x.example",
        "v=spf1\tall",  # RFC 7208 §4.6.1: SP only
        "v=spf1 include:",
        "v=spf1 ip6:2001:db8::1%eth0",
    ],
)
def test_parse_errors(text: str) -> None:
    with pytest.raises(SpfSyntaxError):
        parse_record(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_fuzz_record_parser_never_crashes(text: str) -> None:
    for candidate in (text, "v=spf1 " + text):
        try:
            record = parse_record(candidate)
        except SpfSyntaxError:  # the permerror outcome
            continue
        assert isinstance(record, SpfRecord)


_TERM = st.sampled_from(
    [
        "a",
        "mx",
        "ptr",
        "all",
        "-all",
        "~all",
        "ip4:192.0.2.0/24",
        "ip6:::1",
        "a:%{d}",
        "include:%{o}",
        "exists:%{ir}.%{v}.x",
        "redirect=%{d}",
        "exp=%{d}",
        "x=%{l}",
        "a//64",
        "mx/0",
        "%{",
        "=",
        ":",
        "/",
        "a:",
        "%%",
        "%{d2r-}",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_TERM, max_size=8))
def test_fuzz_record_parser_structured(terms: list[str]) -> None:
    try:
        parse_record("v=spf1 " + " ".join(terms))
    except SpfSyntaxError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.lists(_TERM, max_size=6), st.sampled_from(["192.0.2.1", "2001:db8::1"]))
def test_fuzz_check_host_always_returns_a_token(terms: list[str], ip: str) -> None:
    resolver = StaticResolver({"example.com": {"TXT": ["v=spf1 " + " ".join(terms)]}})
    result = run(verify_mailfrom(resolver, ip, mailfrom="a@example.com", helo="h.example.com"))
    assert result.status in set(SpfStatus)


def test_helo_identity() -> None:
    resolver = StaticResolver({"mx.example.com": {"TXT": ["v=spf1 a -all"], "A": ["192.0.2.10"]}})
    good = run(verify_helo(resolver, "192.0.2.10", helo="mx.example.com"))
    assert (good.status, good.identity, good.sender) == (
        SpfStatus.PASS,
        "helo",
        "postmaster@mx.example.com",
    )
    bad = run(verify_helo(resolver, "192.0.2.11", helo="mx.example.com"))
    assert bad.status is SpfStatus.FAIL
    # RFC 7208 §2.4: a null reverse-path is checked as postmaster@<helo>.
    null = run(verify_mailfrom(resolver, "192.0.2.10", mailfrom="", helo="mx.example.com"))
    assert (null.status, null.domain, null.sender) == (
        SpfStatus.PASS,
        "mx.example.com",
        "postmaster@mx.example.com",
    )


def test_ten_dns_terms_limit() -> None:
    zone: dict[str, Any] = {
        "example.com": {
            "TXT": ["v=spf1 " + " ".join(f"a:h{i}.example.com" for i in range(11)) + " -all"]
        }
    }
    for i in range(11):
        zone[f"h{i}.example.com"] = {"A": ["198.51.100.1"]}
    result = run(
        verify_mailfrom(StaticResolver(zone), "192.0.2.1", mailfrom="a@example.com", helo="h")
    )
    assert result.status is SpfStatus.PERMERROR  # RFC 7208 §4.6.4: 11th DNS term
    ten = dict(zone)
    ten["example.com"] = {
        "TXT": ["v=spf1 " + " ".join(f"a:h{i}.example.com" for i in range(10)) + " -all"]
    }
    result = run(
        verify_mailfrom(StaticResolver(ten), "192.0.2.1", mailfrom="a@example.com", helo="h")
    )
    assert result.status is SpfStatus.FAIL


def test_void_lookup_limit() -> None:
    zone = {"example.com": {"TXT": ["v=spf1 a:n1.example.com a:n2.example.com ?all"]}}
    result = run(
        verify_mailfrom(StaticResolver(zone), "192.0.2.1", mailfrom="a@example.com", helo="h")
    )
    assert result.status is SpfStatus.NEUTRAL  # two voids are allowed
    zone = {
        "example.com": {"TXT": ["v=spf1 a:n1.example.com a:n2.example.com a:n3.example.com ?all"]}
    }
    result = run(
        verify_mailfrom(StaticResolver(zone), "192.0.2.1", mailfrom="a@example.com", helo="h")
    )
    assert result.status is SpfStatus.PERMERROR  # RFC 7208 §4.6.4: the third void lookup


def test_mx_name_limit() -> None:
    mx = [MxRecord(i, f"mx{i}.example.com") for i in range(11)]
    zone: dict[str, Any] = {"example.com": {"TXT": ["v=spf1 mx ?all"], "MX": mx}}
    result = run(
        verify_mailfrom(StaticResolver(zone), "192.0.2.1", mailfrom="a@example.com", helo="h")
    )
    assert result.status is SpfStatus.PERMERROR  # RFC 7208 §4.6.4: more than 10 MX names


def test_ptr_mechanism_and_p_macro() -> None:
    zone = {
        "example.com": {"TXT": ["v=spf1 ptr -all exp=why.example.com"]},
        "why.example.com": {"TXT": ["%{p} is %{i}"]},
        "1.2.0.192.in-addr.arpa": {"PTR": ["mail.example.com", "other.example.net"]},
        "mail.example.com": {"A": ["192.0.2.1"]},
        "other.example.net": {"A": ["192.0.2.1"]},
        "2.2.0.192.in-addr.arpa": {"PTR": ["fake.example.com"]},
        "fake.example.com": {"A": ["203.0.113.1"]},  # does not lead back: not validated
    }
    resolver = StaticResolver(zone)
    ok = run(verify_mailfrom(resolver, "192.0.2.1", mailfrom="a@example.com", helo="h"))
    assert ok.status is SpfStatus.PASS
    bad = run(verify_mailfrom(resolver, "192.0.2.2", mailfrom="a@example.com", helo="h"))
    assert bad.status is SpfStatus.FAIL
    assert bad.explanation == "unknown is 192.0.2.2"  # RFC 7208 §7.3: p unvalidated → unknown


def test_temperror_and_ipv4_mapped_client() -> None:
    zone: dict[str, Any] = {
        "example.com": {"TXT": ["v=spf1 ip4:192.0.2.0/24 include:slow.example.com -all"]},
        "slow.example.com": {"TXT": TIMEOUT},
    }
    resolver = StaticResolver(zone)
    mapped = run(verify_mailfrom(resolver, "::ffff:192.0.2.9", mailfrom="a@example.com", helo="h"))
    assert mapped.status is SpfStatus.PASS  # RFC 7208 §5: IPv4-mapped IPv6 compared as IPv4
    timeout = run(verify_mailfrom(resolver, "198.51.100.1", mailfrom="a@example.com", helo="h"))
    assert timeout.status is SpfStatus.TEMPERROR  # RFC 7208 §5.2: include temperror


def test_timestamp_macro_uses_injected_clock() -> None:
    zone = {
        "example.com": {"TXT": ["v=spf1 -all exp=e.example.com"]},
        "e.example.com": {"TXT": ["at %{t} from %{c} to %{r}"]},
    }
    result = run(
        check_host(
            StaticResolver(zone),
            "192.0.2.1",
            domain="example.com",
            sender="a@example.com",
            receiver="mx.hato.test",
            clock=FixedClock(1_700_000_000.0),
        )
    )
    assert result.explanation == "at 1700000000 from 192.0.2.1 to mx.hato.test"
    assert result.mechanism == "-all"


def test_ipv6_client_and_ipv4_only_mx_hosts_are_not_void_terms() -> None:
    # Regression: counting each MX host's empty AAAA answer as a void lookup would turn every
    # IPv6 client of a domain with 3+ IPv4-only MX hosts into a permerror (RFC 7208 §4.6.4).
    zone: dict[str, Any] = {
        "example.com": {
            "TXT": ["v=spf1 mx ~all"],
            "MX": [MxRecord(i, f"mx{i}.example.com") for i in range(4)],
        },
    }
    for i in range(4):
        zone[f"mx{i}.example.com"] = {"A": [f"192.0.2.{i + 1}"]}
    result = run(
        verify_mailfrom(StaticResolver(zone), "2001:db8::1", mailfrom="a@example.com", helo="h")
    )
    assert result.status is SpfStatus.SOFTFAIL
