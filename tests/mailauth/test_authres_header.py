"""Authentication-Results (RFC 8601): Appendix B examples, rendering, §5 removal, builders."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hato.mailauth import authresults as ar
from hato.mailauth.arc import ArcResult, ArcStatus
from hato.mailauth.authresults import AuthResults, MethodResult, Property
from hato.mailauth.authresults_build import (
    arc_result,
    dkim_result,
    dmarc_result,
    iprev_result,
    spf_result,
)
from hato.mailauth.dkim import DkimResult, DkimStatus
from hato.mailauth.dmarc import DmarcResult, DmarcStatus, Policy
from hato.mailauth.iprev import IprevResult, IprevStatus
from hato.mailauth.spf import SpfResult, SpfStatus

# -- RFC 8601 Appendix B ----------------------------------------------------------------------


def test_b2_no_authentication_done() -> None:
    parsed = ar.parse(" example.org 1; none")
    assert parsed == AuthResults("example.org", (), version=1)


def test_b3_spf() -> None:
    parsed = ar.parse(" example.com;\r\n          spf=pass smtp.mailfrom=example.net")
    assert parsed.results == (
        MethodResult("spf", "pass", properties=(Property("smtp", "mailfrom", "example.net"),)),
    )


def test_b4_two_fields_from_one_mta() -> None:
    first = ar.parse(
        " example.com;\r\n          auth=pass (cram-md5) smtp.auth=sender@example.net;\r\n"
        "          spf=pass smtp.mailfrom=example.net"
    )
    second = ar.parse(" example.com; iprev=pass\r\n          policy.iprev=192.0.2.200")
    assert [(r.method, r.result) for r in first.results] == [("auth", "pass"), ("spf", "pass")]
    assert first.results[0].comment == "cram-md5"
    assert first.results[0].get("smtp", "auth") == "sender@example.net"
    assert second.results[0].get("policy", "iprev") == "192.0.2.200"


def test_b5_dkim_with_comment() -> None:
    parsed = ar.parse(" example.com;\r\n dkim=pass (good signature) header.d=example.com")
    assert parsed.results[0].comment == "good signature"
    assert parsed.results[0].get("header", "d") == "example.com"


def test_b6_reasons() -> None:
    parsed = ar.parse(
        ' example.com;\r\n      dkim=pass reason="good signature"\r\n'
        '        header.i=@mail-router.example.net;\r\n      dkim=fail reason="bad signature"\r\n'
        "        header.i=@newyork.example.com"
    )
    assert [(r.result, r.reason, r.get("header", "i")) for r in parsed.results] == [
        ("pass", "good signature", "@mail-router.example.net"),
        ("fail", "bad signature", "@newyork.example.com"),
    ]


def test_b7_comment_heavy() -> None:
    parsed = ar.parse(
        " foo.example.net (foobar) 1 (baz);\r\n"
        "    dkim (Because I like it) / 1 (One yay) = (wait for it) fail\r\n"
        "      policy (A dot can go here) . (like that) expired\r\n"
        "      (this surprised me) = (as I wasn't expecting it) 1362471462"
    )
    assert parsed.authserv_id == "foo.example.net"
    assert parsed.version == 1
    (result,) = parsed.results
    assert (result.method, result.version, result.result) == ("dkim", 1, "fail")
    assert result.properties == (Property("policy", "expired", "1362471462"),)
    assert "Because I like it" in (result.comment or "")


def test_arc_authentication_results_form() -> None:
    """RFC 8617 §4.1.1: arc-info = instance ";" authres-payload."""
    instance, parsed = ar.parse_arc(
        "i=1; lists.example.org;\r\n spf=pass smtp.mfrom=jqd@d1.example;\r\n"
        " dkim=pass (1024-bit key) header.i=@d1.example;\r\n dmarc=pass"
    )
    assert instance == 1
    assert parsed.authserv_id == "lists.example.org"
    assert [r.method for r in parsed.results] == ["spf", "dkim", "dmarc"]


@pytest.mark.parametrize(
    "value",
    [
        "",
        ";",
        "example.com; =pass",
        "example.com; spf",
        "example.com; spf=pass smtp",
        "example.com; spf=pass (unclosed",
        'example.com; dkim=pass reason="open',
        "example.com; none x",
    ],
)
def test_malformed_values_raise_the_syntax_error(value: str) -> None:
    with pytest.raises(ar.AuthResultsSyntaxError):
        ar.parse(value)


@given(st.text(max_size=200))
def test_parser_never_fails_otherwise(value: str) -> None:
    try:
        ar.parse(value)
    except ar.AuthResultsSyntaxError:
        pass


# -- rendering ----------------------------------------------------------------------------------


def test_render_quotes_what_is_not_a_token_and_round_trips() -> None:
    results = AuthResults(
        "mx.example.com",
        (
            MethodResult(
                "dkim",
                "pass",
                properties=(
                    Property("header", "d", "example.com"),
                    Property("header", "b", "a/b+c=de"),
                ),
                comment="2048-bit key",
            ),
            MethodResult("iprev", "pass", properties=(Property("policy", "iprev", "2001:db8::1"),)),
            MethodResult("spf", "fail", reason="not (really) authorized; sorry"),
        ),
    )
    text = ar.render(results)
    assert 'header.b="a/b+c=de"' in text  # RFC 2045 §5.1: "/" and "=" are tspecials
    assert 'policy.iprev="2001:db8::1"' in text
    assert ar.parse(text) == AuthResults(
        "mx.example.com",
        (
            results.results[0],
            results.results[1],
            MethodResult("spf", "fail", reason="not (really) authorized; sorry"),
        ),
    )


def test_render_none_and_field_bytes() -> None:
    assert ar.render(AuthResults("mx.example.com")) == "mx.example.com; none"
    field = ar.field_bytes(AuthResults("mx.example.com", (MethodResult("arc", "none"),)))
    assert field == b"Authentication-Results: mx.example.com;\r\n\tarc=none\r\n"


def test_comment_text_cannot_break_out() -> None:
    text = ar.render(AuthResults("x.example", (MethodResult("dkim", "pass", comment="a) b; c=d"),)))
    parsed = ar.parse(text)
    assert len(parsed.results) == 1
    assert parsed.results[0].result == "pass"


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["spf", "dkim", "dmarc", "arc", "iprev"]),
            st.sampled_from(["pass", "fail", "none", "temperror"]),
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_rendered_values_parse_back(items: list[tuple[str, str, str]]) -> None:
    results = AuthResults(
        "mx.example.com",
        tuple(
            MethodResult(m, r, properties=(Property("header", "d", v),) if v.strip() else ())
            for m, r, v in items
        ),
    )
    parsed = ar.parse(ar.render(results))
    assert [(r.method, r.result) for r in parsed.results] == [(m, r) for m, r, _ in items]
    for got, (_, _, value) in zip(parsed.results, items, strict=True):
        if value.strip():
            assert got.get("header", "d") == value


# -- RFC 8601 §5 removal -----------------------------------------------------------------------

BLOCK = (
    b"Received: from a by b; Tue, 14 Nov 2023 10:00:00 +0000\r\n"
    b"Authentication-Results: mx.example.com;\r\n\tspf=pass smtp.mailfrom=forged.example\r\n"
    b"authentication-results: MX.EXAMPLE.COM; dkim=pass\r\n"
    b"Authentication-Results: other.example; dkim=pass header.d=example.org\r\n"
    b"Authentication-Results: (sneaky) mx.example.com (x); dmarc=pass\r\n"
    b"Authentication-Results: mx.example.com; this is not valid\r\n"
    b"Authentication-Results: other.example 2; future=stuff\r\n"
    b"ARC-Authentication-Results: i=1; mx.example.com; spf=pass\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"Authentication-Results: mx.example.com; body text stays\r\n"
)


def test_remove_own_keeps_everything_else_byte_for_byte() -> None:
    cleaned = ar.remove_own(BLOCK, "mx.example.com")
    assert cleaned == (
        b"Received: from a by b; Tue, 14 Nov 2023 10:00:00 +0000\r\n"
        b"Authentication-Results: other.example; dkim=pass header.d=example.org\r\n"
        b"ARC-Authentication-Results: i=1; mx.example.com; spf=pass\r\n"
        b"Subject: hello\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.com; body text stays\r\n"
    )


def test_remove_own_compares_after_idna_normalisation() -> None:
    """RFC 8601 §5: EAI comparison after converting A-labels into U-labels."""
    block = (
        b"Authentication-Results: xn--bcher-kva.example; dkim=pass\n"
        b"Authentication-Results: b\xc3\xbccher.example; spf=pass\n"
        b"Subject: x\n\nbody\n"
    )
    assert ar.remove_own(block, "bücher.example") == b"Subject: x\n\nbody\n"
    assert ar.remove_own(block, ["other.example", "xn--bcher-kva.example"]) == (
        b"Subject: x\n\nbody\n"
    )


def test_remove_own_without_matches_is_identity() -> None:
    block = b"From: a@example.org\r\nAuthentication-Results: x.example; none\r\n"
    assert ar.remove_own(block, "mx.example.com") == block


# -- builders --------------------------------------------------------------------------------


def test_builders_use_the_registered_properties() -> None:
    spf = spf_result(SpfResult(SpfStatus.PASS, "example.net", "mailfrom", "alice@example.net"))
    helo = spf_result(SpfResult(SpfStatus.NONE, "mx.example.net", "helo", "postmaster@mx"))
    dkim = dkim_result(
        DkimResult(DkimStatus.PASS, "example.com", "sel", "abcdefgh", "rsa-sha256", key_bits=2048)
    )
    dmarc = dmarc_result(
        DmarcResult(
            DmarcStatus.FAIL, "example.com", "example.com", policy=Policy.REJECT, applied=True
        )
    )
    arc = arc_result(ArcResult(ArcStatus.PASS, 2, 0), remote_ip="192.0.2.1")
    iprev = iprev_result(IprevResult(IprevStatus.PASS, "192.0.2.1", name="mx.example.net"))
    text = ar.render(AuthResults("mx.example.com", (spf, helo, dkim, dmarc, arc, iprev)))
    assert "spf=pass smtp.mailfrom=example.net" in text  # RFC 8601 §2.7.2: no local-part
    assert "spf=none smtp.helo=mx.example.net" in text
    assert "dkim=pass (2048-bit key) header.d=example.com header.s=sel header.b=abcdefgh" in text
    assert "dmarc=fail (p=reject dis=reject) header.from=example.com policy.dmarc=reject" in text
    assert "arc=pass (i=2) smtp.remote-ip=192.0.2.1 header.oldest-pass=0" in text
    assert "iprev=pass (mx.example.net) policy.iprev=192.0.2.1" in text
    assert ar.parse(text).by_method("dkim")[0].get("header", "b") == "abcdefgh"
